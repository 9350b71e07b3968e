"""The benchmark scripts run (``--quick``), fill every column with a finite number and write
well-formed JSON. No speed is asserted: CI machines are shared and noisy.
"""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import (_harness, choices, gpu, layer_step, memory, startup,  # noqa: E402
                        train_to_target)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, tmp_path, *extra):
    """main(--quick ...) in this process; returns (payload, printed text, JSON as read back)."""
    path = tmp_path / f"{module.NAME}.json"
    printed = []
    payload = module.main(["--quick", "--json", str(path), *extra], print_fn=printed.append)
    with open(path) as f:
        on_disk = json.load(f)                       # strict JSON: no NaN/Infinity tokens
    return payload, "\n".join(printed), on_disk


def _tables(text):
    """Markdown tables in ``text``: lists of rows (header first), separator lines dropped."""
    tables, cur = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def _check_tables(text, headers):
    """Each expected table is printed with its header, and every cell of every row is filled
    (no blank, nan or inf)."""
    tables = _tables(text)
    assert [t[0] for t in tables] == headers
    for t in tables:
        assert len(t) > 1, f"table {t[0]} has no rows"
        for row in t[1:]:
            assert len(row) == len(t[0])
            for cell in row:
                assert cell and cell.lower() not in ("nan", "inf", "-inf"), (t[0], row)


def _finite(v, positive=False):
    return isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 if positive else v >= 0)


def test_layer_step_reports_a_peak_that_moved_during_the_run():
    within = 0.9 * layer_step.PHASE_DRIFT
    assert layer_step.phase_drift_note(300.0, 300.0 * (1 + within)) == []
    assert layer_step.phase_drift_note(300.0, 300.0 * (1 - within)) == []
    slower, faster = layer_step.phase_drift_note(300.0, 240.0), layer_step.phase_drift_note(300.0, 345.0)
    assert len(slower) == 1 and "-20 %" in slower[0] and "300.0 -> 240.0 GF/s" in slower[0]
    assert len(faster) == 1 and "+15 %" in faster[0] and "300.0 -> 345.0 GF/s" in faster[0]


def test_layer_step_quick(tmp_path):
    payload, text, on_disk = _run(layer_step, tmp_path, "--threads", "1")
    _check_tables(text, [
        ["cell", "T", "B", "I", "H", "pass", "kernel ms", "module ms", "PyTorch ms", "reference ms",
         "speedup", "GF/s", "% peak"],
        ["cell", "T", "B", "I", "H", "pass", "module ms", "PyTorch ms", "speedup", "GF/s", "% peak"],
        ["T", "B", "I", "H", "rnncore ms", "PyTorch ms", "speedup", "fwd ms", "criterion ms", "bwd ms",
         "optim ms"],
    ])
    assert on_disk["benchmark"] == "layer_step" and on_disk["quick"] is True
    assert _finite(on_disk["sgemm"]["peak_gflops"], positive=True)
    assert _finite(on_disk["sgemm_end"]["peak_gflops"], positive=True)   # measured again at the end
    assert f"{on_disk['sgemm_end']['peak_gflops']:.1f} at the end" in text
    # every cell x shape x pass, every column
    seen = {(r["cell"], (r["T"], r["B"], r["I"], r["H"]), r["pass"]) for r in on_disk["layer"]}
    assert seen == {(c, s, p) for c in layer_step.CELLS for s in layer_step.QUICK_GRID for p in ("fwd", "fwd+bwd")}
    for r in on_disk["layer"]:
        for k in ("kernel_ms", "module_ms", "torch_ms", "reference_ms", "speedup", "gflops", "pct_peak"):
            assert _finite(r[k], positive=True), (k, r)
        assert all(_finite(e) and e <= layer_step.TOLERANCE for e in r["check_max_abs_err"].values())
    assert {(r["cell"], r["pass"]) for r in on_disk["bidirectional"]} == \
        {(c, p) for c in layer_step.CELLS for p in ("fwd", "fwd+bwd")}
    for r in on_disk["bidirectional"]:
        for k in ("module_ms", "torch_ms", "speedup", "gflops", "pct_peak"):
            assert _finite(r[k], positive=True), (k, r)
    assert [(r["T"], r["B"], r["I"], r["H"]) for r in on_disk["train_step"]] == layer_step.SEED_SHAPES
    for r in on_disk["train_step"]:
        for k in ("rnncore_ms", "torch_ms", "speedup"):
            assert _finite(r[k], positive=True), (k, r)
        for k in ("forward_ms", "criterion_ms", "backward_ms", "optimizer_ms"):
            assert _finite(r[k]), (k, r)
    # the thread count asked for is the one every library reports
    th = on_disk["threads"]
    assert th["torch"] == 1 and th["numba"] == 1
    assert all(b["num_threads"] == 1 for b in th["blas"])
    # each row's check covers the output, the input gradient and every parameter gradient,
    # of the kernel and of the module
    for r in on_disk["layer"]:
        biases = ["db_ih", "db_hh"] if r["cell"] == "gru" else ["db"]
        module_biases = ["bias_ih_l0", "bias_hh_l0"] if r["cell"] == "gru" else ["bias_l0"]
        assert set(r["check_max_abs_err"]) == {
            "y", "dx", "dW_ih", "dW_hh", *biases, "module_y", "module_dx",
            *(f"module_d{k}" for k in ["weight_ih_l0", "weight_hh_l0", *module_biases])}, r
    assert payload["layer"][0]["kernel_ms"] == on_disk["layer"][0]["kernel_ms"]


def test_train_to_target_quick(tmp_path):
    payload, text, on_disk = _run(train_to_target, tmp_path)
    _check_tables(text, [["framework", "wall s", "epochs", "reached", "test acc", "ms/step", "speedup"]])
    assert set(on_disk["summary"]) == {"rnncore", "torch"}
    for fw, s in on_disk["summary"].items():
        for k in ("wall_s", "ms_per_step", "speedup"):
            assert _finite(s[k], positive=True), (fw, k)
        assert 1 <= s["epochs"] <= 2 and 0.0 <= s["final_test_accuracy"] <= 1.0
        assert isinstance(s["reached"], bool)
    # same weights, same data, same order: the two frameworks train the same model
    r, t = on_disk["runs"]["rnncore"][0], on_disk["runs"]["torch"][0]
    np.testing.assert_allclose(r["train_loss_per_epoch"], t["train_loss_per_epoch"], rtol=1e-3)


def test_functions_task_labels():
    """Class 0 (line) sequences are exactly straight after standardisation (y = +-x); the curved
    classes are not."""
    x, label = train_to_target.make_functions(300, np.random.default_rng(3))
    assert x.shape == (train_to_target.POINTS, 300, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-3)
    straight = np.min([np.max(np.abs(x[:, :, 1] - s * x[:, :, 0]), axis=0) for s in (1, -1)], axis=0)  # (300,)
    assert set(np.unique(label)) == {0, 1, 2}
    assert np.all(straight[label == 0] < 1e-4)
    assert np.all(straight[label != 0] > 1e-3)


def test_startup_quick(tmp_path):
    payload, text, on_disk = _run(startup, tmp_path)
    _check_tables(text, [["case", "runs", "total s", "python s", "import s", "first step s", "next step ms"]])
    assert set(on_disk["summary"]) == {"rnncore, cold cache", "rnncore, cold, no compile ahead",
                                       "rnncore, warm cache", "rnncore, warm, Numba's own loading",
                                       "PyTorch", "Numba alone, warm cache"}
    for case, s in on_disk["summary"].items():
        for k in ("total_s", "python_s", "import_s", "first_step_s", "next_step_ms"):
            assert _finite(s[k], positive=True), (case, k)
        assert s["total_s"] >= s["first_step_s"]
    assert on_disk["warm_cache_files"] > 0              # the cold run filled the fresh cache folder
    losses = {r["loss"] for runs in on_disk["runs"].values() for r in runs}
    assert all(math.isfinite(v) for v in losses)


def test_memory_quick(tmp_path):
    payload, text, on_disk = _run(memory, tmp_path)
    _check_tables(text, [["cell", "implementation", "step peak MB", "vs PyTorch", "RSS before MB",
                          "tracemalloc MB", "minimum MB"]])
    assert [r["case"] for r in on_disk["results"]] == list(memory.CASES)
    for r in on_disk["results"]:
        for k in ("step_peak_mb", "rss_before_mb", "minimum_mb", "maxrss_mb"):
            assert _finite(r[k]), (r["case"], k)
        assert r["rss_before_mb"] > 0
        assert r["case"] == "torch" or _finite(r["tracemalloc_peak_mb"], positive=True)


def test_choices_quick(tmp_path, monkeypatch):
    """Every choice is timed both ways at its quick shapes; the forced sides really ran (the
    pairing and halves sides go through ``run_pair``); the bounds are left as they were."""
    import kernels._pair as kp
    import rnncore
    import rnncore.recurrent as rec
    pairs = []
    real = kp.run_pair

    def counting(first, second):
        pairs.append(1)
        return real(first, second)

    monkeypatch.setattr(kp, "run_pair", counting)
    monkeypatch.setattr(rec, "run_pair", counting)
    bounds = (kp.MIN_WORK, rnncore.GRU._halves_from, rnncore.RNN._halves_from, rnncore.LSTM._halves_from)
    _run(choices, tmp_path, "--only", "halves")
    assert len(pairs) >= 2 * len(choices.CELLS["halves"])     # each cell's halves: fwd and bwd
    del pairs[:]
    _run(choices, tmp_path, "--only", "pairing")
    assert len(pairs) >= 4 * len(choices.CELLS["pairing"])    # 2 layers: fwd and bwd each
    payload, text, on_disk = _run(choices, tmp_path)
    _check_tables(text, [["choice", "cell", "shape", "log2 work", "A", "B", "A ms", "B ms", "B / A", "rule",
                          "faster", "agrees"]])
    expected = [(c, "-" if c == "packing" else cell, list(shape)) for c in choices.CHOICES
                for cell in choices.CELLS.get(c, ("-",)) for shape in choices.QUICK[c]]
    assert [(r["choice"], r["cell"], r["shape"]) for r in on_disk["rows"]] == expected
    for r in on_disk["rows"]:
        assert r["rule"] in r["sides"] and set(r["ms"]) == set(r["sides"])
        assert all(_finite(v, positive=True) for v in r["ms"].values()), r
        assert _finite(r["check"]) and r["check"] <= choices.TOLERANCE
        assert r["agrees"] in ("yes", "no", "level")
    assert bounds == (kp.MIN_WORK, rnncore.GRU._halves_from, rnncore.RNN._halves_from, rnncore.LSTM._halves_from)


def test_choices_times_shapes_of_ones_own(tmp_path):
    """``--shapes`` replaces the built-in shapes of the one choice in ``--only``."""
    _, _, on_disk = _run(choices, tmp_path, "--only", "tiled", "--cells", "lstm", "--shapes",
                         "3,8,4,64", "2,8,3,64")
    assert [(r["choice"], r["cell"], r["shape"]) for r in on_disk["rows"]] == [
        ("tiled", "lstm", [3, 8, 4, 64]), ("tiled", "lstm", [2, 8, 3, 64])]
    _, _, on_disk = _run(choices, tmp_path, "--only", "packing", "--shapes", "2,64,256")
    assert [r["shape"] for r in on_disk["rows"]] == [[2, 64, 256]]


def test_choices_verdict():
    assert choices._verdict("a", ("a", "b"), {"a": 1.0, "b": 1.2}) == ("a", "yes")
    assert choices._verdict("a", ("a", "b"), {"a": 1.2, "b": 1.0}) == ("b", "no")
    assert choices._verdict("b", ("a", "b"), {"a": 1.0, "b": 1.03}) == ("level", "level")


@pytest.mark.parametrize("name", ["layer_step", "train_to_target", "startup", "memory", "choices",
                                  "denormals", "gpu", "gpu_choices"])
def test_scripts_run_both_ways(name):
    """``python benchmarks/<name>.py`` and ``python -m benchmarks.<name>`` both start (--help)."""
    for cmd in ([sys.executable, os.path.join("benchmarks", f"{name}.py"), "--help"],
                [sys.executable, "-m", f"benchmarks.{name}", "--help"]):
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "--json" in r.stdout and ("--check" if name.startswith("gpu") else "--quick") in r.stdout


def test_layer_flops_formula():
    """GEMM FLOPs counted GEMM by GEMM equal the closed form the tables use."""
    T, B, I, H = 7, 3, 5, 4
    for cell, G in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        gemm = lambda M, N, K: 2 * M * N * K  # noqa: E731
        fwd = gemm(T * B, G * H, I) + T * gemm(B, G * H, H)
        bwd = T * gemm(B, H, G * H) + gemm(G * H, I, T * B) + gemm(G * H, H, T * B) + gemm(T * B, I, G * H)
        assert _harness.layer_flops(cell, T, B, I, H, backward=False) == fwd
        assert _harness.layer_flops(cell, T, B, I, H, backward=True) == fwd + bwd
        # 2 layers, 2 directions: layer 1 reads 2H features
        l1 = gemm(T * B, G * H, 2 * H) + T * gemm(B, G * H, H)
        assert _harness.layer_flops(cell, T, B, I, H, backward=False, num_layers=2, directions=2) == 2 * (fwd + l1)


def test_harness_helpers(tmp_path):
    calls = {"a": 0, "b": 0}

    def bump(k):
        calls[k] += 1

    t = _harness.time_interleaved({"a": lambda: bump("a"), "b": lambda: bump("b")}, repeat=3, min_sample_s=1e-4)
    assert set(t) == {"a", "b"}
    for k, v in t.items():
        assert len(v["samples_s"]) == 3 and 0 < v["min_s"] <= v["median_s"]
        assert calls[k] >= 1 + 3 * v["number"]            # warm-up + every sample's calls
    # a call too slow for the settle time still gets one untimed call before each sample:
    # calibration (2 calls) + per round 1 untimed + 1 timed
    slow = {"n": 0}

    def slow_call():
        slow["n"] += 1
        time.sleep(0.002)

    t = _harness.time_interleaved({"slow": slow_call}, repeat=2, min_sample_s=1e-4, settle_s=1e-4)
    assert t["slow"]["number"] == 1 and slow["n"] == 2 + 2 * 2
    # a sample is sized from the fastest calibration call, not from one that happened to be slow
    # (the second call here: the first is the warm-up)
    hiccup = {"n": 0}

    def hiccup_call():
        hiccup["n"] += 1
        if hiccup["n"] == 2:
            time.sleep(0.02)

    t = _harness.time_interleaved({"h": hiccup_call}, repeat=1, min_sample_s=0.01, idle_s=0)
    assert t["h"]["number"] > 1
    path = _harness.write_json(str(tmp_path / "sub" / "x.json"),
                               {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2)]})
    with open(path) as f:
        assert json.load(f) == {"a": None, "b": 1.5, "c": [2]}
    assert _harness.fmt(None) == "n/a" and _harness.fmt(2.0, "x") == "2.00x" and _harness.fmt(12.3, "pct") == "12%"


_THREADS_CHILD = """
import json
import numpy as np
import scipy.linalg.blas
import torch
import numba
import kernels.lstm
from benchmarks import _harness
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 8, 4)).astype(np.float32)
w = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in ((256, 4), (256, 64), (256,))]
with _harness.limit_threads(1) as record:
    kernels.lstm.lstm_forward(x, *w, path="tiled")         # a call on Numba's thread pool
    print(json.dumps(dict(record=[record["torch"], record.get("numba")],
                          now=[torch.get_num_threads(), numba.get_num_threads()])))
"""


def test_thread_limit_holds_for_pytorch_and_numba_alike():
    """In a process whose Numba pool is larger than ``--threads``, PyTorch and the kernels both
    run on the count asked for, and the record says so. Numba's OpenMP threading layer, started
    by the kernels' first call on its pool, had set PyTorch's count back to the pool's size
    after ``torch.set_num_threads(1)`` (while the record said 1), and the kernels' team kept
    the whole pool."""
    if _harness.available_cores() < 2:
        pytest.skip("needs two cores: Numba's pool is one thread here")
    env = {k: v for k, v in os.environ.items() if k not in _harness.THREAD_ENV}
    r = subprocess.run([sys.executable, "-c", _THREADS_CHILD], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == dict(record=[1, 1], now=[1, 1])


def _spy_forward(monkeypatch, cls):
    """Record (grad enabled, inference mode) of every call of ``cls.forward``."""
    modes, real = [], cls.forward

    def forward(self, *a, **kw):
        modes.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
        return real(self, *a, **kw)

    monkeypatch.setattr(cls, "forward", forward)
    return modes


def test_layer_step_times_pytorchs_forward_in_inference_mode(monkeypatch):
    """PyTorch's forward row runs under ``torch.inference_mode()``, its fastest forward
    (``torch.no_grad()`` took 2-13 % longer at the seed shapes): every call without autograd
    is an inference-mode call, in the single-layer and the bidirectional tables."""
    modes = _spy_forward(monkeypatch, torch.nn.RNN)
    layer_step.bench_layer("rnn", (3, 2, 3, 4), 1, 1e-4, 0.0, module=False)
    layer_step.bench_bidir("rnn", (3, 2, 3, 4), 1, 1e-4, 0.0)
    without_grad = [m for m in modes if not m[0]]
    assert without_grad and all(inference for _, inference in without_grad)
    assert any(grad for grad, _ in modes)                # the fwd+bwd rows keep autograd


def test_gpu_pytorch_side_starts_each_backward_from_no_gradients():
    """The cuDNN forward+backward closure sets every gradient to None first (as zero_grad()
    does): accumulating into the previous call's gradients timed one extra kernel per
    gradient on PyTorch's side only. Its forward runs in inference mode. (On the CPU here.)"""
    rng = np.random.default_rng(0)
    I, H, T, B = 3, 4, 5, 2
    w = [rng.standard_normal(s).astype(np.float32) for s in ((3 * H, I), (3 * H, H), 3 * H, 3 * H)]
    x, dy = rng.standard_normal((T, B, I)).astype(np.float32), np.ones((T, B, H), np.float32)
    runner, why = gpu._torch_runner("gru", I, H, w, x, dy, device="cpu")
    fwd, fwd_bwd, sync, _, m, xt = runner
    fwd_bwd()
    once = [xt.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    fwd_bwd()
    sync()
    for a, b in zip(once, [xt.grad] + [p.grad for p in m.parameters()]):
        torch.testing.assert_close(a, b)
    modes, real = [], m.forward

    def spy(*a, **kw):
        modes.append(torch.is_inference_mode_enabled())
        return real(*a, **kw)

    m.forward = spy
    fwd()
    assert modes == [True]


def test_choices_json_keeps_every_sample(tmp_path):
    """The record holds every timing sample (README: "The JSON holds every timing sample"),
    not only the medians."""
    _, _, on_disk = _run(choices, tmp_path, "--only", "packing,halves", "--cells", "rnn",
                         "--threads", "1")
    assert on_disk["rows"]
    for r in on_disk["rows"]:
        assert set(r["timings"]) == set(r["sides"])
        for side, t in r["timings"].items():
            assert len(t["samples_s"]) == on_disk["repeat"] and t["number"] >= 1
            per = r.get("products_per_call", 1)
            assert r["ms"][side] == pytest.approx(1e3 * t["median_s"] / per)


def test_train_to_target_reports_medians_of_an_even_count(tmp_path):
    """With an even --runs, the row is the median (the middle two's mean), as the README
    says, not the upper of the middle two."""
    import statistics
    _, _, on_disk = _run(train_to_target, tmp_path, "--runs", "2", "--threads", "1",
                         "--train", "64", "--test", "32", "--max-epochs", "1")
    for fw, runs in on_disk["runs"].items():
        s = on_disk["summary"][fw]
        for k in ("wall_s", "ms_per_step", "final_test_accuracy", "epochs"):
            assert s[k] == pytest.approx(statistics.median(r[k] for r in runs)), (fw, k)


def test_startup_row_is_one_run_so_its_parts_add_up():
    """Medians taken column by column gave rows whose parts did not add up to their total."""
    runs = [dict(total_s=5.0, python_s=0.1, import_s=0.9, first_step_s=4.0, next_step_ms=1.0),
            dict(total_s=6.0, python_s=0.3, import_s=0.5, first_step_s=5.2, next_step_ms=2.0),
            dict(total_s=7.0, python_s=0.2, import_s=0.7, first_step_s=6.1, next_step_ms=3.0)]
    row = startup.summarize({"case": runs})["case"]
    assert row == dict(runs[1], runs=3)


@pytest.mark.parametrize("module, argv, message", [
    (layer_step, ["--repeat", "0"], "--repeat: expected an integer >= 1, got 0"),
    (layer_step, ["--threads", "-1"], "--threads: expected an integer >= 1, got -1"),
    (layer_step, ["--cells", ","], "--cells: expected a non-empty subset"),
    (choices, ["--repeat", "x"], "--repeat: expected an integer >= 1, got 'x'"),
    (startup, ["--cold-runs", "0"], "--cold-runs: expected an integer >= 1, got 0"),
    (train_to_target, ["--batch", "-1"], "--batch: expected an integer >= 1, got -1"),
    (train_to_target, ["--max-epochs", "0"], "--max-epochs: expected an integer >= 1"),
    (train_to_target, ["--target", "1.5"], "--target: expected an accuracy in (0, 1]"),
    (train_to_target, ["--lr", "inf"], "--lr and --clip: expected finite numbers > 0"),
    (memory, ["--shape", "a,b,c,d"], "--shape: expected four positive integers"),
    (choices, ["--only", "tiled", "--shapes", "3,8,4"], "--shapes: expected 4 positive integers"),
    (choices, ["--only", "packing", "--shapes", "1,64,256,2"], "--shapes: expected 3 positive"),
    (choices, ["--only", "tiled", "--shapes", "0,8,4,64"], "--shapes: expected 4 positive"),
    (choices, ["--only", "halves", "--shapes", "a,b,c,d"], "--shapes: expected 4 positive"),
    (choices, ["--shapes", "3,8,4,64"], "--shapes: expected one choice in --only"),
    (gpu, ["--cells", "lstm,xyz"], "--cells: expected a non-empty subset of ('lstm', 'gru')"),
    (gpu, ["--cells", ","], "--cells: expected a non-empty subset"),
    (gpu, ["--compile-only", "--cc", "9"], "--cc: expected a compute capability MAJOR.MINOR"),
])
def test_bad_command_line_values_are_usage_errors(module, argv, message, capsys):
    """These had run until an IndexError or ZeroDivisionError (some after minutes of work)."""
    with pytest.raises(SystemExit) as e:
        module.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("module", [layer_step, train_to_target, startup, memory])
def test_a_missing_pytorch_is_said_with_the_install_command(module, monkeypatch):
    """Without torch (pip install -e . alone) these ended in a bare ModuleNotFoundError."""
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(SystemExit, match=r'needs PyTorch.*pip install -e "\.\[bench\]"'):
        module.main(["--quick"])


# -- spread: medians and ranges over several layer_step records --------------------------------
def _record(speedups, cpu="CPU A", quick=False, commit="abc", l3=None):
    """A layer_step record with one LSTM row per pass, one bidirectional row, one train step."""
    k_fb, m_fb, bi, step = speedups
    layer = [dict(cell="lstm", T=8, B=8, I=2, H=100, **{"pass": "fwd"}, speedup=9.0, module_speedup=None),
             dict(cell="lstm", T=8, B=8, I=2, H=100, **{"pass": "fwd+bwd"}, speedup=k_fb,
                  module_speedup=m_fb)]
    machine = dict(cpu=cpu, cores=2, commit=commit, **({"l3_cache": l3} if l3 else {}))
    return dict(benchmark="layer_step", quick=quick, machine=machine, layer=layer, bidirectional=[dict(cell="gru", T=4, B=2, I=3, H=5, **{"pass": "fwd+bwd"},
                                                 speedup=bi)],
                train_step=[dict(T=5, B=1, I=6, H=6, speedup=step)])


def test_spread_keeps_machines_of_one_cpu_name_and_other_l3_caches_apart(tmp_path):
    """Two machines sold as one CPU ('Intel(R) Xeon(R) Processor', 2 cores) with other caches
    and speeds were pooled into one table."""
    from benchmarks import _harness, spread
    files = []
    for i, l3 in enumerate(["491520K", "491520K", "107520K"]):
        files.append(str(tmp_path / f"r{i}.json"))
        with open(files[-1], "w") as f:
            json.dump(_record((1.0 + i, 1.0, 1.0, 1.0), cpu="Xeon", l3=l3), f)
    out = spread.main([*files, "--pass", "fwd+bwd"], print_fn=lambda *a: None)
    assert set(out) == {"Xeon, L3 491520K, 2 cores", "Xeon, L3 107520K, 2 cores"}
    assert out["Xeon, L3 491520K, 2 cores"]["commits"] == ["abc", "abc"]
    l3 = _harness.machine_info()["l3_cache"]                   # recorded where Linux says it
    if os.path.exists("/sys/devices/system/cpu/cpu0/cache/index3/size"):
        assert isinstance(l3, str) and l3


def test_spread_reports_median_and_range_per_row_and_leaves_out_what_is_no_full_run(tmp_path):
    from benchmarks import spread
    files = []
    for i, rec in enumerate([_record((1.0, 0.5, 2.0, 4.0)), _record((3.0, 1.5, 1.0, 6.0)),
                             _record((2.0, 1.0, 3.0, 5.0), commit="def"),
                             _record((100.0, 100.0, 100.0, 100.0), quick=True),    # left out
                             dict(benchmark="memory"),                               # left out
                             _record((7.0, 7.0, 7.0, 7.0), cpu="CPU B")]):           # its own table
        files.append(str(tmp_path / f"r{i}.json"))
        with open(files[-1], "w") as f:
            json.dump(rec, f)
    broken = tmp_path / "broken.json"
    broken.write_text('{"benchmark": "layer_step", "layer": [{"cell": "lstm"}]}')
    printed = []
    out = spread.main([*files, str(broken), "--pass", "fwd+bwd", "--json", str(tmp_path / "s.json")],
                      print_fn=printed.append)
    text = "\n".join(printed)
    assert f"(left out: {files[3]}: a --quick run)" in text
    assert f"(left out: {files[4]}: not a layer_step record)" in text
    assert f"(left out: {broken}: its 'layer' rows are not layer_step's" in text
    a, b = out["CPU A, 2 cores"], out["CPU B, 2 cores"]
    assert a["commits"] == ["abc", "abc", "def"] and b["commits"] == ["abc"]
    rows = {tuple(r["key"]): r for r in a["rows"]}
    assert set(rows) == {("layer", "lstm", 8, 8, 2, 100, "fwd+bwd"),     # --pass: no fwd row
                         ("bidirectional", "gru", 4, 2, 3, 5, "fwd+bwd"), ("train step", 5, 1, 6, 6)}
    lstm = rows[("layer", "lstm", 8, 8, 2, 100, "fwd+bwd")]
    assert lstm["kernel"] == dict(runs=3, median=2.0, min=1.0, max=3.0)
    assert lstm["module"] == dict(runs=3, median=1.0, min=0.5, max=1.5)
    assert rows[("bidirectional", "gru", 4, 2, 3, 5, "fwd+bwd")]["module"]["median"] == 2.0
    assert rows[("train step", 5, 1, 6, 6)]["step"] == dict(runs=3, median=5.0, min=4.0, max=6.0)
    assert "| lstm | 8 | 8 | 2 | 100 | fwd+bwd | 3    | 2.00x" in text and "1.00-3.00x" in text
    assert "### Single layer (CPU B, 2 cores)" in text and "7.00-7.00x" in text
    with open(tmp_path / "s.json") as f:
        assert json.load(f)["machines"]["CPU A, 2 cores"]["rows"][0]["kernel"]["runs"] == 3
    assert not any("fwd |" in line for line in printed)                  # the fwd row left out
    with pytest.raises(SystemExit, match="none of the files"):
        spread.main([files[3], files[4]], print_fn=printed.append)


def test_spread_reads_every_layer_step_record_in_the_results():
    """The committed records (every layer_step format since the first) all parse."""
    import glob
    from benchmarks import spread
    files = sorted(glob.glob(os.path.join(REPO, "benchmarks", "results", "cpu_layer_step*.json")))
    out = spread.main(files, print_fn=lambda *a: None)
    rows = [r for data in out.values() for r in data["rows"]]
    assert files and all(r["kernel"]["runs"] >= 1 for r in rows if r["key"][0] == "layer")
    assert all(math.isfinite(r[c]["median"]) for r in rows for c in r if c != "key")


def test_spread_runs_both_ways():
    for cmd in ([sys.executable, os.path.join("benchmarks", "spread.py"), "--help"],
                [sys.executable, "-m", "benchmarks.spread", "--help"]):
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "--pass" in r.stdout, r.stderr


def test_denormals_quick(tmp_path):
    """Every cell and path, forward and backward, timed on ordinary and on subnormal inputs;
    neither run's outputs are subnormal (the kernels read subnormal inputs as 0 and flush
    subnormal results: ``kernels/_common.flush_subnormals``)."""
    from benchmarks import denormals
    payload, text, on_disk = _run(denormals, tmp_path)
    _check_tables(text, [["cell", "path", "pass", "normal ms", "subnormal ms", "subnormal / normal",
                          "subnormal share, normal run", "subnormal share, subnormal run"]])
    want = [(c, p, s) for c in denormals.CELLS for p in denormals.PATHS[c] for s in ("fwd", "bwd")]
    assert [(r["cell"], r["path"], r["pass"]) for r in on_disk["results"]] == want
    for r in on_disk["results"]:
        assert _finite(r["normal_ms"], positive=True) and _finite(r["subnormal_ms"], positive=True)
        assert r["ratio"] == pytest.approx(r["subnormal_ms"] / r["normal_ms"])
        assert r["share"]["normal"] == 0.0 and r["share"]["subnormal"] == 0.0, r


def test_denormals_share_and_usage_errors():
    from benchmarks import denormals
    tiny = np.float32(2.0 ** -130)
    share = denormals.subnormal_share(np.array([0, 1, tiny, -tiny], np.float32))
    assert share == pytest.approx(2 / 3)
    assert denormals.subnormal_share(np.zeros(3, np.float32)) == 0.0
    for argv, words in ((["--shape", "4,2,3"], "--shape: expected 4 positive integers"),
                        (["--shape", "4,2,0,8"], "--shape: expected 4 positive integers"),
                        (["--cells", "lstm,xyz"], "--cells: expected a non-empty subset")):
        run = subprocess.run([sys.executable, "-m", "benchmarks.denormals", *argv], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and words in run.stderr, run.stderr


def test_a_run_started_on_a_busy_machine_says_so(tmp_path, monkeypatch):
    """The load before the run's own work is recorded, and a busy start is flagged in the
    printout (a later job's numbers moved by 2x and more, and the end's load no longer
    tells it apart from the run's own)."""
    lines = []
    cores = _harness.available_cores()
    for load, flagged in ((0.0, False), (_harness.BUSY_LOAD_PER_CORE * cores + 1, True)):
        monkeypatch.setitem(_harness._AT_START, "loadavg", [load, load, load])
        lines.clear()
        payload = _harness.report("x", {}, [], str(tmp_path / "x.json"), lines.append)
        assert payload["machine"]["loadavg_at_start"] == [load] * 3
        assert payload["machine"]["time_at_start"] == _harness._AT_START["time"]
        assert any("busy when this run started" in s for s in lines) == flagged


def test_more_threads_than_cores_is_said(capsys):
    cores = _harness.available_cores()
    assert _harness._threads(str(cores)) == cores
    assert "warning" not in capsys.readouterr().err
    assert _harness._threads(str(cores + 1)) == cores + 1
    assert f"--threads {cores + 1} is more than the {cores} cores" in capsys.readouterr().err
