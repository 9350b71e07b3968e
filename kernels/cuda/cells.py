"""The cell equations, once: device functions for one (sequence ``b``, hidden unit ``j``) of one step.

Both GPU paths call these same functions, so the math exists in one place:

* the per-step path (``lstm.py``, ``gru.py``, ``rnn.py``) launches, per step, one GEMM for the
  recurrent product ``R = h_{t-1} @ W_hh.T`` and one pointwise kernel whose thread ``(b, j)``
  calls ``*_forward_point`` with ``R[b, gate*H + j]``;
* the persistent kernel (``persistent.py``) computes those recurrent sums itself from the weights
  it keeps in shared memory and hands them to the same function.

Equation numbers are the reference's (``kernels/reference.py``). Conventions:

* ``s`` is the step (processing order), ``p = position(s, L, reverse)`` the time position it reads
  and writes. Every per-time array is in time order: ``xW``, ``y``, ``gates``, ``hprev``, ``dy``,
  ``dG``. ``hprev[p]`` / ``cprev[p]`` hold the state *before* the step that ran at ``p``.
* Padding steps (``s >= lengths[b]``): output 0, the state is passed through unchanged, saved
  gates are 0 and ``hprev`` / ``cprev`` get the (finite) frozen state, so that the big gradient
  GEMMs over all ``T*B`` rows see exact zeros there (uninitialised memory could hold NaN).
* Forward functions read ``h_in[b, j]`` and write ``h_out[b, j]``: the per-step path passes the
  same buffer twice (in-place update), the persistent kernel two halves of a double buffer
  (other blocks may still be reading ``h_in``).
* Backward functions return the pre-activation gradients for the caller to store (the per-step
  path stores them twice: in ``dG`` at ``p`` for the weight GEMMs and in a ``(B, G*H)`` step buffer
  for the ``dh += dz @ W_hh`` GEMM) and leave in ``dh[b, j]`` the part of ``dL/dh_{t-1}`` that does
  not go through ``W_hh`` (the caller adds ``dz @ W_hh``).
"""
import math
from functools import lru_cache

import numpy as np
from numba import cuda

from ._common import math_sigmoid_factory, position

__all__ = ["lstm_point_functions", "gru_point_functions", "rnn_point_functions"]


# ---------------------------------------------------------------------------------------------
# LSTM (gate order i, f, g, o; one bias)
#
#   z_t = W_ih x_t + W_hh h_{t-1} + b                 (1)   (4H), split into z_i z_f z_g z_o
#   i = sig(z_i)   f = sig(z_f)   g = tanh(z_g)   o = sig(z_o)   (2)
#   c_t = f * c_{t-1} + i * g                         (3)
#   h_t = o * tanh(c_t)                               (4)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def lstm_point_functions(dtype):
    """``(forward_point, backward_point)`` device functions for ``dtype``."""
    ZERO, ONE = np.dtype(dtype).type(0), np.dtype(dtype).type(1)
    sigmoid = math_sigmoid_factory(dtype)

    @cuda.jit(device=True)
    def forward_point(s, b, j, ri, rf, rg, ro, xW, bias, lengths, reverse,
                      h_in, h_out, c, hprev, cprev, gates, y):
        """Step ``s`` for unit ``j`` of sequence ``b``; ``r*`` = ``(W_hh h_{t-1})[gate*H + j]``.

        xW: (T, B, 4H) = x @ W_ih.T   bias: (4H,)   h_in, h_out, c: (B, H)
        hprev, cprev: (T, B, H)   gates: (T, B, 4H) activated i, f, g, o   y: (T, B, H)
        """
        H = c.shape[1]
        L = lengths[b]
        p = position(s, L, reverse)
        h_old = h_in[b, j]
        c_old = c[b, j]
        hprev[p, b, j] = h_old
        cprev[p, b, j] = c_old
        if s >= L:                                            # padding: frozen state, output 0
            h_out[b, j] = h_old
            y[p, b, j] = ZERO
            for k in range(4):
                gates[p, b, k * H + j] = ZERO
            return
        zi = xW[p, b, j] + bias[j] + ri                       # (1)
        zf = xW[p, b, H + j] + bias[H + j] + rf
        zg = xW[p, b, 2 * H + j] + bias[2 * H + j] + rg
        zo = xW[p, b, 3 * H + j] + bias[3 * H + j] + ro
        i = sigmoid(zi)                                       # (2)
        f = sigmoid(zf)
        g = math.tanh(zg)
        o = sigmoid(zo)
        c_new = f * c_old + i * g                             # (3)
        h_new = o * math.tanh(c_new)                          # (4)
        gates[p, b, j] = i
        gates[p, b, H + j] = f
        gates[p, b, 2 * H + j] = g
        gates[p, b, 3 * H + j] = o
        c[b, j] = c_new
        h_out[b, j] = h_new
        y[p, b, j] = h_new

    @cuda.jit(device=True)
    def backward_point(s, b, j, dy, lengths, reverse, gates, cprev, dh, dc):
        """Gate grads of step ``s`` for unit ``j`` of sequence ``b``: ``(p, dz_i, dz_f, dz_g, dz_o)``.

        On entry ``dh[b, j]``, ``dc[b, j]`` are dL/dh_t, dL/dc_t from later steps; on exit
        ``dc[b, j]`` = dL/dc_{t-1} and ``dh[b, j]`` = the frozen-state part of dL/dh_{t-1}
        (0 at a valid step: the caller adds ``dz @ W_hh``, eq. (1)).
        """
        H = dh.shape[1]
        L = lengths[b]
        p = position(s, L, reverse)
        if s >= L:                          # padding: dh, dc pass through untouched, no gate grad
            return p, ZERO, ZERO, ZERO, ZERO
        i = gates[p, b, j]
        f = gates[p, b, H + j]
        g = gates[p, b, 2 * H + j]
        o = gates[p, b, 3 * H + j]
        c_prev = cprev[p, b, j]
        c_new = f * c_prev + i * g                            # recomputed from saved gates, (3)
        tanh_c = math.tanh(c_new)
        dh_new = dy[p, b, j] + dh[b, j]                       # y_t = h_t = h_new at a valid step
        do = dh_new * tanh_c                                  # (4)
        dc_new = dc[b, j] + dh_new * o * (ONE - tanh_c * tanh_c)   # (4)
        di = dc_new * g                                       # (3)
        dg = dc_new * i
        df = dc_new * c_prev
        dh[b, j] = ZERO                                       # the W_hh part comes next, (1)
        dc[b, j] = dc_new * f                                 # (3)
        return (p,
                di * i * (ONE - i),                           # (2): sig' = s (1 - s)
                df * f * (ONE - f),
                dg * (ONE - g * g),                           # (2): tanh' = 1 - tanh^2
                do * o * (ONE - o))

    return forward_point, backward_point


# ---------------------------------------------------------------------------------------------
# GRU (reset_after form, gate order r, z, n; two biases)
#
#   r = sig(W_ir x + b_ir + W_hr h + b_hr)            (1)
#   z = sig(W_iz x + b_iz + W_hz h + b_hz)            (2)
#   q = W_hn h + b_hn                                 (3)   the recurrent part of the n gate
#   n = tanh(W_in x + b_in + r * q)                   (4)
#   h_t = (1 - z) * n + z * h_{t-1}                   (5)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def gru_point_functions(dtype):
    """``(forward_point, backward_point)`` device functions for ``dtype``."""
    ZERO, ONE = np.dtype(dtype).type(0), np.dtype(dtype).type(1)
    sigmoid = math_sigmoid_factory(dtype)

    @cuda.jit(device=True)
    def forward_point(s, b, j, rr, rz, rn, xW, b_ih, b_hh, lengths, reverse,
                      h_in, h_out, hprev, gates, y):
        """Step ``s`` for unit ``j`` of sequence ``b``; ``r*`` = ``(W_hh h_{t-1})[gate*H + j]``.

        xW: (T, B, 3H) = x @ W_ih.T   b_ih, b_hh: (3H,)   h_in, h_out: (B, H)
        hprev: (T, B, H)   gates: (T, B, 4H) holding r, z, n, q   y: (T, B, H)
        """
        H = h_in.shape[1]
        L = lengths[b]
        p = position(s, L, reverse)
        h_old = h_in[b, j]
        hprev[p, b, j] = h_old
        if s >= L:
            h_out[b, j] = h_old
            y[p, b, j] = ZERO
            for k in range(4):
                gates[p, b, k * H + j] = ZERO
            return
        r = sigmoid(xW[p, b, j] + b_ih[j] + rr + b_hh[j])                     # (1)
        z = sigmoid(xW[p, b, H + j] + b_ih[H + j] + rz + b_hh[H + j])         # (2)
        q = rn + b_hh[2 * H + j]                                              # (3)
        n = math.tanh(xW[p, b, 2 * H + j] + b_ih[2 * H + j] + r * q)          # (4)
        h_new = (ONE - z) * n + z * h_old                                     # (5)
        gates[p, b, j] = r
        gates[p, b, H + j] = z
        gates[p, b, 2 * H + j] = n
        gates[p, b, 3 * H + j] = q
        h_out[b, j] = h_new
        y[p, b, j] = h_new

    @cuda.jit(device=True)
    def backward_point(s, b, j, dy, lengths, reverse, gates, hprev, dh):
        """Grads of step ``s`` for unit ``j`` of sequence ``b``: ``(p, da_r, da_z, da_n, dq)``.

        The input pre-activations get ``(da_r, da_z, da_n)``, the hidden ones ``(da_r, da_z, dq)``.
        On exit ``dh[b, j]`` holds dL/dh_{t-1} less its ``W_hh`` part (the caller adds it, (1)-(3)).
        """
        H = dh.shape[1]
        L = lengths[b]
        p = position(s, L, reverse)
        if s >= L:
            return p, ZERO, ZERO, ZERO, ZERO
        r = gates[p, b, j]
        z = gates[p, b, H + j]
        n = gates[p, b, 2 * H + j]
        q = gates[p, b, 3 * H + j]
        h_prev = hprev[p, b, j]
        dh_new = dy[p, b, j] + dh[b, j]
        dn = dh_new * (ONE - z)                               # (5)
        dz = dh_new * (h_prev - n)                            # (5)
        dan = dn * (ONE - n * n)                              # (4): tanh'
        dar = dan * q * r * (ONE - r)                         # (4) then (1): sig'
        daz = dz * z * (ONE - z)                              # (2): sig'
        dq = dan * r                                          # (4)
        dh[b, j] = dh_new * z                                 # (5); the W_hh part comes next
        return p, dar, daz, dan, dq

    return forward_point, backward_point


# ---------------------------------------------------------------------------------------------
# RNN (Elman, tanh)
#
#   a_t = W_ih x_t + W_hh h_{t-1} + b           (1)
#   h_t = tanh(a_t)                             (2)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def rnn_point_functions(dtype):
    """``(forward_point, backward_point)`` device functions for ``dtype``."""
    ZERO, ONE = np.dtype(dtype).type(0), np.dtype(dtype).type(1)

    @cuda.jit(device=True)
    def forward_point(s, b, j, ra, xW, bias, lengths, reverse, h_in, h_out, hprev, act, y):
        """Step ``s`` for unit ``j`` of sequence ``b``; ``ra`` = ``(W_hh h_{t-1})[j]``.

        xW: (T, B, H)   bias: (H,)   h_in, h_out: (B, H)   hprev, act, y: (T, B, H)
        ``act`` saves tanh(a_t) (0 at padding) for the backward.
        """
        L = lengths[b]
        p = position(s, L, reverse)
        h_old = h_in[b, j]
        hprev[p, b, j] = h_old
        if s >= L:
            h_out[b, j] = h_old
            y[p, b, j] = ZERO
            act[p, b, j] = ZERO
            return
        h_new = math.tanh(xW[p, b, j] + bias[j] + ra)         # (1), (2)
        act[p, b, j] = h_new
        h_out[b, j] = h_new
        y[p, b, j] = h_new

    @cuda.jit(device=True)
    def backward_point(s, b, j, dy, lengths, reverse, act, dh):
        """Grad of step ``s`` for unit ``j`` of sequence ``b``: ``(p, da)``; ``dh[b, j]`` as in LSTM."""
        L = lengths[b]
        p = position(s, L, reverse)
        if s >= L:
            return p, ZERO
        h_new = act[p, b, j]
        dh_new = dy[p, b, j] + dh[b, j]
        dh[b, j] = ZERO                                       # the W_hh part comes next, (1)
        return p, dh_new * (ONE - h_new * h_new)              # (2): tanh' = 1 - tanh^2

    return forward_point, backward_point
