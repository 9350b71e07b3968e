"""Fast CPU tanh RNN (Elman): forward and backpropagation through time (BPTT), with Numba.

Same arguments (plus ``path=``) and results as ``kernels.reference.rnn_forward`` / ``rnn_backward``
(the plain NumPy oracle, one step at a time); this file computes the same thing the way NVIDIA's
cuDNN and the haste library (LMNT's fast RNN kernels) do, so that nearly all the work happens in a
few matrix products. It is the simplest of the three cells (``rnn.py``, ``gru.py``, ``lstm.py``
share one structure): read it first. The speed devices that the three share (the packed per-step
product behind ``_gemm.step_operands``, ``_workspace``'s ``empty``/``zeros``, ``nogil``,
``_prefer_512_bit``) are summarized at the end of this docstring; the notes at the end of
``lstm.py`` give the measurements behind them.

Shape key (used in every comment below):

    T = time steps   B = batch   I = input features   H = hidden units

The cell (PyTorch layout; one bias, the sum of PyTorch's bias_ih and bias_hh). For each step
t = 0 .. T-1, with the batch's sequences as the rows of x_t (B, I) and h_{t-1} (B, H) (so the
weights appear transposed), and h_{-1} the initial state (the argument ``h0``):

    a_t = x_t W_ih^T + h_{t-1} W_hh^T + b                                     (1)   (B, H)
    h_t = tanh(a_t)                                                           (2)

The output at step t is y_t = h_t itself. With ragged sequences (``lengths``), a step
``t >= lengths[b]`` is padding for sequence b:

    h_t = h_{t-1},  y_t = 0                                                   (3)   frozen state

Backpropagation through time runs t = T-1 down to 0. dh'_t is the part of dL/dh_t that flows
back through step t+1's (1); at t = T-1 it is the final state's upstream grad (``dh_n``). Each
step adds the gradient of its own output y_t = h_t (``dy``), then differentiates (2), then (1),
tanh' = 1 - tanh^2. A name dv is dL/dv, the gradient of the loss L with respect to v; ``*`` is
elementwise, matrices side by side (da_t W_hh, da_t^T x_t) a matrix product:

    dh_t = dy_t + dh'_t                                               h_t feeds y_t and step t+1
    da_t = dh_t * (1 - h_t^2)                                                         from (2)
    dh'_{t-1} = da_t W_hh    dx_t = da_t W_ih    dW_ih += da_t^T x_t    dW_hh += da_t^T h_{t-1}
    db += sum of da_t over the batch                                                  from (1)

After step 0, dh'_{-1} is the grad of the initial state (returned as ``dh0``). Over padding (3)
a step passes dh' through unchanged and contributes nothing, so sequence b's last valid step
t = lengths[b] - 1 receives dh_n as its dh'.

How the work is organized (forward):

    G = X W_ih^T               ONE big GEMM for all steps: (T*B, I) @ (I, H), X = the inputs
                               as one (T*B, I) matrix, every step's B rows stacked
    for each step t:
        R = h_{t-1} W_hh^T     ONE recurrent GEMM into a preallocated (B, H) buffer
                               (``_gemm.step_product``): in float32 at small to mid sizes,
                               ``_gemm``'s own product with W_hh^T packed once for all T steps,
                               otherwise BLAS (``_gemm.step_operands`` chooses; see ``lstm.py``)
        one fused pointwise pass over (B, H): a = G[t] + R + b, (2), (3); h_t is saved in hs

Backward, t = T-1 ... 0:

    for each step t:
        one fused pointwise pass over (B, H): dh_t -> da_t (kept in dA)                 (2)
        dh'_{t-1} = da_t W_hh     ONE GEMM: (B, H) @ (H, H): W_hh packed, or BLAS,   (1)
                                  as ``_gemm.pack_for`` decides for it (as in forward for W_hh^T)
    then, once for all steps (the weights are shared across time, so their grads are sums):
        dW_ih = dA^T X            (H, T*B) @ (T*B, I)                                  (1)
        dW_hh = dA^T H_prev       (H, T*B) @ (T*B, H), row (t, b) of H_prev = h_{t-1}[b]
        dX    = dA W_ih           (T*B, H) @ (H, I)                                    (1)
        db    = column sums of dA                                                      (1)

``reverse=True`` (the backward half of a bidirectional layer) runs sequence b from its last
valid step ``lengths[b] - 1`` down to 0. We gather x once into *step order*,
``x_s[s, b] = x[lengths[b] - 1 - s, b]`` (``_common.flip_valid``), run the same forward-in-time
recurrence, and write each step's output straight back to its time ``t = lengths[b] - 1 - s``
(and read dy from there in backward); dx is scattered back once at the end. In step order,
step s of sequence b is valid exactly when ``s < lengths[b]``, in both directions. So the cores
below count steps s (the index of hs, G, dA); an index t is always a time (the index of y, dy),
and t = s only when ``reverse`` is False. X above is x_s in step order.

Precision and speed notes: every array of one call has x's dtype (float32 or float64), so the cores
compile for exactly those two signatures and ``dot_into`` calls BLAS without copies. Literal
constants are made in that dtype (``one``), since a bare ``1`` would promote float32 to float64.
The pointwise passes loop over contiguous (H,) rows and use ``_common.tanh``, so LLVM turns them
into SIMD code (libm's ``math.tanh`` does not vectorize); ``fastmath={"contract"}`` lets them use
FMA instructions. ``_prefer_512_bit()`` lets LLVM use 512-bit vectors in the forward core on CPUs
with AVX-512 (it prefers 256-bit ones otherwise; elsewhere it changes nothing); the backward core,
mostly matrix products, keeps LLVM's choice. The big GEMMs, and the per-step product where BLAS
does it, run on BLAS's own threads; the pointwise passes are serial: a second thread pool
(``prange``) on the same cores fights BLAS's spinning threads (see ``gru.py``). The cores release
Python's lock (``nogil=True``), so that the two directions of a bidirectional layer can run at
once, one per core (``_pair``). ``empty`` and ``zeros`` behave like NumPy's, but from 64 KB up they
hand out buffers reused from call to call (``_workspace``), whose memory pages are already mapped.

A second organization of the same computation lives in ``rnn_tiled.py`` (float32, modeled on
``lstm_tiled.py``): the steps split into tiles of 64 units run by one team of threads per pass,
tanh applied while each tile's sums are in registers. ``rnn_forward(path="auto")`` takes it
where it measured faster (``kernels/_auto.py``: on AVX-512 CPUs so far).
"""

import numpy as np
from numba import njit

from . import _ahead
from ._common import (as_flag, as_float_array, as_lengths, cache_dims, checked_upstream,
                      column_sums, copy_row, dot_into, flip_valid, flush_subnormals, init_state,
                      restore_fp, state_or_zeros, tanh, zero_row)
from ._auto import takes_tiled
from ._gemm import _prefer_512_bit, step_operands, step_product
from ._workspace import empty, zeros

__all__ = ["rnn_forward", "rnn_backward", "rnn_forward_unchecked", "rnn_backward_unchecked"]


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _forward_core(y, hs, G, R, x_s, W_ih, W_hh_blas, W_hh_T_packed, RT, b, lengths, reverse):
    """The whole forward pass. Fills y and hs in place.

    y:   (T, B, H)     outputs at their own time (zeros on entry; padding stays 0)
    hs:  (T+1, B, H)   hs[s] = the state BEFORE step s; hs[0] = h0 on entry
    G:   (T, B, H)     scratch for G = X W_ih^T
    R:   (B, H)        scratch for the recurrent product
    x_s: (T, B, I)     inputs in step order   W_ih: (H, I)   b: (H,)
    W_hh_blas, W_hh_T_packed, RT: the operands of ``_gemm.step_product`` for h_{s-1} W_hh^T
                       (``_gemm.step_operands``): either W_hh^T packed, with W_hh_blas and RT
                       empty (0, 0); or W_hh itself and an (H, B) scratch for BLAS, with
                       W_hh_T_packed empty. h_{s-1} here is hs[s], the state before step s.
    lengths: (B,) int64   reverse: 0 or 1 (only decides where outputs are written)
    """
    fp = flush_subnormals()                 # subnormals read and written as 0 (_common)
    _prefer_512_bit()              # AVX-512 CPUs: 16-wide SIMD for the pointwise loop (_gemm)
    T, B, I = x_s.shape
    H = hs.shape[2]

    # input part of (1) for every step at once: G[s] = x_s[s] W_ih^T       (T*B, H)
    dot_into(x_s.reshape(T * B, I), W_ih.T, G.reshape(T * B, H))

    for s in range(T):                                   # hidden part of (1): R = h_{s-1} W_hh^T
        step_product(hs[s], W_hh_blas, W_hh_T_packed, RT, R)
        for bb in range(B):
            L = lengths[bb]
            h_prev, h_new = hs[s, bb], hs[s + 1, bb]     # (H,) each
            if s >= L:                                   # (3): padding, the state is frozen
                copy_row(h_prev, h_new)
                continue
            g, r = G[s, bb], R[bb]                       # (H,) input and hidden parts of (1)
            # h_t straight into hs (this loop reads no row of hs), then copied to y: gru.py,
            # whose loop does read hs, does it the other way round (see its module notes)
            for j in range(H):
                h_new[j] = tanh(g[j] + r[j] + b[j])      # (1), (2); kept: tanh' = 1 - h^2
            copy_row(h_new, y[L - 1 - s if reverse else s, bb])   # the output at its own time
    restore_fp(fp)                          # (this thread as it was)


def rnn_forward(x, W_ih, W_hh, b, h0=None, lengths=None, reverse=False, path="auto"):
    """Tanh RNN over a whole sequence, equations (1)-(3).

    x: (T, B, I)   W_ih: (H, I)   W_hh: (H, H)   b: (H,)   h0: (B, H) or None (zeros)
    lengths: (B,) ints with 1 <= lengths[b] <= T, or None (all T)
    reverse: run each sequence from its last valid step back to 0
    path: "steps" (this file's cores), "tiled" (``rnn_tiled``: float32 only, fused unit tiles on
          all cores) or "auto" (tiled where ``kernels._auto`` says it is faster)
    returns y: (T, B, H), h_n: (B, H), cache (opaque; for ``rnn_backward`` only)

    Every array is used in x's dtype (float32 or float64). Outputs are fresh arrays.
    """
    x = as_float_array(x, "x")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x: expected a (T, B, I) array with T, B, I >= 1, got shape {x.shape}")
    T, B, I = x.shape
    dt = x.dtype
    W_hh = as_float_array(W_hh, "W_hh", dt)
    if W_hh.ndim != 2 or W_hh.shape[0] != W_hh.shape[1] or W_hh.size == 0:
        raise ValueError(f"W_hh: expected a (H, H) array with H >= 1, got shape {W_hh.shape}")
    H = W_hh.shape[1]
    W_ih = as_float_array(W_ih, "W_ih", dt, (H, I))
    b = as_float_array(b, "b", dt, (H,))
    lengths = as_lengths(lengths, T, B)
    reverse = as_flag(reverse, "reverse")
    h0 = None if h0 is None else as_float_array(h0, "h0", dt, (B, H))
    return rnn_forward_unchecked(x, W_ih, W_hh, b, h0, lengths, reverse, path)


def rnn_forward_unchecked(x, W_ih, W_hh, b, h0, lengths, reverse, path="auto"):
    """``rnn_forward`` on arguments that are already what its checks make of them (as
    ``lstm.lstm_forward_unchecked``'s): what rnncore's layers call."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    if lengths is None:
        lengths = as_lengths(None, T, B)
    if takes_tiled(path, 1, dt, T, B, I, H):
        from . import rnn_tiled                          # imported on first use
        _ahead.start("rnn", "tiled", dt)                 # empty cache: backward compiles meanwhile
        x_s = flip_valid(x, lengths, empty(x.shape, x.dtype)) if reverse else x
        return rnn_tiled.forward(x_s, W_ih, W_hh, b, state_or_zeros(h0, (B, H), dt, "h0"),
                                 lengths, reverse)

    _ahead.start("rnn", "steps", dt)                     # empty cache: backward compiles meanwhile
    hs = empty((T + 1, B, H), dt)                        # states before each step; hs[0] = h0
    init_state(hs[0], h0, "h0")
    y = zeros((T, B, H), dt)                             # padding outputs stay 0, (3)
    x_s = flip_valid(x, lengths, empty(x.shape, x.dtype)) if reverse else x  # (T, B, I) step order

    W_blas, W_packed, RT = step_operands(W_hh, B, transposed=True, steps=T)  # h_{s-1} W_hh^T
    _forward_core(y, hs, empty((T, B, H), dt), empty((B, H), dt),
                  x_s, W_ih, W_blas, W_packed, RT, b, lengths, int(reverse))

    cache = (x_s, W_ih, W_hh, lengths, reverse, hs)
    return y, hs[T].copy(), cache


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _backward_core(dx_s, dW_ih, dW_hh, db, dh, dA, dy, dh_n, x_s, W_ih, W_hh, W_hh_T, W_hh_packed,
                   dhT, lengths, reverse, hs):
    """The whole backward pass. Fills dx_s, dW_ih, dW_hh, db, dh, dA in place.

    dx_s:  (T, B, I)    out: grad of x_s (step order)
    dW_ih: (H, I)   dW_hh: (H, H)   db: (H,)   out (overwritten)
    dh:    (B, H)       scratch, then out: dh0. After step s it holds da_s W_hh: the part of
                        dL/dh_{s-1} that flows back through step s, (1) (the grad of step s-1's
                        own output is not yet added), for the rows valid at s; a row padded at
                        s holds 0 and is not read (step s-1 reads dh_n instead, or is padding).
                        After step 0 it is all of dL/dh_{-1}: dh0.
    dA:    (T, B, H)    out: dL/da at every step s (step order), 0 on padding (scratch for the
                        big GEMMs; the LSTM's dZ, the GRU's dG)
    dy:    (T, B, H)    upstream grad of y at its own time   dh_n: (B, H) upstream grad of h_n
    W_hh_T, W_hh_packed, dhT: the operands of ``_gemm.step_product`` for da_s W_hh
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
            # (3): padding takes no gradient. dA = 0 here, so the GEMM below sets this row of
            # dh to 0; the dh_n that the frozen state passes through (in the math) is read
            # directly at s = L - 1 below instead.
            if s >= L:
                zero_row(dA[s, bb])
                continue
            # dh'_s, the part of dL/dh_s from later steps: dh_n at the sequence's last valid
            # step s = L - 1, else what step s+1's GEMM below left in dh
            dh_next = dh_n[bb] if s == L - 1 else dh[bb]                   # (H,)
            dy_t = dy[L - 1 - s if reverse else s, bb]   # (H,) grad of y at step s's time t
            h, da = hs[s + 1, bb], dA[s, bb]             # (H,) each: h = h_s, the output of s
            for j in range(H):
                dh_s = dy_t[j] + dh_next[j]              # h_s feeds y at its time t and step s+1
                da[j] = dh_s * (one - h[j] * h[j])       # (2): tanh' = 1 - tanh^2
        # (1): da_s W_hh, the part of dL/dh_{s-1} that flows back through step s (step s-1 adds
        # the grad of its own output)     (B, H) @ (H, H)
        step_product(dA[s], W_hh_T, W_hh_packed, dhT, dh)

    # (1), the shared weights: sums over all steps, as three big GEMMs and a column sum
    TB = T * B
    dA2 = dA.reshape(TB, H)                                        # (T*B, H)
    dot_into(dA2.T, x_s.reshape(TB, I), dW_ih)                     # (H, I)
    dot_into(dA2.T, hs[:T].reshape(TB, H), dW_hh)                  # (H, H), hs[s] = h_{s-1}
    dot_into(dA2, W_ih, dx_s.reshape(TB, I))                       # (T*B, I)
    column_sums(dA2, db)                                           # (H,), in float64
    restore_fp(fp)                          # (this thread as it was)


def rnn_backward(dy, dh_n, cache):
    """Gradients of ``rnn_forward``, equations (1)-(3) differentiated in reverse step order.

    dy: (T, B, H) or None   dh_n: (B, H) or None   (None means zeros)
    cache: what ``rnn_forward`` returned (either path); anything else is a TypeError
    returns dx: (T, B, I), dW_ih: (H, I), dW_hh: (H, H), db: (H,), dh0: (B, H),
    all fresh arrays (the caller accumulates).
    """
    dy, dh_n = checked_upstream(cache, "rnn_forward", 1, 6, 8, dy, dh_n=dh_n)
    return rnn_backward_unchecked(dy, dh_n, cache)


def rnn_backward_unchecked(dy, dh_n, cache):
    """``rnn_backward`` on arguments that are already what its checks make of them (as
    ``lstm.lstm_backward_unchecked``'s): what rnncore's layers call."""
    # tiled: made by rnn_tiled.forward (the serial and tiled caches differ: _common.check_cache)
    tiled, T, B, H, dt = cache_dims(cache)
    if not tiled:
        x_s, W_ih, W_hh, lengths, reverse, hs = cache
        I = x_s.shape[2]
    # dy and dh_n are only read: no copy (state_or_zeros makes zeros for None)
    dy = state_or_zeros(dy, (T, B, H), dt, "dy") if dy is None else dy
    dh_n = state_or_zeros(dh_n, (B, H), dt, "dh_n") if dh_n is None else dh_n
    _ahead.wait("rnn", "tiled" if tiled else "steps", dt)   # (empty cache: for that compile)
    if tiled:
        from . import rnn_tiled
        dx_s, dW_ih, dW_hh, db, dh0 = rnn_tiled.backward(dy, dh_n, cache)
        lengths, reverse = cache[4], cache[6]
        dx = flip_valid(dx_s, lengths, empty(dx_s.shape, dx_s.dtype)) if reverse else dx_s
        return dx, dW_ih, dW_hh, db, dh0

    dx_s = empty((T, B, I), dt)
    dW_ih = empty((H, I), dt)
    dW_hh = empty((H, H), dt)
    db = empty(H, dt)
    dh = empty((B, H), dt)                               # ends as dh0
    dA = empty((T, B, H), dt)

    _backward_core(dx_s, dW_ih, dW_hh, db, dh, dA, dy, dh_n,
                   x_s, W_ih, W_hh, *step_operands(W_hh, B), lengths, int(reverse), hs)

    dx = flip_valid(dx_s, lengths, empty(dx_s.shape, dx_s.dtype)) if reverse else dx_s
    return dx, dW_ih, dW_hh, db, dh
