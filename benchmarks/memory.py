"""Peak memory of one large training step (forward + backward of one layer), rnncore vs PyTorch.

    python -m benchmarks.memory                     # LSTM at (T, B, I, H) = (100, 64, 512, 512)
    python -m benchmarks.memory --cells lstm,gru    # also the GRU
    python -m benchmarks.memory --quick             # tiny sizes: checks the code paths

Every measurement runs in a fresh process (``python -c``, via subprocess), so one run's
allocator state and caches cannot hide in another's numbers. The child:

1. imports its library, makes the float32 inputs x (T, B, I) and dy (T, B, H) and the weights
   (these are the same for every case and are not counted);
2. runs the same step once untimed (Numba loads, or compiles, the kernels of the path that
   this T, B, I, H take; PyTorch initialises), then lets go of everything it made: its
   results, the module's caches (``clear_state``), rnncore's free workspace buffers
   (``kernels.release_workspace``); then ``gc.collect()`` and, on Linux with glibc,
   ``malloc_trim(0)``: the allocator hands freed heap back to the system, which a step reusing
   it would otherwise not show (PyTorch's warm-up leaves ~16 MB of it, NumPy's ~4). (Until
   session 39 the warm-up was a step of T = 2: where the path depends on T, as the tiled
   kernels' choice and their BLAS weight gradients do, the timed step then loaded, or even
   compiled, other kernels, and counted that memory: the GRU's kernel read 282 MB with a
   cold cache, 166 with a warm one.);
3. notes its resident set (VmRSS), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``,
   value 5; Linux) and starts ``tracemalloc``;
4. runs ONE forward + backward at full size, keeping the results (grads) alive;
5. reads the peak-RSS mark (VmHWM) and tracemalloc's peak.

Cases:

    kernel   ``kernels.<cell>.<cell>_forward`` then ``_backward`` (input, weight, bias grads)
    module   ``rnncore.<CELL>(I, H)``: ``forward(x)``, ``backward(x, dy)``
    PyTorch  ``torch.nn.<CELL>(I, H)``: ``y = m(x)`` with ``x.requires_grad``, ``y.backward(dy)``

Columns:

    step peak MB      VmHWM after the step - VmRSS before it: the most memory the step added at
                      any moment (MB = 2^20 bytes). Where clear_refs cannot be written, the
                      process-lifetime ru_maxrss is used instead and the table says so.
    vs PyTorch        this row's step peak / PyTorch's
    RSS before MB     the process before the step (interpreter, libraries, inputs)
    tracemalloc MB    peak of allocations Python can see (NumPy arrays: rnncore's caches and
                      grads; PyTorch's allocator is invisible to it, hence n/a)
    minimum MB        what any implementation must hold at the end of forward for the usual
                      BPTT: the gate activations (T, B, G*H) and the hidden (and cell) states
                      (T, B, H) each, in float32; for scale
"""
import argparse
import json
import os
import subprocess
import sys
import time

if __package__ in (None, ""):                       # python benchmarks/memory.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402

NAME = "memory"
SHAPE, QUICK_SHAPE = (100, 64, 512, 512), (5, 4, 8, 16)
CELLS = ("lstm", "gru", "rnn")
CASES = ("kernel", "module", "torch")

# The child program: {cell} {case} {T} {B} {I} {H} are filled in; prints one JSON line.
CHILD = """
import gc, json, os, resource, tracemalloc
import numpy as np
cell, case = "{cell}", "{case}"
T, B, I, H = {T}, {B}, {I}, {H}
G = dict(lstm=4, gru=3, rnn=1)[cell]
nstate = 2 if cell == "lstm" else 1
rng = np.random.default_rng(0)
k = 1 / np.sqrt(H)
W_ih = rng.uniform(-k, k, (G * H, I)).astype(np.float32)
W_hh = rng.uniform(-k, k, (G * H, H)).astype(np.float32)
biases = [rng.uniform(-k, k, G * H).astype(np.float32) for _ in range(2 if cell == "gru" else 1)]
x = rng.standard_normal((T, B, I)).astype(np.float32)
dy = rng.standard_normal((T, B, H)).astype(np.float32)

if case == "kernel":
    import importlib
    kmod = importlib.import_module("kernels." + cell)
    fwd, bwd = getattr(kmod, cell + "_forward"), getattr(kmod, cell + "_backward")
    def step(x, dy):
        out = fwd(x, W_ih, W_hh, *biases)
        return out[0], bwd(dy, *([None] * nstate), out[-1])
elif case == "module":
    import rnncore
    m = getattr(rnncore, cell.upper())(I, H)
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if cell == "gru" else ["bias_l0"])
    m.load_state_dict(dict(zip(names, [W_ih, W_hh] + biases)))
    def step(x, dy):
        y = m.forward(x)
        return y, m.backward(x, dy)
else:
    import torch
    m = getattr(torch.nn, cell.upper())(I, H)
    def step(x, dy):
        xt = torch.from_numpy(x).requires_grad_(True)
        y, _ = m(xt)
        y.backward(torch.from_numpy(dy))
        return y, xt.grad

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

step(x, dy)                                         # load / compile: this path
if case == "module":
    m.clear_state()                                 # (its caches of that step)
if case != "torch":
    import kernels
    kernels.release_workspace()                     # (the step's buffers, all free now)
gc.collect()
try:
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)         # freed heap back to the system (glibc)
except (OSError, AttributeError):
    pass
rss_before = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    method = "VmHWM"
except OSError:
    method = "ru_maxrss"
tracemalloc.start()
keep = step(x, dy)
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
if method == "VmHWM":
    peak = status("VmHWM")
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(rss_before=rss_before, peak_rss=peak, method=method, traced_peak=traced_peak,
                      maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hz.add_common_args(ap, NAME)
    ap.add_argument("--cells", default="lstm", help="comma-separated subset of lstm,gru,rnn (default lstm)")
    ap.add_argument("--shape", default=None, help="T,B,I,H (default 100,64,512,512; quick 5,4,8,16)")
    args = ap.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in args.cells if c not in CELLS]
    if bad or not args.cells:
        ap.error(f"--cells: expected a non-empty subset of {CELLS}, got {bad or args.cells}")
    if args.shape is None:
        args.shape = QUICK_SHAPE if args.quick else SHAPE
    else:
        try:
            args.shape = tuple(int(v) for v in args.shape.split(","))
        except ValueError:
            ap.error(f"--shape: expected four positive integers T,B,I,H, got {args.shape!r}")
        if len(args.shape) != 4 or min(args.shape) < 1:
            ap.error(f"--shape: expected four positive integers T,B,I,H, got {args.shape}")
    return args


def run_child(cell, case, shape, threads, timeout=600):
    env = dict(os.environ)
    for k in hz.THREAD_ENV:
        env[k] = str(threads)
    env["PYTHONPATH"] = hz.REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    T, B, I, H = shape
    src = CHILD.format(cell=cell, case=case, T=T, B=B, I=I, H=H)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", src], env=env, cwd=hz.REPO_ROOT, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"memory child ({cell}, {case}) failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["child_wall_s"] = time.perf_counter() - t0
    return out


def minimum_bytes(cell, T, B, H):
    """float32 bytes of the usual BPTT activations: gates (T, B, G*H) + h (and c) (T, B, H)."""
    G = hz.GATES[cell]
    states = 2 if cell == "lstm" else 1
    return 4 * T * B * H * (G + states)


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    hz.require_torch(NAME)
    MB = 2.0 ** 20
    T, B, I, H = args.shape
    results, rows = [], []
    for cell in args.cells:
        res = {case: run_child(cell, case, args.shape, args.threads) for case in CASES}
        base = res["torch"]["peak_rss"] - res["torch"]["rss_before"]
        for case in CASES:
            r = res[case]
            step_peak = r["peak_rss"] - r["rss_before"]
            row = dict(cell=cell, case=case, T=T, B=B, I=I, H=H, step_peak_mb=step_peak / MB,
                       vs_torch=step_peak / base if base > 0 else None, rss_before_mb=r["rss_before"] / MB,
                       tracemalloc_peak_mb=r["traced_peak"] / MB if case != "torch" else None,
                       minimum_mb=minimum_bytes(cell, T, B, H) / MB, method=r["method"], maxrss_mb=r["maxrss"] / MB,
                       child_wall_s=r["child_wall_s"])
            results.append(row)
            label = dict(kernel="rnncore kernel", module="rnncore module", torch="PyTorch")[case]
            rows.append([cell, label, hz.fmt(row["step_peak_mb"]), hz.fmt(row["vs_torch"], "x"),
                         hz.fmt(row["rss_before_mb"]), hz.fmt(row["tracemalloc_peak_mb"]), hz.fmt(row["minimum_mb"])])
    methods = sorted({r["method"] for r in results})
    notes = [f"(T, B, I, H) = {args.shape}, float32, forward + backward of one layer, each case in a fresh "
             f"process; step peak from {' and '.join(methods)}" + (" (process lifetime: includes start-up)"
                                                                     if "ru_maxrss" in methods else "")
             + "; MB = 2^20 bytes" + ("; --quick: sizes too small to mean anything" if args.quick else ""),
             "minimum = float32 gate activations (T, B, G*H) + hidden (and cell) states (T, B, H): what BPTT "
             "keeps between forward and backward."]
    tables = [("Peak memory of one training step (fwd+bwd), rnncore vs PyTorch",
               hz.markdown_table(["cell", "implementation", "step peak MB", "vs PyTorch", "RSS before MB",
                                  "tracemalloc MB", "minimum MB"], rows), notes)]
    payload = dict(quick=args.quick, argv=list(argv) if argv is not None else sys.argv[1:], threads=args.threads,
                   shape=args.shape, results=results)
    return hz.report(NAME, payload, tables, args.json, print_fn=print_fn)


if __name__ == "__main__":
    main()
