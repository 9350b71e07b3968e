"""Fast CPU GRU: forward and backpropagation through time (BPTT), compiled with Numba.

Same arguments (plus ``path=``) and results as ``kernels.reference.gru_forward`` /
``gru_backward`` (the plain NumPy oracle, one step at a time); this file computes the same
thing the way NVIDIA's cuDNN and the haste library (LMNT's fast RNN kernels) do, so that nearly
all the work happens in a few matrix products. Read ``rnn.py`` first: it has the same structure
with one gate, and its notes explain the speed devices that the three cells share.

Shape key (used in every comment below):

    T = time steps   B = batch   I = input features   H = hidden units   3H = the three gates

The cell (PyTorch / cuDNN "reset_after" form, gate order r, z, n; two biases). For each step
t = 0 .. T-1, with the input part gi = x_t W_ih^T + b_ih and the hidden part
gh = h_{t-1} W_hh^T + b_hh, both (B, 3H) (the batch's sequences are the rows) and split into
their r, z, n thirds (per sequence, below, written as matrix times column vector, x = x_t and
h = h_{t-1}), and h_{-1} the initial state (the argument ``h0``):

    r = sig(gi_r + gh_r)            = sig(W_ir x + b_ir + W_hr h + b_hr)      (1)
    z = sig(gi_z + gh_z)            = sig(W_iz x + b_iz + W_hz h + b_hz)      (2)
    q = gh_n                        = W_hn h + b_hn                           (3)
    n = tanh(a_n),  a_n = gi_n + r * q = W_in x + b_in + r * q                (4)
    h_t = (1 - z) * n + z * h_{t-1}                                           (5)

(sig(u) = 1 / (1 + e^-u); ``*`` is elementwise). r is the reset gate (how much of the old state
the candidate sees), z the update gate (how much of h_{t-1} to keep: z = 1 copies it), n the
candidate state; h is the hidden state and also the output, y_t = h_t. The reset gate
multiplies q *after* the matrix product, so all three gates share ONE recurrent product
h_{t-1} W_hh^T per step; it also keeps b_hn apart from b_in (r scales one, not the other),
which is why the GRU keeps both bias vectors (6H numbers) where the LSTM and the RNN keep one,
the sum. With ragged sequences (``lengths``), a step ``t >= lengths[b]`` is padding for
sequence b:

    h_t = h_{t-1},  y_t = 0                                                   (6)   frozen state

Backpropagation through time runs t = T-1 down to 0. dh'_t is the part of dL/dh_t that flows
back through step t+1, by two paths: step t+1's matrix product in (1)-(3), and the direct term
z * h_{t-1} of step t+1's (5) (there h_{t-1} is h_t); at t = T-1 it is the final state's
upstream grad (``dh_n``). A name dv is dL/dv, the gradient of the loss L. Each step adds
the gradient of its own output y_t = h_t (``dy``), then differentiates (5), (4), then (1)-(3),
sig' = sig * (1 - sig) and tanh' = 1 - tanh^2. Here dz is the grad of the update gate z, a value
after its sigmoid (unlike the LSTM's dz, the grads of the pre-activations). Products with a
weight matrix or a transposed grad (dGh W_hh, dGh^T h_{t-1}) are matrix products; ``*`` is
elementwise:

    dh_t = dy_t + dh'_t                                               h_t feeds y_t and step t+1
    dn = dh_t * (1 - z)    dz = dh_t * (h_{t-1} - n)    direct: dh_t * z              from (5)
    dan = dn * (1 - n^2)   dr = dan * q   dq = dan * r    (dan = dL/da_n)             from (4)
    dGh = [dr * r * (1 - r),  dz * z * (1 - z),  dq]    grads of gh (r, z, n thirds) (1)-(3)
    dGi = [dr * r * (1 - r),  dz * z * (1 - z),  dan]   grads of gi: dGh but the n third
    dh'_{t-1} = dGh W_hh + dh_t * z    dx_t = dGi W_ih                       from (1)-(3), (5)
    dW_hh += dGh^T h_{t-1}   dW_ih += dGi^T x_t   db_hh += sum dGh   db_ih += sum dGi

The sums are over the batch. After step 0, dh'_{-1} is the grad of the initial state (returned
as ``dh0``). Over padding (6) a step passes dh' through unchanged and contributes nothing.

How the work is organized (forward):

    G = X W_ih^T               ONE big GEMM for all steps: (T*B, I) @ (I, 3H); G is gi without
                               b_ih, X the inputs as one (T*B, I) matrix (every step's B rows)
    for each step t:
        R = h_{t-1} W_hh^T     ONE recurrent GEMM into a preallocated (B, 3H) buffer, packed or
                               BLAS as in ``rnn.py`` (``_gemm.step_product``)
        one fused pointwise pass over (B, H): add the biases, (1)-(6); save r, z (over G), n, q

Backward, t = T-1 ... 0. dGi and dGh differ only in their n third, so one (T, B, 3H) buffer dG
serves both: it holds dGh while the steps run (that is what the recurrence and dW_hh need), and
its n third is overwritten with dan afterwards, which turns it into dGi:

    for each step t:
        one fused pointwise pass over (B, H): dh_t -> dGh[t] (kept in dG), dan[t] (kept in
                               dan_s) and the direct part dh_t * z of dh'_{t-1}    (5), (4), (1)-(3)
        the GEMM part of dh'_{t-1} = dGh[t] W_hh   ONE GEMM: (B, 3H) @ (3H, H)        (1)-(3)
    then, once for all steps (the weights are shared across time, so their grads are sums):
        dW_hh = dGh^T H_prev      (3H, T*B) @ (T*B, H), row (t, b) of H_prev = h_{t-1}[b]
        db_hh = column sums of dGh                                               (1), (2), (3)
        dGi = dGh with its n third replaced by dan
        dW_ih = dGi^T X           (3H, T*B) @ (T*B, I)                           (1), (2), (4)
        dX    = dGi W_ih          (T*B, 3H) @ (3H, I)                            (1), (2), (4)
        db_ih = column sums of dGi: db_hh's r and z thirds, and the column sums of dan

``reverse=True`` (the backward half of a bidirectional layer) runs sequence b from its last
valid step ``lengths[b] - 1`` down to 0. We gather x once into *step order*,
``x_s[s, b] = x[lengths[b] - 1 - s, b]`` (``_common.flip_valid``), run the same forward-in-time
recurrence, and write each step's output straight back to its time ``t = lengths[b] - 1 - s``
(and read dy from there in backward); dx is scattered back once at the end. In step order,
step s of sequence b is valid exactly when ``s < lengths[b]``, in both directions. As in
``rnn.py``, the cores below count steps s; an index t is a time (of y, dy); X is x_s.

Precision and speed notes (``rnn.py`` explains the rest): every array of one call has x's dtype
(float32 or float64), so the cores compile for exactly those two signatures and ``dot_into``
calls BLAS without copies. Literal constants are made in that dtype (``one``), since a bare ``1``
would promote float32 to float64. Gates are stored as (..., 3, H), so each gate of a batch row
is a contiguous (H,) row, and the forward pointwise pass is a few short loops over such rows
rather than one loop over j. LLVM turns a loop into SIMD code only once it has ruled out that
the loop's stores overlap its loads; as a precaution, the loop that reads h_prev (a row of hs)
writes h_t into y_t and the copy into hs follows, and n has its own buffer (ns) rather than
gates' third row. It may not be needed: with Numba 0.68.1 (float32, H = 40), that loop writing
hs[s+1] directly was vectorized just as well as writing y_t (71 vs 72 packed vector
instructions, 10 vector FMAs in both). ``sigmoid``/``tanh`` come from ``_common`` (libm's
``math.tanh`` does not vectorize); ``fastmath={"contract"}`` lets them use FMA instructions
(see ``lstm.py``). The big GEMMs, and the per-step product where BLAS does it, run on BLAS's own
threads; the pointwise passes are serial: a second thread pool (``prange``) on the same cores
fights BLAS's spinning threads and, on a busy machine, made a forward pass ~20x slower in our
measurements.

A second organization of the same computation lives in ``gru_tiled.py`` (float32, modeled on
``lstm_tiled.py``): the steps split into tiles run by one team of threads per pass.
``gru_forward(path="auto")`` takes it where it measured faster (``kernels/_auto.py``).
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

__all__ = ["gru_forward", "gru_backward", "gru_forward_unchecked", "gru_backward_unchecked"]


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _forward_core(y, hs, gates, ns, qs, R, x_s, W_ih, W_hh_blas, W_hh_T_packed, RT, b_ih, b_hh,
                  lengths, reverse):
    """The whole forward pass. Fills y, hs, gates, ns and qs in place.

    y:     (T, B, H)     outputs at their own time (zeros on entry; padding stays 0)
    hs:    (T+1, B, H)   hs[s] = the state BEFORE step s; hs[0] = h0 on entry
    gates: (T, B, 3, H)  scratch for G = X W_ih^T (gi without b_ih), then out: r, z (rows 0, 1)
                         of every valid step
    ns:    (T, B, H)     out: n of every valid step, (4)
    qs:    (T, B, H)     out: q = W_hn h_{s-1} + b_hn of every valid step, (3)
    R:     (B, 3, H)     scratch for the recurrent product
    x_s:   (T, B, I)     inputs in step order   W_ih: (3H, I)   b_ih, b_hh: (3H,)
    W_hh_blas, W_hh_T_packed, RT: the operands of ``_gemm.step_product`` for h_{s-1} W_hh^T
                         (``_gemm.step_operands``): either W_hh^T packed, with W_hh_blas and RT
                         empty (0, 0); or W_hh itself and a (3H, B) scratch for BLAS, with
                         W_hh_T_packed empty. h_{s-1} here is hs[s], the state before step s.
    lengths: (B,) int64  reverse: 0 or 1 (only decides where outputs are written)
    """
    fp = flush_subnormals()                 # subnormals read and written as 0 (_common)
    _prefer_512_bit()              # AVX-512 CPUs: 16-wide SIMD for the gate loops (_gemm)
    T, B, I = x_s.shape
    H = hs.shape[2]
    one = x_s.dtype.type(1)

    # input parts of (1), (2), (4) for every step at once: x_s[s] W_ih^T   (T*B, I) @ (I, 3H)
    dot_into(x_s.reshape(T * B, I), W_ih.T, gates.reshape(T * B, 3 * H))

    R2 = R.reshape(B, 3 * H)                             # the same memory, as the GEMM sees it
    bi, bh = b_ih.reshape(3, H), b_hh.reshape(3, H)      # gate k of unit j is [k, j]: k = r z n
    for s in range(T):                                   # hidden parts: h_{s-1} W_hh^T (B, 3H)
        step_product(hs[s], W_hh_blas, W_hh_T_packed, RT, R2)
        for bb in range(B):
            L = lengths[bb]
            h_prev, h_new = hs[s, bb], hs[s + 1, bb]     # (H,) each
            if s >= L:                                   # (6): padding, the state is frozen
                copy_row(h_prev, h_new)
                continue
            y_t = y[L - 1 - s if reverse else s, bb]     # (H,) where this step's output goes
            g, rh = gates[s, bb], R[bb]                  # (3, H) input part, (3, H) hidden part
            r, z, n, q = g[0], g[1], ns[s, bb], qs[s, bb]          # (H,) each
            # short loops over (H,) rows (so that LLVM vectorizes them). h_t goes into y_t,
            # then is copied to h_new: this loop reads h_prev, a row of hs (module notes)
            for k in range(2):                                     # (1), (2), in place
                for j in range(H):
                    g[k, j] = sigmoid(g[k, j] + bi[k, j] + rh[k, j] + bh[k, j])
            for j in range(H):
                q[j] = rh[2, j] + bh[2, j]                                 # (3)
                n[j] = tanh(g[2, j] + bi[2, j] + r[j] * q[j])              # (4)
                y_t[j] = (one - z[j]) * n[j] + z[j] * h_prev[j]            # (5)
            copy_row(y_t, h_new)
    restore_fp(fp)                          # (this thread as it was)


def gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False, path="auto"):
    """GRU over a whole sequence, equations (1)-(6).

    x: (T, B, I)   W_ih: (3H, I)   W_hh: (3H, H)   b_ih, b_hh: (3H,)   h0: (B, H) or None (zeros)
    lengths: (B,) ints with 1 <= lengths[b] <= T, or None (all T)
    reverse: run each sequence from its last valid step back to 0
    path: "steps" (this file's cores), "tiled" (``gru_tiled``: float32 only, fused unit tiles on
          all cores) or "auto" (tiled where ``kernels._auto`` says it is faster)
    returns y: (T, B, H), h_n: (B, H), cache (opaque; for ``gru_backward`` only)

    Every array is used in x's dtype (float32 or float64). Outputs are fresh arrays.
    """
    x = as_float_array(x, "x")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x: expected a (T, B, I) array with T, B, I >= 1, got shape {x.shape}")
    T, B, I = x.shape
    dt = x.dtype
    W_hh = as_float_array(W_hh, "W_hh", dt)
    if W_hh.ndim != 2 or W_hh.shape[0] != 3 * W_hh.shape[1] or W_hh.size == 0:
        raise ValueError(f"W_hh: expected a (3H, H) array with H >= 1, got shape {W_hh.shape}")
    H = W_hh.shape[1]
    W_ih = as_float_array(W_ih, "W_ih", dt, (3 * H, I))
    b_ih = as_float_array(b_ih, "b_ih", dt, (3 * H,))
    b_hh = as_float_array(b_hh, "b_hh", dt, (3 * H,))
    lengths = as_lengths(lengths, T, B)
    reverse = as_flag(reverse, "reverse")
    h0 = None if h0 is None else as_float_array(h0, "h0", dt, (B, H))
    return gru_forward_unchecked(x, W_ih, W_hh, b_ih, b_hh, h0, lengths, reverse, path)


def gru_forward_unchecked(x, W_ih, W_hh, b_ih, b_hh, h0, lengths, reverse, path="auto"):
    """``gru_forward`` on arguments that are already what its checks make of them (as
    ``lstm.lstm_forward_unchecked``'s): what rnncore's layers call."""
    T, B, I = x.shape
    H = W_hh.shape[1]
    dt = x.dtype
    if lengths is None:
        lengths = as_lengths(None, T, B)
    if takes_tiled(path, 3, dt, T, B, I, H):
        from . import gru_tiled                          # imported on first use
        _ahead.start("gru", "tiled", dt)                 # empty cache: backward compiles meanwhile
        x_s = flip_valid(x, lengths, empty(x.shape, x.dtype)) if reverse else x
        return gru_tiled.forward(x_s, W_ih, W_hh, b_ih, b_hh,
                                 state_or_zeros(h0, (B, H), dt, "h0"), lengths, reverse)

    _ahead.start("gru", "steps", dt)                     # empty cache: backward compiles meanwhile
    hs = empty((T + 1, B, H), dt)                        # states before each step; hs[0] = h0
    init_state(hs[0], h0, "h0")
    gates = empty((T, B, 3, H), dt)                      # r, z per step (and scratch)
    ns = empty((T, B, H), dt)                            # n per step, (4)
    qs = empty((T, B, H), dt)                            # q per step, (3)
    y = zeros((T, B, H), dt)                             # padding outputs stay 0, (6)
    x_s = flip_valid(x, lengths, empty(x.shape, x.dtype)) if reverse else x  # (T, B, I) step order

    W_blas, W_packed, RT = step_operands(W_hh, B, transposed=True, steps=T)  # h_{s-1} W_hh^T
    _forward_core(y, hs, gates, ns, qs, empty((B, 3, H), dt),
                  x_s, W_ih, W_blas, W_packed, RT, b_ih, b_hh, lengths, int(reverse))

    cache = (x_s, W_ih, W_hh, lengths, reverse, hs, gates, ns, qs)
    return y, hs[T].copy(), cache


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _backward_core(dx_s, dW_ih, dW_hh, db_ih, db_hh, dh, dhz, dG, dan_s, dy, dh_n,
                   x_s, W_ih, W_hh, W_hh_T, W_hh_packed, dhT, lengths, reverse, hs, gates, ns, qs):
    """The whole backward pass. Fills dx_s, dW_ih, dW_hh, db_ih, db_hh, dh, dhz, dG, dan_s.

    dx_s:  (T, B, I)    out: grad of x_s (step order)
    dW_ih: (3H, I)   dW_hh: (3H, H)   db_ih, db_hh: (3H,)   out (overwritten)
    dh:    (B, H)       scratch: after step s, the GEMM part dGh[s] W_hh of dL/dh_{s-1}
                        (the grad of step s-1's own output is not yet added); out: dh0
    dhz:   (B, H)       scratch: after step s, the direct part dh_s * z of dL/dh_{s-1}, (5)
                        (rows are read only at valid steps; at the end dh + dhz = dh0)
    dG:    (T, B, 3, H) scratch: dGh (grads of the hidden pre-activations, at every step s in
                        step order, 0 on padding), then dGi (the input ones): they differ only
                        in the n third, see the module notes (the RNN's dA, the LSTM's dZ)
    dan_s: (T, B, H)    scratch: dan, the n third of dGi
    dy:    (T, B, H)    upstream grad of y at its own time   dh_n: (B, H) upstream grad of h_n
    W_hh_T, W_hh_packed, dhT: the operands of ``_gemm.step_product`` for dGh[s] W_hh
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
            dg, dan_b = dG[s, bb], dan_s[s, bb]          # (3, H), (H,) written here
            # (6): padding takes no gradient. dG = 0 here, so the GEMM below sets this row of
            # dh to 0 (dhz's row is left as it is): neither is read until s = L - 1, which
            # starts from dh_n, the grad that the frozen state passes through in the math.
            if s >= L:
                for k in range(3):
                    zero_row(dg[k])
                zero_row(dan_b)
                continue
            dy_t = dy[L - 1 - s if reverse else s, bb]   # (H,) grad of y at step s's time t
            # g: the activated r, z (rows 0, 1), as in the forward
            g, n, q, h_prev = gates[s, bb], ns[s, bb], qs[s, bb], hs[s, bb]   # (3, H), (H,)..
            dh_b, dhz_b = dh[bb], dhz[bb]                # (H,) each: the two parts of dh'_s
            # the sequence's last valid step: dh'_s is dh_n. rnn.py and lstm.py just read dh_n's
            # row there; here dh'_s has two parts, both read below, so dh_n is copied in
            if s == L - 1:
                copy_row(dh_n[bb], dh_b)
                zero_row(dhz_b)
            for j in range(H):
                r, z = g[0, j], g[1, j]
                dh_s = dy_t[j] + dh_b[j] + dhz_b[j]      # h_s feeds y at its time t and step s+1
                dn = dh_s * (one - z)                                      # (5)
                # dz = dL/dz, z the update gate (a post-activation, unlike the LSTM's dz)
                dz = dh_s * (h_prev[j] - n[j])                             # (5)
                dan = dn * (one - n[j] * n[j])                             # (4): tanh' = 1 - tanh^2
                dg[0, j] = dan * q[j] * r * (one - r)                      # (4), (1): dr r (1 - r)
                dg[1, j] = dz * z * (one - z)                              # (2)
                dg[2, j] = dan * r                                         # (4): dL/dq, then (3)
                dan_b[j] = dan                                             # (4): d(W_in x + b_in)
                dhz_b[j] = dh_s * z                                        # (5): direct path
        # (1)-(3): dGh[s] W_hh, the GEMM part of dL/dh_{s-1} that flows back through step s
        # (step s-1 adds the grad of its own output)     (B, 3H) @ (3H, H)
        step_product(dG[s].reshape(B, 3 * H), W_hh_T, W_hh_packed, dhT, dh)

    for bb in range(B):                                  # dh0 = both parts of dL/dh_{-1}
        for j in range(H):
            dh[bb, j] += dhz[bb, j]

    # the shared weights: sums over all steps, as three big GEMMs and column sums
    TB = T * B
    dG2 = dG.reshape(TB, 3 * H)                                    # (T*B, 3H), now dGh
    dot_into(dG2.T, hs[:T].reshape(TB, H), dW_hh)                  # (3H, H)    (1), (2), (3)
    column_sums(dG2, db_hh)                                        # (3H,), in float64
    for s in range(T):                                             # dG is now dGi
        for bb in range(B):
            copy_row(dan_s[s, bb], dG[s, bb, 2])
    dot_into(dG2.T, x_s.reshape(TB, I), dW_ih)                     # (3H, I)    (1), (2), (4)
    dot_into(dG2, W_ih, dx_s.reshape(TB, I))                       # (T*B, I)   (1), (2), (4)
    copy_row(db_hh[:2 * H], db_ih[:2 * H])       # the r, z thirds of dGi are dGh's; the n third:
    column_sums(dan_s.reshape(TB, H), db_ih[2 * H:])
    restore_fp(fp)                          # (this thread as it was)


def gru_backward(dy, dh_n, cache):
    """Gradients of ``gru_forward``, equations (1)-(6) differentiated in reverse step order.

    dy: (T, B, H) or None   dh_n: (B, H) or None   (None means zeros)
    cache: what ``gru_forward`` returned (either path); anything else is a TypeError
    returns dx: (T, B, I), dW_ih: (3H, I), dW_hh: (3H, H), db_ih: (3H,), db_hh: (3H,),
    dh0: (B, H), all fresh arrays (the caller accumulates).
    """
    dy, dh_n = checked_upstream(cache, "gru_forward", 3, 9, 9, dy, dh_n=dh_n)
    return gru_backward_unchecked(dy, dh_n, cache)


def gru_backward_unchecked(dy, dh_n, cache):
    """``gru_backward`` on arguments that are already what its checks make of them (as
    ``lstm.lstm_backward_unchecked``'s): what rnncore's layers call."""
    # tiled: made by gru_tiled.forward (the serial and tiled caches differ: _common.check_cache)
    tiled, T, B, H, dt = cache_dims(cache)
    if not tiled:
        x_s, W_ih, W_hh, lengths, reverse, hs, gates, ns, qs = cache
        I = x_s.shape[2]
    # dy and dh_n are only read: no copy (state_or_zeros makes zeros for None)
    dy = state_or_zeros(dy, (T, B, H), dt, "dy") if dy is None else dy
    dh_n = state_or_zeros(dh_n, (B, H), dt, "dh_n") if dh_n is None else dh_n
    _ahead.wait("gru", "tiled" if tiled else "steps", dt)   # (empty cache: for that compile)
    if tiled:
        from . import gru_tiled
        dx_s, dW_ih, dW_hh, db_ih, db_hh, dh0 = gru_tiled.backward(dy, dh_n, cache)
        lengths, reverse = cache[4], cache[6]
        dx = flip_valid(dx_s, lengths, empty(dx_s.shape, dx_s.dtype)) if reverse else dx_s
        return dx, dW_ih, dW_hh, db_ih, db_hh, dh0

    dx_s = empty((T, B, I), dt)
    dW_ih = empty((3 * H, I), dt)
    dW_hh = empty((3 * H, H), dt)
    db_ih = empty(3 * H, dt)
    db_hh = empty(3 * H, dt)
    dh = empty((B, H), dt)                               # ends as dh0
    dhz = empty((B, H), dt)
    dG = empty((T, B, 3, H), dt)
    dan_s = empty((T, B, H), dt)

    _backward_core(dx_s, dW_ih, dW_hh, db_ih, db_hh, dh, dhz, dG, dan_s, dy, dh_n,
                   x_s, W_ih, W_hh, *step_operands(W_hh, B), lengths, int(reverse), hs, gates, ns,
                   qs)

    dx = flip_valid(dx_s, lengths, empty(dx_s.shape, dx_s.dtype)) if reverse else dx_s
    return dx, dW_ih, dW_hh, db_ih, db_hh, dh
