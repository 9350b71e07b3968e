"""Start-up cost: from a fresh process to the first finished training step, with an empty and
with a warm Numba cache, against PyTorch.

    python -m benchmarks.startup            # 2 cold runs, 3 warm, 3 PyTorch (about a minute)
    python -m benchmarks.startup --quick    # 1 of each

Each run is a new ``python -c`` process (``subprocess``), so nothing is shared with this one
but the files on disk. The child builds the seed model

    Sequencer(Sequential(LSTM(2, 100), Linear(100, 3), LogSoftMax()))
    + SequencerCriterion(ClassNLLCriterion()) + optim.SGD(lr=0.1)

(or the same in PyTorch) on a (T, B, I) = (8, 8, 2) float32 batch, does one training step
(zero grads, forward, loss, backward, optimizer step), then a second one, and reports its
clocks. Cases:

    rnncore, cold cache   NUMBA_CACHE_DIR is a new empty temporary folder: every kernel the
                          step calls is compiled (a new folder for every cold run); the LSTM's
                          backward core in a second process meanwhile (``kernels/_ahead.py``)
    rnncore, cold, no compile ahead
                          the same with RNNCORE_COMPILE_AHEAD=0: everything compiles in the one
                          process (runs alternate with the case above)
    rnncore, warm cache   the same folder again, now filled by the cold run: kernels are
                          loaded from the cache (without Numba's compiler set-up, which
                          loading does not need: ``kernels/_cache_stamp.py``, ``light_load``)
    rnncore, warm, Numba's own loading
                          the same with RNNCORE_LIGHT_LOAD=0: Numba sets up its typing and
                          lowering rules before it loads the first function (runs alternate
                          with the case above)
    PyTorch               the same step with torch.nn
    Numba alone, warm cache
                          no model: import NumPy and Numba, then the first call of a trivial
                          ``@njit(cache=True)`` function, from its warm cache (after one
                          untimed run): what a program of cached Numba code pays before its
                          own work, for scale. (Plain Numba: at that first call Numba imports
                          all of ``scipy.linalg``, ~0.1 s, which rnncore's kernels avoid,
                          ``kernels/_scipy_blas.py``; so the warm case can take less.)

Columns (each from the run of median total among a case's runs, so that the parts add up; the
JSON keeps every run):

    total s        wall time from just before the child is spawned to the end of its first step
                   (as the parent sees it: interpreter start-up included)
    python s       spawn to the child's first line (interpreter start-up)
    import s       ``import numpy, rnncore`` (or ``torch``)
    first step s   building the model and the first training step (Numba compiles or loads here)
    next step ms   the second training step: the steady-state cost, for scale

The children run without PYTHONDONTWRITEBYTECODE (the JSON records whether this process had
it): with it, every fresh process compiled rnncore's Python source again (its bytecode, unlike
that of pip-installed NumPy, Numba and PyTorch, is written at first import), which a warm start
on a usual machine does not do. An untimed child that only imports rnncore writes it before
the timed runs, so that no case pays for it (the first cold run did until 8e4848e).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):                       # python benchmarks/startup.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402

NAME = "startup"
SHAPE = (8, 8, 2, 100)                             # (T, B, I, H): the second seed shape
CLASSES = 3

# The child programs. {T} {B} {I} {H} {C} are filled in; each prints one JSON line.
_PRELUDE = """
import time
t_start = time.time()
import json
"""

CHILD_RNNCORE = _PRELUDE + """
import numpy as np
import rnncore
from rnncore import LSTM, ClassNLLCriterion, Linear, LogSoftMax, Sequencer, SequencerCriterion, Sequential, optim
t_import = time.time()
rnncore.manual_seed(0)
rng = np.random.default_rng(0)
x = rng.standard_normal(({T}, {B}, {I})).astype(np.float32)
y = rng.integers(0, {C}, size=({T}, {B}))
model = Sequencer(Sequential(LSTM({I}, {H}), Linear({H}, {C}), LogSoftMax()))
crit = SequencerCriterion(ClassNLLCriterion())
opt = optim.SGD(model.parameters(), lr=0.1)

def step():
    opt.zero_grad()
    out = model.forward(x)
    loss = crit.forward(out, y)
    model.backward(x, crit.backward(out, y))
    opt.step()
    return loss

loss = step()
t_step = time.time()
step()
t_next = time.time()
print(json.dumps(dict(t_start=t_start, t_import=t_import, t_step=t_step, t_next=t_next, loss=float(loss))))
"""

CHILD_IMPORT = _PRELUDE + """
import numpy as np
import rnncore
t_import = t_step = t_next = time.time()
print(json.dumps(dict(t_start=t_start, t_import=t_import, t_step=t_step, t_next=t_next, loss=0.0)))
"""

# What a program of cached Numba code pays before its own work, for scale: import NumPy and
# Numba, then the first call of a trivial cached function (loaded from a warm cache, as
# rnncore's kernels are). Run from a file: Numba caches nothing of a function defined in
# ``python -c`` code.
CHILD_NUMBA = _PRELUDE + """
import numpy as np
import numba
t_import = time.time()


@numba.njit(cache=True)
def total(a):
    s = 0.0
    for v in a:
        s += v
    return s


loss = total(np.ones(3))
t_step = time.time()
total(np.ones(3))
t_next = time.time()
print(json.dumps(dict(t_start=t_start, t_import=t_import, t_step=t_step, t_next=t_next, loss=float(loss))))
"""

CHILD_TORCH = _PRELUDE + """
import numpy as np
import torch
import torch.nn.functional as F
t_import = time.time()
torch.manual_seed(0)
rng = np.random.default_rng(0)
x = torch.from_numpy(rng.standard_normal(({T}, {B}, {I})).astype(np.float32))
y = torch.from_numpy(rng.integers(0, {C}, size=({T}, {B}))).reshape(-1)

class Seq(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.linear = torch.nn.LSTM({I}, {H}), torch.nn.Linear({H}, {C})

    def forward(self, x):
        return F.log_softmax(self.linear(self.lstm(x)[0]), dim=-1)

model = Seq()
opt = torch.optim.SGD(model.parameters(), lr=0.1)

def step():
    opt.zero_grad()
    loss = F.nll_loss(model(x).reshape(-1, {C}), y, reduction="sum") / {B}
    loss.backward()
    opt.step()
    return loss.item()

loss = step()
t_step = time.time()
step()
t_next = time.time()
print(json.dumps(dict(t_start=t_start, t_import=t_import, t_step=t_step, t_next=t_next, loss=float(loss))))
"""


FLOOR = "Numba alone, warm cache"
COLUMNS = ("total_s", "python_s", "import_s", "first_step_s", "next_step_ms")


def summarize(cases):
    """{case: {column: value, "runs": n}}: every column from the run of median total (the
    upper one of an even count), so that a row's parts add up to its total, which medians
    taken column by column do not."""
    summary = {}
    for case, runs in cases.items():
        middle = sorted(runs, key=lambda r: r["total_s"])[len(runs) // 2]
        summary[case] = {c: middle[c] for c in COLUMNS}
        summary[case]["runs"] = len(runs)
    return summary


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hz.add_common_args(ap, NAME)
    ap.add_argument("--cold-runs", type=hz.count, default=None, help="runs with an empty cache (default 2, quick 1)")
    ap.add_argument("--warm-runs", type=hz.count, default=None, help="warm-cache and PyTorch runs (default 3, quick 1)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    args = ap.parse_args(argv)
    if args.cold_runs is None:
        args.cold_runs = 1 if args.quick else 2
    if args.warm_runs is None:
        args.warm_runs = 1 if args.quick else 3
    return args


def run_child(code, threads, cache_dir=None, timeout=600, extra_env=None, script=None):
    """Spawn ``python -c code`` (``python script`` with the code written to the file ``script``
    where given); return its clocks as seconds since the spawn."""
    env = dict(os.environ, **(extra_env or {}))
    env.pop("PYTHONDONTWRITEBYTECODE", None)          # rnncore's bytecode cached, as usual
    for k in hz.THREAD_ENV:
        env[k] = str(threads)
    env["PYTHONPATH"] = hz.REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    T, B, I, H = SHAPE
    src = code.format(T=T, B=B, I=I, H=H, C=CLASSES)
    if script is not None:
        with open(script, "w") as f:
            f.write(src)
    t_spawn = time.time()
    argv = [sys.executable] + (["-c", src] if script is None else [script])
    r = subprocess.run(argv, env=env, cwd=hz.REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"startup child failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    c = json.loads(r.stdout.strip().splitlines()[-1])
    return dict(total_s=c["t_step"] - t_spawn, python_s=c["t_start"] - t_spawn, import_s=c["t_import"] - c["t_start"],
                first_step_s=c["t_step"] - c["t_import"], next_step_ms=1e3 * (c["t_next"] - c["t_step"]),
                loss=c["loss"])


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    if not args.no_torch:
        hz.require_torch(NAME, " (or --no-torch: the rnncore rows only)")
    cold, cold_off = "rnncore, cold cache", "rnncore, cold, no compile ahead"
    warm, warm_full = "rnncore, warm cache", "rnncore, warm, Numba's own loading"
    cases = {cold: [], cold_off: [], warm: [], warm_full: []}
    if not args.no_torch:
        cases["PyTorch"] = []
    dirs = []
    try:
        run_child(CHILD_IMPORT, args.threads)         # rnncore's bytecode, written untimed
        for i in range(args.cold_runs):                # alternated: without, then with
            for case, ahead in ((cold_off, "0"), (cold, "1")):
                d = tempfile.mkdtemp(prefix="rnncore-numba-cache-")
                dirs.append(d)
                cases[case].append(run_child(CHILD_RNNCORE, args.threads, d,
                                             extra_env={"RNNCORE_COMPILE_AHEAD": ahead}))
        warm_dir = dirs[-1]                            # (filled by a run with compile ahead)
        for i in range(args.warm_runs):
            cases[warm].append(run_child(CHILD_RNNCORE, args.threads, warm_dir,
                                         extra_env={"RNNCORE_LIGHT_LOAD": "1"}))
            cases[warm_full].append(run_child(CHILD_RNNCORE, args.threads, warm_dir,
                                              extra_env={"RNNCORE_LIGHT_LOAD": "0"}))
            if "PyTorch" in cases:
                cases["PyTorch"].append(run_child(CHILD_TORCH, args.threads))
        cache_files = sum(len(fs) for _, _, fs in os.walk(warm_dir))
        floor_dir = tempfile.mkdtemp(prefix="rnncore-numba-floor-")
        dirs.append(floor_dir)
        script = os.path.join(floor_dir, "floor.py")
        run_child(CHILD_NUMBA, args.threads, floor_dir, script=script)      # fills its cache
        cases[FLOOR] = [run_child(CHILD_NUMBA, args.threads, floor_dir, script=script)
                        for _ in range(args.warm_runs)]
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)

    cols = COLUMNS
    summary = summarize(cases)
    rows = [[case, str(s["runs"])] + [hz.fmt(s[c]) for c in cols] for case, s in summary.items()]
    notes = [f"seed model at (T, B, I, H) = {SHAPE}, one SGD step; {args.threads} thread(s) via "
             f"{', '.join(hz.THREAD_ENV)}; each row the run of median total; the warm cache held "
             f"{cache_files} files after the runs"
             + ("; --quick: one run each" if args.quick else ""),
             "total = spawn to end of first step (as the parent sees it) = python + import + first step.",
             f"{FLOOR}: no model; import numpy and numba, then the first call of a trivial "
             f"@njit(cache=True) function, loaded from its cache: what a program of cached "
             f"Numba code pays before its own work (plain Numba: its first call imports "
             f"scipy.linalg, which rnncore avoids)."]
    tables = [("Fresh process to first finished training step",
               hz.markdown_table(["case", "runs", "total s", "python s", "import s", "first step s", "next step ms"],
                                 rows), notes)]
    payload = dict(quick=args.quick, argv=list(argv) if argv is not None else sys.argv[1:], threads=args.threads,
                   shape=SHAPE, pythondontwritebytecode=os.environ.get("PYTHONDONTWRITEBYTECODE"),
                   children_write_bytecode=True,
                   warm_cache_files=cache_files, summary=summary, runs=cases)
    return hz.report(NAME, payload, tables, args.json, print_fn=print_fn)


if __name__ == "__main__":
    main()
