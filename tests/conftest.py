import os

import numpy as np
import pytest
from hypothesis import settings

# Small, compile-friendly hypothesis defaults: the first call of a Numba kernel compiles it.
settings.register_profile("rnncore", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("rnncore")


def _require_torch_in_ci():
    """PyTorch parity tests must run in CI, never be skipped there."""
    try:
        import torch  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise RuntimeError("CI must install torch (pip install -e '.[dev,bench]')") from None


_require_torch_in_ci()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
