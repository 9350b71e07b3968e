"""kernels.log_softmax: the compiled rows against plain NumPy, PyTorch and central differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _torch import torch

from kernels.log_softmax import log_softmax_backward, log_softmax_forward


def numpy_reference(x, dy):
    """(1) and (2) of the module docstring, in float64 with NumPy's reductions."""
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    y = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return y, dy - np.exp(y) * dy.astype(np.float64).sum(axis=1, keepdims=True)


@given(N=st.integers(1, 6), C=st.integers(1, 40), scale=st.sampled_from([1.0, 30.0, 1e4]),
       seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]))
@settings(max_examples=40, deadline=None)
def test_matches_numpy_and_torch(N, C, scale, seed, dtype):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((N, C))).astype(dtype)     # 1e4: exp would overflow unshifted
    dy = rng.standard_normal((N, C)).astype(dtype)
    y = log_softmax_forward(x)
    dx = log_softmax_backward(dy, y)
    assert y.dtype == dx.dtype == dtype and np.isfinite(y).all() and np.isfinite(dx).all()
    y_ref, dx_ref = numpy_reference(x, dy)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(y, y_ref, rtol=8 * eps, atol=8 * eps * scale * np.log2(C + 1))
    np.testing.assert_allclose(dx, dx_ref, rtol=16 * eps, atol=16 * eps * (1 + np.abs(dy).sum()))
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = torch.log_softmax(xt, dim=1)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=8 * eps, atol=8 * eps * scale * np.log2(C + 1))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=16 * eps, atol=16 * eps * (1 + np.abs(dy).sum()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [1e7, -1e7, 1e17, -1e30])
@pytest.mark.parametrize("spread", [0.0, 1.0, 30.0])
def test_rows_far_from_zero_keep_their_precision(offset, spread, dtype):
    """Rows around a large offset: x - (m + log s) loses log s (1e7 + log 2 rounds to 1e7 + 1
    in float32, 1e17 + log 2 to 1e17 in float64); (x - m) - log s, as in (1), keeps it."""
    rng = np.random.default_rng(0)
    C = 5
    x = (offset + spread * rng.standard_normal((4, C))).astype(dtype)   # spread 0: y = -log C
    dy = rng.standard_normal((4, C)).astype(dtype)
    y = log_softmax_forward(x)
    dx = log_softmax_backward(dy, y)
    y_ref, dx_ref = numpy_reference(x, dy)
    eps = np.finfo(dtype).eps
    y_tol = dict(rtol=8 * eps, atol=8 * eps * (1 + spread) * np.log2(C + 1))
    dx_tol = dict(rtol=16 * eps, atol=16 * eps * (1 + np.abs(dy).sum()))
    np.testing.assert_allclose(y, y_ref, **y_tol)
    np.testing.assert_allclose(dx, dx_ref, **dx_tol)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = torch.log_softmax(xt, dim=1)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), **y_tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **dx_tol)


@pytest.mark.parametrize("row, dtype", [([1e7, 1e7], np.float32), ([-1e30] * 3, np.float32),
                                        ([1e17, 1e17], np.float64), ([-1e300] * 3, np.float64)])
def test_equal_large_entries_give_minus_log_C(row, dtype):
    x = np.array([row], dtype)
    y = log_softmax_forward(x)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(y, np.full_like(x, -np.log(len(row))), rtol=4 * eps)
    dx = log_softmax_backward(np.ones_like(x), y)           # sum_j dy_j softmax_j = 1: dx = 0
    np.testing.assert_allclose(dx, 0, atol=4 * eps)


EPS32 = float(np.finfo(np.float32).eps)
C_LONG = 1 << 20                    # classes: a float32 running sum over them drifts visibly


def test_long_float32_rows_are_summed_in_float64():
    """Both passes sum each row in float64 (the module docstring): over 2^20 classes a float32
    running sum was off by ~5e-3 in y (~50 000 eps) and ~5 in dx."""
    rng = np.random.default_rng(0)
    x = (0.01 * rng.standard_normal((2, C_LONG))).astype(np.float32)     # near-equal entries
    y_ref, _ = numpy_reference(x, x)
    assert np.abs(log_softmax_forward(x) - y_ref).max() <= 16 * EPS32 * np.abs(y_ref).max()
    x[:, 0] += 30                                                         # one dominant class
    dy = (1 + 0.01 * rng.standard_normal((2, C_LONG))).astype(np.float32)
    y = log_softmax_forward(x)
    want = dy - np.exp(y.astype(np.float64)) * dy.astype(np.float64).sum(1, keepdims=True)
    assert np.abs(log_softmax_backward(dy, y) - want).max() <= 4 * EPS32 * np.abs(dy).sum(1).max()


def test_gradient_by_central_differences():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    dx = log_softmax_backward(dy, log_softmax_forward(x))
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + 1e-6
        up = (log_softmax_forward(x) * dy).sum()
        x[i] = old - 1e-6
        down = (log_softmax_forward(x) * dy).sum()
        x[i] = old
        num[i] = (up - down) / 2e-6
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("call, error, name", [
    (lambda: log_softmax_forward(np.ones(3)), ValueError, "x"),
    (lambda: log_softmax_forward(np.ones((2, 0))), ValueError, "x"),
    (lambda: log_softmax_forward(np.ones((2, 3), np.int64)), TypeError, "x"),
    (lambda: log_softmax_backward(np.ones((2, 4)), np.zeros((2, 3))), ValueError, "dy"),
    (lambda: log_softmax_backward(np.ones((2, 3)), np.zeros(3)), ValueError, "y"),
    # not a log-softmax output: exp(y) past float32's range once came out as garbage (1.0, not
    # -2.7e43, at y = 100); now refused
    (lambda: log_softmax_backward(np.ones((1, 2)), np.array([[100.0, 0.0]], np.float32)),
     ValueError, "y"),
    (lambda: log_softmax_backward(np.ones((1, 2)), np.array([[-1.0, 1e-30]])), ValueError, "y"),
])
def test_bad_arguments_name_themselves(call, error, name):
    with pytest.raises(error, match=rf"^{name}\b"):        # the message starts with the name
        call()
