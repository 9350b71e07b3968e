"""Shared helpers of the benchmark scripts: thread control, interleaved timing, the sgemm peak,
markdown tables, and the JSON record.

Only the standard library is imported at module level: a script calls ``set_thread_env(n)``
before anything imports NumPy, so that OpenBLAS, MKL and OpenMP read the thread count from the
environment when they load. Inside a process that already has them loaded (a test calling
``main()``), ``limit_threads(n)`` sets the same counts at run time and restores them afterwards.

Thread control, three libraries to agree (all measured in the same process, same count):

* PyTorch: ``torch.set_num_threads(n)`` (its OpenMP pool and MKL).
* OpenBLAS: rnncore's kernels call BLAS through Numba's ``np.dot``, which links SciPy's OpenBLAS
  (``libscipy_openblas``); NumPy ships its own OpenBLAS (``libscipy_openblas64_``). Both get the
  count through ``threadpoolctl`` when it is installed, otherwise through the libraries' own
  ``*_set_num_threads`` entry points via ctypes (the same thing threadpoolctl does).
* Numba's own thread pool (``prange``) runs the tiled kernels' team (``kernels/_team.py``) and
  the paired directions / batch halves (``kernels/_pair.py``); it takes its size from
  ``NUMBA_NUM_THREADS``, exported with the others before Numba loads. Its OpenMP threading
  layer, when it starts (the kernels' first call on the pool), sets the process's OpenMP
  thread count to the pool's size, PyTorch's included (``torch.set_num_threads(1)``, then
  Numba's start: PyTorch on 2 threads on a 2-core Xeon); ``limit_threads`` therefore starts it
  before it sets PyTorch's count. The kernels use ``numba.get_num_threads()`` of the pool, which
  ``limit_threads`` sets to ``n`` too (``numba.set_num_threads``): a script's ``main()`` called
  in a process where Numba had already loaded a smaller pool gets at most that pool's size (the
  record says what was in effect).

``limit_threads`` reports what it used and the count each library then says it has.
"""

import contextlib
import gc
import glob
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def available_cores():
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                          # macOS, Windows
        return os.cpu_count() or 1


def count(text, minimum=1):
    """argparse ``type=``: an int >= ``minimum`` (1: repeats, runs, sizes, threads), else a
    usage error (exit 2) naming the option, before anything runs."""
    import argparse
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {v}")
    return v


def positive_ints(text, size):
    """The comma-separated text ``"32,8,64,128"`` as a tuple of exactly ``size`` ints >= 1, or
    None where it is not one (the caller's usage error names its option)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        return None
    return values if len(values) == size and min(values) >= 1 else None


def count0(text):
    """argparse ``type=``: an int >= 0 (warm-up rounds, seeds)."""
    return count(text, minimum=0)


def require_torch(name, hint=""):
    """Exit with a message saying how to install PyTorch, the peer every row is compared with,
    where it is missing (looked up without importing it: the thread settings come first)."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        raise SystemExit(f"{name}: needs PyTorch, the peer it compares with, which is not "
                         f'installed: pip install -e ".[bench]" in the rnncore repository (the '
                         f"CPU build: pip install torch==2.13.0){hint}")


def _threads(text):
    """``--threads``: a count; more than the cores this process may use is allowed (to measure
    just that) but said on stderr, since the threads then share cores."""
    n = count(text)
    if n > available_cores():
        print(f"warning: --threads {n} is more than the {available_cores()} cores this process "
              f"may use: the threads will take turns on them, and the timings measure that",
              file=sys.stderr)
    return n


def add_common_args(ap, name):
    """--quick, --threads, --json, shared by every script."""
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes and few repeats: checks the code paths, not speed")
    ap.add_argument("--threads", type=_threads, default=available_cores(),
                    help="threads for PyTorch, OpenBLAS and Numba alike (default: all available cores, "
                         f"here {available_cores()})")
    ap.add_argument("--json", default=os.path.join("bench_out", f"{name}.json"),
                    help=f"where to write the results (default bench_out/{name}.json)")
    return ap


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------

def set_thread_env(n):
    """Export the thread count for OpenBLAS/MKL/OpenMP/Numba; effective only before NumPy (and
    torch) are imported. Returns True if it was in time."""
    in_time = not any(m in sys.modules for m in ("numpy", "torch", "numba", "scipy"))
    if in_time:
        for k in THREAD_ENV:
            os.environ[k] = str(n)
    return in_time


def _openblas_handles():
    """(path, get, set, config) ctypes functions of every loaded OpenBLAS build (the kernels'
    own finder, ``kernels._pair.openblas_libraries``; imported here, not at the top, so that
    this module can set the thread environment before NumPy loads)."""
    from kernels._pair import openblas_libraries
    return openblas_libraries()


def blas_info():
    """[{library, version, num_threads}] for every loaded OpenBLAS (ctypes; no threadpoolctl needed)."""
    info = []
    for path, get, _, config in _openblas_handles():
        cfg = config().decode(errors="replace") if config is not None else ""
        info.append(dict(library=os.path.basename(path), config=cfg, num_threads=int(get())))
    return info


@contextlib.contextmanager
def limit_threads(n, use_torch=True):
    """Run the body with ``n`` threads in PyTorch, every loaded OpenBLAS and Numba (at most its
    pool's size); restore after.

    Yields a dict saying how (``method``) and what each library reports inside the block.
    Import NumPy, SciPy's BLAS and (if ``use_torch``) torch *before* entering, so that their
    libraries are loaded and can be reached.
    """
    import numba
    record = dict(requested=n, env_before_import={k: os.environ.get(k) for k in THREAD_ENV})
    # Start Numba's threading layer first: under its OpenMP layer the start sets the process's
    # OpenMP thread count, PyTorch's included, to Numba's pool size, which undid a
    # ``torch.set_num_threads(n)`` made before (the record then still said n).
    restore = [lambda prev=numba.get_num_threads(): numba.set_num_threads(prev)]
    torch = None
    if use_torch:
        import torch
        restore.append(lambda prev=torch.get_num_threads(): torch.set_num_threads(prev))
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        limiter = threadpool_limits(limits=n, user_api="blas")
        restore.append(limiter.restore_original_limits)
        record["method"] = "threadpoolctl (blas) + torch.set_num_threads + numba.set_num_threads"
    else:
        for _, get, set_, _ in _openblas_handles():
            restore.append(lambda get=get, set_=set_, prev=get(): set_(prev))
            set_(n)
        record["method"] = ("ctypes <prefix>_set_num_threads on each loaded OpenBLAS (threadpoolctl not "
                            "installed) + torch.set_num_threads + numba.set_num_threads")
    # Numba's count in effect (this thread's; the kernels' team and ``_pair`` read it with
    # ``numba.get_num_threads()``): at most the pool's size, NUMBA_NUM_THREADS when it loaded.
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    record["blas"] = blas_info()
    record["torch"] = torch.get_num_threads() if torch is not None else None
    record["numba"] = numba.get_num_threads()
    record["numba_pool"] = numba.config.NUMBA_NUM_THREADS
    try:
        yield record
    finally:
        for f in reversed(restore):
            f()


def threads_summary(record):
    """One line for a table caption: how many threads each library runs."""
    blas = ", ".join(f"{b['library'].split('-')[0]}={b['num_threads']}" for b in record["blas"]) or "none found"
    torch = "" if record.get("torch") is None else f"torch={record['torch']}, "
    numba = "" if record.get("numba") is None else f", numba={record['numba']}"
    return f"threads: {torch}{blas}{numba} (via {record['method'].split(' ')[0]})"


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

#: Calls timed, at most, to size a sample (``time_interleaved``).
CALIBRATION_CALLS = 3


def _one_call_s(f, min_sample_s):
    """The time of one call of ``f``: the fastest of up to CALIBRATION_CALLS calls, fewer where
    those already took that many samples' time (a call that slow makes a sample by itself).
    Sized from a single call, a sample was as short as that call was slow: a 0.3 ms training
    step whose timed call took 1.5 ms (a page fault, a descheduled vCPU) got samples of 34
    calls, 13 ms instead of the 50 asked for (2-core AMD EPYC)."""
    best, spent = math.inf, 0.0
    for _ in range(CALIBRATION_CALLS):
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent >= CALIBRATION_CALLS * min_sample_s:
            break
    return best


def time_interleaved(fns, repeat, min_sample_s, warmup=1, max_number=10000, settle_s=0.01, idle_s=0.0):
    """Time several callables against each other, interleaved, in one process.

    fns: {name: zero-argument callable}. Each is first run ``warmup`` times (compilation, first
    touch of buffers), then calibrated: ``number`` calls make one sample of at least
    ``min_sample_s`` seconds (so that a 10 us call is not timed alone), a call's time taken as
    the fastest of up to ``CALIBRATION_CALLS`` (``_one_call_s``). Then ``repeat`` rounds,
    each taking one sample of every callable in a rotating order, so that a burst of load from
    elsewhere hits all of them alike. The garbage collector is off during a sample.

    Sharing one process must not charge one library for another's threads, and a sample should
    see a callable as a loop that runs it back to back does, so each sample starts with untimed
    calls of the callable itself for at least ``settle_s`` seconds (at least one call where
    ``settle_s`` > 0; ``layer_step`` passes 0.12 s). They take up the time in which the threads
    of what ran before may still be spinning: an OpenBLAS worker thread kept a core busy for
    about 0.1 s after its last call (``kernels/_blas_env.py`` now cuts the libraries it finds to
    a few ms), PyTorch's OpenMP pool ~10 ms, and a sample taken meanwhile shares a 2-core machine
    with them (samples measured 2-3x slower right after the NumPy reference). They also wake a
    pool that slept (PyTorch's first call after 0.1 s idle took 0.2-11 ms where the next took
    0.01 ms).

    ``idle_s`` (default 0) is a pause before those calls. ``layer_step`` paused 0.12 s and then
    made only ~10 ms of untimed calls up to its record of fabb92f; but on the 2-core AMD EPYC
    (a VM) a pause slows what runs after it: the seed model's training step, 0.11 ms a call
    back to back, took 0.15-0.23 ms a call in the 20 ms after a pause of 5 to 120 ms, and about
    0.12 s of calls brought it back to 0.11 ms.

    Returns {name: {"median_s", "min_s", "number", "samples_s"}}, times per call.
    """
    names = list(fns)
    number = {}
    for name in names:
        f = fns[name]
        for _ in range(warmup):
            f()
        one = max(_one_call_s(f, min_sample_s), 1e-7)
        number[name] = int(min(max_number, max(1, math.ceil(min_sample_s / one))))
    samples = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            f, k = fns[name], number[name]
            if idle_s > 0 and len(names) > 1:
                time.sleep(idle_s)
            if settle_s > 0:
                t_settle = time.perf_counter()
                f()
                while time.perf_counter() - t_settle < settle_s:
                    f()
            gc_was = gc.isenabled()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(k):
                    f()
                dt = time.perf_counter() - t0
            finally:
                if gc_was:
                    gc.enable()
            samples[name].append(dt / k)
    out = {}
    for name in names:
        s = sorted(samples[name])
        out[name] = dict(median_s=statistics.median(s), min_s=s[0], number=number[name],
                         samples_s=samples[name])      # (an even count: the middle two's mean)
    return out


def sgemm_peak(n, repeat, use_torch=True):
    """This machine's float32 GEMM speed: C = A @ B on square (n, n) matrices, best of ``repeat``.

    Measured with the BLAS libraries actually in play, in the current thread setting:
      numpy   ``np.matmul`` (NumPy's OpenBLAS)
      scipy   ``scipy.linalg.blas.sgemm`` on Fortran-ordered arrays (SciPy's OpenBLAS, the one
              Numba's ``np.dot`` calls inside rnncore's kernels)
      torch   ``torch.mm`` (MKL), for context
    The peak used for "% of peak" is the best of the three (of numpy and scipy without torch):
    the machine's fastest sgemm, whichever library has it. FLOPs: 2 n^3.
    """
    import numpy as np
    from scipy.linalg import blas
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    flops = 2.0 * n ** 3
    res = {}

    def best(fn):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.2:                   # wake the thread pool up
            fn()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return flops / min(ts) / 1e9

    out = np.empty((n, n), np.float32)
    res["numpy_gflops"] = best(lambda: np.matmul(a, b, out=out))
    af, bf = np.asfortranarray(a), np.asfortranarray(b)
    cf = np.zeros((n, n), np.float32, order="F")
    res["scipy_gflops"] = best(lambda: blas.sgemm(1.0, af, bf, c=cf, overwrite_c=1))
    if use_torch:
        import torch
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        ot = torch.empty((n, n))
        res["torch_gflops"] = best(lambda: torch.mm(at, bt, out=ot))
    res["peak_gflops"] = max(res["numpy_gflops"], res["scipy_gflops"], res.get("torch_gflops", 0))
    res["n"], res["repeat"] = n, repeat
    return res


# ---------------------------------------------------------------------------------------------
# FLOP counts (GEMMs only; see README.md)
# ---------------------------------------------------------------------------------------------

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def layer_flops(cell, T, B, I, H, backward, num_layers=1, directions=1):
    """GEMM FLOPs of one recurrent layer stack, 2*M*N*K per GEMM, pointwise work not counted.

    Forward, per layer and direction, with G gates and input width I_l:
        input GEMM  (T*B, I_l) @ (I_l, G*H)   2*T*B*G*H*I_l
        recurrent   T x (B, H) @ (H, G*H)     2*T*B*G*H*H
        -> F_l = 2*T*B*G*H*(I_l + H)
    Backward does twice that: dh_{t-1} = dG W_hh (T*B*G*H*H), dW_hh, dW_ih, dx: 2*F_l.
    So fwd = sum F_l, fwd+bwd = 3 * sum F_l. I_0 = I, I_l = directions*H above.
    """
    G = GATES[cell]
    total = 0.0
    for k in range(num_layers):
        I_l = I if k == 0 else directions * H
        total += directions * 2.0 * T * B * G * H * (I_l + H)
    return 3.0 * total if backward else total


# ---------------------------------------------------------------------------------------------
# tables and JSON
# ---------------------------------------------------------------------------------------------

def fmt(v, kind="num"):
    """Format a table cell. kind: ms, x (speedup), pct, num; None -> 'n/a'; a str passes through."""
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "pct":
        return f"{v:.0f}%"
    if kind == "int":
        return f"{int(v)}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 0.01 else f"{v:.2g}"


def markdown_table(headers, rows):
    """A GitHub markdown table; ``rows`` are lists of already formatted strings."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(headers), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _git_commit():
    try:
        r = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _l3_cache():
    """The last-level (L3) cache of CPU 0 as the kernel reports it ('491520K'), or None: two
    machines sold under one CPU name may differ there (and in speed)."""
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(index, "level")) as f:
                if f.read().strip() != "3":
                    continue
            with open(os.path.join(index, "size")) as f:
                return f.read().strip() or None
        except OSError:
            continue
    return None


def _load():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


# The machine when the script started (this module is imported first): the commit timed, and
# the load before the run's own work, which the end's loadavg no longer tells apart from it.
_AT_START = dict(loadavg=_load(), time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
#: 1-minute load per available core at the start from which a run is flagged as on a busy
#: machine (another job's timings, and PyTorch's in particular, then move by 2x and more).
BUSY_LOAD_PER_CORE = 0.5


def busy_at_start():
    """The 1-minute load at the start if it reached ``BUSY_LOAD_PER_CORE`` per core, else None."""
    load = _AT_START["loadavg"]
    if load is None or load[0] < BUSY_LOAD_PER_CORE * available_cores():
        return None
    return load[0]


def machine_info():
    """What the numbers depend on: CPU, its L3 cache, cores, load (at the start and at the end),
    library versions, commit, time (the start's and the end's)."""
    info = dict(cpu=_cpu_model(), l3_cache=_l3_cache(), cores=available_cores(),
                platform=platform.platform(),
                python=platform.python_version(), commit=_git_commit(),
                loadavg=_load(), loadavg_at_start=_AT_START["loadavg"],
                time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), time_at_start=_AT_START["time"])
    for mod in ("numpy", "scipy", "numba", "torch"):
        m = sys.modules.get(mod)            # (the one loaded; else the installed one: the
        try:                                # parents of startup and memory import none)
            info[mod] = m.__version__ if m is not None else importlib.metadata.version(mod)
        except (AttributeError, importlib.metadata.PackageNotFoundError):
            info[mod] = None
    return info


def _jsonable(v):
    """NumPy scalars -> Python, non-finite floats -> None (strict JSON)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(path, payload):
    """Write ``payload`` as strict JSON (parent folders made); returns the path."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(payload), f, indent=1, allow_nan=False)
        f.write("\n")
    return path


def report(name, payload, tables, json_path, print_fn=print):
    """Print the tables (title, markdown, notes) and write the JSON record."""
    for title, md, notes in tables:
        print_fn(f"\n### {title}\n")
        print_fn(md)
        for n in notes:
            print_fn(f"\n{n}")
    busy = busy_at_start()
    if busy is not None:
        print_fn(f"\nNote: the machine was busy when this run started (1-minute load {busy:.2f} on "
                 f"{available_cores()} cores): another job's work moves timings, PyTorch's "
                 f"most; run again when it is idle.")
    payload = dict(benchmark=name, machine=machine_info(), **payload)
    write_json(json_path, payload)
    print_fn(f"\n(JSON written to {json_path})")
    return payload
