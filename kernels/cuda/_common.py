"""Plumbing shared by the CUDA kernels: where arrays live, launch sizes, small utility kernels.

Nothing here is RNN math. The rules it implements:

* **Where results live.** Every public kernel looks at ``x`` (forward) or at the cache (backward):
  if ``x`` is a NumPy array, every other argument may be NumPy too (it is copied to the device)
  and the results come back as NumPy arrays; if ``x`` is a device array (a numba device array, or
  on a real GPU anything with ``__cuda_array_interface__`` such as a CuPy array or a PyTorch CUDA
  tensor), the results are numba device arrays and stay on the device.
* **dtype.** ``x`` decides: float32 or float64. NumPy arguments are cast to it; device arguments
  of another dtype are refused with a TypeError (casting them would be a hidden device copy).
* **Every kernel exists once per dtype.** Kernels are built by factories closed over typed
  constants (``ONE = np.float32(1)``) so that float32 kernels never promote to float64 (a float
  literal such as ``1.0`` is a float64 to Numba, and float64 is slow on most GPUs).
* **Host cost per call.** On a GPU every driver round trip costs microseconds and numba.cuda
  adds tens of microseconds of Python per allocation and per launch; at small batch that used to
  be most of a call (~1 ms of a 2.3 ms LSTM forward on an H100). Three things here cut it:
  ``empty`` takes work and result buffers from a caching pool (``DevicePool``) instead of the
  driver, ``launch`` packs kernel arguments itself and calls the driver directly once numba has
  compiled and launched a kernel the first time, and ``lengths_to_device`` keeps the device copy
  of each distinct ``lengths`` it has seen. ``zeros`` is one driver memset, not a kernel.
  On the simulator all three fall back to plain numba.cuda.
"""
import copy
import math
import struct
import sys
import threading
import weakref
from functools import lru_cache, partial

import numpy as np

if not hasattr(np, "row_stack"):
    # numba-cuda 0.30 registers a typing overload for np.row_stack, a plain alias of np.vstack that
    # NumPy 2.5 removed; without the alias the first kernel compile fails with AttributeError
    # deep inside numba. Restoring the alias changes nothing else (seen with NumPy 2.5.2).
    np.row_stack = np.vstack

from numba import cuda                  # noqa: E402
from numba.core import config           # noqa: E402

from .._common import as_float_array, as_lengths    # noqa: E402

#: True when numba.cuda is the CPU simulator (``NUMBA_ENABLE_CUDASIM=1``): every thread is a
#: Python thread, blocks run one after another, and a cooperative grid holds a single block.
SIMULATOR = bool(config.ENABLE_CUDASIM)

# ---------------------------------------------------------------------------------------------
# The simulator: faster thread switching, and its static shared arrays made thread-safe
#
# The simulator runs each GPU thread of a block as a Python thread, and the launching thread
# polls them in a loop (who waits at a barrier, who is done). Under CPython's default switch
# interval (5 ms) that poller holds the interpreter for 5 ms at a time while the GPU threads
# wait for it, so a kernel with a barrier per step crawls: 100 us made this project's simulator
# tests 3-5x faster (tests/test_device.py 140 s -> 24 s on a 2-core machine). The interval is set
# only while a simulated kernel runs, and put back after.
#
# Finer switching exposes a race in the simulator's ``cuda.shared.array``: it finds a static
# shared array in a dict by the caller's source line, and two threads that both find none
# each make their own, so a block's threads no longer share it (the persistent kernels' sums
# then came out wrong, at random). ``_thread_safe_shared_array`` makes the same lookup under
# a lock.
# ---------------------------------------------------------------------------------------------

#: The interpreter's switch interval (seconds) while a simulated kernel runs.
SIMULATOR_SWITCH_INTERVAL = 1e-4


class _simulator_switching:
    """Context: the switch interval is ``SIMULATOR_SWITCH_INTERVAL`` inside, as before after.

    Launches from several threads overlap: the first one in saves the interval and the last one
    out puts it back (each saving and restoring its own, a launch that ended last restored the
    short interval that one started meanwhile had found, and it stayed for the process)."""

    _lock = threading.Lock()
    _inside = 0
    _before = None

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if cls._inside == 0:
                cls._before = sys.getswitchinterval()
                sys.setswitchinterval(min(cls._before, SIMULATOR_SWITCH_INTERVAL))
            cls._inside += 1

    def __exit__(self, *exc):
        cls = type(self)
        with cls._lock:
            cls._inside -= 1
            if cls._inside == 0:
                sys.setswitchinterval(cls._before)


_SHARED_LOCK = threading.Lock()


def _thread_safe_shared_array(original):
    """The simulator's ``FakeCUDAShared.array`` with the static-array lookup under a lock (the
    caller's file and line name the array, as in the original)."""
    from numba.core import types
    from numba.np import numpy_support

    def array(self, shape, dtype):
        if shape == 0:                  # dynamic shared memory: one buffer, nothing to race
            return original(self, shape, dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with _SHARED_LOCK:
            res = self._allocations.get(caller)
            if res is None:
                if isinstance(dtype, types.Type):
                    dtype = numpy_support.as_dtype(dtype)
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res
    array.thread_safe = True
    return array


if SIMULATOR:
    from numba.cuda.simulator import kernelapi as _kernelapi
    if not getattr(_kernelapi.FakeCUDAShared.array, "thread_safe", False):
        _kernelapi.FakeCUDAShared.array = _thread_safe_shared_array(
            _kernelapi.FakeCUDAShared.array)

#: Threads per block of the 1-D (pointwise, fill, column-sum) kernels.
MAX_THREADS_1D = 128

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_available():
    """True if numba.cuda can run kernels here: a usable GPU and driver, or the simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install raises instead of answering False
        return False


def require_cuda():
    """Raise a RuntimeError that says what is missing when no CUDA device can run our kernels."""
    if not is_available():
        raise RuntimeError(
            "kernels.cuda: no usable CUDA device (numba.cuda.is_available() is False). "
            "Install the GPU extra (pip install -e '.[cuda]') on a machine with an NVIDIA GPU and "
            "driver, or set NUMBA_ENABLE_CUDASIM=1 before numba is imported (so before rnncore "
            "or kernels are) to run the kernels on the CPU simulator (slow; for tests only); use "
            "the CPU kernels otherwise")


def is_device_array(a):
    """True for numba device arrays and, on a real GPU, any ``__cuda_array_interface__`` object."""
    if a is None or isinstance(a, np.ndarray):
        return False
    devicearray = getattr(cuda, "devicearray", None)
    if devicearray is not None and devicearray.is_cuda_ndarray(a):
        return True
    return hasattr(a, "__cuda_array_interface__")


def float_dtype_of(x, name="x"):
    """The compute dtype, taken from ``x``; float32 or float64 only (a byte-swapped one is
    taken as the native one, as the CPU kernels take it). ``x`` without a dtype (nested lists)
    goes through the CPU kernels' check first, which names ``name`` where NumPy cannot make
    one array of it."""
    dtype = getattr(x, "dtype", None)
    dtype = np.dtype(as_float_array(x, name).dtype if dtype is None else dtype)
    if dtype.kind == "f" and dtype.newbyteorder("=") in FLOAT_DTYPES:
        dtype = dtype.newbyteorder("=")
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {dtype}")
    return dtype


def to_device(a, dtype, name):
    """``a`` as a numba device array of ``dtype``: NumPy is checked as the CPU kernels check it
    (real numbers: no bool, complex or object arrays), cast and copied; device arrays are
    wrapped without a copy (and must already have ``dtype``)."""
    if is_device_array(a):
        if not cuda.devicearray.is_cuda_ndarray(a):
            a = cuda.as_cuda_array(a)             # CuPy / PyTorch: zero-copy view
        if np.dtype(a.dtype) != dtype:
            raise TypeError(f"{name}: expected a device array of dtype {dtype}, got {a.dtype}")
        if not a.is_c_contiguous():
            raise ValueError(f"{name}: expected a C-contiguous device array, got strides {a.strides}")
        return a
    return cuda.to_device(as_float_array(a, name, dtype, writable=False))   # (copied there)


def overlaps(a, b):
    """Whether the C-contiguous device arrays ``a`` and ``b`` share any memory."""
    if a.size == 0 or b.size == 0:
        return False
    if SIMULATOR:                          # the simulator's arrays wrap NumPy arrays
        return bool(np.shares_memory(a._ary, b._ary))
    a0, b0 = a.device_ctypes_pointer.value or 0, b.device_ctypes_pointer.value or 0
    return a0 < b0 + b.size * b.dtype.itemsize and b0 < a0 + a.size * a.dtype.itemsize


def check_shape(a, shape, name):
    """ValueError naming ``name`` unless ``a.shape == shape``."""
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")


#: Device copies of the ``lengths`` arrays seen recently: (T, bytes) -> int64 device array. The
#: kernels never write ``lengths``, so one device copy serves every call with the same values.
_LENGTHS = {}
_LENGTHS_KEEP = 64


def lengths_to_device(lengths, T, B):
    """Validated int64 ``(B,)`` lengths on the device (all ``T`` when ``lengths`` is None).

    Host lengths are checked on every call but copied to the device only the first time these
    values are seen (a host-to-device copy is a synchronous driver round trip, ~0.1 ms).
    """
    if is_device_array(lengths):                       # numba's, or CuPy / PyTorch on the GPU
        lengths = lengths if cuda.devicearray.is_cuda_ndarray(lengths) else \
            cuda.as_cuda_array(lengths)
        lengths = lengths.copy_to_host()
    # the CPU kernels' check: a masked array refused (its mask would be ignored), the bounds
    # compared in the array's own dtype (uint64 values past int64's range do not wrap)
    host = as_lengths(lengths, T, B)
    if SIMULATOR:
        return cuda.to_device(host)
    key = (T, host.tobytes())
    d = _LENGTHS.get(key)
    if d is None or d[0] is not _POOL.context:
        if len(_LENGTHS) >= _LENGTHS_KEEP:
            _LENGTHS.clear()
        d = _LENGTHS[key] = (_POOL.context, cuda.to_device(host))
    return d[1]


def result(a, on_device):
    """Give ``a`` back where the caller's arrays live."""
    return a if on_device else a.copy_to_host()


def threads_1d(n):
    """Threads per block for ``n`` independent work items: at most MAX_THREADS_1D.

    Small problems get small blocks; that costs nothing on a GPU and saves a lot of time in the
    simulator, where every thread is a Python thread.
    """
    return max(1, min(MAX_THREADS_1D, n))


def launch_1d(kernel, n, *args):
    """Launch ``kernel`` over ``n`` work items, one thread each (``cuda.grid(1)`` is the item)."""
    if n == 0:
        return
    tpb = threads_1d(n)
    launch(kernel, (n + tpb - 1) // tpb, tpb, 0, *args)


#: column_sum's blocks: COLS columns by LANES threads, each thread summing ROWS_PER_THREAD rows
#: (LANES apart); a block covers LANES * ROWS_PER_THREAD rows of its columns.
COLS, LANES, ROWS_PER_THREAD = 32, 8, 32


@lru_cache(maxsize=None)
def utility_kernels(dtype):
    """``fill`` and the two passes of ``column_sum``, for one dtype.

    fill(a, value):                   a[:] = value             a: 1-D (a contiguous array reshaped)
    partial_column_sums(a, part):     part[q, j] = sum of a[r, j] over the q-th chunk of rows
    column_sum(part, out):            out[j] = sum_q part[q, j]
    """
    dtype = np.dtype(dtype)
    ZERO = dtype.type(0)

    @cuda.jit
    def fill(a, value):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = value

    @cuda.jit
    def partial_column_sums(a, part):
        # Block (x, y): columns x*COLS.., rows y*LANES*ROWS_PER_THREAD..; neighbouring threads read
        # neighbouring columns, so each warp reads whole rows of COLS numbers at a time.
        red = cuda.shared.array((LANES, COLS), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j = cuda.blockIdx.x * cuda.blockDim.x + tx
        r0 = cuda.blockIdx.y * cuda.blockDim.y * ROWS_PER_THREAD
        acc = ZERO
        if j < a.shape[1]:
            for n in range(ROWS_PER_THREAD):
                r = r0 + ty + n * cuda.blockDim.y
                if r < a.shape[0]:
                    acc += a[r, j]
        red[ty, tx] = acc
        cuda.syncthreads()
        if ty == 0 and j < a.shape[1]:     # the lanes' sums, in a fixed order: deterministic
            for n in range(1, cuda.blockDim.y):
                acc += red[n, tx]
            part[cuda.blockIdx.y, j] = acc

    @cuda.jit
    def column_sum(part, out):
        j = cuda.grid(1)
        if j < part.shape[1]:
            acc = ZERO
            for q in range(part.shape[0]):
                acc += part[q, j]
            out[j] = acc

    return fill, partial_column_sums, column_sum


def zeros(shape, dtype):
    """A zero-filled device array: one driver memset on a GPU (a fill kernel on the simulator)."""
    a = empty(shape, dtype)
    n = int(np.prod(shape))
    if n == 0:
        return a
    if SIMULATOR:
        fill = utility_kernels(np.dtype(dtype))[0]
        launch_1d(fill, n, a.reshape(n), np.dtype(dtype).type(0))
    else:
        a.gpu_data.memset(0, count=n * np.dtype(dtype).itemsize)
    return a


def copy_into(dst, src):
    """Copy the C-contiguous device array ``src`` into the start of ``dst`` (one driver call on a
    GPU; numba's ``dst[i].copy_to_device(src)`` costs ~100 Python calls of slicing and checks)."""
    if SIMULATOR:
        dst.reshape(dst.size)[:src.size].copy_to_device(src.reshape(src.size))
        return
    from numba.cuda.cudadrv import driver
    driver.device_to_device(dst, src, src.size * src.dtype.itemsize)


def column_sum(a2d, dtype):
    """``a2d.sum(0)`` on the device: ``(R, N) -> (N,)``, in two passes.

    One thread per column over all R rows (the obvious kernel) keeps only N threads busy, each
    reading R numbers one after another: 0.8 ms for the (6400, 2048) bias gradient of an LSTM
    at T = 100, B = 64, H = 512 on an H200. Here blocks of COLS x LANES threads each sum a chunk
    of rows into ``part`` (one row of it per chunk), then one thread per column adds the chunks'
    sums. Both in a fixed order, so results do not change between runs.
    """
    R, N = a2d.shape
    out = empty(N, dtype)
    if N == 0:
        return out
    _, partial_column_sums, final = utility_kernels(np.dtype(dtype))
    cols, lanes = min(COLS, N), max(1, min(LANES, R))
    chunks = max(1, ceil_div(R, lanes * ROWS_PER_THREAD))
    part = empty((chunks, N), dtype)
    launch(partial_column_sums, (ceil_div(N, cols), chunks), (cols, lanes), 0, a2d, part)
    launch_1d(final, N, part, out)
    return out


def ceil_div(a, b):
    return -(-a // b)


def math_sigmoid_factory(dtype):
    """A numerically stable logistic device function for ``dtype`` (never exp of a large +z)."""
    ONE = np.dtype(dtype).type(1)

    @cuda.jit(device=True)
    def sigmoid(z):
        if z >= 0:
            return ONE / (ONE + math.exp(-z))
        e = math.exp(z)
        return e / (ONE + e)

    return sigmoid


@cuda.jit(device=True)
def position(s, L, reverse):
    """Time position that step ``s`` of a sequence of length ``L`` reads and writes.

    Forward: ``s``. Reverse: ``L - 1 - s`` inside the sequence, ``s`` for padding steps. This is
    the reference's ``flip_valid`` applied on the fly, so nothing is ever flipped in memory: every
    per-time array (``xW``, ``y``, saved gates and states, ``dy``, gate grads, ``dx``) is kept in
    time order, and the big GEMMs over all steps need no reordering.
    """
    if reverse and s < L:
        return L - 1 - s
    return s


def prepare_forward(x, W_ih, W_hh, G, lengths):
    """Checks and device copies shared by every ``*_forward``; ``G`` = gates (4 LSTM, 3 GRU, 1 RNN).

    returns (dtype, on_device, x, W_ih, W_hh, lengths, (T, B, I, H)) with device arrays.
    """
    require_cuda()
    enter()
    dtype = float_dtype_of(x, "x")
    on_device = is_device_array(x)
    x = to_device(x, dtype, "x")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x: expected a (T, B, I) array with T, B, I >= 1, got shape "
                         f"{tuple(x.shape)}")
    T, B, I = x.shape
    W_hh = to_device(W_hh, dtype, "W_hh")
    if W_hh.ndim != 2 or W_hh.shape[0] != G * W_hh.shape[1] or W_hh.shape[1] == 0:
        raise ValueError(f"W_hh: expected shape ({G}*H, H) with H >= 1, got {tuple(W_hh.shape)}")
    H = W_hh.shape[1]
    W_ih = to_device(W_ih, dtype, "W_ih")
    check_shape(W_ih, (G * H, I), "W_ih")
    return dtype, on_device, x, W_ih, W_hh, lengths_to_device(lengths, T, B), (T, B, I, H)


def check_cache(cache, forward, gates, size):
    """TypeError naming ``cache`` unless it is a cache that this package's ``forward`` returned:
    a tuple of ``size`` items ``(on_device, x, W_ih, W_hh, ...)``, x (T, B, I) and W_hh
    (gates * H, H) device arrays (the cells' caches differ in their length or in W_hh's rows;
    a CPU kernel's cache holds NumPy arrays). Types and shapes only, as ``kernels._common``'s."""
    x, W_hh = (cache[1], cache[3]) if type(cache) is tuple and len(cache) == size else (None, None)
    if not (cuda.devicearray.is_cuda_ndarray(x) and cuda.devicearray.is_cuda_ndarray(W_hh)
            and len(x.shape) == 3 and len(W_hh.shape) == 2
            and W_hh.shape[0] == gates * W_hh.shape[1]):
        raise TypeError(f"cache: expected the cache that kernels.cuda.{forward} returned, got "
                        f"{type(cache).__name__}"
                        + (f" of {len(cache)} items" if isinstance(cache, tuple) else ""))


def device_input(a, shape, dtype, name, writable=False, required=False):
    """An input (initial state, upstream gradient, bias) as a device array; zeros for None
    unless ``required`` (a bias, which the CPU kernels require too: TypeError for None).

    ``writable=True`` (buffers the kernels update in place, such as the running state ``h``)
    guarantees a fresh array: a caller's device array is copied, never modified.
    """
    if a is None:
        if required:
            raise TypeError(f"{name}: expected a real array of shape {shape}, got None")
        return zeros(shape, dtype)
    d = to_device(a, dtype, name)
    check_shape(d, shape, name)
    if writable and is_device_array(a):
        fresh = empty(shape, dtype)
        fresh.copy_to_device(d)
        return fresh
    return d


# ---------------------------------------------------------------------------------------------
# The caching pool: device buffers without a driver allocation per call
# ---------------------------------------------------------------------------------------------

class _Lease:
    """The device memory of one pooled array: a block of the pool lent out.

    numba sees it as the array's ``gpu_data`` (attributes are forwarded to numba's own pointer
    to the block). When the last array using it is gone (reshapes share it, slices hold a
    ``_LeaseView`` that refers back to it), the finalizer hands the block back to the pool.
    """

    __slots__ = ("_mem", "_cuda_memsize_", "__weakref__")

    def __init__(self, mem, nbytes, release):
        self._mem = mem
        self._cuda_memsize_ = nbytes          # what numba reads as the allocation's size
        weakref.finalize(self, release)

    def __getattr__(self, name):
        return getattr(self._mem, name)

    def view(self, start, stop=None):
        return _LeaseView(self, self._mem.view(start, stop))


class _LeaseView:
    """A slice of a lease (``array[i]``): keeps the lease, so the block, alive."""

    __slots__ = ("_lease", "_mem")

    def __init__(self, lease, mem):
        self._lease = lease
        self._mem = mem

    def __getattr__(self, name):
        return getattr(self._mem, name)

    def view(self, start, stop=None):
        return _LeaseView(self._lease, self._mem.view(start, stop))


def _size_class(nbytes):
    """Round up to a multiple of a quarter of the largest power of two <= ``nbytes`` (four classes
    per power of two) and of 512 bytes: at most 25 % or 511 bytes unused. Calls whose shapes
    differ a little (another T, a last short batch) reuse the same blocks."""
    if nbytes <= 512:
        return 512
    step = 1 << max(9, nbytes.bit_length() - 3)
    return -(-nbytes // step) * step


class DevicePool:
    """A caching allocator for the arrays the kernels create (results and work buffers).

    ``cuda.device_array`` costs a driver allocation (~90 us on an H100 with numba.cuda's
    bookkeeping) and, later, a free that waits for the GPU. Here a block whose arrays are all
    gone goes back to a free list by size class and the next request of that class takes it:
    a forward or backward at a fixed shape allocates nothing after its first call. Reuse is
    safe because everything runs on one stream, in order: a kernel that still reads a block's
    old contents was queued before any kernel that writes its new ones. (An array handed to
    another stream, e.g. a PyTorch one, must be finished with before it is dropped.)

    ``limit``: bytes of free blocks kept; beyond it a returned block is really freed.
    ``release()`` frees every cached block. A new CUDA context (after ``cuda.close()``) starts an
    empty pool.
    """

    def __init__(self, limit=2 << 30):
        self.limit = int(limit)
        self.cached = 0                  # bytes in the free lists
        self.context = None
        self._free = {}                  # size class -> [numba device pointer, ...]
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def enter(self):
        """Once per public call: follow the current context (a new one empties the pool)."""
        ctx = cuda.current_context()
        if ctx is not self.context:
            with self._lock:
                self._free, self.cached, self.context = {}, 0, ctx

    def array(self, shape, dtype):
        """An uninitialised C-contiguous device array from the pool."""
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
        nbytes = dtype.itemsize
        for n in shape:
            nbytes *= n
        if nbytes == 0 or self.context is None:
            return cuda.device_array(shape, dtype)
        size = _size_class(nbytes)
        mem = None
        with self._lock:
            blocks = self._free.get(size)
            if blocks:
                mem = blocks.pop()
                self.cached -= size
        if mem is None:
            self.misses += 1
            try:
                mem = self.context.memalloc(size)
            except Exception:            # out of memory: give the cached blocks back, retry once
                self.release()
                mem = self.context.memalloc(size)
        else:
            self.hits += 1
        lease = _Lease(mem, nbytes, partial(self._give_back, self.context, size, mem))
        return _on_memory(shape, dtype, lease)

    def _give_back(self, ctx, size, mem):
        with self._lock:
            if ctx is self.context and self.cached + size <= self.limit:
                self._free.setdefault(size, []).append(mem)
                self.cached += size
        # otherwise ``mem`` is dropped here and numba frees it

    def release(self):
        """Free every cached block (arrays in use are not affected)."""
        with self._lock:
            self._free, self.cached = {}, 0


_POOL = DevicePool()
_DeviceNDArray = None if SIMULATOR else cuda.cudadrv.devicearray.DeviceNDArray


def pool():
    """The process's ``DevicePool`` (set ``pool().limit = 0`` to switch caching off)."""
    return _POOL


def enter():
    """What every public entry point does first on a GPU: bind the pool to the current context."""
    if not SIMULATOR:
        _POOL.enter()


def empty(shape, dtype):
    """An uninitialised device array, from the pool on a GPU."""
    if SIMULATOR:
        return cuda.device_array(shape, dtype=dtype)
    return _POOL.array(shape, dtype)


class _NoMemory:
    """Stands in for the memory of a template array (``_on_memory``): it owns nothing."""

    def __init__(self, nbytes):
        self._cuda_memsize_ = nbytes


#: (shape, dtype) -> a DeviceNDArray without memory, copied for each new array of that shape.
_TEMPLATES = {}


def _on_memory(shape, dtype, gpu_data):
    """A C-contiguous DeviceNDArray of ``shape`` and ``dtype`` on ``gpu_data``.

    numba's constructor works out the shape's layout, extents and flags each time (~20 us of
    Python, as much for each ``reshape``); here that is done once per shape, on a template, and
    each array is a shallow copy of it with its own memory (numba's own ``bind`` copies arrays
    the same way).
    """
    key = (shape, dtype)
    t = _TEMPLATES.get(key)
    if t is None:
        if len(_TEMPLATES) >= 1024:
            _TEMPLATES.clear()
        strides, acc = [], dtype.itemsize
        for n in reversed(shape):
            strides.append(acc)
            acc *= n
        t = _TEMPLATES[key] = _DeviceNDArray(shape, tuple(reversed(strides)), dtype,
                                             gpu_data=_NoMemory(acc))
    a = copy.copy(t)
    a.gpu_data = gpu_data
    return a


def reshaped(a, shape):
    """``a.reshape(shape)`` for a C-contiguous device array, without numba's layout work."""
    if SIMULATOR:
        return a.reshape(shape)
    return _on_memory(tuple(shape), np.dtype(a.dtype), a.gpu_data)


def part(a, i):
    """``a[i]`` (the i-th sub-array along the first axis) of a C-contiguous device array."""
    if SIMULATOR:
        return a[i]
    step = a.strides[0]
    return _on_memory(tuple(a.shape[1:]), np.dtype(a.dtype), a.gpu_data.view(i * step,
                                                                              (i + 1) * step))


# ---------------------------------------------------------------------------------------------
# Launching: numba compiles and launches a kernel once, then the driver is called directly
# ---------------------------------------------------------------------------------------------

_ARRAY, _INT, _BOOL, _F32, _F64 = range(5)


class _DirectLaunch:
    """Launch one compiled kernel with the arguments packed here, not by numba.

    numba.cuda turns every argument into ctypes objects on every launch (an array becomes
    meminfo, parent, nitems, itemsize, data, shape..., strides..., each a ctypes value); with a
    dozen array arguments that is ~60 us of Python per launch. This packs the same words into one
    int64 buffer (every kernel parameter is at most 8 bytes, little-endian, so a bool or a
    float32 sits in the low bytes of its word) and calls ``cuLaunchKernel`` (or
    ``cuLaunchCooperativeKernel`` for a kernel with a grid barrier) through ``cuda.bindings``.
    """

    def __init__(self, overload):
        from cuda.bindings import driver as cu
        from numba import types
        handle = overload._codelibrary.get_cufunc().handle
        if isinstance(handle, cu.CUkernel):        # library-loaded: the context's function
            err, handle = cu.cuKernelGetFunction(handle)
            if err != cu.CUresult.CUDA_SUCCESS:
                raise RuntimeError(f"cuKernelGetFunction: {err}")
        elif not isinstance(handle, cu.CUfunction):
            handle = cu.CUfunction(int(handle))
        self.handle = handle
        self.call = cu.cuLaunchCooperativeKernel if overload.cooperative else cu.cuLaunchKernel
        self.ok = cu.CUresult.CUDA_SUCCESS
        self.coop = bool(overload.cooperative)
        codes = []
        for t in overload.argument_types:
            if isinstance(t, types.Array):
                codes.append(_ARRAY)
            elif t == types.boolean:
                codes.append(_BOOL)
            elif isinstance(t, types.Integer) and t.bitwidth == 64:
                codes.append(_INT)
            elif t == types.float32:
                codes.append(_F32)
            elif t == types.float64:
                codes.append(_F64)
            else:
                raise TypeError(f"no direct launch for an argument of type {t}")
        self.codes = tuple(codes)

    def words(self, args):
        """The kernel's parameters as 64-bit words, in order."""
        w = []
        for code, a in zip(self.codes, args):
            if code == _ARRAY:
                w += (0, 0, a.size, a.dtype.itemsize, a.device_ctypes_pointer.value or 0)
                w += a.shape
                w += a.strides
            elif code == _F32:
                w.append(struct.unpack("<I", struct.pack("<f", a))[0])
            elif code == _F64:
                w.append(struct.unpack("<q", struct.pack("<d", a))[0])
            else:
                w.append(int(a))
        return w

    def __call__(self, griddim, blockdim, shared, args):
        w = np.array(self.words(args), dtype=np.int64)
        ptrs = np.arange(len(w), dtype=np.uint64) * np.uint64(8) + np.uint64(w.ctypes.data)
        gx, gy, gz = _dim3(griddim)
        bx, by, bz = _dim3(blockdim)
        if self.coop:
            (err,) = self.call(self.handle, gx, gy, gz, bx, by, bz, shared, 0, ptrs.ctypes.data)
        else:
            (err,) = self.call(self.handle, gx, gy, gz, bx, by, bz, shared, 0, ptrs.ctypes.data, 0)
        if err != self.ok:
            raise RuntimeError(f"kernels.cuda: kernel launch failed: {err}")


def _dim3(d):
    """A launch dimension (int or tuple) as three ints."""
    return (tuple(d) + (1, 1))[:3] if isinstance(d, tuple) else (d, 1, 1)


#: (kernel, argument kinds) -> _DirectLaunch, or None where numba must launch.
_DIRECT = {}
#: Direct launches on (True) or off (every launch through numba).
DIRECT_LAUNCH = not SIMULATOR


def _kinds(args):
    """A cheap key for the argument types; None if an array is not C-contiguous."""
    kinds = []
    for a in args:
        if isinstance(a, (bool, np.bool_)):
            kinds.append("b")
        elif isinstance(a, (int, np.integer)):
            kinds.append("i")
        elif isinstance(a, (float, np.floating)):
            kinds.append(np.dtype(type(a)).char if isinstance(a, np.floating) else "d")
        else:
            if not a.is_c_contiguous():
                return None
            kinds.append((a.ndim, a.dtype.char))
    return tuple(kinds)


def launch(kernel, griddim, blockdim, shared, *args):
    """``kernel[griddim, blockdim, 0, shared](*args)``, directly through the driver once the
    kernel has been launched by numba for these argument types (which compiles it)."""
    if SIMULATOR:
        with _simulator_switching():
            kernel[griddim, blockdim, 0, shared](*args)
        return
    if not DIRECT_LAUNCH:
        kernel[griddim, blockdim, 0, shared](*args)
        return
    kinds = _kinds(args)
    key = (kernel, kinds)
    direct = _DIRECT.get(key, False) if kinds is not None else None
    if direct:
        direct(griddim, blockdim, shared, args)
        return
    kernel[griddim, blockdim, 0, shared](*args)
    if direct is False:                 # first launch of these types: prepare the direct path
        _DIRECT[key] = _direct_for(kernel, args)


def _direct_for(kernel, args):
    try:
        if getattr(kernel, "specialized", False):
            overload = next(iter(kernel.overloads.values()))
        else:
            overload = kernel.overloads.get(tuple(kernel.typeof_pyval(a) for a in args))
        return None if overload is None else _DirectLaunch(overload)
    except Exception:                   # no cuda.bindings, another numba layout: numba launches
        return None
