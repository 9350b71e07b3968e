"""Tanh RNN forward and backward on the GPU: same arguments (plus ``path=``) and semantics as
``kernels.reference``.

    a_t = W_ih x_t + W_hh h_{t-1} + b           (1)
    h_t = tanh(a_t)                             (2)

Same structure as ``lstm.py`` (one input GEMM; per step one recurrent GEMM and one pointwise
kernel, or the persistent kernel; backward: per step pointwise + ``dh += da @ W_hh``, then the
big GEMMs), with one gate.
"""
from functools import lru_cache

import numpy as np
from numba import cuda

from .._common import as_flag
from . import persistent
from ._common import (check_cache, column_sum, device_input, empty, enter, launch_1d,
                      prepare_forward, reshaped, result)
from .cells import rnn_point_functions
from .gemm import gemm_device

__all__ = ["rnn_forward", "rnn_backward"]


@lru_cache(maxsize=None)
def _step_kernels(dtype):
    """Per-step pointwise kernels (one thread per (b, j)) for ``dtype``."""
    forward_point, backward_point = rnn_point_functions(dtype)

    @cuda.jit
    def step_forward(s, R, xW, bias, lengths, reverse, h, hprev, act, y):
        """R: (B, H) = h_{t-1} @ W_hh.T; h: (B, H) updated in place."""
        B, H = h.shape
        idx = cuda.grid(1)
        if idx < B * H:
            b = idx // H
            j = idx % H
            forward_point(s, b, j, R[b, j], xW, bias, lengths, reverse, h, h, hprev, act, y)

    @cuda.jit
    def step_backward(s, dy, lengths, reverse, act, dh, dG, da_step):
        """Grads of step s into dG[p] (T, B, H) and da_step (B, H); dh in place."""
        B, H = dh.shape
        idx = cuda.grid(1)
        if idx < B * H:
            b = idx // H
            j = idx % H
            p, da = backward_point(s, b, j, dy, lengths, reverse, act, dh)
            dG[p, b, j] = da
            da_step[b, j] = da

    return step_forward, step_backward


def rnn_forward(x, W_ih, W_hh, b, h0=None, lengths=None, reverse=False, *, path="auto"):
    """Tanh RNN over a whole sequence on the GPU.

    x: (T, B, I)   W_ih: (H, I)   W_hh: (H, H)   b: (H,)   h0: (B, H) or None
    lengths: (B,) ints or None   reverse: run each sequence from its last valid step back to 0
    path: "auto", "steps", "persistent", or a ``persistent.PersistentPlan``
    returns y: (T, B, H), h_n: (B, H), cache   (NumPy, or device arrays if x is one)
    """
    dtype, on_device, x, W_ih, W_hh, lengths, (T, B, I, H) = prepare_forward(x, W_ih, W_hh, 1, lengths)
    plan = persistent.plan_for("rnn", "forward", path, dtype, B, H)    # None: per-step path
    bias = device_input(b, (H,), dtype, "b", required=True)
    h = device_input(h0, (B, H), dtype, "h0", writable=True)
    reverse = as_flag(reverse, "reverse")
    xW = empty((T, B, H), dtype)
    # (1), x part
    gemm_device(reshaped(x, (T * B, I)), W_ih, reshaped(xW, (T * B, H)), trans_b=True)
    hprev = empty((T, B, H), dtype)
    act = empty((T, B, H), dtype)            # tanh(a_t), 0 at padding
    y = empty((T, B, H), dtype)

    if plan is not None:
        h = persistent.rnn_forward(plan, xW, W_hh, bias, lengths, reverse, h, hprev, act, y)
    else:
        step_forward, _ = _step_kernels(dtype)
        R = empty((B, H), dtype)
        for s in range(T):
            gemm_device(h, W_hh, R, trans_b=True)                                    # (1), h part
            launch_1d(step_forward, B * H, s, R, xW, bias, lengths, reverse, h, hprev, act, y)

    cache = (on_device, x, W_ih, W_hh, lengths, reverse, hprev, act)
    return result(y, on_device), result(h, on_device), cache


def rnn_backward(dy, dh_n, cache, *, path="auto"):
    """Gradients of a tanh RNN on the GPU. dy: (T, B, H) or None; dh_n: (B, H) or None.

    returns dx: (T, B, I), dW_ih: (H, I), dW_hh: (H, H), db: (H,), dh0: (B, H)
    (fresh arrays; NumPy, or device arrays when the forward's x was one)
    """
    check_cache(cache, "rnn_forward", gates=1, size=8)
    on_device, x, W_ih, W_hh, lengths, reverse, hprev, act = cache
    enter()
    T, B, I = x.shape
    H = W_hh.shape[1]
    dtype = np.dtype(x.dtype)
    plan = persistent.plan_for("rnn", "backward", path, dtype, B, H)   # None: per-step path
    dy = device_input(dy, (T, B, H), dtype, "dy")
    dh = device_input(dh_n, (B, H), dtype, "dh_n", writable=True)
    dG = empty((T, B, H), dtype)             # dL/da at every position

    if plan is not None:
        persistent.rnn_backward(plan, W_hh, dy, lengths, reverse, act, dh, dG)
    else:
        _, step_backward = _step_kernels(dtype)
        da_step = empty((B, H), dtype)
        for s in range(T - 1, -1, -1):
            launch_1d(step_backward, B * H, s, dy, lengths, reverse, act, dh, dG, da_step)
            gemm_device(da_step, W_hh, dh, beta=1.0)                    # (1): dh_{t-1} += da W_hh

    dG2 = reshaped(dG, (T * B, H))
    dx = empty((T, B, I), dtype)
    gemm_device(dG2, W_ih, reshaped(dx, (T * B, I)))                                     # (1)
    dW_ih = gemm_device(dG2, reshaped(x, (T * B, I)), empty((H, I), dtype), trans_a=True)
    dW_hh = gemm_device(dG2, reshaped(hprev, (T * B, H)), empty((H, H), dtype), trans_a=True)
    db = column_sum(dG2, dtype)
    return tuple(result(a, on_device) for a in (dx, dW_ih, dW_hh, db, dh))
