"""rnncore's RNN / LSTM / GRU against PyTorch's nn.RNN / nn.LSTM / nn.GRU.

The same weights (PyTorch's state dict loaded with ``load_state_dict``), the same ragged batch
(PyTorch gets it packed with ``enforce_sorted=False``), the same upstream gradient; then outputs,
final states, input grads and weight grads must agree to round-off, in float64 and float32.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnncore  # noqa: E402
from rnncore import GRU, LSTM, RNN  # noqa: E402

CELLS = {"lstm": (LSTM, torch.nn.LSTM), "gru": (GRU, torch.nn.GRU), "rnn": (RNN, torch.nn.RNN)}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=2e-5)}

T, B, I, H, L = 6, 4, 3, 5, 2
LENGTHS = np.array([4, 6, 1, 3])            # unsorted on purpose: enforce_sorted=False


def torch_state(tm):
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


def run_torch(tm, x, lengths, dout, states0, return_sequences):
    """Forward + backward in PyTorch. Returns (y, h_n, c_n, dx, {param name: grad}, d_states0)."""
    xt = torch.tensor(x, requires_grad=True)
    s0 = [torch.tensor(s, requires_grad=True) for s in states0]
    hx = None if not s0 else (tuple(s0) if len(s0) == 2 else s0[0])
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out, hn = tm(packed, hx)
    h_n, c_n = hn if isinstance(hn, tuple) else (hn, None)
    if return_sequences:
        y, _ = pad_packed_sequence(out, total_length=x.shape[0])          # (T, B, D*H), padding 0
    else:
        y = torch.cat([h_n[-2], h_n[-1]], dim=1)                         # (B, 2H): top layer
    (y * torch.tensor(dout)).sum().backward()
    grads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    return (y.detach().numpy(), h_n.detach().numpy(), None if c_n is None else c_n.detach().numpy(),
            xt.grad.numpy(), grads, [s.grad.numpy() for s in s0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("with_states", [False, True])
@pytest.mark.parametrize("paired", [False, True])
def test_matches_torch_stacked_bidirectional_ragged(cell, dtype, return_sequences, with_states,
                                                    paired, monkeypatch):
    """paired: the two directions of each layer run at once on two threads (``kernels._pair``,
    which the real rule only does from larger shapes) or one after the other."""
    monkeypatch.setattr("rnncore.recurrent._pair_pays", lambda work: paired)
    ours_cls, torch_cls = CELLS[cell]
    torch.manual_seed(0)
    tm = torch_cls(I, H, num_layers=L, bidirectional=True).to(TORCH_DTYPE[dtype])
    m = ours_cls(I, H, num_layers=L, bidirectional=True, return_sequences=return_sequences, dtype=dtype)
    m.load_state_dict(torch_state(tm))

    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    n_states = 2 if cell == "lstm" else 1
    states0 = [rng.standard_normal((2 * L, B, H)).astype(dtype)
               for _ in range(n_states if with_states else 0)]
    dout = rng.standard_normal((T, B, 2 * H) if return_sequences else (B, 2 * H)).astype(dtype)

    y_t, hn_t, cn_t, dx_t, grads_t, dstates_t = run_torch(tm, x, LENGTHS, dout, states0, return_sequences)

    kwargs = dict(zip(("h0", "c0"), states0))
    y = m.forward(x, lengths=LENGTHS, **kwargs)
    assert m._cache["paired"] == paired
    tol = TOL[dtype]
    assert y.dtype == dtype
    np.testing.assert_allclose(y, y_t, **tol)
    if return_sequences:                                     # padding outputs are exactly zero
        pad = np.arange(T)[:, None] >= LENGTHS[None, :]
        assert np.all(y[pad] == 0)
    np.testing.assert_allclose(m.h_n, hn_t, **tol)
    if cell == "lstm":
        np.testing.assert_allclose(m.c_n, cn_t, **tol)

    m.zero_grad_parameters()
    dx = m.backward(x, dout)
    np.testing.assert_allclose(dx, dx_t, **tol)
    ours = dict(m.named_parameters())
    for name, g in grads_t.items():
        if cell in ("lstm", "rnn") and name.startswith("bias_"):
            # our one bias is their bias_ih + bias_hh: its grad is the grad of either of them
            ours_name = name.replace("bias_ih", "bias").replace("bias_hh", "bias")
            np.testing.assert_allclose(ours[ours_name].grad, g, **tol, err_msg=name)
        else:
            np.testing.assert_allclose(ours[name].grad, g, **tol, err_msg=name)
    if with_states:
        np.testing.assert_allclose(m.grad_h0, dstates_t[0], **tol)
        if cell == "lstm":
            np.testing.assert_allclose(m.grad_c0, dstates_t[1], **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_batch_in_halves_matches_torch(cell, dtype, monkeypatch):
    """A one-directional stacked layer whose batch runs in two halves at once (forced: the
    real rule takes that path only at large shapes), ragged, from initial states: outputs,
    final states and every gradient against PyTorch's whole-batch run."""
    monkeypatch.setattr("rnncore.recurrent._pair_pays", lambda work: True)
    ours_cls, torch_cls = CELLS[cell]
    torch.manual_seed(2)
    tm = torch_cls(I, H, num_layers=L).to(TORCH_DTYPE[dtype])
    m = ours_cls(I, H, num_layers=L, dtype=dtype).load_state_dict(torch_state(tm))
    m._halves_from = 0                                       # (an instance's own bound)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    states0 = [rng.standard_normal((L, B, H)).astype(dtype)
               for _ in range(2 if cell == "lstm" else 1)]
    dout = rng.standard_normal((T, B, H)).astype(dtype)
    y_t, hn_t, cn_t, dx_t, grads_t, dstates_t = run_torch(tm, x, LENGTHS, dout, states0, True)
    y = m.forward(x, lengths=LENGTHS, **dict(zip(("h0", "c0"), states0)))
    assert m._cache["halves"]
    tol = TOL[dtype]
    np.testing.assert_allclose(y, y_t, **tol)
    np.testing.assert_allclose(m.h_n, hn_t, **tol)
    if cell == "lstm":
        np.testing.assert_allclose(m.c_n, cn_t, **tol)
    m.zero_grad_parameters()
    np.testing.assert_allclose(m.backward(x, dout), dx_t, **tol)
    ours = dict(m.named_parameters())
    for name, g in grads_t.items():
        ours_name = (name.replace("bias_ih", "bias").replace("bias_hh", "bias")
                     if cell in ("lstm", "rnn") else name)   # (our one bias: their sum's grad)
        np.testing.assert_allclose(ours[ours_name].grad, g, **tol, err_msg=name)
    for got, want in zip((m.grad_h0, getattr(m, "grad_c0", None)), dstates_t):
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_unidirectional_single_layer_unpadded_matches_torch(cell):
    """The plain case, without packing: one layer, one direction, full-length batch."""
    ours_cls, torch_cls = CELLS[cell]
    torch.manual_seed(1)
    tm = torch_cls(I, H).double()
    m = ours_cls(I, H, dtype=np.float64).load_state_dict(torch_state(tm))
    x = np.random.default_rng(3).standard_normal((T, B, I))
    y_t = tm(torch.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(m(x), y_t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_torch_state_dict_incomplete_bias_pair_is_refused(cell):
    ours_cls, torch_cls = CELLS[cell]
    tm = torch_cls(I, H, num_layers=2, bidirectional=True)
    m = ours_cls(I, H, num_layers=2, bidirectional=True)
    before = m.state_dict()
    sd = torch_state(tm)
    del sd["bias_hh_l1_reverse"]
    with pytest.raises(ValueError, match="bias_ih_l1_reverse"):
        m.load_state_dict(sd)
    sd = torch_state(tm)
    sd["bias_hh_l0"] = sd["bias_hh_l0"][:-1]
    with pytest.raises(ValueError, match="bias_hh_l0"):
        m.load_state_dict(sd)
    sd = torch_state(tm)                 # each finite in float32, their sum beyond it
    sd["bias_ih_l1"] = np.full_like(sd["bias_ih_l1"], 3e38)
    sd["bias_hh_l1"] = np.full_like(sd["bias_hh_l1"], 3e38)
    with pytest.raises(ValueError, match=r"^state\['bias_ih_l1'\] \+ state\['bias_hh_l1'\]: "
                                         r"expected a sum within float32's range"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_rnncore_default_init_runs_in_torch_after_export():
    """Our init (forget bias 1.0) exported as torch's two biases gives torch's outputs."""
    rnncore.manual_seed(0)
    m = LSTM(I, H, dtype=np.float64)
    sd = m.state_dict()
    tm = torch.nn.LSTM(I, H).double()
    bias = sd.pop("bias_l0")
    sd["bias_ih_l0"], sd["bias_hh_l0"] = bias, np.zeros_like(bias)
    tm.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    x = np.random.default_rng(4).standard_normal((T, B, I))
    np.testing.assert_allclose(m(x), tm(torch.tensor(x))[0].detach().numpy(), rtol=1e-10, atol=1e-12)
