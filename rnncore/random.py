"""One seeded random stream for weight initialisation and dropout masks."""

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
    """The current ``numpy.random.Generator`` (replaced by every ``manual_seed``). After an
    ``undo_point`` its state is saved before the first draw."""
    journal = getattr(_local, "journal", None)
    if journal is not None and not journal:
        journal.append(_generator.bit_generator.state)
    return _generator


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
        _generator.bit_generator.state = journal[0]
    _local.journal = None


def uniform(shape, bound, dtype):
    """U(-bound, bound) drawn in float64 and cast, so float32 and float64 models match."""
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)
