"""The infrastructure under the kernels and the modules: the random stream, pad_sequences, the
buffer pool, the team's claims, the automatic choices, compile-ahead, the BLAS settings, the
cache stamp and the benchmark harness. Each test here fails on a deliberately broken copy of
its module (a mutant) that the rest of the suite lets pass."""
import gc
import multiprocessing as mp
import os
import time

import numba
import numpy as np
import pytest

import rnncore
from rnncore import Dropout, Linear, Sequential
from rnncore.module import Module


# -- rnncore/random.py ------------------------------------------------------------------------
def test_a_chain_draws_a_new_dropout_mask_every_forward():
    rnncore.manual_seed(0)
    m = Sequential(Linear(4, 64), Dropout(0.5))
    x = np.ones((8, 4), np.float32)
    state = rnncore.random.generator().bit_generator.state
    a, b = m.forward(x) != 0, m.forward(x) != 0
    assert not np.array_equal(a, b)
    assert rnncore.random.generator().bit_generator.state != state


class _Refuse(Module):
    def forward(self, x, **kw):
        raise ValueError("x: refused")


def test_a_refused_outer_chain_puts_the_stream_back_after_an_inner_chain_ran():
    rnncore.manual_seed(0)
    m = Sequential(Dropout(0.5), Sequential(Linear(4, 4)), _Refuse())
    state = rnncore.random.generator().bit_generator.state
    with pytest.raises(ValueError, match="refused"):
        m.forward(np.ones((3, 4), np.float32))
    assert rnncore.random.generator().bit_generator.state == state


@pytest.mark.parametrize("seed", [True, False, np.bool_(True)])
def test_manual_seed_refuses_bools(seed):
    with pytest.raises(TypeError, match="seed: expected an int >= 0"):
        rnncore.manual_seed(seed)


def test_float64_weights_are_full_float64_draws():
    rnncore.manual_seed(0)
    w = rnncore.Linear(8, 16, dtype=np.float64).weight.data
    bound = 1.0 / np.sqrt(8)                     # (as Linear computes it)
    want = np.random.default_rng(0).uniform(-bound, bound, (16, 8))
    np.testing.assert_array_equal(w, want)


# -- rnncore/data.py --------------------------------------------------------------------------
def test_pre_truncation_keeps_a_shorter_sequence_whole():
    x, lengths = rnncore.pad_sequences([np.arange(1, 6), np.array([7, 8])], maxlen=3,
                                       truncating="pre")
    assert x.T.tolist() == [[3, 4, 5], [7, 8, 0]] and lengths.tolist() == [3, 2]


@pytest.mark.parametrize("dtype", [bool, np.complex64, object])
def test_non_numeric_dtypes_are_refused_by_name(dtype):
    with pytest.raises(TypeError, match="dtype: expected a float or integer dtype"):
        rnncore.pad_sequences([[1, 0, 1]], dtype=dtype)


# -- kernels/_workspace.py --------------------------------------------------------------------
def test_over_the_limit_only_enough_free_buffers_go_largest_first(monkeypatch):
    from kernels import _workspace as ws
    K = 1024
    gc.collect()                  # (arrays of earlier tests left in cycles hold their buffers)
    ws.release()
    assert ws.pooled_bytes() == (0, 0)
    monkeypatch.setattr(ws, "LIMIT", 704 * K)
    a, b, c = ws.empty((64, 1024)), ws.empty((64, 1024)), ws.empty((48, 1024))   # 256+256+192 KB
    del b, c
    gc.collect()
    d = ws.empty((16, 1024))      # 64 KB more (no free buffer of at most twice that): the free
    assert ws.pooled_bytes() == (512 * K, 192 * K)                  # 256 KB one goes, alone
    del a, d
    ws.release()


# -- kernels/_team.py -------------------------------------------------------------------------
def test_team_size_never_exceeds_the_items():
    from kernels._team import team_size
    assert team_size(1) == 1
    assert team_size(2) == min(2, numba.get_num_threads())


def test_racing_claims_never_give_a_unit_past_the_end():
    """Two workers race for the single unit of n=1 after a barrier, many times: the loser
    must get -1 (the check after the atomic add), never unit 1."""
    from kernels._team import team_size
    if team_size(2) < 2:
        pytest.skip("needs a team of two")
    taken, sync = np.zeros((200_000, 2), np.int64), np.zeros(1, np.int64)
    units = np.zeros((2, 3), np.int64)              # per worker: how often it got -1, 0, 1
    _race(taken, sync, units)
    assert units[:, 2].sum() == 0 and units[:, 1].sum() == taken.shape[0]


from kernels._team import barrier as _barrier, claim as _claim  # noqa: E402


@numba.njit
def _race_worker(w, taken, sync, units):
    for r in range(taken.shape[0]):
        _barrier(sync, (r + 1) * 2)
        u = _claim(taken[r], w, 2, 1)
        while u >= 0:
            units[w, 1 + min(u, 1)] += 1
            u = _claim(taken[r], w, 2, 1)


@numba.njit(parallel=True)
def _race(taken, sync, units):
    for w in numba.prange(2):
        _race_worker(w, taken, sync, units)


# -- kernels/_auto.py -------------------------------------------------------------------------
def test_exactly_one_eighth_padding_still_takes_the_tiled_kernels():
    from kernels import gru_tiled, lstm_tiled
    assert lstm_tiled.use_tiled(np.float32, 64, 32, 1, 112)      # 16 of 128 units padding
    assert gru_tiled.use_tiled(np.float32, 64, 32, 1, 112)
    assert not lstm_tiled.use_tiled(np.float32, 64, 32, 1, 111)  # 17 of 128


def test_a_tiled_call_must_be_long_enough_to_pay():
    """kernels/_auto.py, "Sequence length": T B H / (H + I) >= MIN_STEPS_FOR[G] decides (on
    AVX2 128, the RNN 256; on AVX-512, since the packings transpose in registers, the LSTM 64,
    the GRU 96, the RNN 128), and then H = 128 pays from LOW_WORK per step."""
    from kernels import _auto
    avx512 = _auto.VECTOR == 16
    assert _auto.MIN_STEPS_FOR == ({4: 64, 3: 96, 1: 128} if avx512 else {4: 128, 3: 128, 1: 256})

    def tiled(gates, T, B, I, H):
        return _auto.uses_tiled(gates, np.float32, T, B, I, H)

    for g in (4, 3):
        assert tiled(g, 12, 16, 64, 128)           # 12 * 16 * 128 / 192 = 128: long enough
        assert tiled(g, 8, 16, 2, 128) == avx512   # 126: on AVX-512 (above MIN_WORK)
        assert tiled(g, 8, 16, 64, 256) == avx512  # 102
        assert not tiled(g, 8, 8, 64, 128)         # 43: on neither
        assert not tiled(g, 4, 16, 16, 128)        # 57
        assert tiled(g, 32, 8, 64, 128)            # below MIN_WORK, from LOW_WORK at Hp = 128
        assert not tiled(g, 64, 16, 64, 64)        # one backward tile: MIN_WORK as before
        assert not tiled(g, 64, 4, 64, 256)        # MIN_B still holds
    assert tiled(4, 16, 8, 64, 128) == avx512      # 85: the LSTM on AVX-512, from LOW_WORK
    assert not tiled(3, 16, 8, 64, 128)            # the GRU from 96 only
    assert tiled(4, 64, 64, 1, 64)                 # 2^20 per step at H = 64 (the LSTM's MIN_WORK)
    assert not tiled(3, 64, 8, 1, 64)              # 3 * 2^15 < LOW_WORK, and one tile
    if avx512:                                     # the RNN (AVX-512 only): 128
        assert tiled(1, 24, 8, 64, 128)            # 128
        assert not tiled(1, 16, 8, 16, 128)        # 114


# -- kernels/_ahead.py ------------------------------------------------------------------------
def test_one_usable_cpu_starts_no_child(monkeypatch):
    from kernels import _ahead
    monkeypatch.delenv(_ahead.ENV, raising=False)
    monkeypatch.setattr(_ahead, "_usable_cpus", lambda: 1)
    assert not _ahead._wanted()


def _wanted_in_worker(q):
    from kernels import _ahead
    q.put(_ahead._wanted())


def test_a_multiprocessing_worker_starts_no_child(monkeypatch):
    from kernels import _ahead
    monkeypatch.delenv(_ahead.ENV, raising=False)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_wanted_in_worker, args=(q,))
    p.start()
    p.join(60)
    assert q.get(timeout=10) is False


# -- kernels/_scipy_blas.py / _blas_env.py ----------------------------------------------------
def test_the_wrapped_loader_keeps_the_real_loaders_methods():
    from test_scipy_blas import _run    # (a fresh interpreter: rnncore before scipy.linalg)
    got = _run("import pkgutil, rnncore, scipy.linalg\n"
               "print(len(pkgutil.get_data('scipy.linalg', '__init__.py')) > 0, "
               "scipy.linalg.__spec__.loader.is_package('scipy.linalg'))")
    assert got == ["True", "True"]


def test_an_openmp_build_is_left_alone(monkeypatch):
    from kernels import _blas_env
    calls = []

    class OpenMPBuild:
        openblas_get_parallel = staticmethod(lambda: 2)
        openblas_thread_timeout = staticmethod(lambda: 0)
        openblas_read_env = staticmethod(lambda: calls.append("read_env"))
        blas_thread_shutdown_ = staticmethod(lambda: calls.append("shutdown"))

    monkeypatch.setattr(_blas_env, "_USERS_OWN", False)
    monkeypatch.setattr(_blas_env, "_libraries",
                        lambda: [("libopenblas.so", OpenMPBuild(), "openblas_{}")])
    assert _blas_env.apply_to_loaded() == [] and calls == []


# -- kernels/_cache_stamp.py ------------------------------------------------------------------
def test_hidden_regular_files_do_not_count(tmp_path):
    from kernels import _cache_stamp
    (tmp_path / "a.py").write_text("x = 1\n")
    first = _cache_stamp.package_digest(str(tmp_path))
    (tmp_path / ".#a.py").write_text("user@host.1234\n")     # a lock written as a plain file
    assert _cache_stamp.package_digest(str(tmp_path)) == first


def test_digest_does_not_depend_on_the_listing_order(monkeypatch):
    from kernels import _cache_stamp
    first = _cache_stamp.package_digest()
    real = os.listdir
    monkeypatch.setattr(_cache_stamp.os, "listdir", lambda d: sorted(real(d), reverse=True))
    assert _cache_stamp.package_digest() == first


# A fresh process: a training step through the modules (rnncore's own cached functions too)
# and both paths of each cell's kernels (the tiled ones run prange loops); it prints how often
# Numba's contexts were refreshed, the cache's hits and misses, and a digest of every output.
# Then a function of the user's compiles, and a kernel's core compiles a new signature (its
# cache turned off, so that it compiles rather than loads what the first child saved).
_LIGHT_CHILD = """
import hashlib, json, sys
from numba.core import base
refreshes = []
_refresh = base.BaseContext.refresh
base.BaseContext.refresh = lambda self: (refreshes.append(1), _refresh(self))[1]
import numpy as np
import rnncore
from rnncore import LSTM, ClassNLLCriterion, Linear, LogSoftMax, Sequencer, SequencerCriterion, Sequential, optim
from kernels import gru, lstm, reference, rnn
rnncore.manual_seed(0)
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3, 2)).astype(np.float32)
y = rng.integers(0, 3, size=(4, 3))
model = Sequencer(Sequential(LSTM(2, 8), Linear(8, 3), LogSoftMax()))
crit = SequencerCriterion(ClassNLLCriterion())
opt = optim.SGD(model.parameters(), lr=0.1)
out = model.forward(x)
loss = crit.forward(out, y)
model.backward(x, crit.backward(out, y))
opt.step()
results = [out, np.float64(loss)] + [p.data for p in model.parameters()]
for cell, G, fwd, bwd in (("lstm", 4, lstm.lstm_forward, lstm.lstm_backward),
                          ("gru", 3, gru.gru_forward, gru.gru_backward),
                          ("rnn", 1, rnn.rnn_forward, rnn.rnn_backward)):
    for path in ("steps", "tiled"):
        W = [rng.standard_normal((G * 5, k)).astype(np.float32) for k in (4, 5)]
        b = [np.zeros(G * 5, np.float32)] * (2 if cell == "gru" else 1)
        fw = fwd(rng.standard_normal((3, 2, 4)).astype(np.float32), *W, *b, path=path)
        dy = rng.standard_normal((3, 2, 5)).astype(np.float32)
        results += list(fw[:-1]) + list(bwd(dy, *([None] * (2 if cell == "lstm" else 1)), fw[-1]))
digest = hashlib.sha256(b"".join(np.ascontiguousarray(r).tobytes() for r in results)).hexdigest()
refreshed_by_then = len(refreshes)
import gc
from numba.core.dispatcher import Dispatcher
hits = misses = 0
for d in gc.get_objects():
    if isinstance(d, Dispatcher) and getattr(d.py_func, "__module__", "").split(".")[0] in ("kernels", "rnncore"):
        hits += sum(d.stats.cache_hits.values())
        misses += sum(d.stats.cache_misses.values())
from numba import njit
@njit
def users_own(a):
    return np.sum(np.tanh(a))
assert abs(users_own(np.ones(3)) - 3 * np.tanh(1.0)) < 1e-12
from numba.core.caching import NullCache
rnn._forward_core._cache = NullCache()              # (a float64 core compiles here, not loads)
misses = sum(rnn._forward_core.stats.cache_misses.values())
xs = rng.standard_normal((3, 2, 4))
W = [rng.standard_normal((5, k)) for k in (4, 5)]
h = rnn.rnn_forward(xs, *W, np.zeros(5), path="steps")[0]
np.testing.assert_allclose(h, reference.rnn_forward(xs, *W, np.zeros(5))[0], rtol=1e-12, atol=1e-12)
assert sum(rnn._forward_core.stats.cache_misses.values()) == misses + 1
print(json.dumps(dict(refreshes=refreshed_by_then, hits=hits, misses=misses, digest=digest)))
"""


def _light_child(light):
    import json
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, RNNCORE_LIGHT_LOAD=light, RNNCORE_COMPILE_AHEAD="0")
    out = subprocess.run([sys.executable, "-c", _LIGHT_CHILD], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_warm_process_loads_every_kernel_without_refreshing_numba_and_gets_the_same_numbers():
    # First with Numba's own loading (and compiling what the cache lacks), then light: the same
    # bits, every function of rnncore and kernels a cache hit, and Numba's typing never set up
    # until the user's own function compiles (which works, as does a kernel's new signature).
    numbas = _light_child("0")
    assert numbas["refreshes"] > 0                      # the counter sees Numba's own refresh
    light = _light_child("1")
    assert light["misses"] == 0 and light["hits"] >= 10
    assert light["refreshes"] == 0
    assert light["digest"] == numbas["digest"]


def test_light_loading_is_only_for_the_packages_own_folders(monkeypatch):
    from numba.core import caching
    from kernels import _cache_stamp, lstm
    load = caching.Cache.load_overload
    assert getattr(load, "_rnncore_light", False)

    class Context:                                      # what Numba's loading would set up
        def refresh(self):
            calls.append("refresh")

    class Cache:
        def __init__(self, func):
            self._py_func = func
            self._enabled = False                       # (Numba's own load then reads nothing)

        def _guard_against_spurious_io_errors(self):
            import contextlib
            return contextlib.nullcontext()

        def _load_overload(self, sig, ctx):
            calls.append("load")

    assert rnncore._checks._finite_flat(np.ones(2))     # (Numba's runtime is set up)
    calls = []
    load(Cache(lstm._backward_core.py_func), None, Context())
    load(Cache(rnncore._checks._finite_flat.py_func), None, Context())
    assert calls == ["load", "load"]
    calls.clear()
    load(Cache(lambda a: a), None, Context())           # a function of this test file's
    assert calls == ["refresh", "load"]
    assert _cache_stamp.light_load(_cache_stamp._HERE)  # a second call installs nothing more
    assert caching.Cache.load_overload is load


# -- benchmarks/_harness.py -------------------------------------------------------------------
def test_times_are_per_call():
    from benchmarks import _harness
    t = _harness.time_interleaved({"s": lambda: time.sleep(0.002)}, repeat=3,
                                  min_sample_s=0.02)["s"]
    assert t["number"] >= 5 and 0.0019 < t["median_s"] < 0.008   # x number: >= 0.0095


def test_rounds_rotate_and_pause():
    from benchmarks import _harness
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    t0 = time.perf_counter()
    _harness.time_interleaved(fns, repeat=3, min_sample_s=0, warmup=0, max_number=1, settle_s=0,
                              idle_s=0.02)
    assert time.perf_counter() - t0 >= 9 * 0.02                    # a pause before each sample
    assert calls[3:] == list("abc" "bca" "cab")                     # after calibration


def test_each_sample_is_led_by_settle_s_of_untimed_calls():
    from benchmarks import _harness
    calls = []
    def f():
        calls.append(1)
        time.sleep(0.001)
    t0 = time.perf_counter()
    t = _harness.time_interleaved({"f": f}, repeat=2, min_sample_s=0, warmup=0, max_number=1, settle_s=0.03)
    assert time.perf_counter() - t0 >= 2 * 0.03
    assert t["f"]["number"] == 1
    # calibration (one call: min_sample_s is 0), then per round calls for >= 0.03 s (each call
    # takes >= 1 ms: at most ~30, at least a few on a loaded machine) and the timed one
    assert 1 + 2 * (5 + 1) <= len(calls) <= 1 + 2 * (31 + 1)


def test_gc_is_back_on_afterwards():
    from benchmarks import _harness
    assert gc.isenabled()
    _harness.time_interleaved({"f": lambda: None}, repeat=2, min_sample_s=1e-4)
    assert gc.isenabled()


def test_limit_threads_restores_every_count():
    import torch
    from benchmarks import _harness
    from kernels._pair import openblas_libraries
    def counts():
        return torch.get_num_threads(), [g() for _, g, _, _ in openblas_libraries()]
    before = counts()
    with _harness.limit_threads(1):
        assert counts() == (1, [1] * len(before[1]))
    assert counts() == before


def test_set_thread_env_only_before_the_libraries_load(monkeypatch):
    import subprocess
    import sys
    from benchmarks import _harness
    for k in _harness.THREAD_ENV:
        monkeypatch.delenv(k, raising=False)
    assert _harness.set_thread_env(3) is False                # numpy is loaded here
    assert all(k not in os.environ for k in _harness.THREAD_ENV)
    code = ("from benchmarks import _harness; import os; "
            "print(_harness.set_thread_env(3), os.environ['NUMBA_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=_harness.REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["True", "3"], out.stderr
