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


def torch_layer(cell, dirs, I, bidirectional):
    """PyTorch's one-layer LSTM / GRU / RNN (tanh) in float64 with our weights: ``dirs`` is one
    dict per direction of W_ih, W_hh, b_ih, b_hh (PyTorch's two biases; our LSTM and RNN kernels
    take their sum), the second one for the reverse direction."""
    H = dirs[0]["W_hh"].shape[1]
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    net = kind(I, H, bidirectional=bidirectional).double()
    with torch.no_grad():
        for d, w in enumerate(dirs):
            sfx = "_reverse" if d else ""
            for ours, theirs in (("W_ih", "weight_ih_l0"), ("W_hh", "weight_hh_l0"),
                                 ("b_ih", "bias_ih_l0"), ("b_hh", "bias_hh_l0")):
                getattr(net, theirs + sfx).copy_(torch.from_numpy(w[ours]))
    return net
