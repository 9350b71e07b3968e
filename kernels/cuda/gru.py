"""GRU forward and backward on the GPU: same arguments (plus ``path=``) and semantics as
``kernels.reference``.

    r = sig(W_ir x + b_ir + W_hr h + b_hr)            (1)
    z = sig(W_iz x + b_iz + W_hz h + b_hz)            (2)
    q = W_hn h + b_hn                                 (3)   the recurrent part of the n gate
    n = tanh(W_in x + b_in + r * q)                   (4)
    h_t = (1 - z) * n + z * h_{t-1}                   (5)

The reset_after form keeps one recurrent GEMM per step, ``R = h @ W_hh.T`` (B, 3H), exactly as
for the LSTM (see ``lstm.py`` for the structure, the ``path=`` choice and where results live).
Backward keeps two gradient buffers: ``dGi`` (input pre-activations: ``da_r, da_z, da_n``) for
``dx``, ``dW_ih``, ``db_ih``; and ``dGh`` (hidden pre-activations: ``da_r, da_z, dq``) for the
recurrence ``dh += dGh[t] @ W_hh``, ``dW_hh`` and ``db_hh``.
"""
from functools import lru_cache

import numpy as np
from numba import cuda

from .._common import as_flag
from . import persistent
from ._common import (check_cache, column_sum, device_input, empty, enter, launch_1d,
                      prepare_forward, reshaped, result)
from .cells import gru_point_functions
from .gemm import gemm_device

__all__ = ["gru_forward", "gru_backward"]


@lru_cache(maxsize=None)
def _step_kernels(dtype):
    """Per-step pointwise kernels (one thread per (b, j)) for ``dtype``."""
    forward_point, backward_point = gru_point_functions(dtype)

    @cuda.jit
    def step_forward(s, R, xW, b_ih, b_hh, lengths, reverse, h, hprev, gates, y):
        """R: (B, 3H) = h_{t-1} @ W_hh.T; h: (B, H) updated in place."""
        B, H = h.shape
        idx = cuda.grid(1)
        if idx < B * H:
            b = idx // H
            j = idx % H
            forward_point(s, b, j, R[b, j], R[b, H + j], R[b, 2 * H + j],
                          xW, b_ih, b_hh, lengths, reverse, h, h, hprev, gates, y)

    @cuda.jit
    def step_backward(s, dy, lengths, reverse, gates, hprev, dh, dGi, dGh, dgh_step):
        """Grads of step s into dGi[p], dGh[p] (T, B, 3H) and dgh_step (B, 3H); dh in place."""
        B, H = dh.shape
        idx = cuda.grid(1)
        if idx < B * H:
            b = idx // H
            j = idx % H
            p, dar, daz, dan, dq = backward_point(s, b, j, dy, lengths, reverse, gates, hprev, dh)
            dGi[p, b, j] = dar
            dGi[p, b, H + j] = daz
            dGi[p, b, 2 * H + j] = dan
            dGh[p, b, j] = dar
            dGh[p, b, H + j] = daz
            dGh[p, b, 2 * H + j] = dq
            dgh_step[b, j] = dar
            dgh_step[b, H + j] = daz
            dgh_step[b, 2 * H + j] = dq

    return step_forward, step_backward


def gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False, *, path="auto"):
    """GRU over a whole sequence on the GPU.

    x: (T, B, I)   W_ih: (3H, I)   W_hh: (3H, H)   b_ih, b_hh: (3H,)   h0: (B, H) or None
    lengths: (B,) ints or None   reverse: run each sequence from its last valid step back to 0
    path: "auto", "steps", "persistent", or a ``persistent.PersistentPlan``
    returns y: (T, B, H), h_n: (B, H), cache   (NumPy, or device arrays if x is one)
    """
    dtype, on_device, x, W_ih, W_hh, lengths, (T, B, I, H) = prepare_forward(x, W_ih, W_hh, 3, lengths)
    plan = persistent.plan_for("gru", "forward", path, dtype, B, H)    # None: per-step path
    b_ih = device_input(b_ih, (3 * H,), dtype, "b_ih", required=True)
    b_hh = device_input(b_hh, (3 * H,), dtype, "b_hh", required=True)
    h = device_input(h0, (B, H), dtype, "h0", writable=True)               # (B, H) running state
    reverse = as_flag(reverse, "reverse")
    xW = empty((T, B, 3 * H), dtype)
    # x parts of (1), (2), (4)
    gemm_device(reshaped(x, (T * B, I)), W_ih, reshaped(xW, (T * B, 3 * H)), trans_b=True)
    hprev = empty((T, B, H), dtype)
    gates = empty((T, B, 4 * H), dtype)       # r, z, n, q
    y = empty((T, B, H), dtype)

    if plan is not None:
        h = persistent.gru_forward(plan, xW, W_hh, b_ih, b_hh, lengths, reverse, h, hprev, gates, y)
    else:
        step_forward, _ = _step_kernels(dtype)
        R = empty((B, 3 * H), dtype)
        for s in range(T):
            gemm_device(h, W_hh, R, trans_b=True)                       # h parts of (1), (2), (3)
            launch_1d(step_forward, B * H, s, R, xW, b_ih, b_hh, lengths, reverse, h, hprev, gates, y)

    cache = (on_device, x, W_ih, W_hh, lengths, reverse, hprev, gates)
    return result(y, on_device), result(h, on_device), cache


def gru_backward(dy, dh_n, cache, *, path="auto"):
    """Gradients of a GRU on the GPU. dy: (T, B, H) or None; dh_n: (B, H) or None.

    returns dx: (T, B, I), dW_ih: (3H, I), dW_hh: (3H, H), db_ih: (3H,), db_hh: (3H,), dh0: (B, H)
    (fresh arrays; NumPy, or device arrays when the forward's x was one)
    """
    check_cache(cache, "gru_forward", gates=3, size=8)
    on_device, x, W_ih, W_hh, lengths, reverse, hprev, gates = cache
    enter()
    T, B, I = x.shape
    H = W_hh.shape[1]
    dtype = np.dtype(x.dtype)
    plan = persistent.plan_for("gru", "backward", path, dtype, B, H)   # None: per-step path
    dy = device_input(dy, (T, B, H), dtype, "dy")
    dh = device_input(dh_n, (B, H), dtype, "dh_n", writable=True)
    dGi = empty((T, B, 3 * H), dtype)        # dL/d(input pre-activations)
    dGh = empty((T, B, 3 * H), dtype)        # dL/d(hidden pre-activations)

    if plan is not None:
        persistent.gru_backward(plan, W_hh, dy, lengths, reverse,
                                                       gates, hprev, dh, dGi, dGh)
    else:
        _, step_backward = _step_kernels(dtype)
        dgh_step = empty((B, 3 * H), dtype)
        for s in range(T - 1, -1, -1):
            launch_1d(step_backward, B * H, s, dy, lengths, reverse, gates, hprev, dh, dGi, dGh, dgh_step)
            gemm_device(dgh_step, W_hh, dh, beta=1.0)                   # (1)-(3): dh_{t-1} += dgh W_hh

    dGi2 = reshaped(dGi, (T * B, 3 * H))
    dGh2 = reshaped(dGh, (T * B, 3 * H))
    dx = empty((T, B, I), dtype)
    gemm_device(dGi2, W_ih, reshaped(dx, (T * B, I)))                                        # (1), (2), (4)
    dW_ih = gemm_device(dGi2, reshaped(x, (T * B, I)), empty((3 * H, I), dtype), trans_a=True)
    dW_hh = gemm_device(dGh2, reshaped(hprev, (T * B, H)), empty((3 * H, H), dtype), trans_a=True)
    db_ih = column_sum(dGi2, dtype)
    db_hh = column_sum(dGh2, dtype)
    return tuple(result(a, on_device) for a in (dx, dW_ih, dW_hh, db_ih, db_hh, dh))
