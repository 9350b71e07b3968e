"""kernels.rnn_tiled: the fused, multithreaded float32 tanh RNN, against the float64 reference,
the serial steps of rnn.py and PyTorch, for every padding case, ragged, reversed, with h0; the
same bits whatever the number of threads, and by rows or by units."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.reference as ref
from kernels import _gemm, lstm_tiled, rnn, rnn_tiled
from kernels._team import team_size


def _problem(rng, T, B, I, H, scale=0.3):
    x = rng.standard_normal((T, B, I))
    W_ih = rng.uniform(-scale, scale, (H, I))
    W_hh = rng.uniform(-scale, scale, (H, H))
    b = rng.uniform(-scale, scale, H)
    h0 = rng.standard_normal((B, H)) * 0.5
    return x, W_ih, W_hh, b, h0


def _f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


def _check_against_reference(T, B, I, H, seed, ragged, reverse):
    rng = np.random.default_rng(seed)
    args = _problem(rng, T, B, I, H)
    lengths = rng.integers(1, T + 1, B) if ragged else None
    y, h_n, cache = rnn.rnn_forward(*_f32(*args), lengths=lengths, reverse=reverse, path="tiled")
    assert cache[0] == "tiled"
    yr, hr, cache_r = ref.rnn_forward(*args, lengths=lengths, reverse=reverse)
    for got, want in ((y, yr), (h_n, hr)):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-5)
    dy, dh = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    got = rnn.rnn_backward(*_f32(dy, dh), cache)
    want = ref.rnn_backward(dy, dh, cache_r)
    for name, g, w in zip(("dx", "dW_ih", "dW_hh", "db", "dh0"), got, want):
        assert g.shape == w.shape and g.dtype == np.float32, name
        np.testing.assert_allclose(g, w, atol=2e-4 * max(1.0, np.abs(w).max()), err_msg=name)


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T, B, I, H", [
    (5, 8, 4, 64),          # no padding
    (4, 9, 3, 70),          # B, I, H all padded
    (3, 33, 5, 130),        # more than one row group, three tiles of units
    (2, 4, 200, 64),        # I > the k-chunk
    (3, 8, 5, 200),         # H > the k-chunk (the steps' products in chunks), 4 tiles
    (35, 8, 3, 64),         # a longer sequence: 280 rows in the input product
    (1, 4, 2, 64),          # one step: dh0 straight after the last derivative
])
def test_matches_the_reference(T, B, I, H, ragged, reverse):
    _check_against_reference(T, B, I, H, 0, ragged, reverse)


@given(T=st.integers(1, 4), B=st.integers(1, 13), I=st.integers(1, 9), H=st.integers(1, 140),
       ragged=st.booleans(), reverse=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_matches_the_reference_any_shape(T, B, I, H, ragged, reverse, seed):
    _check_against_reference(T, B, I, H, seed, ragged, reverse)


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
    assert not rnn_tiled.use_tiled(np.float32, 16, 16, 16, 128)      # T B H / (H + I) = 227
    assert rnn_tiled.use_tiled(np.float32, 24, 16, 64, 128) == avx512  # 256: long enough
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


def test_same_bits_with_one_thread_or_all():
    rng = np.random.default_rng(4)
    T, B, I, H = 5, 24, 7, 130
    args = _f32(*_problem(rng, T, B, I, H))
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only: no second sharing of the tiles to compare with")
    runs = []
    before = numba.get_num_threads()
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            y, h, cache = rnn.rnn_forward(*args, path="tiled")
            runs.append((y, h) + tuple(rnn.rnn_backward(dy, None, cache)))
    finally:
        numba.set_num_threads(before)
    for u, v in zip(runs[0], runs[-1]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("T, B, I, H, ragged, reverse", [
    (6, 8, 5, 128, False, False),     # two register tiles of rows, one for each worker
    (5, 9, 3, 70, True, True),        # Bp = 12: three tiles of rows, shared 1 / 2; padded H
    (4, 21, 7, 130, True, False),     # Bp = 24, three tiles of units
])
def test_backward_by_rows_or_by_units_gives_the_same_bits(monkeypatch, T, B, I, H, ragged,
                                                          reverse):
    """As the LSTM's: the backward's steps by rows or by units, the same bits."""
    if numba.get_num_threads() < 2:
        pytest.skip("one thread only: the backward runs one worker, by units")
    rng = np.random.default_rng(11)
    args = _f32(*_problem(rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B) if ragged else None
    dy, dh_n = _f32(rng.standard_normal((T, B, H)), rng.standard_normal((B, H)))
    *_, cache = rnn.rnn_forward(*args, lengths=lengths, reverse=reverse, path="tiled")
    Bp, Hp = -(-B // 4) * 4, -(-H // 64) * 64
    n_workers = team_size((Hp // 64) * -(-Bp // lstm_tiled.RG))    # (the backward's own team)
    monkeypatch.setattr(lstm_tiled, "BACKWARD_BY_ROWS", True)   # (the rule: AVX-512 CPUs)
    assert lstm_tiled._backward_rows(Bp, n_workers) == 1
    rows = rnn.rnn_backward(dy, dh_n, cache)
    monkeypatch.setattr(lstm_tiled, "BACKWARD_BY_ROWS", False)
    units = rnn.rnn_backward(dy, dh_n, cache)
    for a, b in zip(rows, units):
        np.testing.assert_array_equal(a, b)
    *_, cache_r = ref.rnn_forward(*[a.astype(np.float64) for a in args], lengths=lengths,
                                  reverse=reverse)
    want = ref.rnn_backward(dy.astype(np.float64), dh_n.astype(np.float64), cache_r)
    for a, w in zip(rows, want):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-4)


def test_path_argument_is_checked():
    rng = np.random.default_rng(5)
    args = _problem(rng, 2, 8, 3, 64)
    with pytest.raises(ValueError, match="path"):
        rnn.rnn_forward(*_f32(*args), path="fast")
    with pytest.raises(TypeError, match="float32"):
        rnn.rnn_forward(*args, path="tiled")


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


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    T, B, I, H = 7, 12, 5, 80
    x, W_ih, W_hh, b, h0 = _f32(*_problem(rng, T, B, I, H))
    y, h_n, cache = rnn.rnn_forward(x, W_ih, W_hh, b, h0, path="tiled")
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    dx, dW_ih, dW_hh, db, dh0 = rnn.rnn_backward(dy, None, cache)
    m = torch.nn.RNN(I, H)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(W_ih))
        m.weight_hh_l0.copy_(torch.from_numpy(W_hh))
        m.bias_ih_l0.copy_(torch.from_numpy(b))
        m.bias_hh_l0.zero_()
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    yt, hnt = m(xt, h0t)
    (yt * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(h_n, hnt[0].detach().numpy(), atol=1e-5)
    for got, t in ((dx, xt.grad), (dW_ih, m.weight_ih_l0.grad), (dW_hh, m.weight_hh_l0.grad),
                   (db, m.bias_ih_l0.grad), (dh0, h0t.grad[0])):
        np.testing.assert_allclose(got, t.numpy(), atol=1e-4 * max(1.0, np.abs(t.numpy()).max()))


@pytest.mark.parametrize("T, B, ragged", [(49, 24, True), (64, 32, False)])
def test_matches_the_reference_with_capped_panels(T, B, ragged):
    """T * B above 8 * IN_ROWS (lstm_tiled's input product, shared): panels capped at IN_ROWS
    rows, the last one partial at 1176 rows."""
    assert T * B > 8 * lstm_tiled.IN_ROWS
    _check_against_reference(T, B, 5, 64, 1, ragged, False)


@pytest.mark.parametrize("T, B, I, H, ragged, reverse", [(4, 9, 3, 70, True, True),
                                                         (3, 8, 4, 64, False, False)])
def test_backward_leaves_the_cache_alone(T, B, I, H, ragged, reverse):
    """Two backwards of one tiled forward give the same bits; the cache is unchanged."""
    rng = np.random.default_rng(6)
    x, W_ih, W_hh, b, h0 = _f32(*_problem(rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B) if ragged else None
    *_, cache = rnn.rnn_forward(x, W_ih, W_hh, b, h0, lengths=lengths, reverse=reverse,
                                path="tiled")
    kept = [a.copy() if isinstance(a, np.ndarray) else a for a in cache]
    dy, dh = _f32(rng.standard_normal((T, B, H)), rng.standard_normal((B, H)))
    first = rnn.rnn_backward(dy, dh, cache)
    for a, k in zip(cache, kept):                   # (bytes: padding may hold NaN, != itself)
        assert a.tobytes() == k.tobytes() if isinstance(a, np.ndarray) else a == k
    second = rnn.rnn_backward(dy, dh, cache)
    for g1, g2 in zip(first, second):
        assert g1 is not g2 and np.array_equal(g1, g2)
