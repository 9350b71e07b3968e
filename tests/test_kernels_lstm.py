"""The fast Numba LSTM (``kernels/lstm.py``) against the NumPy reference, central differences
and PyTorch; plus the shared scalar helpers of ``kernels/_common.py`` it is built on.

Shape key: T = time steps, B = batch, I = input features, H = hidden units.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from kernels import reference as ref
from kernels._common import (_dot_into_blas, _dot_into_numba, _dot_into_views_blas,
                             _dot_into_views_numba, dot_into, exp_expm1, flip_valid,
                             sigmoid, tanh)
from kernels.lstm import lstm_backward, lstm_forward
from _numeric import numeric_grad, rel_err

GRAD_NAMES = ("dx", "dW_ih", "dW_hh", "db", "dh0", "dc0")


def make_lstm(rng, T, B, I, H, dtype=np.float64, scale=0.5):
    """Random x (T, B, I), W_ih (4H, I), W_hh (4H, H), b (4H,), h0, c0 (B, H)."""
    def r(*shape):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    return r(T, B, I), r(4 * H, I), r(4 * H, H), r(4 * H), r(B, H), r(B, H)


def random_lengths(rng, T, B):
    return rng.integers(1, T + 1, size=B).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Fast kernel == reference, to round-off
# ---------------------------------------------------------------------------------------------

@given(T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 6),
       ragged=st.booleans(), reverse=st.booleans(), with_state=st.booleans(),
       upstream=st.sampled_from(["all", "none", "dy only", "states only"]),
       seed=st.integers(0, 2**32 - 1))
def test_matches_reference(T, B, I, H, ragged, reverse, with_state, upstream, seed):
    rng = np.random.default_rng(seed)
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, T, B, I, H)
    if not with_state:
        h0 = c0 = None
    lengths = random_lengths(rng, T, B) if ragged else None
    y, h_n, c_n, cache = lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse)
    y_r, h_r, c_r, cache_r = ref.lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse)
    for got, want in ((y, y_r), (h_n, h_r), (c_n, c_r)):
        assert got.dtype == np.float64 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)

    dy = rng.standard_normal((T, B, H)) if upstream in ("all", "dy only") else None
    dh = rng.standard_normal((B, H)) if upstream in ("all", "states only") else None
    dc = rng.standard_normal((B, H)) if upstream in ("all", "states only") else None
    grads = lstm_backward(dy, dh, dc, cache)
    grads_r = ref.lstm_backward(dy, dh, dc, cache_r)
    for name, got, want in zip(GRAD_NAMES, grads, grads_r):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=name)
    if upstream == "none":
        assert all(not g.any() for g in grads)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("ragged, reverse", [(False, False), (True, False), (True, True)])
def test_matches_reference_wide(rng, dtype, atol, ragged, reverse):
    """H = 37 runs the SIMD body of every pointwise loop, not only its scalar remainder; x is a
    non-contiguous view and the weights come in float64 (cast to x's dtype)."""
    T, B, I, H = 9, 5, 19, 37
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, T, 2 * B, I, H)
    x = x.astype(dtype)[:, ::2]
    h0, c0 = h0[:B], c0[:B]
    lengths = np.array([9, 1, 4, 9, 6]) if ragged else None
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    *out, cache = lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths, reverse)
    grads = lstm_backward(dy, dh, dc, cache)
    cast = [a.astype(dtype).astype(np.float64) for a in (x, W_ih, W_hh, b, h0, c0, dy, dh, dc)]
    *out_r, cache_r = ref.lstm_forward(*cast[:6], lengths, reverse)
    grads_r = ref.lstm_backward(*cast[6:], cache_r)
    for got, want in zip(out + list(grads), out_r + list(grads_r)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=atol * max(1, np.abs(want).max()))


def test_backward_leaves_inputs_and_cache_alone(rng):
    """Backward returns fresh arrays and may be called twice on one cache with the same result."""
    T, B, I, H = 4, 3, 2, 5
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, T, B, I, H)
    args = [a.copy() for a in (x, W_ih, W_hh, b, h0, c0)]
    lengths = np.array([4, 1, 3])
    _, _, _, cache = lstm_forward(*args, lengths=lengths, reverse=True)
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    ups = [dy.copy(), dh.copy(), dc.copy()]
    g1 = lstm_backward(*ups, cache)
    g2 = lstm_backward(*ups, cache)
    for a, a0 in zip(args + ups, (x, W_ih, W_hh, b, h0, c0, dy, dh, dc)):
        np.testing.assert_array_equal(a, a0)
    for u, v in zip(g1, g2):
        np.testing.assert_array_equal(u, v)
        assert u is not v


# ---------------------------------------------------------------------------------------------
# Central differences (float64) on the fast kernel itself
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ragged, reverse", [(False, False), (True, False), (True, True)])
def test_gradcheck(rng, ragged, reverse):
    T, B, I, H = 4, 3, 3, 4
    params = list(make_lstm(rng, T, B, I, H))           # x, W_ih, W_hh, b, h0, c0
    lengths = np.array([4, 2, 1]) if ragged else None
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))

    def loss():
        y, h_n, c_n, _ = lstm_forward(*params, lengths=lengths, reverse=reverse)
        return np.sum(y * dy) + np.sum(h_n * dh) + np.sum(c_n * dc)

    *_, cache = lstm_forward(*params, lengths=lengths, reverse=reverse)
    analytic = lstm_backward(dy, dh, dc, cache)
    for name, p, g in zip(GRAD_NAMES, params, analytic):
        rel = rel_err(g, numeric_grad(loss, p), floor=1e-3)
        assert rel < 1e-6, (name, rel)


# ---------------------------------------------------------------------------------------------
# A sequence run in two halves, carrying (h, c) forward and (dh, dc) back, equals the whole run
# ---------------------------------------------------------------------------------------------

@given(T1=st.integers(1, 4), T2=st.integers(1, 4), B=st.integers(1, 3), H=st.integers(1, 4),
       ragged=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_two_halves_equal_whole(T1, T2, B, H, ragged, seed):
    rng = np.random.default_rng(seed)
    T, I = T1 + T2, 3
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, T, B, I, H)
    # ragged: every sequence reaches into the second half, so both halves see valid steps
    lengths = rng.integers(T1 + 1, T + 1, size=B) if ragged else np.full(B, T)
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))

    y, h_n, c_n, cache = lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths)
    y1, h1, c1, cache1 = lstm_forward(x[:T1], W_ih, W_hh, b, h0, c0)
    y2, h2, c2, cache2 = lstm_forward(x[T1:], W_ih, W_hh, b, h1, c1, lengths - T1)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y, rtol=0, atol=1e-13)
    np.testing.assert_allclose(h2, h_n, rtol=0, atol=1e-13)
    np.testing.assert_allclose(c2, c_n, rtol=0, atol=1e-13)

    dx, dW_ih, dW_hh, db, dh0, dc0 = lstm_backward(dy, dh, dc, cache)
    dx2, dW_ih2, dW_hh2, db2, dh1, dc1 = lstm_backward(dy[T1:], dh, dc, cache2)
    dx1, dW_ih1, dW_hh1, db1, dh0_1, dc0_1 = lstm_backward(dy[:T1], dh1, dc1, cache1)
    for got, want in ((np.concatenate([dx1, dx2]), dx), (dW_ih1 + dW_ih2, dW_ih),
                      (dW_hh1 + dW_hh2, dW_hh), (db1 + db2, db), (dh0_1, dh0), (dc0_1, dc0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_float32_matches_float64_reference(rng, reverse):
    T, B, I, H = 7, 4, 3, 5
    arrays = make_lstm(rng, T, B, I, H)
    lengths = np.array([7, 3, 1, 6])
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    arrays32 = [a.astype(np.float32) for a in arrays]
    *out, cache = lstm_forward(*arrays32, lengths=lengths, reverse=reverse)
    grads = lstm_backward(*(a.astype(np.float32) for a in (dy, dh, dc)), cache)
    *out_r, cache_r = ref.lstm_forward(*(a.astype(np.float64) for a in arrays32),
                                       lengths=lengths, reverse=reverse)
    grads_r = ref.lstm_backward(dy.astype(np.float32).astype(np.float64), dh.astype(np.float32),
                                dc.astype(np.float32), cache_r)
    for got, want in zip(out + list(grads), out_r + list(grads_r)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * max(1, np.abs(want).max()))


def test_float32_long_sequence_stays_finite(rng):
    """T = 5000 with large weights: gates saturate (|z| >> 90), nothing overflows or goes NaN."""
    T, B, I, H = 5000, 2, 3, 8
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, T, B, I, H, np.float32, scale=30.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, h_n, c_n, cache = lstm_forward(x, W_ih, W_hh, b, h0, c0)
        grads = lstm_backward(np.ones_like(y), None, None, cache)
    assert np.abs(x.reshape(T * B, I) @ W_ih.T).max() > 90          # the test saturates gates
    for a in (y, h_n, c_n) + grads:
        assert a.dtype == np.float32 and np.all(np.isfinite(a))
    assert np.abs(y).max() <= 1
    # and right, not only finite: the float64 reference on the same numbers (saturated gates
    # keep float32's round-off from growing over the 5000 steps)
    y_r, h_r, c_r, cache_r = ref.lstm_forward(*(a.astype(np.float64)
                                                for a in (x, W_ih, W_hh, b, h0, c0)))
    want = (y_r, h_r, c_r) + ref.lstm_backward(np.ones_like(y_r), None, None, cache_r)
    for a, a_r in zip((y, h_n, c_n) + grads, want):
        np.testing.assert_allclose(a, a_r, rtol=0, atol=2e-4 * max(1.0, np.abs(a_r).max()))


# ---------------------------------------------------------------------------------------------
# Bad input: errors that name the argument
# ---------------------------------------------------------------------------------------------

def test_bad_input_names_the_argument(rng):
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, 3, 2, 4, 5)
    with pytest.raises(ValueError, match="^W_ih: "):
        lstm_forward(x, W_ih[:, :3], W_hh, b)
    with pytest.raises(ValueError, match="^W_hh: "):
        lstm_forward(x, W_ih, W_hh[:, :4], b)
    with pytest.raises(ValueError, match="^b: "):
        lstm_forward(x, W_ih, W_hh, b[:-1])
    with pytest.raises(ValueError, match="^h0: "):
        lstm_forward(x, W_ih, W_hh, b, h0=h0[:1])
    with pytest.raises(ValueError, match="^x: "):
        lstm_forward(x[0], W_ih, W_hh, b)
    with pytest.raises(TypeError, match="^x: "):
        lstm_forward(x.astype(np.int64), W_ih, W_hh, b)
    with pytest.raises(ValueError, match="^lengths: "):
        lstm_forward(x, W_ih, W_hh, b, lengths=np.array([0, 3]))
    with pytest.raises(ValueError, match="^lengths: "):
        lstm_forward(x, W_ih, W_hh, b, lengths=np.array([4, 3]))
    with pytest.raises(TypeError, match="^lengths: "):
        lstm_forward(x, W_ih, W_hh, b, lengths=np.array([1.5, 3.0]))
    for empty in ((0, 2, 4), (3, 0, 4), (3, 2, 0)):          # T, B, I >= 1, as gru and rnn
        with pytest.raises(ValueError, match=r"^x: expected a \(T, B, I\) array with T, B, I >= 1"):
            lstm_forward(np.zeros(empty, np.float32), np.zeros((20, empty[2]), np.float32),
                         W_hh, b)
    with pytest.raises(ValueError, match="^W_hh: "):
        lstm_forward(x, W_ih[:0], np.zeros((0, 0), np.float32), b[:0])
    *_, cache = lstm_forward(x, W_ih, W_hh, b)
    with pytest.raises(ValueError, match="^dy: "):
        lstm_backward(np.zeros((3, 2, 4)), None, None, cache)
    with pytest.raises(ValueError, match="^dc_n: "):
        lstm_backward(None, None, np.zeros((2, 4)), cache)


# ---------------------------------------------------------------------------------------------
# The shared helpers in kernels/_common.py
# ---------------------------------------------------------------------------------------------

@njit
def _exp_expm1_array(x, e, em1):
    for k in range(x.size):
        e[k], em1[k] = exp_expm1(x[k])


@pytest.mark.parametrize("dtype, ulps", [(np.float64, 1), (np.float32, 1)])
def test_exp_expm1_to_one_ulp(dtype, ulps):
    """Relative error of both results within about one unit in the last place, x in its
    normal range (float32: down to -87, float64: down to -708), results in x's dtype."""
    lo = 87.0 if dtype == np.float32 else 708.0
    x = -np.concatenate([np.linspace(0, lo, 100001), np.logspace(-30, np.log10(lo), 5001)])
    x = x.astype(dtype)
    e, em1 = np.empty_like(x), np.empty_like(x)
    _exp_expm1_array(x, e, em1)
    x64 = x.astype(np.float64)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(e, np.exp(x64), rtol=ulps * eps, atol=0)
    nonzero = x64 != 0
    np.testing.assert_allclose(em1[nonzero], np.expm1(x64[nonzero]), rtol=ulps * eps, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_tanh_stable_and_accurate(dtype):
    z = np.concatenate([np.linspace(-120, 120, 4801), [-1e30, -1000, 1e-30, 0, 1000, 1e30]])
    z = z.astype(dtype)
    z64 = z.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = np.array([sigmoid(v) for v in z])
        t = np.array([tanh(v) for v in z])
        s_ref, t_ref = ref.sigmoid(z64), np.tanh(z64)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.abs(t) <= 1)
    tol = 1e-15 if dtype == np.float64 else 1.5e-7                # float32: ~1 ulp of 1
    np.testing.assert_allclose(s, s_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(t, t_ref, rtol=0, atol=tol)
    normal = z64 > (-87 if dtype == np.float32 else -700)  # relative precision for z << 0 too
    np.testing.assert_allclose(s[normal], s_ref[normal], rtol=2 * np.finfo(dtype).eps)
    assert np.isnan(sigmoid(np.nan)) and np.isnan(tanh(np.nan))
    # below e^z's normal range sigmoid is exactly 0, so its derivative s (1 - s) is 0 as well
    # (it had stopped at ~1e-38: a weight gradient of 2.7 at x = 3e38, where the true one is 0)
    below = z64 <= (-87.7 if dtype == np.float32 else -708.8)
    assert below.sum() >= 2 and np.all(s[below] == 0)
    assert sigmoid(dtype(-np.inf)) == 0 and sigmoid(dtype(np.inf)) == 1
    assert tanh(dtype(-np.inf)) == -1 and tanh(dtype(np.inf)) == 1
    # tanh to a few ulp relative to itself, down to tiny |z| (tanh z ~ z there): a formula
    # like (1 - e^-2z) / (1 + e^-2z) cancels, ~3 % wrong at 1e-6 and 0 below ~3e-8 in float32
    small = np.logspace(np.log10(np.finfo(dtype).tiny) + 1, 1.3, 800).astype(dtype)
    small = np.concatenate([small, -small])
    t = np.array([tanh(v) for v in small])
    np.testing.assert_allclose(t, np.tanh(small.astype(np.float64)), rtol=3 * np.finfo(dtype).eps,
                               atol=0)
    # near saturation, where the backward's factor 1 - tanh^2 magnifies its error, within 1.6
    # ulp of float32 (the denominator 2 + expm1(-2|z|) there had reached 2.5)
    if dtype == np.float32:
        sat = np.linspace(2, 9, 20001).astype(dtype)
        sat = np.concatenate([sat, -sat])
        t, t_ref = np.array([tanh(v) for v in sat]), np.tanh(sat.astype(np.float64))
        ulps = np.abs(t - t_ref) / np.spacing(np.abs(t_ref).astype(dtype))
        assert ulps.max() <= 1.6, ulps.max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_expm1_below_the_normal_range_is_zero_and_minus_one(dtype):
    """Below e^x's normal range (from the clamp, -88 in float32 and -709 in float64) exactly 0
    and -1; above it, the accurate values; NaN stays NaN."""
    x = np.array([-88, -88.5, -100, -700, -709, -710, -1e4, -1e30, -np.inf, np.nan], dtype)
    e, em1 = np.empty_like(x), np.empty_like(x)
    _exp_expm1_array(x, e, em1)
    x64 = x.astype(np.float64)
    below = x64 <= (-88 if dtype == np.float32 else -709)
    assert np.all(e[below] == 0) and np.all(em1[below] == -1)
    normal = ~below & ~np.isnan(x64)
    assert normal.sum() == (0 if dtype == np.float32 else 4)
    np.testing.assert_allclose(e[normal], np.exp(x64[normal]), rtol=4 * np.finfo(dtype).eps)
    assert np.isnan(e[-1]) and np.isnan(em1[-1])


def test_saturated_gates_give_the_reference_weight_gradients():
    """Inputs so large that gates saturate: the gradients through them are exactly 0, as in the
    float64 reference, not the ~1e-38 derivative a clamped exp left (times x ~ 1e38)."""
    T, B, I, H = 3, 2, 2, 3
    x = np.full((T, B, I), 3e38, np.float32)
    x[:, 1] = -3e38
    W_ih = np.full((4 * H, I), 0.5, np.float32)
    W_hh = np.zeros((4 * H, H), np.float32)
    b = np.zeros(4 * H, np.float32)
    dy = np.ones((T, B, H), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        *_, cache = lstm_forward(x, W_ih, W_hh, b)
        got = lstm_backward(dy, None, None, cache)
        *_, rcache = ref.lstm_forward(x.astype(np.float64), W_ih.astype(np.float64),
                                      W_hh.astype(np.float64), b.astype(np.float64))
        want = ref.lstm_backward(dy.astype(np.float64), None, None, rcache)
    for name, g, w in zip(("dx", "dW_ih", "dW_hh", "db"), got, want):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=name)


@njit(nogil=True, fastmath={"contract"}, error_model="numpy")   # a core's options
def _products(a, b, out_ab, out_atb, out_abt):
    dot_into(a, b, out_ab)                                  # C @ C
    dot_into(a.T, a, out_atb)                               # F @ C (a transposed view)
    dot_into(a, b.T.copy().T, out_abt)                      # C @ F


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [0, 1, 3])
def test_dot_into_is_blas_dot_in_every_layout(rng, dtype, m):
    a = rng.standard_normal((m, 4)).astype(dtype)
    b = rng.standard_normal((4, 5)).astype(dtype)
    outs = [np.full((m, 5), np.nan, dtype), np.full((4, 4), np.nan, dtype),
            np.full((m, 5), np.nan, dtype)]
    _products(a, b, *outs)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(outs[0], a @ b, rtol=tol, atol=tol)   # m = 0: k > 0, empty out
    np.testing.assert_allclose(outs[1], a.T @ a, rtol=tol, atol=tol)  # m = 0: all zeros
    np.testing.assert_allclose(outs[2], a @ b, rtol=tol, atol=tol)
    assert outs[1].dtype == dtype


@pytest.mark.parametrize("impl", [_dot_into_blas, _dot_into_numba])
def test_dot_into_checks_shapes_either_way(rng, impl):
    """Both the intrinsic (Numba's np.dot code generator called in place) and the plain-Numba
    fallback (kept for a Numba that moves it) refuse mismatched shapes as np.dot does."""
    f = njit(lambda a, b, out: impl(a, b, out))
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    out = np.empty((3, 5))
    f(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-14)
    with pytest.raises(ValueError, match="incompatible array sizes"):
        f(a, b[:3], out)
    with pytest.raises(ValueError, match="incompatible output array size"):
        f(a, b, np.empty((3, 4)))


@pytest.mark.parametrize("impl", [_dot_into_views_blas, _dot_into_views_numba])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_into_views_reads_windows_where_they_lie(rng, impl, dtype):
    """``dot_into_views``: column windows of a C- or Fortran-ordered matrix and their transposes,
    as ``gru_tiled._grads_by_blas`` passes them (BLAS reads them with their row stride; the
    fallback copies), against NumPy; sizes and strides it cannot take are refused."""
    tn = njit(lambda m, c0, c1, x, out: impl(m[:, c0:c1].T, x, out))
    nn = njit(lambda m, c0, c1, w, out: impl(m[:, c0:c1], w, out))
    f = njit(lambda a, b, out: impl(a, b, out))
    tol = 1e-5 if dtype == np.float32 else 1e-13
    M = rng.standard_normal((37, 20)).astype(dtype)
    x, w = rng.standard_normal((37, 6)).astype(dtype), rng.standard_normal((15, 6)).astype(dtype)
    for m in (M, np.asfortranarray(M)):
        out = np.full((15, 6), np.nan, dtype)
        tn(m, 5, 20, x, out)
        np.testing.assert_allclose(out, M[:, 5:].T @ x, rtol=tol, atol=tol)
        out = np.full((37, 6), np.nan, dtype)
        nn(m, 5, 20, w, out)
        np.testing.assert_allclose(out, M[:, 5:] @ w, rtol=tol, atol=tol)
    out = np.full((37, 5), np.nan, dtype)                   # (a row window of the output)
    f(M[:, :4], M[:4, 15:], out)
    np.testing.assert_allclose(out, M[:, :4] @ M[:4, 15:], rtol=tol, atol=tol)
    out = np.full((37, 6), np.nan, dtype)
    f(M[:, :0], w[:0], out)                                 # k = 0: zeros
    np.testing.assert_array_equal(out, 0)
    with pytest.raises(ValueError, match="incompatible array sizes"):
        f(M, w, np.empty((37, 6), dtype))
    with pytest.raises(ValueError, match="incompatible array sizes"):
        f(M[:, :15], w, np.empty((36, 6), dtype))
    with pytest.raises(ValueError, match="not unit-stride"):
        f(M[:, ::2], w[:10], np.empty((37, 6), dtype))


def test_flip_valid_matches_reference_and_is_an_involution(rng):
    a = rng.standard_normal((5, 3, 2))
    lengths = np.array([5, 2, 1])
    once = flip_valid(a, lengths, np.empty_like(a))
    np.testing.assert_array_equal(once, ref.flip_valid(a, lengths))
    np.testing.assert_array_equal(flip_valid(once, lengths, np.empty_like(a)), a)


# ---------------------------------------------------------------------------------------------
# PyTorch parity (float64): outputs, final states and every gradient
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def torch_lstm(torch, W_ih, W_hh, b, bidirectional=False, W_rev=None):
    """torch.nn.LSTM holding our weights; its two biases are halves of our one bias ``b``."""
    H = W_hh.shape[1]
    m = torch.nn.LSTM(W_ih.shape[1], H, bidirectional=bidirectional).double()
    sets = [("", (W_ih, W_hh, b))] + ([("_reverse", W_rev)] if bidirectional else [])
    with torch.no_grad():
        for suffix, (wi, wh, bb) in sets:
            getattr(m, "weight_ih_l0" + suffix).copy_(torch.from_numpy(wi))
            getattr(m, "weight_hh_l0" + suffix).copy_(torch.from_numpy(wh))
            getattr(m, "bias_ih_l0" + suffix).copy_(torch.from_numpy(bb / 2))
            getattr(m, "bias_hh_l0" + suffix).copy_(torch.from_numpy(bb / 2))
    return m


def torch_grads(m, suffix=""):
    g = {n: p.grad.numpy() for n, p in m.named_parameters()}
    return (g["weight_ih_l0" + suffix], g["weight_hh_l0" + suffix],
            g["bias_ih_l0" + suffix])  # bias_ih and bias_hh get the same gradient


def assert_close(got, want, name):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8, err_msg=name)


def test_matches_torch(torch, rng):
    T, B, I, H = 6, 3, 4, 5
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, T, B, I, H)
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    y, h_n, c_n, cache = lstm_forward(x, W_ih, W_hh, b, h0, c0)
    dx, dW_ih, dW_hh, db, dh0, dc0 = lstm_backward(dy, dh, dc, cache)

    m = torch_lstm(torch, W_ih, W_hh, b)
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    yt, (hnt, cnt) = m(xt, (h0t[None], c0t[None]))
    loss = (yt * torch.from_numpy(dy)).sum() + (hnt[0] * torch.from_numpy(dh)).sum() \
        + (cnt[0] * torch.from_numpy(dc)).sum()
    loss.backward()
    for name, got, want in (("y", y, yt), ("h_n", h_n, hnt[0]), ("c_n", c_n, cnt[0]),
                            ("dx", dx, xt.grad), ("dh0", dh0, h0t.grad), ("dc0", dc0, c0t.grad)):
        assert_close(got, want.detach().numpy(), name)
    for name, got, want in zip(("dW_ih", "dW_hh", "db"), (dW_ih, dW_hh, db), torch_grads(m)):
        assert_close(got, want, name)


def test_matches_torch_packed_ragged_bidirectional(torch, rng):
    """A bidirectional layer over a ragged batch = our kernel run forward + our kernel reversed,
    checked against torch.nn.LSTM(bidirectional=True) on a PackedSequence (enforce_sorted=False).
    """
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    T, B, I, H = 7, 4, 3, 5
    x, W_ih, W_hh, b, h0, c0 = make_lstm(rng, T, B, I, H)
    _, W_ih_r, W_hh_r, b_r, h0_r, c0_r = make_lstm(rng, T, B, I, H)
    lengths = np.array([5, 7, 1, 3])                       # unsorted, with a length-1 sequence
    valid = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]
    dy = rng.standard_normal((T, B, 2 * H)) * valid       # padding outputs have no gradient
    dh, dc = rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))

    fwd = lstm_forward(x, W_ih, W_hh, b, h0, c0, lengths)
    bwd = lstm_forward(x, W_ih_r, W_hh_r, b_r, h0_r, c0_r, lengths, reverse=True)
    g_f = lstm_backward(dy[..., :H], dh[0], dc[0], fwd[3])
    g_b = lstm_backward(dy[..., H:], dh[1], dc[1], bwd[3])

    m = torch_lstm(torch, W_ih, W_hh, b, bidirectional=True, W_rev=(W_ih_r, W_hh_r, b_r))
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(np.stack([h0, h0_r]), requires_grad=True)
    c0t = torch.tensor(np.stack([c0, c0_r]), requires_grad=True)
    packed = pack_padded_sequence(xt, torch.from_numpy(lengths), enforce_sorted=False)
    out, (hnt, cnt) = m(packed, (h0t, c0t))
    yt, _ = pad_packed_sequence(out, total_length=T)
    loss = (yt * torch.from_numpy(dy)).sum() + (hnt * torch.from_numpy(dh)).sum() \
        + (cnt * torch.from_numpy(dc)).sum()
    loss.backward()

    y = np.concatenate([fwd[0], bwd[0]], axis=2)
    assert_close(y, yt.detach().numpy(), "y")
    assert_close(np.stack([fwd[1], bwd[1]]), hnt.detach().numpy(), "h_n")
    assert_close(np.stack([fwd[2], bwd[2]]), cnt.detach().numpy(), "c_n")
    assert_close(g_f[0] + g_b[0], xt.grad.numpy(), "dx")
    assert_close(np.stack([g_f[4], g_b[4]]), h0t.grad.numpy(), "dh0")
    assert_close(np.stack([g_f[5], g_b[5]]), c0t.grad.numpy(), "dc0")
    for suffix, g in (("", g_f), ("_reverse", g_b)):
        for name, got, want in zip(("dW_ih", "dW_hh", "db"), g[1:4], torch_grads(m, suffix)):
            assert_close(got, want, name + suffix)
