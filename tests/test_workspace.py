"""kernels/_workspace.py: reused buffers are never handed out while an array made from them lives,
and the kernels' results do not change when their buffers are reused."""

import gc
import sys
import threading

import numpy as np
import pytest

from kernels import _workspace as ws
from kernels import gru, lstm, reference, rnn

SHAPE = (64, 1024)                       # 256 KB of float32: pooled


@pytest.fixture(autouse=True)
def fresh_pool():
    ws.release()
    yield
    ws.release()


def test_empty_is_an_aligned_writable_array_of_the_asked_shape_and_dtype():
    for dtype in (np.float32, np.float64):
        a = ws.empty(SHAPE, dtype)
        assert a.shape == SHAPE and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % ws.ALIGN == 0
        a[...] = 3
        assert (a == 3).all()
    z = ws.zeros((5, 70000))
    assert z.shape == (5, 70000) and not z.any()
    assert ws.empty(70000).shape == (70000,)


def test_small_arrays_are_not_pooled():
    kept, _ = ws.pooled_bytes()
    a = ws.empty((10, 10))
    assert a.shape == (10, 10) and ws.pooled_bytes()[0] == kept


def test_a_buffer_is_reused_only_after_every_array_made_from_it_is_gone():
    a = ws.empty(SHAPE)
    address = a.ctypes.data
    b = ws.empty(SHAPE)                  # a lives: another buffer
    assert not np.shares_memory(a, b)
    view = a[3:, :10]                    # a view of a keeps the buffer taken
    del a
    gc.collect()
    c = ws.empty(SHAPE)
    assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
    del view
    gc.collect()
    d = ws.empty(SHAPE)                  # now a's buffer is free again
    assert d.ctypes.data == address
    assert ws.pooled_bytes()[1] == 0     # every kept buffer is in use (b, c, d)


def test_a_request_takes_the_smallest_free_buffer_up_to_twice_its_size():
    rows = SHAPE[0]
    big, bigger, huge = (ws.empty((n, 1024)) for n in (3 * rows // 2, 2 * rows, 3 * rows))
    addresses = [a.ctypes.data for a in (big, bigger, huge)]
    del big, bigger, huge
    gc.collect()
    a = ws.empty(SHAPE)                  # no free buffer of its size: the 1.5x one, the smallest
    b = ws.empty(SHAPE)                  # then the 2x one
    c = ws.empty(SHAPE)                  # the 3x one is too big for it: a new buffer
    assert [a.ctypes.data, b.ctypes.data] == addresses[:2]
    assert c.ctypes.data not in addresses
    assert a.shape == b.shape == c.shape == SHAPE and not np.shares_memory(a, b)
    del a
    gc.collect()
    d = ws.empty(SHAPE)                  # a buffer of its own size comes first (c's is in use,
    assert d.ctypes.data == addresses[0]  # so the 1.5x one again)
    e = ws.empty((3 * rows, 1024))       # larger requests never take a smaller buffer
    assert e.ctypes.data == addresses[2]


def test_batches_of_varying_length_reuse_buffers_instead_of_piling_them_up():
    """A training loop whose sequence length changes from batch to batch: each step makes a few
    arrays of a size set by its length and keeps them until the next step has made its own (a
    layer's cache). A buffer taken only by arrays of exactly its size piled up one set of
    buffers per length seen (here 427 MB, where two steps hold at most 24 MB at once); with
    buffers of up to twice the size serving them, 78 MB."""
    rng = np.random.default_rng(0)
    held = []
    for rows in rng.integers(256, 1024, 60):             # 1 to 4 MB of float32 each
        held = [ws.empty((int(rows), 1024)) for _ in range(3)]     # (the step before's go now)
    kept, free = ws.pooled_bytes()
    assert kept <= 120 * 2 ** 20, kept / 2 ** 20
    del held


def test_size_classes_are_at_most_a_quarter_larger_and_four_per_power_of_two():
    rng = np.random.default_rng(0)
    for n in list(rng.integers(ws.MIN_BYTES, 1 << 32, 2000)) + [1 << 20, (1 << 20) + 1]:
        pages = -(-int(n) // 4096) * 4096
        size = ws.size_class(int(n))
        assert pages <= size <= 1.25 * pages and size % 4096 == 0, n
        assert ws.size_class(size) == size                       # a class is its own class
    octave = {ws.size_class(n) for n in range((1 << 20) + 1, (1 << 21) + 1, 4096)}
    assert sorted(octave) == [k * (1 << 18) for k in (5, 6, 7, 8)]


def test_sequences_growing_a_step_at_a_time_reuse_a_few_buffers():
    """Batches one step longer each time, each freed before the next: with buffers of exactly
    the request's size every length made a new one (31 here); with size classes, three."""
    buffers = set()
    for T in range(100, 131):                            # (T, 32, 64) float32: 0.8 to 1.06 MB
        a = ws.empty((T, 32, 64))
        assert a.base.nbytes - ws.ALIGN == ws.size_class(a.nbytes)   # the buffer: its class
        buffers.add(a.base.ctypes.data)
        del a
        gc.collect()
    assert len(buffers) == 3
    assert ws.pooled_bytes()[0] == sum(ws.size_class(T * 32 * 64 * 4) for T in (100, 113, 129))


def test_a_request_that_allocates_first_drops_buffers_idle_for_idle_takes(monkeypatch):
    """Loops of varying shapes leave buffers that no later request fits; they go once they have
    not been taken for IDLE_TAKES requests, at the next request that must allocate (a loop of
    fixed shapes never allocates again, so never drops one)."""
    monkeypatch.setattr(ws, "IDLE_TAKES", 5)
    old = ws.empty(SHAPE)                                 # 256 KB
    old_bytes = old.nbytes
    del old
    gc.collect()
    wide = (SHAPE[0], 3 * SHAPE[1])                      # 3x: never served by the 256 KB one
    for _ in range(5):
        a = ws.empty(wide)                               # taken and freed: one buffer, reused
        del a
    kept = ws.pooled_bytes()[0]
    assert kept == old_bytes + 3 * old_bytes             # the idle one is still there
    held = ws.empty(wide)                                # reused: no allocation, nothing dropped
    assert ws.pooled_bytes()[0] == kept
    big = ws.empty((SHAPE[0], 7 * SHAPE[1]))             # allocates: the idle 256 KB goes first
    assert ws.pooled_bytes()[0] == 3 * old_bytes + 7 * old_bytes
    del held, big


def test_arrays_the_caller_keeps_are_not_checked_first(monkeypatch):
    """A caller that keeps many outputs (a list of predictions) leaves their buffers in the
    pool, in use; a loop's own buffers, freed and taken again, come before them, so a request
    does not check every kept one first (with 4000 kept, a small forward took twice as long)."""
    checks = []
    free = ws._free
    monkeypatch.setattr(ws, "_free", lambda bucket, i: checks.append(i) or free(bucket, i))
    kept = [ws.empty(SHAPE) for _ in range(300)]          # all in use
    for _ in range(3):
        a = ws.empty(SHAPE)                               # the loop's own: taken, freed
        del a
    checks.clear()
    for _ in range(10):
        a = ws.empty(SHAPE)
        del a
    assert len(checks) <= 10 * 2, len(checks)             # one or two looks each, not 300
    assert ws.pooled_bytes()[0] == 301 * kept[0].nbytes   # and no new buffer
    del kept


def test_release_drops_free_buffers_and_keeps_used_ones():
    a = ws.empty(SHAPE)
    b = ws.empty(SHAPE)
    del b
    kept, free = ws.pooled_bytes()
    assert free == a.nbytes and kept == 2 * a.nbytes
    assert ws.release() == a.nbytes
    assert ws.pooled_bytes() == (a.nbytes, 0)
    a[...] = 1                           # still valid
    assert (a == 1).all()


def test_the_public_name_releases_the_same_pool():
    import kernels
    a = ws.empty(SHAPE)
    del a
    gc.collect()
    assert ws.pooled_bytes()[1] > 0
    assert kernels.release_workspace() == 0 and ws.pooled_bytes() == (0, 0)


def test_over_the_limit_new_buffers_are_not_kept(monkeypatch):
    monkeypatch.setattr(ws, "LIMIT", 2 * 4 * np.prod(SHAPE))          # room for two
    a, b, c = ws.empty(SHAPE), ws.empty(SHAPE), ws.empty(SHAPE)
    assert ws.pooled_bytes()[0] == 2 * a.nbytes                         # c was not kept
    assert not (np.shares_memory(a, c) or np.shares_memory(b, c))
    address = a.ctypes.data
    del a, c
    gc.collect()
    e = ws.empty(SHAPE)                                                 # a's buffer again
    assert e.ctypes.data == address
    del e
    gc.collect()
    f = ws.empty((2 * SHAPE[0], SHAPE[1]))     # too big to keep: the free buffer is dropped
    assert ws.pooled_bytes() == (b.nbytes, 0)
    assert not np.shares_memory(f, b)


def test_threads_never_get_the_same_buffer():
    seen, errors = [], []

    def work():
        try:
            for _ in range(200):
                a = ws.empty(SHAPE)
                a[...] = threading.get_ident() % 1000
                seen.append(a)           # all stay alive: no two may share memory
        except Exception as e:           # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    addresses = {a.ctypes.data for a in seen}
    assert len(addresses) == len(seen)



def test_threads_reusing_buffers_never_share_one():
    """Buffers freed and taken again by four threads, with thread switches as often as Python
    allows: a buffer taken is in use from the moment ``_take`` hands it over (when the pool
    handed over its own tuple, another thread could take the same buffer before the caller had
    unpacked it: 4-8 clobbered pairs in 80000, in three runs of three)."""
    clobbered, errors = [0], []

    def work(value):
        try:
            for _ in range(20000):
                a = ws.empty(SHAPE)
                a[...] = value
                b = ws.empty(SHAPE)       # a second one while the first is alive
                b[...] = -value
                if a[0, 0] != value or a[-1, -1] != value or b[0, 0] != -value:
                    clobbered[0] += 1
                del a, b                  # both free again for the next round
        except Exception as e:            # noqa: BLE001 - reported below
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(k + 1,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert clobbered[0] == 0


CELLS = {
    "lstm": (lstm.lstm_forward, lstm.lstm_backward, 4),
    "gru": (gru.gru_forward, gru.gru_backward, 3),
    "rnn": (rnn.rnn_forward, rnn.rnn_backward, 1),
}


@pytest.mark.parametrize("cell, path", [("lstm", "steps"), ("lstm", "tiled"), ("gru", "steps"),
                                        ("gru", "tiled"), ("rnn", "steps"), ("rnn", "tiled")])
def test_outputs_and_caches_held_across_later_calls_stay_intact(cell, path):
    """Two forward passes on different inputs, both held; the first's outputs, and its backward
    from its own cache, equal the NumPy reference: nothing of call 1 was handed to call 2."""
    forward, backward, G = CELLS[cell]
    T, B, I, H = 40, 16, 24, 64          # a (T, B, H) float32 array is 160 KB: pooled
    rng = np.random.default_rng(0)
    W_ih = (rng.standard_normal((G * H, I)) * 0.2).astype(np.float32)
    W_hh = (rng.standard_normal((G * H, H)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(G * H) * 0.1).astype(np.float32)
    biases = (b, b[::-1].copy()) if cell == "gru" else (b,)
    kw = dict(path=path)
    x1, x2 = (rng.standard_normal((T, B, I)).astype(np.float32) for _ in range(2))
    dy1, dy2 = (rng.standard_normal((T, B, H)).astype(np.float32) for _ in range(2))

    out1 = forward(x1, W_ih, W_hh, *biases, **kw)
    out2 = forward(x2, W_ih, W_hh, *biases, **kw)
    grads2 = backward(dy2, *([None] * (len(out2) - 2)), out2[-1])
    grads1 = backward(dy1, *([None] * (len(out1) - 2)), out1[-1])
    del out2, grads2

    ref_forward = getattr(reference, f"{cell}_forward")
    ref_backward = getattr(reference, f"{cell}_backward")
    r = ref_forward(x1.astype(np.float64), W_ih.astype(np.float64), W_hh.astype(np.float64),
                    *(v.astype(np.float64) for v in biases))
    rg = ref_backward(dy1.astype(np.float64), *([None] * (len(r) - 2)), r[-1])
    for got, want in zip(out1[:-1], r[:-1]):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    for got, want in zip(grads1, rg):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_holds_the_lock_can_still_allocate():
    import os
    held, release = threading.Event(), threading.Event()

    def hold():
        with ws._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:                                     # the child: would block forever on the
        try:                                         # parent's held lock without the reset
            a = ws.empty(SHAPE)
            a[...] = 1
            os._exit(0 if a.sum() == a.size else 1)
        except BaseException:                        # noqa: BLE001 - exit code says it
            os._exit(2)
    release.set()
    t.join()
    for _ in range(200):                             # up to ~10 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child blocked on the workspace lock")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_the_suite_fills_every_fresh_float_buffer_with_nan():
    """conftest sets ``FILL = NaN`` so that a kernel reading an entry it never wrote (a padding
    row of a tiled output left unzeroed, say) fails its test instead of passing on whatever
    the memory held: several checks rely on it, so the setting itself is checked here."""
    assert np.isnan(ws.FILL)
    for shape in ((3, 5), (64, 1024)):                   # below and from MIN_BYTES (pooled)
        for dtype in (np.float32, np.float64):
            assert np.isnan(ws.empty(shape, dtype)).all()
