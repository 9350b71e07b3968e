"""Two independent kernel calls at once, one per core: the two directions of a bidirectional
layer (CPU).

Why. The directions of a bidirectional layer are two recurrences over the same input that share
nothing until their outputs are concatenated. Run one after the other, each spreads every step
over both cores (BLAS's threads for the per-step product, or the tiled kernels' team) and meets
at every step, which at mid-sized shapes leaves the cores idle part of the time. Run side by
side, each direction on one core with BLAS on one thread, they never wait for each other.

Measured on a 2-core AMD EPYC (Zen 3), float32, time paired / one after the other, median over
9-11 alternated pairs of runs. A 2-layer bidirectional module, forward + backward:

    (T, B, I, H)        LSTM    GRU     RNN
    (8, 8, 2, 100)      0.92x   0.85x   (not paired: below MIN_WORK)
    (32, 16, 64, 128)   0.85x   0.83x   0.90x
    (64, 32, 128, 256)  1.00x   0.86x   0.76x    (an earlier run: 0.92x, 0.92x, 0.80x)

One layer's two directions through the kernels alone: level (0.98-0.99x) for the LSTM at
(16, 16, 32, 128) and (100, 64, 512, 512); at (5, 1, 6, 6) pairing took twice as long (the
handover costs more than the work). All layers of a call pair or none: with only the second
layer paired, the GRU at (8, 8, 2, 100) took 1.4x as long (not analysed further; BLAS's
second thread, idle during the paired layer, waking for the other is the likely cost).

How. ``run_pair(first, second)`` hands ``second`` to a worker thread (one per process, kept
for the next call), runs ``first`` on the caller's and waits for both, with every loaded
OpenBLAS limited to one thread meanwhile (then set back). The serial cores release the GIL
(``nogil=True``), so the two threads compute at the same time. The callers ask for the serial
kernels (``path="steps"``): the tiled ones run on Numba's thread pool, which one process cannot
enter from two threads at once.

When (``pays``). At least ``MIN_WORK`` multiply-adds in each call's forward, so that the
handover to the worker (~20 us) is small next to the call; at least two of Numba's threads
(``numba.get_num_threads()``: ``NUMBA_NUM_THREADS=1`` or ``numba.set_num_threads(1)`` keeps
everything on one core); and an OpenBLAS whose thread count can be set (found among the loaded
libraries). Otherwise the calls run one after the other, as before.

One pair at a time per process (a lock): the BLAS setting is process-wide. Another thread of
the program calling BLAS during a pair gets one BLAS thread for that while, and OpenBLAS on one
thread sums in another order than on two: that call's results then differ from the same call
alone in the last bits (~1e-7 relative in float32; measured 2.9e-6 at a dW_ih of scale 17),
the one way what other threads do reaches a result. Another thread's pair waits for the lock
(it does not fall back to unpaired kernels, which would differ by the same kind of rounding). A KeyboardInterrupt (Ctrl-C)
during a pair takes effect once both calls have ended, and the BLAS counts are set back even
if it cuts the restore short (the next pair, or a forked child, finishes it).
"""

import os
import queue
import signal
import threading

import numba
import numpy as np

from ._blas_env import openblas_libraries
from ._gemm import VECTOR

__all__ = ["MIN_WORK", "pays", "run_pair", "blas_threads", "openblas_libraries",
           "forward_in_halves", "backward_in_halves"]

# MIN_WORK: multiply-adds of one call's forward, T B g H (I + H), g = gates per unit (4 LSTM, 3 GRU,
# 1 RNN). From 2^20 on the AMD EPYC above. On a 2-core Xeon (AVX-512), a 2-layer bidirectional
# module's fwd+bwd, paired / one direction after the other, medians of 15-41 alternated rounds:
# slower at (8, 8, 2, 64) (LSTM, 2^20.0) 1.27x and (8, 8, 2, 100) (2^21.3) LSTM 1.09-1.15x, GRU
# 1.24x; level around 2^22 ((16, 8, 2, 100) and (8, 16, 2, 100) both cells, (16, 16, 8, 64) LSTM
# 0.92x, GRU 1.10x); faster from 2^23 ((8, 8, 2, 200) LSTM 0.94x, GRU 0.90x; (32, 8, 16, 100) 0.80x;
# (16, 16, 32, 128) 0.73x and 0.70x). Hence 2^22 with AVX-512.
MIN_WORK = (1 << 22) if VECTOR == 16 else (1 << 20)

_lock = threading.Lock()
_controls = None           # [(get, set)] of every loaded OpenBLAS, found on first use


_restore_to = None         # BLAS thread counts to set back, while a pair holds them at 1
_inside = threading.local()   # .pair: this thread is a pair's caller or its worker


def _after_fork_in_child():
    """A forked child has only the thread that forked: a fresh lock, and no worker yet; and
    if another thread of the parent was inside a pair, the child's BLAS gets its counts back."""
    global _lock, _worker, _restore_to
    _lock = threading.Lock()
    _worker = None
    if _restore_to is not None:
        for (_, set_), n in zip(_controls, _restore_to):
            set_(n)
        _restore_to = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def blas_threads():
    """The thread counts of the loaded OpenBLAS libraries (a list; empty if none was found)."""
    global _controls
    if _controls is None:
        _controls = [(get, set_) for _, get, set_, _ in openblas_libraries()]
    return [get() for get, _ in _controls]


def pays(work):
    """Whether two calls of ``work`` multiply-adds each (forward) should run at once. Not for
    a call made inside a pair (it would wait on itself); a pair of another thread does not
    change the answer (the call then waits for the lock), so that which kernels a call runs
    does not depend on what other threads are doing (its BLAS thread count may: see above)."""
    return (work >= MIN_WORK and not getattr(_inside, "pair", False)
            and numba.get_num_threads() >= 2 and bool(blas_threads()))


class _Worker:
    """One thread that runs what it is given, one call at a time, for the life of the process
    (a daemon: it does not keep the program alive). Handing it a call and getting the result
    back took ~20 us on the KVM machine; starting and joining a new thread each time, 120-145.
    The result waits in a slot, flagged by an event, until ``outcome`` takes it: an interrupt
    anywhere in the waiting cannot lose it (a queue's ``get`` could return it and then be
    interrupted before its caller had it, leaving the next wait to wait forever)."""

    def __init__(self):
        self._todo = queue.SimpleQueue()
        self._ended = threading.Event()
        self._result = None
        self.busy = False                                # a call handed over, outcome not taken
        threading.Thread(target=self._loop, name="rnncore-pair", daemon=True).start()

    def _loop(self):
        _inside.pair = True                              # all this thread runs is in a pair
        while True:
            f = self._todo.get()
            try:
                result = (True, f())
            except BaseException as e:                  # handed back, raised in the caller
                result = (False, e)
            self._result = result
            # The call and its result are the caller's from here on: this thread's names for
            # them would otherwise keep them (a layer's cache, its gradients, through them the
            # buffers of kernels._workspace) alive until the next pair, for good after the last
            f = result = None
            self._ended.set()

    def start(self, f):
        self._ended.clear()
        self.busy = True
        self._todo.put(f)

    def outcome(self):
        """(True, value) or (False, exception) of the call handed over, once it has ended.

        Waits for it even through an exception raised by a signal handler (Ctrl-C's
        KeyboardInterrupt; raised once the call has ended): the call is native code that cannot
        be stopped, and a worker left running it would be inside OpenBLAS when the interpreter
        exits and the library is torn down (a crash or a hang at exit, seen after Ctrl-C), or
        keep its thread and arrays for good. (``run_pair`` also defers signal handlers.)"""
        interrupted = None
        while not self._ended.is_set():
            try:
                self._ended.wait()
            except BaseException as e:                  # noqa: BLE001 - raised below
                interrupted = interrupted or e
        result, self._result = self._result, None
        self.busy = False
        if interrupted is not None:
            raise interrupted
        return result


_worker = None

# Signals whose Python handlers run_pair defers (on the main thread, where Python runs them):
# a handler that raises (Ctrl-C's KeyboardInterrupt, a timeout's exception) could otherwise do
# so between any two steps of the pair, wherever the signal was delivered (a process-directed
# signal lands on any thread, the worker's or OpenBLAS's included).
_DEFERRED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGALRM", "SIGHUP",
                                               "SIGUSR1", "SIGUSR2") if hasattr(signal, n))


def run_pair(first, second):
    """``(first(), second())``, computed at the same time on two threads with BLAS on one thread
    each (see the module doc). Both have ended when it returns or raises; an exception in
    ``first`` is raised, else one in ``second``.

    On the main thread, the Python handlers of ``_DEFERRED`` signals that arrive meanwhile run
    when the pair has ended (once per signal), so that a KeyboardInterrupt is raised from a
    consistent state. The pair's calls are native code that Python could not interrupt anyway:
    a handler runs only when they return. (Swapping a handler in and back costs ~8 us on the
    2-core Xeon, against a pair's handover of 50-110 us there; SIGINT's is always swapped.)"""
    if threading.current_thread() is not threading.main_thread():
        return _run_pair(first, second)
    saved, arrived = {}, []

    def later(signum, frame):
        if signum not in arrived:
            arrived.append(signum)

    try:
        for s in _DEFERRED:
            handler = signal.getsignal(s)
            if callable(handler):
                saved[s] = handler
                signal.signal(s, later)
        return _run_pair(first, second)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        for s in arrived:                                # now that the pair has ended
            saved[s](s, None)


def _run_pair(first, second):
    global _worker, _restore_to
    with _lock:
        if _worker is None:
            _worker = _Worker()
        worker = _worker
        try:
            # (a restore an interrupt cut short is finished here: its counts are the real ones)
            if _restore_to is None:
                _restore_to = blas_threads()
            for _, set_ in _controls:
                set_(1)
            _inside.pair = True
            try:
                worker.start(second)
                a = first()
            finally:
                ok, b = worker.outcome() if worker.busy else (True, None)   # whatever first() did
            if not ok:
                raise b
            return a, b
        finally:
            _inside.pair = False
            if worker.busy:                              # (an exception inside outcome's wait)
                worker.outcome()
            if _restore_to is not None:
                for (_, set_), n in zip(_controls, _restore_to):
                    set_(n)
                _restore_to = None


# ---------------------------------------------------------------------------------------------
# One direction's batch in two halves (the RNN's serial kernel at mid and large shapes)
# ---------------------------------------------------------------------------------------------

def _rows(a, half, axis):
    """Batch half ``half`` (0 or 1) of ``a`` along ``axis`` as a new C-contiguous array (None
    stays): a copy even where the slice is contiguous (T = 1), since the kernel's cache keeps
    it and the caller may refill its own array before the backward."""
    if a is None:
        return None
    B = a.shape[axis]
    rows = slice(0, B // 2) if half == 0 else slice(B // 2, B)
    return a[(slice(None),) * axis + (rows,)].copy()


def forward_in_halves(forward, n_biases, n_states):
    """``forward`` (a cell's kernel: ``forward(x, W_ih, W_hh, *biases, *state_0, lengths,
    reverse, **kw) -> (y, *state_n, cache)``) with the batch split into two halves computed at
    once (``run_pair``); same results, merged: y and the final states side by side along the
    batch, the cache a pair for ``backward_in_halves``.

    Why: sequences of a batch never interact, so each half is a recurrence of its own, and one
    per core needs no sharing at all; for the tanh RNN, whose serial kernel leaves each step's
    product to one core (or to BLAS's two threads) and its pointwise pass to one core, this
    measured faster from mid-sized shapes (``rnncore.RNN._halves_from`` has the numbers)."""
    def run(x, W_ih, W_hh, *rest, **kw):
        biases, states = rest[:n_biases], rest[n_biases:n_biases + n_states]
        lengths, reverse = rest[n_biases + n_states:]
        xs = [_rows(x, h, 1) for h in (0, 1)]

        def half(h):
            return forward(xs[h], W_ih, W_hh, *biases,
                           *[_rows(s, h, 0) for s in states], _rows(lengths, h, 0), reverse, **kw)

        (y0, *s0, c0), (y1, *s1, c1) = run_pair(lambda: half(0), lambda: half(1))
        return (np.concatenate([y0, y1], axis=1),
                *[np.concatenate(pair, axis=0) for pair in zip(s0, s1)], (c0, c1, xs))
    return run


def ran_on(x, cache):
    """Whether ``x`` (T, B, ...) holds the values that the ``forward_in_halves`` call which
    returned ``cache`` ran on: it keeps copies of both halves (the kernels' caches hold them
    anyway), so a module need not keep a third copy of its whole input to compare with."""
    x0, x1 = cache[2]
    B = x.shape[1]
    return np.array_equal(x[:, :B // 2], x0) and np.array_equal(x[:, B // 2:], x1)


def backward_in_halves(backward, n_params, n_states):
    """The backward of ``forward_in_halves``: ``backward(dy, *dstate_n, cache) -> (dx, *dparams,
    *dstate_0)`` per half, at once; dx and the initial states' grads side by side along the
    batch, each parameter's grads of the two halves summed."""
    def run(dy, *rest):
        dstate_n, (c0, c1, _) = rest[:n_states], rest[n_states]

        def half(h, cache):
            return backward(_rows(dy, h, 1), *[_rows(d, h, 0) for d in dstate_n], cache)

        (dx0, *r0), (dx1, *r1) = run_pair(lambda: half(0, c0), lambda: half(1, c1))
        return (np.concatenate([dx0, dx1], axis=1),
                *[a + b for a, b in zip(r0[:n_params], r1[:n_params])],
                *[np.concatenate(pair, axis=0) for pair in zip(r0[n_params:], r1[n_params:])])
    return run
