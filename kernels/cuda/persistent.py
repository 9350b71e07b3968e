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
the device functions of ``cells.py``, via two small adapters further down.

**Forward.** Block ``k`` keeps rows ``g*H + j`` of ``W_hh`` (G gates x U units, each of length H)
and computes ``R[b, g*H + j] = sum_k W_hh[g*H + j, k] h_{t-1}[b, k]``. ``h`` is double-buffered
in global memory (``hbuf[s % 2]`` is read while ``hbuf[(s+1) % 2]`` is written): a block that
races ahead must not overwrite what a slower one is still reading. One grid barrier per step.

**Backward.** Block ``k`` keeps columns ``j`` of ``W_hh`` (U units x G*H). Per step: phase 1, the
gate grads of its own units (``cells``) into ``dG[p]``; grid barrier; phase 2,
``dh[b, j] += sum_r dG[p(b), b, r] W_hh[r, j]`` for its own units. Phase 1 of the next step only
touches this block's own ``dh``, ``dc`` entries and other rows of ``dG``, so one barrier per step.

**Staged or direct rows.** Every block reads the whole of ``h_{t-1}`` (forward, B x H values)
or of ``dG_t`` (backward, B x G*H) every step. *Staged* (``staged=True``): the block first copies
them (``BC`` sequences at a time, the *batch chunk*) into shared memory, every thread loading
four values before storing them, and the sums read only shared memory. *Direct*
(``staged=False``): the sums read them from global memory as they go; the block's other units
find them in the L1 cache, and no shared memory is spent on them, so the whole batch is one
chunk. Staging pays at batch 1 (one short copy, then fast reads); from a few sequences up the
copy is a block-wide wait on memory every step (the backward's chunks of a batch of 64 are
~190 KB each), while direct reads overlap with the arithmetic of other warps: on an H200 at
batch 64, H = 512, the LSTM backward kernel took 11.4 ms staged and 6.4 ms direct.
``STAGE_BELOW`` sets, per direction, the batch from which rows are read directly.

**Inside a block** threads form a ``(KS, PS)`` grid. ``KS`` threads (a whole warp, 32, on a GPU)
share one *work item* and split its sums over ``k`` (``r``) between them; their partial sums are
combined by a warp-shuffle tree (5 steps; on the simulator, which has no shuffles, by the same
tree through shared memory). A work item is one hidden unit for ``NB`` sequences at once (register
blocking: each ``W_hh`` value read from shared memory serves ``NB`` products; 4 by default, 1 at
small batches, ``ONE_PER_ITEM_BELOW``). ``PS`` items run side by side. Each thread's loop over its
``k`` (``r``) can be unrolled (``UNROLL``): it then reads that many values before it multiplies
any; the order of the sums does not change, so neither does any result. The finished sums go
to shared memory, and then *every* thread of the block applies the cell to one (sequence, unit)
pair: the cell's global reads (``xW``, states) are latency-bound, and this way they overlap
instead of queueing behind one thread per item. Staging copies issue four
loads per thread before the first store (four memory latencies overlap). The sequence lengths are
copied to shared memory once, so that a cell's first read (``lengths[b]``, which every other index
depends on) is not a global-memory round trip.

**Measured** (H100, float32, LSTM H=512, T=100; ``benchmarks/results/gpu_h100.md``): about 6 us
per step forward at batch 1 (one grid barrier costs 1.3-2.5 us of it), 15-20 us at batch 16, plus
~0.25-0.45 ms of fixed cost per call (Python in the wrappers, launch latencies; it was 1.4-4.6 ms
before the pool and direct launches of ``_common.py``). That beats cuDNN at batch 1-4. On an H200
(``benchmarks/results/gpu_h200.md``), with direct rows: LSTM batch 64 forward kernel 3.5 ms,
backward 6.4 ms (35 and 64 us per step). Neither unrolling the sums nor items of 8 sequences
closed the batch-64 gap to cuDNN (0.91-0.96x of the default's time at best, 2026-12-04 in
``gpu_h200.md``). The sums' loops were instruction-bound: in their sm_90 machine code (ptxas
and nvdisasm, no GPU needed) numba's signed 64-bit indexing, with its code for negative
indices, made 8-18 instructions per multiply-add. The offsets are now unsigned and computed
once per item (5-10 per multiply-add), and the backward can take items of several units
(``PersistentPlan.unit_tile``: each block then reads every row of dG_t once per ``unit_tile``
units, 4x fewer reads at H = 512 with 4; 3.9 instructions per multiply-add). Both came after the
last GPU run: tested on the simulator and compiled for sm_90, not yet timed
(``python -m benchmarks.gpu --grid h512`` and ``python -m benchmarks.gpu_choices --batches
64,16`` do it).

**Size rule** (``plan``). Shared memory per block: the weight slice ``G*U*H`` (backward
``U*G*H``) values, plus per sequence of a chunk its sums and, staged, its row of ``h`` (``H``)
or of ``dG`` (``G*H``), plus ``B`` lengths.
The limit is what the GPU grants a block after the opt-in for large dynamic shared memory
(227 KiB on an H100; ``shared_limit``) or, where the opt-in cannot be made, the 48 KiB every
block gets. And all ``ceil(H/U)`` blocks must be resident at once: a cooperative launch with more
blocks than fit would wait forever at the first barrier (the driver refuses it instead), so the
count is checked with the occupancy API (``max_cooperative_grid_blocks``) for the exact block
shape and shared-memory size. ``plan`` starts from ``U = ceil(H / SMs)`` (one block per
multiprocessor, the cheapest grid barrier) and lowers ``U`` (more, smaller blocks) until the
weights fit; ``BC`` is the whole batch when it fits, else as many sequences as do. If nothing fits,
``"auto"`` falls back to the per-step path (``"persistent"`` raises ValueError). Float32 LSTM
H = 512: W_hh is 4 MiB; U = 4 gives 128 blocks with 32 KiB of weights each.

**Simulator.** The CUDA simulator runs blocks one after another and a cooperative grid there has
one block (``max_cooperative_grid_blocks`` is 1), so under it ``plan`` gives a single block owning
all units (tiny H only), with small ``KS`` and ``NB = 1``. A ``PersistentPlan`` with
``steps_per_launch=1`` instead launches once per step (and, backward, once per phase), the kernel
boundary standing in for the grid barrier: that runs the multi-block partition of the weights on
the simulator. The grid barrier itself across several blocks only runs on a real GPU.
"""
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from numba import cuda, uint64 as U64

from ._common import (SIMULATOR, ceil_div, copy_into, empty, launch, part, position,
                      require_cuda, reshaped)
from .cells import gru_point_functions, lstm_point_functions, rnn_point_functions

__all__ = ["PersistentPlan", "SHARED_BYTES", "MAX_THREADS", "plan", "plan_for", "shared_limit",
           "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "rnn_forward", "rnn_backward"]

#: Shared memory every block may use without an opt-in: 48 KiB.
SHARED_BYTES = 48 * 1024
#: Threads per block at most.
MAX_THREADS = 1024
#: Threads that share one work item: a warp on a GPU (shuffle reduction); few on the simulator,
#: where every thread is a Python thread.
SPLIT = 4 if SIMULATOR else 32
#: Sequences per work item (register blocking), by default; below ``ONE_PER_ITEM_BELOW`` 1.
BATCH_TILE = 1 if SIMULATOR else 4
#: Per direction, the batch below which a work item holds one sequence. An item of 4 at batch 1
#: computes the one sequence's sums four times, and at batch 4 there are a quarter as many
#: items (too few warps). Measured on an H200 (``benchmarks/gpu_choices.py``, H = 512,
#: T = 100), items of 1 against items of 4: batch 1 backward 0.76x (LSTM) and 0.85x (GRU),
#: forward 0.93x and 0.96x; batch 4 forward 0.92x and 0.97x; batch 8 forward 1.15x (items of 4
#: took 0.87x of 1), backward 1.08x (LSTM). The batch-4 backward was not measured with 1.
ONE_PER_ITEM_BELOW = {"forward": 8, "backward": 2}
#: Unroll of the sums' loop by default, per cell, in plans that read rows directly (staged: 1):
#: each thread of a work item loads this many strided values per pass (``KS`` apart) before it
#: multiplies any, so that as many memory reads are in flight at once. Used where the sum's
#: length (H forward, G*H backward) is a multiple of ``KS * unroll``; elsewhere 1. Measured on
#: an H200 (``benchmarks/gpu_choices.py``, H = 512, T = 100, against 1): the GRU's direct
#: sums with 4 took 0.90-0.95x at batch 16 and 64 (forward and backward) and 0.86x in the
#: batch-4 backward; the LSTM's were 1.03-1.71x slower with 4 (and 0.98-1.21x with 2).
UNROLL = {"lstm": 1, "gru": 4, "rnn": 1}
#: Values ``PersistentPlan.batch_tile``, ``.unroll`` and ``.unit_tile`` may take.
BATCH_TILES = (1, 2, 4, 8)
UNROLLS = (1, 2, 4, 8)
UNIT_TILES = (1, 2, 4)
#: Gates per cell: rows of W_hh per hidden unit.
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
#: Length of the static partial-sum buffer of the simulator's reduction (unused on a GPU).
_RED = 64 if SIMULATOR else 1
#: Per direction, the batch from which the rows the sums read each step (h_{t-1} forward, the
#: gate grads dG_t backward) are read straight from global memory inside the sums ("direct")
#: rather than first copied to shared memory ("staged"); see the module doc. Measured on an
#: H200 (H = 512, T = 100): direct is 0.63-0.74x the staged time of a forward+backward at batch
#: 16-64 (the backward alone 0.53-0.66x), the forward 0.92-0.94x from batch 16, mixed at batch 4
#: (0.93-1.07x), and slower at batch 1 (forward 1.04-1.21x, forward+backward 1.15-1.17x).
STAGE_BELOW = {"forward": 16, "backward": 4}


@dataclass(frozen=True)
class PersistentPlan:
    """How the persistent kernel is laid out.

    units_per_block: U, hidden units (with all their gates) owned by one block; blocks = ceil(H/U).
    threads: (KS, PS) block shape, or None to derive it: PS work items at a time, each sum split
        over KS threads (a power of two, at most 32).
    steps_per_launch: 0 = every step in one launch (the persistent kernel). n > 0 = launch per n
        steps (and, backward, per phase when n == 1): kernel boundaries stand in for the grid
        barrier. For tests on the simulator, which cannot run a multi-block cooperative grid.
    batch_chunk: BC, sequences whose h (forward) or dG rows (backward) sit in shared memory at
        once; None = as many as fit, up to the batch.
    batch_tile: NB, sequences per work item (register blocking); None = ``BATCH_TILE``, or 1
        below ``ONE_PER_ITEM_BELOW`` sequences.
    staged: True = the rows the sums read (h or dG) are copied to shared memory each step
        (in batch chunks), False = read from global memory inside the sums; None = by the
        batch (``STAGE_BELOW``).
    unroll: strided values each thread reads per pass of a sum (see ``UNROLL``); above 1 the
        sum's length must be a multiple of ``KS * unroll``; None = the cell's ``UNROLL`` for
        direct rows where it divides, else 1.
    unit_tile: backward only: hidden units per work item (1, 2 or 4). Each dG value a thread
        reads then serves that many units' sums, so a block reads each row of dG_t once per
        ``unit_tile`` units instead of once per unit (fewer items, each with more registers);
        None = 1. Not yet measured on a GPU: ``benchmarks/gpu_choices.py`` times it.
    """
    units_per_block: int
    threads: tuple = None
    steps_per_launch: int = 0
    batch_chunk: int = None
    batch_tile: int = None
    staged: bool = None
    unroll: int = None
    unit_tile: int = None

    def blocks(self, H):
        return ceil_div(H, self.units_per_block)


def _reduce_len(cell, direction, H):
    """Length of one sum: H (forward, over h_{t-1}) or G*H (backward, over the gate grads)."""
    return H if direction == "forward" else _GATES[cell] * H


def _weight_values(cell, U, H):
    return _GATES[cell] * U * H


def _dynamic_bytes(cell, direction, itemsize, U, H, B, BC, staged):
    """Dynamic shared memory of one block: lengths (int64), weight slice, and per sequence of the
    batch chunk its recurrent sums and, when staged, its row of h (forward) or dG (backward)."""
    return 8 * B + itemsize * (_weight_values(cell, U, H)
                               + BC * _row_values(cell, direction, U, H, staged))


def _row_values(cell, direction, U, H, staged):
    sums = _GATES[cell] * U if direction == "forward" else U
    return (_reduce_len(cell, direction, H) if staged else 0) + sums


def _static_bytes(itemsize):
    return 4 * _RED * itemsize


@lru_cache(maxsize=None)
def _placeholder(ndim, dtype):
    """A tiny array for an argument a cell does not use (made once per shape and dtype; no
    kernel reads or writes it)."""
    return cuda.device_array((1,) * ndim, dtype)


def _typed_args(direction, dtype):
    """Arguments with the types of a real launch (shapes do not matter)."""
    a2, a3 = _placeholder(2, dtype), _placeholder(3, dtype)
    lengths = cuda.device_array(1, np.int64)
    v = _placeholder(1, dtype)
    if direction == "forward":
        return [0, 1, 1, 1, a3, a2, v, v, lengths, False, a3, a2, a2, a3, a3, a3, a3]
    return [0, -1, 3, 1, 1, a2, a3, lengths, False, a3, a3, a2, a2, a3, a3, v]


def _device_facts():
    dev = cuda.get_current_device()
    return int(dev.MULTIPROCESSOR_COUNT), int(getattr(dev, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN",
                                                      SHARED_BYTES))


def _allow_large_shared(overload, nbytes):
    """Let one compiled kernel use ``nbytes`` of dynamic shared memory (the CUDA opt-in,
    ``cudaFuncAttributeMaxDynamicSharedMemorySize``); numba.cuda has no public call for it, so go
    through its driver object. True if the driver accepted it."""
    try:
        from numba.cuda.cudadrv.driver import driver
        cufunc = overload._codelibrary.get_cufunc()
        try:
            from cuda.bindings import driver as binding
            attr = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        except ImportError:
            attr = 8                      # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    except Exception:
        return False
    calls = (lambda: driver.cuKernelSetAttribute(attr, nbytes, cufunc.handle, cufunc.device.id),
             lambda: driver.cuFuncSetAttribute(cufunc.handle, attr, nbytes))
    for call in calls:
        try:
            call()
            return True
        except Exception:
            continue
    return False


@lru_cache(maxsize=None)
def _launcher(cell, direction, dtype, NB, staged, unroll=1, unit_tile=1):
    """(specialized kernel, its compiled overload, dynamic shared bytes it may use) on this GPU."""
    _, fwd, bwd = _kernels(cell, np.dtype(dtype), NB, staged, unroll, unit_tile)
    kernel = (fwd if direction == "forward" else bwd).specialize(*_typed_args(direction, dtype))
    overload = next(iter(kernel.overloads.values()))
    _, optin = _device_facts()
    static = int(getattr(overload, "shared_mem_per_block", 0) or 0)
    limit = SHARED_BYTES - static
    if optin - static > limit and _allow_large_shared(overload, optin - static):
        limit = optin - static
    return kernel, overload, limit


def shared_limit(cell, direction, dtype, NB=BATCH_TILE, staged=True, unroll=1, unit_tile=1):
    """Dynamic shared memory one block of this kernel may use (bytes)."""
    if SIMULATOR:
        return SHARED_BYTES - _static_bytes(np.dtype(dtype).itemsize)
    return _launcher(cell, direction, np.dtype(dtype).name, NB, bool(staged), int(unroll),
                     int(unit_tile))[2]


def _max_blocks(cell, direction, dtype, p, threads, dyn_bytes):
    """Blocks of the kernel of the completed plan ``p`` with block shape ``threads`` that can
    all be resident at once (a cooperative grid's limit)."""
    if SIMULATOR:
        return 1          # the simulator's cooperative grid is a single block
    _, overload, limit = _launcher(cell, direction, np.dtype(dtype).name, p.batch_tile,
                                   bool(p.staged), p.unroll, p.unit_tile)
    if dyn_bytes > limit:
        return 0
    try:
        return overload.max_cooperative_grid_blocks(threads, dyn_bytes)
    except Exception:     # e.g. more threads than the kernel's registers allow
        return 0


def _pow2_at_most(n):
    p = 1
    while p * 2 <= n:
        p *= 2
    return p


def _unroll_fits(cell, direction, H, KS, unroll):
    """True if ``unroll`` is 1 or the sum's length is a multiple of ``KS * unroll`` (the
    unrolled loop's pass)."""
    return unroll == 1 or _reduce_len(cell, direction, H) % (KS * unroll) == 0


def _default_tile(direction, B):
    return 1 if B < ONE_PER_ITEM_BELOW[direction] else BATCH_TILE


def _complete(cell, direction, dtype, B, H, p):
    """``p`` with every None field filled in (batch chunk, batch tile, threads, unroll), or None
    if its weights and at least one sequence do not fit in a block's shared memory."""
    dtype = np.dtype(dtype)
    U = p.units_per_block
    staged = B < STAGE_BELOW[direction] if p.staged is None else bool(p.staged)
    NB = p.batch_tile or _default_tile(direction, B)
    limit = shared_limit(cell, direction, dtype, NB, staged)
    per_row = dtype.itemsize * _row_values(cell, direction, U, H, staged)
    room = limit - _dynamic_bytes(cell, direction, dtype.itemsize, U, H, B, 0, staged)
    BC = p.batch_chunk or min(max(B, 1), room // per_row if room > 0 else 0)
    if BC < 1 or _dynamic_bytes(cell, direction, dtype.itemsize, U, H, B, BC, staged) > limit:
        return None
    UT = p.unit_tile or 1
    threads = p.threads
    if threads is None:
        items = ceil_div(min(BC, max(B, 1)), NB) * ceil_div(min(U, H), UT)
        KS = SPLIT
        PS = max(1, min(MAX_THREADS // KS, _pow2_at_most(2 * items - 1)))
        if SIMULATOR:
            PS = min(PS, 4)
        threads = (KS, PS)
    unroll = p.unroll
    if unroll is None:
        unroll = 1 if staged else UNROLL.get(cell, 1)
        unroll = unroll if _unroll_fits(cell, direction, H, threads[0], unroll) else 1
    return replace(p, threads=tuple(threads), batch_chunk=BC, batch_tile=NB, staged=staged,
                   unroll=unroll, unit_tile=UT)


def plan(cell, direction, dtype, B, H):
    """The layout to use for this problem (see the module's size rule), or None.

    cell: "lstm", "gru" or "rnn"; direction: "forward" or "backward". Cached per process and
    ``STAGE_BELOW``, ``ONE_PER_ITEM_BELOW``, ``UNROLL`` value (the occupancy of a kernel on the
    current device does not change).
    RuntimeError (``require_cuda``'s) without a usable CUDA device.
    """
    require_cuda()
    return _plan(cell, direction, np.dtype(dtype), int(B), int(H), STAGE_BELOW[direction],
                 ONE_PER_ITEM_BELOW[direction], UNROLL.get(cell, 1))


@lru_cache(maxsize=256)
def _plan(cell, direction, dtype, B, H, stage_below, one_per_item_below, unroll):
    if SIMULATOR:
        return _complete(cell, direction, dtype, B, H, PersistentPlan(H))
    n_sm, _ = _device_facts()
    for U in range(min(H, ceil_div(H, n_sm)), 0, -1):     # fewest blocks first
        p = _complete(cell, direction, dtype, B, H, PersistentPlan(U))
        if p is None:
            continue
        KS, PS = p.threads
        dyn = _dynamic_bytes(cell, direction, dtype.itemsize, U, H, B, p.batch_chunk, p.staged)
        while PS >= 1:                 # the widest block whose whole grid is co-resident
            if p.blocks(H) <= _max_blocks(cell, direction, dtype, p, (KS, PS), dyn):
                return replace(p, threads=(KS, PS))
            PS //= 2
    return None


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_plan_types(p):
    """TypeError naming ``path`` where a field of the plan ``p`` is not of its type (a float
    or a string would otherwise fail inside a kernel launch, naming nothing)."""
    for field, optional in (("units_per_block", False), ("steps_per_launch", False),
                            ("batch_chunk", True), ("batch_tile", True), ("unroll", True),
                            ("unit_tile", True)):
        v = getattr(p, field)
        if not (_is_int(v) or (optional and v is None)):
            raise TypeError(f"path: expected {field} an int{' or None' if optional else ''}, "
                            f"got {v!r}")
    t = p.threads
    if t is not None and not (isinstance(t, (tuple, list)) and len(t) == 2
                              and all(_is_int(v) for v in t)):
        raise TypeError(f"path: expected threads a pair of ints (KS, PS) or None, got {t!r}")
    if p.staged is not None and not isinstance(p.staged, (bool, np.bool_)):
        raise TypeError(f"path: expected staged True, False or None, got {p.staged!r}")


def plan_for(cell, direction, path, dtype, B, H):
    """What ``path`` means for this call: a PersistentPlan to run, or None for the per-step path.

    path: "steps" (None), "auto" (``plan``, None if the weights do not fit), "persistent"
    (``plan``, ValueError if they do not fit) or a PersistentPlan (checked, completed, then used).
    """
    dtype = np.dtype(dtype)
    G = _GATES[cell]
    if isinstance(path, PersistentPlan):
        p = path
        _check_plan_types(p)
        if p.units_per_block < 1:
            raise ValueError(f"path: expected units_per_block >= 1, got {p.units_per_block}")
        if p.steps_per_launch < 0:
            raise ValueError(f"path: expected steps_per_launch >= 0 (0: all in one launch), got "
                             f"{p.steps_per_launch}")
        if p.batch_chunk is not None and p.batch_chunk < 1:
            raise ValueError(f"path: expected batch_chunk >= 1 or None, got {p.batch_chunk}")
        if p.batch_tile is not None and p.batch_tile not in BATCH_TILES:
            raise ValueError(f"path: expected batch_tile one of {BATCH_TILES}, got {p.batch_tile}")
        if p.unroll is not None and p.unroll not in UNROLLS:
            raise ValueError(f"path: expected unroll one of {UNROLLS} or None, got {p.unroll}")
        if p.unit_tile is not None and p.unit_tile not in UNIT_TILES:
            raise ValueError(f"path: expected unit_tile one of {UNIT_TILES} or None, got "
                             f"{p.unit_tile}")
        if direction == "forward" and (p.unit_tile or 1) != 1:
            raise ValueError(f"path: expected unit_tile 1 or None in a forward (it applies to "
                             f"the backward's sums), got {p.unit_tile}")
        if p.threads is not None:
            KS, PS = p.threads
            if KS * PS > MAX_THREADS or not 1 <= KS <= 32 or KS & (KS - 1) or PS < 1:
                raise ValueError(f"path: expected threads (KS, PS) with KS a power of two <= 32 "
                                 f"and KS*PS <= {MAX_THREADS}, got {p.threads}")
            if SIMULATOR and KS * PS > _RED:
                raise ValueError(f"path: expected threads (KS, PS) with KS*PS <= {_RED} on the "
                                 f"CUDA simulator (its reduction buffer), got {p.threads}")
            if not SIMULATOR and KS != SPLIT:
                raise ValueError(f"path: expected threads (KS, PS) with KS = {SPLIT} (a warp) on "
                                 f"a GPU, got {p.threads}")
        full = _complete(cell, direction, dtype, B, H, p)
        if full is None:
            staged = B < STAGE_BELOW[direction] if p.staged is None else bool(p.staged)
            need = _dynamic_bytes(cell, direction, dtype.itemsize, p.units_per_block, H, B,
                                  p.batch_chunk or 1, staged)
            limit = shared_limit(cell, direction, dtype, p.batch_tile or _default_tile(direction, B),
                                 staged)
            raise ValueError(f"path: expected a plan whose shared memory fits in {limit} bytes, "
                             f"got {p} needing {need}")
        if not _unroll_fits(cell, direction, H, full.threads[0], full.unroll):
            raise ValueError(f"path: expected unroll dividing the sum's length "
                             f"{_reduce_len(cell, direction, H)} / KS {full.threads[0]}, "
                             f"got unroll={full.unroll}")
        if SIMULATOR and full.blocks(H) > 1 and full.steps_per_launch != 1:
            raise ValueError(f"path: the CUDA simulator runs a cooperative grid of one block only; "
                             f"expected steps_per_launch=1 for {full.blocks(H)} blocks, "
                             f"got {full.steps_per_launch}")
        if not SIMULATOR:
            dyn = _dynamic_bytes(cell, direction, dtype.itemsize, full.units_per_block, H, B,
                                 full.batch_chunk, full.staged)
            need = 1 if full.steps_per_launch == 1 else full.blocks(H)   # (1: no grid barrier)
            fits = lambda t: _max_blocks(cell, direction, dtype, full, t, dyn) >= need  # noqa: E731
            KS, PS = full.threads
            while p.threads is None and PS > 1 and not fits((KS, PS)):
                PS //= 2                 # derived threads: the widest block that can run
            full = replace(full, threads=(KS, PS))
            most = _max_blocks(cell, direction, dtype, full, full.threads, dyn)
            if full.steps_per_launch != 1 and full.blocks(H) > most:
                raise ValueError(f"path: expected at most {most} co-resident blocks on this GPU, "
                                 f"got {full} giving {full.blocks(H)}")
        return full
    if not isinstance(path, str):                        # (a 0-d array == "steps" is true)
        raise ValueError(f"path: expected 'auto', 'steps', 'persistent' or a PersistentPlan, "
                         f"got {path!r}")
    if path == "steps":
        return None
    if path not in ("auto", "persistent"):
        raise ValueError(f"path: expected 'auto', 'steps', 'persistent' or a PersistentPlan, "
                         f"got {path!r}")
    p = plan(cell, direction, dtype, int(B), int(H))
    if p is None and path == "persistent":
        raise ValueError(f"path='persistent': W_hh ({G * H}x{H}, {dtype}) does not fit in the "
                         f"shared memory of the blocks that can be resident at once (at most "
                         f"{shared_limit(cell, direction, dtype)} bytes per block); "
                         f"expected path='steps' or 'auto'")
    return p


def _launch(cell, direction, args, H, B, p, dtype):
    dyn = _dynamic_bytes(cell, direction, dtype.itemsize, p.units_per_block, H, B, p.batch_chunk,
                         p.staged)
    if SIMULATOR:
        _, fwd, bwd = _kernels(cell, dtype, p.batch_tile, p.staged, p.unroll, p.unit_tile)
        launcher = fwd if direction == "forward" else bwd
    else:
        launcher = _launcher(cell, direction, dtype.name, p.batch_tile, p.staged, p.unroll,
                             p.unit_tile)[0]
    launch(launcher, p.blocks(H), p.threads, dyn, *args)


# ---------------------------------------------------------------------------------------------
# The kernels, one pair per cell and dtype. The cell enters only through two small adapters with
# one signature for all cells (arguments a cell does not use are tiny placeholder arrays):
#
#   point(s, b, j, r0, r1, r2, r3, xW, bias1, bias2, lengths, reverse,
#         h_in, h_out, c, hprev, cprev, saved, y)          -> the cell's forward_point
#   bpoint(s, b, j, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh)
#                                                   -> the cell's backward_point, stores grads
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


def _group_sum_factory(dtype):
    """``group_sum(v, tx, KS, red, tid)``: the sum of ``v`` over the ``KS`` threads of a work item
    (threads ``tid - tx ... tid - tx + KS - 1``), valid in the item's first thread (``tx == 0``).

    Every thread of the block must call it at the same point (it contains barriers on the
    simulator, and warp-wide shuffles on a GPU). GPU: ``KS`` is a whole warp and the sum a shuffle
    tree of 5 straight-line steps (no loop, no shared memory; independent sums interleave).
    Simulator: the same tree through the shared buffer ``red``, for any power-of-two ``KS``.
    """
    if not SIMULATOR:
        @cuda.jit(device=True)
        def group_sum(v, tx, KS, red, tid):
            v += cuda.shfl_down_sync(0xFFFFFFFF, v, 16)
            v += cuda.shfl_down_sync(0xFFFFFFFF, v, 8)
            v += cuda.shfl_down_sync(0xFFFFFFFF, v, 4)
            v += cuda.shfl_down_sync(0xFFFFFFFF, v, 2)
            v += cuda.shfl_down_sync(0xFFFFFFFF, v, 1)
            return v
        return group_sum

    @cuda.jit(device=True)
    def group_sum_sim(v, tx, KS, red, tid):
        red[tid] = v
        cuda.syncthreads()
        off = KS // 2
        while off > 0:
            if tx < off:
                red[tid] += red[tid + off]
            cuda.syncthreads()
            off //= 2
        total = red[tid - tx]
        cuda.syncthreads()
        return total
    return group_sum_sim


@lru_cache(maxsize=None)
def _kernels(cell, dtype, NB=BATCH_TILE, STAGED=True, UNR=1, UT=1):
    """``(G, persistent_forward, persistent_backward)`` for ``cell``, ``dtype``, ``NB``
    sequences per work item (a compile-time constant: the accumulators are registers),
    ``STAGED``: rows staged in shared memory, or read directly (compile-time too: the other
    branch is not compiled), ``UNR``, the sums' unroll (the plan has checked that it divides
    their passes), and ``UT``, the backward's units per work item."""
    dtype = np.dtype(dtype)
    ZERO = dtype.type(0)
    G, point, bpoint = _ADAPTERS[cell](dtype)
    group_sum = _group_sum_factory(dtype)
    ACC = 4 * NB                          # forward accumulators: (sequence i, gate g) at 4*i + g
    BACC = NB * UT                        # backward: (sequence i, unit q) at i*UT + q
    LEN_SLOTS = 8 // dtype.itemsize       # shared-memory values taken by one int64 length
    RED = _RED
    I64 = np.dtype(np.int64)
    U64T = np.dtype(np.uint64)

    @cuda.jit(device=True)
    def stage(src, start, n, dst, offset, tid, nthr):
        """dst[offset + e] = src[start + e] for e < n, by the block's nthr threads; each thread
        issues four loads before its first store, so four memory latencies overlap."""
        last = start + n - 1
        for e in range(tid, n, 4 * nthr):
            e1 = e + nthr
            e2 = e1 + nthr
            e3 = e2 + nthr
            v0 = src[start + e]
            v1 = src[min(start + e1, last)]
            v2 = src[min(start + e2, last)]
            v3 = src[min(start + e3, last)]
            dst[offset + e] = v0
            if e1 < n:
                dst[offset + e1] = v1
            if e2 < n:
                dst[offset + e2] = v2
            if e3 < n:
                dst[offset + e3] = v3

    @cuda.jit
    def persistent_forward(s_begin, s_end, U, BC, xW, W_hh, bias1, bias2, lengths, reverse,
                           hbuf, hflat, c, hprev, cprev, saved, y):
        """Steps s_begin .. s_end-1. hbuf: (2, B, H), the state before step s in hbuf[s % 2];
        hflat: the same memory as (2, B*H), for the staging loop (no index division).

        Dynamic shared memory, one buffer seen through two dtypes:
          sL[0:B]                       lengths (int64)
          sF[WOFF + (g*U + jl)*H + k]   W_hh[g*H + j0 + jl, k]      this block's weight rows
          sF[HOFF + bl*H + k]           h_{t-1}[b0 + bl, k]         the current batch chunk
                                                                    (STAGED only)
          sF[ROFF + (bl*G + g)*U + jl]  (W_hh h_{t-1})[b0 + bl, g*H + j0 + jl]   its sums

        Per chunk: stage h (STAGED; else the sums read hflat); every work item forms its sums
        (split over KS threads, then group_sum) and its first thread stores them; then every
        thread of the block applies the cell to one (sequence, unit) pair, so that the cell's
        global-memory reads overlap.
        """
        B = hbuf.shape[1]
        H = hbuf.shape[2]
        sF = cuda.shared.array(0, dtype)
        sL = cuda.shared.array(0, I64)
        red = cuda.shared.array(RED, dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        KS = cuda.blockDim.x
        PS = cuda.blockDim.y
        nthr = KS * PS
        tid = ty * KS + tx
        j0 = cuda.blockIdx.x * U
        Uk = min(U, H - j0)                     # units of this block (the last one may have fewer)
        WOFF = B * LEN_SLOTS
        HOFF = WOFF + G * U * H
        ROFF = HOFF + (BC * H if STAGED else 0)
        for i in range(tid, B, nthr):
            sL[i] = lengths[i]
        for e in range(tid, G * Uk * H, nthr):  # this block's rows of W_hh, loaded once
            row = e // H
            k = e % H
            g = row // Uk
            jl = row % Uk
            sF[WOFF + (g * U + jl) * H + k] = W_hh[g * H + j0 + jl, k]
        cuda.syncthreads()
        grid = cuda.cg.this_grid()
        acc = cuda.local.array(ACC, dtype)
        hoff = cuda.local.array(NB, U64T)       # where each sequence's row of h starts (sF or hcur)
        for s in range(s_begin, s_end):
            h_in = hbuf[s % 2]
            h_out = hbuf[(s + 1) % 2]
            hcur = hflat[s % 2]
            for b0 in range(0, B, BC):
                nbc = min(BC, B - b0)
                if STAGED:
                    stage(hcur, b0 * H, nbc * H, sF, HOFF, tid, nthr)   # h_{t-1} of the chunk
                    cuda.syncthreads()
                n_items = ((nbc + NB - 1) // NB) * Uk   # (unit, NB sequences) work items
                for it0 in range(0, n_items, PS):
                    it = it0 + ty
                    jl = it % Uk
                    bt = (it // Uk) * NB                # first sequence of the item, in the chunk
                    for a in range(ACC):
                        acc[a] = ZERO
                    if it < n_items:                    # (W_hh h_{t-1})[g*H + j], k split over KS
                        # Offsets as unsigned ints: numba's indexing with a signed int adds code
                        # for negative indices (~half the loop's instructions, per ptxas).
                        wrow = U64(WOFF + jl * H)
                        UH = U64(U * H)
                        for i in range(NB):
                            bl = min(bt + i, nbc - 1)
                            hoff[i] = U64(HOFF + bl * H) if STAGED else U64((b0 + bl) * H)
                        for k0 in range(tx, H, KS * UNR):   # UNR values k0, k0 + KS, .. per pass
                            for u in range(UNR):            # (a constant: unrolled)
                                k = U64(k0 + u * KS)
                                w0 = sF[wrow + k]
                                w1 = ZERO
                                w2 = ZERO
                                w3 = ZERO
                                if G > 1:
                                    w1 = sF[wrow + UH + k]
                                    w2 = sF[wrow + 2 * UH + k]
                                if G > 3:
                                    w3 = sF[wrow + 3 * UH + k]
                                for i in range(NB):
                                    if STAGED:
                                        hv = sF[hoff[i] + k]
                                    else:
                                        hv = hcur[hoff[i] + k]
                                    acc[4 * i] += w0 * hv
                                    if G > 1:
                                        acc[4 * i + 1] += w1 * hv
                                        acc[4 * i + 2] += w2 * hv
                                    if G > 3:
                                        acc[4 * i + 3] += w3 * hv
                    for a in range(ACC):
                        if a % 4 < G:
                            acc[a] = group_sum(acc[a], tx, KS, red, tid)
                    if it < n_items and tx == 0:
                        for i in range(NB):
                            if bt + i < nbc:
                                base = ROFF + (bt + i) * G * U + jl
                                for g in range(G):
                                    sF[base + g * U] = acc[4 * i + g]
                cuda.syncthreads()
                for q in range(tid, nbc * Uk, nthr):    # (1)-(4) for one (sequence, unit) each
                    bl = q // Uk
                    jl = q % Uk
                    base = ROFF + bl * G * U + jl
                    r1 = ZERO
                    r2 = ZERO
                    r3 = ZERO
                    if G > 1:
                        r1 = sF[base + U]
                        r2 = sF[base + 2 * U]
                    if G > 3:
                        r3 = sF[base + 3 * U]
                    point(s, b0 + bl, j0 + jl, sF[base], r1, r2, r3, xW, bias1, bias2, sL,
                          reverse, h_in, h_out, c, hprev, cprev, saved, y)
                cuda.syncthreads()              # the chunk buffers are reused next
            grid.sync()                         # h_t complete everywhere before step t+1 reads it

    @cuda.jit
    def persistent_backward(s_begin, s_end, phases, U, BC, W_hh, dy, lengths, reverse,
                            saved, sprev, dh, dc, dGi, dGh, dGflat):
        """Steps s_begin, s_begin-1, .., s_end+1.

        phases: 1 = gate grads, 2 = dh += dz W_hh, 3 = both (the persistent kernel).

        Dynamic shared memory: sL[0:B] lengths; sF[WOFF + kl*G*H + r] = W_hh[r, j0 + kl] (this
        block's columns); STAGED only: sF[DOFF + bl*G*H + r] = dGh[p(b), b, r] for b = b0 + bl
        (the chunk; else the sums read dGflat at roff[i]); sF[ROFF + bl*U + kl] its sums for
        unit j0 + kl, added to dh by one thread per pair.
        """
        B = dh.shape[0]
        H = dh.shape[1]
        GH = G * H
        sF = cuda.shared.array(0, dtype)
        sL = cuda.shared.array(0, I64)
        red = cuda.shared.array(RED, dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        KS = cuda.blockDim.x
        PS = cuda.blockDim.y
        nthr = KS * PS
        tid = ty * KS + tx
        j0 = cuda.blockIdx.x * U
        Uk = min(U, H - j0)
        WOFF = B * LEN_SLOTS
        DOFF = WOFF + U * GH
        ROFF = DOFF + (BC * GH if STAGED else 0)
        for i in range(tid, B, nthr):
            sL[i] = lengths[i]
        for e in range(tid, Uk * GH, nthr):     # this block's columns of W_hh, loaded once
            kl = e // GH
            r = e % GH
            sF[WOFF + kl * GH + r] = W_hh[r, j0 + kl]
        cuda.syncthreads()
        grid = cuda.cg.this_grid()
        acc = cuda.local.array(BACC, dtype)     # [i*UT + q]: sequence i, unit q (shape: a constant)
        wq = cuda.local.array(UT, dtype)
        roff = cuda.local.array(NB, U64T)       # where each sequence's dG row starts (sF or dGflat)
        woff = cuda.local.array(UT, U64T)       # where each unit's column of W_hh starts in sF
        for s in range(s_begin, s_end, -1):
            if phases & 1:                      # phase 1: gate grads of this block's units
                for q in range(tid, B * Uk, nthr):
                    bpoint(s, q // Uk, j0 + q % Uk, dy, sL, reverse, saved, sprev, dh, dc, dGi, dGh)
            grid.sync()                         # every dz_t written before anyone reads it
            if phases & 2:                      # phase 2: dh_{t-1}[b, j] += dGh_t[b] . W_hh[:, j]
                for b0 in range(0, B, BC):
                    nbc = min(BC, B - b0)
                    if STAGED:
                        for bl in range(nbc):   # rows dGh[p(b), b, :] -> shared memory
                            b = b0 + bl
                            src = (position(s, sL[b], reverse) * B + b) * GH
                            stage(dGflat, src, GH, sF, DOFF + bl * GH, tid, nthr)
                        cuda.syncthreads()
                    n_groups = (Uk + UT - 1) // UT      # items: (UT units, NB sequences)
                    n_items = ((nbc + NB - 1) // NB) * n_groups
                    for it0 in range(0, n_items, PS):
                        it = it0 + ty
                        k0 = (it % n_groups) * UT       # first unit of the item
                        bt = (it // n_groups) * NB
                        for a in range(BACC):
                            acc[a] = ZERO
                        if it < n_items:
                            for i in range(NB):         # row starts, unsigned (see the forward)
                                bl = min(bt + i, nbc - 1)
                                if STAGED:
                                    roff[i] = U64(DOFF + bl * GH)
                                else:
                                    b = b0 + bl
                                    roff[i] = U64((position(s, sL[b], reverse) * B + b) * GH)
                            for q in range(UT):         # (a unit past the block's last: a copy)
                                woff[q] = U64(WOFF + min(k0 + q, Uk - 1) * GH)
                            for r0 in range(tx, GH, KS * UNR):    # as the forward's sums
                                for u in range(UNR):
                                    r = U64(r0 + u * KS)
                                    for q in range(UT):
                                        wq[q] = sF[woff[q] + r]
                                    for i in range(NB):
                                        if STAGED:
                                            d = sF[roff[i] + r]
                                        else:
                                            d = dGflat[roff[i] + r]
                                        for q in range(UT):
                                            acc[i * UT + q] += wq[q] * d
                        for a in range(BACC):
                            acc[a] = group_sum(acc[a], tx, KS, red, tid)
                        if it < n_items and tx == 0:
                            for i in range(NB):
                                for q in range(UT):
                                    if bt + i < nbc and k0 + q < Uk:
                                        sF[ROFF + (bt + i) * U + k0 + q] = acc[i * UT + q]
                    cuda.syncthreads()
                    for q in range(tid, nbc * Uk, nthr):
                        bl = q // Uk
                        kl = q % Uk
                        dh[b0 + bl, j0 + kl] += sF[ROFF + bl * U + kl]
                    cuda.syncthreads()

    return G, persistent_forward, persistent_backward


def _run_forward(cell, p, xW, W_hh, bias1, bias2, lengths, reverse, h, c, hprev, cprev, saved, y):
    T, B, _ = xW.shape
    H = h.shape[1]
    dtype = np.dtype(h.dtype)
    hbuf = empty((2, B, H), dtype)
    copy_into(hbuf, h)                                   # hbuf[0] = h
    args = [0, T, p.units_per_block, p.batch_chunk, xW, W_hh, bias1, bias2, lengths, reverse,
            hbuf, reshaped(hbuf, (2, B * H)), c, hprev, cprev, saved, y]
    n = p.steps_per_launch or T
    for s0 in range(0, T, n):
        args[0], args[1] = s0, min(T, s0 + n)
        _launch(cell, "forward", args, H, B, p, dtype)
    return part(hbuf, T % 2)


def _run_backward(cell, p, W_hh, dy, lengths, reverse, saved, sprev, dh, dc, dGi, dGh):
    T, B, _ = dGh.shape
    H = dh.shape[1]
    dtype = np.dtype(dh.dtype)
    args = [T - 1, -1, 3, p.units_per_block, p.batch_chunk, W_hh, dy, lengths, reverse,
            saved, sprev, dh, dc, dGi, dGh, reshaped(dGh, (T * B * dGh.shape[2],))]
    if p.steps_per_launch == 1:        # a launch per step and phase: kernel ends as barriers
        for s in range(T - 1, -1, -1):
            for phases in (1, 2):
                args[0], args[1], args[2] = s, s - 1, phases
                _launch(cell, "backward", args, H, B, p, dtype)
    else:
        n = p.steps_per_launch or T
        for s0 in range(T - 1, -1, -n):
            args[0], args[1] = s0, max(-1, s0 - n)
            _launch(cell, "backward", args, H, B, p, dtype)


# Entry points for lstm.py / gru.py / rnn.py, given a plan from ``plan_for``. Forward: returns the
# final h (B, H) on the device (c is updated in place). Backward: fills the gate-grad buffers and
# leaves dL/dh_0 (and dL/dc_0) in dh (dc).

def lstm_forward(plan, xW, W_hh, bias, lengths, reverse, h, c, hprev, cprev, gates, y):
    return _run_forward("lstm", plan, xW, W_hh, bias, bias, lengths, reverse, h, c, hprev, cprev,
                        gates, y)


def lstm_backward(plan, W_hh, dy, lengths, reverse, gates, cprev, dh, dc, dG):
    return _run_backward("lstm", plan, W_hh, dy, lengths, reverse, gates, cprev, dh, dc, dG, dG)


def gru_forward(plan, xW, W_hh, b_ih, b_hh, lengths, reverse, h, hprev, gates, y):
    dtype = np.dtype(h.dtype)
    return _run_forward("gru", plan, xW, W_hh, b_ih, b_hh, lengths, reverse, h,
                        _placeholder(2, dtype), hprev, _placeholder(3, dtype), gates, y)


def gru_backward(plan, W_hh, dy, lengths, reverse, gates, hprev, dh, dGi, dGh):
    dtype = np.dtype(dh.dtype)
    return _run_backward("gru", plan, W_hh, dy, lengths, reverse, gates, hprev, dh,
                         _placeholder(2, dtype), dGi, dGh)


def rnn_forward(plan, xW, W_hh, bias, lengths, reverse, h, hprev, act, y):
    dtype = np.dtype(h.dtype)
    return _run_forward("rnn", plan, xW, W_hh, bias, bias, lengths, reverse, h,
                        _placeholder(2, dtype), hprev, _placeholder(3, dtype), act, y)


def rnn_backward(plan, W_hh, dy, lengths, reverse, act, dh, dG):
    dtype = np.dtype(dh.dtype)
    return _run_backward("rnn", plan, W_hh, dy, lengths, reverse, act, act, dh,
                         _placeholder(2, dtype), dG, dG)
