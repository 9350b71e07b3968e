"""The persistent kernel's layout choices on a GPU, timed against each other and against cuDNN.

    python -m benchmarks.gpu_choices              # on a machine with an NVIDIA GPU
    python -m benchmarks.gpu_choices --check      # no GPU: the CUDA simulator, tiny sizes

``kernels/cuda/persistent.py`` chooses, per direction, how a block lays out its sums
(``PersistentPlan``): ``batch_tile`` (sequences per work item, register blocking), ``unroll``
(strided values each thread reads per pass of a sum before multiplying any: reads in flight at
once), ``staged`` (the rows the sums read copied to shared memory first, or read directly), and
in the backward ``unit_tile`` (hidden units per work item: each value of dG read serves them all).
For each cell and batch at T = 100, I = H = 512 (the GPU goal's shapes) this script times the
forward call and the backward call separately with the default plan and with each variant (one
process, variants alternated round by round, the median of every timed call), checks that each
variant's outputs equal the default's (the sums run in the same order whatever the layout, so
they should be bit-identical; the largest difference is printed), and times cuDNN's forward and
forward+backward in float32 (TF32 off) at the same shape. The summary row adds the fastest
forward and backward: the forward+backward the best choices would give.

Columns: ``plan`` the variant's fields (NB / unroll / rows / unit tile), ``threads`` its block
(KS, PS), ``ms`` the median per call, ``/ default``, ``max |diff|`` against the default's outputs.
"""
import argparse
import os
import sys
import time

if __package__ in (None, ""):                       # python benchmarks/gpu_choices.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402
from benchmarks._harness import count  # noqa: E402

NAME = "gpu_choices"
CELLS = ("lstm", "gru")
BATCHES = (1, 4, 16, 64)
#: (batch_tile, unroll, staged, unit_tile) variants, by whether the default plan stages its
#: rows (small batches) or not; None = the default plan's value. unit_tile: backward only.
VARIANTS = {
    "small": [(None, 2, None, None), (None, 4, None, None), (1, None, None, None),
              (1, 2, None, None), (1, 4, None, None), (4, None, None, None)],
    "large": [(None, 1, None, None), (None, 2, None, None), (None, 4, None, None),
              (1, None, None, None), (8, None, None, None), (8, 2, None, None),
              (8, 4, None, None), (None, None, None, 2), (None, None, None, 4),
              (2, None, None, 4), (None, 1, None, 4)],
}
CHECK_SHAPE = (2, 8, 3)            # --check: T, H, I (KS = 4 threads per sum on the simulator)
CHECK_BATCHES = (2,)               # --check: every variant of both kinds, at this batch


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="run on the CUDA simulator at tiny sizes (the code paths, not speed)")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated: lstm,gru")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)),
                    help="comma-separated batch sizes (default 1,4,16,64; --check: 2)")
    ap.add_argument("--rounds", type=count, default=5, help="alternated rounds (default 5)")
    ap.add_argument("--calls", type=count, default=4, help="timed calls per variant per round")
    ap.add_argument("--json", default=os.path.join("bench_out", "gpu_choices.json"),
                    help="where to write the results")
    args = ap.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if not args.cells or set(args.cells) - set(CELLS):
        ap.error(f"--cells: expected a non-empty subset of {CELLS}, got {args.cells}")
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        ap.error(f"--batches: expected comma-separated integers, got {args.batches!r}")
    if not args.batches or min(args.batches) < 1:
        ap.error(f"--batches: expected integers >= 1, got {args.batches}")
    return args


def _variant(persistent, cell, direction, dtype, B, H, fields):
    """The default plan with ``fields`` (batch_tile, unroll, staged, unit_tile; None = keep)
    replaced, with the widest block whose grid is co-resident; None where it does not fit (or
    a unit tile in a forward)."""
    from dataclasses import replace
    base = persistent.plan(cell, direction, dtype, B, H)
    nb, unroll, staged, unit_tile = fields
    if base is None or (direction == "forward" and unit_tile not in (None, 1)):
        return None
    want = replace(base, threads=None, batch_chunk=None,
                   batch_tile=base.batch_tile if nb is None else nb,
                   unroll=base.unroll if unroll is None else unroll,
                   staged=base.staged if staged is None else staged,
                   unit_tile=base.unit_tile if unit_tile is None else unit_tile)
    full = persistent._complete(cell, direction, dtype, B, H, want)
    if full is None:
        return None
    KS, PS = full.threads
    while PS >= 1:
        try:
            return persistent.plan_for(cell, direction, replace(full, threads=(KS, PS)), dtype, B, H)
        except ValueError:
            PS //= 2
    return None


def _describe(p):
    return f"{p.batch_tile} / {p.unroll} / {'staged' if p.staged else 'direct'} / {p.unit_tile}"


def _max_diff(a_list, b_list):
    import numpy as np
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in zip(a_list, b_list))


def _alternated(fns, rounds, calls, sync, warm=True):
    """Median seconds per call of each fn, the fns taking turns round by round; ``warm``: one
    untimed call of each first (compilation on a GPU)."""
    samples = [[] for _ in fns]
    for fn in fns if warm else ():
        fn()
    sync()
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                sync()
                samples[i].append(time.perf_counter() - t0)
    return [sorted(s)[len(s) // 2] for s in samples]


def run(args):
    import numpy as np
    from numba import cuda

    import kernels.cuda as kc
    from benchmarks.gpu import _problem, _torch_runner
    from kernels.cuda import persistent

    if args.check:
        T, H, I = CHECK_SHAPE
        batches, rounds, calls = CHECK_BATCHES, 1, 1
    else:
        T, H, I = 100, 512, 512
        batches, rounds, calls = args.batches, args.rounds, args.calls
    dtype = np.float32
    host = lambda outs: [o.copy_to_host() for o in outs]           # noqa: E731
    rows, summary = [], []
    print("| cell | B | direction | plan NB / unroll / rows / units | threads | ms | / default | "
          "max |diff| |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)
    for cell in args.cells:
        n_states = 2 if cell == "lstm" else 1
        fwd = getattr(kc, f"{cell}_forward")
        bwd = getattr(kc, f"{cell}_backward")
        for B in batches:
            x, w, dy, _ = _problem(cell, T, B, I, H, dtype)
            x_d, dy_d = cuda.to_device(x), cuda.to_device(dy)
            w_d = [cuda.to_device(a) for a in w]
            best = {}
            for direction in ("forward", "backward"):
                default = persistent.plan(cell, direction, dtype, B, H)
                if default is None:
                    print(f"| {cell} | {B} | {direction} | does not fit | | | | |", flush=True)
                    continue
                kinds = ("small", "large") if args.check else ("small" if default.staged else "large",)
                fields = [f for k in kinds for f in VARIANTS[k]]
                plans = [default] + [v for v in (_variant(persistent, cell, direction, dtype, B, H, f)
                                                 for f in fields) if v is not None]
                plans = list(dict.fromkeys(plans))                    # (a variant may be the default)
                cache = fwd(x_d, *w_d, path=default)[-1]
                if direction == "forward":
                    calls_ = [lambda p=p: fwd(x_d, *w_d, path=p) for p in plans]
                    outs = [host(fwd(x_d, *w_d, path=p)[:-1]) for p in plans]
                else:
                    calls_ = [lambda p=p: bwd(dy_d, *([None] * n_states), cache, path=p) for p in plans]
                    outs = [host(bwd(dy_d, *([None] * n_states), cache, path=p)) for p in plans]
                times = _alternated(calls_, rounds, calls, cuda.synchronize, warm=not args.check)
                for p, sec, out in zip(plans, times, outs):
                    row = {"cell": cell, "T": T, "B": B, "I": I, "H": H, "direction": direction,
                           "plan": vars(p), "default": p == default, "ms": 1e3 * sec,
                           "vs_default": sec / times[0], "max_abs_diff": _max_diff(out, outs[0])}
                    rows.append(row)
                    print(f"| {cell} | {B} | {direction} | {_describe(p)}"
                          f"{' (default)' if p == default else ''} | {p.threads} | "
                          f"{row['ms']:.3f} | {row['vs_default']:.2f} | {row['max_abs_diff']:.1e} |",
                          flush=True)
                    if row["max_abs_diff"] > 1e-5 * max(1.0, float(np.max(np.abs(outs[0][0])))):
                        raise SystemExit(f"gpu_choices: {cell} B={B} {direction} {p} differs from "
                                         f"the default plan's outputs by {row['max_abs_diff']:.3g}")
                i = int(np.argmin(times))
                best[direction] = (1e3 * times[i], 1e3 * times[0], plans[i])
            runner, why = (None, "--check") if args.check else _torch_runner(cell, I, H, w, x, dy)
            cudnn = {}
            if runner:
                cudnn = dict(zip(("fwd", "fwd+bwd"),
                                 _alternated([runner[0], runner[1]], rounds, calls, runner[2])))
            if len(best) == 2:
                s = {"cell": cell, "B": B, "default_fwd_ms": best["forward"][1],
                     "best_fwd_ms": best["forward"][0], "best_fwd_plan": vars(best["forward"][2]),
                     "default_fwd_bwd_ms": best["forward"][1] + best["backward"][1],
                     "best_fwd_bwd_ms": best["forward"][0] + best["backward"][0],
                     "best_bwd_plan": vars(best["backward"][2]),
                     "cudnn_fwd_ms": 1e3 * cudnn["fwd"] if cudnn else None,
                     "cudnn_fwd_bwd_ms": 1e3 * cudnn["fwd+bwd"] if cudnn else None,
                     "cudnn": runner[3] if runner else why}
                summary.append(s)
    print("\n| cell | B | fwd default ms | fwd best ms | cuDNN fwd ms | fwd+bwd default ms | "
          "fwd+bwd best ms | cuDNN fwd+bwd ms | best / cuDNN fwd, fwd+bwd |\n|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"                    # noqa: E731
    for s in summary:
        ratios = ("n/a" if s["cudnn_fwd_ms"] is None else
                  f"{s['best_fwd_ms'] / s['cudnn_fwd_ms']:.2f}x, "
                  f"{s['best_fwd_bwd_ms'] / s['cudnn_fwd_bwd_ms']:.2f}x")
        print(f"| {s['cell']} | {s['B']} | {fmt(s['default_fwd_ms'])} | {fmt(s['best_fwd_ms'])} | "
              f"{fmt(s['cudnn_fwd_ms'])} | {fmt(s['default_fwd_bwd_ms'])} | {fmt(s['best_fwd_bwd_ms'])} | "
              f"{fmt(s['cudnn_fwd_bwd_ms'])} | {ratios} |", flush=True)
    from benchmarks.gpu import _versions
    from kernels.cuda import gemm
    return {"check_mode": bool(args.check), "simulator": kc.SIMULATOR, "dtype": "float32",
            "T": T, "I": I, "H": H, "rounds": rounds, "calls": calls,
            "gemm_backend": gemm.backend(), "rows": rows, "summary": summary,
            "versions": _versions()}


def main(argv=None):
    args = parse_args(argv)
    from benchmarks.gpu import choose_simulator
    choose_simulator(args.check, "benchmarks/gpu_choices.py")
    import kernels.cuda as kc
    if not kc.is_available():
        raise SystemExit("gpu_choices: no CUDA GPU here; --check runs the code paths on the simulator")
    result = run(args)
    result["machine"] = hz.machine_info()
    hz.write_json(args.json, result)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
