"""kernels.rnn_tiled: the fused, multithreaded float32 tanh RNN against rnn.py's serial steps,
the auto rule that picks it, and caches of other cells refused. The checks every tiled cell
shares (the float64 reference at every padding case, PyTorch, threads, rows or units, caches)
are in test_kernels_tiled.py."""

import numpy as np
import pytest

from kernels import _gemm, rnn, rnn_tiled


def _problem(rng, T, B, I, H, scale=0.3):
    x = rng.standard_normal((T, B, I))
    W_ih = rng.uniform(-scale, scale, (H, I))
    W_hh = rng.uniform(-scale, scale, (H, H))
    b = rng.uniform(-scale, scale, H)
    h0 = rng.standard_normal((B, H)) * 0.5
    return x, W_ih, W_hh, b, h0


def _f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


def test_agrees_with_the_serial_steps_and_auto_follows_use_tiled():
    rng = np.random.default_rng(3)
    T, B, I, H = 40, 16, 10, 128                          # T B H / (H + I) = 593
    args = _f32(*_problem(rng, T, B, I, H, scale=0.1))   # (0.3: a chaotic recurrence at H = 128,
                                                         # two float32 sums part over 40 steps)
    lengths = rng.integers(1, T + 1, B)
    avx512 = _gemm.VECTOR == 16                           # (tiled by auto there only, so far)
    assert rnn_tiled.use_tiled(np.float32, 32, 16, 64, 128) == avx512   # the benchmark grid's
    assert rnn_tiled.use_tiled(np.float32, 64, 32, 128, 256) == avx512
    assert rnn_tiled.use_tiled(np.float32, 100, 64, 512, 512) == avx512
    assert not rnn_tiled.use_tiled(np.float32, 8, 8, 2, 100)
    assert not rnn_tiled.use_tiled(np.float64, 64, 32, 128, 256)
    assert not rnn_tiled.use_tiled(np.float32, 16, 8, 16, 128)       # T B H / (H + I) = 114
    assert rnn_tiled.use_tiled(np.float32, 24, 8, 64, 128) == avx512   # 128: long enough
    assert not rnn_tiled.use_tiled(np.float32, 64, 4, 64, 128)        # B below MIN_B
    assert rnn_tiled.use_tiled(np.float32, 64, 32, 1536, 256) == avx512   # 6H: still tiled
    assert not rnn_tiled.use_tiled(np.float32, 64, 32, 2048, 256)       # 8H: the serial kernel
    assert rnn_tiled.use_tiled(np.float32, 20, 64, 256, 1024) == avx512  # W_hh of 4 MB
    assert not rnn_tiled.use_tiled(np.float32, 20, 64, 256, 2048)
    assert rnn_tiled.use_tiled(np.float32, T, B, I, H) == avx512
    auto = rnn.rnn_forward(*args, lengths=lengths)
    assert (auto[2][0] == "tiled") == avx512
    a = rnn.rnn_forward(*args, lengths=lengths, path="tiled")
    s = rnn.rnn_forward(*args, lengths=lengths, path="steps")
    assert a[2][0] == "tiled" and not isinstance(s[2][0], str)
    for u, v in zip(a[:2], s[:2]):
        np.testing.assert_allclose(u, v, atol=1e-5)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    for u, v in zip(rnn.rnn_backward(dy, None, a[2]), rnn.rnn_backward(dy, None, s[2])):
        np.testing.assert_allclose(u, v, atol=1e-4 * max(1.0, np.abs(v).max()))


def test_a_cache_of_another_cell_is_refused():
    rng = np.random.default_rng(8)
    x, W_ih, W_hh, b, h0 = _f32(*_problem(rng, 3, 8, 4, 64))
    *_, cache = rnn.rnn_forward(x, W_ih, W_hh, b, h0, path="tiled")
    from kernels import gru, lstm
    with pytest.raises(TypeError, match="cache: expected the cache returned by lstm_forward"):
        lstm.lstm_backward(None, None, None, cache)
    with pytest.raises(TypeError, match="cache: expected the cache returned by gru_forward"):
        gru.gru_backward(None, None, cache)
    *_, lstm_cache = lstm.lstm_forward(x, np.tile(W_ih, (4, 1)), np.tile(W_hh, (4, 1)),
                                       np.tile(b, 4), path="tiled")
    with pytest.raises(TypeError, match="cache: expected the cache returned by rnn_forward"):
        rnn.rnn_backward(None, None, lstm_cache)
