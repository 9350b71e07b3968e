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
"""
import math
from functools import lru_cache

import numpy as np

if not hasattr(np, "row_stack"):
    # numba-cuda 0.30 registers a typing overload for np.row_stack, a plain alias of np.vstack that
    # NumPy 2.5 removed; without the alias the first kernel compile fails with AttributeError
    # deep inside numba. Restoring the alias changes nothing else (seen with NumPy 2.5.2).
    np.row_stack = np.vstack

from numba import cuda                  # noqa: E402
from numba.core import config           # noqa: E402

#: True when numba.cuda is the CPU simulator (``NUMBA_ENABLE_CUDASIM=1``): every thread is a
#: Python thread, blocks run one after another, and a cooperative grid holds a single block.
SIMULATOR = bool(config.ENABLE_CUDASIM)

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
            "driver, or set NUMBA_ENABLE_CUDASIM=1 before numba.cuda is first imported to run the "
            "kernels on the CPU simulator (slow; for tests only); use the CPU kernels otherwise")


def is_device_array(a):
    """True for numba device arrays and, on a real GPU, any ``__cuda_array_interface__`` object."""
    if a is None or isinstance(a, np.ndarray):
        return False
    devicearray = getattr(cuda, "devicearray", None)
    if devicearray is not None and devicearray.is_cuda_ndarray(a):
        return True
    return hasattr(a, "__cuda_array_interface__")


def float_dtype_of(x, name="x"):
    """The compute dtype, taken from ``x``; float32 or float64 only."""
    dtype = np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {dtype}")
    return dtype


def to_device(a, dtype, name):
    """``a`` as a numba device array of ``dtype``: NumPy is cast and copied, device arrays are
    wrapped without a copy (and must already have ``dtype``)."""
    if is_device_array(a):
        if not cuda.devicearray.is_cuda_ndarray(a):
            a = cuda.as_cuda_array(a)             # CuPy / PyTorch: zero-copy view
        if np.dtype(a.dtype) != dtype:
            raise TypeError(f"{name}: expected a device array of dtype {dtype}, got {a.dtype}")
        if not a.is_c_contiguous():
            raise ValueError(f"{name}: expected a C-contiguous device array, got strides {a.strides}")
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def check_shape(a, shape, name):
    """ValueError naming ``name`` unless ``a.shape == shape``."""
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")


def lengths_to_device(lengths, T, B):
    """Validated int64 ``(B,)`` lengths on the device (all ``T`` when ``lengths`` is None)."""
    if lengths is None:
        host = np.full(B, T, dtype=np.int64)
    else:
        host = lengths.copy_to_host() if is_device_array(lengths) else np.asarray(lengths)
        if host.shape != (B,):
            raise ValueError(f"lengths: expected shape ({B},), got {host.shape}")
        if host.dtype.kind not in "iu":
            raise TypeError(f"lengths: expected an integer array, got dtype {host.dtype}")
        host = host.astype(np.int64)
        if B and (host.min() < 1 or host.max() > T):
            raise ValueError(f"lengths: expected 1 <= lengths[b] <= T = {T}, "
                             f"got values in [{host.min()}, {host.max()}]")
    return cuda.to_device(host)


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
    kernel[(n + tpb - 1) // tpb, tpb](*args)


@lru_cache(maxsize=None)
def utility_kernels(dtype):
    """``fill`` and ``column_sum`` kernels for one dtype.

    fill(a, value):        a[:] = value               a: 1-D (pass a contiguous array reshaped)
    column_sum(a, out):    out[j] = sum_r a[r, j]     a: (R, N), out: (N,)
    """
    dtype = np.dtype(dtype)
    ZERO = dtype.type(0)

    @cuda.jit
    def fill(a, value):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = value

    @cuda.jit
    def column_sum(a, out):
        j = cuda.grid(1)                   # one thread per column: neighbours read neighbours
        if j < a.shape[1]:
            acc = ZERO
            for r in range(a.shape[0]):
                acc += a[r, j]
            out[j] = acc

    return fill, column_sum


def zeros(shape, dtype):
    """A zero-filled device array (filled by a kernel: no host buffer, no transfer)."""
    a = cuda.device_array(shape, dtype=dtype)
    n = int(np.prod(shape))
    fill, _ = utility_kernels(np.dtype(dtype))
    launch_1d(fill, n, a.reshape(n), np.dtype(dtype).type(0))
    return a


def column_sum(a2d, dtype):
    """``a2d.sum(0)`` on the device: ``(R, N) -> (N,)``."""
    out = cuda.device_array(a2d.shape[1], dtype=dtype)
    _, kernel = utility_kernels(np.dtype(dtype))
    launch_1d(kernel, a2d.shape[1], a2d, out)
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
    dtype = float_dtype_of(x, "x")
    on_device = is_device_array(x)
    x = to_device(x, dtype, "x")
    if x.ndim != 3:
        raise ValueError(f"x: expected a (T, B, I) array, got shape {tuple(x.shape)}")
    T, B, I = x.shape
    W_hh = to_device(W_hh, dtype, "W_hh")
    if W_hh.ndim != 2 or W_hh.shape[0] != G * W_hh.shape[1]:
        raise ValueError(f"W_hh: expected shape ({G}*H, H), got {tuple(W_hh.shape)}")
    H = W_hh.shape[1]
    W_ih = to_device(W_ih, dtype, "W_ih")
    check_shape(W_ih, (G * H, I), "W_ih")
    return dtype, on_device, x, W_ih, W_hh, lengths_to_device(lengths, T, B), (T, B, I, H)


def device_input(a, shape, dtype, name, writable=False):
    """An optional input (initial state, upstream gradient) as a device array; zeros for None.

    ``writable=True`` (buffers the kernels update in place, such as the running state ``h``)
    guarantees a fresh array: a caller's device array is copied, never modified.
    """
    if a is None:
        return zeros(shape, dtype)
    d = to_device(a, dtype, name)
    check_shape(d, shape, name)
    if writable and is_device_array(a):
        fresh = cuda.device_array(shape, dtype=dtype)
        fresh.copy_to_device(d)
        return fresh
    return d
