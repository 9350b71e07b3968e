"""One seeded random stream for weight initialisation and dropout masks."""

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed weight initialisation and dropout: the same seed gives bit-identical runs."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator():
    """The current ``numpy.random.Generator`` (replaced by every ``manual_seed``)."""
    return _generator


def uniform(shape, bound, dtype):
    """U(-bound, bound) drawn in float64 and cast, so float32 and float64 models match."""
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)
