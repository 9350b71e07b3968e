"""The kernels' CPU-dependent choices, timed both ways on this machine.

    python -m benchmarks.choices                        # all four choices (~5 minutes, 2 cores)
    python -m benchmarks.choices --only tiled,halves    # a subset (and --cells gru,rnn)
    python -m benchmarks.choices --quick                # tiny sizes: checks the code paths
    python -m benchmarks.choices --only tiled --shapes 32,8,64,128 16,8,64,128 --repeat 11
                                                        # shapes of one's own, one choice

Four places pick between two ways of computing the same thing, with bounds measured on the
machines of ``benchmarks/results`` (each beside its code, with its measurements):

    packing  ``kernels/_gemm.pack_for``: one step's recurrent product on the packed register
             tile, or on BLAS (transposed); bounds MIN_ROWS, MAX_WORK, ONE_ROW_MAX_WEIGHTS
    tiled    ``kernels/_auto.uses_tiled``: a float32 LSTM, GRU or RNN layer on the tiled kernel
             (unit tiles, one team of threads) or the serial steps (``path="tiled"`` / "steps")
    pairing  ``kernels/_pair.MIN_WORK``: a bidirectional layer's two directions at once, one
             per core, or one after the other
    halves   ``rnncore.<CELL>._halves_from``: a one-directional layer's batch as two halves at
             once, one per core, or whole

On another CPU the bounds may sit elsewhere; this script times both sides of each choice at
shapes around its bounds, in one process, alternated (``_harness.time_interleaved``), and says
for each row what the rule picks and which side was faster. Before timing, the two sides'
outputs are compared (float32 rounding only); a mismatch stops the script.

Columns: ``A ms`` and ``B ms`` the median time per call of each side (per product for
packing; the JSON keeps every sample, in seconds per timed call, which for packing is
``products_per_call`` products); ``B / A``; ``rule`` the side the code takes at that shape;
``faster`` the side that measured faster, or ``level`` within
LEVEL (5 %: about one run's noise on a shared 2-core VM); ``agrees`` yes / no / level. The
bounds are powers of two of the work in multiply-adds, shown as ``log2 work``: one product's
``rows * K * N`` (packing; for tiled, one step's ``B G H H``) or one direction's forward
``T B G H (I + H)`` (pairing, halves; G = 4 LSTM, 3 GRU, 1 RNN). A ``no`` at one shape is a
hint, not a verdict: re-run it (the noise of a 2-core VM is of the same size as most margins).
"""
import argparse
import contextlib
import math
import os
import sys

if __package__ in (None, ""):                       # python benchmarks/choices.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402

NAME = "choices"
CHOICES = ("packing", "tiled", "pairing", "halves")
LEVEL = 0.05            # |B/A - 1| below this counts as level
TOLERANCE = 1e-3        # largest |A - B| accepted on outputs (float32, O(1) values)

# (rows, K, N): one step's product A (rows, K) @ W^T, W (N, K) = W_hh of an LSTM (N = 4H, K = H)
PACKING = [(1, 100, 400), (8, 100, 400), (64, 100, 400), (1, 256, 1024), (32, 256, 1024),
           (64, 256, 1024), (1, 512, 2048), (16, 512, 2048), (64, 512, 2048)]
# (T, B, I, H) per choice; cells per choice below
TILED = [(8, 16, 2, 128), (16, 8, 64, 128), (32, 8, 64, 128), (32, 16, 64, 128),
         (64, 32, 128, 256), (64, 32, 512, 256), (100, 64, 512, 512)]
PAIRING = [(8, 8, 2, 100), (16, 8, 2, 100), (8, 8, 2, 200), (32, 16, 64, 128)]
HALVES = [(32, 16, 64, 128), (32, 32, 64, 128), (64, 32, 128, 256), (100, 64, 512, 512)]
QUICK = dict(packing=[(1, 64, 256), (8, 64, 256)], tiled=[(3, 8, 4, 64)],
             pairing=[(3, 2, 3, 5)], halves=[(3, 4, 3, 5)])
CELLS = dict(tiled=("lstm", "gru", "rnn"), pairing=("lstm", "gru", "rnn"),
             halves=("lstm", "gru", "rnn"))
GATES = dict(lstm=4, gru=3, rnn=1)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hz.add_common_args(ap, NAME)
    ap.add_argument("--only", default=",".join(CHOICES), help="comma-separated subset of " + ",".join(CHOICES))
    ap.add_argument("--cells", default="lstm,gru,rnn", help="comma-separated subset of lstm,gru,rnn")
    ap.add_argument("--repeat", type=hz.count, default=None, help="timed rounds (median reported; default 7, quick 3)")
    ap.add_argument("--shapes", nargs="+", metavar="SHAPE", default=None,
                    help="time these shapes instead of the built-in ones, for one choice (--only): "
                         "ROWS,K,N for packing, T,B,I,H for the others; e.g. --only tiled --shapes "
                         "32,8,64,128 16,8,64,128")
    args = ap.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if not args.cells or set(args.cells) - set(GATES):
        ap.error(f"--cells: expected a non-empty subset of {tuple(GATES)}, got {args.cells}")
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    bad = [c for c in args.only if c not in CHOICES]
    if bad or not args.only:
        ap.error(f"--only: expected a non-empty subset of {CHOICES}, got {args.only}")
    if args.shapes is not None:
        args.shapes = _parse_shapes(ap, args.shapes, args.only)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    return args


def _parse_shapes(ap, texts, only):
    """``--shapes``: comma-separated positive ints, 3 per shape for packing, 4 for the others,
    for a single choice; a usage error (exit 2) naming --shapes otherwise."""
    if len(only) != 1:
        ap.error(f"--shapes: expected one choice in --only (each choice reads its own kind of "
                 f"shape), got {only}")
    size = 3 if only[0] == "packing" else 4
    shapes = []
    for text in texts:
        shape = hz.positive_ints(text, size)
        if shape is None:
            ap.error(f"--shapes: expected {size} positive integers separated by commas "
                     f"({'ROWS,K,N' if size == 3 else 'T,B,I,H'}) per shape, got {text!r}")
        shapes.append(shape)
    return shapes


def _check(what, a, b):
    import numpy as np
    err = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    if not err <= TOLERANCE:
        raise RuntimeError(f"{what}: the two sides disagree by {err:.3g} (> {TOLERANCE}); not timing")
    return err


def _verdict(rule, names, ms):
    """(faster side or 'level', agrees 'yes' / 'no' / 'level') for a row timed as ms[name]."""
    a, b = names
    ratio = ms[b] / ms[a]
    if abs(ratio - 1) < LEVEL:
        return "level", "level"
    faster = a if ratio > 1 else b
    return faster, "yes" if faster == rule else "no"


# ---------------------------------------------------------------------------------------------
# the four choices: each returns rows of dict(..., sides, rule, ms, check)
# ---------------------------------------------------------------------------------------------

def _timed_product():
    """A compiled loop of ``n`` step products, so that a 5 us product is not timed with the
    dispatcher's cost of each call from Python (imported here: Numba compiles it on first use)."""
    from numba import njit
    from kernels._gemm import step_product

    @njit(cache=True)
    def repeat_product(n, A, Wt, Wp, outT, out):
        for _ in range(n):
            step_product(A, Wt, Wp, outT, out)
    return repeat_product


def bench_packing(shapes, repeat, min_sample_s, idle_s):
    import numpy as np
    from kernels import _gemm, _workspace
    repeat_product = _timed_product()
    n = 20                                                   # products per timed call
    rows_out = []
    for rows, K, N in shapes:
        rng = np.random.default_rng(0)
        A = rng.standard_normal((rows, K)).astype(np.float32)
        W = (rng.standard_normal((N, K)) / math.sqrt(K)).astype(np.float32)   # (N, K) as W_hh
        none = np.empty((0, 0), np.float32)
        sides = {"packed": (none, _gemm.pack(W, transposed=True), none),
                 "BLAS": (W, _gemm._NO_PACK, _workspace.empty((N, rows), np.float32))}
        outs = {k: np.empty((rows, N), np.float32) for k in sides}
        for k, ops in sides.items():
            _gemm.step_product(A, *ops, outs[k])
        check = max(_check(f"packing {(rows, K, N)} {k}", outs[k], A @ W.T) for k in sides)
        fns = {k: (lambda ops=ops, out=outs[k]: repeat_product(n, A, *ops, out)) for k, ops in sides.items()}
        t = hz.time_interleaved(fns, repeat, min_sample_s, idle_s=idle_s)
        rule = "packed" if _gemm.pack_for(W, rows, transposed=True).size else "BLAS"
        rows_out.append(dict(choice="packing", cell="-", shape=(rows, K, N), work=rows * K * N,
                             sides=list(sides), rule=rule, check=check,
                             ms={k: v["median_s"] * 1e3 / n for k, v in t.items()},
                             products_per_call=n, timings=t))
    return rows_out


def _kernel_problem(cell, T, B, I, H, seed=0):
    import numpy as np
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    s = 1 / math.sqrt(H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    w = [rng.uniform(-s, s, (G * H, I)).astype(np.float32), rng.uniform(-s, s, (G * H, H)).astype(np.float32)]
    w += [rng.uniform(-s, s, G * H).astype(np.float32) for _ in range(2 if cell == "gru" else 1)]
    return x, dy, w


def bench_tiled(shapes, cells, repeat, min_sample_s, idle_s):
    import numpy as np
    from kernels import _auto
    rows_out = []
    for cell in cells:
        kmod = __import__(f"kernels.{cell}", fromlist=["_"])
        kf, kb = getattr(kmod, f"{cell}_forward"), getattr(kmod, f"{cell}_backward")
        nstate = 2 if cell == "lstm" else 1
        for T, B, I, H in shapes:
            x, dy, w = _kernel_problem(cell, T, B, I, H)

            def fb(path):
                out = kf(x, *w, path=path)
                return out[0], kb(dy, *([None] * nstate), out[-1])[0]

            rule = "tiled" if _auto.uses_tiled(GATES[cell], np.float32, T, B, I, H) else "steps"
            rows_out.append(_both_sides("tiled", cell, (T, B, I, H), B * GATES[cell] * H * H, rule,
                                        ("tiled", "steps"), fb, repeat, min_sample_s, idle_s))
    return rows_out


def _module_problem(cell, T, B, I, H, D, layers):
    import numpy as np
    import rnncore
    rnncore.manual_seed(0)
    m = getattr(rnncore, cell.upper())(I, H, num_layers=layers, bidirectional=D == 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, D * H)).astype(np.float32)
    return m, x, dy


def _module_fb(m, x, dy):
    m.zero_grad_parameters()
    y = m.forward(x).copy()
    return y, m.backward(x, dy).copy()


@contextlib.contextmanager
def _pair_bound():
    """``(kernels._pair, its MIN_WORK)``; the pairing and halves sides set MIN_WORK per call
    (both go through ``_pair``), and it is set back on the way out."""
    from kernels import _pair
    bound = _pair.MIN_WORK
    try:
        yield _pair, bound
    finally:
        _pair.MIN_WORK = bound


def bench_pairing(shapes, cells, repeat, min_sample_s, idle_s):
    rows_out = []
    with _pair_bound() as (_pair, bound):
        for cell in cells:
            for T, B, I, H in shapes:
                m, x, dy = _module_problem(cell, T, B, I, H, D=2, layers=2)
                work = T * B * GATES[cell] * H * (min(I, 2 * H) + H)   # as rnncore.recurrent has it
                _pair.MIN_WORK = bound
                rule = "paired" if _pair.pays(work) else "sequential"

                def fb(side):
                    _pair.MIN_WORK = 0 if side == "paired" else 1 << 62
                    return _module_fb(m, x, dy)

                rows_out.append(_both_sides("pairing", cell, (T, B, I, H), work, rule, ("paired", "sequential"),
                                            fb, repeat, min_sample_s, idle_s))
    return rows_out


def bench_halves(shapes, cells, repeat, min_sample_s, idle_s):
    rows_out = []
    with _pair_bound() as (_pair, bound):
        for cell in cells:
            for T, B, I, H in shapes:
                m, x, dy = _module_problem(cell, T, B, I, H, D=1, layers=1)
                work = T * B * GATES[cell] * H * (I + H)
                rule = "halves" if m._batch_in_halves(T, B, work) else "whole"

                def fb(side):
                    m._halves_from = 0 if side == "halves" else None     # this instance only
                    m._tiled_first = side != "halves" and type(m)._tiled_first
                    _pair.MIN_WORK = 0 if side == "halves" else bound
                    return _module_fb(m, x, dy)

                rows_out.append(_both_sides("halves", cell, (T, B, I, H), work, rule, ("halves", "whole"),
                                            fb, repeat, min_sample_s, idle_s))
    return rows_out


def _both_sides(choice, cell, shape, work, rule, sides, fb, repeat, min_sample_s, idle_s):
    """One row: ``fb(side) -> (y, dx)`` compared between the two sides, then timed."""
    (ya, dxa), (yb, dxb) = fb(sides[0]), fb(sides[1])
    check = max(_check(f"{choice} {cell} {shape} y", ya, yb), _check(f"{choice} {cell} {shape} dx", dxa, dxb))
    t = hz.time_interleaved({s: (lambda s=s: fb(s)) for s in sides}, repeat, min_sample_s, idle_s=idle_s)
    return dict(choice=choice, cell=cell, shape=shape, work=work, sides=list(sides), rule=rule, check=check,
                ms={k: v["median_s"] * 1e3 for k, v in t.items()}, timings=t)


# ---------------------------------------------------------------------------------------------

def main(argv=None, print_fn=print):
    args = parse_args(argv)
    env_in_time = hz.set_thread_env(args.threads)
    import numpy as np  # noqa: F401
    import scipy.linalg.blas  # noqa: F401  (load SciPy's OpenBLAS: the one Numba's np.dot uses)
    import rnncore  # noqa: F401
    import kernels._gemm as gemm
    from kernels import _pair

    def shapes(choice):
        if args.shapes is not None:
            return args.shapes
        return QUICK[choice] if args.quick else dict(packing=PACKING, tiled=TILED, pairing=PAIRING,
                                                     halves=HALVES)[choice]

    min_sample = 0.001 if args.quick else 0.05
    # No pause before a sample (``_harness.time_interleaved``'s idle_s; layer_step paused 0.12 s
    # up to its record of fabb92f), and the harness's default ~10 ms of untimed calls: both sides
    # are rnncore's, and a training loop runs its calls back to back. With the 0.12 s pause, the
    # sides that hand work to the pair worker thread measured up to 1.2x slower than in
    # back-to-back runs (threads woken anew).
    idle = 0.0
    rows, notes = [], []
    with hz.limit_threads(args.threads, use_torch=False) as threads:
        threads["env_set_before_import"] = env_in_time
        if "packing" in args.only:
            rows += bench_packing(shapes("packing"), args.repeat, min_sample, idle)
        can_pair = _pair.pays(1 << 62)               # two threads, and an OpenBLAS we can limit
        for choice, bench in (("tiled", bench_tiled), ("pairing", bench_pairing), ("halves", bench_halves)):
            if choice not in args.only:
                continue
            if choice in ("pairing", "halves") and not can_pair:
                notes.append(f"{choice}: not timed; it needs two threads and an OpenBLAS whose thread "
                             "count can be set (kernels._pair.pays)")
                continue
            rows += bench(shapes(choice), [c for c in CELLS[choice] if c in args.cells], args.repeat,
                          min_sample, idle)

    table = []
    for r in rows:
        a, b = r["sides"]
        r["ratio"] = r["ms"][b] / r["ms"][a]
        r["faster"], r["agrees"] = _verdict(r["rule"], r["sides"], r["ms"])
        table.append([r["choice"], r["cell"], str(r["shape"]), f"{math.log2(r['work']):.1f}", a, b,
                      hz.fmt(r["ms"][a]), hz.fmt(r["ms"][b]), f"{r['ratio']:.2f}", r["rule"], r["faster"],
                      r["agrees"]])
    disagree = [r for r in rows if r["agrees"] == "no"]
    summary = (f"{len(rows)} rows: the rule took the faster side in "
               f"{sum(r['agrees'] == 'yes' for r in rows)}, level in {sum(r['agrees'] == 'level' for r in rows)}, "
               f"the slower side in {len(disagree)}"
               + (": " + "; ".join(f"{r['choice']} {r['cell']} {r['shape']} ({r['rule']}, B / A = "
                                  f"{r['ratio']:.2f})" for r in disagree) if disagree else "") + ".")
    caption = (f"float32; {hz.threads_summary(threads)}; median of {args.repeat} interleaved rounds; "
               f"this CPU: {gemm.VECTOR * 32}-bit vectors (the bounds differ for AVX-512 and AVX2)"
               + ("; --quick: sizes too small to mean anything" if args.quick else ""))
    tables = [("CPU-dependent choices, both sides timed",
               hz.markdown_table(["choice", "cell", "shape", "log2 work", "A", "B", "A ms", "B ms", "B / A",
                                  "rule", "faster", "agrees"], table),
               [caption, "shape: (rows, K, N) of one product for packing, else (T, B, I, H); pairing: a "
                         "2-layer bidirectional module, halves: a 1-layer module, tiled: the kernels; all "
                         f"forward + backward. level: within {LEVEL:.0%}.", summary, *notes])]
    payload = dict(quick=args.quick, argv=list(argv) if argv is not None else sys.argv[1:], threads=threads,
                   vector_bits=gemm.VECTOR * 32, repeat=args.repeat, min_sample_s=min_sample, idle_s=idle,
                   level=LEVEL, rows=rows, notes=notes)
    return hz.report(NAME, payload, tables, args.json, print_fn=print_fn)


if __name__ == "__main__":
    main()
