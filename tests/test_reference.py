"""The NumPy reference kernels (kernels/reference.py), the oracle every fast kernel is compared
with, checked on their own by central differences in float64: every gradient they return, with
ragged lengths, reverse order and initial states given; and against PyTorch's layers."""

import numpy as np
import pytest

from kernels import reference as ref
from _numeric import numeric_grad, rel_err
from _torch import torch, torch_layer

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", sorted(GATES))
def test_reference_gradients_by_central_differences(cell, reverse):
    rng = np.random.default_rng(0)
    T, B, I, H, G = 4, 3, 2, 3, GATES[cell]
    n_states = 2 if cell == "lstm" else 1
    args = [rng.standard_normal((T, B, I)), 0.5 * rng.standard_normal((G * H, I)),
            0.5 * rng.standard_normal((G * H, H)), 0.5 * rng.standard_normal(G * H)]
    if cell == "gru":                                            # b_ih and b_hh
        args.append(0.5 * rng.standard_normal(G * H))
    args += [rng.standard_normal((B, H)) for _ in range(n_states)]          # h0 (, c0)
    upstream = [rng.standard_normal((T, B, H))] + [rng.standard_normal((B, H))
                                                   for _ in range(n_states)]  # dy, dh_n (, dc_n)
    lengths = np.array([4, 1, 3])
    forward, backward = getattr(ref, f"{cell}_forward"), getattr(ref, f"{cell}_backward")

    def loss():                                                  # sum of outputs * upstream
        outputs = forward(*args, lengths=lengths, reverse=reverse)[:-1]
        return float(sum(np.sum(o * u) for o, u in zip(outputs, upstream)))

    grads = backward(*upstream, forward(*args, lengths=lengths, reverse=reverse)[-1])
    assert len(grads) == len(args)                               # x, weights, biases, states
    for g, a in zip(grads, args):
        assert rel_err(g, numeric_grad(loss, a)) < 1e-7


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_oracle_reads_padding_as_zeros(cell):
    """The reference masked by multiplying (m * h_new + (1 - m) * h): a NaN in a padding step of
    x or dy made padding outputs, h_n and every gradient NaN (0 * NaN)."""
    rng = np.random.default_rng(4)
    T, B, I, H = 4, 3, 2, 3
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    x = rng.standard_normal((T, B, I))
    W = [rng.standard_normal((G * H, I)) * 0.5, rng.standard_normal((G * H, H)) * 0.5]
    b = [rng.standard_normal(G * H) * 0.1 for _ in range(2 if cell == "gru" else 1)]
    dy = rng.standard_normal((T, B, H))
    lengths = np.array([4, 2, 1])
    fwd, bwd = getattr(ref, f"{cell}_forward"), getattr(ref, f"{cell}_backward")
    extra = [None] if cell == "lstm" else []                   # dc_n

    def run(x, dy):
        out = fwd(x, *W, *b, lengths=lengths)
        return out[:-1], bwd(dy, None, *extra, out[-1])

    want = run(x, dy)
    pad = np.arange(T)[:, None] >= lengths[None, :]
    x2, dy2 = x.copy(), dy.copy()
    x2[pad], dy2[pad] = np.nan, np.inf
    got = run(x2, dy2)
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("cell", sorted(GATES))
def test_the_oracle_matches_pytorch(cell):
    """The oracle against PyTorch's own layer (float64, the same weights; LSTM and RNN take the
    sum of PyTorch's two biases), a bidirectional one over a packed ragged batch with initial
    states: its forward direction is the oracle's, its reverse direction the oracle's with
    reverse=True. Central differences check the oracle against itself; this checks that it
    computes the cells PyTorch computes (a gate order or sign consistent between its forward
    and backward would pass them)."""
    rng = np.random.default_rng(7)
    T, B, I, H, G = 5, 3, 2, 4, GATES[cell]
    n_states = 2 if cell == "lstm" else 1
    x = rng.standard_normal((T, B, I))
    lengths = np.array([5, 2, 4])
    dirs = [dict(W_ih=0.5 * rng.standard_normal((G * H, I)),
                 W_hh=0.5 * rng.standard_normal((G * H, H)),
                 b_ih=0.5 * rng.standard_normal(G * H),
                 b_hh=0.5 * rng.standard_normal(G * H)) for _ in range(2)]
    states = [rng.standard_normal((2, B, H)) for _ in range(n_states)]      # h0 (, c0)
    dy = rng.standard_normal((T, B, 2 * H))
    dstates = [rng.standard_normal((2, B, H)) for _ in range(n_states)]     # dh_n (, dc_n)

    net = torch_layer(cell, dirs, I, bidirectional=True)
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths),
                                                     enforce_sorted=False)
    yp, finals = net(packed, tuple(st) if cell == "lstm" else st[0])
    finals = finals if cell == "lstm" else (finals,)
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, total_length=T)
    loss = torch.sum(yt * torch.from_numpy(dy))
    for f, df in zip(finals, dstates):
        loss = loss + torch.sum(f * torch.from_numpy(df))
    loss.backward()

    forward, backward = getattr(ref, f"{cell}_forward"), getattr(ref, f"{cell}_backward")
    dx = np.zeros_like(x)
    for d, w in enumerate(dirs):
        biases = (w["b_ih"], w["b_hh"]) if cell == "gru" else (w["b_ih"] + w["b_hh"],)
        y, *finals_d, cache = forward(x, w["W_ih"], w["W_hh"], *biases,
                                      *(s[d] for s in states), lengths=lengths, reverse=bool(d))
        np.testing.assert_allclose(y, yt.detach().numpy()[:, :, d * H:(d + 1) * H], atol=1e-12)
        for ours, theirs in zip(finals_d, finals):
            np.testing.assert_allclose(ours, theirs.detach().numpy()[d], atol=1e-12)
        grads = backward(dy[:, :, d * H:(d + 1) * H], *(s[d] for s in dstates), cache)
        dx += grads[0]
        sfx = "_reverse" if d else ""
        theirs = [getattr(net, n + sfx).grad.numpy() for n in ("weight_ih_l0", "weight_hh_l0")]
        np.testing.assert_allclose(grads[1], theirs[0], atol=1e-11)
        np.testing.assert_allclose(grads[2], theirs[1], atol=1e-11)
        for k, name in enumerate(("bias_ih_l0", "bias_hh_l0")):   # (one summed bias: each)
            ours = grads[3 + k] if cell == "gru" else grads[3]
            np.testing.assert_allclose(ours, getattr(net, name + sfx).grad.numpy(), atol=1e-11)
        for ours, s in zip(grads[-n_states:], st):
            np.testing.assert_allclose(ours, s.grad.numpy()[d], atol=1e-11)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-11)
