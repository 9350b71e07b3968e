"""Small helpers shared by the fast CPU kernels (``lstm.py``, ``gru.py``, ``rnn.py``).

Shape key: T = time steps, B = batch, I = input features, H = hidden units, K = any width.

Two kinds of helpers live here:

* Numba-compiled scalar/array helpers used *inside* ``@njit`` cores:
  ``sigmoid`` (numerically stable logistic) and ``tanh``, both SIMD-friendly (see below),
  ``dot_into`` (a matrix product by BLAS into a given array: Numba's ``np.dot(a, b, out)``;
  ``dot_into_views`` also takes column windows of a matrix, without copying them) and
  ``flip_valid`` (the time flip that turns a ``reverse=True`` run into a forward-in-time one).
* Plain-Python argument preparation used by the kernels' Python wrappers *before* a core is
  called: ``as_float_array``, ``as_lengths``, ``init_state``, ``state_or_zeros``, ``as_flag``,
  ``check_cache`` (``bad_cache`` is its error, which ``reference.py`` raises too). They make
  every array C-contiguous in one dtype, so the ``@njit`` cores are compiled for exactly two
  signatures (float32, float64) and ``dot_into`` inside them never copies; and they turn bad
  input into a ``ValueError``/``TypeError`` that names the argument instead of a Numba typing
  error. They look at types and shapes only, never at values (no pass over an array).

Caching: ``sigmoid``/``tanh``/``exp_expm1`` are inlined into the kernels' cores, whose cached
machine code carries a copy of them; an edit here makes every cached kernel stale
(``_cache_stamp``: Numba alone keys a function on its own file).

"Step order": a ``reverse=True`` layer runs sequence ``b`` from its last valid step
``lengths[b] - 1`` back to 0. Flipping each sequence's valid prefix in time,

    x_s[s, b] = x[lengths[b] - 1 - s, b]    for s < lengths[b]      (padding stays in place)

turns that into an ordinary forward-in-time run over ``x_s``; in step order, step ``s`` of
sequence ``b`` is valid exactly when ``s < lengths[b]``, for both directions. The flip is its
own inverse, so the same function gathers inputs into step order and scatters results back.
"""

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["sigmoid", "tanh", "exp_expm1", "dot_into", "dot_into_views", "copy_row", "flip_valid",
           "as_float_array", "as_lengths", "init_state", "state_or_zeros", "as_flag", "check_cache",
           "bad_cache"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES


# Why not math.exp / math.tanh: since Numba 0.62 there is no SVML, so LLVM cannot vectorize
# loops that call them and every element pays a scalar libm call (~15-20 ns). The functions below
# are plain arithmetic plus one bit trick, so a loop over them compiles to SIMD code (~1.3 ns per
# element in float32, ~1.9 ns in float64), within 2.7 ulp of the exact value (mean 0.2-0.5
# ulp; measured on 2M points in [-30, 30], in both precisions; libm's are within ~1).
# Each works in its argument's own precision. ``error_model="numpy"`` is needed for
# vectorization: Numba's default ("python") adds a ZeroDivisionError check to every division.
# Use the same option on any @njit loop that calls them, and ``fastmath={"contract"}`` too: it
# lets LLVM fuse the polynomials' multiply-adds into FMA instructions (~1.1 -> ~0.8 ns per
# float32 sigmoid on an AMD EPYC, the same accuracy), which Numba's strict default forbids.

@intrinsic
def _pow2(typingctx, k):
    """``2.0 ** k`` built from its IEEE-754 bits: the biased exponent shifted into place
    (unlike ``math.ldexp``, this vectorizes). int32 k in [-126, 127] gives a float32,
    int64 k in [-1022, 1023] a float64; k = -127 (-1023) gives exactly 0 (all bits zero).
    """
    if k == types.int32:
        ity, fty, bias, shift, result = ir.IntType(32), ir.FloatType(), 127, 23, types.float32
    elif k == types.int64:
        ity, fty, bias, shift, result = ir.IntType(64), ir.DoubleType(), 1023, 52, types.float64
    else:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.shl(builder.add(args[0], ir.Constant(ity, bias)), ir.Constant(ity, shift))
        return builder.bitcast(bits, fty)

    return result(k), codegen


# Both versions: exp(x) = 2^n e^r with n = round(x / ln 2) and |r| <= ln(2)/2 (Cody-Waite: ln 2 =
# LN2_HI + LN2_LO where LN2_HI has trailing zero bits, so n * LN2_HI is exact), q = e^r - 1 from
# its Taylor series by Horner's rule, then exp = 2^n (1 + q) and expm1 = (2^n - 1) + 2^n q, which
# keeps full precision even for tiny x. Arguments are clamped at -88 in float32 (-709 in
# float64), where n = -127 (-1023): 2^n built from its bits is then exactly 0, so below the
# clamp exp is 0 and expm1 -1 at no extra cost (subnormal results only between the smallest
# normal one, e^-87.34, and e^-87.68; they would slow float32 loops down if common). An earlier
# clamp at -87.33 kept 2^n normal and returned ~1e-38 down to -inf instead of 0: sigmoid(-inf)
# and its derivative were then not 0, and at x = 3e38 a weight gradient came out 2.7 where the
# true one is 0. NaN stays NaN.

_F = np.float32
_LOG2E_32, _LN2_HI_32, _LN2_LO_32 = _F(1.4426950408889634), _F(0.693359375), _F(-2.12194440e-4)
_HALF_32, _ONE_32, _MIN_32 = _F(0.5), _F(1.0), _F(-88.0)       # n = -127 there: 2^n = 0
_C7, _C6, _C5, _C4, _C3 = _F(1 / 5040), _F(1 / 720), _F(1 / 120), _F(1 / 24), _F(1 / 6)

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


@njit(cache=True, error_model="numpy")
def _exp_expm1_f32(x):
    """float32 ``(exp(x), expm1(x))`` for x <= 0: Taylor to r^7 (remainder < 2e-8 relative)."""
    v = _MIN_32 if x < _MIN_32 else x        # (NaN < anything is False: NaN stays NaN)
    n = np.floor(v * _LOG2E_32 + _HALF_32)     # a float32 holding an integer
    r = (v - n * _LN2_HI_32) - n * _LN2_LO_32
    q = ((((((_C7 * r + _C6) * r + _C5) * r + _C4) * r + _C3) * r + _HALF_32) * r + _ONE_32) * r
    p = _pow2(np.int32(n))                   # 2^n; 0 at the clamp
    return p + p * q, (p - _ONE_32) + p * q


@njit(cache=True, error_model="numpy")
def _exp_expm1_f64(x):
    """float64 ``(exp(x), expm1(x))`` for x <= 0: Taylor to r^13 (remainder < 1e-17)."""
    v = -709.0 if x < -709.0 else float(x)  # n = -1023 there: 2^n = 0
    n = np.floor(v * _LOG2E + 0.5)
    r = (v - n * _LN2_HI) - n * _LN2_LO
    q = 1.0 / 6227020800.0                   # 1/13!, then Horner down to 1/1!
    q = q * r + 1.0 / 479001600.0
    q = q * r + 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r + 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r + 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r + 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r + 1.0 / 6.0
    q = q * r + 0.5
    q = q * r + 1.0
    q = q * r                                # e^r - 1
    p = _pow2(np.int64(n))                   # 2^n; 0 at the clamp
    return p + p * q, (p - 1.0) + p * q


def exp_expm1(x):
    """``(exp(x), exp(x) - 1)`` for a scalar ``x <= 0``, in x's precision, SIMD-friendly.

    Usable inside ``@njit`` code only: Numba picks ``_exp_expm1_f32`` or ``_exp_expm1_f64`` by
    the argument's type (the ``overload`` below).
    """
    raise TypeError("exp_expm1 is a Numba-only function; call it from @njit code")


@overload(exp_expm1)
def _exp_expm1_overload(x):
    if x == types.float32:
        return _exp_expm1_f32.py_func
    if isinstance(x, (types.Float, types.Integer)):
        return _exp_expm1_f64.py_func
    return None


@njit(cache=True, error_model="numpy", inline="always")
def sigmoid(z):
    """Logistic ``1 / (1 + exp(-z))`` of a scalar, stable for any ``z``; returns ``z``'s type.

    Only ``e = exp(-|z|) <= 1`` is ever evaluated, so nothing overflows: for ``z >= 0`` it returns
    ``1 / (1 + e)``, for ``z < 0`` the equal ``e / (1 + e)``, which keeps full relative
    precision for very negative ``z`` (where ``1 - 1/(1 + e)`` would round to 0). Constants are
    made in z's type (``one``): a bare ``1`` would promote float32 to float64 in Numba.
    """
    one = type(z)(1)
    e, _ = exp_expm1(-abs(z))
    s = one / (one + e)
    return s if z >= 0 else e * s


@njit(cache=True, error_model="numpy", inline="always")
def tanh(z):
    """Hyperbolic tangent of a scalar, vectorizable; returns ``z``'s type.

    With ``e = exp(-2|z|)`` and ``u = expm1(-2|z|) = e - 1``: ``tanh(|z|) = (1 - e) / (1 + e)
    = -u / (1 + e)``, accurate for small |z| too because u comes from ``exp_expm1`` without
    cancellation. The denominator is ``1 + e`` from |z| = 0.5 up and the equal ``2 + u`` below:
    float32, against float64's tanh, at most 1.5 ulp from |z| = 2 (where ``1 - tanh^2``, the
    backward's factor, magnifies the error), 2.4 ulp below; ``2 + u`` throughout had 2.5 ulp
    at |z| of 2 to 5, ``1 + e`` throughout 2.2 below 0.001.
    """
    a = abs(z)
    e, u = exp_expm1(-(a + a))
    d = (type(z)(1) + e) if a >= type(z)(0.5) else (type(z)(2) + u)
    t = abs(u) / d                           # abs(u) = -u, but +0.0 (not -0.0) at z = 0
    return t if z >= 0 else -t


try:                                                     # Numba's code generator for np.dot
    from numba.np.linalg import dot_3_mm as _dot_3_mm, ensure_blas as _ensure_blas
except ImportError:                                      # (should a later Numba move it)
    _dot_3_mm = None


def _dot_operand(t, layouts):
    return isinstance(t, types.Array) and t.ndim == 2 and t.layout in layouts


@intrinsic
def _dot_into_blas(typingctx, a, b, out):
    if not (_dot_operand(a, "CF") and _dot_operand(b, "CF") and _dot_operand(out, "C")
            and a.dtype == b.dtype == out.dtype):
        return None

    def codegen(context, builder, sig, args):
        _ensure_blas()
        return _dot_3_mm(context, builder, sig, args)   # shape checks, then xgemm (or xgemv)

    return out(a, b, out), codegen


@njit(cache=True, nogil=True)
def _dot_into_numba(a, b, out):
    np.dot(a, b, out)


# ``dot_into(a, b, out)``: ``out[:, :] = a @ b`` for 2-D arrays of one dtype (C- or
# Fortran-ordered, such as a transposed view; ``out`` C-contiguous), by BLAS, exactly as Numba's
# ``np.dot(a, b, out)``; from @njit code only.
#
# Why not ``np.dot`` in the cores: Numba compiles its ``np.dot`` again, as a small function of
# its own, for every set of compile options it is called under (the cores' ``fastmath``,
# ``error_model``, ``nogil``...): the seed model's first training step compiled it 7 times for
# 3 layouts, 0.1-0.2 s each on the machine of ``benchmarks/results/cpu.md``. ``_dot_into_blas``
# calls Numba's own code generator for that product in place, which compiles nothing of its own.
dot_into = _dot_into_blas if _dot_3_mm is not None else _dot_into_numba


try:                                                     # Numba's BLAS entry point and helpers
    from numba.core import cgutils
    from numba.np.arrayobj import make_array
    from numba.np.linalg import (check_blas_return as _check_blas_return, check_c_int as
                                 _check_c_int, get_blas_kind as _get_blas_kind,
                                 make_constant_slot as _constant_slot)
except ImportError:                                      # (should a later Numba move them)
    make_array = None


@njit(cache=True)
def _unit_stride(a):
    """Whether 2-D ``a`` has unit stride along one axis and room for its rows (or columns)
    along the other: a C- or Fortran-ordered array, or a window of one (``a[:, j0:j1]``)."""
    n = a.itemsize
    return ((a.strides[1] == n and a.strides[0] >= max(a.shape[1], 1) * n)
            or (a.strides[0] == n and a.strides[1] >= max(a.shape[0], 1) * n))


@njit(cache=True)
def _check_views(a, b, out):
    m, k = a.shape
    if k != b.shape[0] or out.shape[0] != m or out.shape[1] != b.shape[1]:
        raise ValueError("dot_into_views: incompatible array sizes")
    if not (_unit_stride(a) and _unit_stride(b)):
        raise ValueError("dot_into_views: an operand is not unit-stride along either axis")


@intrinsic
def _dot_into_views_blas(typingctx, a, b, out):
    if not (_dot_operand(a, "CFA") and _dot_operand(b, "CFA") and _dot_operand(out, "C")
            and a.dtype == b.dtype == out.dtype and a.dtype in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        _ensure_blas()
        context.compile_internal(builder, lambda a, b, out: _check_views(a, b, out),
                                 types.none(*sig.args), args)
        dtype = sig.args[0].dtype
        x, y, z = (make_array(t)(context, builder, v) for t, v in zip(sig.args, args))
        m, k = cgutils.unpack_tuple(builder, x.shape)
        n = cgutils.unpack_tuple(builder, y.shape)[1]
        for size in (m, k, n):                           # (BLAS's int: as Numba's np.dot checks)
            _check_c_int(context, builder, size)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(dtype)))
        one = context.get_constant(types.intp, 1)
        char = ir.IntType(8)

        def operand(arr):
            # BLAS is column-major: a row-major operand (unit stride along axis 1) is read
            # as it lies ('n', its row stride the leading dimension), a column-major one
            # transposed ('t', its column stride)
            rows, cols = cgutils.unpack_tuple(builder, arr.shape)
            s0, s1 = cgutils.unpack_tuple(builder, arr.strides)
            by_rows = builder.icmp_signed("==", s1, itemsize)
            trans = builder.select(by_rows, ir.Constant(char, ord("n")),
                                   ir.Constant(char, ord("t")))
            ld = builder.select(by_rows, builder.sdiv(s0, itemsize), builder.sdiv(s1, itemsize))
            least = builder.select(by_rows, cols, rows)              # (BLAS: ld >= max(1, .))
            least = builder.select(builder.icmp_signed("<", least, one), one, least)
            ld = builder.select(builder.icmp_signed("<", ld, least), least, ld)
            return trans, ld, builder.bitcast(arr.data, cgutils.voidptr_t)

        # out (m, n) row-major is out^T (n, m) column-major = y^T x^T: BLAS's A is y, its B is x
        transa, lda, data_a = operand(y)
        transb, ldb, data_b = operand(x)
        ldc = builder.select(builder.icmp_signed("<", n, one), one, n)
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char] + [cgutils.intp_t] * 3
                               + [cgutils.voidptr_t, cgutils.voidptr_t, cgutils.intp_t,
                                  cgutils.voidptr_t, cgutils.intp_t, cgutils.voidptr_t,
                                  cgutils.voidptr_t, cgutils.intp_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        alpha = builder.bitcast(_constant_slot(context, builder, dtype, 1.0), cgutils.voidptr_t)
        beta = builder.bitcast(_constant_slot(context, builder, dtype, 0.0), cgutils.voidptr_t)
        kind = ir.Constant(char, ord(_get_blas_kind(dtype)))
        res = builder.call(fn, (kind, transa, transb, n, m, k, alpha, data_a, lda, data_b, ldb,
                                beta, builder.bitcast(z.data, cgutils.voidptr_t), ldc))
        _check_blas_return(context, builder, res)
        return context.get_dummy_value()

    return types.none(a, b, out), codegen


@njit(cache=True, nogil=True)
def _dot_into_views_numba(a, b, out):
    _check_views(a, b, out)
    np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b), out)


# ``dot_into_views(a, b, out)``: ``dot_into`` for operands that may also be windows of a C- or
# Fortran-ordered array (``m[:, j0:j1]`` and its transpose: unit stride along one axis), passed
# to BLAS as they lie, with their row (or column) stride as the leading dimension: no copy.
# ``out`` C-contiguous; float32 or float64; a ValueError for other strides or sizes. (Numba's
# own ``np.dot`` copies such a window first.) From @njit code only.
dot_into_views = _dot_into_views_blas if make_array is not None else _dot_into_views_numba


@njit(cache=True, inline="always")
def copy_row(src, dst):
    """``dst[:] = src`` for two 1-D rows of one length, as a plain loop (LLVM turns it into
    vector moves). Why not the slice assignment: Numba compiles an array-to-slice assignment
    through its general broadcasting machinery, which took ~4 s the first time in a process
    (measured on a 2-core AMD EPYC), all of it added to a cold start."""
    for l in range(src.shape[0]):
        dst[l] = src[l]


@njit(cache=True, inline="always")
def zero_row(dst):
    """``dst[:] = 0`` for a 1-D row, as a plain loop, for the same reason as ``copy_row``: a
    slice assignment of a scalar also goes through the broadcasting code (the GRU's backward
    core, with three such fills and one array-to-slice copy, compiled in ~4.4 s; with loops
    in their place ~2.2 s). The tiled kernels keep their slice fills: there this loop, inlined
    into the padding branch of ``lstm_tiled``'s forward tile, made the tile's hot path ~5 %
    slower (in-process A/B, 15 rounds), and their cores compile only for larger layers."""
    for l in range(dst.shape[0]):
        dst[l] = 0


@njit(cache=True, inline="always")
def column_sums(a, out):
    """``out[k] = a[:, k].sum()`` for a 2-D ``a`` (rows, K), summed in float64, then stored in
    ``out``'s dtype. A bias gradient is such a sum over all T*B rows: a float32 running sum
    loses ~1e-8 relative per row (1e-3 at 10^5 rows), a float64 one nothing that shows."""
    K = a.shape[1]
    acc = np.zeros(K, np.float64)
    for r in range(a.shape[0]):
        for k in range(K):
            acc[k] += a[r, k]
    for k in range(K):
        out[k] = acc[k]


@njit(cache=True)
def flip_valid(a, lengths, out):
    """Reverse each sequence's valid prefix in time: ``out[s, b] = a[lengths[b] - 1 - s, b]``.

    a, out: (T, B, K) C-contiguous, distinct arrays   lengths: (B,) int64, 1 <= lengths[b] <= T
    Padding steps ``s >= lengths[b]`` are copied unchanged. Applying it twice is the identity,
    so it both gathers into step order and scatters back. Returns ``out``.
    """
    T, B, K = a.shape
    for b in range(B):
        L = lengths[b]
        for s in range(T):
            t = L - 1 - s if s < L else s
            for k in range(K):
                out[s, b, k] = a[t, b, k]
    return out


# ---------------------------------------------------------------------------------------------
# Argument preparation (plain Python, called by the kernels' wrappers before any core runs)
# ---------------------------------------------------------------------------------------------

def as_float_array(a, name, dtype=None, shape=None, writable=True):
    """``a`` as a writable C-contiguous float32/float64 array (no copy when it already is one).
    A read-only one is copied (unless ``writable=False``: an upload to the GPU reads it as it
    is): Numba types it apart (a readonly array), so passing it on would compile every kernel it
    reaches once more (~2 s for a backward, on each new machine).

    dtype None: keep ``a``'s own floating dtype (TypeError if it is not float32/float64);
    otherwise cast to ``dtype`` (the dtype of ``x``: one kernel call runs in one precision).
    shape: the expected shape, a tuple; ValueError naming ``name`` if it differs.
    """
    if type(a) is np.ndarray and a.ndim and a.flags.c_contiguous and a.flags.writeable:
        # The common case, an array that is already right, answered in ~0.2 us instead of
        # ~0.34 (a wrapper checks every argument on every call; at the seed shapes a training
        # step makes 14 such calls). The dtypes are compared by identity: NumPy's float32 and
        # float64 dtypes are singletons, and any other one (a byte-swapped float32, a dtype
        # given as a type) takes the full path below, which decides as before.
        dt = a.dtype
        if ((dt is dtype) if dtype is not None else (dt is _F32 or dt is _F64)) \
                and (shape is None or a.shape == shape):
            return a
    if isinstance(a, np.ma.MaskedArray):                 # (np.asarray would drop the mask)
        raise TypeError(f"{name}: expected a plain array, got a masked array (its mask would be "
                        f"ignored); fill it (.filled(0)) and pass lengths= for padding")
    try:
        arr = np.asarray(a)
    except ValueError as e:                              # a ragged nested list, say
        raise ValueError(f"{name}: expected an array or nested lists of one shape, got a "
                         f"{type(a).__name__} that NumPy cannot make one array of ({e})") from None
    if dtype is None:
        dtype = arr.dtype
        if dtype not in FLOAT_DTYPES:
            if dtype.kind == "f" and dtype.newbyteorder("=") in FLOAT_DTYPES:
                dtype = dtype.newbyteorder("=")          # (">f4", big-endian: as float32)
            else:
                raise TypeError(f"{name}: expected a float32 or float64 array, got dtype "
                                f"{arr.dtype}")
    elif arr.dtype.kind not in "fiu":                    # real numbers only (no bool, complex)
        raise TypeError(f"{name}: expected a real array, got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=dtype)
    if arr.ndim == 0:                                    # (ascontiguousarray made it (1,))
        out = out.reshape(())
    return out if out.flags.writeable or not writable else out.copy()


def as_lengths(lengths, T, B):
    """Sequence lengths as a new C-contiguous int64 array of shape (B,); None means all T. A
    copy: the cache keeps it, and the backward's loops index with it, so a caller refilling its
    own array before the backward must not move them out of bounds.

    TypeError naming ``lengths`` unless its entries are integers (float or bool dtypes
    included), ValueError unless every one has 1 <= lengths[b] <= T.
    """
    if lengths is None:
        arr = np.empty(B, np.int64)
        arr.fill(T)                                      # (np.full costs ~4x this at tiny B)
        return arr
    if isinstance(lengths, np.ma.MaskedArray):           # (np.asarray would drop the mask)
        raise TypeError("lengths: expected a plain array, got a masked array (its mask would be "
                        "ignored)")
    arr = np.asarray(lengths)
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer array, got dtype {arr.dtype}")
    if B and (arr.min() < 1 or arr.max() > T):              # (in its own dtype: no wrapping)
        raise ValueError(f"lengths: expected 1 <= lengths[b] <= T={T}, got min {arr.min()}, "
                         f"max {arr.max()}")
    return np.array(arr, dtype=np.int64)                 # (a copy)


def init_state(dst, a, name):
    """``dst[...] = a`` (checked against ``dst``'s shape, cast to its dtype), or 0 when None."""
    if a is None:
        dst.fill(0)
    else:
        dst[...] = as_float_array(a, name, dst.dtype, dst.shape)


def state_or_zeros(a, shape, dtype, name):
    """A FRESH C-contiguous array of ``shape`` and ``dtype``: a copy of ``a``, or zeros if None.

    Used for initial states and upstream gradients; the copy lets a core update it in place
    without touching the caller's array.
    """
    if a is None:
        return np.zeros(shape, dtype)
    return as_float_array(a, name, dtype, shape).copy()


def as_flag(value, name):
    """``value`` as a Python bool, for a flag such as ``reverse``: True or False (Python's or
    NumPy's bool), or the ints 0 and 1.

    Anything else is a TypeError naming ``name``, where ``bool(value)`` would have guessed:
    ``bool("False")`` is True, and an array of several entries raises NumPy's own error.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {value!r}")


def check_cache(cache, forward, gates, size, tiled_size=None):
    """Whether ``cache`` came from the tiled kernel; TypeError naming ``cache`` unless it is a
    cache that ``forward`` (the cell's forward function, named in the message) returned.

    The caches are tuples: the serial kernel's has ``size`` items and begins
    ``(x_s, W_ih, W_hh, lengths, reverse, hs, ...)``; the tiled kernel's (``tiled_size`` items;
    None: the cell has none) ``("tiled", x_p, W_ih, W_hh, lengths, lengths_p, reverse, hs, ...)``,
    with x_s, x_p (T, ., .) and hs (T+1, ., .). The check reads types, lengths and shapes only
    (nothing of the arrays' values), yet takes no other cell's cache: their lengths differ, or
    W_hh has another number of rows (``gates`` H: 4H LSTM, 3H GRU, H RNN; H >= 1), or (the
    reference kernels' caches) the item where hs would be is not (T+1, ., .).
    """
    tiled = (tiled_size is not None and type(cache) is tuple and len(cache) == tiled_size
             and isinstance(cache[0], str) and cache[0] == "tiled")
    if tiled:
        x, W_hh, hs = cache[1], cache[3], cache[7]
    elif type(cache) is tuple and len(cache) == size:
        x, W_hh, hs = cache[0], cache[2], cache[5]
    else:
        x = W_hh = hs = None
    if not (isinstance(x, np.ndarray) and isinstance(W_hh, np.ndarray)
            and isinstance(hs, np.ndarray) and x.ndim == hs.ndim == 3 and W_hh.ndim == 2
            and W_hh.shape[0] == gates * W_hh.shape[1] and hs.shape[0] == x.shape[0] + 1):
        raise bad_cache(cache, forward, _maker(cache, forward))
    return tiled


def checked_upstream(cache, forward, gates, size, tiled_size, dy, **dstates):
    """A backward's arguments checked: ``cache`` (``check_cache``), then ``dy`` (T, B, H) and
    each upstream grad of a final state in ``dstates`` (B, H), in the cache's dtype (None stays
    None). Returns ``[dy, *dstates' values]``."""
    check_cache(cache, forward, gates, size, tiled_size)
    _, T, B, H, dt = cache_dims(cache)
    return [None if dy is None else as_float_array(dy, "dy", dt, (T, B, H))] + [
        None if a is None else as_float_array(a, name, dt, (B, H)) for name, a in dstates.items()]


def cache_dims(cache):
    """``(tiled, T, B, H, dtype)`` of a recurrent kernel's cache (one that ``check_cache``
    takes): the tiled kernels' caches ``("tiled", x_p, W_ih, W_hh, lengths, ...)`` hold
    x_p (T, ., .), lengths (B,) and W_hh (G H, H) and are float32; the serial ones
    ``(x_s, W_ih, W_hh, ...)`` x_s (T, B, I), in their dtype."""
    if isinstance(cache[0], str):
        return True, cache[1].shape[0], cache[4].shape[0], cache[3].shape[1], np.float32
    return False, cache[0].shape[0], cache[0].shape[1], cache[2].shape[1], cache[0].dtype


_CELL_OF_GATES = {4: "lstm_forward", 3: "gru_forward", 1: "rnn_forward"}   # W_hh rows / H


def _maker(cache, forward):
    """Which other cell's forward ``cache`` looks like the cache of ("gru_forward's (W_hh of 3H
    rows)"): W_hh, where caches keep it, has that cell's number of gates; or None."""
    if type(cache) is not tuple or len(cache) < 4:
        return None
    W_hh = cache[3] if isinstance(cache[0], str) else cache[2]
    if not (isinstance(W_hh, np.ndarray) and W_hh.ndim == 2 and W_hh.shape[1]):
        return None
    k = W_hh.shape[0] / W_hh.shape[1]
    other = _CELL_OF_GATES.get(k)
    return None if other is None or other in forward else f"{other}'s (W_hh of {int(k)}H rows)"


def bad_cache(cache, forward, maker=None):
    """The TypeError for a ``cache`` that ``forward`` (named in the message) did not return;
    ``maker``: which other cell's forward seems to have made it, if one does (``_maker``)."""
    got = (f"a tuple of {len(cache)} items" if isinstance(cache, tuple)
           else "None" if cache is None else f"a {type(cache).__name__}")
    if maker is not None:
        got += f" that looks like {maker}"
    return TypeError(f"cache: expected the cache returned by {forward}, got {got}")


# -- subnormal numbers ------------------------------------------------------------------------
# Float32 numbers below 2^-126 (subnormals) take a microcode path on Intel CPUs: on the Xeon of
# benchmarks/results/cpu.md every kernel ran 18-140x slower on them (``benchmarks.denormals``),
# and they are not exotic: a gradient that vanishes back through a long sequence becomes one
# (an LSTM's backward with the loss at the last step, (T, 32, 64, 128): 72 us a step at T = 100,
# 850 at T = 2000, where 16 % of dx was subnormal; with the flush, 79). So the compiled cores
# run with the CPU's flush-to-zero and denormals-are-zero modes on (MXCSR bits FTZ and DAZ, as
# TensorFlow's thread pools do, and PyTorch's ``torch.set_flush_denormal(True)``): a subnormal
# result is 0, a subnormal input reads as 0. Each core turns them on in the thread it runs on
# (each team worker in its own) and restores the thread's own setting before it returns, so
# nothing outside the kernels changes. BLAS's own worker threads keep theirs: a product that
# BLAS shares out over its threads still pays on a subnormal operand that the kernels did not
# make (an input x given so; the states, outputs and gradients they make never are).
# x86-64 only; elsewhere both calls do nothing.

_MXCSR_FTZ_DAZ = 0x8040                  # bit 15 flush-to-zero, bit 6 denormals-are-zero
_X86 = platform.machine().lower() in ("x86_64", "amd64")
_BYTE_P = ir.IntType(8).as_pointer()


def _mxcsr_intrinsic(builder, name):
    """LLVM's ``llvm.x86.sse.stmxcsr`` / ``ldmxcsr``: store / load MXCSR through an i8*."""
    return builder.module.declare_intrinsic(f"llvm.x86.sse.{name}", (),
                                            ir.FunctionType(ir.VoidType(), [_BYTE_P]))


@intrinsic
def _mxcsr(typingctx):
    """The calling thread's MXCSR register (x86-64), as an int32."""
    def codegen(context, builder, sig, args):
        slot = builder.alloca(ir.IntType(32))
        builder.call(_mxcsr_intrinsic(builder, "stmxcsr"), [builder.bitcast(slot, _BYTE_P)])
        return builder.load(slot)
    return types.int32(), codegen


@intrinsic
def _set_mxcsr(typingctx, value):
    """Set the calling thread's MXCSR register (x86-64) to the int32 ``value``."""
    if value != types.int32:
        return None

    def codegen(context, builder, sig, args):
        slot = builder.alloca(ir.IntType(32))
        builder.store(args[0], slot)
        builder.call(_mxcsr_intrinsic(builder, "ldmxcsr"), [builder.bitcast(slot, _BYTE_P)])
        return context.get_dummy_value()
    return types.void(value), codegen


if _X86:
    @njit(cache=True, inline="always")
    def flush_subnormals():
        """Turn on FTZ and DAZ in this thread; returns its previous MXCSR for ``restore_fp``."""
        before = _mxcsr()
        _set_mxcsr(np.int32(before | _MXCSR_FTZ_DAZ))
        return before

    @njit(cache=True, inline="always")
    def restore_fp(before):
        """Put back the MXCSR ``flush_subnormals`` returned."""
        _set_mxcsr(before)
else:
    @njit(cache=True, inline="always")
    def flush_subnormals():
        return np.int32(0)

    @njit(cache=True, inline="always")
    def restore_fp(before):
        pass
