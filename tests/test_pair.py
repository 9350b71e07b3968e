"""``kernels._pair``: two kernel calls at once, one per core (the two directions of a
bidirectional layer), and the layers' use of it."""

import threading

import numba
import numpy as np
import pytest

import kernels._pair as kp
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
    two threads and an OpenBLAS are available; one after the other runs the tiled kernel."""
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
