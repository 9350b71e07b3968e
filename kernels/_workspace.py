"""Memory that the kernels reuse from call to call, so that its pages are already mapped.

Why. A fresh large NumPy array is fresh memory from the operating system: each 4 KB page
faults the first time it is written, and glibc's ``free`` hands large blocks straight back, so
a kernel that allocates its buffers on every call pays those faults on every call. On the
2-core KVM machine of ``benchmarks/results/cpu_zen3.md`` a fault cost ~2.3 us (filling a fresh
2 MB array: 1.2 ms, 480 faults; the same array again: 0.15 ms), the tiled LSTM's forward at
(T, B, I, H) = (64, 32, 128, 256) took 484 of them and its backward 771, and they cost more
than their count says: they fall inside the team's steps (``_team``), where the other worker
waits at the barrier for the one that faulted. With no faults at all (glibc told never to
give memory back, an experiment) that forward ran 14-23 % faster and the backward 7-20 %.

How. ``empty(shape, dtype)`` returns a view of a *buffer* that this module keeps, choosing one
that no array uses any more, or a new one. A buffer is in use while any array made from it is
alive: NumPy gives every view of an array that owns its memory that array as ``base``, so each
view (the outputs a kernel returns, the caches it keeps for the backward, slices of them, ...)
holds a reference to the buffer, and the buffer is free exactly when the pool's reference is
the only one (``sys.getrefcount``). Nothing has to be given back by hand, and an array handed
out is never handed out again while it, or any view of it, lives.

What it costs. Buffers stay allocated after their arrays die, up to ``LIMIT`` bytes in all
(used or free): a training loop's buffers are the same every step, so the process keeps about
what one step needs, a little more than the peak it had without the pool (a freed buffer
waits for an array it fits: one LSTM step at (100, 64, 512, 512) peaked 16-17 MB higher,
``benchmarks/results/cpu_zen3.md``). ``release()`` drops every free buffer (and
``kernels.release_workspace`` is the public name). Arrays under ``MIN_BYTES`` come from NumPy
directly: small blocks stay in glibc's heap and do not fault.

Which buffer. A request is first rounded up to its *size class* (``size_class``: four classes
per power of two, so at most 25 % more), takes the smallest free buffer of at least that and
at most ``REUSE_RATIO`` times it (its own class first), and only where none is free a new one
of its class. Batches of varying length are the common case (sequences bucketed by length, a
last short batch): when a request could only take a buffer of exactly its size, every new
length made new buffers, and a training loop whose T varied from 20 to 200 (LSTM(64, 256),
B = 32, on the 2-core Xeon) kept the pool at its 1 GB limit after 100 steps, 98 % of it free
and never taken again (1.3 GB resident), where a step needs ~40 MB; up to twice the size,
263 MB (0.5 GB resident). With size classes, a request a little larger than a free buffer
finds it large enough (sequences growing a step at a time no longer make a buffer per step):
on this machine (2-core AMD EPYC Zen 4), 200 steps of that loop kept 344 MB without classes
and 218 MB with them (in use at most: 67 MB; maximum resident 545 and 400 MB), having made
56 and 37 buffers; LSTM(16, 64) with T 10-200 and B 8-64, 600 steps: 142 and 123 MB (at most
26-28 MB in use). Within a size, the buffer taken most recently comes first: a loop's
own buffers are freed and taken again step after step, while arrays its caller keeps (a list
of outputs) drift to the back, so a request does not check each of those first (with 4000
outputs kept, a small LSTM's forward had taken twice as long). And a request that finds no
buffer first drops the free ones that no request has taken in its last ``IDLE_TAKES``: a loop
of fixed shapes finds its buffers every time and never drops one; one whose T and B both
varied (LSTM(16, 64), T 10-200, B 8-64) kept 217 MB without it, 160 with it (its largest
step alone: 50; measured before size classes, on the Xeon).

Every buffer's data starts on a 64-byte boundary (a cache line): NumPy's own large arrays
start 16 bytes past one, so every other 32-byte vector load of a 64-float row straddled two
lines (one core, a weight-gradient product of the tiled kernels with dZ as the register
tile's W: ~5-10 % slower, AMD EPYC).
"""

import bisect
import functools
import os
import sys
import threading

import numpy as np

__all__ = ["empty", "zeros", "release", "pooled_bytes", "size_class", "MIN_BYTES", "LIMIT"]

MIN_BYTES = 1 << 16        # 64 KB: smaller arrays come from np.empty
LIMIT = 1 << 30            # bytes of buffers kept, in use or free
CLASSES = 4                # size classes per power of two (``size_class``)
REUSE_RATIO = 2            # a request may take a free buffer of up to this many times its class
IDLE_TAKES = 1000          # a request that allocates drops free buffers not taken in this many
ALIGN = 64                 # bytes
_PAGE = 1 << 12            # buffer sizes are whole 4 KB pages

FILL = None                # None, or a value that ``empty`` fills every array with: the tests set
                           # NaN, so that a kernel reading an entry it never wrote gives NaN
                           # instead of whatever the memory held (which passes by chance)

_buffers = {}              # size in bytes -> [[buffer, offset of its first aligned byte, the
                           # request count when it was last taken]]; buffers are 1-D uint8
                           # arrays of size + ALIGN bytes
_sizes = []                # the keys of _buffers, ascending
_takes = [0]               # requests so far
_total = [0]               # bytes in _buffers
_lock = threading.Lock()


def _after_fork_in_child():
    """A forked child has one thread: a lock some other thread of the parent held at the fork
    would never be released there, so the child gets a fresh one."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _free(bucket, i):
    """Whether bucket[i]'s buffer is used by no array (only its entry and this call refer to it)."""
    return sys.getrefcount(bucket[i][0]) <= 2


def _take(size):
    """(buffer, offset): the smallest free buffer of ``size`` to ``REUSE_RATIO * size`` bytes,
    or a new one of ``size``, pooled if it fits under LIMIT after dropping free ones.

    The pair returned is a new tuple, made under the lock: its reference to the buffer marks
    it in use from that moment. (Returning the pool's own tuple did not: until the caller had
    unpacked it, another thread could take the same buffer; seen with four threads.)"""
    with _lock:
        _takes[0] += 1
        k = bisect.bisect_left(_sizes, size)
        while k < len(_sizes) and _sizes[k] <= REUSE_RATIO * size:
            bucket = _buffers[_sizes[k]]
            for i in range(len(bucket)):
                if _free(bucket, i):
                    entry = bucket[i]
                    entry[2] = _takes[0]
                    if i:                                # most recently taken first (below)
                        bucket.insert(0, bucket.pop(i))
                    return entry[0], entry[1]
            k += 1
        _drop_idle(_takes[0] - IDLE_TAKES)
        if _total[0] + size > LIMIT:
            _drop_free(_total[0] + size - LIMIT)
        buf = np.empty(size + ALIGN, np.uint8)
        start = -buf.ctypes.data % ALIGN
        if _total[0] + size <= LIMIT:
            if size not in _buffers:
                _buffers[size] = []
                bisect.insort(_sizes, size)
            _buffers[size].insert(0, [buf, start, _takes[0]])
            _total[0] += size
        return buf, start


def _drop_idle(before):
    """Drop the free buffers last taken before request number ``before``."""
    for size in list(_sizes):
        bucket = _buffers[size]
        bucket[:] = [e for i, e in enumerate(bucket) if e[2] >= before or not _free(bucket, i)]
        if not bucket:
            del _buffers[size]
            _sizes.remove(size)
    _total[0] = sum(size * len(bucket) for size, bucket in _buffers.items())


def _drop_free(nbytes):
    """Drop free buffers, largest sizes first, until ``nbytes`` have gone or none is left."""
    for size in sorted(_buffers, reverse=True):
        bucket = _buffers[size]
        i = 0
        while i < len(bucket) and nbytes > 0:
            if _free(bucket, i):
                del bucket[i]
                _total[0] -= size
                nbytes -= size
            else:
                i += 1
        if not bucket:
            del _buffers[size]
            _sizes.remove(size)
        if nbytes <= 0:
            return


@functools.lru_cache(maxsize=1024)                     # (272 ns computed, 43 looked up)
def size_class(nbytes):
    """The buffer size that a request of ``nbytes`` asks for: whole pages, then rounded up to
    one of CLASSES sizes evenly spaced above the power of two below it (with 4: 1.25, 1.5,
    1.75 and 2 times it). A buffer's pages past what its arrays write are never touched, so
    they cost address space, not memory."""
    n = -(-nbytes // _PAGE) * _PAGE
    top = 1 << (n - 1).bit_length()                      # the power of two at or above n
    step = max(_PAGE, top // (2 * CLASSES))
    return -(-n // step) * step


def _pooled_like(a):
    """An array of a's shape and dtype (not its values) in a reused buffer."""
    buf, start = _take(size_class(a.nbytes))
    return np.ndarray(a.shape, a.dtype, buf, start)      # a view: its base is buf


def empty(shape, dtype=np.float32):
    """``np.empty(shape, dtype)``, from a reused buffer (64-byte aligned) from MIN_BYTES up.

    NumPy's array comes first: most arrays of a small call are small, and this way they cost
    what ``np.empty`` costs (a large one only maps address space, which is dropped unused)."""
    a = np.empty(shape, dtype)
    if a.nbytes >= MIN_BYTES:
        a = _pooled_like(a)
    if FILL is not None and a.dtype.kind == "f":
        a.fill(FILL)
    return a


def zeros(shape, dtype=np.float32):
    """``np.zeros(shape, dtype)``; from MIN_BYTES up a reused buffer, filled here."""
    a = np.zeros(shape, dtype)           # (a large one: zero pages mapped lazily, never touched)
    if a.nbytes < MIN_BYTES:
        return a
    out = _pooled_like(a)
    out.fill(0)
    return out


def release():
    """Drop every buffer that no array uses (their memory goes back to the allocator);
    buffers in use stay. Returns the bytes still kept."""
    with _lock:
        _drop_free(_total[0])
        return _total[0]


def pooled_bytes():
    """(bytes kept in all, bytes of them free right now)."""
    with _lock:
        free = sum(size for size, bucket in _buffers.items()
                   for i in range(len(bucket)) if _free(bucket, i))
        return _total[0], free
