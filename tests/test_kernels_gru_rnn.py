"""The fast Numba GRU and tanh RNN (kernels/gru.py, kernels/rnn.py) against the NumPy reference,
central differences, themselves run in two halves, and PyTorch's nn.GRU / nn.RNN (tanh, float64,
the same weights). The two files share their structure, so every test here runs for both cells
(``cell``); the LSTM's, written first and organized differently, are in test_kernels_lstm.py.

Names: the differentiable arguments are x, W_ih, W_hh, the biases (the GRU's b_ih, b_hh; the
RNN's b, which is PyTorch's two summed) and h0; the upstream gradients dy, dh (dh of h_n). Every
comparison reads ``_close(a, b, tol)``: max |a - b| <= tol relative to max(1, max |b|).
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import njit
from numba.core.errors import NumbaPerformanceWarning

from kernels import gru, rnn
from kernels import reference as ref

from _torch import torch, torch_layer  # noqa: E402
from _numeric import numeric_grad, rel_err

FAST = {"gru": gru, "rnn": rnn}
GATES = {"gru": 3, "rnn": 1}
BIASES = {"gru": ("b_ih", "b_hh"), "rnn": ("b",)}
CELLS = sorted(FAST)
cells = pytest.mark.parametrize("cell", CELLS)


def _args(cell):
    """The differentiable arguments' names, in the order the gradients come back."""
    return ("x", "W_ih", "W_hh", *BIASES[cell], "h0")


def _grads(cell):
    return tuple("d" + name for name in _args(cell))


def _close(a, b, tol):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(np.abs(a - b).max()) if a.size else 0.0
    return err <= tol * max(1.0, float(np.abs(b).max()) if b.size else 0.0)


def _problem(cell, seed, T, B, I, H, dtype=np.float64, scale=0.5):
    """Random inputs, weights, h0, lengths and upstream grads (all float64 unless dtype says)."""
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    p = dict(x=rng.standard_normal((T, B, I)),
             W_ih=scale * rng.standard_normal((G * H, I)),
             W_hh=scale * rng.standard_normal((G * H, H)))
    for name in BIASES[cell]:
        p[name] = scale * rng.standard_normal(G * H)
    p["h0"] = rng.standard_normal((B, H))
    p = {k: v.astype(dtype) for k, v in p.items()}
    lengths = rng.integers(1, T + 1, size=B)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh = rng.standard_normal((B, H)).astype(dtype)
    return p, lengths, dy, dh


def _weights(cell, p):
    """(W_ih, W_hh, *biases) of a problem, as the kernels take them after x."""
    return (p["W_ih"], p["W_hh"], *(p[name] for name in BIASES[cell]))


def _forward(cell, mod, x, W, h0=None, lengths=None, reverse=False):
    return getattr(mod, f"{cell}_forward")(x, *W, h0, lengths, reverse)


def _backward(cell, mod, dy, dh, cache):
    return getattr(mod, f"{cell}_backward")(dy, dh, cache)


def _run(cell, mod, p, lengths, reverse, dy, dh, h0=True):
    y, h_n, cache = _forward(cell, mod, p["x"], _weights(cell, p), p["h0"] if h0 else None,
                             lengths, reverse)
    return y, h_n, _backward(cell, mod, dy, dh, cache)


sizes = st.integers(1, 5)


# ---------------------------------------------------------------------------------------------
# fast == reference
# ---------------------------------------------------------------------------------------------

@cells
@given(T=sizes, B=sizes, I=sizes, H=sizes, seed=st.integers(0, 2**16),
       use_lengths=st.booleans(), use_h0=st.booleans(), reverse=st.booleans(),
       dy_none=st.booleans(), dh_none=st.booleans())
def test_matches_reference_float64(cell, T, B, I, H, seed, use_lengths, use_h0, reverse,
                                   dy_none, dh_none):
    p, lengths, dy, dh = _problem(cell, seed, T, B, I, H)
    lengths = lengths if use_lengths else None
    dy = None if dy_none else dy
    dh = None if dh_none else dh
    y, h_n, grads = _run(cell, FAST[cell], p, lengths, reverse, dy, dh, use_h0)
    y_r, h_r, grads_r = _run(cell, ref, p, lengths, reverse, dy, dh, use_h0)
    assert _close(y, y_r, 1e-12) and _close(h_n, h_r, 1e-12)
    for name, g, g_r in zip(_grads(cell), grads, grads_r):
        assert _close(g, g_r, 1e-12), name
    if lengths is not None:                              # padding outputs and grads are zero
        pad = np.arange(T)[:, None] >= lengths[None, :]  # (T, B)
        assert not y[pad].any() and not grads[0][pad].any()


@cells
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("reverse", [False, True])
def test_wide_rows_match_reference(cell, dtype, tol, reverse):
    """H = 67: the pointwise loops run their SIMD bodies and their remainders (hypothesis draws
    H <= 5, which only ever reaches the scalar remainder). Weights ~ 1/sqrt(H), as in a trained
    layer's range: with much larger ones the recurrence is chaotic and amplifies float32 round-off
    far beyond any tolerance."""
    p, lengths, dy, dh = _problem(cell, 9, 6, 5, 7, 67, dtype, scale=1 / np.sqrt(67))
    y, h_n, grads = _run(cell, FAST[cell], p, lengths, reverse, dy, dh)
    y_r, h_r, grads_r = _run(cell, ref, p, lengths, reverse, dy, dh)
    for a, a_r in zip((y, h_n) + grads, (y_r, h_r) + grads_r):
        assert _close(a, a_r, tol)


@cells
@given(T=sizes, B=sizes, I=sizes, H=sizes, seed=st.integers(0, 2**16), reverse=st.booleans())
@settings(max_examples=10)
def test_float32_matches_reference(cell, T, B, I, H, seed, reverse):
    p, lengths, dy, dh = _problem(cell, seed, T, B, I, H, np.float32)
    y, h_n, grads = _run(cell, FAST[cell], p, lengths, reverse, dy, dh)
    y_r, h_r, grads_r = _run(cell, ref, p, lengths, reverse, dy, dh)
    for a, a_r in zip((y, h_n) + grads, (y_r, h_r) + grads_r):
        assert a.dtype == np.float32
        assert _close(a, a_r, 1e-5)


# ---------------------------------------------------------------------------------------------
# central differences (float64)
# ---------------------------------------------------------------------------------------------

@cells
@given(T=st.integers(1, 4), B=st.integers(1, 3), I=st.integers(1, 3), H=st.integers(1, 3),
       seed=st.integers(0, 2**16), use_lengths=st.booleans(), reverse=st.booleans())
@settings(max_examples=15)
def test_gradcheck(cell, T, B, I, H, seed, use_lengths, reverse):
    p, lengths, dy, dh = _problem(cell, seed, T, B, I, H)
    lengths = lengths if use_lengths else None

    def loss():
        y, h_n, _ = _forward(cell, FAST[cell], p["x"], _weights(cell, p), p["h0"], lengths,
                             reverse)
        return float(np.sum(y * dy) + np.sum(h_n * dh))

    _, _, grads = _run(cell, FAST[cell], p, lengths, reverse, dy, dh)
    for name, g in zip(_args(cell), grads):
        err = rel_err(g, numeric_grad(loss, p[name]), floor=1e-3)
        assert err < 1e-6, (name, err)


# ---------------------------------------------------------------------------------------------
# two halves carrying the state == one run; API details
# ---------------------------------------------------------------------------------------------

@cells
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T1", [1, 3, 6])
def test_two_halves_equal_whole(cell, reverse, T1):
    T, B, I, H = 7, 3, 4, 5
    p, _, dy, dh = _problem(cell, 7, T, B, I, H)
    fast, W = FAST[cell], _weights(cell, p)
    y, h_n, cache = _forward(cell, fast, p["x"], W, p["h0"], reverse=reverse)
    grads = _backward(cell, fast, dy, dh, cache)

    # the part the recurrence runs first: x[:T1] forward, x[T1:] in reverse
    first, second = (slice(T1, T), slice(0, T1)) if reverse else (slice(0, T1), slice(T1, T))
    y1, h1, c1 = _forward(cell, fast, p["x"][first], W, p["h0"], reverse=reverse)
    y2, h2, c2 = _forward(cell, fast, p["x"][second], W, h1, reverse=reverse)
    assert _close(np.concatenate([y1, y2] if not reverse else [y2, y1]), y, 1e-13)
    assert _close(h2, h_n, 1e-13)

    g2 = _backward(cell, fast, dy[second], dh, c2)       # dh0 of the second part is the
    g1 = _backward(cell, fast, dy[first], g2[-1], c1)    # upstream dh of the first part
    assert _close(g1[-1], grads[-1], 1e-12)              # dh0
    dx = np.concatenate([g1[0], g2[0]] if not reverse else [g2[0], g1[0]])
    assert _close(dx, grads[0], 1e-12)
    for k in range(1, len(grads) - 1):                   # shared weights: grads add up
        assert _close(g1[k] + g2[k], grads[k], 1e-12), _grads(cell)[k]


@cells
def test_backward_returns_fresh_arrays_and_leaves_inputs_alone(cell):
    p, lengths, dy, dh = _problem(cell, 3, 4, 3, 2, 3)
    saved = {k: v.copy() for k, v in p.items()}
    dy0, dh0 = dy.copy(), dh.copy()
    y, h_n, cache = _forward(cell, FAST[cell], p["x"], _weights(cell, p), p["h0"], lengths, True)
    first = _backward(cell, FAST[cell], dy, dh, cache)
    kept = [g.copy() for g in first]
    for g in first:                                      # a caller accumulating into them ...
        g += 1.0
    y[:] = 0
    h_n[:] = 0
    second = _backward(cell, FAST[cell], dy, dh, cache)  # ... changes nothing the cache holds
    for name, a, b in zip(_grads(cell), second, kept):
        assert np.array_equal(a, b), name
    for k in p:
        assert np.array_equal(p[k], saved[k]), k
    assert np.array_equal(dy, dy0) and np.array_equal(dh, dh0)


@cells
def test_cores_compile_without_performance_warnings(cell, monkeypatch):
    """np.dot in the cores gets only contiguous same-dtype 2-D arrays; anything else makes Numba
    copy it on every call and say so with a NumbaPerformanceWarning at compile time. Fresh,
    uncached copies of the cores are compiled here (float32) so that the warnings are raised."""
    fast = FAST[cell]
    for name in ("_forward_core", "_backward_core"):
        monkeypatch.setattr(fast, name, njit(error_model="numpy")(getattr(fast, name).py_func))
    p, lengths, dy, dh = _problem(cell, 1, 3, 2, 4, 5, np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y, h_n, cache = _forward(cell, fast, p["x"], _weights(cell, p), p["h0"], lengths, True)
        _backward(cell, fast, dy, dh, cache)
    assert not [w for w in caught if issubclass(w.category, NumbaPerformanceWarning)]


# each case replaces one argument (of a problem with T, B, I, H = 4, 2, 2, 3), whose name the
# error must start with
BAD_ARGUMENTS = {
    "W_hh (6, 3)": lambda cell: dict(W_hh=np.zeros((6, 3))),
    "W_ih (G H, 5)": lambda cell: dict(W_ih=np.zeros((GATES[cell] * 3, 5))),
    "last bias (8,)": lambda cell: {BIASES[cell][-1]: np.zeros(8)},
    "h0 (3, 3)": lambda cell: dict(h0=np.zeros((3, 3))),
    "lengths 0": lambda cell: dict(lengths=np.array([0, 1])),
    "lengths > T": lambda cell: dict(lengths=np.array([1, 5])),
    "x int32": lambda cell: dict(x=np.zeros((4, 2, 2), np.int32)),
    "x T = 0": lambda cell: dict(x=np.zeros((0, 2, 2))),
    "x 2-D": lambda cell: dict(x=np.zeros((4, 2))),
    "W_hh empty": lambda cell: dict(W_hh=np.zeros((0, 0))),
}


@cells
@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_are_named(cell, case):
    p, _, _, _ = _problem(cell, 0, 4, 2, 2, 3)
    bad = BAD_ARGUMENTS[case](cell)
    kw = dict(p, lengths=None)
    kw.update(bad)
    with pytest.raises((ValueError, TypeError), match=f"^{next(iter(bad))}:"):
        _forward(cell, FAST[cell], kw["x"], _weights(cell, kw), kw["h0"], kw["lengths"])


@cells
def test_backward_bad_upstream_grads_are_named(cell):
    p, _, dy, dh = _problem(cell, 0, 4, 2, 2, 3)
    _, _, cache = _forward(cell, FAST[cell], p["x"], _weights(cell, p))
    with pytest.raises(ValueError, match="^dy:"):
        _backward(cell, FAST[cell], dy[:3], dh, cache)
    with pytest.raises(ValueError, match="^dh_n:"):
        _backward(cell, FAST[cell], dy, dh.T, cache)


# ---------------------------------------------------------------------------------------------
# saturation and long sequences
# ---------------------------------------------------------------------------------------------

@cells
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturation_stays_finite_and_exact(cell, dtype):
    """Pre-activations far beyond |z| = 90: a naive sigmoid 1 / (1 + exp(-z)) would overflow
    (the GRU's gates), tanh saturates to +-1 and its derivative to 0."""
    p, lengths, dy, dh = _problem(cell, 5, 6, 4, 3, 5, dtype, scale=60.0)
    p["x"] *= 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, h_n, grads = _run(cell, FAST[cell], p, lengths, True, dy, dh)
        y_r, h_r, grads_r = _run(cell, ref, p, lengths, True, dy, dh)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for a, a_r in zip((y, h_n) + grads, (y_r, h_r) + grads_r):
        assert np.isfinite(a).all()
        assert _close(a, a_r, tol)


@cells
def test_long_float32_sequence_stays_finite(cell):
    T, B, I, H = 5000, 2, 3, 8
    p, lengths, dy, dh = _problem(cell, 11, T, B, I, H, np.float32, scale=1.0)
    y, h_n, grads = _run(cell, FAST[cell], p, lengths, False, dy, dh)
    for a in (y, h_n) + grads:
        assert a.dtype == np.float32 and np.isfinite(a).all()
    # the RNN's (2): tanh; the GRU's (5): a convex mix of n (a tanh) and h_{t-1}, from h0
    bound = 1.0 if cell == "rnn" else max(1.0, np.abs(p["h0"]).max())
    assert np.abs(y).max() <= bound
    assert np.abs(grads[1]).max() > 0
    # and right, not only finite, against the float64 reference on the same numbers: the GRU
    # (contracting here) over all 5000 steps; the RNN, whose W_hh at this scale makes it
    # chaotic (float32's round-off grows to ~0.3 by the end), over its first 50 outputs
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    y_r, h_r, grads_r = _run(cell, ref, p64, lengths, False, dy.astype(np.float64),
                             dh.astype(np.float64))
    if cell == "gru":
        for a, a_r in zip((y, h_n) + grads, (y_r, h_r) + grads_r):
            assert _close(a, a_r, 1e-4)
    else:
        assert _close(y[:50], y_r[:50], 1e-4)


# ---------------------------------------------------------------------------------------------
# PyTorch's nn.GRU and nn.RNN (tanh), float64, the same weights
# ---------------------------------------------------------------------------------------------

def _torch_net(cell, dirs, x, lengths, h0, dy, dh, bidirectional):
    """nn.GRU / nn.RNN with our weights (``dirs`` = one or two dicts of W_ih, W_hh, b_ih, b_hh:
    PyTorch's two biases; the RNN kernel takes their sum).

    Returns y (T, B, D*H), h_n (D, B, H) and the grads of x, h0 and every weight, as NumPy.
    """
    T, B, I = x.shape
    net = torch_layer(cell, dirs, I, bidirectional)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    if lengths is None:
        yt, hn = net(xt, h0t)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths),
                                                         enforce_sorted=False)
        yp, hn = net(packed, h0t)
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, total_length=T)
    (torch.sum(yt * torch.from_numpy(dy)) + torch.sum(hn * torch.from_numpy(dh))).backward()
    wgrads = []
    for d in range(len(dirs)):
        sfx = "_reverse" if d else ""
        wgrads.append([getattr(net, n + sfx).grad.numpy()
                       for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")])
    return yt.detach().numpy(), hn.detach().numpy(), xt.grad.numpy(), h0t.grad.numpy(), wgrads


@cells
@given(T=sizes, B=sizes, I=sizes, H=sizes, seed=st.integers(0, 2**16),
       ragged=st.booleans(), bidirectional=st.booleans())
@settings(max_examples=15)
def test_matches_torch(cell, T, B, I, H, seed, ragged, bidirectional):
    D, G = (2 if bidirectional else 1), GATES[cell]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I))
    dirs = [dict(W_ih=0.5 * rng.standard_normal((G * H, I)),
                 W_hh=0.5 * rng.standard_normal((G * H, H)),
                 b_ih=0.5 * rng.standard_normal(G * H),
                 b_hh=0.5 * rng.standard_normal(G * H)) for _ in range(D)]
    h0 = rng.standard_normal((D, B, H))
    lengths = rng.integers(1, T + 1, size=B) if ragged else None
    dy = rng.standard_normal((T, B, D * H))
    dh = rng.standard_normal((D, B, H))

    y_t, h_t, dx_t, dh0_t, wg_t = _torch_net(cell, dirs, x, lengths, h0, dy, dh, bidirectional)

    dx = np.zeros_like(x)
    for d, w in enumerate(dirs):                         # direction d: forward, then reverse
        biases = (w["b_ih"], w["b_hh"]) if cell == "gru" else (w["b_ih"] + w["b_hh"],)
        y, h_n, cache = _forward(cell, FAST[cell], x, (w["W_ih"], w["W_hh"], *biases), h0[d],
                                 lengths, bool(d))
        g = _backward(cell, FAST[cell], dy[:, :, d * H:(d + 1) * H], dh[d], cache)
        assert _close(y, y_t[:, :, d * H:(d + 1) * H], 1e-8)
        assert _close(h_n, h_t[d], 1e-8)
        assert _close(g[-1], dh0_t[d], 1e-8)
        ours = list(g[1:-1])                             # dW_ih, dW_hh, the biases' grads
        if cell == "rnn":                                # d(b_ih + b_hh): each of PyTorch's
            ours.append(ours[-1])
        for name, a, theirs in zip(("dW_ih", "dW_hh", "db_ih", "db_hh"), ours, wg_t[d]):
            assert _close(a, theirs, 1e-8), name
        dx += g[0]
    assert _close(dx, dx_t, 1e-8)
