"""Affine map ``y = x W^T + b`` and its gradients, for the `Linear` layer.

    x: (N, I)   W: (O, I)   b: (O,)   y: (N, O)
    dx = dy W          (N, O) @ (O, I)
    dW = dy^T x        (O, N) @ (N, I)
    db = sum_n dy_n    (summed in float64, as the recurrent kernels sum their biases)

Three GEMMs and a column sum; compiled so that they run on the same BLAS as the recurrent
kernels (SciPy's OpenBLAS, which Numba's ``np.dot`` calls; here through ``_common.dot_into``).
Calling NumPy's ``@`` instead uses NumPy's own OpenBLAS: two BLAS libraries, each with a thread
pool that keeps spinning for a while after its last call, then take turns on the same cores, and
a small training step on two cores ran several times slower for it.
"""

from numba import njit

from . import _ahead
from ._common import as_float_array, column_sums, dot_into
from ._workspace import empty

__all__ = ["linear_forward", "linear_backward", "linear_forward_unchecked",
           "linear_backward_unchecked"]


@njit(cache=True)
def _forward_core(x, W, b, y):
    dot_into(x, W.T, y)                                  # (N, I) @ (I, O)
    for n in range(y.shape[0]):
        for o in range(y.shape[1]):
            y[n, o] += b[o]


@njit(cache=True)
def _backward_core(dy, x, W, dx, dW, db):
    dot_into(dy, W, dx)                                  # (N, O) @ (O, I)
    dot_into(dy.T, x, dW)                                # (O, N) @ (N, I)
    column_sums(dy, db)                                  # (N, O) -> (O,), summed in float64


def _x_and_W(x, W):
    """x (N, I) and W (O, I) as C-contiguous arrays of x's float dtype, or a ValueError/TypeError
    naming the argument."""
    x = as_float_array(x, "x")
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"x: expected a (N, I) array with N, I >= 1, got shape {x.shape}")
    W = as_float_array(W, "W", x.dtype)
    if W.ndim != 2 or W.shape[1] != x.shape[1] or W.shape[0] == 0:
        raise ValueError(f"W: expected shape (O, {x.shape[1]}) with O >= 1, got {W.shape}")
    return x, W


def linear_forward(x, W, b):
    """x: (N, I), W: (O, I), b: (O,) -> y: (N, O), all in x's dtype (float32 or float64);
    N, I, O >= 1."""
    x, W = _x_and_W(x, W)
    return linear_forward_unchecked(x, W, as_float_array(b, "b", x.dtype, (W.shape[0],)))


def linear_forward_unchecked(x, W, b):
    """``linear_forward`` on C-contiguous arrays of one float dtype in its shapes (unchecked:
    what rnncore's `Linear` calls, which checks its input and holds its weights)."""
    y = empty((x.shape[0], W.shape[0]), x.dtype)
    _ahead.follow("linear_forward")                       # (empty cache: see _ahead)
    _forward_core(x, W, b, y)
    return y


def linear_backward(dy, x, W):
    """Gradients of ``linear_forward``: returns dx (N, I), dW (O, I), db (O,), fresh arrays."""
    x, W = _x_and_W(x, W)
    return linear_backward_unchecked(as_float_array(dy, "dy", x.dtype, (x.shape[0], W.shape[0])),
                                     x, W)


def linear_backward_unchecked(dy, x, W):
    """``linear_backward`` on C-contiguous arrays of one float dtype in its shapes (unchecked,
    as ``linear_forward_unchecked``)."""
    dx = empty(x.shape, x.dtype)
    dW = empty(W.shape, W.dtype)
    db = empty(W.shape[0], x.dtype)
    _ahead.follow("linear_backward")                      # (empty cache: see _ahead)
    _backward_core(dy, x, W, dx, dW, db)
    return dx, dW, db
