"""Compile a recurrent kernel's backward in a second process while this one compiles its forward.

Why. With an empty Numba cache the first training step is nearly all compilation, one function
after another: Numba and LLVM hold process-wide locks, so a second thread would wait, and a
2-core machine compiles on one core. The largest pieces are the recurrent cores, and each
cell's backward core (2-3 s on the Xeon of ``benchmarks/results/cpu.md``) is needed only after
its forward core (3-4 s) and the layers above it have compiled. So the first forward call of a
cell (per organization and dtype) in a process whose cache holds no backward core yet starts
a child Python that compiles that backward core into the on-disk cache, on the other core,
while this process compiles the forward; the first backward call waits for the child (it has
usually finished) and Numba loads the core from the cache as it would on any later run.
On the Xeon, a fresh process to the seed model's first finished training step with an empty
cache (``benchmarks/startup.py``, runs alternated with and without): 6.04 -> 4.71 s and
7.63 -> 5.72 s in two runs.

What the child compiles is fixed by the core's signature, not by data: ``SPECS`` lists each
backward core's arguments, as ``lstm_backward`` and the others pass them (all C-contiguous);
``tests/test_ahead.py`` checks every entry against the signature a real call compiles, so a
core whose arguments change without its entry fails there, not silently here.

Nothing changes for a warm cache (an index file exists for the core: no child) or for the result
(the core is the same compiled code, from the cache). It is skipped where it cannot help:
``RNNCORE_COMPILE_AHEAD=0``, ``NUMBA_DISABLE_JIT``, one usable CPU, a frozen program or no
Python to start, a core without a file cache. Anything that goes wrong in the child (it
cannot start, it fails, it takes over ``WAIT_S``) leaves the backward to compile here as it
always did. A child still running when this process exits is stopped.
"""

import atexit
import importlib
import os
import subprocess
import sys
import threading

import numpy as np

__all__ = ["SPECS", "start", "wait", "signature", "cache_is_empty", "ENV"]

ENV = "RNNCORE_COMPILE_AHEAD"   # "0" turns it off
WAIT_S = 300                    # the longest a backward call waits for its child

# (cell, path) -> (module, backward core, its arguments). Argument tokens: "3" an array of the
# kernel's dtype with 3 dimensions (and so on); "p3" a float32 array with 3 dimensions whatever
# the dtype (the packed weights of ``_gemm.step_operands``, empty when unused); "i1", "i2"
# int64 arrays; "i" an int64 scalar.
SPECS = {
    ("lstm", "steps"): ("kernels.lstm", "_backward_core",
                        "3 2 2 1 2 2 4 3 2  3 2 2 2 p3 2 i1 i  3 3 4 3"),
    ("gru", "steps"): ("kernels.gru", "_backward_core",
                       "3 2 2 1 1 2 2 4 3 3 2  3 2 2 2 p3 2 i1 i  3 4 3 3"),
    ("rnn", "steps"): ("kernels.rnn", "_backward_core",
                       "3 2 2 1 2 3 3 2  3 2 2 2 p3 2 i1 i  3"),
    ("lstm", "tiled"): ("kernels.lstm_tiled", "_backward_core",
                        "4 2 2 3 2 3 4 3 3 i1 i  2 2 3 2 2 2 1 i i1 i2"),
    ("gru", "tiled"): ("kernels.gru_tiled", "_backward_core",
                       "4 2 2 3 2 3 4 3 i1 i  2 2 3 2 2 2 1 i i1 i2"),
}

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the folder of ``kernels``
_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); "
          "from kernels._ahead import _child; _child(sys.argv[2:])")
_lock = threading.Lock()
_seen = set()          # (cell, path, dtype) already decided in this process
_children = {}         # (cell, path, dtype) -> Popen, until its backward has waited for it


def signature(cell, path, dtype):
    """The backward core's argument types for ``(cell, path)`` in ``dtype``, as Numba types."""
    from numba import typeof, types
    dt = np.dtype(dtype)
    out = []
    for token in SPECS[(cell, path)][2].split():
        if token == "i":
            out.append(types.int64)
        else:
            kind = {"i": np.int64, "p": np.float32}.get(token[0], dt)
            out.append(typeof(np.zeros((1,) * int(token.lstrip("ip")), kind)))
    return tuple(out)


def _core(cell, path):
    module, name, _ = SPECS[(cell, path)]
    return getattr(importlib.import_module(module), name)


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                               # (not on every platform)
        return os.cpu_count() or 1


def _wanted():
    from numba.core import config
    return (os.environ.get(ENV, "1") != "0" and not config.DISABLE_JIT and _usable_cpus() >= 2
            and not getattr(sys, "frozen", False) and bool(sys.executable))


def _cold(core):
    """Whether the core has no compiled version here and no cache index on disk. (Numba's cache
    internals: anything unexpected there counts as not cold, and nothing starts.)"""
    try:
        from numba.core.caching import FunctionCache
        cache = core._cache
        return (not core.overloads and isinstance(cache, FunctionCache)
                and not os.path.exists(cache._cache_file._index_path))
    except Exception:
        return False


def cache_is_empty():
    """Whether an LSTM forward would compile first: its core is neither compiled in this process
    nor in the on-disk cache (what a program can tell its user before a slow first step)."""
    from . import lstm
    return _cold(lstm._forward_core)


def start(cell, path, dtype):
    """Called by a forward kernel before its core runs: start the child for this backward core
    where the cache is cold (once per process and key; cheap after the first call)."""
    key = (cell, path, np.dtype(dtype))
    if key in _seen:
        return
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
        if not (_wanted() and _cold(_core(cell, path))):
            return
        try:
            _children[key] = subprocess.Popen(
                [sys.executable, "-c", _CHILD, _ROOT, cell, path, np.dtype(dtype).name],
                env=dict(os.environ, **{ENV: "0"}),      # (the child starts no child)
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            pass


def wait(cell, path, dtype):
    """Called by a backward kernel before its core runs: wait for this core's child, if any."""
    if not _children:
        return
    with _lock:
        child = _children.pop((cell, path, np.dtype(dtype)), None)
    if child is None:
        return
    try:
        child.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@atexit.register
def _stop_children():
    for child in list(_children.values()):
        if child.poll() is None:
            child.kill()
            child.wait()
    _children.clear()


def _child(argv):
    """The child's work: compile one backward core (it lands in the on-disk cache)."""
    cell, path, dtype = argv
    _core(cell, path).compile(signature(cell, path, dtype))
