"""kernels.lstm_tiled: the fused, multithreaded float32 LSTM against lstm.py's serial steps, the
auto rule that picks it, its BLAS weight gradients, and the team (barrier, claims, shares,
fallbacks, forks) and packers that every tiled cell uses. The checks every tiled cell shares
(the float64 reference at every padding case, PyTorch, threads, rows or units, caches) are in
test_kernels_tiled.py."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import _gemm, lstm, lstm_tiled
from kernels._team import barrier, claim, share, team_size


def _problem(rng, T, B, I, H, scale=0.3):
    x = rng.standard_normal((T, B, I))
    W_ih = rng.uniform(-scale, scale, (4 * H, I))
    W_hh = rng.uniform(-scale, scale, (4 * H, H))
    b = rng.uniform(-scale, scale, 4 * H)
    h0, c0 = rng.standard_normal((B, H)) * 0.5, rng.standard_normal((B, H)) * 0.5
    return x, W_ih, W_hh, b, h0, c0


def _f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


def test_agrees_with_the_serial_steps_and_auto_follows_use_tiled():
    rng = np.random.default_rng(3)
    T, B, I, H = 6, 16, 10, 96
    args = _f32(*_problem(rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B)
    assert lstm_tiled.use_tiled(np.float32, 64, 16, 1, 128)      # the benchmark grid's choices
    assert lstm_tiled.use_tiled(np.float32, 64, 32, 1, 256)
    assert not lstm_tiled.use_tiled(np.float32, 64, 8, 1, 64)     # too small to pay
    assert not lstm_tiled.use_tiled(np.float32, 64, 32, 1, 100)   # 28 of 128 units padding
    assert lstm_tiled.use_tiled(np.float32, 64, 32, 1, 120)       # 8 of 128
    large = lstm_tiled.use_tiled(np.float32, 64, 64, 1, 512)       # above _auto.MAX_WORK:
    assert large == (_gemm.VECTOR == 16)                          # tiled with AVX-512 only
    assert lstm_tiled.use_tiled(np.float32, 64, 64, 1, 1024) == (_gemm.VECTOR == 16)  # 16 MB
    assert not lstm_tiled.use_tiled(np.float32, 64, 64, 1, 1280)  # W_hh of 25 MB: serial steps
    assert not lstm_tiled.use_tiled(np.float64, 64, 32, 1, 256)
    assert lstm_tiled.use_tiled(np.float32, 64, 32, 512, 256)    # inputs 2H wide: still tiled
    assert lstm_tiled.use_tiled(np.float32, 64, 32, 768, 256) == (_gemm.VECTOR == 16)  # 3H:
    assert not lstm_tiled.use_tiled(np.float32, 64, 32, 1024, 256)  # tiled on AVX-512; 4H: BLAS's
                                                                    # input products on both
    assert lstm_tiled.use_tiled(np.float32, 64, 16, 512, 128)    # (not below H = 256)
    wide = _f32(*_problem(rng, 1, 8, 1024, 256))
    assert lstm_tiled.use_tiled(np.float32, 64, 8, 1, 256)
    assert not isinstance(lstm.lstm_forward(*wide)[3][0], str)  # auto took the serial steps
    auto = lstm.lstm_forward(*args, lengths=lengths)[3]
    assert isinstance(auto[0], str) == lstm_tiled.use_tiled(np.float32, T, B, I, H)
    a = lstm.lstm_forward(*args, lengths=lengths, path="tiled")
    s = lstm.lstm_forward(*args, lengths=lengths, path="steps")
    assert not isinstance(s[3][0], str)
    for u, v in zip(a[:3], s[:3]):
        np.testing.assert_allclose(u, v, atol=1e-5)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    for u, v in zip(lstm.lstm_backward(dy, None, None, a[3]),
                    lstm.lstm_backward(dy, None, None, s[3])):
        np.testing.assert_allclose(u, v, atol=1e-4 * max(1.0, np.abs(v).max()))


def test_rows_of_splits_whole_register_tiles():
    """_rows_of: contiguous ranges of whole 4-row tiles that cover 0 ... Bp-1 once."""
    for Bp in (8, 12, 24, 36):
        for n in (2, 3):
            if Bp < n * lstm_tiled.R:
                continue
            ranges = [lstm_tiled._rows_of(w, n, Bp) for w in range(n)]
            assert ranges[0][0] == 0 and ranges[-1][1] == Bp
            for (a0, a1), (b0, _) in zip(ranges, ranges[1:]):
                assert a1 == b0
            assert all(m0 % 4 == 0 and m1 - m0 >= 4 for m0, m1 in ranges)
    assert lstm_tiled._backward_rows(4, 2) == 0               # one tile of rows: by units
    assert lstm_tiled._backward_rows(8, 1) == 0               # one worker: by units
    assert lstm_tiled.BACKWARD_BY_ROWS == (_gemm.VECTOR == 16)  # measured on AVX-512 only
    assert lstm_tiled._backward_rows(8, 2) == (_gemm.VECTOR == 16)


def test_team_barrier_counts_every_worker():
    """The team's barrier: after step s every worker sees all n arrivals of steps 0 ... s."""
    n = team_size(64)
    assert 1 <= n <= numba.get_num_threads()
    seen = _team_run(n, 50)
    for s in range(50):
        assert (seen[:, s] >= (s + 1) * n).all()


@numba.njit(parallel=True)
def _team_steps(n, T, seen, sync):
    for w in numba.prange(n):
        for s in range(T):
            _arrive(sync, (s + 1) * n, seen, w, s)


@numba.njit
def _arrive(sync, target, seen, w, s):
    barrier(sync, target)
    seen[w, s] = sync[0]


def _team_run(n, T):
    seen = np.zeros((n, T), np.int64)
    _team_steps(n, T, seen, np.zeros(1, np.int64))
    return seen


def test_claim_gives_every_unit_once_own_range_first():
    """_team.claim: worker w gets its own range in order, then what is left of the others';
    no unit twice, none lost, -1 at the end; in a real team too."""
    taken = np.zeros(3, np.int64)
    got = [claim(taken, 1, 3, 10) for _ in range(11)]            # ranges 0-2, 3-5, 6-9
    assert got == [3, 4, 5, 6, 7, 8, 9, 0, 1, 2, -1]
    taken = np.zeros(2, np.int64)
    assert [claim(taken, 0, 2, 5), claim(taken, 1, 2, 5), claim(taken, 1, 2, 5)] == [0, 2, 3]
    assert [claim(taken, 1, 2, 5), claim(taken, 1, 2, 5), claim(taken, 0, 2, 5)] == [4, 1, -1]
    n = team_size(64)
    owner = np.full(1000, -1, np.int64)
    count = np.zeros(1000, np.int64)
    _team_claims(n, np.zeros(n, np.int64), owner, count)
    assert (count == 1).all() and set(owner) <= set(range(n))


def test_share_splits_items_in_proportion_and_covers_them_all():
    """_team.share: contiguous ranges, together exactly 0 ... n-1, sized by what each worker
    did before; equal shares when nothing was counted."""
    for done, n, want in [([8, 8], 16, [(0, 8), (8, 16)]), ([10, 6], 16, [(0, 10), (10, 16)]),
                          ([3, 1], 4, [(0, 3), (3, 4)]), ([0, 0], 5, [(0, 2), (2, 5)]),
                          ([1, 0, 1], 7, [(0, 4), (4, 4), (4, 7)])]:
        done = np.array(done, np.int64)
        assert [share(done, w, n) for w in range(done.size)] == want
    rng = np.random.default_rng(0)
    for _ in range(50):
        done = rng.integers(0, 20, rng.integers(1, 5)).astype(np.int64)
        n = int(rng.integers(1, 40))
        parts = [share(done, w, n) for w in range(done.size)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] and a[0] <= a[1] for a, b in zip(parts, parts[1:] + [(n, n)]))


@numba.njit(parallel=True)
def _team_claims(n, taken, owner, count):
    for w in numba.prange(n):
        _claim_all(w, n, taken, owner, count)


@numba.njit
def _claim_all(w, n, taken, owner, count):
    u = claim(taken, w, n, owner.size)
    while u >= 0:
        owner[u] = w
        count[u] += 1                                  # a unit given twice would count 2
        u = claim(taken, w, n, owner.size)


def test_team_falls_back_to_one_worker_when_a_team_cannot_meet(monkeypatch):
    """A team that cannot meet (e.g. OpenMP running the workers one after another) must not
    hang: team_size then answers 1, and the results stay the same."""
    from kernels import _team
    rng = np.random.default_rng(8)
    args = _f32(*_problem(rng, 4, 16, 3, 64))
    want = lstm.lstm_forward(*args, path="tiled")[0]
    n = numba.get_num_threads()
    monkeypatch.setitem(_team._PROBED, n, False)
    assert _team.team_size(100) == 1 or n == 1
    np.testing.assert_array_equal(lstm.lstm_forward(*args, path="tiled")[0], want)


def test_no_hang_when_openmp_may_shrink_teams():
    """OMP_DYNAMIC=true lets OpenMP run a parallel loop on fewer threads than asked: the probe
    sees it and the kernel still finishes, with the same numbers."""
    import os
    import subprocess
    import sys
    code = ("import numpy as np; from kernels import lstm; r = np.random.default_rng(0); "
            "x = r.standard_normal((3, 16, 4)).astype(np.float32); "
            "W = (r.standard_normal((256, 4)) * .3).astype(np.float32); "
            "U = (r.standard_normal((256, 64)) * .3).astype(np.float32); "
            "b = np.zeros(256, np.float32); "
            "a = lstm.lstm_forward(x, W, U, b, path='tiled')[0]; "
            "s = lstm.lstm_forward(x, W, U, b, path='steps')[0]; "
            "print(float(abs(a - s).max()))")
    env = dict(os.environ, OMP_DYNAMIC="true")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 1e-5


# Two threads running teams at once, in a child under Numba's workqueue threading layer.
_TWO_THREADS_UNDER_WORKQUEUE = """
import threading, numpy as np
from kernels.lstm import lstm_forward, lstm_backward
from kernels.gru import gru_forward, gru_backward
T, B, I = 3, 8, 4
rng = np.random.default_rng(0)
def lstm_args(H): return (rng.standard_normal((T, B, I)).astype(np.float32), *(rng.uniform(-.1, .1, s).astype(np.float32) for s in [(4*H, I), (4*H, H), (4*H,)]))
def gru_args(H): return (rng.standard_normal((T, B, I)).astype(np.float32), *(rng.uniform(-.1, .1, s).astype(np.float32) for s in [(3*H, I), (3*H, H), (3*H,), (3*H,)]))
# (H = 256: the weights are packed by a team of their own inside the call's)
jobs = [(lstm_forward, lstm_backward, lstm_args(H), 2) for H in (64, 256)]
jobs += [(gru_forward, gru_backward, gru_args(H), 1) for H in (64, 256)]
alone = []
for f, b, a, n in jobs:
    out = f(*a, path="tiled"); alone.append(b(out[0], *[None]*n, out[-1]))
got = [None] * len(jobs)
def work(i):
    f, b, a, n = jobs[i]
    for _ in range(10):
        out = f(*a, path="tiled"); got[i] = b(out[0], *[None]*n, out[-1])
ts = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
[t.start() for t in ts]; [t.join() for t in ts]
from numba.np.ufunc import parallel
assert parallel.threading_layer() == "workqueue", parallel.threading_layer()
assert all(np.array_equal(g, w) for G, W in zip(got, alone) for g, w in zip(G, W))
print("ok")
"""


def test_two_threads_running_teams_under_the_workqueue_layer():
    """Numba's workqueue layer (its fallback where neither TBB nor OpenMP loads) aborts the
    process when two threads enter a parallel region at once (exit 134, "Concurrent access has
    been detected"): under it the kernels run one team at a time, with the same numbers. At
    H = 256 a call packs its weights on all cores inside its own team's lock: a plain lock
    hung there, in one thread alone."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    out = subprocess.run([sys.executable, "-c", _TWO_THREADS_UNDER_WORKQUEUE], env=env,
                         capture_output=True, text=True, timeout=600,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])


# The tiled kernels in a process that compiles them and in one that loads them from the cache.
_SAVE_TILED_RESULTS = """
import sys, numpy as np
from kernels import gru, lstm
r = np.random.default_rng(0)
T, B, I, H = 32, 16, 64, 128
out = {}
for name, mod, gates, biases, states in (("lstm", lstm, 4, 1, 2), ("gru", gru, 3, 2, 1)):
    x = r.standard_normal((T, B, I)).astype(np.float32)
    W = (0.1 * r.standard_normal((gates * H, I))).astype(np.float32)
    U = (0.1 * r.standard_normal((gates * H, H))).astype(np.float32)
    bs = [(0.1 * r.standard_normal(gates * H)).astype(np.float32) for _ in range(biases)]
    res = getattr(mod, name + "_forward")(x, W, U, *bs, path="tiled")
    grads = getattr(mod, name + "_backward")(np.ones_like(res[0]), *[None] * states, res[-1])
    out.update({f"{name}_y": res[0]}, **{f"{name}_g{i}": g for i, g in enumerate(grads)})
np.savez(sys.argv[1], **out)
"""


def test_tiled_kernels_give_the_same_bits_compiled_or_loaded_from_the_cache(tmp_path):
    """API.md: the same seed and inputs give bit-identical runs on the same machine. The first
    run on an empty cache did not: the tiled LSTM's cell update (3) was fused one way in the
    process that compiled its core and the other way in every process that loaded it (y ~2e-7
    relative, grads ~1e-5), until ``_gemm.fmuladd`` fixed the order."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), RNNCORE_COMPILE_AHEAD="0")
    runs = []
    for run in ("compiled", "loaded"):
        path = str(tmp_path / f"{run}.npz")
        out = subprocess.run([sys.executable, "-c", _SAVE_TILED_RESULTS, path], env=env,
                             capture_output=True, text=True, timeout=600,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(np.load(path))
    compiled, loaded = runs
    assert sorted(compiled.files) == sorted(loaded.files) and len(compiled.files) == 14
    for key in compiled.files:
        assert np.array_equal(compiled[key], loaded[key]), key


def _one_team_is_free(queue):
    from kernels import _team
    free = _team._ONE_TEAM.acquire(timeout=10)
    queue.put(free)


def test_a_child_forked_while_a_team_runs_gets_a_free_team_lock():
    """The workqueue layer's one-team lock, held by another thread at the fork, stayed held in
    the child: its first tiled call waited forever."""
    import multiprocessing as mp
    from kernels import _team
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    with _team._ONE_TEAM:                       # as a thread inside a tiled kernel holds it
        child = ctx.Process(target=_one_team_is_free, args=(q,))
        child.start()
    child.join(timeout=120)
    assert child.exitcode == 0 and q.get(timeout=10) is True


def _tiled_shapes_in_forked_child(queue, x, W, U, b):
    from kernels import gru
    out = {"auto": lstm.lstm_forward(x, W, U, b)[0],
           "gru_auto": gru.gru_forward(x, W[:384], U[:384], b[:384], b[:384])[0]}
    try:
        out["tiled"] = lstm.lstm_forward(x, W, U, b, path="tiled")[0]
    except RuntimeError as e:
        out["tiled"] = str(e)
    queue.put(out)


def test_a_child_forked_after_openmp_started_takes_the_serial_kernels():
    """GNU OpenMP kills a forked child at its first parallel region once the parent had started
    it (Numba's 'omp' layer: "Terminating: fork() called from a process already using GNU
    OpenMP"), and a multiprocessing pool then waits forever. In such a child ``path="auto"``
    takes the serial kernels and ``path="tiled"`` raises a RuntimeError that says why."""
    import multiprocessing as mp
    from kernels import _team, gru
    r = np.random.default_rng(0)
    x = r.standard_normal((12, 16, 4)).astype(np.float32)
    W = (r.standard_normal((512, 4)) * .3).astype(np.float32)
    U = (r.standard_normal((512, 128)) * .1).astype(np.float32)
    b = (r.standard_normal(512) * .1).astype(np.float32)
    assert lstm_tiled.use_tiled(np.float32, 12, 16, 4, 128)        # auto: tiled in the parent
    tiled = lstm.lstm_forward(x, W, U, b, path="tiled")[0]          # (starts the threading layer)
    steps = lstm.lstm_forward(x, W, U, b, path="steps")[0]
    gru_steps = gru.gru_forward(x, W[:384], U[:384], b[:384], b[:384], path="steps")[0]
    unsafe = _team._started_gnu_openmp()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_tiled_shapes_in_forked_child, args=(q, x, W, U, b))
    child.start()
    import queue
    import time
    deadline = time.monotonic() + 300
    while True:
        try:
            out = q.get(timeout=1)
            break
        except queue.Empty:
            if not child.is_alive():
                pytest.fail(f"the forked child died (exit code {child.exitcode})")
            if time.monotonic() > deadline:
                child.kill()
                pytest.fail("the forked child hung")
    child.join(timeout=60)
    assert child.exitcode == 0
    if unsafe:
        np.testing.assert_array_equal(out["auto"], steps)
        np.testing.assert_array_equal(out["gru_auto"], gru_steps)
        assert "forked from one that had started GNU OpenMP" in out["tiled"]
    else:                                                           # (another threading layer)
        np.testing.assert_array_equal(out["auto"], tiled)
        np.testing.assert_array_equal(out["tiled"], tiled)
    assert _team.teams_usable()                                     # the parent is unaffected


def test_row_counts_are_whole_register_tiles():
    """``_gemm_tile`` runs R rows at a time: every row count the work is cut into is a multiple
    of R (an IN_ROWS of 130 ran the last panel's tiles past its rows)."""
    for rows in (lstm_tiled.IN_ROWS, lstm_tiled.RG, lstm_tiled.DX_ROWS):
        assert rows % lstm_tiled.R == 0


@settings(max_examples=25, deadline=None)
@given(G=st.sampled_from([3, 4]), H=st.integers(1, 70), K=st.integers(1, 70),
       extra=st.integers(0, 1), per_tile=st.sampled_from([48, 64]), seed=st.integers(0, 2**16),
       parts=st.integers(1, 3))
def test_packers_write_every_entry_of_the_index_map(G, H, K, extra, per_tile, seed, parts):
    """The packers fill buffers from ``_workspace.empty`` (stale numbers from earlier calls):
    every entry outside the index map must come out zero, whatever was there. Outputs start as
    NaN here and are compared with the map written out in plain Python; in one part or split
    over a parallel region (``_in_parts``), and the gradients' unpacking likewise."""
    rng = np.random.default_rng(seed)
    G = min(G, per_tile // 16)                           # (48 wide: the GRU's 3 blocks)
    W = rng.standard_normal((G * H, K)).astype(np.float32)
    blocks = rng.permutation(per_tile // 16)[:G].astype(np.int64)
    Hp = -(-H // 64) * 64
    Kp = -(-K // 64) * 64 + 64 * extra                   # rows (cols) past K stay zero

    cols = np.full((Hp // 16, Kp, per_tile), np.nan, np.float32)
    if parts == 1:
        lstm_tiled._pack_cols_into(W, H, blocks, cols, 0, 1)
    else:
        lstm_tiled._pack_cols_parts(W, H, blocks, cols, parts)
    want = np.zeros_like(cols)
    for g in range(G):
        for j in range(H):
            want[j // 16, :K, 16 * blocks[g] + j % 16] = W[g * H + j]
    np.testing.assert_array_equal(cols, want)

    rows = np.full((Kp // 64, Hp // 16 * per_tile, 64), np.nan, np.float32)
    if parts == 1:
        lstm_tiled._pack_rows_into(W, H, blocks, per_tile, rows, 0, 1)
    else:
        lstm_tiled._pack_rows_parts(W, H, blocks, per_tile, rows, parts)
    want = np.zeros_like(rows)
    for g in range(G):
        for j in range(H):
            for k in range(K):
                row = per_tile * (j // 16) + 16 * blocks[g] + j % 16
                want[k // 64, row, k % 64] = W[g * H + j, k]
    np.testing.assert_array_equal(rows, want)

    dW_T = rng.standard_normal((Kp, Hp // 16 * per_tile)).astype(np.float32)
    back = np.full((G * H, K), np.nan, np.float32)
    if parts == 1:
        lstm_tiled._unpack_grad(dW_T, H, K, blocks, per_tile, back, 0, 1)
    else:
        lstm_tiled._unpack_grad_parts(dW_T, H, K, blocks, per_tile, back, parts)
    for g in range(G):
        for j in range(H):
            col = per_tile * (j // 16) + 16 * blocks[g] + j % 16
            np.testing.assert_array_equal(back[g * H + j], dW_T[:K, col])
