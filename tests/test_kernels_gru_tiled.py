"""kernels.gru_tiled: the fused, multithreaded float32 GRU against gru.py's serial steps, and the
auto rule that picks it. The checks every tiled cell shares (the float64 reference at every
padding case, PyTorch, threads, rows or units, caches) are in test_kernels_tiled.py."""

import numpy as np
import pytest

import kernels.reference as ref
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


@pytest.mark.parametrize("T, B, I, H, ragged, reverse", [
    (5, 3, 7, 70, True, False),       # padded B, I and H (Hp = 128), ragged
    (6, 4, 4, 64, True, True),        # no padding, reversed
    (4, 9, 2, 16, False, False),      # one unit tile of 16, Hp = 64
])
def test_weight_grads_by_blas_match_the_reference_and_the_team(monkeypatch, T, B, I, H, ragged,
                                                               reverse):
    """The backward whose weight gradients BLAS computes from dGh and dGi in PyTorch's columns
    (taken for large shapes on AVX-512 CPUs: forced here at any size) gives the reference's
    gradients and the team's up to float32 rounding; dh0, the steps' own, is the same bits."""
    rng = np.random.default_rng(7)
    args = _f32(*_problem(rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B) if ragged else None
    dy, dh_n = _f32(rng.standard_normal((T, B, H)), rng.standard_normal((B, H)))
    *_, cache = gru.gru_forward(*args, lengths=lengths, reverse=reverse, path="tiled")
    monkeypatch.setattr(gru_tiled, "BLAS_GRADS_MIN_H", None)
    assert not gru_tiled._blas_grads(T, B, I, H)
    team = gru.gru_backward(dy, dh_n, cache)
    monkeypatch.setattr(gru_tiled, "BLAS_GRADS_MIN_H", 0)
    monkeypatch.setattr(gru_tiled, "BLAS_GRADS_FROM", 0)
    assert gru_tiled._blas_grads(T, B, I, H)
    blas = gru.gru_backward(dy, dh_n, cache)

    *_, cache_r = ref.gru_forward(*[a.astype(np.float64) for a in args], lengths=lengths,
                                  reverse=reverse)
    want = ref.gru_backward(dy.astype(np.float64), dh_n.astype(np.float64), cache_r)
    names = ("dx", "dW_ih", "dW_hh", "db_ih", "db_hh", "dh0")
    for name, got, alt, w in zip(names, blas, team, want):
        assert got.dtype == np.float32 and got.shape == w.shape, name
        assert got.flags.c_contiguous, name
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got, alt, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(blas[5], team[5])         # dh0: the steps alone


def test_blas_weight_grads_only_for_large_layers_on_avx512(monkeypatch):
    """The rule: from H = BLAS_GRADS_MIN_H and BLAS_GRADS_FROM multiply-adds, never on AVX2."""
    assert (gru_tiled.BLAS_GRADS_MIN_H is not None) == (_gemm.VECTOR == 16)
    monkeypatch.setattr(gru_tiled, "BLAS_GRADS_MIN_H", 512)
    monkeypatch.setattr(gru_tiled, "BLAS_GRADS_FROM", 1 << 32)
    assert gru_tiled._blas_grads(100, 64, 512, 512)           # 2^33.8
    assert gru_tiled._blas_grads(32, 64, 512, 512)            # 2^32.2
    assert not gru_tiled._blas_grads(16, 64, 512, 512)        # 2^31.2
    assert not gru_tiled._blas_grads(100, 64, 256, 256)       # H = 256
    monkeypatch.setattr(gru_tiled, "BLAS_GRADS_MIN_H", None)
    assert not gru_tiled._blas_grads(100, 64, 512, 512)
