import os

import numpy as np
import pytest
from hypothesis import settings

# Small, compile-friendly hypothesis defaults: the first call of a Numba kernel compiles it.
# ``python -m pytest --hypothesis-profile=deep`` searches far more widely (new random examples
# on each run, 20x as many): for hunting bugs, not for CI.
settings.register_profile("rnncore", deadline=None, max_examples=25, derandomize=True)
settings.register_profile("deep", deadline=None, max_examples=500, derandomize=False)
settings.load_profile("rnncore")


def _require_torch():
    """The PyTorch parity tests must run, never be skipped: the test command installs torch
    (``pip install -e ".[dev]"``). Set RNNCORE_TESTS_WITHOUT_TORCH=1 to run the rest
    of the suite on a machine without it (those tests then skip)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        if not os.environ.get("RNNCORE_TESTS_WITHOUT_TORCH"):
            raise RuntimeError('the tests need PyTorch: pip install -e ".[dev]" '
                               "(or set RNNCORE_TESTS_WITHOUT_TORCH=1 to skip its tests)") from None


_require_torch()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# Every array the kernels take from ``kernels._workspace.empty`` starts as NaN, so that a kernel
# reading an entry it never wrote fails its test instead of passing on whatever the memory held.
import kernels._workspace  # noqa: E402

kernels._workspace.FILL = np.nan
