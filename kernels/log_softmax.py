"""Log-softmax over the last axis and its gradient, for the `LogSoftMax` layer.

    x: (N, C)   y: (N, C)   one row per example (any leading axes flattened into N)

    y[n, j]  = x[n, j] - m_n - log(sum_k exp(x[n, k] - m_n)),   m_n = max_k x[n, k]   (1)
    dx[n, j] = dy[n, j] - exp(y[n, j]) * sum_k dy[n, k]                                (2)

(1) subtracts the row's max first, so every exponent is <= 0 and nothing overflows; (2) is the
chain rule through (1): dy_i/dx_j = [i == j] - softmax_j, and softmax = exp(y). The order of
(1) matters too: ``(x - m) - log s`` (s the sum), never ``x - (m + log s)``. log s lies in
[0, log C], so next to a large |m| it is rounded away in ``m + log s`` (in float32, 1e7 + log 2
rounds to 1e7 + 1, and a row [1e7, 1e7] came out [-1, -1] instead of -log 2); ``x - m`` is
exact near the max. (The cores allow only ``fastmath={"contract"}``, multiply-adds fused into
one instruction, as the recurrent cores do: that never regroups terms, which fuller
``fastmath`` would.)

Why compiled: at the shapes of a small training step (a few rows of 3 classes) NumPy's reductions
with ``axis``/``keepdims`` cost more than the arithmetic, several microseconds each, and a step
made five of them. One loop per row does it all. The exponentials come from
``_common.exp_expm1`` (arguments <= 0, as here), which vectorizes; the row sums run in float64.
"""

import numpy as np
from numba import njit

from . import _ahead
from ._common import as_float_array, exp_expm1

__all__ = ["log_softmax_forward", "log_softmax_backward", "log_softmax_forward_unchecked",
           "log_softmax_backward_unchecked"]


@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _forward_core(x, y):
    N, C = x.shape
    for n in range(N):
        m = x[n, 0]
        for j in range(1, C):
            m = max(m, x[n, j])
        for j in range(C):                               # exp(x - m), kept in y for the sum
            e, _ = exp_expm1(x[n, j] - m)
            y[n, j] = e
        s = 0.0
        for j in range(C):
            s += y[n, j]
        log_s = x.dtype.type(np.log(s))                  # log(sum exp(x - m)), in [0, log C]
        for j in range(C):
            y[n, j] = (x[n, j] - m) - log_s              # (1), in this order (module notes)


@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _backward_core(dy, y, dx):
    """(2) into dx; returns the count of y > 0 (not a log-softmax output: the wrapper refuses
    it, as exp_expm1 takes arguments <= 0 only)."""
    N, C = y.shape
    above = 0
    for n in range(N):
        s = 0.0
        for j in range(C):
            s += dy[n, j]
        total = y.dtype.type(s)                          # sum_k dy[n, k]
        for j in range(C):
            above += y[n, j] > 0
            p, _ = exp_expm1(y[n, j])                    # softmax, y <= 0
            dx[n, j] = dy[n, j] - p * total              # (2)
    return above


def log_softmax_forward(x):
    """x: (N, C) float32 or float64 -> y: (N, C), a fresh array of x's dtype."""
    x = as_float_array(x, "x")
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"x: expected a (N, C) array with N, C >= 1, got shape {x.shape}")
    return log_softmax_forward_unchecked(x)


def log_softmax_forward_unchecked(x):
    """``log_softmax_forward`` on a C-contiguous float array of its shape (unchecked: what
    rnncore's `LogSoftMax` calls, which checks its input)."""
    y = np.empty_like(x)
    _ahead.follow("log_softmax_forward")                  # (empty cache: see _ahead)
    _forward_core(x, y)
    return y


def log_softmax_backward(dy, y):
    """Gradient of ``log_softmax_forward`` from its output ``y`` (values <= 0; a positive one
    is a ValueError): returns dx (N, C), fresh."""
    y = as_float_array(y, "y")
    if y.ndim != 2 or 0 in y.shape:
        raise ValueError(f"y: expected a (N, C) array with N, C >= 1, got shape {y.shape}")
    dx, above = _dx_and_above(as_float_array(dy, "dy", y.dtype, y.shape), y)
    if above:
        raise ValueError(f"y: expected the output of log_softmax_forward (values <= 0), got "
                         f"{above} positive values (largest {y.max():.4g})")
    return dx


def log_softmax_backward_unchecked(dy, y):
    """``log_softmax_backward`` on C-contiguous arrays of one float dtype and shape, ``y`` the
    forward's own output (unchecked: what `LogSoftMax` calls with the output it kept)."""
    return _dx_and_above(dy, y)[0]


def _dx_and_above(dy, y):
    """dx, and the number of positive values of y (0 for an output of the forward)."""
    dx = np.empty_like(y)
    _ahead.follow("log_softmax_backward")                 # (empty cache: see _ahead)
    return dx, _backward_core(dy, y, dx)
