"""PyTorch for the parity tests, imported when a test first uses it.

The suite needs PyTorch (conftest says so, and CI installs it). On a machine without it,
RNNCORE_TESTS_WITHOUT_TORCH=1 runs the rest: then a test that touches ``torch`` or ``F`` from
here skips (``pytest.importorskip``), and the tests of the same file that do not (the NumPy
reference comparisons, the central differences) still run.
"""
import pytest


class _OnFirstUse:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith(("_", "pytest")):     # pytest's probes while collecting: not torch's
            raise AttributeError(attr)
        return getattr(pytest.importorskip(self._name, exc_type=ImportError), attr)


torch = _OnFirstUse("torch")
F = _OnFirstUse("torch.nn.functional")
