"""Fast CPU LSTM: forward and backpropagation through time (BPTT), compiled with Numba.

(Simpler reads first, if you like: ``reference.py`` has every cell one step at a time in plain
NumPy, and ``rnn.py`` this file's organization with one gate instead of four.)

Same arguments (plus ``path=``) and results as ``kernels.reference.lstm_forward`` /
``lstm_backward`` (the plain NumPy oracle, one step at a time); this file computes the same
thing the way NVIDIA's cuDNN and the haste library (LMNT's fast RNN kernels) do, so that nearly
all the work happens in a few matrix products.

Shape key (used in every comment below):

    T = time steps   B = batch   I = input features   H = hidden units   4H = the four gates

The cell (PyTorch layout and gate order i, f, g, o; one bias b, the sum of PyTorch's bias_ih
and bias_hh). h_t is the hidden state (the output), c_t the cell state (the memory); the gates
are i (input: how much of g to write), f (forget: how much of c_{t-1} to keep), g (the
candidate values to write) and o (output: how much of tanh(c_t) to show). For each step
t = 0 .. T-1, with the rows of x_t (B, I) and h_{t-1} (B, H) the batch's sequences (so the
weights appear transposed), and h_{-1}, c_{-1} the initial states (the arguments ``h0``,
``c0``). Matrices side by side (x_t W_ih^T, and below dz W_hh, dz^T x_t) are a matrix
product; ``*`` is elementwise:

    z_t = x_t W_ih^T + h_{t-1} W_hh^T + b                         (1)   (B, 4H) = z_i z_f z_g z_o
    i = sig(z_i)   f = sig(z_f)   g = tanh(z_g)   o = sig(z_o)     (2)   sig(u) = 1 / (1 + e^-u)
    c_t = f * c_{t-1} + i * g                                     (3)
    h_t = o * tanh(c_t)                                           (4)

The output at step t is y_t = h_t itself (no extra layer), so a sequence's output at its last
valid step is its final state h_n. With ragged sequences (``lengths``), a step
``t >= lengths[b]`` is padding for sequence b:

    h_t = h_{t-1},  c_t = c_{t-1},  y_t = 0                       (5)   the state is frozen

Backpropagation through time runs t = T-1 down to 0. Two gradients arrive at step t from step
t+1: dh'_t, the part of dL/dh_t that flows through step t+1's (1), and dc'_t, dL/dc_t through
step t+1's (3); at a sequence's last valid step (t = T-1, or t = lengths[b] - 1 with padding
after it, which passes them through by (5)) they are the final states' upstream grads (``dh_n``,
``dc_n``).
Each step adds the gradient of its own output y_t = h_t (``dy``), then differentiates (4), (3),
(2), (1) in that order, sig' = sig * (1 - sig) and tanh' = 1 - tanh^2. A name dv is dL/dv, the
gradient of the loss L with respect to v; dz (B, 4H) holds the grads of the pre-activations
z_t, in the same i, f, g, o quarters:

    dh_t = dy_t + dh'_t                                               h_t feeds y_t and step t+1
    do = dh_t * tanh(c_t)           dc_t = dc'_t + dh_t * o * (1 - tanh(c_t)^2)       from (4)
    di = dc_t * g   df = dc_t * c_{t-1}   dg = dc_t * i   dc'_{t-1} = dc_t * f        from (3)
    dz = [di * i * (1 - i),  df * f * (1 - f),  dg * (1 - g^2),  do * o * (1 - o)]    from (2)
    dh'_{t-1} = dz W_hh    dx_t = dz W_ih    dW_ih += dz^T x_t    dW_hh += dz^T h_{t-1}
    db += sum of dz over the batch                                                    from (1)

dc_t is the whole dL/dc_t: c_t reaches the loss through step t+1 (dc'_t) and through h_t, and
(3) must use the sum (differentiating (3) with dc'_t alone is the classic slip). After step 0,
dh'_{-1} and dc'_{-1} are the grads of the initial states (returned as ``dh0``, ``dc0``). Over
padding (5) a step passes dh' and dc' through unchanged and contributes nothing (given finite
padding values: the kernels check no values, and 0 * NaN is NaN; see ``kernels/__init__``).

How the work is organized, as in cuDNN and haste. X is the whole input (in step order: see
``reverse`` below) as one (T*B, I) matrix, every step's B rows stacked (a reshape, not a copy);
dZ, H_prev and dX stack the steps' dz_t, h_{t-1} and dx_t the same way. Forward:

    G = X W_ih^T              ONE GEMM for the input part of (1) at every step: (T*B, I) @ (I, 4H)
    for each step t:
        R = h_{t-1} W_hh^T    ONE GEMM for the recurrent part of (1): (B, H) @ (H, 4H), into a
                              preallocated buffer (``_gemm.step_product``). In float32 at small
                              to mid sizes (``_gemm.pack_for``; the bounds depend on the CPU)
                              it is ``_gemm``'s product with W_hh^T packed once for all T steps
                              (BLAS would pack it again at every step), unless the call has
                              too few steps to win the packing back; otherwise BLAS,
                              asked for the transposed product
                              R^T = W_hh h_{t-1}^T, which it shares out better over its threads
        one pass over (B, H): G[t] + R + b, then (2), (3), (4), (5); save i f g o and tanh(c_t)

Backward, t = T-1 ... 0:

    for each step t:
        one pass over (B, H): dh_t, dc'_t -> dz_t (kept in dZ) and dc'_{t-1}     (4), (3), (2)
        dh'_{t-1} = dz_t W_hh ONE GEMM: (B, 4H) @ (4H, H): W_hh packed, or BLAS,   (1)
                              as ``_gemm.pack_for`` decides for it (as in forward for W_hh^T)
    then, once for all steps (the weights are shared across time, so their grads are sums):
        dW_ih = dZ^T X            (4H, T*B) @ (T*B, I)                            (1)
        dW_hh = dZ^T H_prev       (4H, T*B) @ (T*B, H), row (t, b) of H_prev = h_{t-1}[b]
        dX    = dZ W_ih           (T*B, 4H) @ (4H, I)                             (1)
        db    = column sums of dZ                                                 (1)

Gates are stored as (..., 4, H): ``z[k, j]`` is gate k (0 i, 1 f, 2 g, 3 o) of hidden unit j, the
same memory as PyTorch's stacked (4H,) layout.

``reverse=True`` (the backward half of a bidirectional layer) runs sequence b from its last
valid step ``lengths[b] - 1`` down to 0. We gather x once into *step order*,
``x_s[s, b] = x[lengths[b] - 1 - s, b]`` (``_common.flip_valid``), run the same forward-in-time
recurrence, and write each step's output straight back to its time ``t = lengths[b] - 1 - s``.
In step order, step s of sequence b is valid exactly when ``s < lengths[b]``, in both directions.
So the cores count steps s, and an index t is always a time: t = s when ``reverse`` is False.

The names in ``_backward_core``, against the equations above: ``dh_next`` is dh'_s (``dh_n``
at the last valid step, else what step s+1's product left in ``dh``); ``dh_s`` is dh_t;
``dc_s`` is dc_t; ``dc`` holds dc'_s on entry to step s and dc'_{s-1} after it; ``dz`` is dz
(kept for every step in ``dZ``); ``hs[s]`` and ``cs[s]`` are h_{s-1} and c_{s-1}.

A second organization of the same computation lives in ``lstm_tiled.py`` (float32): each step
split into tiles that do their share of (1) and the cell (2)-(5) in registers, run by one team
of threads for the whole pass. ``lstm_forward(path="auto")`` takes it for the mid-sized shapes
where it measured faster, and on AVX-512 CPUs for large ones up to H = 1024 (``kernels/_auto.py``);
read this file before that one. Notes on precision and speed are at the end of this file.
"""

import numpy as np
from numba import njit

from . import _ahead
from ._common import (as_flag, as_float_array, as_lengths, cache_dims, checked_upstream,
                      column_sums, copy_row, dot_into, flip_valid, flush_subnormals, init_state,
                      restore_fp, sigmoid, state_or_zeros, tanh, zero_row)
from ._auto import takes_tiled
from ._gemm import _prefer_512_bit, step_operands, step_product
from ._workspace import empty, zeros

__all__ = ["lstm_forward", "lstm_backward", "lstm_forward_unchecked", "lstm_backward_unchecked"]


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _forward_core(y, hs, cs, gates, tanh_c, R, x_s, W_ih, W_hh_blas, W_hh_T_packed, RT, b,
                  lengths, reverse):
    """The whole forward pass. Fills y, hs, cs, gates and tanh_c in place.

    y:      (T, B, H)     outputs at their own time (zeros on entry; padding stays 0)
    hs, cs: (T+1, B, H)   hs[s], cs[s] = the state BEFORE step s; hs[0], cs[0] = h0, c0 on entry
    gates:  (T, B, 4, H)  out: activated i, f, g, o of every valid step (used as scratch first)
    tanh_c: (T, B, H)     out: tanh(c_t) of every valid step, so backward need not recompute it
    R:      (B, 4, H)     scratch for the recurrent product of one step
    x_s:    (T, B, I)     inputs in step order      W_ih: (4H, I)   b: (4H,)
    W_hh_blas, W_hh_T_packed, RT: the operands of ``_gemm.step_product`` for h_{s-1} W_hh^T
                          (``_gemm.step_operands``): either W_hh^T packed, with W_hh_blas and
                          RT empty (0, 0); or W_hh itself and a (4H, B) scratch for BLAS, with
                          W_hh_T_packed empty. h_{s-1} here is hs[s], the state before step s.
    lengths: (B,) int64   reverse: 0 or 1 (only decides where outputs are written)
    """
    fp = flush_subnormals()                 # subnormals read and written as 0 (_common)
    _prefer_512_bit()              # AVX-512 CPUs: 16-wide SIMD for the gate loops (_gemm)
    T, B, I = x_s.shape
    H = hs.shape[2]

    # (1), input part, for every step at once: x_s[s] W_ih^T for all s       (T*B, I) @ (I, 4H)
    dot_into(x_s.reshape(T * B, I), W_ih.T, gates.reshape(T * B, 4 * H))

    R2 = R.reshape(B, 4 * H)                             # the same memory, as the GEMM sees it
    b4 = b.reshape(4, H)                                 # gate k of unit j is [k, j]: k = i f g o
    for s in range(T):                                   # (1): h_{s-1} W_hh^T   (B, H) @ (H, 4H)
        step_product(hs[s], W_hh_blas, W_hh_T_packed, RT, R2)
        for bb in range(B):
            L = lengths[bb]
            c_prev, h_new, c_new = cs[s, bb], hs[s + 1, bb], cs[s + 1, bb]     # (H,) each
            if s >= L:                                   # (5): padding, the state is frozen
                copy_row(hs[s, bb], h_new)
                copy_row(c_prev, c_new)
                continue
            y_t = y[L - 1 - s if reverse else s, bb]     # (H,) where this step's output goes
            z, r, tc = gates[s, bb], R[bb], tanh_c[s, bb]          # (4, H), (4, H), (H,)
            # (1) and (2): add the recurrent part and the bias, activate in place, one gate at a
            # time (a loop that writes one row is one that LLVM turns into SIMD code)
            for k in (0, 1, 3):                                    # i, f, o
                for j in range(H):
                    z[k, j] = sigmoid(z[k, j] + r[k, j] + b4[k, j])
            for j in range(H):                                     # g
                z[2, j] = tanh(z[2, j] + r[2, j] + b4[2, j])
            for j in range(H):
                i, f, g, o = z[0, j], z[1, j], z[2, j], z[3, j]
                c = f * c_prev[j] + i * g                          # (3)
                tanh_cj = tanh(c)
                h = o * tanh_cj                                    # (4)
                c_new[j], tc[j], h_new[j], y_t[j] = c, tanh_cj, h, h
    restore_fp(fp)                          # (this thread as it was)


def lstm_forward(x, W_ih, W_hh, b, h0=None, c0=None, lengths=None, reverse=False, path="auto"):
    """LSTM over a whole sequence, equations (1)-(5).

    x: (T, B, I)   W_ih: (4H, I)   W_hh: (4H, H)   b: (4H,)   h0, c0: (B, H) or None (zeros)
    lengths: (B,) ints with 1 <= lengths[b] <= T, or None (all T)
    reverse: run each sequence from its last valid step back to 0
    path: "steps" (this file's cores), "tiled" (``lstm_tiled``: float32 only, fused unit tiles on
          all cores) or "auto" (tiled where ``kernels._auto`` says it is faster)
    returns y: (T, B, H), h_n: (B, H), c_n: (B, H), cache (opaque; for ``lstm_backward`` only)

    Every array is used in x's dtype (float32 or float64). Outputs are fresh arrays.
    """
    x = as_float_array(x, "x")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x: expected a (T, B, I) array with T, B, I >= 1, got shape {x.shape}")
    T, B, I = x.shape
    dt = x.dtype
    W_hh = as_float_array(W_hh, "W_hh", dt)
    if W_hh.ndim != 2 or W_hh.shape[0] != 4 * W_hh.shape[1] or W_hh.size == 0:
        raise ValueError(f"W_hh: expected a (4H, H) array with H >= 1, got shape {W_hh.shape}")
    H = W_hh.shape[1]
    W_ih = as_float_array(W_ih, "W_ih", dt, (4 * H, I))
    b = as_float_array(b, "b", dt, (4 * H,))
    lengths = as_lengths(lengths, T, B)
    reverse = as_flag(reverse, "reverse")
    h0 = None if h0 is None else as_float_array(h0, "h0", dt, (B, H))
    c0 = None if c0 is None else as_float_array(c0, "c0", dt, (B, H))
    return lstm_forward_unchecked(x, W_ih, W_hh, b, h0, c0, lengths, reverse, path)


def lstm_forward_unchecked(x, W_ih, W_hh, b, h0, c0, lengths, reverse, path="auto"):
    """``lstm_forward`` on arguments that are already what its checks make of them:
    C-contiguous writable arrays of one float dtype in the shapes above (h0, c0 may be None),
    ``lengths`` an int64 (B,) array in range that the caller will not change (the cache keeps
    it) or None, ``reverse`` a bool. rnncore's layers call this: they check their inputs
    themselves, and every check made twice had cost ~5 % of a training step at the seed shapes
    (``kernels/__init__.py``)."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    if lengths is None:
        lengths = as_lengths(None, T, B)
    if takes_tiled(path, 4, dt, T, B, I, H):
        from . import lstm_tiled                         # imported on first use
        _ahead.start("lstm", "tiled", dt)                # empty cache: backward compiles meanwhile
        x_s = flip_valid(x, lengths, empty(x.shape, x.dtype)) if reverse else x
        return lstm_tiled.forward(x_s, W_ih, W_hh, b,
                                  state_or_zeros(h0, (B, H), dt, "h0"),
                                  state_or_zeros(c0, (B, H), dt, "c0"), lengths, reverse)

    _ahead.start("lstm", "steps", dt)                    # empty cache: backward compiles meanwhile
    hs = empty((T + 1, B, H), dt)                        # states before each step; hs[0] = h0
    cs = empty((T + 1, B, H), dt)
    init_state(hs[0], h0, "h0")
    init_state(cs[0], c0, "c0")
    gates = empty((T, B, 4, H), dt)                      # i, f, g, o per step
    tanh_c = empty((T, B, H), dt)
    y = zeros((T, B, H), dt)                             # padding outputs stay 0, (5)
    x_s = flip_valid(x, lengths, empty(x.shape, x.dtype)) if reverse else x  # (T, B, I) step order

    W_blas, W_packed, RT = step_operands(W_hh, B, transposed=True, steps=T)  # h_{s-1} W_hh^T
    _forward_core(y, hs, cs, gates, tanh_c, empty((B, 4, H), dt), x_s, W_ih, W_blas, W_packed,
                  RT, b, lengths, int(reverse))

    cache = (x_s, W_ih, W_hh, lengths, reverse, hs, cs, gates, tanh_c)
    return y, hs[T].copy(), cs[T].copy(), cache


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _backward_core(dx_s, dW_ih, dW_hh, db, dh, dc, dZ, dy, dh_n,
                   x_s, W_ih, W_hh, W_hh_T, W_hh_packed, dhT, lengths, reverse, hs, cs, gates,
                   tanh_c):
    """The whole backward pass. Fills dx_s, dW_ih, dW_hh, db, dh, dc, dZ in place.

    dx_s:  (T, B, I)    out: grad of x_s (step order)
    dW_ih: (4H, I)   dW_hh: (4H, H)   db: (4H,)   out (overwritten)
    dh:    (B, H)       scratch, then out: dh0. After step s it holds dz_s W_hh: the part of
                        dL/dh_{s-1} that flows back through step s, (1) (the grad of step s-1's
                        own output is not yet added), for the rows valid at s; a row padded at
                        s holds 0 and is not read (step s-1 reads dh_n instead, or is padding).
                        After step 0 it is all of dL/dh_{-1}: dh0.
    dc:    (B, H)       in: dc_n; out: dc0. Holds dL/dc of the current step's input state; a
                        padded step leaves its row as it is, so dc_n reaches the last valid step.
    dZ:    (T, B, 4, H) out: dL/dz at every step s (step order), 0 on padding (scratch for the
                        big GEMMs; the RNN's dA, the GRU's dG)
    dy:    (T, B, H)    upstream grad of y at its own time   dh_n: (B, H) upstream grad of h_n
    W_hh_T, W_hh_packed, dhT: the operands of ``_gemm.step_product`` for dz_s W_hh
                        (``_gemm.step_operands``: W_hh packed, or W_hh^T and a (H, B) scratch)
    the rest: the forward's cache (see ``_forward_core``).
    """
    fp = flush_subnormals()                 # subnormals read and written as 0 (_common)
    T, B, I = x_s.shape
    H = W_hh.shape[1]
    one = x_s.dtype.type(1)

    for s in range(T - 1, -1, -1):
        for bb in range(B):
            L = lengths[bb]
            dz = dZ[s, bb]                               # (4, H) written here
            # (5): padding takes no gradient. dz = 0 here, so the GEMM below sets this row of
            # dh to 0; the dh_n that the frozen state passes through (in the math) is read
            # directly at s = L - 1 below instead. dc's row is left alone: dc_n really does
            # pass through unchanged.
            if s >= L:
                for k in range(4):
                    zero_row(dz[k])
                continue
            # dh'_s, the part of dL/dh_s from later steps: dh_n at the sequence's last valid
            # step s = L - 1, else what step s+1's GEMM below left in dh
            dh_next = dh_n[bb] if s == L - 1 else dh[bb]                   # (H,)
            dy_t = dy[L - 1 - s if reverse else s, bb]   # (H,) grad of y at step s's time t
            # act: the activated i, f, g, o (not the pre-activations z, whose grads go in dz)
            act, tc, c_prev, dc_b = gates[s, bb], tanh_c[s, bb], cs[s, bb], dc[bb]  # (4, H), (H,)
            for j in range(H):
                i, f, g, o = act[0, j], act[1, j], act[2, j], act[3, j]
                dh_s = dy_t[j] + dh_next[j]              # h_s feeds y at its time t and step s+1
                do = dh_s * tc[j]                                        # (4)
                dc_s = dc_b[j] + dh_s * o * (one - tc[j] * tc[j])        # (4): tanh' = 1 - tanh^2
                dc_b[j] = dc_s * f                                       # (3): dc'_{s-1}
                di, df, dg = dc_s * g, dc_s * c_prev[j], dc_s * i        # (3)
                dz[0, j] = di * i * (one - i)                            # (2): sig' = sig*(1-sig)
                dz[1, j] = df * f * (one - f)                            # (2)
                dz[2, j] = dg * (one - g * g)                            # (2): tanh' = 1 - tanh^2
                dz[3, j] = do * o * (one - o)                            # (2)
        # (1): dz_s W_hh, the part of dL/dh_{s-1} that flows back through step s (step s-1
        # adds the grad of its own output)     (B, 4H) @ (4H, H)
        step_product(dZ[s].reshape(B, 4 * H), W_hh_T, W_hh_packed, dhT, dh)

    # (1), the shared weights: sums over all steps, as three big GEMMs and a column sum
    TB = T * B
    dZ2 = dZ.reshape(TB, 4 * H)                                    # (T*B, 4H)
    dot_into(dZ2.T, x_s.reshape(TB, I), dW_ih)                     # (4H, I)
    dot_into(dZ2.T, hs[:T].reshape(TB, H), dW_hh)                  # (4H, H), hs[s] = h_{s-1}
    dot_into(dZ2, W_ih, dx_s.reshape(TB, I))                       # (T*B, I)
    column_sums(dZ2, db)                                           # (4H,), in float64
    restore_fp(fp)                          # (this thread as it was)


def lstm_backward(dy, dh_n, dc_n, cache):
    """Gradients of ``lstm_forward``, equations (1)-(5) differentiated in reverse step order.

    dy: (T, B, H) or None   dh_n, dc_n: (B, H) or None   (None means zeros)
    cache: what ``lstm_forward`` returned (either path); anything else is a TypeError
    returns dx: (T, B, I), dW_ih: (4H, I), dW_hh: (4H, H), db: (4H,), dh0: (B, H), dc0: (B, H),
    all fresh arrays (the caller accumulates).
    """
    dy, dh_n, dc_n = checked_upstream(cache, "lstm_forward", 4, 9, 11, dy, dh_n=dh_n, dc_n=dc_n)
    return lstm_backward_unchecked(dy, dh_n, dc_n, cache)


def lstm_backward_unchecked(dy, dh_n, dc_n, cache):
    """``lstm_backward`` on arguments that are already what its checks make of them: a cache
    from ``lstm_forward`` (or ``lstm_forward_unchecked``), and dy, dh_n, dc_n C-contiguous arrays
    of the forward's dtype and shapes, or None. rnncore's layers call this (their forward
    made the cache, and they check the gradients they are given)."""
    # tiled: made by lstm_tiled.forward (the serial and tiled caches differ: _common.check_cache)
    tiled, T, B, H, dt = cache_dims(cache)
    if not tiled:
        x_s, W_ih, W_hh, lengths, reverse, hs, cs, gates, tanh_c = cache
        I = x_s.shape[2]
    # dy and dh_n are only read: no copy (state_or_zeros copies, and makes zeros for None)
    dy = state_or_zeros(dy, (T, B, H), dt, "dy") if dy is None else dy
    dh_n = state_or_zeros(dh_n, (B, H), dt, "dh_n") if dh_n is None else dh_n
    dc = state_or_zeros(dc_n, (B, H), dt, "dc_n")        # fresh copy: updated in place to dc0
    _ahead.wait("lstm", "tiled" if tiled else "steps", dt)   # (empty cache: for that compile)
    if tiled:
        from . import lstm_tiled
        dx_s, dW_ih, dW_hh, db, dh0, dc0 = lstm_tiled.backward(dy, dh_n, dc, cache)
        lengths, reverse = cache[4], cache[6]
        dx = flip_valid(dx_s, lengths, empty(dx_s.shape, dx_s.dtype)) if reverse else dx_s
        return dx, dW_ih, dW_hh, db, dh0, dc0

    dx_s = empty((T, B, I), dt)
    dW_ih = empty((4 * H, I), dt)
    dW_hh = empty((4 * H, H), dt)
    db = empty(4 * H, dt)
    dh = empty((B, H), dt)                               # ends as dh0
    dZ = empty((T, B, 4, H), dt)

    _backward_core(dx_s, dW_ih, dW_hh, db, dh, dc, dZ, dy, dh_n,
                   x_s, W_ih, W_hh, *step_operands(W_hh, B), lengths, int(reverse), hs, cs, gates,
                   tanh_c)

    dx = flip_valid(dx_s, lengths, empty(dx_s.shape, dx_s.dtype)) if reverse else dx_s
    return dx, dW_ih, dW_hh, db, dh, dc


# ---------------------------------------------------------------------------------------------
# Precision and speed
# ---------------------------------------------------------------------------------------------
# Every array of one call has x's dtype (float32 or float64), so the cores compile for exactly
# those two signatures and ``dot_into`` calls BLAS without copies. Literal constants are made in
# that dtype (``one``), since a bare ``1`` would promote float32 to float64. ``sigmoid`` and
# ``tanh`` come from ``_common``: within 2.7 ulp and, unlike ``math.exp``, SIMD-friendly; the
# forward activates one gate row per loop because LLVM only vectorizes a loop when it can prove
# its stores do not overlap its loads, and one stored row per loop keeps that simple.
# ``fastmath={"contract"}`` lets LLVM fuse each ``a * b + c`` into one FMA instruction (without
# it, none: Numba asks for strict IEEE rounding of every product); that is the only fast-math
# liberty taken, and it changes results by round-off only. The activations' polynomials are most
# of the fused operations: the float32 forward ran 6-7 % faster at (8, 8, 2, 100) and
# (32, 16, 64, 128).
#
# On CPUs with AVX-512, LLVM still prefers 256-bit vectors unless told otherwise;
# ``_prefer_512_bit()`` tells it so for the forward core (its gate loops then take 16 floats per
# instruction: the forward 4-10 % faster at (8, 8, 2, 100) on a 2-core Xeon; the backward, mostly
# matrix products, showed no gain, and keeps LLVM's choice).
#
# The big GEMMs, and the per-step product where BLAS does it, run on BLAS's own threads (the
# packed per-step product runs on the calling thread); the pointwise loops are serial: a
# ``prange`` thread pool beside BLAS's on two cores made every step slower, not faster. The cores
# release Python's lock (``nogil=True``), so that the two directions of a bidirectional layer can
# run at once, one per core, each with BLAS on one thread (``_pair``). ``empty`` and ``zeros``
# behave like NumPy's, but from 64 KB up they hand out buffers reused from call to call
# (``_workspace``), whose memory pages are already mapped: a fresh page faults when first written
# (~2 us each on a virtual machine), which had cost the forward at (100, 64, 512, 512) 16 % of its
# time.
