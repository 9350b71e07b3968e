"""Compile a recurrent kernel's backward in a second process while this one compiles its forward.

Why. With an empty Numba cache the first training step is nearly all compilation, one function
after another: Numba and LLVM hold process-wide locks, so a second thread would wait, and a
2-core machine compiles on one core. The largest pieces are the recurrent cores, and each
cell's backward core (the LSTM's ~3 s on the Xeon of ``benchmarks/results/cpu.md``, with the
products it calls) is needed only after its forward core (~3.5 s) and the layers above it have
compiled. So the first forward call of a cell (per organization and dtype) with a cold cache
(below) starts a child Python that compiles that backward core into the on-disk cache, on the
other core, while this process compiles the forward; the first backward call waits for the
child if it still runs, and Numba loads the core from the cache as it would on any later run.
On the Xeon, a fresh process to the seed model's first finished training step with an empty
cache (``benchmarks/startup.py``, runs alternated with and without): 6.04-7.63 s without,
4.71-5.74 s with, over four runs; with a GRU in place of the LSTM (whose backward core takes
longest to compile) 9.1-10.4 s without, 6.2-6.9 s with.

What the child compiles is fixed by the core's signature, not by data: ``SPECS`` lists each
backward core's arguments, as ``lstm_backward`` and the others pass them (C-contiguous and
writable; a read-only input gives another signature, which then compiles here as before);
``tests/test_ahead.py`` checks every entry against the signature a real call compiles, so a
core whose arguments change without its entry fails there, not silently here.

Numba's cache has no lock between processes: two processes saving different signatures of one
function at once can leave an index entry pointing at the other's code. So only one process
ever saves a given function meanwhile: the child saves nothing but its core and the followers
below (every other function it loads from the cache where this process has saved it, else
compiles without saving: ``_LoadOnly``), runs alone (one child at a time per process), and a
backward call of that core in any dtype waits for it first.

It starts only with a cold cache: the cell's forward and backward cores have neither a
compiled version in this process nor a current index on disk (an index of another Numba or
of an edited source counts as none, as it does for Numba). Nothing changes for a warm cache or
for the result (the core is the same compiled code, from the cache). It is skipped where it
cannot help: ``RNNCORE_COMPILE_AHEAD=0``, ``NUMBA_DISABLE_JIT``, one usable CPU, a frozen
program or an interpreter that is not ``python``, a ``multiprocessing`` worker (its parent
and siblings would start their own), a core without a file cache. Anything that goes wrong in
the child (it cannot start, it fails, it takes over ``WAIT_S``) leaves the backward to compile
here as it always did. A child is reaped when it ends; one still running when this process
exits (normally, by an exception, by Ctrl-C) is stopped; one whose parent is killed (SIGTERM,
``os._exit``) finishes its compile alone, a few seconds, and exits. A fork's child process
starts with none.

Followers. The child would stand idle once its core is saved, while this process still
compiles the rest of a training step. So the child also offers, one at a time, to compile the
functions a step most often reaches after a recurrent forward (``FOLLOWERS``: the Linear and
LogSoftMax layers above it, forward and backward, ClassNLLCriterion's core, the backward's
packing of W_hh, SGD's update; in the core's dtype, each only where it was cold when the child
started). This process answers yes unless it has already reached that function (``follow``,
which its callers call first, claims it, and the followers after it with it: the step reaches
them next, sooner than the child could compile them); a call that finds the child compiling
it waits for it. So each is compiled and saved by exactly one of the two processes. A model
without those layers loses only the second core's time: the offers go unclaimed, and what is
saved may serve a later program. The recurrent core's backward waits for the core only (the
child says when it is saved), not for the followers. And a recurrent module starts the child
before its forward checks its input (``rnncore.recurrent``), not when the kernel is called,
~0.2 s sooner there.

Shared callees. The serial cores' forward and backward both call ``_gemm.step_product`` (~1 s
to compile with the products it calls), which this process compiles and saves ~2 s after the
child starts, as the first callee of its forward core. The child loads it from the cache
instead of compiling it again (``SHARED``): it compiles followers while it is not saved yet,
then its core (after waiting for it up to ``SHARED_WAIT_S``, then compiling it itself, as
before), then the followers left. This process compiles it first of all, as soon as it has
started the child (``start``), not when its forward core reaches it: saved ~0.5 s sooner, so
the child's core is too (cold first step, alternated pairs, medians of the differences: seed
model 0.13 and 0.14 s sooner, the same with Linear(100, 1) and MSE in place of the
classifier's top 0.52 s). The seed model's cold first step on the 2-core AMD EPYC, new
against old child, six alternated pairs: medians 4.24 against 5.11 s, every pair lower (by
0.26-1.41 s); the child's core then compiles in ~1.5 s instead of ~2.6, and the followers
take this process's last ~0.9 s of compiling (``benchmarks/results/cpu_zen4.md``).
"""

import atexit
import importlib
import json
import os
import subprocess
import sys
import threading

import numpy as np

__all__ = ["SPECS", "FOLLOWERS", "start", "wait", "follow", "signature", "cache_is_empty", "ENV"]

ENV = "RNNCORE_COMPILE_AHEAD"   # "0" turns it off
WAIT_S = 60                     # the longest a backward call waits for the child (it takes ~3 s)

# (cell, path) -> (module, forward core, backward core, the backward core's arguments).
# Argument tokens: "3" an array of the kernel's dtype with 3 dimensions (and so on); "p3" a
# float32 array with 3 dimensions whatever the dtype (the packed weights of
# ``_gemm.step_operands``, empty when unused); "i1", "i2" int64 arrays; "i" an int64 scalar.
SPECS = {
    ("lstm", "steps"): ("kernels.lstm", "_forward_core", "_backward_core",
                        "3 2 2 1 2 2 4 3 2  3 2 2 2 p3 2 i1 i  3 3 4 3"),
    ("gru", "steps"): ("kernels.gru", "_forward_core", "_backward_core",
                       "3 2 2 1 1 2 2 4 3 3 2  3 2 2 2 p3 2 i1 i  3 4 3 3"),
    ("rnn", "steps"): ("kernels.rnn", "_forward_core", "_backward_core",
                       "3 2 2 1 2 3 3 2  3 2 2 2 p3 2 i1 i  3"),
    ("lstm", "tiled"): ("kernels.lstm_tiled", "_forward_core", "_backward_core",
                        "4 2 2 3 2 3 4 3 3 i1 i  2 2 3 2 2 2 1 i i1 i2 3 i"),
    ("gru", "tiled"): ("kernels.gru_tiled", "_forward_core", "_backward_core",
                       "4 2 2 3 2 3 4 3 i1 i  2 2 3 2 2 2 1 i i1 i2 i 3"),
    ("rnn", "tiled"): ("kernels.rnn_tiled", "_forward_core", "_backward_core",
                       "4 2 3 2 3 3 i1 i  2 2 3 2 2 2 1 i i1 i2 i"),
}

# name -> (module, function, its arguments, as in SPECS, and "s" a scalar of the dtype): the
# followers (above), in the order the child offers them, which is the order a training step
# reaches them: the layers above the recurrent one forward (Linear, LogSoftMax), the criterion
# (ClassNLLCriterion under a SequencerCriterion), their backwards from the top (LogSoftMax
# before Linear), the recurrent backward's packing of W_hh (float32 only: ``_gemm.pack``), and
# SGD's update. Each is called through ``follow(name)`` first.
FOLLOWERS = {
    "linear_forward": ("kernels.linear", "_forward_core", "2 2 1 2"),
    "log_softmax_forward": ("kernels.log_softmax", "_forward_core", "2 2"),
    "nll": ("rnncore.criteria", "_nll_scored_core", "2 i1 i 2"),
    "log_softmax_backward": ("kernels.log_softmax", "_backward_core", "2 2 2"),
    "linear_backward": ("kernels.linear", "_backward_core", "2 2 2 2 2 1"),
    "pack": ("kernels._gemm", "_pack_into", "p2 p3"),
    "descend": ("rnncore.optim", "_descend", "1 1 s"),
}
FLOAT32_ONLY = {"pack"}         # followers no other dtype's step calls

# (cell, path) -> the functions its forward core and backward core both call, as
# (module, function, arguments): the parent compiles and saves them with the forward core, and
# the child, compiling followers meanwhile, loads them from the cache rather than compiling them
# a second time (``_child``). Not for the GRU: its backward core takes longest to compile, and
# it is what the parent waits for; started at once, with its own step_product, it was saved
# sooner (cold seed model, four alternated pairs, when it compiled in ~4.5 s), and since
# ``_common.zero_row`` cut that to ~2.2 s, waiting for step_product is level with it (six
# pairs, median 0.05 s; ``benchmarks/results/cpu_zen4.md``).
SHARED = {(cell, "steps"): [("kernels._gemm", "step_product", "2 2 p3 2 2")]
          for cell in ("lstm", "rnn")}
SHARED_WAIT_S = 4.0             # the longest the child waits for them, from its start (the
                                # parent saves them ~1.5 s after starting it: ``start``); then
                                # it compiles them itself, as before

# The child gets this process's sys.path (so it imports the same ``kernels``, NumPy and Numba)
# and compiles one core, then the followers this process lets it.
_CHILD = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
          "from kernels._ahead import _child; _child(sys.argv[2:])")
_lock = threading.Lock()
_seen = set()          # (cell, path, dtype) already decided in this process
_children = {}         # (cell, path, dtype) -> _Child, until a backward has waited for it
_settled = set()       # followers no child may compile any more (claimed here, or waited for)
_offered = {}          # follower -> the _Child compiling it (this process said yes)


def signature(cell, path, dtype):
    """The backward core's argument types for ``(cell, path)`` in ``dtype``, as Numba types."""
    return _types(SPECS[(cell, path)][3], dtype)


def follower_signature(name, dtype):
    """A follower's argument types in ``dtype``, as Numba types."""
    return _types(FOLLOWERS[name][2], dtype)


def _follower(name):
    module, core, _ = FOLLOWERS[name]
    return getattr(importlib.import_module(module), core)


def _cold_follower(name):
    """Whether a follower is cold (``_cold``); False where its module does not import (``kernels``
    used without ``rnncore`` beside it)."""
    try:
        return _cold(_follower(name))
    except ImportError:
        return False


def _shared(cell, path, dtype):
    """[(dispatcher, argument types)] of ``SHARED[(cell, path)]`` in ``dtype``."""
    return [(getattr(importlib.import_module(module), name), _types(tokens, dtype))
            for module, name, tokens in SHARED.get((cell, path), ())]


def _types(tokens, dtype):
    from numba import from_dtype, typeof, types
    dt = np.dtype(dtype)
    out = []
    for token in tokens.split():
        if token == "i":
            out.append(types.int64)
        elif token == "s":
            out.append(from_dtype(dt))
        else:
            kind = {"i": np.int64, "p": np.float32}.get(token[0], dt)
            out.append(typeof(np.zeros((1,) * int(token.lstrip("ip")), kind)))
    return tuple(out)


def _core(cell, path, which="backward"):
    module, forward, backward, _ = SPECS[(cell, path)]
    return getattr(importlib.import_module(module), backward if which == "backward" else forward)


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                               # (not on every platform)
        return os.cpu_count() or 1


def _wanted():
    from numba.core import config
    if os.environ.get(ENV, "1") == "0" or config.DISABLE_JIT or _usable_cpus() < 2:
        return False
    if getattr(sys, "frozen", False) or not os.path.basename(sys.executable or "").lower(
            ).startswith("python"):
        return False
    import multiprocessing
    return multiprocessing.parent_process() is None


def _cold(core):
    """Whether the core has no compiled version here and no current cache index on disk (one of
    another Numba version or source stamp is empty to Numba too). (Numba's cache internals:
    anything unexpected there counts as not cold, and nothing starts.)"""
    try:
        from numba.core.caching import FunctionCache
        cache = core._cache
        return (not core.overloads and isinstance(cache, FunctionCache)
                and not cache._cache_file._load_index())
    except Exception:
        return False


def cache_is_empty():
    """Whether an LSTM forward would compile first: its core is neither compiled in this process
    nor in the on-disk cache (what a program can tell its user before a slow first step)."""
    from . import lstm
    return _cold(lstm._forward_core)


def start(cell, path, dtype):
    """Called by a forward kernel before its core runs: start the child for this backward core
    where the cache is cold and no other child runs (once per process and key; cheap after the
    first call)."""
    if (cell, path, dtype) in _seen:                     # (the kernels pass x.dtype: no np.dtype()
        return                                           # on this path, taken by every call)
    key = (cell, path, np.dtype(dtype))
    with _lock:
        if key in _seen:
            return
        _seen.update({key, (cell, path, dtype)})
        if any(c.popen.poll() is None for c in (*_children.values(), *_offered.values())):
            return                                       # (one at a time, followers included)
        if not (_cold(_core(cell, path, "forward")) and _cold(_core(cell, path)) and _wanted()):
            return
        followers = [n for n in FOLLOWERS if n not in _settled and n not in _offered
                     and (key[2] == np.float32 or n not in FLOAT32_ONLY) and _cold_follower(n)]
        try:
            popen = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(sys.path), cell, path, key[2].name,
                 *followers],
                env=dict(os.environ, **{ENV: "0"}),      # (the child starts no child)
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, bufsize=1)
        except OSError:
            return
        child = _children[key] = _Child(popen, followers)
        # it is listened to, and reaped when it ends, whether or not a backward ever waits for
        # it (a process that only runs forwards kept it as a zombie for its whole life)
        threading.Thread(target=child.listen, name="rnncore-ahead-listener", daemon=True).start()
    # The callees the child's core waits for (``SHARED``), compiled and saved here first, before
    # the forward's checks and its other compiles reach them: the child's core can start sooner
    for f, sig in _shared(cell, path, key[2]):
        f.compile(sig)


class _Child:
    """A running child: its process, and an event per thing it may finish ("core", then each
    follower), set when it says so or when it ends (whatever it did not finish compiles here)."""

    def __init__(self, popen, followers):
        self.popen = popen
        self.finished = {name: threading.Event() for name in ["core", *followers]}

    def listen(self):
        """Read the child's lines until it ends: "done NAME" sets that event; "offer NAME" is
        answered yes (and NAME is then this child's to compile) unless this process has
        claimed NAME; then reap it and set every event."""
        try:
            for line in self.popen.stdout:
                what, _, name = line.strip().partition(" ")
                if what == "done" and name in self.finished:
                    self.finished[name].set()
                elif what == "offer":
                    with _lock:
                        yes = (name in self.finished and name not in _settled
                               and name not in _offered)
                        if yes:
                            _offered[name] = self
                    self.popen.stdin.write("yes\n" if yes else "no\n")
                    self.popen.stdin.flush()
        except (OSError, ValueError):                    # (a pipe closed under us, or bytes
            pass                                         # that are no text: it is done with)
        finally:
            try:
                self.popen.stdin.close()                 # (an offer unanswered: no follower)
            except OSError:
                pass
            self.popen.wait()
            for event in self.finished.values():
                event.set()

    def wait_for(self, name):
        """Wait until the child has finished ``name`` or ended; past WAIT_S it is stopped."""
        if not self.finished[name].wait(timeout=WAIT_S):
            self.popen.kill()
            self.popen.wait()


def wait(cell, path, dtype):
    """Called by a backward kernel before its core runs: wait for a child compiling this core
    (in any dtype: this process may save the core's other signature only after it). Every
    caller waits, two threads of a bidirectional layer included."""
    if not _children:
        return
    with _lock:
        mine = [(key, child) for key, child in _children.items() if key[:2] == (cell, path)]
    for key, child in mine:
        child.wait_for("core")
        with _lock:
            if _children.get(key) is child:
                del _children[key]


def follow(name):
    """Called by a follower's backward (``FOLLOWERS``) before its core runs: wait while a child
    compiles that core; otherwise claim it, so that no child will (it compiles here, as it would
    without a child), and with it the followers after it that no child has yet: a chain's
    backward reaches them next, sooner than a child could compile them (the seed model's Linear
    backward, ~0.2 s after its LogSoftMax's, took the child ~0.5 s). Cheap after the first call."""
    if name in _settled:
        return
    with _lock:
        child = _offered.get(name)
        if child is None:                                # later offers of these get "no"
            names = list(FOLLOWERS)
            _settled.update(n for n in names[names.index(name):] if n not in _offered)
            return
    child.wait_for(name)
    with _lock:
        _settled.add(name)
        _offered.pop(name, None)


@atexit.register
def _stop_children():
    running = set(_children.values()) | set(_offered.values())
    for child in running:
        if child.popen.poll() is None:
            child.popen.kill()
            child.popen.wait()
    _children.clear()
    _offered.clear()


def _after_fork():
    """A fork's child process: the parent's children are not its own (and the lock may have
    been held by a thread that does not exist there)."""
    global _lock
    _lock = threading.Lock()
    _children.clear()
    _offered.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _LoadOnly:
    """The child's cache for every function it does not save: it loads what the parent has
    saved (a callee of the core, compiled with the forward core) and saves nothing, so that the
    parent stays the only process saving those functions. An entry is taken only where its code
    file was written after the index (Numba writes the index first: between the two, the name
    may still be an older source's file), and anything unexpected in Numba's cache internals
    counts as no entry: the child then compiles the function itself, as it would without a
    cache."""

    def __init__(self, cache):
        self._inner = cache

    def saved(self, sig, target_context):
        """Whether the parent has finished saving ``sig`` (argument types)."""
        try:
            cache = self._inner
            files = cache._cache_file
            name = files._load_index().get(cache._index_key(sig, target_context.codegen()))
            return name is not None and (os.stat(files._data_path(name)).st_mtime_ns
                                         >= os.stat(files._index_path).st_mtime_ns)
        except Exception:
            return False

    def load_overload(self, sig, target_context):
        return self._inner.load_overload(sig, target_context) if self.saved(
            sig, target_context) else None

    def save_overload(self, sig, data):
        pass

    def __getattr__(self, name):                         # (the rest of Numba's cache API)
        return getattr(self._inner, name)


def _child(argv):
    """The child's work: compile one backward core into the on-disk cache, and each follower
    named after it that the parent lets it have, saving nothing else. Every other compiled
    function of ``kernels`` and ``rnncore`` it loads from the cache where the parent has saved
    it (``_LoadOnly``), else compiles here without saving. The followers come first while the
    core's shared callees (``SHARED``) are not saved yet (the parent is compiling them with its
    forward core), the core then (after waiting for them up to ``SHARED_WAIT_S``), the rest of
    the followers after it. Says "done core", and "offer NAME" / "done NAME" for each follower,
    one line each on stdout; reads the parent's answer to an offer from stdin (no answer, as
    when the parent is gone: the follower is skipped)."""
    import time
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher
    began = time.monotonic()
    cell, path, dtype, *followers = argv
    core = _core(cell, path)
    keep = [core] + [_follower(name) for name in followers]
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("kernels", "rnncore"):
            for f in vars(module).values():
                if (isinstance(f, Dispatcher) and not any(f is k for k in keep)
                        and not isinstance(f._cache, NullCache)):      # (cache=True ones)
                    f._cache = _LoadOnly(f._cache)
    shared = [(f, sig) for f, sig in _shared(cell, path, dtype) if isinstance(f._cache, _LoadOnly)]

    def shared_saved():
        return all(sig in f.overloads or f._cache.saved(sig, f.targetctx) for f, sig in shared)

    def offer(name):
        print("offer", name, flush=True)
        if sys.stdin.readline().strip() == "yes":
            _follower(name).compile(follower_signature(name, dtype))
            print("done", name, flush=True)

    todo = list(followers)
    while todo and not shared_saved():
        offer(todo.pop(0))
    while not shared_saved() and time.monotonic() - began < SHARED_WAIT_S:
        time.sleep(0.02)
    core.compile(signature(cell, path, dtype))
    print("done core", flush=True)
    for name in todo:
        offer(name)
