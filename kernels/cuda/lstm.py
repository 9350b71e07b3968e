"""LSTM forward and backward on the GPU: same arguments (plus ``path=``) and semantics as
``kernels.reference``.

    z_t = W_ih x_t + W_hh h_{t-1} + b                 (1)   (4H), split into z_i z_f z_g z_o
    i = sig(z_i)   f = sig(z_f)   g = tanh(z_g)   o = sig(z_o)   (2)
    c_t = f * c_{t-1} + i * g                         (3)
    h_t = o * tanh(c_t)                               (4)

Forward, one layer and direction:
  1. one GEMM for every step's input projection  ``xW = reshaped(x, T*B, I) @ W_ih.T``  (T*B, 4H);
  2. the recurrence, by one of two paths (``path=``):
     * ``"steps"``: per step, the GEMM ``R = h @ W_hh.T`` (B, 4H) then one fused pointwise
       kernel (bias, activations, cell and hidden update, masking, saving the gates);
     * ``"persistent"``: one launch for all steps; each block keeps its slice of ``W_hh`` in shared
       memory and the grid meets at a barrier after every step (``persistent.py``);
     * ``"auto"`` (default): persistent when ``W_hh`` fits on chip (``persistent.plan``), else steps.
Backward, in reverse step order: per step one pointwise kernel (gate grads ``dz``) and one GEMM
``dh += dz @ W_hh`` (or the persistent kernel), then three big GEMMs and a column sum:
``dx = dG @ W_ih``, ``dW_ih = dG.T @ x``, ``dW_hh = dG.T @ hprev``, ``db = dG.sum(0)``.

Where results live: NumPy ``x`` gives NumPy results; a device ``x`` gives numba device arrays
(``y``, ``h_n``, ``c_n``; and every gradient of the paired backward). The cache holds device
arrays either way.
"""
from functools import lru_cache

import numpy as np
from numba import cuda

from .._common import as_flag
from . import persistent
from ._common import (check_cache, column_sum, device_input, empty, enter, launch_1d,
                      prepare_forward, reshaped, result)
from .cells import lstm_point_functions
from .gemm import gemm_device

__all__ = ["lstm_forward", "lstm_backward"]


@lru_cache(maxsize=None)
def _step_kernels(dtype):
    """Per-step pointwise kernels (one thread per (b, j)) for ``dtype``."""
    forward_point, backward_point = lstm_point_functions(dtype)

    @cuda.jit
    def step_forward(s, R, xW, bias, lengths, reverse, h, c, hprev, cprev, gates, y):
        """R: (B, 4H) = h_{t-1} @ W_hh.T; h, c: (B, H) updated in place."""
        B, H = h.shape
        idx = cuda.grid(1)
        if idx < B * H:
            b = idx // H
            j = idx % H
            forward_point(s, b, j, R[b, j], R[b, H + j], R[b, 2 * H + j], R[b, 3 * H + j],
                          xW, bias, lengths, reverse, h, h, c, hprev, cprev, gates, y)

    @cuda.jit
    def step_backward(s, dy, lengths, reverse, gates, cprev, dh, dc, dG, dz_step):
        """Gate grads of step s into dG[p] (T, B, 4H) and dz_step (B, 4H); dh, dc in place."""
        B, H = dh.shape
        idx = cuda.grid(1)
        if idx < B * H:
            b = idx // H
            j = idx % H
            p, dzi, dzf, dzg, dzo = backward_point(s, b, j, dy, lengths, reverse, gates, cprev, dh, dc)
            dG[p, b, j] = dzi
            dG[p, b, H + j] = dzf
            dG[p, b, 2 * H + j] = dzg
            dG[p, b, 3 * H + j] = dzo
            dz_step[b, j] = dzi
            dz_step[b, H + j] = dzf
            dz_step[b, 2 * H + j] = dzg
            dz_step[b, 3 * H + j] = dzo

    return step_forward, step_backward


def lstm_forward(x, W_ih, W_hh, b, h0=None, c0=None, lengths=None, reverse=False, *, path="auto"):
    """LSTM over a whole sequence on the GPU.

    x: (T, B, I)   W_ih: (4H, I)   W_hh: (4H, H)   b: (4H,)   h0, c0: (B, H) or None
    lengths: (B,) ints or None   reverse: run each sequence from its last valid step back to 0
    path: "auto", "steps", "persistent", or a ``persistent.PersistentPlan``
    returns y: (T, B, H), h_n: (B, H), c_n: (B, H), cache   (NumPy, or device arrays if x is one)
    """
    dtype, on_device, x, W_ih, W_hh, lengths, (T, B, I, H) = prepare_forward(x, W_ih, W_hh, 4, lengths)
    plan = persistent.plan_for("lstm", "forward", path, dtype, B, H)    # None: per-step path
    bias = device_input(b, (4 * H,), dtype, "b", required=True)
    h = device_input(h0, (B, H), dtype, "h0", writable=True)                # (B, H) running state
    c = device_input(c0, (B, H), dtype, "c0", writable=True)
    reverse = as_flag(reverse, "reverse")
    xW = empty((T, B, 4 * H), dtype)
    # (1), x part
    gemm_device(reshaped(x, (T * B, I)), W_ih, reshaped(xW, (T * B, 4 * H)), trans_b=True)
    hprev = empty((T, B, H), dtype)          # state before the step run at each t
    cprev = empty((T, B, H), dtype)
    gates = empty((T, B, 4 * H), dtype)      # activated i, f, g, o
    y = empty((T, B, H), dtype)

    if plan is not None:
        h = persistent.lstm_forward(plan, xW, W_hh, bias, lengths, reverse, h, c, hprev, cprev, gates, y)
    else:
        step_forward, _ = _step_kernels(dtype)
        R = empty((B, 4 * H), dtype)
        for s in range(T):
            gemm_device(h, W_hh, R, trans_b=True)                                   # (1), h part
            launch_1d(step_forward, B * H, s, R, xW, bias, lengths, reverse,
                      h, c, hprev, cprev, gates, y)                                  # (1)-(4)

    cache = (on_device, x, W_ih, W_hh, lengths, reverse, hprev, cprev, gates)
    return result(y, on_device), result(h, on_device), result(c, on_device), cache


def lstm_backward(dy, dh_n, dc_n, cache, *, path="auto"):
    """Gradients of an LSTM on the GPU. dy: (T, B, H) or None; dh_n, dc_n: (B, H) or None.

    returns dx: (T, B, I), dW_ih: (4H, I), dW_hh: (4H, H), db: (4H,), dh0: (B, H), dc0: (B, H)
    (fresh arrays; NumPy, or device arrays when the forward's x was one)
    """
    check_cache(cache, "lstm_forward", gates=4, size=9)
    on_device, x, W_ih, W_hh, lengths, reverse, hprev, cprev, gates = cache
    enter()
    T, B, I = x.shape
    H = W_hh.shape[1]
    dtype = np.dtype(x.dtype)
    plan = persistent.plan_for("lstm", "backward", path, dtype, B, H)   # None: per-step path
    dy = device_input(dy, (T, B, H), dtype, "dy")
    dh = device_input(dh_n, (B, H), dtype, "dh_n", writable=True)     # dL/dh_t, updated per step
    dc = device_input(dc_n, (B, H), dtype, "dc_n", writable=True)
    dG = empty((T, B, 4 * H), dtype)                       # dL/dz at every position

    if plan is not None:
        persistent.lstm_backward(plan, W_hh, dy, lengths, reverse,
                                                        gates, cprev, dh, dc, dG)
    else:
        _, step_backward = _step_kernels(dtype)
        dz_step = empty((B, 4 * H), dtype)
        for s in range(T - 1, -1, -1):
            launch_1d(step_backward, B * H, s, dy, lengths, reverse, gates, cprev, dh, dc, dG, dz_step)
            gemm_device(dz_step, W_hh, dh, beta=1.0)                       # (1): dh_{t-1} += dz W_hh

    dG2 = reshaped(dG, (T * B, 4 * H))
    dx = empty((T, B, I), dtype)
    gemm_device(dG2, W_ih, reshaped(dx, (T * B, I)))                                  # (1)
    dW_ih = gemm_device(dG2, reshaped(x, (T * B, I)), empty((4 * H, I), dtype), trans_a=True)
    dW_hh = gemm_device(dG2, reshaped(hprev, (T * B, H)), empty((4 * H, H), dtype), trans_a=True)
    db = column_sum(dG2, dtype)                                                    # (1)
    return tuple(result(a, on_device) for a in (dx, dW_ih, dW_hh, db, dh, dc))
