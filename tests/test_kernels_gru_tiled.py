"""kernels.gru_tiled: the fused, multithreaded float32 GRU against gru.py's serial steps and
PyTorch, and the auto rule that picks it. The checks every tiled cell shares (the float64
reference at every padding case, threads, rows or units, caches) are in test_kernels_tiled.py."""

import numpy as np
import pytest

from kernels import gru, gru_tiled


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
    assert not gru_tiled.use_tiled(np.float32, 64, 64, 1, 512)
    assert not gru_tiled.use_tiled(np.float64, 64, 32, 1, 256)
    assert gru_tiled.use_tiled(np.float32, 64, 32, 384, 256)     # inputs 1.5H wide: still tiled
    assert not gru_tiled.use_tiled(np.float32, 64, 32, 512, 256)  # 2H: BLAS's input products
    assert gru_tiled.use_tiled(np.float32, 64, 16, 512, 128)     # (not below H = 256)
    wide = _f32(*_problem(rng, 1, 8, 512, 256))
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


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    T, B, I, H = 7, 12, 5, 80
    x, W_ih, W_hh, b_ih, b_hh, h0 = _f32(*_problem(rng, T, B, I, H))
    y, h_n, cache = gru.gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0, path="tiled")
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    dx, dW_ih, dW_hh, db_ih, db_hh, dh0 = gru.gru_backward(dy, None, cache)
    m = torch.nn.GRU(I, H)
    with torch.no_grad():
        for name, a in (("weight_ih_l0", W_ih), ("weight_hh_l0", W_hh), ("bias_ih_l0", b_ih),
                        ("bias_hh_l0", b_hh)):
            getattr(m, name).copy_(torch.from_numpy(a))
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    yt, hnt = m(xt, h0t)
    (yt * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(h_n, hnt[0].detach().numpy(), atol=1e-5)
    for got, t in ((dx, xt.grad), (dW_ih, m.weight_ih_l0.grad), (dW_hh, m.weight_hh_l0.grad),
                   (db_ih, m.bias_ih_l0.grad), (db_hh, m.bias_hh_l0.grad), (dh0, h0t.grad[0])):
        np.testing.assert_allclose(got, t.numpy(), atol=1e-4 * max(1.0, np.abs(t.numpy()).max()))

