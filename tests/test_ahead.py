"""kernels._ahead: a cold cache's backward cores compiled in a second process, loaded from the cache."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from numba import njit

from kernels import _ahead, gru, lstm, reference, rnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [("lstm", "steps", np.float32), ("lstm", "steps", np.float64), ("lstm", "tiled", np.float32),
         ("gru", "steps", np.float32), ("gru", "steps", np.float64), ("gru", "tiled", np.float32),
         ("rnn", "steps", np.float32), ("rnn", "steps", np.float64), ("rnn", "tiled", np.float32)]


def _run_cell(cell, path, dtype, rng, T=3, B=2, I=4, H=5):
    """One forward and backward of the cell's kernels (``path`` forced)."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W = [rng.standard_normal(s).astype(dtype) for s in ((G * H, I), (G * H, H))]
    b = [np.zeros(G * H, dtype)] * (2 if cell == "gru" else 1)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    if cell == "rnn":
        return rnn.rnn_backward(dy, None, rnn.rnn_forward(x, *W, *b, path=path)[-1])
    if cell == "gru":
        return gru.gru_backward(dy, None, gru.gru_forward(x, *W, *b, path=path)[-1])
    return lstm.lstm_backward(dy, None, None, lstm.lstm_forward(x, *W, *b, path=path)[-1])


@pytest.mark.parametrize("cell, path, dtype", CASES)
def test_specs_are_the_signatures_the_kernels_compile(cell, path, dtype, rng):
    _run_cell(cell, path, dtype, rng)
    assert _ahead.signature(cell, path, dtype) in _ahead._core(cell, path).signatures


@pytest.mark.skipif(_ahead._usable_cpus() < 2, reason="compile ahead is off with one usable CPU")
def test_cold_cache_backward_is_loaded_from_what_the_child_compiled(tmp_path):
    # A fresh process with an empty cache: the forward starts the child, the backward waits for
    # it and Numba loads the core from the cache (a hit, no compile here), with right gradients.
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from kernels import lstm, reference
        rng = np.random.default_rng(0)
        T, B, I, H = 4, 3, 2, 8
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        W_ih, W_hh = (rng.standard_normal((4 * H, k)).astype(np.float32) * 0.3 for k in (I, H))
        b = rng.standard_normal(4 * H).astype(np.float32) * 0.1
        dy = rng.standard_normal((T, B, H)).astype(np.float32)
        cache = lstm.lstm_forward(x, W_ih, W_hh, b, path="steps")[-1]
        grads = lstm.lstm_backward(dy, None, None, cache)
        ref = reference.lstm_backward(dy, None, None, reference.lstm_forward(
            x.astype(np.float64), W_ih.astype(np.float64), W_hh.astype(np.float64),
            b.astype(np.float64))[-1])
        for g, r in zip(grads, ref):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
        stats = lstm._backward_core.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    env.pop(_ahead.ENV, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"]          # one cache hit, no compile in the process


def test_the_child_saves_its_core_and_nothing_else(tmp_path):
    # (Numba's cache has no lock between processes: the callees the child compiles too are
    # the parent's to save.)
    # (SHARED_WAIT_S 0: no parent saves step_product here)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", _CHILD_NO_WAIT.format(wait=0), "rnn", "steps",
                          "float64"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    saved = sorted(os.path.basename(f) for _, _, fs in os.walk(tmp_path / "cache") for f in fs)
    assert len(saved) == 2 and all(f.startswith("rnn._backward_core-") for f in saved), saved
    assert {f.rsplit(".", 1)[1] for f in saved} == {"nbi", "nbc"}   # its index and its code


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_follower_specs_are_the_signatures_a_training_step_compiles(dtype, rng):
    # the seed model's step through the module API: every follower is called, in this order
    from rnncore import (LSTM, ClassNLLCriterion, Linear, LogSoftMax, Sequencer,
                         SequencerCriterion, Sequential, optim)
    model = Sequencer(Sequential(LSTM(2, 100, dtype=dtype), Linear(100, 3, dtype=dtype),
                                 LogSoftMax(dtype=dtype)))
    crit, opt = SequencerCriterion(ClassNLLCriterion()), optim.SGD(model.parameters(), lr=0.1)
    x, y = rng.standard_normal((8, 8, 2)).astype(dtype), rng.integers(0, 3, size=(8, 8))
    out = model.forward(x)
    crit.forward(out, y)
    model.backward(x, crit.backward(out, y))
    opt.step()
    assert list(_ahead.FOLLOWERS) == ["linear_forward", "log_softmax_forward", "nll",
                                      "log_softmax_backward", "linear_backward", "pack", "descend"]
    for name in _ahead.FOLLOWERS:
        if dtype == np.float32 or name not in _ahead.FLOAT32_ONLY:
            assert _ahead.follower_signature(name, dtype) in _ahead._follower(name).signatures


_CHILD_NO_WAIT = ("import sys; from kernels import _ahead; _ahead.SHARED_WAIT_S = {wait}; "
                  "_ahead._child(sys.argv[1:]); from kernels import _gemm; "
                  "print('step_product loaded', sum(_gemm.step_product.stats.cache_hits.values()))")


def test_the_child_saves_the_followers_it_is_let_have_and_says_so(tmp_path):
    # The parent's answers on stdin: yes to the first offer, no to the second. Its shared callee
    # (step_product) is not in the cache: the followers come first, then the core (after
    # SHARED_WAIT_S, 0 here), which compiles step_product itself and does not save it.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", _CHILD_NO_WAIT.format(wait=0), "rnn", "steps",
                          "float64", "log_softmax_backward", "linear_backward"], env=env,
                         input="yes\nno\n", capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["offer log_softmax_backward", "done log_softmax_backward",
                                       "offer linear_backward", "done core",
                                       "step_product loaded 0"]
    saved = sorted(os.path.basename(f) for _, _, fs in os.walk(tmp_path / "cache") for f in fs)
    assert sorted({f.split("-")[0] for f in saved}) == ["log_softmax._backward_core",
                                                        "rnn._backward_core"], saved
    assert len(saved) == 4                               # an index and the code of each


@pytest.mark.parametrize("cell, dtype, B", [("rnn", "float64", 2), ("lstm", "float32", 8)])
def test_the_child_loads_the_shared_callees_the_parent_saved_and_compiles_its_core_first(
        tmp_path, cell, dtype, B):
    # The parent's forward core saved step_product (here: a process that ran the cell's steps
    # forward; B = 8 packs W_hh in float32): the child's core loads it from the cache (its
    # SHARED entry is the signature both cores call), and comes before the followers.
    assert _ahead._shared(cell, "steps", dtype)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    env[_ahead.ENV] = "0"
    G = 4 if cell == "lstm" else 1
    forward = (f"import numpy as np; from kernels import {cell}; "
               f"x = np.ones((3, {B}, 4), np.{dtype}); "
               f"w = [np.ones(s, np.{dtype}) for s in (({G * 5}, 4), ({G * 5}, 5), {G * 5})]; "
               f"{cell}.{cell}_forward(x, *w, path='steps')")
    assert subprocess.run([sys.executable, "-c", forward], env=env, timeout=600).returncode == 0
    before = sorted(f for _, _, fs in os.walk(tmp_path / "cache") for f in fs)
    out = subprocess.run([sys.executable, "-c", _CHILD_NO_WAIT.format(wait=60), cell, "steps",
                          dtype, "linear_backward"], env=env, input="yes\n",
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["done core", "offer linear_backward",
                                       "done linear_backward", "step_product loaded 1"]
    after = sorted(f for _, _, fs in os.walk(tmp_path / "cache") for f in fs)
    new = sorted({f.split("-")[0] for f in set(after) - set(before)})
    assert new == ["linear._backward_core", f"{cell}._backward_core"], new   # nothing else saved


def test_the_grus_child_waits_for_no_shared_callee():
    # (its core is what the parent waits for: it starts at once; ``SHARED``)
    assert _ahead._shared("gru", "steps", np.float32) == []
    assert all(_ahead._shared(cell, "tiled", np.float32) == [] for cell in ("lstm", "gru", "rnn"))


def test_the_childs_cache_takes_only_entries_whose_code_came_after_the_index(tmp_path):
    # (Numba writes the index, then the code: a reader in between could find an older
    # source's file under the new entry's name.) And it saves nothing.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    script = textwrap.dedent("""
        import os
        import numpy as np
        from kernels import _ahead
        from kernels._common import column_sums
        a, out = np.ones((3, 4)), np.empty(4)
        column_sums(a, out)                              # compiled and saved here
        f = column_sums
        sig = tuple(f.signatures[0])
        f._cache = _ahead._LoadOnly(f._cache)
        print(f._cache.saved(sig, f.targetctx))
        print(f._cache.load_overload(sig, f.targetctx) is not None)
        index = f._cache._cache_file._index_path
        later = os.stat(index).st_mtime_ns + 10**9       # the index written after the code
        os.utime(index, ns=(later, later))
        print(f._cache.saved(sig, f.targetctx), f._cache.load_overload(sig, f.targetctx))
        f._cache.save_overload(sig, None)                # (nothing written, nothing raised)
        print(f._cache.saved(tuple(reversed(sig)), f.targetctx))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False", "None", "False"]


@pytest.mark.skipif(_ahead._usable_cpus() < 2, reason="compile ahead is off with one usable CPU")
def test_cold_cache_followers_are_loaded_from_what_the_child_compiled(tmp_path):
    # A fresh process with an empty cache: once the child has ended (it offered every
    # follower and was let compile them), the followers' cores load from the cache, right.
    script = textwrap.dedent("""
        import numpy as np
        from kernels import _ahead, linear, log_softmax, rnn
        rng = np.random.default_rng(0)
        x = rng.standard_normal((3, 2, 4)).astype(np.float32)
        W = [rng.standard_normal(s).astype(np.float32) for s in ((5, 4), (5, 5))]
        rnn.rnn_forward(x, *W, np.zeros(5, np.float32), path="steps")    # starts the child
        for child in list(_ahead._children.values()):
            child.popen.wait(timeout=600)
        z, Wl = rng.standard_normal((6, 5)).astype(np.float32), W[1][:3]
        dx, dW, db = linear.linear_backward(np.ones((6, 3), np.float32), z, Wl)
        assert np.allclose(dW, np.ones((3, 6)) @ z, rtol=1e-5) and np.allclose(db, 6)
        y = log_softmax.log_softmax_forward(z)
        g = log_softmax.log_softmax_backward(np.ones_like(y), y)
        assert np.allclose(g, 1 - 5 * np.exp(y), rtol=1e-5, atol=1e-6)
        for core in (linear._backward_core, log_softmax._forward_core,
                     log_softmax._backward_core):
            print(sum(core.stats.cache_hits.values()), sum(core.stats.cache_misses.values()))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    env.pop(_ahead.ENV, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"] * 3          # loaded, not compiled here


# A stand-in child that speaks the protocol at once: its core done, then each follower offered
# and (when let) "compiled" in 0.1 s; it writes each answer it got to a file, the log.
_FAKE_CHILD = """
import sys, time
print("done core", flush=True)
for name in sys.argv[5:]:
    print("offer", name, flush=True)
    answer = sys.stdin.readline().strip()
    with open({log!r}, "a") as f:
        f.write(name + " " + answer + "\\n")
    if answer == "yes":
        time.sleep(0.1)
        print("done", name, flush=True)
"""


def test_a_follower_claimed_here_is_refused_to_the_child_and_so_are_those_after_it(
        fresh, monkeypatch, tmp_path):
    log = tmp_path / "answers"
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", "import time; time.sleep(0.5); " + "exec(" + repr(
        _FAKE_CHILD.format(log=str(log))) + ")")
    _ahead.start("lstm", "steps", np.float32)
    _ahead.follow("log_softmax_backward")                 # reached here first: claimed, with
    later = ["log_softmax_backward", "linear_backward", "pack", "descend"]   # those after it
    assert _ahead._settled == set(later)
    child = _ahead._children[("lstm", "steps", np.dtype(np.float32))]
    child.popen.wait(timeout=60)
    assert log.read_text().split("\n")[:-1] == [
        "linear_forward yes", "log_softmax_forward yes", "nll yes", *(f"{n} no" for n in later)]
    _ahead.follow("linear_backward")                      # (settled: nothing to wait for)


def test_a_follower_the_child_compiles_is_waited_for(fresh, monkeypatch, tmp_path):
    log = tmp_path / "answers"
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", _FAKE_CHILD.format(log=str(log)))
    _ahead.start("lstm", "steps", np.float32)
    child = _ahead._children[("lstm", "steps", np.dtype(np.float32))]
    _ahead.wait("lstm", "steps", np.float32)              # the core only: the child runs on
    assert child.popen.poll() is None and _ahead._children == {}
    t0 = time.perf_counter()
    while "linear_backward" not in _ahead._offered and time.perf_counter() - t0 < 30:
        time.sleep(0.01)                                  # (offered in turn, each accepted)
    _ahead.follow("linear_backward")                      # waits for its "done"
    assert child.finished["linear_backward"].is_set()
    _ahead.follow("log_softmax_backward")
    assert {"log_softmax_backward", "linear_backward"} <= _ahead._settled
    child.popen.wait(timeout=60)
    assert log.read_text().split("\n")[:-1] == [f"{n} yes" for n in _ahead.FOLLOWERS]


def test_starting_a_child_compiles_its_shared_callees_here_first(fresh, monkeypatch):
    # (saved sooner than the forward core would reach them: the child's core waits for them)
    compiled = []

    class Recorder:
        def compile(self, sig):
            compiled.append(sig)

    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", "pass")
    monkeypatch.setattr(_ahead, "_shared", lambda cell, path, dtype: (
        [(Recorder(), (cell, path, np.dtype(dtype).name))] if path == "steps" else []))
    _ahead.start("lstm", "steps", np.float64)
    _ahead.start("lstm", "steps", np.float64)            # (once per key)
    assert len(fresh) == 1 and compiled == [("lstm", "steps", "float64")]
    _ahead._stop_children()
    monkeypatch.setenv(_ahead.ENV, "0")                  # no child started: nothing compiled
    _ahead.start("rnn", "steps", np.float32)             # ahead of the forward
    assert len(fresh) == 1 and compiled == [("lstm", "steps", "float64")]


def test_a_child_that_says_nonsense_is_done_with_and_nothing_waits_on_it(fresh, monkeypatch):
    # bytes that are no text, then an offer: the listener stops reading, closes the child's
    # stdin (its offer goes unanswered: no follower) and reaps it; the waits return at once
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", (
        "import sys; sys.stdout.buffer.write(b'\\xff\\xfe\\n'); sys.stdout.flush(); "
        "print('offer linear_backward', flush=True); "
        "sys.exit(0 if sys.stdin.readline() == '' else 5)"))
    _ahead.start("lstm", "steps", np.float32)
    child = _ahead._children[("lstm", "steps", np.dtype(np.float32))]
    t0 = time.perf_counter()
    _ahead.wait("lstm", "steps", np.float32)
    _ahead.follow("linear_backward")
    assert time.perf_counter() - t0 < 30 and child.popen.returncode == 0
    assert "linear_backward" not in _ahead._offered


def test_a_recurrent_module_starts_the_kernels_child_before_its_checks(fresh, monkeypatch):
    # the module's early start makes the same guess as the kernel it then calls (so that the
    # kernel's own start finds its key taken), and comes before the input is checked
    from rnncore import GRU, LSTM, RNN, recurrent
    calls = []
    monkeypatch.setattr(_ahead, "start", lambda *key: calls.append((key[0], key[1], np.dtype(key[2]))))
    rng = np.random.default_rng(0)
    for make, shape in ((lambda: LSTM(2, 100), (8, 8, 2)), (lambda: GRU(128, 256), (64, 32, 128)),
                        (lambda: RNN(64, 128), (32, 16, 64)),
                        (lambda: LSTM(16, 32, bidirectional=True), (10, 4, 16))):
        monkeypatch.setattr(recurrent, "_AHEAD_TRIED", set())
        calls.clear()
        m = make()
        m.forward(rng.standard_normal(shape).astype(np.float32))
        assert len(calls) >= 2 and calls[1] == calls[0], calls    # module's guess, the kernel's
        key = calls[0]
        monkeypatch.setattr(recurrent, "_AHEAD_TRIED", set())
        calls.clear()
        bad = rng.standard_normal(shape).astype(np.float32)
        bad[0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="finite"):
            m.forward(bad)
        assert calls == [key] and key[0] == m._cell


@pytest.fixture
def fresh(monkeypatch):
    """_ahead with nothing decided yet and Popen recorded (the real one, so children run)."""
    monkeypatch.setattr(_ahead, "_seen", set())
    monkeypatch.setattr(_ahead, "_children", {})
    monkeypatch.setattr(_ahead, "_settled", set())
    monkeypatch.setattr(_ahead, "_offered", {})
    monkeypatch.delenv(_ahead.ENV, raising=False)
    calls = []
    real = subprocess.Popen

    def popen(args, **kw):
        calls.append((args, kw))
        return real(args, **kw)

    monkeypatch.setattr(_ahead.subprocess, "Popen", popen)
    return calls


def test_nothing_starts_unless_both_cores_are_cold_and_it_is_on(fresh, monkeypatch):
    forward, backward = _ahead._core("rnn", "steps", "forward"), _ahead._core("rnn", "steps")
    monkeypatch.setattr(_ahead, "_cold", lambda core: core is backward)   # forward cached
    _ahead.start("rnn", "steps", np.float32)
    monkeypatch.setattr(_ahead, "_cold", lambda core: core is forward)    # backward cached
    _ahead.start("rnn", "steps", np.float64)
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setenv(_ahead.ENV, "0")
    _ahead.start("lstm", "steps", np.float64)
    assert fresh == [] and _ahead._children == {}
    _ahead.wait("lstm", "steps", np.float64)             # nothing to wait for


@njit(cache=True)
def _never_called(a):                                    # (so it never has a cache index)
    return a + 1


def test_cold_means_no_compiled_version_and_no_current_index(rng, monkeypatch):
    assert _ahead._cold(_never_called)
    monkeypatch.setenv(_ahead.ENV, "0")
    _run_cell("rnn", "steps", np.float32, rng)
    assert not _ahead._cold(_ahead._core("rnn", "steps"))           # compiled here
    assert not _ahead._cold(object())                    # not a Numba dispatcher: not cold
    never = njit(cache=True)(_never_called.py_func)      # an index of another source: stale
    never._cache._cache_file._save_index({"(some key)": "x.nbc"})
    try:
        monkeypatch.setattr(never._cache._cache_file, "_source_stamp", ("edited", 0))
        assert _ahead._cold(never)
    finally:
        os.remove(never._cache._cache_file._index_path)


def test_a_cold_key_starts_one_child_and_the_backward_waits_for_it(fresh, monkeypatch, rng):
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", "import time; time.sleep(0.3)")
    _ahead.start("gru", "steps", np.dtype(np.float64))
    _ahead.start("gru", "steps", np.float64)             # the same key: once per process
    followers = [n for n in _ahead.FOLLOWERS if n not in _ahead.FLOAT32_ONLY]   # ("pack")
    assert len(fresh) == 1 and fresh[0][0][4:] == ["gru", "steps", "float64", *followers]
    assert fresh[0][1]["env"][_ahead.ENV] == "0"         # a child never starts children
    child = _ahead._children[("gru", "steps", np.dtype(np.float64))].popen
    t0 = time.perf_counter()
    _run_cell("gru", "steps", np.float64, rng)           # its backward waits for the child
    assert child.returncode == 0 and time.perf_counter() - t0 < 60
    assert _ahead._children == {}


def test_one_child_at_a_time_and_every_backward_of_its_core_waits(fresh, monkeypatch):
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", "import time; time.sleep(0.5)")
    _ahead.start("lstm", "steps", np.float32)
    _ahead.start("gru", "steps", np.float32)             # another runs: this one compiles here
    assert len(fresh) == 1
    child = _ahead._children[("lstm", "steps", np.dtype(np.float32))].popen
    seen = []

    def backward(dtype):                                 # (a bidirectional layer's two threads,
        _ahead.wait("lstm", "steps", dtype)              # and the core's other dtype)
        seen.append(child.returncode)

    threads = [threading.Thread(target=backward, args=(dt,))
               for dt in (np.float32, np.float32, np.float64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == [0, 0, 0] and _ahead._children == {}  # none went on before the child ended
    _ahead.wait("gru", "steps", np.float32)              # (nothing to wait for)


def test_a_failing_or_slow_child_leaves_the_backward_to_compile_here(fresh, monkeypatch, rng):
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", "import sys; sys.exit(3)")
    _ahead.start("rnn", "steps", np.float64)
    grads = _run_cell("rnn", "steps", np.float64, np.random.default_rng(5))
    ref_rng = np.random.default_rng(5)
    T, B, I, H = 3, 2, 4, 5
    x = ref_rng.standard_normal((T, B, I))
    W = [ref_rng.standard_normal(s) for s in ((H, I), (H, H))]
    dy = ref_rng.standard_normal((T, B, H))
    ref = reference.rnn_backward(dy, None, reference.rnn_forward(x, *W, np.zeros(H))[-1])
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)

    monkeypatch.setattr(_ahead, "_CHILD", "import time; time.sleep(60)")
    monkeypatch.setattr(_ahead, "WAIT_S", 0.2)
    _ahead.start("lstm", "steps", np.float64)
    child = _ahead._children[("lstm", "steps", np.dtype(np.float64))].popen
    t0 = time.perf_counter()
    _ahead.wait("lstm", "steps", np.float64)             # gives up after WAIT_S, stops it
    assert time.perf_counter() - t0 < 10 and child.returncode is not None


def test_a_child_is_reaped_when_it_ends_without_a_backward(fresh, monkeypatch):
    """A process that only ran forwards kept the finished child as a zombie for its whole life
    (only a backward's wait, or the exit, reaped it)."""
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", "pass")
    _ahead.start("rnn", "steps", np.float32)
    child = _ahead._children[("rnn", "steps", np.dtype(np.float32))].popen
    t0 = time.perf_counter()
    while child.returncode is None and time.perf_counter() - t0 < 30:   # (no poll() here:
        time.sleep(0.05)                                                # poll would reap it)
    assert child.returncode == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)                # no zombie of it left


def test_children_still_running_at_exit_are_stopped(fresh, monkeypatch):
    monkeypatch.setattr(_ahead, "_cold", lambda core: True)
    monkeypatch.setattr(_ahead, "_CHILD", "import time; time.sleep(60)")
    _ahead.start("rnn", "steps", np.float32)
    child = _ahead._children[("rnn", "steps", np.dtype(np.float32))].popen
    _ahead._stop_children()
    assert child.returncode is not None and _ahead._children == {}
