"""A team of CPU threads that stays together for a whole recurrence: one launch, a barrier per step.

Why. A recurrent layer is T dependent steps, each a few tens of microseconds of work on a 2-core
machine. Splitting each step with its own ``prange`` means one fork and join of Numba's thread pool
per step, and a pool whose idle threads spin (GNU OpenMP's default) fights every other pool in the
process for the cores: OpenBLAS's workers (which keep spinning for a while after each BLAS call),
a second OpenMP runtime (PyTorch's), ... On two cores that turned microseconds into milliseconds.
So the fast kernels do what a persistent GPU kernel does: ONE ``prange`` over ``team_size()``
workers for the whole call, each worker owning a fixed share of the tiles of every step, and
between steps a barrier that the workers implement themselves:

    for w in prange(n):                 # n workers, one per thread, all alive together
        for s in range(T):
            ... worker w's tiles of step s ...
            barrier(sync, (s + 1) * n)  # wait until all n workers have finished step s

``barrier`` counts arrivals on one shared int64 with an atomic add and waits for the count to
reach its target: first spinning with the CPU's ``pause`` hint (the fast case: the others are
running and arrive within microseconds), then calling ``sched_yield`` between checks, so that a
worker waiting for a descheduled partner hands its core over instead of burning it. The count only
grows, so one array serves every barrier of a call. The atomic add (sequentially consistent)
publishes this worker's writes of the step; the acquire load that sees the target makes every
other worker's writes visible; both are also compiler barriers, so no ordinary load or store moves
across them.

The team must really run concurrently, or the barrier would wait forever: ``team_size`` never asks
for more workers than Numba has threads, and Numba's parallel loop gives each of its threads at
most one iteration of ``prange(n)`` when n <= its thread count. Kernels call the team from Python
(not from inside another parallel region). In case a threading layer or setting runs the
iterations one after another anyway (OpenMP's ``OMP_DYNAMIC``, say), ``team_size`` first checks,
once per process and per thread count, that a team of that size meets at a barrier that gives up
after ~1 s (``_probe``); if it does not, kernels run with one worker, serially but correctly.

Not every phase needs fixed owners. Where work units need not wait for each other (the input
product before the steps, the weight gradients after them), workers ``claim`` units from a
shared counter per worker's range: their own range first, then what is left of the others', so
a worker whose core is slowed by something else (a virtual machine's neighbour, another
process) hands its last units over instead of holding the team up. The counts of such a phase
then ``share`` out the next phase's fixed ownership in proportion. Either way a unit is
computed whole by one worker, the same way whoever it is: results do not depend on who does it.

Caching: ``barrier`` is compiled into the kernels that call it; an edit here makes every
cached kernel stale (``_cache_stamp``).
"""

import contextlib
import os
import platform
import sys
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["team_size", "teams_usable", "one_team", "barrier", "claim", "share"]

SPINS_BEFORE_YIELD = 200  # ``pause`` hints (a few us) before a waiting worker starts yielding.
# Was 40000 (~2 ms): on a 2-core machine running two trainings at once (two processes, two
# workers each), every barrier then burnt its spin before the partner thread got a core: fit()
# of a GRU(8, 64) took 1.10-1.24 s an epoch in each, against 0.09 alone; with 2000 spins 0.49,
# with 200 0.39 (one thread each: 0.11). Alone, the tiled kernels' fwd+bwd at (32, 16, 64, 128)
# and (64, 32, 128, 256), LSTM, GRU and RNN, medians of 3 alternated processes: level (-0.6 to
# +1.2 %, within the noise): a barrier that waits longer polls through sched_yield, which on
# an idle core returns at once.

_sched_yield = types.ExternalFunction("sched_yield", types.int32())


_PROBED = {}                   # thread count -> whether a team of that size really met

# Fork. GNU OpenMP cannot run a parallel region in a child forked from a process that had started
# it: Numba's "omp" threading layer then prints "Terminating: fork() called from a process
# already using GNU OpenMP" and kills the child (SIGTERM), and a multiprocessing pool waits for
# it forever. The layer starts on Numba's first parallel call or ``numba.get_num_threads()``,
# which the kernels ask early. So a child forked after that runs no team: ``teams_usable()`` is
# False there (``_auto`` then takes the serial kernels) and ``team_size`` refuses a tiled call.
_FORKED_FROM_OPENMP = False


def _started_gnu_openmp():
    """Whether Numba's threading layer has started in this process and is GNU OpenMP."""
    from numba.np.ufunc import parallel
    if not getattr(parallel, "_is_initialized", False) or parallel.threading_layer() != "omp":
        return False
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    return omppool is None or getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def _after_fork_in_child():
    global _FORKED_FROM_OPENMP, _ONE_TEAM
    _FORKED_FROM_OPENMP = _FORKED_FROM_OPENMP or _started_gnu_openmp()
    _ONE_TEAM = threading.RLock()    # (a thread of the parent may have held it: it is not here)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Threads. Under Numba's "workqueue" threading layer (what Numba falls back to where neither TBB
# nor OpenMP loads) two threads entering a parallel region at once abort the whole process
# ("Concurrent access has been detected"). OpenMP and TBB take them (and the results are the
# same as one after the other). So under workqueue a process runs one team at a time. A
# re-entrant lock: a kernel packs its weights on all cores (a team of its own) inside its call.
_ONE_TEAM = threading.RLock()


def _workqueue():
    from numba.np.ufunc import parallel
    try:
        return (getattr(parallel, "_is_initialized", False)
                and parallel.threading_layer() == "workqueue")
    except ValueError:                                   # (not started: nothing ran yet)
        return False


def one_team():
    """The context in which a kernel runs its team (and ``team_size`` its probe): a lock held
    for the call under the workqueue threading layer, which two threads may not enter at once;
    nothing elsewhere."""
    return _ONE_TEAM if _workqueue() else contextlib.nullcontext()


def teams_usable():
    """False in a child forked after GNU OpenMP had started (see above): no team may run."""
    return not _FORKED_FROM_OPENMP


def team_size(n_items):
    """Workers for a call with ``n_items`` independent tiles per step: at most Numba's threads,
    and 1 where a team of that size could not meet (see the module docstring). RuntimeError in
    a forked child that cannot run a team at all (``teams_usable``)."""
    if _FORKED_FROM_OPENMP:
        raise RuntimeError(
            "the tiled kernels cannot run in this process: it was forked from one that had "
            "started GNU OpenMP (Numba's 'omp' threading layer), which a forked child cannot "
            "use. Here, run path='auto' or 'steps' (a forward made with the tiled kernels "
            "before the fork cannot be differentiated after it: call forward again in this "
            "process; a module's forward runs path='auto'), or start the processes with "
            "multiprocessing's 'spawn' or 'forkserver' method")
    n = max(1, min(numba.get_num_threads(), n_items))
    if n > 1:
        met = _PROBED.get(n)
        if met is None:
            with one_team():
                met = _PROBED[n] = _probe(n)
        if not met:
            return 1
    return n


def _probe(n):
    """Whether ``prange(n)`` runs n workers at once: each arrives and waits for the others."""
    sync, late = np.zeros(1, np.int64), np.zeros(n, np.int64)
    _probe_team(n, sync, late)
    return not late.any()


def _is_int64_vector(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


def _item_pointer(context, builder, sig, args):
    """LLVM pointer to ``arr[idx]`` for an intrinsic called as (arr, idx, ...)."""
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    i = context.cast(builder, args[1], sig.args[1], types.intp)
    return cgutils.get_item_pointer(context, builder, sig.args[0], ary, [i])


@intrinsic
def _atomic_add(typingctx, arr, idx, val):
    """``arr[idx] += val`` atomically (sequentially consistent); returns the old value."""
    if not _is_int64_vector(arr):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _item_pointer(context, builder, sig, args), v, "seq_cst")

    return types.int64(arr, idx, val), codegen


@intrinsic
def _atomic_load(typingctx, arr, idx):
    """``arr[idx]`` read atomically with acquire ordering."""
    if not _is_int64_vector(arr):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_item_pointer(context, builder, sig, args), "acquire", 8)

    return types.int64(arr, idx), codegen


# the CPU's spin-wait hint, as an LLVM intrinsic: ``pause`` on x86 (nothing elsewhere)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _pause(typingctx):
    """One spin-wait hint instruction (tells the core this thread is only waiting)."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@njit(cache=True)
def _arrive_or_give_up(sync, target, max_yields):
    """``barrier`` that stops waiting after ``max_yields`` yields; returns whether it met."""
    _atomic_add(sync, 0, 1)
    spins = 0
    while _atomic_load(sync, 0) < target:
        if spins < SPINS_BEFORE_YIELD:
            _pause()
        elif spins - SPINS_BEFORE_YIELD < max_yields:
            _sched_yield()
        else:
            return False
        spins += 1
    return True


@njit(cache=True, parallel=True)
def _probe_team(n, sync, late):
    for w in prange(n):
        if not _arrive_or_give_up(sync, n, 200000):      # ~1 s of yields on a quiet machine
            late[w] = 1


@njit(cache=True)
def barrier(sync, target):
    """Arrive (add 1 to ``sync[0]``), then wait until ``sync[0] >= target``."""
    _atomic_add(sync, 0, 1)
    spins = 0
    while _atomic_load(sync, 0) < target:
        if spins < SPINS_BEFORE_YIELD:
            _pause()
            spins += 1
        else:
            _sched_yield()


@njit(cache=True)
def claim(taken, w, n_workers, n):
    """The next of ``n`` work units for worker w (``-1``: none left), for a phase whose units
    need not wait for each other: the units are split into n_workers equal ranges, and worker
    w takes its own range first, in order, then whatever is left of the others'. ``taken``
    (n_workers,) int64, zeros at the start: how many units of each range have been claimed
    (atomically, so no unit is given out twice). A worker slowed down by something else on
    its core then leaves the rest of its range to the others instead of holding them all up
    at the end; what a unit computes does not depend on who claims it."""
    for i in range(n_workers):
        v = (w + i) % n_workers
        lo, hi = v * n // n_workers, (v + 1) * n // n_workers
        if lo + _atomic_load(taken, v) >= hi:            # (a cheap look before the add)
            continue
        k = _atomic_add(taken, v, 1)
        if lo + k < hi:
            return lo + k
    return -1


@njit(cache=True)
def share(done, w, n):
    """Worker w's items ``first ... last-1`` of n, for a phase whose items each worker must own
    throughout (the steps): contiguous ranges in proportion to ``done`` (n_workers,), what each
    worker got through in an earlier ``claim`` phase of the same call, so that a worker slowed
    down by its core gets fewer. Every worker computes the same partition."""
    total, before = 0, 0
    for v in range(done.shape[0]):
        if v == w:
            before = total
        total += done[v]
    if total <= 0:                                       # (nothing measured: equal shares)
        return w * n // done.shape[0], (w + 1) * n // done.shape[0]
    return (n * before + total // 2) // total, (n * (before + done[w]) + total // 2) // total
