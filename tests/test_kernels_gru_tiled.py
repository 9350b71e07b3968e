"""kernels.gru_tiled: the fused, multithreaded float32 GRU against gru.py's serial steps, and the
auto rule that picks it. The checks every tiled cell shares (the float64 reference at every
padding case, PyTorch, threads, rows or units, caches) are in test_kernels_tiled.py."""

import numpy as np

from kernels import _gemm, gru, gru_tiled


def _problem(rng, T, B, I, H, scale=0.3):
    x = rng.standard_normal((T, B, I))
    W_ih = rng.uniform(-scale, scale, (3 * H, I))
    W_hh = rng.uniform(-scale, scale, (3 * H, H))
    b_ih, b_hh = rng.uniform(-scale, scale, 3 * H), rng.uniform(-scale, scale, 3 * H)
    h0 = rng.standard_normal((B, H)) * 0.5
    return x, W_ih, W_hh, b_ih, b_hh, h0


def _f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


def test_agrees_with_the_serial_steps_and_auto_follows_use_tiled():
    rng = np.random.default_rng(3)
    T, B, I, H = 12, 16, 10, 128                          # long enough to pay on AVX2 too
    args = _f32(*_problem(rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B)
    assert gru_tiled.use_tiled(np.float32, 64, 16, 1, 128)       # the benchmark grid's choices
    assert gru_tiled.use_tiled(np.float32, 64, 32, 1, 256)
    assert not gru_tiled.use_tiled(np.float32, 64, 8, 1, 100)
    assert gru_tiled.use_tiled(np.float32, 64, 64, 1, 512) == (_gemm.VECTOR == 16)   # large:
    assert not gru_tiled.use_tiled(np.float32, 64, 64, 1, 1280)  # tiled on AVX-512 up to 1024
    assert not gru_tiled.use_tiled(np.float64, 64, 32, 1, 256)
    assert gru_tiled.use_tiled(np.float32, 64, 32, 384, 256)     # inputs 1.5H wide: still tiled
    assert gru_tiled.use_tiled(np.float32, 64, 32, 512, 256) == (_gemm.VECTOR == 16)   # 2H:
    assert not gru_tiled.use_tiled(np.float32, 64, 32, 1024, 256)  # tiled on AVX-512; 4H: BLAS's
                                                                   # input products on both
    assert gru_tiled.use_tiled(np.float32, 64, 16, 512, 128)     # (not below H = 256)
    wide = _f32(*_problem(rng, 1, 8, 1024, 256))
    assert gru_tiled.use_tiled(np.float32, 64, 8, 1, 256)
    assert not isinstance(gru.gru_forward(*wide)[2][0], str)    # auto took the serial steps
    assert gru_tiled.use_tiled(np.float32, T, B, I, H)
    assert isinstance(gru.gru_forward(*args, lengths=lengths)[2][0], str)   # auto: tiled
    a = gru.gru_forward(*args, lengths=lengths, path="tiled")
    s = gru.gru_forward(*args, lengths=lengths, path="steps")
    assert not isinstance(s[2][0], str)
    for u, v in zip(a[:2], s[:2]):
        np.testing.assert_allclose(u, v, atol=1e-5)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    for u, v in zip(gru.gru_backward(dy, None, a[2]), gru.gru_backward(dy, None, s[2])):
        np.testing.assert_allclose(u, v, atol=1e-4 * max(1.0, np.abs(v).max()))
