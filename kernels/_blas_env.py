"""How long an idle OpenBLAS worker thread keeps spinning: 2^22 CPU cycles (~2 ms) unless the
user says otherwise. Imported first by ``kernels`` (and so by ``rnncore``), before it loads
SciPy's OpenBLAS; setting the environment needs nothing but ``os``.

Why. After each multi-threaded call, OpenBLAS's worker threads keep spinning for 2^28 cycles by
default (~0.1 s) in case another call comes. Whatever else wants the cores meanwhile shares
them with those threads, and on a 2-core machine that halves its speed:

* the kernels' team of threads (``_team``: the tiled LSTM and GRU). An LSTM at (64, 32, 128,
  256) with a ``Linear`` layer after it (fwd + bwd, both through SciPy's OpenBLAS, which
  Numba's ``np.dot`` calls) took 114-128 ms per step against 50-63 ms without the layer; with
  this setting 56-59 ms, and the serial kernels, which call OpenBLAS step after step, kept
  their speed (a step's calls come well within 2 ms of each other);
* two kernel calls at once (``_pair``: a bidirectional layer's directions, a batch's halves),
  each on one core with BLAS on one thread: the workers of the call before still spin. On a
  2-core Xeon, an RNN at (64, 32, 128, 256) in two halves took 12.5-13.3 ms per fwd + bwd
  with SciPy's OpenBLAS spinning the default time, 7.0-7.8 ms with this setting (the whole
  batch on both cores: 8.7-9.8 ms either way).

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` (n: 2^n cycles, 4 <= n <= 30) into its settings
when the library loads, and its worker threads take it from there when they start. SciPy's
OpenBLAS, which the kernels use, usually loads right after this module sets the variable
(``_scipy_blas``); NumPy's has loaded with NumPy, and SciPy's too where the program imported
``scipy.linalg`` first. For those, ``apply_to_loaded`` (called by ``kernels`` once SciPy's is
loaded) has each such library read its environment again (``openblas_read_env``) and stops
its worker threads (``blas_thread_shutdown_``, what OpenBLAS itself does before a fork): the
next multi-threaded call starts them afresh, with the new setting. It does so only when the
importing thread is the process's only Python thread (no other can be inside OpenBLAS then).
A value the user set is left as it is, in the environment and in every library.
"""

import os

THREAD_TIMEOUT = "22"

_USERS_OWN = "OPENBLAS_THREAD_TIMEOUT" in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)

# Builds name their extra functions differently: plain ``openblas_*``, SciPy's wheels
# ``scipy_openblas_*``, NumPy's 64-bit-integer build ``scipy_openblas_*64_``.
_NAMES = ("scipy_openblas_{}64_", "scipy_openblas_{}", "openblas_{}64_", "openblas_{}")


def _loaded_openblas_paths():
    """Paths of the OpenBLAS libraries this process has loaded: from /proc/self/maps where
    there is one (Linux), else those that NumPy's and SciPy's wheels ship (already loaded by
    then: NumPy's with NumPy, SciPy's by ``kernels._scipy_blas``)."""
    import glob
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if "openblas" in os.path.basename(path).lower():
                    paths.add(path)
    except OSError:
        pass
    if paths:
        return sorted(paths)
    for name in ("scipy", "numpy"):
        try:
            package = os.path.dirname(__import__(name).__file__)
        except ImportError:
            continue
        for pattern in (package + ".libs/*openblas*", os.path.join(package, ".dylibs", "*openblas*")):
            paths.update(glob.glob(pattern))
    return sorted(paths)


def _libraries():
    """[(path, ctypes library, its name pattern)] of every loaded OpenBLAS."""
    import ctypes
    found = []
    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _NAMES:
            if hasattr(lib, name.format("get_num_threads")) and hasattr(lib, name.format("set_num_threads")):
                found.append((path, lib, name))
                break
    return found


def openblas_libraries():
    """[(path, get_num_threads, set_num_threads, get_config or None)]: ctypes functions of every
    loaded OpenBLAS (looked up afresh on each call; ``_pair`` and the benchmarks use them)."""
    import ctypes
    found = []
    for path, lib, name in _libraries():
        get, set_ = getattr(lib, name.format("get_num_threads")), getattr(lib, name.format("set_num_threads"))
        get.restype, get.argtypes = ctypes.c_int, []
        set_.restype, set_.argtypes = None, [ctypes.c_int]
        config = getattr(lib, name.format("get_config"), None)
        if config is not None:
            config.restype = ctypes.c_char_p
        found.append((path, get, set_, config))
    return found


def apply_to_loaded():
    """THREAD_TIMEOUT for the OpenBLAS libraries loaded before this module set it (see the
    module doc): the paths of those changed. Only OpenBLAS's own threads (``get_parallel`` 1,
    not its OpenMP builds) and only where every function needed is there; nothing if the
    user set the variable.

    Stopping a library's workers while another thread is inside that library would break its
    call, so nothing is done unless the calling thread is the process's only Python thread
    (a script importing rnncore at its start; not a notebook kernel, whose helper threads
    count, nor a program already running threads: there the libraries keep their setting).
    """
    import threading
    if _USERS_OWN or threading.active_count() > 1:
        return []
    changed = []
    for path, lib, name in _libraries():
        parallel = getattr(lib, name.format("get_parallel"), None)
        timeout = getattr(lib, "openblas_thread_timeout", None)
        read_env = getattr(lib, "openblas_read_env", None)
        shutdown = getattr(lib, "blas_thread_shutdown_", None)
        if None in (parallel, timeout, read_env, shutdown) or parallel() != 1:
            continue
        if timeout() != int(THREAD_TIMEOUT):
            read_env()
            shutdown()
            if timeout() == int(THREAD_TIMEOUT):
                changed.append(path)
    return changed
