"""One seeded random stream for weight initialisation and dropout masks."""

import contextlib
import numbers

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed weight initialisation and dropout: the same seed gives bit-identical runs.

    seed: an int >= 0 (TypeError / ValueError naming ``seed`` otherwise).
    """
    global _generator
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int >= 0, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed}")
    _generator = np.random.default_rng(seed)


def generator():
    """The current ``numpy.random.Generator`` (replaced by every ``manual_seed``). Inside
    ``undo_on_error`` its state is saved before the block's first draw."""
    if _journal is not None and not _journal:
        _journal.append(_generator.bit_generator.state)
    return _generator


_journal = None      # inside undo_on_error: [] until the first draw, then [state before it]


def in_undo_block():
    """Whether an ``undo_on_error`` block is running (an outer one undoes for the inner)."""
    return _journal is not None


@contextlib.contextmanager
def undo_on_error():
    """If the block raises, the stream is put back to where it was when the block began, so
    that draws made for a call that was then refused are not spent. Draws must go through
    ``generator()`` (every forward's do). Blocks nest: the outermost one restores."""
    global _journal
    if _journal is not None:
        yield
        return
    _journal = []
    try:
        yield
    except BaseException:
        if _journal:
            _generator.bit_generator.state = _journal[0]
        raise
    finally:
        _journal = None


def uniform(shape, bound, dtype):
    """U(-bound, bound) drawn in float64 and cast, so float32 and float64 models match."""
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)
