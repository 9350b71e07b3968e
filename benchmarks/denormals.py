"""Do subnormal numbers slow the kernels down on this machine? Each cell's float32 kernels, on
ordinary numbers and on subnormal ones, timed against each other.

    python -m benchmarks.denormals                      # LSTM, GRU, RNN at (64, 32, 128, 256)
    python -m benchmarks.denormals --shape 100,64,512,512 --cells lstm
    python -m benchmarks.denormals --quick              # tiny sizes: checks the code paths

Subnormal float32 numbers (below 2^-126 ~ 1.2e-38 in size) take a slow microcode path on some
CPUs: one multiply or add many times slower. In an RNN they come from long sequences: states
that decay step after step while the input is quiet, and, far more often, gradients that
vanish backwards through time. Since 2026-12-03 the kernels' compiled cores run with the CPU's
flush-to-zero and denormals-are-zero modes (``kernels/_common.py``, ``flush_subnormals``):
subnormal inputs read as 0 and subnormal results are 0, so this script now checks that
subnormal inputs cost nothing; before, it measured what they cost.

Per cell and path (``steps`` and ``tiled``, the tiled one forced even where ``auto`` would not
take it), two runs of the same kernel with the same weights (N(0, 1/H), biases 0):

    normal      x ~ N(0, 1), zero initial states; backward: dy ~ N(0, 1) on that forward
    subnormal   the same x and dy times 2^-140 (~7e-43): without the flush every
                pre-activation, state, output and gradient of the run is then subnormal or
                zero; with it, all are 0 (``subnormal share``: of the non-zero outputs, y
                forward, dx backward, the fraction that are subnormal; 0 where none is non-zero)

Columns: the two times (median of interleaved rounds, ``_harness.time_interleaved``), their
ratio (above 1: subnormals are slower here), and the share. No PyTorch involved.

**Measured**, at the default shape, before the flush:
- the 2-core AMD EPYC (Zen 3) of ``results/cpu_zen3.md``: the forwards 1.05-1.21x slower on
  subnormals, the backwards 0.88-1.07x (three runs; ``results/cpu_zen3_denormals.json``), the
  cost in the activations (flushing their arguments alone took it away but cost 13-15 % in
  those loops on ordinary numbers);
- the 2-core Intel Xeon of ``results/cpu.md`` (``results/cpu_xeon480_denormals_3af7c13.json``):
  every kernel 18-140x slower (LSTM tiled forward 7.75 against 1085 ms, backward 15.8 against
  289), the many-fold penalty Intel CPUs charge.
After it, on that Xeon (``results/cpu_xeon480_denormals_2d6f99e.json``): 0.97-1.02x for every
backward and every tiled forward. The serial forwards still read 26-30x (from 125-137x): their
input product x W_ih^T runs partly on OpenBLAS's own threads, which keep their own mode, and x
is all subnormal here. Only an input given so is: the states, outputs and gradients that the
kernels make are never subnormal, so a layer's output is no such input for the next layer.
"""
import argparse
import os
import sys

if __package__ in (None, ""):                       # python benchmarks/denormals.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402

NAME = "denormals"
SHAPE, QUICK_SHAPE = (64, 32, 128, 256), (4, 2, 3, 8)
CELLS = ("lstm", "gru", "rnn")
PATHS = {"lstm": ("steps", "tiled"), "gru": ("steps", "tiled"), "rnn": ("steps", "tiled")}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
#: The subnormal run's inputs are the normal run's times this: 2^-140, deep in float32's
#: subnormal range (2^-149 .. 2^-126) with 9 bits of precision left.
SCALE = 2.0 ** -140


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hz.add_common_args(ap, NAME)
    ap.add_argument("--cells", default=",".join(CELLS),
                    help="comma-separated subset of " + ",".join(CELLS))
    ap.add_argument("--shape", default=None, metavar="T,B,I,H",
                    help=f"the layer's size (default {','.join(map(str, SHAPE))}; quick "
                         f"{','.join(map(str, QUICK_SHAPE))})")
    ap.add_argument("--repeat", type=hz.count, default=None,
                    help="timed rounds (median reported; default 7, quick 3)")
    args = ap.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if not args.cells or set(args.cells) - set(CELLS):
        ap.error(f"--cells: expected a non-empty subset of {CELLS}, got {args.cells}")
    if args.shape is None:
        args.shape = QUICK_SHAPE if args.quick else SHAPE
    else:
        shape = hz.positive_ints(args.shape, 4)
        if shape is None:
            ap.error(f"--shape: expected 4 positive integers separated by commas (T,B,I,H), "
                     f"got {args.shape!r}")
        args.shape = shape
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    return args


def _kernel_calls(cell, path, x, weights, dy):
    """(forward, backward) zero-argument callables of one cell's kernels on ``x``; the
    backward runs on the cache of one forward made here. Each returns its first result (y
    forward, dx backward)."""
    import importlib
    mod = importlib.import_module(f"kernels.{cell}")
    forward, backward = getattr(mod, f"{cell}_forward"), getattr(mod, f"{cell}_backward")
    kw = dict(path=path)
    no_states = (None,) * (2 if cell == "lstm" else 1)       # dh_n (and dc_n): none
    cache = forward(x, *weights, **kw)[-1]
    return (lambda: forward(x, *weights, **kw)[0]), (lambda: backward(dy, *no_states, cache)[0])


def subnormal_share(a):
    """Of the non-zero entries of ``a``, the fraction that are subnormal (0 where none is
    non-zero)."""
    import numpy as np
    nonzero = a != 0
    n = int(np.count_nonzero(nonzero))
    if n == 0:
        return 0.0
    return float(np.count_nonzero(nonzero & (np.abs(a) < np.finfo(a.dtype).tiny))) / n


def bench_cell(cell, path, shape, repeat, min_sample_s, seed=0):
    """Rows (fwd, bwd) for one cell and path: both runs' times, their ratio, and each run's
    subnormal share."""
    import numpy as np
    T, B, I, H = shape
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    f32 = np.float32
    x = rng.standard_normal((T, B, I)).astype(f32)
    dy = rng.standard_normal((T, B, H)).astype(f32)
    std = 1.0 / np.sqrt(H)
    weights = [(std * rng.standard_normal((G * H, I))).astype(f32),
               (std * rng.standard_normal((G * H, H))).astype(f32),
               np.zeros(G * H, f32)] + ([np.zeros(G * H, f32)] if cell == "gru" else [])
    runs = {"normal": _kernel_calls(cell, path, x, weights, dy),
            "subnormal": _kernel_calls(cell, path, (x * f32(SCALE)), weights, dy * f32(SCALE))}
    rows = []
    for k, name in enumerate(("fwd", "bwd")):
        fns = {run: calls[k] for run, calls in runs.items()}
        results = {run: f() for run, f in fns.items()}
        for run, out in results.items():
            if not np.all(np.isfinite(out)):
                raise RuntimeError(f"{cell} {path} {name} {run}: non-finite results")
        t = hz.time_interleaved(fns, repeat, min_sample_s, idle_s=0.0)
        ms = {run: t[run]["median_s"] * 1e3 for run in fns}
        rows.append(dict(cell=cell, path=path, pass_=name, T=T, B=B, I=I, H=H,
                         normal_ms=ms["normal"], subnormal_ms=ms["subnormal"],
                         ratio=ms["subnormal"] / ms["normal"],
                         share={run: subnormal_share(out) for run, out in results.items()},
                         timings=t))
    return rows


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    env_in_time = hz.set_thread_env(args.threads)
    import numpy as np  # noqa: F401
    import scipy.linalg.blas  # noqa: F401  (load SciPy's OpenBLAS: the one Numba's np.dot uses)
    import kernels  # noqa: F401
    import kernels._gemm as gemm

    min_sample = 0.001 if args.quick else 0.05
    rows = []
    with hz.limit_threads(args.threads, use_torch=False) as threads:
        threads["env_set_before_import"] = env_in_time
        for cell in args.cells:
            for path in PATHS[cell]:
                rows += bench_cell(cell, path, args.shape, args.repeat, min_sample)
    table = [[r["cell"], r["path"], r["pass_"], hz.fmt(r["normal_ms"], "ms"),
              hz.fmt(r["subnormal_ms"], "ms"), f"{r['ratio']:.2f}",
              f"{r['share']['normal']:.0%}", f"{r['share']['subnormal']:.0%}"] for r in rows]
    T, B, I, H = args.shape
    caption = (f"float32, (T, B, I, H) = ({T}, {B}, {I}, {H}); {hz.threads_summary(threads)}; "
               f"median of {args.repeat} interleaved rounds; "
               f"this CPU: {gemm.VECTOR * 32}-bit vectors"
               + ("; --quick: sizes too small to mean anything" if args.quick else ""))
    worst = max(rows, key=lambda r: r["ratio"])
    summary = (f"Slowest on subnormals relative to normal numbers: {worst['cell']} {worst['path']} "
               f"{worst['pass_']}, {worst['ratio']:.2f}x (1.00x: no penalty; the noise of one "
               f"run on a shared machine is 10-30 %).")
    tables = [("Ordinary against subnormal numbers, the same kernels",
               hz.markdown_table(["cell", "path", "pass", "normal ms", "subnormal ms",
                                  "subnormal / normal", "subnormal share, normal run",
                                  "subnormal share, subnormal run"], table),
               [caption, "share: of the non-zero outputs (y forward, dx backward), the fraction "
                         "below 2^-126.", summary])]
    for r in rows:
        r["pass"] = r.pop("pass_")
    payload = dict(quick=args.quick, argv=list(argv) if argv is not None else sys.argv[1:],
                   threads=threads, shape=list(args.shape), scale=SCALE, results=rows)
    return hz.report(NAME, payload, tables, args.json, print_fn)


if __name__ == "__main__":
    main()
