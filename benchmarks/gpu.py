"""GPU benchmark: kernels.cuda (per-step and persistent paths) vs PyTorch's cuDNN LSTM and GRU.

    python benchmarks/gpu.py                  # on a machine with an NVIDIA GPU (pip install -e '.[cuda]';
                                              # with CuPy installed the big products use cuBLAS)
    python benchmarks/gpu.py --check          # no GPU: tiny sizes on numba's CUDA simulator
    python benchmarks/gpu.py --compile-only   # no GPU: compile every kernel for a GPU target
    python benchmarks/gpu.py --grid h512 --limit 1    # one shape only (a quick look)

Default run: float32, time-major input already on the device, for every (T, B, I, H) of the
grid below and each cell, the median wall time (``cuda.synchronize()`` on both sides) of

    fwd      one forward over the sequence
    fwd+bwd  forward, then backward with a random upstream dy (weights and input grads)

for ``path="steps"`` (a recurrent GEMM and a fused pointwise kernel per step),
``path="persistent"`` (one cooperative launch, W_hh in shared memory; "n/a" where the size rule
says the weights do not fit), and ``torch.nn.LSTM`` / ``nn.GRU`` on cuDNN when PyTorch with CUDA
is installed. Before timing, every configuration's two paths are checked against each other (and
the smallest against the NumPy reference). Prints a markdown table; writes JSON (``--json``).

``--check`` runs the same code on the CUDA simulator at tiny sizes with one repetition, and
compares every output and gradient of both paths with ``kernels.reference`` (float64): it proves
the benchmark's code paths, not speed. ``--compile-only`` compiles every kernel of
``kernels.cuda`` for ``--cc`` (default 9.0, H100) with the real numba-cuda target, which needs
numba-cuda and its NVVM (``pip install "numba-cuda[cu12]"``) but no GPU, and reports each
kernel's PTX size, whether float32 kernels contain float64 instructions, and, where NVIDIA's
``ptxas`` is found (on PATH or from the ``nvidia-cuda-nvcc`` wheel), its registers per thread and
spilled bytes for that GPU, and where ``nvdisasm`` is found too (``nvidia-cuda-nvdisasm``), the
instructions per FFMA of its machine code's busiest FFMA loop (the sums': index arithmetic
shows up there). A kernel that does not compile (a typing error numba's simulator never meets)
fails the run.
"""
import argparse
import os
import platform
import re
import sys
import time

if __package__ in (None, ""):                       # python benchmarks/gpu.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402
from benchmarks._harness import count, count0  # noqa: E402

#: (T, B, I, H): the CPU benchmark's grid, then batch 1, 4, 16 at H = 512.
GRID = [(5, 1, 6, 6), (8, 8, 2, 100), (32, 16, 64, 128), (64, 32, 128, 256), (100, 64, 512, 512),
        (100, 1, 512, 512), (100, 4, 512, 512), (100, 16, 512, 512)]
#: ``--grid h512``: only the H = 512 rows (batch 64, 1, 4, 16), the goal's shapes.
H512_GRID = [g for g in GRID if g[3] == 512]
#: --check sizes (the simulator runs each GPU thread as a Python thread).
CHECK_GRID = [(3, 1, 2, 3), (3, 2, 3, 4)]
CELLS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="run on the CUDA simulator at tiny sizes and verify outputs (no GPU needed)")
    mode.add_argument("--compile-only", action="store_true",
                      help="compile every kernel for --cc with numba-cuda (no GPU needed)")
    ap.add_argument("--cc", default="9.0", help="compute capability for --compile-only (default 9.0)")
    ap.add_argument("--repeat", type=count, default=10, help="timed repetitions (median reported)")
    ap.add_argument("--warmup", type=count0, default=2, help="untimed repetitions first (compilation)")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated: lstm,gru")
    ap.add_argument("--grid", choices=("all", "h512"), default="all",
                    help="all: every shape (default); h512: only the H = 512 rows")
    ap.add_argument("--limit", type=count, default=None,
                    help="only the first N shapes of the grid (a quick look, or a quick --check)")
    ap.add_argument("--json", default=os.path.join("bench_out", "gpu.json"),
                    help="where to write the results (default bench_out/gpu.json, as the CPU scripts)")
    args = ap.parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if not cells or set(cells) - set(CELLS):               # before anything is timed
        ap.error(f"--cells: expected a non-empty subset of {CELLS}, got {cells}")
    if not re.fullmatch(r"[0-9]+\.[0-9]+", args.cc):
        ap.error(f"--cc: expected a compute capability MAJOR.MINOR such as 9.0, got {args.cc!r}")
    return args


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

def _timed(fn, sync, repeat, warmup):
    """Median seconds of ``fn()`` over ``repeat`` runs, each bracketed by ``sync()``."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _problem(cell, T, B, I, H, dtype, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    k = 1.0 / np.sqrt(H)
    u = lambda *shape: rng.uniform(-k, k, shape).astype(dtype)       # noqa: E731  PyTorch's init
    weights = (u(G * H, I), u(G * H, H), u(G * H)) + ((u(G * H),) if cell == "gru" else ())
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    lengths = np.maximum(1, T - np.arange(B) % T).astype(np.int64)   # ragged: T, T-1, ...
    return x, weights, dy, lengths


def _ours(kc, cell, x, weights, dy, path, lengths=None, backward=True):
    fwd = getattr(kc, f"{cell}_forward")
    bwd = getattr(kc, f"{cell}_backward")
    out = fwd(x, *weights, lengths=lengths, path=path)
    if not backward:
        return out[:-1]
    n_states = 2 if cell == "lstm" else 1
    return out[:-1] + bwd(dy, *([None] * n_states), out[-1], path=path)


def _max_rel_diff(a_list, b_list):
    import numpy as np
    worst = 0.0
    for a, b in zip(a_list, b_list):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        worst = max(worst, float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)) if a.size else 0.0)
    return worst


def _verify(kc, ref, cell, T, B, I, H, check_mode, has_persistent):
    """Both paths agree with each other (float32, device arrays) and, at small sizes or in
    --check mode, with the NumPy reference in float64 (ragged lengths, forward and backward)."""
    import numpy as np
    from numba import cuda
    x, w, dy, lengths = _problem(cell, T, B, I, H, np.float32, seed=1)
    dev = [cuda.to_device(a) for a in (x, *w, dy)]
    xs, ws, dys = dev[0], dev[1:-1], dev[-1]
    host = lambda outs: [o.copy_to_host() for o in outs]           # noqa: E731
    steps = host(_ours(kc, cell, xs, ws, dys, "steps", lengths))
    report = {}
    if has_persistent:
        pers = host(_ours(kc, cell, xs, ws, dys, "persistent", lengths))
        report["steps_vs_persistent_f32"] = _max_rel_diff(pers, steps)
        assert report["steps_vs_persistent_f32"] < 1e-4, report
    if check_mode or T * B * H <= 8 * 8 * 100:
        x64, w64, dy64 = np.float64(x), [np.float64(a) for a in w], np.float64(dy)
        want_f = getattr(ref, f"{cell}_forward")(x64, *w64, lengths=lengths)
        n_states = 2 if cell == "lstm" else 1
        want = list(want_f[:-1]) + list(getattr(ref, f"{cell}_backward")(dy64, *([None] * n_states), want_f[-1]))
        for path in ("steps", "persistent") if has_persistent else ("steps",):
            got = _ours(kc, cell, x64, w64, dy64, path, lengths)
            key = f"{path}_vs_reference_f64"
            report[key] = _max_rel_diff(got, want)
            assert report[key] < 1e-10, report
    return report


def _torch_runner(cell, I, H, weights, x_np, dy_np, device="cuda"):
    """cuDNN forward / forward+backward closures, or None without torch CUDA. The forward
    runs under ``torch.inference_mode()`` (PyTorch's fastest); forward+backward resets every
    gradient to None first, as a training step's ``zero_grad()`` does (accumulating into the
    previous call's would add one kernel per gradient). ``device``: "cpu" in the tests."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    if device == "cuda" and not torch.cuda.is_available():
        return None, "torch has no CUDA"
    import numpy as np
    dev = torch.device(device)
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H).to(dev)
    with torch.no_grad():                     # same weights as ours (LSTM: our bias in b_ih, b_hh = 0)
        m.weight_ih_l0.copy_(torch.from_numpy(weights[0]))
        m.weight_hh_l0.copy_(torch.from_numpy(weights[1]))
        m.bias_ih_l0.copy_(torch.from_numpy(weights[2]))
        m.bias_hh_l0.copy_(torch.from_numpy(weights[3]) if cell == "gru" else torch.zeros(GATES[cell] * H))
    x = torch.from_numpy(x_np).to(dev).requires_grad_(True)
    dy = torch.from_numpy(np.ascontiguousarray(dy_np)).to(dev)
    params = list(m.parameters())

    def fwd(tf32=False):
        torch.backends.cudnn.allow_tf32 = tf32
        with torch.inference_mode():
            m(x)

    def fwd_bwd(tf32=False):
        torch.backends.cudnn.allow_tf32 = tf32
        x.grad = None
        for p in params:
            p.grad = None
        y, _ = m(x)
        y.backward(dy)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return (fwd, fwd_bwd, sync,
            f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}", m, x), None


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------

def run_benchmark(args):
    import numpy as np
    from numba import cuda

    import kernels.cuda as kc
    from kernels import reference as ref
    from kernels.cuda import persistent

    grid = CHECK_GRID if args.check else (H512_GRID if args.grid == "h512" else GRID)
    if args.limit is not None:                    # (>= 1: parse_args's type)
        grid = grid[:args.limit]
    repeat, warmup = (1, 0) if args.check else (args.repeat, args.warmup)
    if kc.SIMULATOR:
        dev, name = None, "numba CUDA simulator"
    else:
        dev = cuda.get_current_device()
        name = dev.name
    device = {"name": name.decode() if isinstance(name, bytes) else str(name),
              "compute_capability": list(getattr(dev, "compute_capability", ())),
              "simulator": kc.SIMULATOR}
    rows = []
    torch_note = None
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:   # (checked: parse_args)
        for (T, B, I, H) in grid:
            plans = {d: persistent.plan(cell, d, np.float32, B, H) for d in ("forward", "backward")}
            has_persistent = plans["forward"] is not None and plans["backward"] is not None
            check = _verify(kc, ref, cell, T, B, I, H, args.check, has_persistent)
            x, w, dy, _ = _problem(cell, T, B, I, H, np.float32)
            x_d, dy_d = cuda.to_device(x), cuda.to_device(dy)
            w_d = [cuda.to_device(a) for a in w]
            runner, why = _torch_runner(cell, I, H, w, x, dy) if not args.check else (None, "--check")
            torch_note = torch_note or (runner[3] if runner else why)
            flops_fwd = 2.0 * T * B * GATES[cell] * H * (I + H)
            for phase, backward in (("fwd", False), ("fwd+bwd", True)):
                row = {"cell": cell, "T": T, "B": B, "I": I, "H": H, "pass": phase,
                       "check": check, "plan": {d: (vars(p) if p else None) for d, p in plans.items()}}
                for path in ("steps", "persistent"):
                    if path == "persistent" and not has_persistent:
                        row[f"{path}_ms"] = None
                        continue
                    sec = _timed(lambda: _ours(kc, cell, x_d, w_d, dy_d, path, backward=backward),
                                 cuda.synchronize, repeat, warmup)
                    row[f"{path}_ms"] = 1e3 * sec
                if runner:               # float32 math (as ours), then PyTorch's default (TF32)
                    fn = runner[1] if backward else runner[0]
                    row["cudnn_ms"] = 1e3 * _timed(fn, runner[2], repeat, warmup)
                    row["cudnn_tf32_ms"] = 1e3 * _timed(lambda: fn(True), runner[2], repeat, warmup)
                else:
                    row["cudnn_ms"] = row["cudnn_tf32_ms"] = None
                best = min(v for v in (row["steps_ms"], row["persistent_ms"]) if v is not None)
                row["best_gflops"] = flops_fwd * (3 if backward else 1) / (best * 1e-3) / 1e9
                rows.append(row)
                print(_row_md(row), flush=True)
    from kernels.cuda import gemm
    return {"device": device, "torch": torch_note, "gemm_backend": gemm.backend(),
            "dtype": "float32", "repeat": repeat,
            "warmup": warmup, "check_mode": bool(args.check), "rows": rows,
            "versions": _versions()}


HEADER = ("| cell | T | B | I | H | pass | steps ms | persistent ms | cuDNN fp32 ms | "
          "cuDNN TF32 ms | persistent / cuDNN fp32 | best GF/s | "
          "persistent U / blocks, rows fwd / bwd, NB fwd / bwd, unroll fwd / bwd |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _row_md(r):
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"          # noqa: E731
    p, pb = r["plan"]["forward"], r["plan"]["backward"]
    rows = lambda q: "n/a" if q is None else ("staged" if q.get("staged") else "direct")  # noqa: E731
    plan = ("does not fit" if p is None else
            f"{p['units_per_block']} / {-(-r['H'] // p['units_per_block'])}, {rows(p)} / {rows(pb)}, "
            f"NB {p['batch_tile']} / {pb['batch_tile']}, "
            f"unroll {p.get('unroll', 1)} / {pb.get('unroll', 1)}")
    ratio = (None if r["persistent_ms"] is None or not r.get("cudnn_ms")
             else r["persistent_ms"] / r["cudnn_ms"])
    return (f"| {r['cell']} | {r['T']} | {r['B']} | {r['I']} | {r['H']} | {r['pass']} | "
            f"{fmt(r['steps_ms'])} | {fmt(r['persistent_ms'])} | {fmt(r['cudnn_ms'])} | "
            f"{fmt(r.get('cudnn_tf32_ms'))} | {'n/a' if ratio is None else f'{ratio:.2f}x'} | "
            f"{r['best_gflops']:.2f} | {plan} |")


def _versions():
    import numba
    import numpy as np
    out = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    try:
        from importlib.metadata import version
        out["numba-cuda"] = version("numba-cuda")
    except Exception:
        out["numba-cuda"] = None
    return out


# ---------------------------------------------------------------------------------------------
# --compile-only: every kernel through the real numba-cuda compiler, no GPU
# ---------------------------------------------------------------------------------------------

def kernel_signatures(dtype):
    """(name, dispatcher, argument types) of every kernel kernels.cuda launches, for ``dtype``.

    The types are those of the host code's launches (Python ints are int64, ``reverse`` a bool,
    every array C-contiguous).
    """
    import numpy as np
    from numba import types

    from kernels.cuda import _common, gemm, gru, lstm, persistent, rnn
    dtype = np.dtype(dtype)
    F = types.float32 if dtype == np.float32 else types.float64
    A1, A2, A3 = (types.Array(F, n, "C") for n in (1, 2, 3))
    L, i, b = types.Array(types.int64, 1, "C"), types.int64, types.boolean
    out = [(f"gemm tile {TS}", gemm._gemm_kernel(dtype, TS), (A2, A2, A2, F, F, b, b))
           for TS in gemm.TILE_SIZES]
    out.append((f"gemm blocked {gemm.BLOCKED}", gemm._blocked_kernel(dtype), (A2, A2, A2, F, F, b, b)))
    fill, partial_column_sums, column_sum = _common.utility_kernels(dtype)
    out += [("fill", fill, (A1, F)), ("partial_column_sums", partial_column_sums, (A2, A2)),
            ("column_sum", column_sum, (A2, A1))]
    f, bw = lstm._step_kernels(dtype)
    out += [("lstm step_forward", f, (i, A2, A3, A1, L, b, A2, A2, A3, A3, A3, A3)),
            ("lstm step_backward", bw, (i, A3, L, b, A3, A3, A2, A2, A3, A2))]
    f, bw = gru._step_kernels(dtype)
    out += [("gru step_forward", f, (i, A2, A3, A1, A1, L, b, A2, A3, A3, A3)),
            ("gru step_backward", bw, (i, A3, L, b, A3, A3, A2, A3, A3, A2))]
    f, bw = rnn._step_kernels(dtype)
    out += [("rnn step_forward", f, (i, A2, A3, A1, L, b, A2, A3, A3, A3)),
            ("rnn step_backward", bw, (i, A3, L, b, A3, A2, A3, A2))]
    for cell in ("lstm", "gru", "rnn"):
        for staged in (True, False):
            _, f, bw = persistent._kernels(cell, dtype, 1 if staged else persistent.BATCH_TILE,
                                           staged, 1 if staged else persistent.UNROLL[cell])
            how = "staged" if staged else "direct"
            out += [(f"{cell} persistent_forward {how}", f,
                     (i, i, i, i, A3, A2, A1, A1, L, b, A3, A2, A2, A3, A3, A3, A3)),
                    (f"{cell} persistent_backward {how}", bw,
                     (i, i, i, i, i, A2, A3, L, b, A3, A3, A2, A2, A3, A3, A1))]
    return out


def _nvidia_tool(name, package):
    """The path of one of NVIDIA's tools (on PATH, or in its wheel ``package``), or None."""
    import importlib
    import shutil
    found = shutil.which(name)
    if found:
        return found
    try:
        wheel = importlib.import_module(package)
    except ImportError:
        return None
    for root in getattr(wheel, "__path__", []):
        for path in (os.path.join(root, "bin", name), os.path.join(root, "cu13", "bin", name)):
            if os.path.exists(path):
                return path
    return None


def _loop_density(sass):
    """Instructions per FFMA in the machine code's block (between labels) with the most FFMAs
    among those without the cells' FMUL / MUFU: the sums' inner loop. None without one."""
    blocks, cur = [], []
    for line in sass.splitlines():
        if re.match(r"^\s*\.L_x_\d+:", line):
            blocks.append(cur)
            cur = []
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m:
            cur.append(m.group(1))
    blocks.append(cur)
    sums = [b for b in blocks if "FFMA" in b and "FMUL" not in b and "MUFU" not in b]
    if not sums:
        return None
    best = max(sums, key=lambda b: b.count("FFMA"))
    return round(len(best) / best.count("FFMA"), 2)


def _machine_code_facts(ptxas, ptx, cc, nvdisasm=None):
    """(registers per thread, spilled bytes stored + loaded, instructions per FFMA in the sums'
    loop) of the PTX's one kernel: ``ptxas -v`` for sm_<cc> (relocatable: the cooperative
    kernels' grid barrier is linked later), then ``nvdisasm`` where given (``_loop_density``);
    None for what a tool did not give."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        src, obj = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.o")
        with open(src, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", "-c", src, "-o", obj],
                             capture_output=True, text=True)
        regs = re.findall(r"Used (\d+) registers", run.stderr)
        spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
        if run.returncode or not regs:
            return None, None, None
        density = None
        if nvdisasm:
            dis = subprocess.run([nvdisasm, "-c", obj], capture_output=True, text=True)
            density = _loop_density(dis.stdout) if dis.returncode == 0 else None
    return int(regs[-1]), sum(int(v) for v in spills[-1]) if spills else 0, density


def compile_only(args):
    from numba import cuda
    if getattr(cuda, "implementation", "") != "NVIDIA":
        raise SystemExit("--compile-only needs the numba-cuda package and its NVVM "
                         "(pip install 'numba-cuda[cu12]'); numba's built-in CUDA target is in use")
    cc = tuple(int(v) for v in args.cc.split("."))
    if not cuda.is_available():
        # Calls between device functions ask the current device for its compute capability.
        # There is none: answer with the target's.
        import numba.cuda.dispatcher as dispatcher

        class _Target:
            compute_capability = cc

        dispatcher.get_current_device = lambda: _Target()
    import numpy as np
    rows, failed = [], 0
    ptxas = _nvidia_tool("ptxas", "nvidia.cuda_nvcc")
    nvdisasm = _nvidia_tool("nvdisasm", "nvidia.cuda_nvdisasm") if ptxas else None
    print(f"# registers and spills from {ptxas or 'nowhere: no ptxas (pip install nvidia-cuda-nvcc-cu12)'}; "
          f"loop density from {nvdisasm or 'nowhere: no nvdisasm (pip install nvidia-cuda-nvdisasm)'}")
    print(f"| kernel | dtype | PTX chars | f64 instructions | cooperative | registers | spilled bytes | "
          f"instructions per FFMA in the FFMA loop | status |\n|---|---|---|---|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        for name, kernel, sig in kernel_signatures(dtype):
            try:
                ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
                f64 = len(re.findall(r"\.f64\b", ptx))
                coop = "cudaCGGetIntrinsicHandle" in ptx
                status = "ok"
                if np.dtype(dtype) == np.float32 and f64:
                    status, failed = "float64 math in a float32 kernel", failed + 1
                regs, spilled, density = (_machine_code_facts(ptxas, ptx, cc, nvdisasm) if ptxas
                                          else (None, None, None))
            except Exception as e:             # report every kernel, then fail
                ptx, f64, coop, status, failed = "", 0, False, f"FAILED: {type(e).__name__}: {e}", failed + 1
                regs = spilled = density = None
            rows.append({"kernel": name, "dtype": np.dtype(dtype).name, "ptx_chars": len(ptx),
                         "f64_instructions": f64, "cooperative": coop, "registers": regs,
                         "spilled_bytes": spilled, "instructions_per_ffma": density,
                         "status": status})
            na = lambda v: "n/a" if v is None else v                 # noqa: E731
            print(f"| {name} | {np.dtype(dtype).name} | {len(ptx)} | {f64} | {coop} | {na(regs)} | "
                  f"{na(spilled)} | {na(density)} | {status.splitlines()[0] if status else ''} |",
                  flush=True)
    return {"compile_only": True, "cc": list(cc), "rows": rows, "versions": _versions()}, failed


def choose_simulator(check, name):
    """``--check``: numba's CUDA simulator (chosen before numba.cuda is imported); otherwise
    refuse a simulator chosen in the environment, whose timings mean nothing."""
    if check:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        if "numba" in sys.modules:
            from numba.core import config
            config.reload_config()
    elif os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        raise SystemExit(f"{name}: NUMBA_ENABLE_CUDASIM is set: the simulator is not a GPU "
                         "and its timings mean nothing; use --check to run the code paths on it")


def main(argv=None):
    args = parse_args(argv)
    choose_simulator(args.check, "benchmarks/gpu.py")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from numba import cuda

    if args.compile_only:
        result, failed = compile_only(args)
    else:
        import kernels.cuda as kc
        if not kc.is_available():
            raise SystemExit(
                "benchmarks/gpu.py: no CUDA GPU here (numba.cuda.is_available() is False). It needs an "
                "NVIDIA GPU with its driver and pip install -e '.[cuda]' (plus torch with CUDA for the "
                "cuDNN column). Without a GPU: --check runs the code paths on the simulator, "
                "--compile-only compiles the kernels for a GPU target.")
        if args.check:
            print("# --check: CUDA simulator, tiny sizes, 1 repetition: the times are not GPU times\n")
        print(HEADER, flush=True)
        result, failed = run_benchmark(args), 0
        if not args.check:
            print(f"\ndevice: {result['device']['name']}, float32, median of {args.repeat}; "
                  f"big products on {result['gemm_backend']} (RNNCORE_CUDA_GEMM); cuDNN: {result['torch']}")
        cuda.synchronize()
    result["machine"] = hz.machine_info()           # the host: commit, time, library versions
    hz.write_json(args.json, result)
    print(f"\nwrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
