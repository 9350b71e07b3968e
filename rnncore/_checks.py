"""Input validation shared by every module: clear errors that name the argument.

Every public call checks its inputs here *before* touching any state, so a refused call leaves
the model exactly as it was, and no malformed array ever reaches a Numba kernel.
"""

import math
import numbers
import os
from collections.abc import Mapping

import numpy as np
from numba import njit

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES


@njit(cache=True)
def _finite_flat(a):
    """Whether the 1-D array ``a`` holds no NaN/Inf: ``v - v`` is 0 for a finite v and NaN for
    NaN and +-Inf (without fast-math flags the compiler may not fold it to 0). No entry's test
    waits for another's, so the loop runs in vector registers (6400 float32: ~0.8 us, where a
    running sum took ~6)."""
    bad = False
    for i in range(a.size):
        d = a[i] - a[i]
        bad |= d != d
    return not bad


@njit(cache=True)
def _min_max(a):
    """(min, max) of the non-empty 1-D int64 array ``a``, in one pass."""
    lo = hi = a[0]
    for v in a:
        lo, hi = min(lo, v), max(hi, v)
    return lo, hi


def int_range(a):
    """(min, max) of a non-empty int array of any shape, as Python ints."""
    lo, hi = _min_max(np.ascontiguousarray(a, dtype=np.int64).reshape(-1))
    return int(lo), int(hi)


def _all_finite(a):
    """Whether a float array holds no NaN/Inf, at small per-call cost (validation runs on every
    call of every module, so at tiny shapes it is a visible part of a training step)."""
    if (a.flags.c_contiguous or a.flags.f_contiguous) and a.dtype in FLOAT_DTYPES:
        return _finite_flat(a.ravel(order="K"))          # (a view: one compiled loop, no temporary)
    # another layout: one sum is finite unless an entry is NaN/Inf (or the sum overflows, which
    # the exact test then clears), and walks the strides without a copy
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a, axis=None)
    return math.isfinite(total) or bool(np.isfinite(a).all())


def float_dtype(dtype, name="dtype"):
    if dtype is None:                                    # (np.dtype(None) would be float64)
        raise TypeError(f"{name}: expected np.float32 or np.float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected np.float32 or np.float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected np.float32 or np.float64, got {dt}")
    return dt


def fits_dtype(v, name, dtype, what="the parameters' dtype"):
    """Refuse the number ``v`` (a learning rate, say) unless ``dtype.type(v)`` is finite, and
    non-zero where ``v`` is: 1e39 is inf in float32, and inf * 0 makes NaN weights."""
    if dtype.kind != "f":
        return
    info = np.finfo(dtype)
    if abs(v) > float(info.max):
        raise ValueError(f"{name}: expected a number that is finite in {what} "
                         f"{dtype} (at most {float(info.max):.6g}), got {v}")
    if v != 0 and dtype.type(v) == 0:
        raise ValueError(f"{name}: expected a number that is not 0 in {what} "
                         f"{dtype} (at least {float(info.smallest_subnormal):.3g}), got {v}")


def positive_int(v, name, minimum=1, bounded=True):
    """``v`` as an int >= ``minimum`` and, where ``bounded`` (sizes and counts; not a seed),
    below 2**63."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    if bounded and v >= 2 ** 63:                         # no array dimension or count is this big
        raise ValueError(f"{name}: expected an int >= {minimum} and below 2**63, got an integer "
                         f"of {len(str(v))} digits")
    return int(v)


def _memory_bytes():
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def fits_in_memory(values, dtype, what, of="values"):
    """Refuse to allocate ``values`` numbers of ``dtype`` where they alone would exceed this
    machine's memory (or 2**50 bytes where it cannot be told): ValueError naming ``what`` (the
    call and its sizes). Without it NumPy refused with a MemoryError or "array is too big" that
    names no argument, and a layer of many small arrays (``LSTM(2, 5, num_layers=2**62)``)
    allocated until the system killed the process."""
    need = int(values) * np.dtype(dtype).itemsize
    limit = _memory_bytes() or 2 ** 50
    if need > limit:
        raise ValueError(f"{what}: {int(values):,} {of} of {np.dtype(dtype)} need "
                         f"{need / 2**30:,.1f} GiB, more than this machine's memory "
                         f"({limit / 2**30:,.1f} GiB)")


def as_float(v, name, expected):
    """The real number ``v`` as a float; ValueError naming ``name`` for an int beyond a float's
    range (``float(10**400)`` raises OverflowError, which names nothing)."""
    try:
        f = float(v)
        if math.isinf(f) and not np.isinf(v):            # (a longdouble 1e400 becomes inf)
            raise OverflowError
        return f
    except OverflowError:
        what = (f"an integer of {len(str(abs(v)))} digits" if isinstance(v, numbers.Integral)
                else f"a {type(v).__name__} ({v!s})" if isinstance(v, np.floating)
                else f"a {type(v).__name__}")
        raise ValueError(f"{name}: expected {expected}, got {what}, beyond a float's "
                         f"range") from None


def positive_number(v, name, allow_zero=False, allow_inf=False):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {v!r}")
    what = (f"a {'number' if allow_inf else 'finite number'} {'>=' if allow_zero else '>'} 0"
            + (" (or inf)" if allow_inf else ""))
    v = as_float(v, name, what)
    if not (v > 0 or (v == 0 and allow_zero)) or (np.isinf(v) and not allow_inf):   # (NaN: no)
        raise ValueError(f"{name}: expected {what}, got {v}")
    return v


def probability(v, name):
    """A number in [0, 1) (dropout rates)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number in [0, 1), got {v!r}")
    v = as_float(v, name, "a number in [0, 1)")
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1), got {v}")
    return v


def mapping(v, name):
    if not isinstance(v, Mapping):
        raise TypeError(f"{name}: expected a dict of arrays, got {type(v).__name__}")
    return v


def _as_array(x, name):
    if isinstance(x, np.ma.MaskedArray):                 # (np.asarray would drop the mask)
        raise TypeError(f"{name}: expected a plain array, got a masked array (its mask would "
                        f"be ignored); fill it (.filled(0)) and pass lengths= for padding")
    if isinstance(x, np.matrix):                         # its * and ** are matrix products, and
        return np.asarray(x)                             # the compiled checks do not take it
    if isinstance(x, np.ndarray):
        return x
    if x is None or isinstance(x, (str, bytes, dict, set)):  # (NumPy: 0-d arrays of "object")
        what = "None" if x is None else type(x).__name__
        raise TypeError(f"{name}: expected a numeric array, got {what}"
                        + (f" {x!r}" if isinstance(x, (str, bytes)) and len(x) < 40 else ""))
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__} ({e})") from None
    except RuntimeError as e:                            # a torch tensor that needs grad says so
        if not _holds_torch(x):                          # (others: their own error, as it came)
            raise
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__} ({e})") from None


def _holds_torch(x):
    """Whether ``x`` is a torch object, or a list or tuple holding one."""
    if isinstance(x, (list, tuple)):
        return any(_holds_torch(v) for v in x)
    return type(x).__module__.startswith("torch")


def finite_array(x, name, kind="f", dtype=None):
    """``x`` as an ndarray; ``kind='f'`` for real numbers (cast to ``dtype`` if given; without
    one, float16 and longdouble become float64: the compiled code takes float32 and float64
    only), 'i' ints (as int64).

    Raises TypeError for non-numeric data, ValueError for NaN/Inf.
    """
    if type(x) is np.ndarray and kind == "f" and x.flags.c_contiguous and x.ndim:
        # The common case, an array of the dtype asked for (or float32/float64 when none is),
        # in about half the time of the full path (every module checks its input on every
        # call). Dtypes compared by identity (NumPy's float dtypes are singletons); anything
        # else, and an array that is not finite (for the message), takes the full path.
        dt = x.dtype
        if ((dt is dtype) if dtype is not None else (dt is _F32 or dt is _F64)) \
                and _finite_flat(x.ravel()):
            return x
    a = x if type(x) is np.ndarray else _as_array(x, name)
    if kind == "f":
        if a.dtype.kind not in "fiu":                    # (bool is kind "b", complex "c")
            raise TypeError(f"{name}: expected a real-valued array, got dtype {a.dtype}")
        if dtype is None and a.dtype.kind == "f" and a.dtype not in FLOAT_DTYPES:
            native = a.dtype.newbyteorder("=")           # big-endian float32 stays float32;
            dtype = native if native in FLOAT_DTYPES else np.float64   # float16: float64
        given = a
        if dtype is not None and a.dtype != dtype:
            with np.errstate(over="ignore"):
                a = a.astype(dtype)
        if a.dtype.kind == "f" and not _all_finite(a):
            bad = int(np.size(a) - np.isfinite(a).sum())
            lost = bad - int(np.size(given) - np.isfinite(given).sum()) if given.dtype.kind == "f" else bad
            if lost:                                     # finite, but too large for ``dtype``
                raise ValueError(f"{name}: expected values within +-{np.finfo(a.dtype).max:.4g} "
                                 f"(the range of {a.dtype}), got {lost} beyond it")
            raise ValueError(f"{name}: expected finite values, got {bad} NaN/Inf entries")
        return a
    if kind == "i":
        if a.dtype.kind not in "iu":
            if a.dtype.kind == "f" and a.size and np.isfinite(a).all() and (a == np.round(a)).all():
                raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype} "
                                f"(convert with .astype(int))")
            raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype}")
        if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name}: expected integers below 2**63, got {a.max()}")
        return a.astype(np.int64, copy=False)
    raise AssertionError(kind)


def sequence(x, name="x", dtype=None, ndim=3):
    """A time-major sequence ``(T, B, F)`` from an array or a list of ``T`` arrays ``(B, F)``.

    Returns ``(array, was_list)`` so that a caller can answer in the same kind it was given.
    """
    was_list = isinstance(x, (list, tuple))
    if was_list:
        if len(x) == 0:
            raise ValueError(f"{name}: expected a non-empty list of (B, F) arrays, got an empty list")
        steps = [finite_array(s, f"{name}[{t}]", dtype=dtype) for t, s in enumerate(x)]
        shapes = {s.shape for s in steps}
        if len(shapes) != 1 or steps[0].ndim != ndim - 1:
            raise ValueError(f"{name}: expected a list of {ndim - 1}-D arrays of one shape, "
                             f"got shapes {sorted(shapes)}")
        a = np.stack(steps)
    else:
        a = finite_array(x, name, dtype=dtype)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array (T, B, F), got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name}: expected non-empty dimensions, got shape {a.shape}")
    return a, was_list


def lengths(v, T, B, name="lengths"):
    """``None`` or an int array ``(B,)`` with ``1 <= lengths[b] <= T``, as a new int64 array:
    a module keeps it for its backward, so the caller may reuse its own array meanwhile."""
    if v is None:
        return None
    a = finite_array(v, name, kind="i")
    if a.shape != (B,):
        raise ValueError(f"{name}: expected shape ({B},) to match the batch, got {a.shape}")
    a = np.array(a, dtype=np.int64)                      # a copy, C-contiguous
    if a.size:
        lo, hi = int_range(a)
        if lo < 1 or hi > T:
            raise ValueError(f"{name}: expected values in [1, {T}] (T = {T}), got min {lo}, max {hi}")
    return a


def for_kernel(a):
    """``a`` as the kernels' ``*_unchecked`` functions take it, C-contiguous and writable: ``a``
    itself where it is, else a C-order copy. A layer calls them on what it has checked; a
    Parameter's array may have any layout, an input or a gradient any layout and be read-only
    (a memory-mapped file), and Numba would compile a kernel once more for such an array type
    (seconds), as the public kernel functions' own checks avoid by copying."""
    f = a.flags
    return a if f.c_contiguous and f.writeable else np.array(a, order="C")


def same_shape(a, expected_shape, name):
    if a.shape != tuple(expected_shape):
        raise ValueError(f"{name}: expected shape {tuple(expected_shape)}, got {a.shape}")
    return a


def flag(v, name):
    """``v`` as a bool; TypeError naming ``name`` unless it is True or False."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {v!r}")
    return bool(v)
