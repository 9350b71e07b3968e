"""kernels.linear: y = x W^T + b and its gradients, against plain NumPy and central differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.linear import linear_backward, linear_forward


@given(N=st.integers(1, 6), I=st.integers(1, 6), O=st.integers(1, 6), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]))
@settings(max_examples=25)
def test_matches_numpy(N, I, O, seed, dtype):
    rng = np.random.default_rng(seed)
    x, W, b, dy = (rng.standard_normal(s).astype(dtype) for s in [(N, I), (O, I), (O,), (N, O)])
    y = linear_forward(x, W, b)
    assert y.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, x @ W.T + b, **tol)
    dx, dW, db = linear_backward(dy, x, W)
    np.testing.assert_allclose(dx, dy @ W, **tol)
    np.testing.assert_allclose(dW, dy.T @ x, **tol)
    np.testing.assert_allclose(db, dy.sum(axis=0), **tol)


def test_gradients_by_central_differences():
    rng = np.random.default_rng(0)
    x, W, b, dy = (rng.standard_normal(s) for s in [(3, 4), (2, 4), (2,), (3, 2)])
    dx, dW, db = linear_backward(dy, x, W)
    eps = 1e-6
    for arr, grad in [(x, dx), (W, dW), (b, db)]:
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            up = (linear_forward(x, W, b) * dy).sum()
            arr[i] = old - eps
            down = (linear_forward(x, W, b) * dy).sum()
            arr[i] = old
            num[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-7, atol=1e-9)


def test_refuses_misshapen_arguments():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"^W\b"):
        linear_forward(x, np.zeros((4, 5)), np.zeros(4))
    with pytest.raises(ValueError, match=r"^b\b"):
        linear_forward(x, np.zeros((4, 3)), np.zeros(5))
    with pytest.raises(ValueError, match=r"^x\b"):
        linear_forward(np.zeros(3), np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"^dy\b"):
        linear_backward(np.zeros((2, 5)), x, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^W\b"):
        linear_backward(np.zeros((2, 3)), x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"^x\b"):
        linear_backward(np.zeros((2, 3)), np.zeros(3), np.zeros((3, 3)))
    with pytest.raises(TypeError, match=r"^x\b"):
        linear_forward(np.zeros((2, 3), np.int64), np.zeros((4, 3)), np.zeros(4))


@pytest.mark.parametrize("x_shape, W_shape, name", [
    ((3, 0), (2, 0), "x"),          # I = 0: y would be the bias alone
    ((0, 3), (2, 3), "x"),          # N = 0
    ((3, 3), (0, 3), "W"),          # O = 0
])
def test_refuses_empty_dimensions(x_shape, W_shape, name):
    x, W, b = np.ones(x_shape), np.ones(W_shape), np.ones(W_shape[0])
    with pytest.raises(ValueError, match=f"^{name}: .*>= 1"):
        linear_forward(x, W, b)
    with pytest.raises(ValueError, match=f"^{name}: .*>= 1"):
        linear_backward(np.ones((x_shape[0], W_shape[0])), x, W)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_matches_torch(dtype, tol):
    """Forward and backward against torch.nn.functional.linear and its autograd."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, W, b = (rng.standard_normal(s).astype(dtype) for s in ((7, 5), (4, 5), (4,)))
    dy = rng.standard_normal((7, 4)).astype(dtype)
    xt, Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, W, b))
    yt = torch.nn.functional.linear(xt, Wt, bt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(linear_forward(x, W, b), yt.detach().numpy(), rtol=tol, atol=tol)
    for got, want in zip(linear_backward(dy, x, W), (xt.grad, Wt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=tol, atol=tol)
