"""The kernels' ``*_unchecked`` functions, which rnncore's layers call (they check their inputs
themselves): on arguments already checked they give what the public functions give, bit for
bit, on both paths, with and without lengths, initial states and reverse; and the layers hand
them C-contiguous writable arrays of their dtype whatever they were given (a Parameter's array
may have any layout; an input or a gradient any layout, and be read-only)."""

import numpy as np
import pytest

import rnncore.layers
import rnncore.recurrent
from kernels import gru, linear, log_softmax, lstm, rnn
from rnncore import GRU, LSTM, RNN, Linear, LogSoftMax

T, B, I, H = 4, 3, 5, 6
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
KERNELS = {"rnn": rnn, "gru": gru, "lstm": lstm}
STATES = {"rnn": 1, "gru": 1, "lstm": 2}
LAYERS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


def _weights(cell, rng, dtype):
    G = GATES[cell]
    w = [(0.5 * rng.standard_normal(s)).astype(dtype) for s in [(G * H, I), (G * H, H), (G * H,)]]
    return w + [(0.5 * rng.standard_normal(G * H)).astype(dtype)] if cell == "gru" else w


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("cell", sorted(KERNELS))
@pytest.mark.parametrize("path, dtype", [("steps", np.float32), ("steps", np.float64),
                                         ("tiled", np.float32)])
@pytest.mark.parametrize("ragged", [False, True])
def test_unchecked_recurrent_kernels_match_the_public_ones(cell, path, dtype, ragged):
    rng = np.random.default_rng(3)
    k = KERNELS[cell]
    fwd, bwd = getattr(k, f"{cell}_forward"), getattr(k, f"{cell}_backward")
    fwd_u = getattr(k, f"{cell}_forward_unchecked")
    bwd_u = getattr(k, f"{cell}_backward_unchecked")
    x = rng.standard_normal((T, B, I)).astype(dtype)
    weights = _weights(cell, rng, dtype)
    states = [rng.standard_normal((B, H)).astype(dtype) for _ in range(STATES[cell])]
    lengths = np.array([4, 2, 3]) if ragged else None
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstates = [rng.standard_normal((B, H)).astype(dtype) for _ in range(STATES[cell])]
    for reverse in (False, True):
        for given in (states, [None] * len(states)):       # initial states, or zeros
            *out, cache = fwd(x, *weights, *given, lengths=lengths, reverse=reverse, path=path)
            *out_u, cache_u = fwd_u(x, *weights, *given,
                                    None if lengths is None else lengths.astype(np.int64),
                                    reverse, path=path)
            _same(out_u, out)
            assert isinstance(cache_u[0], str) == (path == "tiled")
            for up in (dstates, [None] * len(dstates)):  # upstream grads of the final states
                _same(bwd_u(dy, *up, cache_u), bwd(dy, *up, cache))
                _same(bwd_u(None, *up, cache_u), bwd(None, *up, cache))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unchecked_linear_and_log_softmax_match_the_public_ones(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, I)).astype(dtype)
    W, b = rng.standard_normal((3, I)).astype(dtype), rng.standard_normal(3).astype(dtype)
    y = linear.linear_forward(x, W, b)
    np.testing.assert_array_equal(linear.linear_forward_unchecked(x, W, b), y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    _same(linear.linear_backward_unchecked(dy, x, W), linear.linear_backward(dy, x, W))
    z = log_softmax.log_softmax_forward(y)
    np.testing.assert_array_equal(log_softmax.log_softmax_forward_unchecked(y), z)
    np.testing.assert_array_equal(log_softmax.log_softmax_backward_unchecked(dy, z),
                                  log_softmax.log_softmax_backward(dy, z))


def _in_another_layout(a):
    """``a``'s values in an array that is not C-contiguous: Fortran order, or (1-D) a strided
    view."""
    if a.ndim == 1:
        wide = np.zeros(2 * a.size, a.dtype)
        wide[::2] = a
        return wide[::2]
    return np.asfortranarray(a)


def _fortran(a):
    return np.asfortranarray(a) if a.ndim > 1 else a


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


GIVEN = {"fortran": _fortran, "read-only": _read_only}   # how an input or gradient is given


def _c_order_only(f, seen):
    """``f``, refusing any array argument that is not C-contiguous and writable (what the
    unchecked kernels take: another layout would fail to type or compile them once more, as
    would a read-only array)."""
    def spy(*args, **kw):
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, f"{f.__name__} was given a {a.strides} array"
                assert a.flags.writeable, f"{f.__name__} was given a read-only array"
                seen.append(f.__name__)
        return f(*args, **kw)
    return spy


@pytest.mark.parametrize("cell", sorted(LAYERS))
@pytest.mark.parametrize("kw", [{}, dict(num_layers=2, bidirectional=True),
                                dict(return_sequences=False)])
@pytest.mark.parametrize("given", sorted(GIVEN))
def test_layers_with_arrays_in_any_layout_give_what_c_order_gives(cell, kw, given, monkeypatch):
    """Weights set to arrays of another layout (``Parameter.data`` takes any), an input, initial
    state and gradient in Fortran order or read-only: the same outputs and gradients as plain C
    order, and the kernels see C-contiguous writable arrays only."""
    as_given = GIVEN[given]
    rng = np.random.default_rng(5)
    seen = []
    monkeypatch.setitem(rnncore.recurrent._KERNELS, cell, tuple(
        _c_order_only(f, seen) for f in rnncore.recurrent._KERNELS[cell]))
    a, b = LAYERS[cell](I, H, **kw), LAYERS[cell](I, H, **kw)
    b.load_state_dict(a.state_dict())
    for p in b.parameters():
        p.data = _in_another_layout(p.data)
        assert not p.data.flags.c_contiguous
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    h0 = rng.standard_normal((L * D, B, H)).astype(np.float32)
    ya, yb = a.forward(x, h0=h0), b.forward(as_given(x), h0=as_given(h0))
    np.testing.assert_array_equal(yb, ya)
    gy = rng.standard_normal(ya.shape).astype(np.float32)
    np.testing.assert_array_equal(b.backward(x, as_given(gy)), a.backward(x, gy))
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pb.grad, pa.grad)
    np.testing.assert_array_equal(b.grad_h0, a.grad_h0)
    assert {f"{cell}_forward_unchecked", f"{cell}_backward_unchecked"} <= set(seen)


@pytest.mark.parametrize("given", sorted(GIVEN))
def test_linear_and_log_softmax_with_arrays_in_any_layout_give_what_c_order_gives(given,
                                                                                  monkeypatch):
    as_given = GIVEN[given]
    rng = np.random.default_rng(6)
    seen = []
    for name in ("linear_forward_unchecked", "linear_backward_unchecked",
                 "log_softmax_forward_unchecked", "log_softmax_backward_unchecked"):
        spy = _c_order_only(getattr(rnncore.layers, name), seen)
        monkeypatch.setattr(rnncore.layers, name, spy)
    a, b = Linear(I, 3), Linear(I, 3)
    b.load_state_dict(a.state_dict())
    b.weight.data, b.bias.data = _in_another_layout(b.weight.data), _in_another_layout(b.bias.data)
    x = rng.standard_normal((7, I)).astype(np.float32)                # (N, I): 2-D, as given
    ya, yb = a.forward(x), b.forward(as_given(x))
    np.testing.assert_array_equal(yb, ya)
    gy = rng.standard_normal(ya.shape).astype(np.float32)
    np.testing.assert_array_equal(b.backward(as_given(x), as_given(gy)), a.backward(x, gy))
    np.testing.assert_array_equal(b.weight.grad, a.weight.grad)
    np.testing.assert_array_equal(b.bias.grad, a.bias.grad)
    s = LogSoftMax()
    z = s.forward(ya)
    np.testing.assert_array_equal(s.forward(as_given(ya)), z)
    want = s.backward(ya, gy)
    np.testing.assert_array_equal(s.backward(ya, as_given(gy)), want)
    assert len(set(seen)) == 4
