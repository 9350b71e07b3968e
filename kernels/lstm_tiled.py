"""A faster float32 LSTM for mid-sized shapes: unit tiles, fused steps, one team of threads.

``kernels.lstm`` is the LSTM to read first (it derives every equation used here). This file
computes the same function and gradients with the work organized differently, so that both
cores of a small machine share every step. ``lstm.lstm_forward`` picks it by itself
(``path="auto"``, see ``kernels/_auto.py``) where it measured faster; ``path="tiled"`` forces it.
Shape key as in ``lstm.py``: T steps, B batch, I inputs, H hidden units; and here

    R = 4    rows (sequences) per register tile       U = 16   hidden units per gate tile
    V = 64   hidden units per backward tile           Bp, Hp, Ip = B, H, I rounded up (below)

Why a second organization. In ``lstm.py`` each step is one product ``(B, H) @ (H, 4H)`` and
then one pass over the gates. That product is thin (B is small): BLAS cannot split it usefully
over two cores, and the gates make a second trip through memory. Here each step is a set of
independent *tiles*, and each tile does its share of the product AND the cell update at once,
while its numbers are still in registers:

    forward tile (u, rows): units 16u ... 16u+15, all four of their gates, 4 rows at a time:
        acc (4, 64)  = G[u, s, rows]                        input part + bias          (1)
        acc         += h_{s-1}[rows] @ W_f[u]               recurrent part             (1)
        i f g o      = activations of acc's four 16-wide blocks                        (2)
        c, h         = the cell update of those 16 units                          (3)-(5)

The 4 x 64 accumulator is 16 AVX-512 registers (``_gemm.mac``; with AVX2 it walks the tile 24
columns at a time, 12 of 16 registers); ``W_f[u]`` holds those 16 units' four gates
side by side (the *gate tile* order below), so one tile has everything its cell update needs.

    backward tile (v, rows): units 64v ... 64v+63, 4 rows at a time:
        acc (4, 64)  = dz_{s+1}[rows] @ W_b[v]              dL/dh_s from step s+1      (1)
        dh_s         = acc + dy_s (+ dh_n at a sequence's last step)
        dz_s, dc     = the cell's derivatives for those units                     (4)-(2)

The weight gradients are sums over all steps: three big products after the last step, plus
the column sums of dZ for db, as in ``lstm.py``. The team computes them with its register tile;
for large layers on AVX-512 CPUs (``BLAS_GRADS_MIN_H``), where OpenBLAS runs such products
faster, the steps also write dz in PyTorch's gate-major columns and BLAS does them after the
pass (``_grads_by_blas``).

Threads. Tiles of one step share nothing they write, so threads can split them without locks,
but step s needs all of h_{s-1}: there is a barrier after every step. One ``prange`` per step
(a fork and join of Numba's pool T times) was slow, and worse next to other thread pools (see
``kernels/_team.py``), so ONE team of workers runs a whole pass: worker w owns the same tiles at
every step (its units' slice of W_hh stays in its core's cache) and waits at ``_team.barrier``
between steps. The team does everything else too (the input product, the weight gradients),
so no BLAS threads wake up in the middle of a pass; those two phases have no barrier inside,
and their units are claimed (``_team.claim``) rather than assigned, so that a worker on a
slowed core does fewer, and the input product's counts size each worker's share of the steps'
tiles (``_team.share``). Only the weights' packing before a pass and the gradients' unpacking
after it run outside the team, each large one in a parallel region of its own (``_in_parts``).

On AVX-512 CPUs the backward's steps are shared out differently where the batch allows
(``_backward_rows``): sequences never interact, so worker w takes rows of its own (a range of
whole register tiles) and every backward tile of those rows at every step. All it reads of dz_s
is then what it wrote itself, and it needs no barrier until the weight gradients, which read
all of dZ; the price is that each worker reads all of W_b at every step instead of its half.
Backward alone, by units / by rows, medians of 21 alternated rounds on a 2-core AVX-512 Xeon:
(32, 16, 64, 128) 1.12 / 0.92 ms, (100, 8, 64, 256) 4.51 / 4.14, (64, 32, 128, 256) 11.7 /
11.1, (100, 64, 512, 512) 183 / 178; faster at all eight shapes tried (2-18 %). The forward by
rows was slower at five of seven (up to 9 %: it keeps its barriers by units). Not yet measured
on AVX2 CPUs: by units there.

Layouts. The *gate tile* order of the 4H gate rows puts i, f, g, o of units 16u ... 16u+15 side
by side in 64 columns: gate row g H + j (unit j = 16u + jj) sits at column 64u + 16g + jj.
Padding makes everything whole tiles: Bp = B rounded up to 4 (extra rows have length 0: frozen
at zero, never read), Hp = H rounded up to 64 and Ip = I to 4 (extra units and inputs have
zero weights and bias, so they stay exactly 0 and add nothing to any product). Internally:

    hs, cs   (T+1, Bp, Hp)       states before each step (hs[0], cs[0] = h0, c0)
    G        (Hp/16, T, Bp, 64)  per gate tile u: input part + bias, then the activated gates
    tanh_c   (T, Bp, Hp)         tanh(c_t), kept for the backward
    dZ       (Hp/16, T, Bp, 64)  per gate tile u: dL/dz, 0 on padding; dZ[u] is one contiguous
                                 (T Bp, 64) block, a ready operand of the weight-gradient products
                                 (when BLAS does those, ``_grads_by_blas``, a ring of 2 steps)
    W_f      (Hp/16, Hp, 64)     W_f[u, k, 16g + jj] = W_hh[g H + 16u + jj, k]     (W_i likewise)
    W_b      (Hp/64, 4Hp, 64)    W_b[v, 64u + 16g + jj, l] = W_hh[g H + 16u + jj, 64v + l]

Each of these from 64 KB up starts on a cache line (``_workspace.empty``; NumPy's own large
arrays start 16 bytes past one): with Hp a multiple of 64, every 64-float row is then whole
lines, and one worker's columns of hs, cs, tanh_c and y share no line with another's.

Rows as views. The cells' loops read and write 16 or 64 numbers of one row, and always through
a 1-D view of that row, ``cs[s, b, j0:j0 + U]``, indexed from 0. Numba types such a view as
contiguous, and an index from ``range`` is never negative, so LLVM turns the loop into whole
vector loads and stores. Indexing ``cs[s, b, j0 + j]`` in the loop instead keeps a negative
index's wraparound for every number (j0 is not known to be >= 0), and a row of a 2-D view
(``acc[r, j]`` of ``dh[m:m + R, c0:c0 + 64]``) has a stride known only at run time: with
AVX-512 both compiled to gathers and scatters, one number at a time (the tiled GRU's forward
took 1.12x as long; ``benchmarks/results/cpu_zen4.md``), with AVX2 to scalar code.
tests/test_kernels_tiled.py checks that no tiled core holds a gather or a scatter.

Every product runs on ``_gemm.mac``'s register tile, the k loop in chunks that stay in L1 while
all row blocks use them: the input part and the weight gradients through ``_gemm_tile``, the
steps' products in ``_forward_tile`` / ``_backward_tile`` with that loop written out (so that
the cell runs on the tile's rows after the last chunk); from ``BLAS_GRADS_MIN_H`` up, BLAS does
the weight gradients instead (``_grads_by_blas``). Results equal ``lstm.py``'s up to float32
rounding (sums in another order, fused multiply-adds), and do not depend on the number of
threads (a tile's sums are the same whoever computes it). tests/test_kernels_tiled.py checks
both passes of all three tiled cells against the float64 reference and PyTorch, padded, ragged
and reversed, with one thread or all; tests/test_kernels_lstm_tiled.py checks this file's own
parts (against ``lstm.py``, the BLAS weight gradients, the team and the packers).
"""

import numpy as np
from numba import carray, literally, njit, prange

from ._common import (column_sums, copy_row as _copy_row, dot_into, flush_subnormals, restore_fp,
                      sigmoid, tanh)
from ._gemm import VECTOR, _prefer_512_bit, _stack_tile, fmuladd, mac, transpose8
from ._workspace import empty, zeros
from ._auto import uses_tiled
from ._team import barrier, claim, one_team, share, team_size


__all__ = ["use_tiled", "forward", "backward"]

R = 4          # rows per register tile (``_gemm.mac``)
U = 16         # hidden units per forward (gate) tile: 4 gates x 16 = 64 columns
V = 64         # hidden units per backward tile
Z = 4 * U      # columns of z per gate tile (i, f, g, o of U units)
RG = 32        # rows per parallel work item (a multiple of R)
KC = 128       # k-chunk of the products in ``_gemm_tile``: a (128, 64) float32 slice of W, 32 KB
KC_STEP = 128 if VECTOR == 16 else 64
               # k-chunk of the forward's products (steps and input part; gru_tiled's steps
               # use KC, its input part this). With 64, a (64, 64)
               # slice of W_f[u] (16 KB) and the row group's (32, 64) slice of h_{s-1} (8 KB) fit
               # in a 32 KB L1 together (with 128 they did not: forward (64, 32, 128, 256) 1-6 %
               # faster with 64, AMD EPYC, AVX2). The AVX-512 Xeons have 48 KB, and there 128
               # halves the passes of the accumulators through memory: forward 2-4 % faster at
               # (64, 32, 128, 256), (100, 64, 256, 256) and (32, 64, 512, 512), level at
               # (32, 16, 64, 128) and (100, 64, 512, 512) (three processes each, 2026-12-03)
SLABS = 2      # gate tiles of dz per k-chunk in the backward step (2 x 16 KB of W_b)
IN_ROWS = 128  # rows of x per item of the input part (``_input_part``): 128 x Ip floats stay in
               # L2 (256 KB at Ip = 512) while a range of unit tiles' W_i passes over them
_FROM_OUT = np.zeros(0, np.float32)    # _gemm_tile's default ``init``: start from ``out``


def use_tiled(dtype, T, B, I, H):
    """Whether ``lstm.lstm_forward(path="auto")`` runs this file's kernels (``kernels._auto``)."""
    return uses_tiled(4, dtype, T, B, I, H)


def _round_up(n, m):
    return -(-n // m) * m


# ---------------------------------------------------------------------------------------------
# Packing the weights into tiles (once per call) and the gradients back
# ---------------------------------------------------------------------------------------------

# Gate tile order of the 4H gate rows: tile u holds i, f, g, o of units 16u ... 16u+15, so gate
# row g H + j (gate g, unit j = 16 u + jj) sits at position 64 u + 16 g + jj. The packers below
# are one pass of that index map each, for any number of gates G: ``blocks[g]`` is the block of
# 16 a tile gives gate g (the LSTM's ``_GATES``; the GRU's orders are in ``gru_tiled``).
# They write every entry, zero where the map puts nothing: their buffers are ``empty``'s.

_GATES = np.array([0, 1, 2, 3], np.int64)   # i, f, g, o -> blocks of a gate tile
PACK_K = 16                # columns of W per pass of ``_pack_cols_into``: one cache line a row


@njit(cache=True)
def _pack_cols_into(W, H, blocks, out, part, parts):
    """W (G H, K) -> out (Hp/16, Kp, width): out[u, k, 16 blocks[g] + jj] = W[g H + 16u + jj, k],
    every other entry of ``out`` (padding units, columns k >= K, unused blocks) zero. Tiles u
    of ``part`` of ``parts`` equal ranges only (``_in_parts``).

    A transpose, by blocks of 8 units by 8 columns of W (``_gemm.transpose8``), tile by tile,
    PACK_K columns of W at a time: the writes stay in PACK_K rows of ``out``, which are zeroed
    first, while they are in L1, only where the blocks do not cover them (zeroing all of
    ``out`` in a pass before took as long as a copy of it). Units short of a block of 8 and the
    last K % 8 columns go one number at a time. (Walking one row of W across all K columns
    wrote K rows of ``out`` 256 bytes apart, which share a few L1 sets: W_hh at H = 512 took
    2.35 ms, then 0.73 one number at a time in passes of PACK_K; with the blocks, on one core
    of an AMD EPYC Zen 4, W_hh at H = 256 (1 MB) 294 -> 78 us, at H = 512 2.29 -> 0.32 ms.)"""
    G, K, Kp, width = blocks.size, W.shape[1], out.shape[1], out.shape[2]
    K8 = K - K % 8
    n_t = out.shape[0]
    for u in range(part * n_t // parts, (part + 1) * n_t // parts):
        n = max(0, min(U, H - u * U))                    # real units in tile u
        n8 = n - n % 8                                   # of them in whole blocks of 8
        whole = n8 == U and G * U == width               # the blocks write every column
        for k0 in range(0, Kp, PACK_K):
            k1 = min(k0 + PACK_K, Kp)
            k8 = min(k1, K8)                             # rows k0 ... k8-1 by blocks
            for k in range(k0 if not whole else max(k0, k8), k1):
                for l in range(width):
                    out[u, k, l] = 0
            for g in range(G):
                col = blocks[g] * U
                r0 = g * H + u * U                       # W's row of unit 16u, gate g
                for j0 in range(0, n8, 8):
                    for kb in range(k0, k8, 8):
                        transpose8(W[r0 + j0:r0 + j0 + 8, kb:kb + 8],
                                   out[u, kb:kb + 8, col + j0:col + j0 + 8])
                for jj in range(n):                      # the rest, one number at a time
                    for k in range(k0 if jj >= n8 else max(k0, k8), min(k1, K)):
                        out[u, k, col + jj] = W[r0 + jj, k]


@njit(cache=True)
def _pack_rows_into(W, H, blocks, per_tile, out, part, parts):
    """W (G H, K) -> out (K'/64, Hp/16 per_tile, 64), rows in gate tile order, columns in tiles
    of 64: out[c, per_tile u + 16 blocks[g] + jj, l] = W[g H + 16u + jj, 64 c + l], every other
    entry zero. Row by row (``_copy_row``: vector moves), zeroing a tile's rows first only where
    the copies do not cover them (one core, AMD EPYC Zen 4, W_hh at H = 256 270 -> 46 us, at
    H = 512 3.8 -> 0.19 ms, against a zeroing pass over every tile and a copy one number at a
    time); tiles u of ``part`` of ``parts`` equal ranges only (``_in_parts``)."""
    K = W.shape[1]
    n_t = out.shape[1] // per_tile
    for c in range(out.shape[0]):
        k0, k1 = c * 64, min(c * 64 + 64, K)
        for u in range(part * n_t // parts, (part + 1) * n_t // parts):
            r0 = u * per_tile
            n = max(0, min(U, H - u * U))                # real units in tile u
            if k1 - k0 < 64 or n < U or blocks.size * U < per_tile:   # not all written below
                for r in range(r0, r0 + per_tile):
                    for l in range(64):
                        out[c, r, l] = 0
            for g in range(blocks.size):
                for jj in range(n):
                    _copy_row(W[g * H + u * U + jj, k0:k1],
                              out[c, r0 + blocks[g] * U + jj, :k1 - k0])


UNPACK_ROWS = 16           # rows of dW_T per pass of ``_unpack_grad``: each row of the output
                           # gets 16 numbers, one cache line (one number at a time, before the
                           # 8 x 8 blocks: (512, 2048) -> (2048, 512) 0.93 ms with 8, 0.74 with
                           # 16, 0.84 with 32)


@njit(cache=True)
def _unpack_grad(dW_T, H, K, blocks, per_tile, out, part, parts):
    """dW_T (K', Hp/16 per_tile), columns in gate tiles of per_tile -> out (G H, K) in PyTorch's
    row order, G = blocks.size: gate g of unit j = 16u + jj from column per_tile u +
    16 blocks[g] + jj (the LSTM: blocks 0 1 2 3, 64 per tile; the GRU: ``gru_tiled``).

    A transpose, UNPACK_ROWS rows of dW_T at a time, every column of them, so that each cache
    line read is used whole (walking one column down all K rows read rows 4 KB apart at
    Hp = 256, which share an L1 set, and took 4x as long: (256, 1024) -> (1024, 256) 1.1 ms
    against 0.28 ms), by blocks of 8 x 8 (``_gemm.transpose8``: one core, AMD EPYC Zen 4, dW_hh
    at H = 256 530 -> 124 us, at H = 512 2.28 -> 0.53 ms); units short of a block of 8 and the
    last K % 8 rows one number at a time. Passes of ``part`` of ``parts`` equal ranges only
    (``_in_parts``)."""
    n_k = -(-K // UNPACK_ROWS)
    n_t = -(-H // U)
    K8 = K - K % 8
    for p in range(part * n_k // parts, (part + 1) * n_k // parts):
        k0 = p * UNPACK_ROWS
        k1 = min(k0 + UNPACK_ROWS, K)
        k8 = min(k1, K8)                                 # rows k0 ... k8-1 by blocks
        for g in range(blocks.size):
            for u in range(n_t):
                n = min(U, H - u * U)                    # units in tile u
                n8 = n - n % 8
                col = u * per_tile + blocks[g] * U       # dW_T's column of unit 16u, gate g
                r0 = g * H + u * U                       # out's row of it
                for j0 in range(0, n8, 8):
                    for kb in range(k0, k8, 8):
                        transpose8(dW_T[kb:kb + 8, col + j0:col + j0 + 8],
                                   out[r0 + j0:r0 + j0 + 8, kb:kb + 8])
                for jj in range(n):                      # the rest, one number at a time
                    for k in range(k0 if jj >= n8 else k8, k1):
                        out[r0 + jj, k] = dW_T[k, col + jj]


PARTS_FROM = 1 << 15        # numbers per part of an (un)packing: two parts (workers) from 2^16


@njit(cache=True, parallel=True)
def _pack_cols_parts(W, H, blocks, out, parts):
    for p in prange(parts):
        _pack_cols_into(W, H, blocks, out, p, parts)


@njit(cache=True, parallel=True)
def _pack_rows_parts(W, H, blocks, per_tile, out, parts):
    for p in prange(parts):
        _pack_rows_into(W, H, blocks, per_tile, out, p, parts)


@njit(cache=True, parallel=True)
def _unpack_grad_parts(dW_T, H, K, blocks, per_tile, out, parts):
    for p in prange(parts):
        _unpack_grad(dW_T, H, K, blocks, per_tile, out, p, parts)


def _in_parts(size):
    """How many parts a (un)packing of ``size`` numbers is split into, one per worker of the
    team: one per PARTS_FROM numbers, at most the team's size, each part a parallel region's
    share; 1 means no region. (At (64, 32, 128, 256) the LSTM's six packings, one number at a
    time, took 0.61 ms on one core, a twenty-fifth of fwd+bwd. Since they transpose by blocks
    in registers (``_gemm.transpose8``), the parts no longer show: the LSTM's fwd+bwd one part
    / parts 1.01, 1.01 and 0.99 at (64, 32, 128, 256), (32, 16, 64, 128) and (100, 64, 512,
    512), 2-core AMD EPYC Zen 4.)"""
    return team_size(size // PARTS_FROM)


def _pack_cols(W, H, Hp, Kp, blocks=_GATES, width=Z):
    """(G H, K) -> (Hp/16, Kp, width): W^T in gate tiles (W_f, W_i; the bias with K = 1)."""
    out = empty((Hp // U, Kp, width))
    parts = _in_parts(out.size)
    if parts > 1:
        with one_team():
            _pack_cols_parts(W, H, blocks, out, parts)
    else:
        _pack_cols_into(W, H, blocks, out, 0, 1)
    return out


def _pack_rows(W, H, Hp, Kp, blocks=_GATES, per_tile=Z):
    """(G H, K) -> (Kp/64, Hp/16 per_tile, 64): W in backward tiles (W_b from W_hh, W_ig from
    W_ih)."""
    out = empty((Kp // 64, Hp // U * per_tile, 64))
    parts = _in_parts(out.size)
    if parts > 1:
        with one_team():
            _pack_rows_parts(W, H, blocks, per_tile, out, parts)
    else:
        _pack_rows_into(W, H, blocks, per_tile, out, 0, 1)
    return out


def _unpack(dW_T, H, K, blocks, per_tile, out):
    """``_unpack_grad`` into ``out`` (G H, K), on the team where it is large (``_in_parts``)."""
    parts = _in_parts(out.size)
    if parts > 1:
        with one_team():
            _unpack_grad_parts(dW_T, H, K, blocks, per_tile, out, parts)
    else:
        _unpack_grad(dW_T, H, K, blocks, per_tile, out, 0, 1)


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _gemm_tile(A, W, width, out, m0, m1, c0, kc=KC, init=_FROM_OUT):
    """``out[m0:m1, c0:c0+width] += A[m0:m1] @ W[:, :width]``: 4-row register tiles, k-chunks.

    A: (n, M, Ks), the (M, n Ks) left operand as n slabs side by side (a plain (M, K) matrix is
    one slab, ``A.reshape(1, M, K)``; dZ in unit tile layout is n_u slabs of 64 columns), any
    layout (read one number at a time)   W: (n Ks, N) rows contiguous   out: (M, N'), m1 - m0
    a multiple of R   width: 64 or 48, a compile-time constant (the register tile's columns).
    The k-chunk loop is outside the row loop, so each chunk of W's columns is read from L2
    once and then reused from L1 by every row block; the register tile is loaded from ``out``
    and stored back once per chunk, by ``mac`` itself (copying the rows through a tile on the
    stack instead cost 15-20 %: one core, a weight-gradient product 58 -> 70 GF/s).
    ``init`` (width,): start every row from it instead of from ``out`` (``out = init + A @ W``:
    a bias, without a pass to write it first).
    """
    literally(width)
    _prefer_512_bit()
    n, _, Ks = A.shape
    for a in range(n):
        for k0 in range(0, Ks, kc):
            W_c = W[a * Ks + k0:a * Ks + min(k0 + kc, Ks)]   # views indexed from 0: no
            for m in range(m0, m1, R):                     # negative-index checks inside
                acc = out[m:m + R, c0:c0 + width]          # mac keeps it in registers
                if init.size and a == 0 and k0 == 0:
                    for r in range(R):                     # (rows as views, not acc[r])
                        _copy_row(init, out[m + r, c0:c0 + width])
                mac(acc, A[a, m:m + R, k0:k0 + kc], W_c[:, :width], R, width)


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _forward_tile(s, u, m0, m1, hs, cs, G, tanh_c, y, W_f, lengths, reverse):
    """Step s for rows m0 ... m1-1 (a multiple of R) and units 16u ... 16u+15: equations (1)-(5).

    (1) in registers: ``mac`` loads 4 rows of G (the input part + bias), adds h_{s-1} W_f[u]
    to them k-chunk by k-chunk (each chunk of W_f[u], KC_STEP rows, is read from L2 once, then
    reused from L1 by every row block) and stores them back: ``_gemm_tile``'s loop, written out here
    so that after the last chunk the cell (2)-(5) runs on those rows while they are in L1. The
    activated gates replace z in G, for the backward. (One loop over all 64 entries with
    g = 2 sig(2z) - 1 had been tried: the three loops here were 1-5 % faster in 4 of 4 paired
    runs.)
    """
    _prefer_512_bit()
    Hp = hs.shape[2]
    G_s = G[u, s]                                        # (Bp, 64): this tile's z, then gates
    j0 = u * U                                           # its first unit
    W, A = W_f[u], hs[s]                                 # (Hp, 64), (Bp, Hp): h_{s-1}
    new = carray(_stack_tile(), (3, 4 * U))              # c_t, tanh(c_t), h_t of one row
    for k0 in range(0, Hp, KC_STEP):
        W_c = W[k0:k0 + KC_STEP]                         # views indexed from 0: no negative-
        for m in range(m0, m1, R):                       # index checks in the inner loop
            acc = G_s[m:m + R]                           # z of 4 rows, then their gates
            mac(acc, A[m:m + R, k0:k0 + KC_STEP], W_c, R, Z)   # (1): acc += h_{s-1} W_f[u]
            if k0 + KC_STEP < Hp:                        # more chunks to come
                continue
            for r in range(R):                           # the cell, row by row
                b = m + r
                L = lengths[b]
                if s >= L:                               # (5): padding, the state is frozen
                    _copy_row(hs[s, b, j0:j0 + U], hs[s + 1, b, j0:j0 + U])
                    _copy_row(cs[s, b, j0:j0 + U], cs[s + 1, b, j0:j0 + U])
                    y[s, b, j0:j0 + U] = 0               # (the output at time s, either way)
                    continue
                for l in range(2 * U):                   # (2): i, f
                    acc[r, l] = sigmoid(acc[r, l])
                for l in range(3 * U, 4 * U):            # o
                    acc[r, l] = sigmoid(acc[r, l])
                for l in range(2 * U, 3 * U):            # g
                    acc[r, l] = tanh(acc[r, l])          # (G keeps i | f | g | o: the backward's)
                c_prev = cs[s, b, j0:j0 + U]             # a row as a view (module docstring,
                for j in range(U):                       # "Rows as views")
                    # (3), f c_{t-1} + i g: fused one way whether compiled here or loaded
                    c = fmuladd(acc[r, U + j], c_prev[j], acc[r, j] * acc[r, 2 * U + j])
                    t = tanh(c)
                    new[0, j], new[1, j], new[2, j] = c, t, acc[r, 3 * U + j] * t   # (4)
                t_out = L - 1 - s if reverse else s      # where this step's output goes
                _copy_row(new[0, :U], cs[s + 1, b, j0:j0 + U])
                _copy_row(new[1, :U], tanh_c[s, b, j0:j0 + U])
                _copy_row(new[2, :U], hs[s + 1, b, j0:j0 + U])
                _copy_row(new[2, :U], y[t_out, b, j0:j0 + U])


@njit(cache=True, error_model="numpy")
def _input_part(w, n_workers, x, W_i, bias, G, taken, width):
    """Worker w's items of the input part of (1), every step at once: G[u] = b[u] + X W_i[u] for
    all unit tiles u (X: the T Bp rows of x, G[u] a contiguous (T Bp, 64) block, of which the
    first ``width`` columns are written: 48 for ``gru_tiled``, whose fourth block is not an
    input part). The unit tiles are split into n_workers equal ranges, and an item is one
    range's tiles on a panel of up to IN_ROWS rows of X: the panel stays in L2 while the range's
    W_i[u] pass over it in chunks of KC_STEP rows (16 or 32 KB, in L1 over the panel's row
    blocks). Items are claimed (``_team.claim``, ``taken``: (n_workers,) zeros), so worker w
    first does its own range's panels, mostly the tiles it will own in the steps; returns how
    many it did. (Items of one unit tile over all rows read all of X once per tile: the input
    part at (100, 64, 512, 512) took 1.23x as long; no longer at (64, 32, 128, 256), whose X is
    1 MB. Items of all tiles on a panel were faster still alone, 1.25x at (64, 32, 128, 256),
    but not in the whole forward: each worker then wrote G for the other's tiles.)"""
    literally(width)
    T, Bp, Ip = x.shape
    M = T * Bp                                           # a multiple of R, as Bp is
    X = x.reshape(1, M, Ip)
    n_u = G.shape[0]
    rows = min(IN_ROWS, -(-M // (8 * R)) * R)            # at least 8 panels where M allows
    n_p = -(-M // rows)
    done = 0
    item = claim(taken, w, n_workers, n_workers * n_p)
    while item >= 0:
        r, m0 = item // n_p, (item % n_p) * rows
        for u in range(r * n_u // n_workers, (r + 1) * n_u // n_workers):
            _gemm_tile(X, W_i[u], width, G[u].reshape(M, G.shape[3]), m0, min(m0 + rows, M), 0,
                       KC_STEP, bias[u, :width])
        done += 1
        item = claim(taken, w, n_workers, n_workers * n_p)
    return done


@njit(cache=True, parallel=True)
def _forward_core(y, hs, cs, G, tanh_c, x, W_i, bias, W_f, lengths, reverse, n_workers, sync,
                  balance):
    """The whole forward pass by a team of ``n_workers`` (``_team``): first the input part of
    (1) for every step, then the T steps with a barrier after each. The input part's items are
    claimed (``balance[0]``), and each worker's count (``balance[1]``) sets its share of the
    steps' items (``_team.share``): a worker on a slower core gets fewer. Worker w then owns the
    same tiles (units u, rows m0 ... m1-1) at every step, so their slices of W_hh stay in its
    core's cache and it reads mostly the G it wrote itself."""
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
                _forward_tile(s, u, m0, min(m0 + RG, Bp), hs, cs, G, tanh_c, y, W_f, lengths,
                              reverse)
            barrier(sync, (s + 2) * n_workers)           # all of h_s is written
        restore_fp(fp)


def forward(x_s, W_ih, W_hh, b, h0, c0, lengths, reverse):
    """``lstm.lstm_forward`` on checked arguments (float32; x_s already in step order).

    x_s: (T, B, I)   W_ih: (4H, I)   W_hh: (4H, H)   b: (4H,)   h0, c0: (B, H)   lengths: (B,)
    returns y (T, B, H), h_n (B, H), c_n (B, H), cache (for ``backward``).
    """
    T, B, I = x_s.shape
    H = W_hh.shape[1]
    Bp, Hp, Ip = _round_up(B, R), _round_up(H, V), _round_up(I, R)
    n_u = Hp // U

    lengths_p = np.zeros(Bp, np.int64)                   # padding rows: length 0, always frozen
    lengths_p[:B] = lengths
    hs = empty((T + 1, Bp, Hp))
    cs = empty((T + 1, Bp, Hp))
    hs[0], cs[0] = _padded(h0, (Bp, Hp)), _padded(c0, (Bp, Hp))
    y = empty((T, Bp, Hp))                       # every valid row is written: (5) zeros
    tanh_c = empty((T, Bp, Hp))
    G = empty((n_u, T, Bp, 4 * U))              # unit tile u's z / gates: G[u]
    W_i = _pack_cols(W_ih, H, Hp, Ip)                 # (n_u, Ip, 64)
    bias = _pack_cols(b.reshape(4 * H, 1), H, Hp, 1).reshape(n_u, 4 * U)
    x_p = _padded(x_s, (T, Bp, Ip))                      # Ip: rows of dW_ih^T in backward
    n_workers = team_size(n_u * -(-Bp // RG))
    with one_team():                             # (workqueue: one at a time)
        _forward_core(y, hs, cs, G, tanh_c, x_p, W_i, bias, _pack_cols(W_hh, H, Hp, Hp),
                      lengths_p, int(reverse), n_workers, np.zeros(1, np.int64),
                      np.zeros((2, n_workers), np.int64))

    cache = ("tiled", x_p, W_ih, W_hh, lengths, lengths_p, reverse, hs, cs, G, tanh_c)
    y_out = y[:, :B, :H] if (Bp, Hp) != (B, H) else y
    return np.ascontiguousarray(y_out), hs[T, :B, :H].copy(), cs[T, :B, :H].copy(), cache


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _backward_tile(s, v, m0, m1, dZ, dc, dh, dy, dh_n, W_b, G, tanh_c, cs, lengths, reverse,
                   dZ_mat):
    """Rows m0 ... m1-1, units 64v ... 64v+63: dL/dh_{s-1} = dz_s W_b[v] (nothing when s = T),
    then, in registers, the cell's derivatives of step s-1 (none when s = 0).

    The product runs over dz_s one gate tile (64 columns, ``dZ[a, s]``) at a time; dh: (Bp, Hp)
    holds the partial sums between them and ends holding dL/dh_{s-1}, which after the last call
    (s = 0) is dh0. ``dZ_mat`` (T, Bp, 4H), unless empty: dz once more, in PyTorch's gate-major
    columns, for ``_grads_by_blas``; then dZ need only hold the steps s and s-1, and may be
    a ring of two (step t in dZ[:, t % 2]).
    """
    _prefer_512_bit()
    one, zero = np.float32(1), np.float32(0)             # (a bare 0 or 1 would make float64)
    H = dZ_mat.shape[2] // 4                             # (0 when dZ_mat is empty)
    n_u, T, ring = dZ.shape[0], tanh_c.shape[0], dZ.shape[1]   # ring: T, or 2 (above)
    n_a = n_u if s < T else 1                            # gate tiles of dz_s to sum over
    c0 = v * V
    acc = carray(_stack_tile(), (R, V))                  # dL/dh_{s-1} of 4 rows x 64 units
    out = carray(_stack_tile(), (5, U))                  # one gate tile's dz (4 rows), dc
    n_q = V // U                                         # gate tiles per backward tile
    for a0 in range(0, n_a, SLABS):                      # SLABS gate tiles per k-chunk
        a1 = min(a0 + SLABS, n_a)
        for m in range(m0, m1, R):
            for r in range(R):
                if a0 > 0:
                    _copy_row(dh[m + r, c0:c0 + V], acc[r])
                else:
                    acc[r, :] = 0
            for a in range(a0, a1 if s < T else a0):     # (1): acc += dz_s[rows] W_hh
                W_c = W_b[v, a * 4 * U:(a + 1) * 4 * U]  # (64, 64)
                A_c = dZ[a, s % ring, m:m + R]           # (4, 64): gate tile a of dz_s
                mac(acc, A_c, W_c, R, V)
            for r in range(R):
                _copy_row(acc[r], dh[m + r, c0:c0 + V])
            if a1 < n_a or s == 0:                       # more tiles to come, or no step left
                continue
            t = s - 1                                    # the step whose derivatives we take
            for r in range(R):
                b = m + r
                L = lengths[b]
                if t >= L:                               # (5): padding takes no gradient
                    for q in range(n_q):
                        dZ[v * n_q + q, t % ring, b, :] = 0
                    for g4 in range(4 if c0 < H else 0):   # (as rows: see below)
                        dZ_mat[t, b, g4 * H + c0:g4 * H + min(c0 + V, H)] = 0
                    continue
                t_own = L - 1 - t if reverse else t
                from_n = one if t == L - 1 else zero     # dh_n enters at the last valid step
                for q in range(n_q):
                    u = v * n_q + q
                    j0, j1 = u * U, (u + 1) * U
                    gates = G[u, t, b]                   # (64,) i | f | g | o
                    tc_b, c_b, dc_b = tanh_c[t, b, j0:j1], cs[t, b, j0:j1], dc[b, j0:j1]
                    dy_b, dh_n_b = dy[t_own, b, j0:j1], dh_n[b, j0:j1]     # (16,) rows each
                    for j in range(U):
                        i, f, g, o = gates[j], gates[U + j], gates[2 * U + j], gates[3 * U + j]
                        tc = tc_b[j]
                        dh_t = acc[r, q * U + j] + dy_b[j] + from_n * dh_n_b[j]
                        dc_t = dc_b[j] + dh_t * o * (one - tc * tc)              # (4)
                        out[4, j] = dc_t * f                                     # (3): dc_{t-1}
                        out[0, j] = dc_t * g * i * (one - i)                     # (3), (2)
                        out[1, j] = dc_t * c_b[j] * f * (one - f)
                        out[2, j] = dc_t * i * (one - g * g)
                        out[3, j] = dh_t * tc * o * (one - o)                    # (4), (2)
                    _copy_row(out[4], dc_b)
                    dz = dZ[u, t % ring, b]
                    for g4 in range(4):
                        _copy_row(out[g4], dz[g4 * U:(g4 + 1) * U])
                    n = min(U, H - j0)                   # (H = 0 when dZ_mat is empty)
                    for g4 in range(4 if n > 0 else 0):  # (rows as views)
                        _copy_row(out[g4, :n], dZ_mat[t, b, g4 * H + j0:g4 * H + j0 + n])


# BLAS, not the team, does the weight-gradient products (``_grads_by_blas``) from H = 512 and
# 2^32 multiply-adds in them (T Bp 4H (H + 2I)), on AVX-512 CPUs (measured on a 2-core Xeon,
# 2026-12-02, backward alone, team / BLAS ms: (100, 64, 512, 512) 223-250 / 195-201, (50, 128,
# 512, 512) 226 / 198, (32, 64, 512, 512) 75 / 70, (100, 32, 256, 512) 82 / 85; the team was
# faster at H = 256: (100, 64, 256, 256) 53 / 62, (64, 32, 128, 256) 11.4 / 15.5). After the
# steps the team's register tile reaches ~280 GF/s there, OpenBLAS ~370, but BLAS's idle
# workers then spin (``_blas_env``) while the next team call wants both cores: a fixed ~1.7 ms
# that only large calls win back.
BLAS_GRADS_MIN_H = 512 if VECTOR == 16 else None
BLAS_GRADS_FROM = 1 << 32


def _blas_grads(T, Bp, I, H):
    """Whether ``backward`` leaves the weight gradients to BLAS (the bounds above)."""
    return (BLAS_GRADS_MIN_H is not None and H >= BLAS_GRADS_MIN_H
            and T * Bp * 4 * H * (H + 2 * I) >= BLAS_GRADS_FROM)


# The backward's steps by rows on AVX-512 CPUs, where it was measured (module docstring); on
# AVX2 ones (their L2 half the Xeons', each worker would stream all of W_b) not yet measured,
# so by units there as before. Tests set it either way and compare.
BACKWARD_BY_ROWS = VECTOR == 16


def _backward_rows(Bp, n_workers):
    """1 where the backward's steps go by rows (see the module docstring): a team of two or
    more and a register tile of rows for each worker; else 0 (by units)."""
    return int(BACKWARD_BY_ROWS and n_workers > 1 and Bp >= n_workers * R)


@njit(cache=True)
def _rows_of(w, n_workers, Bp):
    """Worker w's rows m0 ... m1-1 of Bp in the backward by rows: whole register tiles,
    as equal as they divide."""
    n_b = Bp // R
    return w * n_b // n_workers * R, (w + 1) * n_b // n_workers * R


DX_ROWS = 128              # rows of dx per work unit of ``_weight_grads`` (each unit reads all of
                           # W_ih: 64 rows had LSTM backward (100, 64, 512, 512) ~5 % slower)


@njit(cache=True, error_model="numpy")
def _weight_grads(w, n_workers, dZ, x, h, W_ig, dW_ih_T, dW_hh_T, dx, db, width, c_in,
                  claims):
    """Worker w's share of the sums over all steps, (1) differentiated:

        dW_hh^T = H_prev^T dZ   (Hp, 4Hp)      dW_ih^T = X^T dZ   (Ip, 4Hp)      db = sum of dZ
        dx      = dZ W_ih      (T Bp, Ip')     (W_ig = ``_pack_rows(W_ih)``; Ip' = Ip rounded up
                                                to whole 64-column tiles: the caller slices)

    Every entry of the outputs is written (each product's first k-chunk starts from zero), so
    they need not be zeroed first.

    x, h: (T Bp, Ip), (T Bp, Hp). dZ: (n_u, T, Bp, 64), so gate tile c of dZ is one contiguous
    (T Bp, 64) block, a ready-made right operand. The left operands X^T and H_prev^T are the
    transposed views (the register tile broadcasts A one number at a time, and four rows of
    A^T are four neighbours in one row of A: no transposed copies are made). The first three
    are computed gate tile by gate tile, dx DX_ROWS rows at a time: units that the workers
    ``_team.claim`` (``claims``: (2, n_workers) int64 zeros), so a worker slowed by its core
    hands its last units over. Each unit is computed whole by one worker, so the results do
    not depend on who does it.

    ``width``, ``c_in``: the columns of each gate tile that the products use, for the GRU
    (``gru_tiled``), whose hidden and input parts are two overlapping 48-wide windows of its
    64: dW_hh from columns 0 ... width-1, dW_ih and dx from c_in ... c_in+width-1 (the
    outputs then have width columns per tile; db keeps all 64). The LSTM: 64 and 0.
    """
    n_u, T, Bp = dZ.shape[0], dZ.shape[1], dZ.shape[2]
    TB = T * Bp
    dZ_rows = dZ.reshape(n_u, TB, 64)
    zero = np.zeros(64, np.float32)                      # each product's first chunk starts here
    c = claim(claims[0], w, n_workers, n_u)
    while c >= 0:
        dZ_c = dZ_rows[c]
        column_sums(dZ_c, db[c * 64:(c + 1) * 64])       # in float64 (a loop of 64 here,
                                                         # unrolled, had stayed scalar)
        _gemm_tile(h.T[np.newaxis], dZ_c, width, dW_hh_T, 0, h.shape[1], c * width, KC,
                   zero[:width])
        _gemm_tile(x.T[np.newaxis], dZ_c[:, c_in:], width, dW_ih_T, 0, x.shape[1], c * width,
                   KC, zero[:width])
        c = claim(claims[0], w, n_workers, n_u)
    n_units = -(-TB // DX_ROWS)
    unit = claim(claims[1], w, n_workers, n_units)
    while unit >= 0:                                     # (TB is a multiple of R)
        m0, m1 = unit * DX_ROWS, min((unit + 1) * DX_ROWS, TB)
        for i in range(W_ig.shape[0]):
            _gemm_tile(dZ_rows[:, :, c_in:c_in + width], W_ig[i], Z, dx, m0, m1, i * 64, KC,
                       zero)
        unit = claim(claims[1], w, n_workers, n_units)


@njit(cache=True, parallel=True)
def _backward_core(dZ, dc, dh, dy, dh_n, W_b, G, tanh_c, cs, lengths, reverse,
                   x, h, W_ig, dW_ih_T, dW_hh_T, dx, db, n_workers, sync, claims, dZ_mat,
                   by_rows):
    """The whole backward pass by a team of ``n_workers``: the T steps backwards (dc: dc_n in,
    dc0 out; dh ends as dh0), each worker on rows of its own where ``by_rows`` (1), else on
    units with a barrier after each step (0; see ``_backward_rows``), then the weight
    gradients; or, with a ``dZ_mat`` (not empty), the steps also write dz into it, and BLAS
    does the weight gradients after (``_grads_by_blas``)."""
    T, Bp = tanh_c.shape[0], dZ.shape[2]
    n_rg = -(-Bp // RG)
    n_items = W_b.shape[0] * n_rg
    for w in prange(n_workers):
        fp = flush_subnormals()                          # this worker: FTZ, DAZ (_common)
        if by_rows:                                      # rows of its own, no barrier per step
            m0, m1 = _rows_of(w, n_workers, Bp)
            for s in range(T, -1, -1):
                for v in range(W_b.shape[0]):
                    _backward_tile(s, v, m0, m1, dZ, dc, dh, dy, dh_n, W_b, G, tanh_c, cs,
                                   lengths, reverse, dZ_mat)
            barrier(sync, n_workers)                     # all of dZ is written
        else:                                            # tiles of units, a barrier per step
            first, last = w * n_items // n_workers, (w + 1) * n_items // n_workers
            for s in range(T, -1, -1):
                for item in range(first, last):
                    v, m0 = item // n_rg, (item % n_rg) * RG
                    _backward_tile(s, v, m0, min(m0 + RG, Bp), dZ, dc, dh, dy, dh_n, W_b, G,
                                   tanh_c, cs, lengths, reverse, dZ_mat)
                barrier(sync, (T + 1 - s) * n_workers)    # all of dz_{s-1} is written
        if dZ_mat.size == 0:
            _weight_grads(w, n_workers, dZ, x, h, W_ig, dW_ih_T, dW_hh_T, dx, db, Z, 0, claims)
        restore_fp(fp)


@njit(cache=True, error_model="numpy")
def _grads_by_blas(dZ_mat, x, h, W_ih, dW_ih, dW_hh, db, dx):
    """``_weight_grads``' sums over all steps by BLAS, for large shapes (``BLAS_GRADS_FROM``),
    from dz in PyTorch's gate-major columns, dZ_mat (T Bp, 4H), as ``lstm.py``'s backward:

        dW_ih = dZ^T X  (4H, Ip)    dW_hh = dZ^T H_prev  (4H, Hp)    dx = dZ W_ih  (T Bp, I)

    and db = column sums of dZ. x (T Bp, Ip), h (T Bp, Hp): the padded inputs, so dW_ih and
    dW_hh have Ip and Hp columns, of which the first I and H are the gradients."""
    fp = flush_subnormals()                 # subnormals read and written as 0 (_common)
    column_sums(dZ_mat, db)
    dot_into(dZ_mat.T, x, dW_ih)
    dot_into(dZ_mat.T, h, dW_hh)
    dot_into(dZ_mat, W_ih, dx)
    restore_fp(fp)                          # (this thread as it was)


def _weight_grad_args(x_p, hs, W_ig):
    """``_weight_grads``' arrays after its two scalars and dZ: x and h_prev as (T Bp, .)
    matrices, W_ig (packed W_ih), and the outputs, not zeroed (every entry is written: each
    product's first k-chunk starts from zero): (x, h, W_ig, dW_ih_T, dW_hh_T, dx, db). dW has
    W_ig's columns (4 Hp; 3 Hp for the GRU's 48-wide tiles; Hp for ``rnn_tiled``), dx Ip
    rounded up to whole 64-column tiles (the caller slices), db 4 Hp (of which the RNN's
    backward uses the first Hp)."""
    T, Bp, Ip = x_p.shape
    Hp = hs.shape[2]
    N = W_ig.shape[1]                                    # gate tile columns the products use
    return (x_p.reshape(T * Bp, Ip), hs[:T].reshape(T * Bp, Hp), W_ig,
            empty((Ip, N)), empty((Hp, N)),
            empty((T * Bp, W_ig.shape[0] * 64)), np.zeros(4 * Hp, np.float32))


def _padded(a, shape):
    """``a`` zero-padded to ``shape`` (itself when it already has it)."""
    if a.shape == shape:
        return a
    out = zeros(shape)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


def backward(dy, dh_n, dc_n, cache):
    """``lstm.lstm_backward`` on checked arguments, for a cache from ``forward``.

    dy: (T, B, H)   dh_n, dc_n: (B, H)   (float32, C-contiguous)
    returns dx_s (T, B, I) in step order, dW_ih, dW_hh, db, dh0, dc0.
    """
    _, x_p, W_ih, W_hh, lengths, lengths_p, reverse, hs, cs, G, tanh_c = cache
    T, Bp, Ip = x_p.shape
    B, I, H = lengths.shape[0], W_ih.shape[1], W_hh.shape[1]
    Hp = hs.shape[2]
    Ip64 = _round_up(Ip, 64)

    by_blas = _blas_grads(T, Bp, I, H)
    dZ = empty((Hp // U, 2 if by_blas else T, Bp, 4 * U))   # dL/dz, tile u's in dZ[u]; with
    dc = _padded(dc_n, (Bp, Hp)).copy()                     # BLAS a ring of two steps
    dh = empty((Bp, Hp))                         # dL/dh of each step; ends as dh0
    if by_blas:                                  # the team skips them: placeholders, same types
        wg = (x_p.reshape(T * Bp, Ip), hs[:T].reshape(T * Bp, Hp), np.zeros((0, 0, 0), np.float32),
              *(np.zeros((0, 0), np.float32) for _ in range(3)), np.zeros(0, np.float32))
        dZ_mat = empty((T, Bp, 4 * H), np.float32)
    else:
        wg = _weight_grad_args(x_p, hs, _pack_rows(W_ih, H, Hp, Ip64))
        dZ_mat = np.zeros((0, 0, 0), np.float32)
    n_workers = team_size((Hp // V) * -(-Bp // RG))
    with one_team():                             # (workqueue: one at a time)
        _backward_core(dZ, dc, dh, _padded(dy, (T, Bp, Hp)), _padded(dh_n, (Bp, Hp)),
                       _pack_rows(W_hh, H, Hp, Hp), G, tanh_c, cs, lengths_p, int(reverse), *wg,
                       n_workers, np.zeros(1, np.int64), np.zeros((2, n_workers), np.int64),
                       dZ_mat, _backward_rows(Bp, n_workers))

    if by_blas:
        dW_ih, dW_hh = empty((4 * H, Ip), np.float32), empty((4 * H, Hp), np.float32)
        db, dx = empty(4 * H, np.float32), empty((T * Bp, I), np.float32)
        _grads_by_blas(dZ_mat.reshape(T * Bp, 4 * H), wg[0], wg[1], W_ih, dW_ih, dW_hh, db, dx)
        dW_ih = dW_ih if Ip == I else np.ascontiguousarray(dW_ih[:, :I])
        dW_hh = dW_hh if Hp == H else np.ascontiguousarray(dW_hh[:, :H])
        dx_s = dx.reshape(T, Bp, I)[:, :B]
    else:                                        # back from gate tile order (columns of dZ)
        dW_ih_T, dW_hh_T, dx, db = wg[3:]        # to PyTorch's gate-major rows
        dW_ih, dW_hh, db_out = (empty((4 * H, I), np.float32), empty((4 * H, H), np.float32),
                                empty((4 * H, 1), np.float32))
        _unpack(dW_ih_T, H, I, _GATES, Z, dW_ih)
        _unpack(dW_hh_T, H, H, _GATES, Z, dW_hh)
        _unpack_grad(db.reshape(1, 4 * Hp), H, 1, _GATES, Z, db_out, 0, 1)
        db = db_out.reshape(4 * H)
        dx_s = dx.reshape(T, Bp, Ip64)[:, :B, :I]
    return np.ascontiguousarray(dx_s), dW_ih, dW_hh, db, dh[:B, :H].copy(), dc[:B, :H].copy()
