"""The persistent recurrent kernel: ``W_hh`` stays in shared memory for the whole sequence.

The per-step path launches two kernels per step and reads all of ``W_hh`` from global memory every
step; at small batch that is all overhead and bandwidth. Here (Diamos et al. 2016, "Persistent
RNNs") one cooperative launch runs every step of one layer and direction:

* block ``k`` owns hidden units ``j0 = k*U ... j0+U-1`` and loads, once, the ``W_hh`` values those
  units need into shared memory;
* per step each block computes, for its units and every sequence, the recurrent sums from shared
  memory, then calls the same cell function as the per-step path (``cells.py``);
* the grid meets at a barrier (``cuda.cg.this_grid().sync()``) after every step, because step
  ``t+1`` of any unit needs ``h_t`` of all units.

Written once for the three cells (G gates: LSTM 4, GRU 3, RNN 1); a cell enters only through
the device functions of ``cells.py``, via two small adapters at the bottom of this file.

Forward: block ``k`` keeps rows ``g*H + j`` of ``W_hh`` (G gates x U units, each of length H) and
computes ``R[b, g*H + j] = sum_k W_hh[g*H + j, k] h_{t-1}[b, k]``. ``h`` is double-buffered
(``hbuf[s % 2]`` is read while ``hbuf[(s+1) % 2]`` is written): a block that races ahead must not
overwrite what a slower one is still reading. One barrier per step.

Backward: block ``k`` keeps columns ``j`` of ``W_hh`` (U units x G*H). Per step: phase 1, the
gate grads of its own units (``cells``) into ``dG[p]``; barrier; phase 2,
``dh[b, j] += sum_r dG[p(b), b, r] W_hh[r, j]`` for its own units. Phase 1 of the next step only
touches this block's own ``dh``, ``dc`` entries and other rows of ``dG``, so one barrier per step.

Inside a block, threads are a ``(KS, PS)`` grid: ``PS`` (sequence, unit) pairs at a time, each dot
product split over ``KS`` threads and summed through shared memory (the simulator has no warp
shuffles, so the kernel uses none). ``h_{t-1}`` and ``dG`` are read from global memory (L2).

**Size rule** (``plan``): the weight slice of one block, ``G*U*H*itemsize`` bytes, plus the
``4 x 256`` partial-sum buffer, must fit in ``SHARED_BYTES`` = 48 KiB (what every CUDA GPU grants
a block without an opt-in, which numba.cuda cannot request), and all ``ceil(H/U)`` blocks must be
resident at once (``max_cooperative_grid_blocks`` for that block shape and shared size). ``plan``
takes the smallest ``U`` for which the grid fits; if no ``U`` does, the weights do not fit and
``"auto"`` falls back to the per-step path (``"persistent"`` raises ValueError). Float32 LSTM
H = 512 needs 8 KiB per unit, so U <= 5: at least 103 co-resident blocks; float64 needs U <= 2,
256 blocks. Which U the GPU allows, only it can say.

**Simulator.** The CUDA simulator runs blocks one after another and a cooperative grid there has
one block (``max_cooperative_grid_blocks`` is 1), so under it ``plan`` gives a single block owning
all units (tiny H only). A ``PersistentPlan`` with ``steps_per_launch=1`` instead launches once per
step (and, backward, once per phase), the kernel boundary standing in for the grid barrier: that
runs the multi-block partition of the weights on the simulator. The grid barrier itself across
several blocks only runs on a real GPU.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import cuda

from ._common import SIMULATOR, ceil_div, position
from .cells import gru_point_functions, lstm_point_functions, rnn_point_functions

__all__ = ["PersistentPlan", "SHARED_BYTES", "MAX_THREADS", "plan", "plan_for",
           "lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward", "rnn_backward"]

#: Shared memory a block may use without the (numba-inaccessible) opt-in for more: 48 KiB.
SHARED_BYTES = 48 * 1024
#: Threads per block at most; also the size of the per-gate partial-sum buffer.
MAX_THREADS = 256
#: Threads that share one dot product (at most).
MAX_SPLIT = 32
#: Gates per cell: rows of W_hh per hidden unit.
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@dataclass(frozen=True)
class PersistentPlan:
    """How the persistent kernel is laid out.

    units_per_block: U, hidden units (with all their gates) owned by one block; blocks = ceil(H/U).
    threads: (KS, PS) block shape, or None to derive it: PS (sequence, unit) pairs at a time,
        each dot product split over KS threads.
    steps_per_launch: 0 = every step in one launch (the persistent kernel). n > 0 = launch per n
        steps (and, backward, per phase when n == 1): kernel boundaries stand in for the grid
        barrier. For tests on the simulator, which cannot run a multi-block cooperative grid.
    """
    units_per_block: int
    threads: tuple = None
    steps_per_launch: int = 0

    def blocks(self, H):
        return ceil_div(H, self.units_per_block)


def _threads(B, U, reduce_len):
    KS = max(1, min(MAX_SPLIT, reduce_len))
    PS = max(1, min(MAX_THREADS // KS, B * U))
    return KS, PS


def _weight_bytes(U, H, G, itemsize):
    return G * U * H * itemsize


def _static_bytes(itemsize):
    return 4 * MAX_THREADS * itemsize


def _placeholder(ndim, dtype):
    return cuda.device_array((1,) * ndim, dtype)


def _typed_args(direction, dtype):
    """Arguments with the types of a real launch (for the occupancy query; shapes do not matter)."""
    a2, a3 = _placeholder(2, dtype), _placeholder(3, dtype)
    lengths = cuda.device_array(1, np.int64)
    v = _placeholder(1, dtype)
    if direction == "forward":
        return [0, 1, 1, a3, a2, v, v, lengths, False, a3, a2, a3, a3, a3, a3]
    return [0, -1, 3, 1, a2, a3, lengths, False, a3, a3, a2, a2, a3, a3]


def _max_blocks(cell, direction, dtype, threads, dyn_bytes):
    """Blocks of this kernel that can all be resident at once (a cooperative grid's limit)."""
    if SIMULATOR:
        return 1          # the simulator's cooperative grid is a single block
    G, forward, backward = _kernels(cell, dtype)
    kernel = forward if direction == "forward" else backward
    overloads = kernel.specialize(*_typed_args(direction, dtype)).overloads
    return next(iter(overloads.values())).max_cooperative_grid_blocks(threads, dyn_bytes)


@lru_cache(maxsize=256)
def plan(cell, direction, dtype, B, H):
    """The smallest-U layout that fits (see the module's size rule), or None.

    cell: "lstm", "gru" or "rnn"; direction: "forward" or "backward". Cached per process (the
    occupancy of a kernel on the current device does not change).
    """
    dtype = np.dtype(dtype)
    G = _GATES[cell]
    reduce_len = H if direction == "forward" else G * H
    U = 1
    while U <= H:
        dyn = _weight_bytes(U, H, G, dtype.itemsize)
        if dyn + _static_bytes(dtype.itemsize) > SHARED_BYTES:
            return None
        threads = _threads(B, U, reduce_len)
        most = _max_blocks(cell, direction, dtype, threads, dyn)
        if most < 1:
            return None
        if ceil_div(H, U) <= most:
            return PersistentPlan(U, threads)
        U = max(U + 1, ceil_div(H, most))
    return None


def plan_for(cell, direction, path, dtype, B, H):
    """What ``path`` means for this call: a PersistentPlan to run, or None for the per-step path.

    path: "steps" (None), "auto" (``plan``, None if the weights do not fit), "persistent"
    (``plan``, ValueError if they do not fit) or a PersistentPlan (checked, then used as given).
    """
    dtype = np.dtype(dtype)
    itemsize = dtype.itemsize
    G = _GATES[cell]
    reduce_len = H if direction == "forward" else G * H
    if isinstance(path, PersistentPlan):
        p = path
        if p.units_per_block < 1:
            raise ValueError(f"path: expected units_per_block >= 1, got {p.units_per_block}")
        if p.threads is None:
            p = PersistentPlan(p.units_per_block, _threads(B, p.units_per_block, reduce_len),
                               p.steps_per_launch)
        need = _weight_bytes(p.units_per_block, H, G, itemsize)
        if need + _static_bytes(itemsize) > SHARED_BYTES:
            raise ValueError(f"path: expected a plan whose W_hh slice fits in "
                             f"{SHARED_BYTES - _static_bytes(itemsize)} bytes of shared memory, "
                             f"got {p} needing {need}")
        KS, PS = p.threads
        if KS * PS > MAX_THREADS:
            raise ValueError(f"path: expected at most {MAX_THREADS} threads per block, got {p.threads}")
        if SIMULATOR and p.blocks(H) > 1 and p.steps_per_launch != 1:
            raise ValueError(f"path: the CUDA simulator runs a cooperative grid of one block only; "
                             f"expected steps_per_launch=1 for {p.blocks(H)} blocks, "
                             f"got {p.steps_per_launch}")
        if not SIMULATOR:
            most = _max_blocks(cell, direction, dtype, p.threads, need)
            if p.blocks(H) > most:
                raise ValueError(f"path: expected at most {most} co-resident blocks on this GPU, "
                                 f"got {p} giving {p.blocks(H)}")
        return p
    if path == "steps":
        return None
    if path not in ("auto", "persistent"):
        raise ValueError(f"path: expected 'auto', 'steps', 'persistent' or a PersistentPlan, "
                         f"got {path!r}")
    p = plan(cell, direction, dtype, int(B), int(H))
    if p is None and path == "persistent":
        raise ValueError(f"path='persistent': W_hh ({G * H}x{H}, {dtype}) does not fit in the shared "
                         f"memory of the blocks that can be resident at once (at most "
                         f"{SHARED_BYTES} bytes per block); expected path='steps' or 'auto'")
    return p


def _launch(kernel, args, H, p, itemsize, G):
    dyn = _weight_bytes(p.units_per_block, H, G, itemsize)
    launcher = kernel if SIMULATOR else kernel.specialize(*args)
    launcher[p.blocks(H), p.threads, 0, dyn](*args)


# ---------------------------------------------------------------------------------------------
# The kernels, one pair per cell and dtype. The cell enters only through two small adapters with
# one signature for all cells (arguments a cell does not use are tiny placeholder arrays):
#
#   point(s, b, j, r0, r1, r2, r3, xW, bias1, bias2, lengths, reverse,
#         h_in, h_out, c, hprev, cprev, saved, y)          -> the cell's forward_point
#   bpoint(s, b, j, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh)
#                                                          -> the cell's backward_point, stores grads
#
# r0..r3 are the recurrent sums (W_hh h_{t-1})[g*H + j] of gates g < G; dGh holds the grads of the
# hidden pre-activations (what multiplies W_hh), dGi those of the input ones (the same array
# except for the GRU, whose n gate differs: da_n vs dq).
# ---------------------------------------------------------------------------------------------

def _lstm_adapters(dtype):
    forward_point, backward_point = lstm_point_functions(dtype)

    @cuda.jit(device=True)
    def point(s, b, j, r0, r1, r2, r3, xW, bias1, bias2, lengths, reverse,
              h_in, h_out, c, hprev, cprev, saved, y):
        forward_point(s, b, j, r0, r1, r2, r3, xW, bias1, lengths, reverse,
                      h_in, h_out, c, hprev, cprev, saved, y)

    @cuda.jit(device=True)
    def bpoint(s, b, j, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh):
        H = dh.shape[1]
        p, dzi, dzf, dzg, dzo = backward_point(s, b, j, dy, lengths, reverse, saved, sprev, dh, dc)
        dGh[p, b, j] = dzi
        dGh[p, b, H + j] = dzf
        dGh[p, b, 2 * H + j] = dzg
        dGh[p, b, 3 * H + j] = dzo

    return 4, point, bpoint


def _gru_adapters(dtype):
    forward_point, backward_point = gru_point_functions(dtype)

    @cuda.jit(device=True)
    def point(s, b, j, r0, r1, r2, r3, xW, bias1, bias2, lengths, reverse,
              h_in, h_out, c, hprev, cprev, saved, y):
        forward_point(s, b, j, r0, r1, r2, xW, bias1, bias2, lengths, reverse,
                      h_in, h_out, hprev, saved, y)

    @cuda.jit(device=True)
    def bpoint(s, b, j, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh):
        H = dh.shape[1]
        p, dar, daz, dan, dq = backward_point(s, b, j, dy, lengths, reverse, saved, sprev, dh)
        dGi[p, b, j] = dar
        dGi[p, b, H + j] = daz
        dGi[p, b, 2 * H + j] = dan
        dGh[p, b, j] = dar
        dGh[p, b, H + j] = daz
        dGh[p, b, 2 * H + j] = dq

    return 3, point, bpoint


def _rnn_adapters(dtype):
    forward_point, backward_point = rnn_point_functions(dtype)

    @cuda.jit(device=True)
    def point(s, b, j, r0, r1, r2, r3, xW, bias1, bias2, lengths, reverse,
              h_in, h_out, c, hprev, cprev, saved, y):
        forward_point(s, b, j, r0, xW, bias1, lengths, reverse, h_in, h_out, hprev, saved, y)

    @cuda.jit(device=True)
    def bpoint(s, b, j, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh):
        p, da = backward_point(s, b, j, dy, lengths, reverse, saved, dh)
        dGh[p, b, j] = da

    return 1, point, bpoint


_ADAPTERS = {"lstm": _lstm_adapters, "gru": _gru_adapters, "rnn": _rnn_adapters}


@lru_cache(maxsize=None)
def _kernels(cell, dtype):
    """``(persistent_forward, persistent_backward)`` for ``cell`` ("lstm", "gru", "rnn") and dtype."""
    dtype = np.dtype(dtype)
    ZERO = dtype.type(0)
    G, point, bpoint = _ADAPTERS[cell](dtype)

    @cuda.jit
    def persistent_forward(s_begin, s_end, U, xW, W_hh, bias1, bias2, lengths, reverse,
                           hbuf, c, hprev, cprev, saved, y):
        """Steps s_begin .. s_end-1. hbuf: (2, B, H), the state before step s in hbuf[s % 2]."""
        B = hbuf.shape[1]
        H = hbuf.shape[2]
        sW = cuda.shared.array(0, dtype)        # (G, U, H): sW[(g*U + jl)*H + k] = W_hh[g*H + j0 + jl, k]
        red = cuda.shared.array((4, MAX_THREADS), dtype)     # partial sums, one row per gate
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        KS = cuda.blockDim.x
        PS = cuda.blockDim.y
        tid = ty * KS + tx
        j0 = cuda.blockIdx.x * U
        Uk = min(U, H - j0)                     # units of this block (the last one may have fewer)
        for e in range(tid, G * Uk * H, KS * PS):   # this block's rows of W_hh, loaded once
            row = e // H
            k = e % H
            g = row // Uk
            jl = row % Uk
            sW[(g * U + jl) * H + k] = W_hh[g * H + j0 + jl, k]
        cuda.syncthreads()
        grid = cuda.cg.this_grid()
        n_pairs = B * Uk
        for s in range(s_begin, s_end):
            h_in = hbuf[s % 2]
            h_out = hbuf[(s + 1) % 2]
            for q0 in range(0, n_pairs, PS):
                q = q0 + ty                     # this thread row's (sequence, unit) pair
                b = q // Uk
                jl = q % Uk
                a0 = ZERO
                a1 = ZERO
                a2 = ZERO
                a3 = ZERO
                if q < n_pairs:                 # (W_hh h_{t-1})[g*H + j], k split over the KS threads
                    for k in range(tx, H, KS):
                        hk = h_in[b, k]
                        a0 += sW[jl * H + k] * hk
                        if G > 1:
                            a1 += sW[(U + jl) * H + k] * hk
                            a2 += sW[(2 * U + jl) * H + k] * hk
                        if G > 3:
                            a3 += sW[(3 * U + jl) * H + k] * hk
                red[0, tid] = a0
                red[1, tid] = a1
                red[2, tid] = a2
                red[3, tid] = a3
                cuda.syncthreads()
                if q < n_pairs and tx == 0:
                    r0 = ZERO
                    r1 = ZERO
                    r2 = ZERO
                    r3 = ZERO
                    for l in range(ty * KS, ty * KS + KS):
                        r0 += red[0, l]
                        r1 += red[1, l]
                        r2 += red[2, l]
                        r3 += red[3, l]
                    point(s, b, j0 + jl, r0, r1, r2, r3, xW, bias1, bias2, lengths, reverse,
                          h_in, h_out, c, hprev, cprev, saved, y)
                cuda.syncthreads()
            grid.sync()                         # h_t complete everywhere before step t+1 reads it

    @cuda.jit
    def persistent_backward(s_begin, s_end, phases, U, W_hh, dy, lengths, reverse,
                            saved, sprev, dh, dc, dGi, dGh):
        """Steps s_begin, s_begin-1, .., s_end+1. phases: 1 = gate grads, 2 = dh += dz W_hh, 3 = both."""
        B = dh.shape[0]
        H = dh.shape[1]
        GH = G * H
        sWT = cuda.shared.array(0, dtype)       # (U, G*H): sWT[kl*G*H + r] = W_hh[r, j0 + kl]
        red = cuda.shared.array((4, MAX_THREADS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        KS = cuda.blockDim.x
        PS = cuda.blockDim.y
        tid = ty * KS + tx
        j0 = cuda.blockIdx.x * U
        Uk = min(U, H - j0)
        for e in range(tid, Uk * GH, KS * PS):  # this block's columns of W_hh, loaded once
            kl = e // GH
            r = e % GH
            sWT[kl * GH + r] = W_hh[r, j0 + kl]
        cuda.syncthreads()
        grid = cuda.cg.this_grid()
        n_pairs = B * Uk
        for s in range(s_begin, s_end, -1):
            if phases & 1:                      # phase 1: gate grads of this block's units
                for q in range(tid, n_pairs, KS * PS):
                    bpoint(s, q // Uk, j0 + q % Uk, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh)
            grid.sync()                         # every dz_t written before anyone reads it
            if phases & 2:                      # phase 2: dh_{t-1}[b, j] += dGh_t[b] . W_hh[:, j]
                for q0 in range(0, n_pairs, PS):
                    q = q0 + ty
                    b = q // Uk
                    kl = q % Uk
                    acc = ZERO
                    if q < n_pairs:
                        p = position(s, lengths[b], reverse)
                        for r in range(tx, GH, KS):
                            acc += dGh[p, b, r] * sWT[kl * GH + r]
                    red[0, tid] = acc
                    cuda.syncthreads()
                    if q < n_pairs and tx == 0:
                        total = ZERO
                        for l in range(ty * KS, ty * KS + KS):
                            total += red[0, l]
                        dh[b, j0 + kl] += total
                    cuda.syncthreads()

    return G, persistent_forward, persistent_backward


def _run_forward(cell, p, xW, W_hh, bias1, bias2, lengths, reverse, h, c, hprev, cprev, saved, y):
    T, B, _ = xW.shape
    H = h.shape[1]
    dtype = np.dtype(h.dtype)
    G, kernel, _ = _kernels(cell, dtype)
    hbuf = cuda.device_array((2, B, H), dtype)
    hbuf[0].copy_to_device(h)
    args = [0, T, p.units_per_block, xW, W_hh, bias1, bias2, lengths, reverse,
            hbuf, c, hprev, cprev, saved, y]
    n = p.steps_per_launch or T
    for s0 in range(0, T, n):
        args[0], args[1] = s0, min(T, s0 + n)
        _launch(kernel, args, H, p, dtype.itemsize, G)
    return hbuf[T % 2]


def _run_backward(cell, p, W_hh, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh):
    T, B, _ = dGh.shape
    H = dh.shape[1]
    dtype = np.dtype(dh.dtype)
    G, _, kernel = _kernels(cell, dtype)
    args = [T - 1, -1, 3, p.units_per_block, W_hh, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh]
    if p.steps_per_launch == 1:        # one launch per step and phase: kernel boundaries as barriers
        for s in range(T - 1, -1, -1):
            for phases in (1, 2):
                args[0], args[1], args[2] = s, s - 1, phases
                _launch(kernel, args, H, p, dtype.itemsize, G)
    else:
        n = p.steps_per_launch or T
        for s0 in range(T - 1, -1, -n):
            args[0], args[1] = s0, max(-1, s0 - n)
            _launch(kernel, args, H, p, dtype.itemsize, G)


# Entry points for lstm.py / gru.py / rnn.py, given a plan from ``plan_for``. Forward: returns the
# final h (B, H) on the device (c is updated in place). Backward: fills the gate-grad buffers and
# leaves dL/dh_0 (and dL/dc_0) in dh (dc).

def lstm_forward(plan, xW, W_hh, bias, lengths, reverse, h, c, hprev, cprev, gates, y):
    return _run_forward("lstm", plan, xW, W_hh, bias, bias, lengths, reverse, h, c, hprev, cprev, gates, y)


def lstm_backward(plan, W_hh, dy, lengths, reverse, gates, cprev, dh, dc, dG):
    return _run_backward("lstm", plan, W_hh, dy, lengths, reverse, gates, cprev, dh, dc, dG, dG)


def gru_forward(plan, xW, W_hh, b_ih, b_hh, lengths, reverse, h, hprev, gates, y):
    dtype = np.dtype(h.dtype)
    return _run_forward("gru", plan, xW, W_hh, b_ih, b_hh, lengths, reverse, h, _placeholder(2, dtype),
                        hprev, _placeholder(3, dtype), gates, y)


def gru_backward(plan, W_hh, dy, lengths, reverse, gates, hprev, dh, dGi, dGh):
    dtype = np.dtype(dh.dtype)
    return _run_backward("gru", plan, W_hh, dy, lengths, reverse, gates, hprev, dh,
                         _placeholder(2, dtype), dGi, dGh)


def rnn_forward(plan, xW, W_hh, bias, lengths, reverse, h, hprev, act, y):
    dtype = np.dtype(h.dtype)
    return _run_forward("rnn", plan, xW, W_hh, bias, bias, lengths, reverse, h, _placeholder(2, dtype),
                        hprev, _placeholder(3, dtype), act, y)


def rnn_backward(plan, W_hh, dy, lengths, reverse, act, dh, dG):
    dtype = np.dtype(dh.dtype)
    return _run_backward("rnn", plan, W_hh, dy, lengths, reverse, act, act, dh,
                         _placeholder(2, dtype), dG, dG)
