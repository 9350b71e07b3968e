"""One seeded random stream for weight initialisation and dropout masks."""

import contextlib
import numbers
import threading

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
    """The current ``numpy.random.Generator`` (replaced by every ``manual_seed``; inside a
    ``private_stream`` block, that block's own). After an ``undo_point`` its state is saved
    before the first draw."""
    g = _stream()
    journal = getattr(_local, "journal", None)
    if journal is not None and not journal:
        journal.append((g, g.bit_generator.state))
    return g


def _stream():
    private = getattr(_local, "private", None)
    return _generator if private is None else private


@contextlib.contextmanager
def private_stream(seed=0):
    """Within the block, this thread's draws come from a fresh generator seeded ``seed``: the
    shared stream does not move, and other threads drawing meanwhile do not see it (a model
    being loaded, or a gradient check, in one thread while another trains)."""
    before = getattr(_local, "private", None)
    _local.private = np.random.default_rng(seed)
    try:
        yield _local.private
    finally:
        _local.private = before


# Per thread: after undo_point(), [] until the first draw, then [state before it]. (One for the
# whole process made a container's forward in one thread skip its own undo point while another
# thread's was open: a refused forward there then kept its children's new state.)
_local = threading.local()


def undo_point():
    """Remember where the stream is, for ``end_undo_point(True)`` to go back to (draws go
    through ``generator()``, which saves the state before the first one). Inside an outer undo
    point of this thread nothing is done and False returned: the outer one is the one that
    counts."""
    if getattr(_local, "journal", None) is not None:
        return False
    _local.journal = []
    return True


def end_undo_point(undo):
    """End this thread's undo point; with ``undo`` true, the stream goes back to where it was
    there, so that draws made for a call that was then refused are not spent. (The stream is
    one for the process: draws another thread made meanwhile are taken back too.)"""
    journal = getattr(_local, "journal", None)
    if undo and journal:
        g, state = journal[0]
        g.bit_generator.state = state
    _local.journal = None


def uniform(shape, bound, dtype):
    """U(-bound, bound) drawn in float64 and cast, so float32 and float64 models match."""
    return _stream().uniform(-bound, bound, size=shape).astype(dtype)
