"""The tanh RNN organized like ``lstm_tiled.py``: unit tiles, fused steps, one team of threads
(float32).

Read ``rnn.py`` first (the cell, equations (1)-(3), and its BPTT) and ``lstm_tiled.py`` (why tiles
and a team, the register tile, the layouts); this file only says what differs for the RNN.
``rnn.rnn_forward(path="auto")`` takes it where ``kernels/_auto.py`` says it is faster.

Tiles. The RNN has one gate, so a tile is simply 64 consecutive hidden units: no gate tile
order, and the packed weights are ``_gemm.pack``'s plain tiles of 64 columns (zero-padded to
whole tiles, Hp = H rounded up to 64, Ip = I to 4, Bp = B to 4, as in ``lstm_tiled``):

    W_f  (Hp/64, Hp, 64)   W_f[u, k, l] = W_hh[64u + l, k]    forward: h_{s-1} W_hh^T
    W_i  (Hp/64, Ip, 64)   W_i[u, k, l] = W_ih[64u + l, k]    input part: x W_ih^T
    W_b  (Hp/64, Hp, 64)   W_b[v, k, l] = W_hh[k, 64v + l]    backward: da_s W_hh
    W_ig (Ip'/64, Hp, 64)  W_ig[c, k, l] = W_ih[k, 64c + l]   dx = dA W_ih  (Ip' = Ip to 64)

    forward tile (u, rows):  acc (4, 64) = G[u, s, rows] + h_{s-1}[rows] W_f[u]      (1)
                             h_s = tanh(acc)                                          (2)
    backward tile (v, rows): acc (4, 64) = da_{s+1}[rows] W_b[v]   dL/dh_s from step s+1
                             da_s = (acc + dy_s (+ dh_n)) (1 - h_s^2)                 (2)

G (Hp/64, T, Bp, 64) holds b + x W_ih^T (``lstm_tiled._input_part``), and dA (Hp/64, T, Bp,
64) the backward's da, tile u's as one contiguous (T Bp, 64) block: the operands of
``lstm_tiled._weight_grads``, which computes dW_ih^T, dW_hh^T, dx and db here as there.
Backward by rows on AVX-512 CPUs, by units elsewhere (``lstm_tiled._backward_rows``).

Why. The serial kernel (``rnn.py``) runs each step's product on BLAS or one core and the
tanh pass on one core; the tiles put both cores on every step with the activation fused into
the product's registers. Measured on the 2-core Xeon of ``benchmarks/results/cpu.md`` (forward,
medians of 7 alternated rounds, tiled / serial / PyTorch ms): (32, 16, 64, 128) 0.198 / 0.291 /
0.536, (64, 32, 128, 256) 1.97 / 3.09 / 3.43, (100, 64, 512, 512) 24.9 / 36.0 / 31.4; at (8, 8,
2, 100) the serial kernel stays faster (0.035 against 0.062): the team's start does not pay.

Caching: the compiled cores here include ``lstm_tiled``'s, ``_gemm``'s, ``_team``'s and
``_common``'s functions; an edit of any of them makes every cached kernel stale
(``_cache_stamp``).
"""

import numpy as np
from numba import njit, prange

from ._common import copy_row as _copy_row, flush_subnormals, restore_fp, tanh
from ._gemm import _prefer_512_bit, mac, pack
from ._workspace import empty
from ._team import barrier, one_team, share, team_size
from ._auto import uses_tiled
from .lstm_tiled import (KC_STEP, R, RG, SLABS, V, _backward_rows, _input_part, _padded,
                         _round_up, _rows_of, _unpack, _weight_grad_args, _weight_grads)

__all__ = ["use_tiled", "forward", "backward"]

Z = 64                    # hidden units per tile (one gate: the tile is 64 units wide)
_ONE_GATE = np.array([0], np.int64)      # ``lstm_tiled._unpack``'s block order: the identity


def use_tiled(dtype, T, B, I, H):
    """Whether ``rnn.rnn_forward(path="auto")`` runs this file's kernels (``kernels._auto``)."""
    return uses_tiled(1, dtype, T, B, I, H)


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _forward_tile(s, u, m0, m1, hs, G, y, W_f, lengths, reverse):
    """Step s for rows m0 ... m1-1 (a multiple of R) and units 64u ... 64u+63: (1)-(3).

    ``mac`` adds h_{s-1} W_f[u] to 4 rows of G (the input part + bias) k-chunk by k-chunk, as
    ``lstm_tiled._forward_tile`` does; after the last chunk tanh gives h_s, written to hs (what
    the backward reads: tanh' = 1 - h^2) and to y at its own time."""
    _prefer_512_bit()
    Hp = hs.shape[2]
    G_s = G[u, s]                                        # (Bp, 64): this tile's a, in place
    j0 = u * Z                                           # its first unit
    W, A = W_f[u], hs[s]                                 # (Hp, 64), (Bp, Hp): h_{s-1}
    for k0 in range(0, Hp, KC_STEP):
        W_c = W[k0:k0 + KC_STEP]                         # views indexed from 0: no negative-
        for m in range(m0, m1, R):                       # index checks in the inner loop
            acc = G_s[m:m + R]
            mac(acc, A[m:m + R, k0:k0 + KC_STEP], W_c, R, Z)   # (1): acc += h_{s-1} W_f[u]
            if k0 + KC_STEP < Hp:                        # more chunks to come
                continue
            for r in range(R):
                b = m + r
                L = lengths[b]
                h_new = hs[s + 1, b, j0:j0 + Z]
                if s >= L:                               # (3): padding, the state is frozen
                    _copy_row(hs[s, b, j0:j0 + Z], h_new)
                    y[s, b, j0:j0 + Z] = 0               # (the output at time s, either way)
                    continue
                for j in range(Z):
                    h_new[j] = tanh(acc[r, j])           # (2)
                _copy_row(h_new, y[L - 1 - s if reverse else s, b, j0:j0 + Z])


@njit(cache=True, parallel=True)
def _forward_core(y, hs, G, x, W_i, bias, W_f, lengths, reverse, n_workers, sync, balance):
    """The whole forward pass by a team (``lstm_tiled._forward_core``'s structure): the input
    part for every step (claimed items), then the T steps with a barrier after each."""
    n_u, T, Bp = G.shape[0], G.shape[1], G.shape[2]
    n_rg = -(-Bp // RG)
    n_items = n_u * n_rg                                 # unit-major: a worker keeps its units
    for w in prange(n_workers):
        fp = flush_subnormals()                          # this worker: FTZ, DAZ (_common)
        balance[1, w] = _input_part(w, n_workers, x, W_i, bias, G, balance[0], Z)   # (1)
        barrier(sync, n_workers)                         # G = b + x W_ih^T for all steps
        first, last = share(balance[1], w, n_items)
        for s in range(T):
            for item in range(first, last):
                u, m0 = item // n_rg, (item % n_rg) * RG
                _forward_tile(s, u, m0, min(m0 + RG, Bp), hs, G, y, W_f, lengths, reverse)
            barrier(sync, (s + 2) * n_workers)           # all of h_s is written
        restore_fp(fp)


def forward(x_s, W_ih, W_hh, b, h0, lengths, reverse):
    """``rnn.rnn_forward`` on checked arguments (float32; x_s already in step order).

    x_s: (T, B, I)   W_ih: (H, I)   W_hh: (H, H)   b: (H,)   h0: (B, H)   lengths: (B,)
    returns y (T, B, H), h_n (B, H), cache (for ``backward``).
    """
    T, B, I = x_s.shape
    H = W_hh.shape[1]
    Bp, Hp, Ip = _round_up(B, R), _round_up(H, V), _round_up(I, R)
    n_u = Hp // Z

    lengths_p = np.zeros(Bp, np.int64)                   # padding rows: length 0, always frozen
    lengths_p[:B] = lengths
    hs = empty((T + 1, Bp, Hp))
    hs[0] = _padded(h0, (Bp, Hp))
    y = empty((T, Bp, Hp))                       # every valid row is written: (3) zeros
    G = empty((n_u, T, Bp, Z))                   # tile u's a = b + x W_ih^T (+ h W_hh^T): G[u]
    W_i = pack(_padded(W_ih, (Hp, Ip)), transposed=True)           # (n_u, Ip, 64)
    W_f = pack(_padded(W_hh, (Hp, Hp)), transposed=True)           # (n_u, Hp, 64)
    bias = _padded(b, (Hp,)).reshape(n_u, Z)
    x_p = _padded(x_s, (T, Bp, Ip))                      # Ip: rows of dW_ih^T in backward
    n_workers = team_size(n_u * -(-Bp // RG))
    with one_team():                             # (workqueue: one at a time)
        _forward_core(y, hs, G, x_p, W_i, bias, W_f, lengths_p, int(reverse), n_workers,
                      np.zeros(1, np.int64), np.zeros((2, n_workers), np.int64))

    cache = ("tiled", x_p, W_ih, W_hh, lengths, lengths_p, reverse, hs)
    y_out = y[:, :B, :H] if (Bp, Hp) != (B, H) else y
    return np.ascontiguousarray(y_out), hs[T, :B, :H].copy(), cache


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _backward_tile(s, v, m0, m1, dA, dh, dy, dh_n, W_b, hs, lengths, reverse):
    """Rows m0 ... m1-1, units 64v ... 64v+63: dL/dh_{s-1} = da_s W_b[v] (nothing when s = T),
    then, in registers, the derivative (2) of step s-1 (none when s = 0).

    The product runs over da_s one tile (64 columns, ``dA[a, s]``) at a time, SLABS tiles per
    k-chunk; dh: (Bp, Hp) holds the partial sums between chunks and ends holding dL/dh_{s-1}
    (product part), which after the last call (s = 0) is dh0."""
    _prefer_512_bit()
    one, zero = np.float32(1), np.float32(0)             # (a bare 0 or 1 would make float64)
    n_u, T = dA.shape[0], dA.shape[1]
    n_a = n_u if s < T else 1                            # tiles of da_s to sum over
    c0 = v * Z
    for a0 in range(0, n_a, SLABS):
        a1 = min(a0 + SLABS, n_a)
        for m in range(m0, m1, R):
            acc = dh[m:m + R, c0:c0 + Z]                 # mac keeps it in registers
            for r in range(R):
                if a0 == 0:
                    for j in range(Z):
                        acc[r, j] = 0
            for a in range(a0, a1 if s < T else a0):     # (1): acc += da_s[rows] W_hh
                mac(acc, dA[a, s, m:m + R], W_b[v, a * Z:(a + 1) * Z], R, Z)
            if a1 < n_a or s == 0:                       # more tiles to come, or no step left
                continue
            t = s - 1                                    # the step whose derivative we take
            for r in range(R):
                b = m + r
                L = lengths[b]
                da = dA[v, t, b]                         # (64,) written here
                if t >= L:                               # (3): padding takes no gradient
                    for j in range(Z):
                        da[j] = 0
                    continue
                t_own = L - 1 - t if reverse else t
                from_n = one if t == L - 1 else zero     # dh_n enters at the last valid step
                h, dy_b, dh_n_b = hs[t + 1, b, c0:c0 + Z], dy[t_own, b, c0:c0 + Z], \
                    dh_n[b, c0:c0 + Z]
                acc_b = dh[b, c0:c0 + Z]                 # acc[r] as a row of dh (lstm_tiled:
                for j in range(Z):                       # "Rows as views")
                    dh_t = acc_b[j] + dy_b[j] + from_n * dh_n_b[j]
                    da[j] = dh_t * (one - h[j] * h[j])   # (2): tanh' = 1 - tanh^2


@njit(cache=True, parallel=True)
def _backward_core(dA, dh, dy, dh_n, W_b, hs, lengths, reverse,
                   x, h, W_ig, dW_ih_T, dW_hh_T, dx, db, n_workers, sync, claims, by_rows):
    """The whole backward pass by a team: the steps backwards (dh ends as dh0), by rows or by
    units as ``lstm_tiled``'s (``by_rows``), then the weight gradients (``lstm_tiled``'s)."""
    T, Bp = dA.shape[1], dA.shape[2]
    n_rg = -(-Bp // RG)
    n_items = W_b.shape[0] * n_rg
    for w in prange(n_workers):
        fp = flush_subnormals()                          # this worker: FTZ, DAZ (_common)
        if by_rows:                                      # rows of its own, no barrier per step
            m0, m1 = _rows_of(w, n_workers, Bp)
            for s in range(T, -1, -1):
                for v in range(W_b.shape[0]):
                    _backward_tile(s, v, m0, m1, dA, dh, dy, dh_n, W_b, hs, lengths, reverse)
            barrier(sync, n_workers)                     # all of dA is written
        else:                                            # tiles of units, a barrier per step
            first, last = w * n_items // n_workers, (w + 1) * n_items // n_workers
            for s in range(T, -1, -1):
                for item in range(first, last):
                    v, m0 = item // n_rg, (item % n_rg) * RG
                    _backward_tile(s, v, m0, min(m0 + RG, Bp), dA, dh, dy, dh_n, W_b, hs,
                                   lengths, reverse)
                barrier(sync, (T + 1 - s) * n_workers)    # all of da_{s-1} is written
        _weight_grads(w, n_workers, dA, x, h, W_ig, dW_ih_T, dW_hh_T, dx, db, Z, 0, claims)
        restore_fp(fp)


def backward(dy, dh_n, cache):
    """``rnn.rnn_backward`` on checked arguments, for a cache from ``forward``.

    dy: (T, B, H)   dh_n: (B, H)   (float32, C-contiguous)
    returns dx_s (T, B, I) in step order, dW_ih, dW_hh, db, dh0.
    """
    _, x_p, W_ih, W_hh, lengths, lengths_p, reverse, hs = cache
    T, Bp, Ip = x_p.shape
    B, I, H = lengths.shape[0], W_ih.shape[1], W_hh.shape[1]
    Hp = hs.shape[2]
    Ip64 = _round_up(Ip, 64)
    dA = empty((Hp // Z, T, Bp, Z))              # dL/da, tile u's in dA[u]
    dh = empty((Bp, Hp))                         # dL/dh of each step; ends as dh0
    wg = _weight_grad_args(x_p, hs, pack(_padded(W_ih, (Hp, Ip64))))
    n_workers = team_size((Hp // V) * -(-Bp // RG))
    with one_team():                             # (workqueue: one at a time)
        _backward_core(dA, dh, _padded(dy, (T, Bp, Hp)), _padded(dh_n, (Bp, Hp)),
                       pack(_padded(W_hh, (Hp, Hp))), hs, lengths_p, int(reverse), *wg,
                       n_workers, np.zeros(1, np.int64), np.zeros((2, n_workers), np.int64),
                       _backward_rows(Bp, n_workers))
    dW_ih_T, dW_hh_T, dx, db = wg[3:]            # transposed: back to PyTorch's (H, .) rows
    dW_ih, dW_hh = empty((H, I), np.float32), empty((H, H), np.float32)
    _unpack(dW_ih_T, H, I, _ONE_GATE, 16, dW_ih)
    _unpack(dW_hh_T, H, H, _ONE_GATE, 16, dW_hh)
    dx_s = dx.reshape(T, Bp, Ip64)[:, :B, :I]
    return np.ascontiguousarray(dx_s), dW_ih, dW_hh, db[:H].copy(), dh[:B, :H].copy()
