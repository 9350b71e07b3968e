"""The GRU organized like ``lstm_tiled.py``: unit tiles, fused steps, one team of threads (float32).

Read ``gru.py`` first (the cell, equations (1)-(6), and its BPTT) and ``lstm_tiled.py`` (why tiles
and a team, the register tile, the layouts); this file only says what differs for the GRU.
``gru.gru_forward(path="auto")`` takes it where ``kernels/_auto.py`` says it is faster.

Gate tiles. Tile u holds units 16u ... 16u+15 and keeps 64 columns per row, four blocks of 16:

    G[u, t, b]  = gi_r | gi_z | gi_n | -      after the input product (x W_ih^T + b_ih)
                = r    | z    | n    | q      after step t (q = gh_n, kept for the backward)
    dG[u, t, b] = dq   | dar  | daz  | dan    the backward's per-step result

so dGh (the gradient of the hidden pre-activations, what the recurrence and dW_hh need: for
gates n, r, z) is blocks 0-2 and dGi (the input ones, dW_ih and dx: r, z, n) is blocks 1-3,
two 48-wide windows of the same 64 columns, as in ``gru.py``:

    dn = dh (1 - z)   dz = dh (h_{t-1} - n)   dan = dn (1 - n^2)   dq = dan r        (5), (4)
    dar = dan q r (1 - r)   daz = dz z (1 - z)                                       (4), (1), (2)
    dL/dh_{t-1} = dGh_t W_hh + z_t dL/dh_t                                           (1)-(3), (5)

The input product runs 48 columns wide too (``lstm_tiled._input_part``'s ``width``), leaving
the fourth block for q: it had run 64 wide over zero weights, a quarter of its work for nothing
(kernels on a 2-core Xeon, 2026-12-03, two alternated processes each, before / after ms: forward
7.8, 7.6 / 6.9, 7.3 and fwd+bwd 21.3, 21.1 / 19.6, 20.5 at (64, 32, 128, 256); forward 111, 113 /
100, 102 at (100, 64, 512, 512); level at (32, 16, 64, 128)).

The recurrent product of a step is 48 columns wide (gh = r | z | n parts of h W_hh^T + b_hh):
the forward tile's accumulator is 4 rows x 48 (12 AVX-512 registers). The weight-gradient
products are ``lstm_tiled``'s, run 48 columns wide on the two windows (an earlier version ran
them 64 wide and dropped a block of each: a quarter of their work). The bias gradients are
its column sums over all T*Bp rows, summed in float64. For large layers on AVX-512 CPUs
(``BLAS_GRADS_MIN_H``) the steps also write their dG in PyTorch's unit order, block by block
(dq | dar | daz | dan: dGi and dGh are two windows of it), and BLAS does those products after
the pass (``_grads_by_blas``), as in ``lstm_tiled``.

Caching: the compiled cores here include ``lstm_tiled``'s, ``_gemm``'s, ``_team``'s and
``_common``'s functions; an edit of any of them makes every cached kernel stale (``_cache_stamp``).
"""

import numpy as np
from numba import carray, njit, prange

from ._common import column_sums, dot_into_views, flush_subnormals, restore_fp, sigmoid, tanh
from ._gemm import VECTOR, _prefer_512_bit, _stack_tile, fmuladd, mac
from ._workspace import empty, zeros
from ._team import barrier, one_team, share, team_size
from ._auto import uses_tiled
from .lstm_tiled import (KC, R, RG, SLABS, V, _backward_rows, _copy_row, _input_part, _pack_cols,
                         _pack_rows, _padded, _round_up, _rows_of, _unpack, _unpack_grad,
                         _weight_grad_args, _weight_grads)

__all__ = ["use_tiled", "forward", "backward"]

U = 16                    # hidden units per gate tile
GH = 3 * U                # recurrent columns per tile: r | z | n


def use_tiled(dtype, T, B, I, H):
    """Whether ``gru.gru_forward(path="auto")`` runs this file's kernels (``kernels._auto``)."""
    return uses_tiled(3, dtype, T, B, I, H)


# ---------------------------------------------------------------------------------------------
# Packing (``lstm_tiled``'s packers): gate g of unit j = 16u + jj goes to block blocks[g] of
# tile u
# ---------------------------------------------------------------------------------------------

_HIDDEN = np.array([0, 1, 2], np.int64)      # r, z, n -> blocks of gh (W_hh's forward tiles)
_GI = np.array([0, 1, 2], np.int64)          # r, z, n -> blocks of G's input part
_DGH = np.array([1, 2, 0], np.int64)         # r, z, n -> blocks of dG's hidden window (0-2)
_DGI = np.array([1, 2, 3], np.int64)         # r, z, n -> blocks of dG's input window (1-3)
_WIN = np.array([0, 1, 2], np.int64)         # r, z, n -> blocks within a 48-wide window


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _forward_tile(s, u, m0, m1, hs, G, P, y, W_f, b_h, lengths, reverse):
    """Step s, rows m0 ... m1-1, units 16u ... 16u+15: gh = b_hh + h_{s-1} W_hh^T in registers
    (4 rows x 48), k-chunk by k-chunk (partial sums wait in P between chunks), then the cell
    (1)-(6); G[u, s] holds gi on entry, r | z | n | q on return."""
    _prefer_512_bit()
    one = np.float32(1)
    Hp = hs.shape[2]
    j0 = u * U
    W, A = W_f[u], hs[s]                                 # (Hp, 48), (Bp, Hp): h_{s-1}
    acc = carray(_stack_tile(), (R, GH))                 # gh of 4 rows
    new = carray(_stack_tile(), (2, 2 * U))              # r | z, then n | h of one row
    p0 = u * GH                                          # P[:, p0:p0+48]: this tile's parked
                                                         # sums, taken a row at a time
                                                         # (lstm_tiled: "Rows as views")
    for k0 in range(0, Hp, KC):
        W_c = W[k0:k0 + KC]
        for m in range(m0, m1, R):
            A_c = A[m:m + R, k0:k0 + KC]
            for r in range(R):
                _copy_row(b_h[u] if k0 == 0 else P[m + r, p0:p0 + GH], acc[r])
            mac(acc, A_c, W_c, R, GH)                        # (1)-(3): gh = b_hh + h W_hh^T
            if k0 + KC < Hp:                                 # more chunks to come: park the sums
                for r in range(R):
                    _copy_row(acc[r], P[m + r, p0:p0 + GH])
                continue
            for r in range(R):
                b = m + r
                L = lengths[b]
                if s >= L:                                   # (6): padding, the state is frozen
                    _copy_row(hs[s, b, j0:j0 + U], hs[s + 1, b, j0:j0 + U])
                    y[s, b, j0:j0 + U] = 0
                    continue
                g = G[u, s, b]                               # (64,): gi_r | gi_z | gi_n | -
                h_prev = hs[s, b, j0:j0 + U]                 # (rows as views)
                for l in range(2 * U):                       # (1), (2): r, z
                    new[0, l] = sigmoid(g[l] + acc[r, l])
                for j in range(U):                           # (3), (4), (5)
                    n = tanh(g[2 * U + j] + new[0, j] * acc[r, 2 * U + j])
                    z = new[0, U + j]
                    new[1, j] = n
                    # (5), (1 - z) n + z h: fused one way, compiled here or loaded from the
                    # cache alike (_gemm.fmuladd; LLVM's own pick of a product can differ)
                    new[1, U + j] = fmuladd(z, h_prev[j], (one - z) * n)
                _copy_row(new[0], g[:2 * U])                 # r | z
                _copy_row(new[1, :U], g[2 * U:3 * U])        # n
                _copy_row(acc[r, 2 * U:], g[3 * U:])         # q = gh_n
                t_out = L - 1 - s if reverse else s
                _copy_row(new[1, U:], hs[s + 1, b, j0:j0 + U])
                _copy_row(new[1, U:], y[t_out, b, j0:j0 + U])


@njit(cache=True, parallel=True)
def _forward_core(y, hs, G, P, x, W_i, b_i, W_f, b_h, lengths, reverse, n_workers, sync,
                  balance):
    """The whole forward pass by a team (``lstm_tiled._forward_core``'s structure)."""
    n_u, T, Bp = G.shape[0], G.shape[1], G.shape[2]
    n_rg = -(-Bp // RG)
    n_items = n_u * n_rg
    for w in prange(n_workers):
        fp = flush_subnormals()                          # this worker: FTZ, DAZ (_common)
        balance[1, w] = _input_part(w, n_workers, x, W_i, b_i, G, balance[0], GH)
        barrier(sync, n_workers)                         # gi = b_ih + x W_ih^T, all steps
        first, last = share(balance[1], w, n_items)
        for s in range(T):
            for item in range(first, last):
                u, m0 = item // n_rg, (item % n_rg) * RG
                _forward_tile(s, u, m0, min(m0 + RG, Bp), hs, G, P, y, W_f, b_h, lengths,
                              reverse)
            barrier(sync, (s + 2) * n_workers)
        restore_fp(fp)


def forward(x_s, W_ih, W_hh, b_ih, b_hh, h0, lengths, reverse):
    """``gru.gru_forward`` on checked arguments (float32; x_s already in step order).

    x_s: (T, B, I)   W_ih: (3H, I)   W_hh: (3H, H)   b_ih, b_hh: (3H,)   h0: (B, H)
    returns y (T, B, H), h_n (B, H), cache (for ``backward``).
    """
    T, B, I = x_s.shape
    H = W_hh.shape[1]
    Bp, Hp, Ip = _round_up(B, R), _round_up(H, V), _round_up(I, R)
    n_u = Hp // U
    lengths_p = np.zeros(Bp, np.int64)                   # padding rows: length 0, always frozen
    lengths_p[:B] = lengths
    hs = empty((T + 1, Bp, Hp))
    hs[0] = _padded(h0, (Bp, Hp))
    y = empty((T, Bp, Hp))
    G = empty((n_u, T, Bp, 4 * U))
    x_p = _padded(x_s, (T, Bp, Ip))
    W_i = _pack_cols(W_ih, H, Hp, Ip, _GI, 4 * U)                        # (n_u, Ip, 64)
    b_i = _pack_cols(b_ih.reshape(3 * H, 1), H, Hp, 1, _GI, 4 * U).reshape(n_u, 4 * U)
    W_f = _pack_cols(W_hh, H, Hp, Hp, _HIDDEN, GH)                       # (n_u, Hp, 48)
    b_h = _pack_cols(b_hh.reshape(3 * H, 1), H, Hp, 1, _HIDDEN, GH).reshape(n_u, GH)
    P = empty((Bp, n_u * GH))                    # partial sums between k-chunks
    n_workers = team_size(n_u * -(-Bp // RG))
    with one_team():                             # (workqueue: one at a time)
        _forward_core(y, hs, G, P, x_p, W_i, b_i, W_f, b_h, lengths_p, int(reverse), n_workers,
                      np.zeros(1, np.int64), np.zeros((2, n_workers), np.int64))
    cache = ("tiled", x_p, W_ih, W_hh, lengths, lengths_p, reverse, hs, G)
    y_out = y[:, :B, :H] if (Bp, Hp) != (B, H) else y
    return np.ascontiguousarray(y_out), hs[T, :B, :H].copy(), cache


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _backward_tile(s, v, m0, m1, dG, dh, dhb, dy, dh_n, W_b, G, hs, lengths, reverse, dG_mat):
    """Rows m0 ... m1-1, units 64v ... 64v+63: the product part dGh_s W_hh of dL/dh_{s-1}
    (none when s = T), then the cell's derivatives of step t = s-1, or at s = 0 dh0.

    dh: (Bp, Hp) partial sums between k-chunks, and at the end dh0. dhb: (Bp, Hp) dL/dh_t of
    the last step done, for the direct part z_{t+1} dL/dh_{t+1} of the next one (5).
    ``dG_mat`` (T, Bp, 4H), unless empty: the tiles' dq | dar | daz | dan once more, each
    block in PyTorch's unit order, for ``_grads_by_blas`` (its columns H ... 4H-1 are dGi,
    0 ... 3H-1 dGh with its n block first); then dG need only hold the steps s and s-1, and
    may be a ring of two (step t in dG[:, t % 2]), as ``lstm_tiled``'s dZ.
    """
    _prefer_512_bit()
    one = np.float32(1)                                  # (a bare 1 would make float64)
    H = dG_mat.shape[2] // 4                             # (0 when it is empty)
    n_u, T, ring = dG.shape[0], G.shape[1], dG.shape[1]  # ring: T, or 2 (above)
    n_a = n_u if s < T else 1
    c0 = v * V
    acc = carray(_stack_tile(), (R, V))                  # dL/dh_{s-1}, product part
    out = carray(_stack_tile(), (4, U))                  # dq | dar | daz | dan of one tile
    n_q = V // U
    for a0 in range(0, n_a, SLABS):
        a1 = min(a0 + SLABS, n_a)
        for m in range(m0, m1, R):
            for r in range(R):
                if a0 > 0:
                    _copy_row(dh[m + r, c0:c0 + V], acc[r])
                else:
                    acc[r, :] = 0
            for a in range(a0, a1 if s < T else a0):     # acc += dGh_s[rows] W_hh
                W_c = W_b[v, a * GH:(a + 1) * GH]        # (48, 64): rows n, r, z as dGh
                A_c = dG[a, s % ring, m:m + R]           # (4, 64): blocks 0-2 are dGh
                mac(acc, A_c[:, :GH], W_c, R, V)
            if a1 < n_a:                                 # more tiles to come: park the sums
                for r in range(R):
                    _copy_row(acc[r], dh[m + r, c0:c0 + V])
                continue
            for r in range(R):
                b = m + r
                if s == 0:                               # dh0 = dGh_0 W_hh + z_0 dL/dh_0
                    for q in range(n_q):
                        u = v * n_q + q
                        for j in range(U):
                            jj = u * U + j
                            acc[r, q * U + j] += G[u, 0, b, U + j] * dhb[b, jj]
                    _copy_row(acc[r], dh[b, c0:c0 + V])
                    continue
                t = s - 1
                L = lengths[b]
                if t >= L:                               # (6): padding takes no gradient
                    for q in range(n_q):
                        dG[v * n_q + q, t % ring, b, :] = 0
                    for g4 in range(4 if c0 < H else 0):   # (as rows: lstm_tiled)
                        dG_mat[t, b, g4 * H + c0:g4 * H + min(c0 + V, H)] = 0
                    continue
                t_own = L - 1 - t if reverse else t
                for q in range(n_q):
                    u = v * n_q + q
                    j0 = u * U
                    gates, d_r = G[u, t, b], acc[r, q * U:(q + 1) * U]     # r | z | n | q
                    dy_r, h_r = dy[t_own, b, j0:j0 + U], hs[t, b, j0:j0 + U]
                    dhb_r = dhb[b, j0:j0 + U]
                    if t == L - 1:                       # dh_n enters at the last valid step
                        _copy_row(dh_n[b, j0:j0 + U], out[0])
                    else:                                # (5): z_{t+1} dL/dh_{t+1}
                        z_next = G[u, t + 1, b, U:2 * U]
                        for j in range(U):
                            out[0, j] = z_next[j] * dhb_r[j]
                    for j in range(U):
                        dh_t = d_r[j] + dy_r[j] + out[0, j]
                        rg, z, n, qv = gates[j], gates[U + j], gates[2 * U + j], gates[3 * U + j]
                        dan = dh_t * (one - z) * (one - n * n)                   # (5), (4)
                        out[0, j] = dan * rg                                     # (4), (3)
                        out[1, j] = dan * qv * rg * (one - rg)                   # (4), (1)
                        out[2, j] = dh_t * (h_r[j] - n) * z * (one - z)          # (5), (2)
                        out[3, j] = dan
                        d_r[j] = dh_t
                    dz = dG[u, t % ring, b]
                    for g4 in range(4):
                        _copy_row(out[g4], dz[g4 * U:(g4 + 1) * U])
                    n = min(U, H - j0)                   # (H = 0 when dG_mat is empty)
                    for g4 in range(4 if n > 0 else 0):  # (rows as views)
                        _copy_row(out[g4, :n], dG_mat[t, b, g4 * H + j0:g4 * H + j0 + n])
                _copy_row(acc[r], dhb[b, c0:c0 + V])


@njit(cache=True, parallel=True)
def _backward_core(dG, dh, dhb, dy, dh_n, W_b, G, hs, lengths, reverse,
                   x, h, W_ig, dW_ih_T, dW_hh_T, dx, db, n_workers, sync, claims, by_rows,
                   dG_mat):
    """The whole backward pass by a team: the steps backwards (dh ends as dh0), by rows or by
    units as ``lstm_tiled``'s (``by_rows``), then the weight gradients (``lstm_tiled``'s); or,
    with a ``dG_mat`` (not empty), the steps also write their dG into it, and BLAS does the
    weight gradients after (``_grads_by_blas``)."""
    T, Bp = G.shape[1], dG.shape[2]
    n_rg = -(-Bp // RG)
    n_items = W_b.shape[0] * n_rg
    for w in prange(n_workers):
        fp = flush_subnormals()                          # this worker: FTZ, DAZ (_common)
        if by_rows:                                      # rows of its own, no barrier per step
            m0, m1 = _rows_of(w, n_workers, Bp)
            for s in range(T, -1, -1):
                for v in range(W_b.shape[0]):
                    _backward_tile(s, v, m0, m1, dG, dh, dhb, dy, dh_n, W_b, G, hs, lengths,
                                   reverse, dG_mat)
            barrier(sync, n_workers)                     # all of dG is written
        else:                                            # tiles of units, a barrier per step
            first, last = w * n_items // n_workers, (w + 1) * n_items // n_workers
            for s in range(T, -1, -1):
                for item in range(first, last):
                    v, m0 = item // n_rg, (item % n_rg) * RG
                    _backward_tile(s, v, m0, min(m0 + RG, Bp), dG, dh, dhb, dy, dh_n, W_b, G,
                                   hs, lengths, reverse, dG_mat)
                barrier(sync, (T + 1 - s) * n_workers)
        if dG_mat.size == 0:
            _weight_grads(w, n_workers, dG, x, h, W_ig, dW_ih_T, dW_hh_T, dx, db, GH, U, claims)
        restore_fp(fp)


# BLAS, not the team, does the weight-gradient products (``_grads_by_blas``) as for the LSTM
# (``lstm_tiled.BLAS_GRADS_MIN_H``), from H = 512 and 2^32 multiply-adds in them
# (T Bp 3H (H + 2I)), on AVX-512 CPUs. Measured on a 2-core AMD EPYC Zen 4 on 2026-12-04,
# fwd+bwd, team / BLAS ms, medians of 9 alternated rounds in one process: (100, 64, 512, 512)
# 412 / 359 and 394 / 345 (backward 297 / 247 and 286 / 241), (50, 128, 512, 512) 397 / 364,
# (100, 32, 512, 512) 199 / 183, (30, 64, 512, 1024) 360 / 321, level at (32, 64, 512, 512)
# 133 / 132 and (40, 64, 512, 768) 291 / 285; at H = 384 mixed, (64, 128, 512, 384) 311 / 291
# but (100, 64, 256, 384) 171 / 176, and at H = 256 the team's: (50, 256, 256, 256) 205 / 209.
# The BLAS path keeps dG_mat (T, Bp, 4H) where the team's keeps dG for every step (52 MB each
# at (100, 64, 512, 512)); the products read its windows where they lie (``dot_into_views``).
# A first version wrote dGh and dGi into two (T, Bp, 3H) matrices (79 MB) and ran as fast.
# (``kernels/_auto.py``: with it the tiled GRU beats the serial one at these shapes.)
BLAS_GRADS_MIN_H = 512 if VECTOR == 16 else None
BLAS_GRADS_FROM = 1 << 32


def _blas_grads(T, Bp, I, H):
    """Whether ``backward`` leaves the weight gradients to BLAS (the bounds above)."""
    return (BLAS_GRADS_MIN_H is not None and H >= BLAS_GRADS_MIN_H
            and T * Bp * 3 * H * (H + 2 * I) >= BLAS_GRADS_FROM)


@njit(cache=True, error_model="numpy")
def _grads_by_blas(dG_mat, x, h, W_ih, dW_ih, dW_hh, db, dx):
    """``_weight_grads``' sums over all steps by BLAS, as ``gru.py``'s backward, from dG_mat
    (T Bp, 4H) = dq | dar | daz | dan: its columns H ... 4H-1 are dGi (r | z | n), and dGh is
    dar | daz | dq:

        dW_ih = dGi^T X  (3H, Ip)    dW_hh = dGh^T H_prev  (3H, Hp)    dx = dGi W_ih  (T Bp, I)

    and db (4H) = the column sums of dG_mat. Each product reads its columns of dG_mat where they
    lie (``dot_into_views``: no copy); dW_hh's r and z rows and its n rows are two products.
    x (T Bp, Ip), h (T Bp, Hp): the padded inputs, so dW_ih and dW_hh have Ip and Hp columns,
    of which the first I and H are the gradients."""
    fp = flush_subnormals()                 # subnormals read and written as 0 (_common)
    H = dG_mat.shape[1] // 4
    column_sums(dG_mat, db)
    dGi = dG_mat[:, H:]
    dot_into_views(dGi.T, x, dW_ih)
    dot_into_views(dG_mat[:, H:3 * H].T, h, dW_hh[:2 * H])       # r, z
    dot_into_views(dG_mat[:, :H].T, h, dW_hh[2 * H:])            # n, from dq
    dot_into_views(dGi, W_ih, dx)
    restore_fp(fp)                          # (this thread as it was)


def backward(dy, dh_n, cache):
    """``gru.gru_backward`` on checked arguments, for a cache from ``forward``.

    dy: (T, B, H)   dh_n: (B, H)   (float32, C-contiguous)
    returns dx_s (T, B, I) in step order, dW_ih, dW_hh, db_ih, db_hh, dh0.
    """
    _, x_p, W_ih, W_hh, lengths, lengths_p, reverse, hs, G = cache
    T, Bp, Ip = x_p.shape
    B, I, H = lengths.shape[0], W_ih.shape[1], W_hh.shape[1]
    Hp = hs.shape[2]
    Ip64 = _round_up(Ip, 64)
    by_blas = _blas_grads(T, Bp, I, H)
    dG = empty((Hp // U, 2 if by_blas else T, Bp, 4 * U))   # tile u's in dG[u]; with BLAS a
    dh = empty((Bp, Hp))                                    # ring of two steps
    if by_blas:                                  # the team skips them: placeholders, same types
        wg = (x_p.reshape(T * Bp, Ip), hs[:T].reshape(T * Bp, Hp), np.zeros((0, 0, 0), np.float32),
              *(np.zeros((0, 0), np.float32) for _ in range(3)), np.zeros(0, np.float32))
        dG_mat = empty((T, Bp, 4 * H), np.float32)
    else:
        wg = _weight_grad_args(x_p, hs, _pack_rows(W_ih, H, Hp, Ip64, _WIN, GH))
        dG_mat = np.zeros((0, 0, 0), np.float32)
    n_workers = team_size((Hp // V) * -(-Bp // RG))
    with one_team():                             # (workqueue: one at a time)
        _backward_core(dG, dh, zeros((Bp, Hp)), _padded(dy, (T, Bp, Hp)),
                       _padded(dh_n, (Bp, Hp)), _pack_rows(W_hh, H, Hp, Hp, _DGH, GH), G, hs,
                       lengths_p, int(reverse), *wg, n_workers, np.zeros(1, np.int64),
                       np.zeros((2, n_workers), np.int64), _backward_rows(Bp, n_workers),
                       dG_mat)
    if by_blas:
        dW_ih, dW_hh = empty((3 * H, Ip), np.float32), empty((3 * H, Hp), np.float32)
        db, dx = empty(4 * H, np.float32), empty((T * Bp, I), np.float32)
        _grads_by_blas(dG_mat.reshape(T * Bp, 4 * H), wg[0], wg[1], W_ih, dW_ih, dW_hh, db, dx)
        db_ih = db[H:].copy()                               # r | z | n (dan)
        db_hh = np.concatenate((db[H:3 * H], db[:H]))       # r | z | n (dq)
        dW_ih = dW_ih if Ip == I else np.ascontiguousarray(dW_ih[:, :I])
        dW_hh = dW_hh if Hp == H else np.ascontiguousarray(dW_hh[:, :H])
        dx_s = dx.reshape(T, Bp, I)[:, :B]
        return np.ascontiguousarray(dx_s), dW_ih, dW_hh, db_ih, db_hh, dh[:B, :H].copy()
    # back from gate tiles to PyTorch's rows: dW in 48-wide windows, db in all 64 columns
    dW_ih_T, dW_hh_T, dx, db = wg[3:]
    dW_ih, dW_hh = empty((3 * H, I), np.float32), empty((3 * H, H), np.float32)
    db_ih, db_hh = empty((3 * H, 1), np.float32), empty((3 * H, 1), np.float32)
    _unpack(dW_ih_T, H, I, _WIN, GH, dW_ih)
    _unpack(dW_hh_T, H, H, _DGH, GH, dW_hh)
    _unpack_grad(db.reshape(1, 4 * Hp), H, 1, _DGI, 4 * U, db_ih, 0, 1)
    _unpack_grad(db.reshape(1, 4 * Hp), H, 1, _DGH, 4 * U, db_hh, 0, 1)
    dx_s = dx.reshape(T, Bp, Ip64)[:, :B, :I]
    return (np.ascontiguousarray(dx_s), dW_ih, dW_hh, db_ih.reshape(3 * H),
            db_hh.reshape(3 * H), dh[:B, :H].copy())
