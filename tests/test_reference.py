"""The NumPy reference kernels (kernels/reference.py), the oracle every fast kernel is compared
with, checked on their own by central differences in float64: every gradient they return, with
ragged lengths, reverse order and initial states given."""

import numpy as np
import pytest

from kernels import reference as ref
from _numeric import numeric_grad, rel_err

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
