"""``kernels._pair``: two kernel calls at once, one per core (the two directions of a
bidirectional layer), and the layers' use of it."""

import os
import threading

import numba
import numpy as np
import pytest

import kernels._pair as kp
from _buffers import assert_backward_ignores_a_refilled_input
from kernels import _gemm, gru_tiled, rnn_tiled
import rnncore
from rnncore import GRU, LSTM, RNN


def test_run_pair_runs_both_at_once_and_returns_in_order():
    meet = threading.Barrier(2, timeout=20)            # one after the other would time out here
    names = []

    def call(name):
        def f():
            meet.wait()
            names.append(threading.current_thread().name)
            return name
        return f

    assert kp.run_pair(call("first"), call("second")) == ("first", "second")
    assert threading.current_thread().name in names and len(set(names)) == 2


@pytest.mark.parametrize("fails", [False, True])
def test_the_worker_keeps_nothing_of_a_call_once_it_is_handed_back(fails):
    """After a pair, neither the call the worker ran nor its result (a layer's cache and
    gradients, through them the kernels' pooled buffers) may stay alive in the worker thread
    until the next pair: they kept ~100 MB of a dropped bidirectional layer's buffers."""
    import gc
    import weakref

    class Big:                                           # stands for a call's arrays
        pass

    made = []

    def second():
        made.append(Big())
        if fails:
            raise ValueError("second failed")
        return made[-1]

    class Call:                                          # a callable that can be weakly referenced
        def __call__(self):
            return second()

    call = Call()
    if fails:
        with pytest.raises(ValueError, match="second failed"):
            kp.run_pair(lambda: None, call)
    else:
        assert kp.run_pair(lambda: None, call)[1] is made[0]
    result, called = weakref.ref(made.pop()), weakref.ref(call)
    del call
    gc.collect()
    assert result() is None and called() is None


@pytest.mark.parametrize("failing", [0, 1])
def test_run_pair_raises_either_error_after_both_ended(failing):
    done = []

    def ok():
        done.append(1)
        return 1

    def bad():
        raise ValueError("x: no")

    calls = (bad, ok) if failing == 0 else (ok, bad)
    with pytest.raises(ValueError, match="x: no"):
        kp.run_pair(*calls)
    assert done == [1]


def test_run_pair_gives_blas_one_thread_meanwhile_and_restores_it():
    before = kp.blas_threads()
    seen = kp.run_pair(kp.blas_threads, kp.blas_threads)
    assert seen == ([1] * len(before), [1] * len(before))
    assert kp.blas_threads() == before


def test_blas_threads_finds_the_openblas_the_kernels_call():
    import scipy.linalg.cython_blas  # noqa: F401  (loaded by kernels already)
    assert kp.blas_threads(), "no OpenBLAS found: bidirectional layers would never pair"


def test_pays_needs_the_work_and_two_of_numbas_threads():
    assert not kp.pays(kp.MIN_WORK - 1)
    n = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        assert not kp.pays(kp.MIN_WORK)
        return
    numba.set_num_threads(2)
    try:
        assert kp.pays(kp.MIN_WORK)
        numba.set_num_threads(1)
        assert not kp.pays(kp.MIN_WORK)
    finally:
        numba.set_num_threads(n)


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_paired_directions_give_the_same_numbers(cls, monkeypatch):
    """float64 (the serial kernels either way): bit for bit the same as one after the other."""
    rng = np.random.default_rng(5)
    T, B, I, H = 6, 5, 7, 9
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, 2 * H))
    lengths = rng.integers(1, T + 1, B)
    m = cls(I, H, num_layers=2, bidirectional=True, dtype=np.float64)
    runs = []
    for paired in (False, True):
        monkeypatch.setattr("rnncore.recurrent._pair_pays", lambda work: paired)
        m.zero_grad_parameters()
        y = m.forward(x, lengths=lengths)
        assert m._cache["paired"] == paired
        dx = m.backward(x, dy)
        runs.append([y, m.h_n, dx, m.grad_h0] + [p.grad.copy() for p in m.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_the_rule_pairs_a_mid_sized_float32_layer_and_agrees_with_one_after_the_other(monkeypatch):
    """(16, 16, 32, 64) LSTM: 6.3M multiply-adds per direction, paired by the real rule where
    two threads and an OpenBLAS are available; one after the other gives the same numbers
    (both run the serial kernel at this shape: test_recurrent checks the tiled one)."""
    rng = np.random.default_rng(6)
    T, B, I, H = 16, 16, 32, 64
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    m = LSTM(I, H, bidirectional=True)
    y = m.forward(x)
    expected_pair = kp.pays(T * B * 4 * H * (I + H))
    assert m._cache["paired"] == expected_pair
    dx = m.backward(x, dy)
    grads = [p.grad.copy() for p in m.parameters()]
    monkeypatch.setattr("rnncore.recurrent._pair_pays", lambda work: not expected_pair)
    m.zero_grad_parameters()
    np.testing.assert_allclose(m.forward(x), y, atol=2e-5)
    np.testing.assert_allclose(m.backward(x, dy), dx, atol=2e-4)
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_allclose(p.grad, g, atol=2e-4 * max(1.0, np.abs(g).max()))


def _paired_forward_in_child(queue):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3, 5))
    m = GRU(5, 6, bidirectional=True, dtype=np.float64)
    import rnncore.recurrent as rr
    rr._pair_pays = lambda work: True
    y = m.forward(x)
    queue.put((m._cache["paired"], y.shape))


def test_a_forked_child_pairs_with_its_own_worker():
    """After a fork the parent's worker thread is not in the child: the child must start its
    own (a stale one would leave the child waiting for a result forever)."""
    import multiprocessing as mp
    kp.run_pair(lambda: 0, lambda: 1)                   # the parent's worker exists
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_paired_forward_in_child, args=(q,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in a paired call")
    assert child.exitcode == 0
    assert q.get(timeout=5) == (True, (4, 3, 12))


def test_no_pair_inside_a_pair():
    """A call made inside a pair runs as it is (a nested pair would wait on itself)."""
    assert kp.run_pair(lambda: kp.pays(kp.MIN_WORK), lambda: kp.pays(kp.MIN_WORK)) == (False, False)


def _halves_runs(m, x, dy, lengths, h0, halves, monkeypatch, calls=1):
    monkeypatch.setattr("rnncore.recurrent._pair_pays", lambda work: True)
    monkeypatch.setattr(m, "_halves_from", 0 if halves else None)
    out = []
    rnncore.manual_seed(3)                               # the same dropout masks both ways
    m.forget()
    for _ in range(calls):
        m.zero_grad_parameters()
        y = m.forward(x, lengths=lengths, h0=h0)
        assert m._cache["halves"] == halves
        dx = m.backward(x, dy)
        out += [np.asarray(y), m.h_n, np.asarray(dx), m.grad_h0] + [p.grad.copy() for p in m.parameters()]
    return out


@pytest.mark.parametrize("cell", [RNN, GRU])
@pytest.mark.parametrize("layers, return_sequences, dropout, as_list, remember", [
    (1, True, 0.0, False, False), (2, False, 0.3, False, False), (3, True, 0.5, True, True)])
def test_batch_in_halves_gives_the_same_numbers(cell, layers, return_sequences, dropout, as_list,
                                                remember, monkeypatch):
    """RNN and GRU (the cells that run in halves), float64, an odd batch (halves of 3 and 4),
    ragged, h0 given (or carried by remember() over two calls), dropout between layers in
    training mode, a list input."""
    rng = np.random.default_rng(9)
    T, B, I, H = 6, 7, 5, 4
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(1, T + 1, B)
    h0 = None if remember else rng.standard_normal((layers, B, H))
    dy = rng.standard_normal((T, B, H) if return_sequences else (B, H))
    if as_list:
        x, dy = list(x), (list(dy) if return_sequences else dy)
    m = cell(I, H, num_layers=layers, return_sequences=return_sequences, dropout=dropout,
             dtype=np.float64)
    if remember:
        m.remember()
    calls = 2 if remember else 1
    whole = _halves_runs(m, x, dy, lengths, h0, False, monkeypatch, calls)
    halves = _halves_runs(m, x, dy, lengths, h0, True, monkeypatch, calls)
    for a, b in zip(whole, halves):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", [RNN, GRU])
def test_batch_in_halves_passes_gradcheck(cell, monkeypatch):
    monkeypatch.setattr("rnncore.recurrent._pair_pays", lambda work: True)
    m = cell(3, 4, num_layers=2, dtype=np.float64)
    monkeypatch.setattr(cell, "_halves_from", 0)
    x = np.random.default_rng(10).standard_normal((5, 6, 3))
    m.forward(x)
    assert m._cache["halves"]
    assert rnncore.gradcheck(m, x, lengths=np.array([5, 2, 4, 1, 5, 3])) < 1e-7


def test_which_layers_run_in_halves():
    """The real rule, float32: a one-directional RNN from 2^25 multiply-adds where its kernel
    is not tiled (its tiled kernel, on AVX-512 CPUs, shares the steps), a GRU from 2^27 on
    AVX-512 CPUs where its kernel is not tiled, and from 2^31 on AVX2 ones; not the LSTM (its tiled kernel shares the steps),
    nor a bidirectional RNN (its directions pair, each on its serial kernel)."""
    T, B, I, H = 16, 32, 64, 256                         # 16 * 32 * 256 * 320 = 2^25.3
    x = np.zeros((T, B, I), np.float32)
    can = kp.pays(T * B * H * (I + H))
    tiled = rnn_tiled.use_tiled(np.float32, T, B, I, H)
    assert tiled == (_gemm.VECTOR == 16)                 # (the RNN's tiled kernel: AVX-512 only)
    m = RNN(I, H)
    m.forward(x)
    assert m._cache["halves"] == (can and not tiled)
    assert isinstance(m._cache["caches"][0][0], str) == tiled   # ("tiled": its cache)
    m.forward(np.zeros((8 * T, B // 8, I), np.float32))  # 2^25.3, 4 rows: never tiled
    assert m._cache["halves"] == can
    if can:                                              # each half on the serial kernel
        assert all(not isinstance(c[0], str) for c in m._cache["caches"][0][:2])
    m.forward(x[:, :8])                                  # 2^23.3: below
    assert not m._cache["halves"]
    m.forward(x[:, :16])                                 # 2^24.3: below too
    assert not m._cache["halves"]
    lstm = LSTM(I, H)
    lstm.forward(x)
    assert not lstm._cache["halves"]
    avx512 = _gemm.VECTOR == 16
    gru = GRU(I, H)                                      # 3 gates: 2^26.9
    gru.forward(x)
    assert not gru._cache["halves"]
    work = 2 * T * B * 3 * H * (I + H)                  # 2^27.9
    gru.forward(np.zeros((16 * T, B // 8, I), np.float32))   # the same work, 4 rows: not tiled
    assert gru._cache["halves"] == (kp.pays(work) and avx512)
    tiled = gru_tiled.use_tiled(np.float32, 2 * T, B, I, H)
    gru.forward(np.zeros((2 * T, B, I), np.float32))     # tiled where auto says
    assert isinstance(gru._cache["caches"][0][0], str) == tiled
    assert gru._cache["halves"] == (kp.pays(work) and avx512 and not tiled)
    big = 1 << 31                                        # (asked, not run: ~4 GFLOP)
    assert gru._runs_tiled(T, B) == avx512               # AVX-512: a tiled batch runs whole
    assert gru._batch_in_halves(T, B, big) == (kp.pays(big) and not avx512)
    assert not gru._batch_in_halves(T, B, big - 1)
    assert gru._batch_in_halves(T, 4, big - 1) == (kp.pays(big - 1) and avx512)   # not tiled
    large = GRU(512, 512)                                # (asked, not run)
    assert large._runs_tiled(100, 64) == avx512          # tiled, with BLAS's weight gradients
    assert large._batch_in_halves(100, 64, 1 << 33) == (kp.pays(1 << 33) and not avx512)
    large._tiled_first = False                           # (an instance's own: halves again,
    assert not large._runs_tiled(100, 64)                # as benchmarks/choices times them)
    bi = RNN(I, H, bidirectional=True)
    bi.forward(x)
    assert not bi._cache["halves"] and bi._cache["paired"] == can
    if can:                                              # each direction on the serial kernel
        assert all(not isinstance(c[0], str) for c in bi._cache["caches"])


def test_a_pair_interrupted_while_waiting_leaves_no_stale_result(monkeypatch):
    """Ctrl-C while the caller waits for the worker: the worker's late result must not be taken
    as the next pair's (the wait is finished before the interrupt goes on, and the same worker,
    idle again, serves the next pair)."""
    import time
    kp.run_pair(lambda: 0, lambda: 0)
    worker = kp._worker
    real = kp._Worker.outcome
    calls = []

    def interrupted(self):
        if not calls:
            calls.append(1)
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(kp._Worker, "outcome", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kp.run_pair(lambda: "a", lambda: (time.sleep(0.2), "late")[1])
    monkeypatch.setattr(kp._Worker, "outcome", real)
    assert kp._worker is worker and not worker.busy
    assert kp.run_pair(lambda: "first", lambda: "second") == ("first", "second")


@pytest.mark.parametrize("T", [1, 4])                   # (T = 1: a batch half is contiguous)
def test_halves_keep_no_reference_to_the_callers_x(monkeypatch, T):
    """A batch in halves copies each half for its kernel: refilling the caller's x before the
    backward changes no gradient (the module copies x itself only where it runs whole)."""
    import kernels._pair as kp
    monkeypatch.setattr(kp, "MIN_WORK", 0)
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((T, 4, 3)), rng.standard_normal((T, 4, 2))
    rnncore.manual_seed(0)
    m = rnncore.RNN(3, 2, dtype=np.float64)
    m._halves_from = 0
    m.forward(x)
    assert m._cache["halves"]
    assert_backward_ignores_a_refilled_input(m, x, gy)


@pytest.mark.parametrize("where", [(0, 0, 0), (2, 1, 1), (3, 2, 2), (3, 4, 0)])  # both halves
def test_halves_compare_another_x_with_their_own_copies(monkeypatch, where):
    """A batch in halves keeps no copy of the whole input (its halves' copies are what backward
    compares another x object with, ``_pair.ran_on``): an equal copy gets the same gradients,
    one value changed in either half (odd batch: halves of 2 and 3) is refused, and the
    refusal changes no gradient."""
    monkeypatch.setattr(kp, "MIN_WORK", 0)
    rng = np.random.default_rng(1)
    x, gy = rng.standard_normal((4, 5, 3)), rng.standard_normal((4, 5, 2))
    m = rnncore.GRU(3, 2, dtype=np.float64)
    m._halves_from = 0
    m.forward(x)
    assert m._cache["halves"] and m._cache["x_kept"] is None
    want = m.backward(x, gy)
    grads = [p.grad.copy() for p in m.parameters()]
    np.testing.assert_array_equal(m.backward(x.copy(), gy), want)
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_array_equal(p.grad, 2 * g)
    other = x.copy()
    other[where] += 1e-9
    with pytest.raises(ValueError, match="x: expected the input of the last forward"):
        m.backward(other, gy)
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_array_equal(p.grad, 2 * g)


def test_another_threads_pair_does_not_change_what_pays_says():
    """Which kernels a call runs (so its float32 rounding) must not depend on other threads:
    while a pair runs in one thread, ``pays`` still says yes in another (whose pair then waits
    for the lock), and no only inside the pair itself."""
    import threading
    if not kp.pays(kp.MIN_WORK):
        assert not kp.run_pair(lambda: kp.pays(kp.MIN_WORK), lambda: 0)[0]
        return
    started, release, seen = threading.Event(), threading.Event(), []

    def long_pair():
        kp.run_pair(lambda: (started.set(), release.wait(30)), lambda: kp.pays(kp.MIN_WORK))

    t = threading.Thread(target=long_pair)
    t.start()
    try:
        assert started.wait(30)
        seen.append(kp.pays(kp.MIN_WORK))                   # another thread, pair running
    finally:
        release.set()
        t.join(30)
    assert seen == [True]
    assert kp.run_pair(lambda: kp.pays(kp.MIN_WORK), lambda: kp.pays(kp.MIN_WORK)) == (False, False)


class _Stop(Exception):
    pass


def test_an_interrupt_while_waiting_for_the_worker_waits_for_its_call_to_end():
    """An exception from a signal handler (Ctrl-C's KeyboardInterrupt, a timeout) that arrives
    while the caller waits for the worker: raised once the worker's call has ended, and the
    same worker serves the next pair (it had been dropped while still running its call: a
    thread left per interrupt, and at exit a crash or a hang inside OpenBLAS)."""
    import signal
    import threading
    import time
    kp.run_pair(lambda: 0, lambda: 0)
    worker, threads = kp._worker, threading.active_count()
    ended = []

    def slow():
        time.sleep(2.0)
        ended.append(time.monotonic())

    def stop(signum, frame):
        raise _Stop()

    old = signal.signal(signal.SIGUSR1, stop)
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        with pytest.raises(_Stop):
            kp.run_pair(lambda: None, slow)                  # waits in outcome() for slow
        raised = time.monotonic()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert ended and ended[0] <= raised                      # raised after the call ended
    assert kp._worker is worker and not worker.busy
    assert kp.run_pair(lambda: 1, lambda: 2) == (1, 2)
    time.sleep(0.1)                                          # (the timer thread ends)
    assert threading.active_count() <= threads


def test_blas_counts_come_back_after_an_interrupted_restore(monkeypatch):
    """An interrupt in the middle of setting the counts back leaves them at 1 only until the
    next pair (or a forked child) finishes the restore."""
    counts = [2, 4]
    fail = {"once": False}

    def control(i):
        def get():
            return counts[i]

        def set_(n):
            if fail["once"] and n != 1:
                fail["once"] = False
                raise _Stop()
            counts[i] = n
        return get, set_

    monkeypatch.setattr(kp, "_controls", [control(0), control(1)])
    assert kp.run_pair(lambda: list(counts), lambda: 0)[0] == [1, 1]
    assert counts == [2, 4]
    fail["once"] = True
    with pytest.raises(_Stop):
        kp.run_pair(lambda: 0, lambda: 0)                    # the restore raises halfway
    assert counts == [1, 1]
    kp.run_pair(lambda: 0, lambda: 0)
    assert counts == [2, 4]
    fail["once"] = True
    with pytest.raises(_Stop):
        kp.run_pair(lambda: 0, lambda: 0)
    monkeypatch.setattr(kp, "_worker", kp._worker)           # (put back after the test)
    monkeypatch.setattr(kp, "_lock", kp._lock)
    kp._after_fork_in_child()                                # what a forked child does
    assert counts == [2, 4]


def test_a_storm_of_signals_never_hangs_a_pair_nor_leaves_its_worker_busy():
    """A signal handler that raises, armed around each run_pair while signals arrive every
    ~0.3 ms: each exception comes out of run_pair after its pair has ended (the handlers are
    deferred), never between its steps (a result taken from the queue and then lost had left
    the next wait waiting forever)."""
    import signal
    import threading
    import time
    kp.run_pair(lambda: 0, lambda: 0)
    worker = kp._worker
    stop, armed, raised, done = threading.Event(), [False], [0], [0]

    def handler(signum, frame):
        if armed[0]:                                      # one exception per arming
            armed[0] = False
            raise _Stop()

    def storm():
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.0003)

    old = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Thread(target=storm, daemon=True)
    sender.start()
    deadline = time.monotonic() + 60
    try:
        while done[0] + raised[0] < 300 and time.monotonic() < deadline:
            try:
                armed[0] = True
                out = kp.run_pair(lambda: "a", lambda: (time.sleep(0.001), "b")[1])
                armed[0] = False
                assert out == ("a", "b")
                done[0] += 1
            except _Stop:
                raised[0] += 1
            assert not worker.busy and kp._worker is worker
    finally:
        armed[0] = False
        stop.set()
        sender.join(10)
        signal.signal(signal.SIGUSR1, old)
    assert done[0] + raised[0] >= 300 and raised[0] > 0


def test_signal_handlers_run_once_the_pair_has_ended():
    """A signal arriving while a pair runs (here sent by the worker's call itself): its Python
    handler runs after the pair, with the pair's lock released, not in the middle of it."""
    import signal
    import time
    seen = []

    def handler(signum, frame):
        seen.append((kp._lock.locked(), getattr(kp._inside, "pair", False)))

    def second():
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        return "b"

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        assert kp.run_pair(lambda: (time.sleep(0.1), "a")[1], second) == ("a", "b")
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert seen == [(False, False)]
    assert signal.getsignal(signal.SIGUSR1) is old
