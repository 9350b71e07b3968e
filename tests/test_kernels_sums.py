"""Bias and weight gradients are sums over all T*B rows: a float32 running sum lost ~1e-8
relative per row (2e-4 at 2 * 10^4 rows). With every row the same, the exact gradient is N times
that of one row, so what is left is the summation's own error; the kernels sum the biases in
float64 now (Linear's too), and the weights in blocks (BLAS's own; the tiled products' k-chunks)."""

import numpy as np
import pytest

from kernels import gru, linear, lstm, rnn

N = 20_000                          # rows: T * B


def _grads(cell, x, weights, path):
    T, B, _ = x.shape
    fwd, bwd = {"lstm": (lstm.lstm_forward, lstm.lstm_backward),
                "gru": (gru.gru_forward, gru.gru_backward),
                "rnn": (rnn.rnn_forward, rnn.rnn_backward)}[cell]
    out = fwd(x, *weights, path=path)
    H = out[0].shape[2]
    return bwd(np.ones((T, B, H), np.float32), *[None] * (len(out) - 2), out[-1])


def _weights_and_row(cell, seed, I=3, H=64):
    """float32 weights of ``cell`` (W_ih, W_hh, its biases) and one input row (I,)."""
    rng = np.random.default_rng(seed)
    G = dict(lstm=4, gru=3, rnn=1)[cell]
    weights = [rng.uniform(-0.3, 0.3, (G * H, I)), rng.uniform(-0.3, 0.3, (G * H, H))]
    weights += [rng.uniform(-0.3, 0.3, G * H) for _ in range(2 if cell == "gru" else 1)]
    weights = [w.astype(np.float32) for w in weights]
    return weights, rng.standard_normal(I).astype(np.float32)


@pytest.mark.parametrize("cell, path", [("lstm", "steps"), ("lstm", "tiled"), ("gru", "steps"),
                                        ("gru", "tiled"), ("rnn", "steps"), ("rnn", "tiled")])
def test_bias_gradients_of_many_rows_are_summed_without_drift(cell, path):
    weights, row = _weights_and_row(cell, 5)
    I = row.size
    T, B = (4, N // 4) if path == "tiled" else (1, N)
    one = _grads(cell, np.broadcast_to(row, (1, 1, I)).copy(), weights, "steps")
    many = _grads(cell, np.broadcast_to(row, (T, B, I)).copy(), weights, path)
    biases = slice(3, 5) if cell == "gru" else slice(3, 4)
    if T > 1:                       # (each step's rows differ: compare with float64 sums instead)
        return _against_float64(cell, weights, row, T, B, many[biases])
    for got, g1 in zip(many[biases], one[biases]):
        want = g1.astype(np.float64) * N
        assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()


def _against_float64(cell, weights, row, T, B, got):
    w64 = [w.astype(np.float64) for w in weights]
    want = _grads(cell, np.broadcast_to(row.astype(np.float64), (T, B, row.size)).copy(), w64,
                  "steps")
    want = want[3:5] if cell == "gru" else want[3:4]
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 2e-6 * np.abs(w).max()


@pytest.mark.parametrize("cell, path", [("lstm", "steps"), ("lstm", "tiled"), ("gru", "steps"),
                                        ("gru", "tiled"), ("rnn", "steps"), ("rnn", "tiled")])
def test_weight_gradients_of_many_rows_are_summed_in_blocks(cell, path):
    # dW_ih = sum over rows of dz x^T: with every row alike, a float32 running sum over the
    # 2 * 10^4 rows drifted 2e-4 (the tiled kernels' products, before ``mac`` summed each
    # k-chunk from zero); BLAS and the products now sum in blocks (~3e-6 here).
    weights, row = _weights_and_row(cell, 6)
    I = row.size
    T, B = 4, N // 4
    got = _grads(cell, np.broadcast_to(row, (T, B, I)).copy(), weights, path)[1:3]
    w64 = [w.astype(np.float64) for w in weights]
    want = _grads(cell, np.broadcast_to(row.astype(np.float64), (T, B, I)).copy(), w64, "steps")
    for g, w in zip(got, want[1:3]):
        assert np.abs(g - w).max() <= 2e-5 * np.abs(w).max()


def test_linear_bias_gradient_of_many_rows_is_summed_without_drift():
    """A float32 running sum of 10^6 rows of 0.1 gave 100958 for 100000."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1_000_000, 3)).astype(np.float32)
    dy = np.full((x.shape[0], 2), 0.1, np.float32)
    db = linear.linear_backward(dy, x, rng.standard_normal((2, 3)).astype(np.float32))[2]
    want = dy.astype(np.float64).sum(0)
    assert db.dtype == np.float32 and np.abs(db - want).max() <= 2e-6 * want.max()
