"""Matrix multiply for numba.cuda (there is no cuBLAS inside kernels), and cuBLAS where CuPy is.

    C = alpha * op(A) @ op(B) + beta * C          op(A): (M, K)   op(B): (K, N)   C: (M, N)

with ``op(X) = X`` or ``X.T`` chosen by ``trans_a`` / ``trans_b``. The RNN kernels use it for five
products:

    input projection     xW  = x  @ W_ih.T        (T*B, I)  x (4H, I)^T     trans_b
    recurrent product    R   = h  @ W_hh.T        (B, H)    x (4H, H)^T     trans_b
    backward recurrence  dh += dz @ W_hh          (B, 4H)   x (4H, H)       beta = 1
    weight gradients     dW  = dG.T @ x           (T*B, 4H)^T x (T*B, I)    trans_a
    input gradient       dx  = dG @ W_ih          (T*B, 4H) x (4H, I)

Three ways to compute it; ``gemm_device`` picks one per product:

1. **The classic tiled kernel** (``_gemm_kernel``; Kirk & Hwu, ch. 5): a ``TS x TS`` thread block
   computes one ``TS x TS`` tile of ``C``; it walks ``K`` in steps of ``TS``, each thread loading
   one element of ``op(A)`` and one of ``op(B)`` into shared memory, then every thread does
   ``TS`` multiply-adds out of shared memory. Two shared-memory loads per multiply-add: that,
   not arithmetic, is its limit (~5.5 TF/s float32 on an H200). Used for thin results (the
   per-step products at small batch), with ``TS`` = 4, 8 or 16 to waste few threads.
2. **The register-blocked kernel** (``_blocked_kernel``): the same walk over ``K``, but a
   16 x 16 thread block computes a 64 x 64 tile, each thread a 4 x 4 patch of it held in
   registers. Per step of ``K`` a thread loads 4 values of ``op(A)`` and 4 of ``op(B)`` from
   shared memory and does 16 multiply-adds with them: a quarter of the shared traffic per
   multiply-add. Used for results of at least 64 x 64 and 2^19 numbers (``tile_size``). On an
   H200 1.2-1.5x the classic kernel on the big products (its k-loop is not unrolled and the
   transposes are run-time branches; cuBLAS is 3.5-6.5x faster still).
3. **cuBLAS** (``Cublas``), when CuPy is installed: the big products (input projection, weight
   and input gradients) go to cuBLAS's sgemm / dgemm through CuPy's thin binding, on numba's
   arrays (pointers only, no copies), in full float32 (no TF32). 5-8x the classic kernel on an
   H200 (``benchmarks/results/gpu_h200.md``). ``RNNCORE_CUDA_GEMM`` (or ``set_backend``) chooses: ``auto`` (cuBLAS when CuPy is
   importable, for products of at least ``CUBLAS_MIN_WORK`` multiply-adds), ``cublas`` (the
   same, but an error if CuPy is missing), ``numba`` (never cuBLAS).

Both numba kernels load transposed operands with the thread index running along the operand's
contiguous axis (so global reads stay coalesced) and store them transposed into the tile; the
tiles have a padding column so that those transposed stores do not hit the same bank.
``beta == 0`` never reads ``C`` (it may be uninitialised memory).
"""
import math
import numbers
import os
import warnings
from functools import lru_cache

import numpy as np
from numba import cuda

from .._common import as_flag
from ._common import (SIMULATOR, ceil_div, empty, enter, float_dtype_of, is_device_array, launch,
                      overlaps, require_cuda, to_device)

__all__ = ["matmul", "tile_size", "TILE_SIZES", "backend", "set_backend"]

#: Tile edges of the classic kernel; ``tile_size`` picks one per problem.
TILE_SIZES = (4, 8, 16)
#: The register-blocked kernel's tile edge (``tile=BLOCKED`` asks for it), its threads per
#: block edge and its step along K. Each thread computes BLOCKED // BLOCK_THREADS = 4 rows
#: times 4 columns of the tile.
BLOCKED, BLOCK_THREADS, BLOCK_K = 64, 16, 16
PER_THREAD = BLOCKED // BLOCK_THREADS


#: The register-blocked kernel is used for results of at least this many numbers (2^19: 128
#: tiles of 64 x 64, about one per multiprocessor of a big GPU); smaller results run faster as
#: more, smaller blocks of the classic kernel.
BLOCKED_MIN_RESULT = 1 << 19


def tile_size(M, N):
    """Tile edge for an ``(M, N)`` result: the register-blocked 64 when the result fills enough
    such tiles, else 16 (256 threads) unless the result is too thin for those too, e.g. the
    per-step ``(B, 4H)`` product at batch 1-4, where 4 or 8 wastes fewer threads.
    """
    m = min(M, N)
    if m >= BLOCKED and M * N >= BLOCKED_MIN_RESULT:
        return BLOCKED
    return 16 if m >= 16 else (8 if m >= 8 else 4)


@lru_cache(maxsize=None)
def _gemm_kernel(dtype, TS):
    """The tiled kernel for one dtype and one tile edge ``TS`` (both compile-time constants)."""
    dtype = np.dtype(dtype)
    ZERO = dtype.type(0)
    TS1 = TS + 1                  # padded tile row; a shared array's shape must be constants

    @cuda.jit
    def gemm(A, B, C, alpha, beta, trans_a, trans_b):
        sA = cuda.shared.array((TS, TS1), dtype)     # sA[r, k] = op(A)[row0 + r, k0 + k]
        sB = cuda.shared.array((TS, TS1), dtype)     # sB[k, c] = op(B)[k0 + k, col0 + c]
        tx = cuda.threadIdx.x                           # column inside the tile
        ty = cuda.threadIdx.y                           # row inside the tile
        row0 = cuda.blockIdx.y * TS
        col0 = cuda.blockIdx.x * TS
        M = C.shape[0]
        N = C.shape[1]
        K = A.shape[0] if trans_a else A.shape[1]
        acc = ZERO
        for k0 in range(0, K, TS):
            # op(A) tile. A is (K, M) when transposed: let tx run along M, A's contiguous axis.
            if trans_a:
                k = k0 + ty
                r = row0 + tx
                sA[tx, ty] = A[k, r] if (k < K and r < M) else ZERO
            else:
                k = k0 + tx
                r = row0 + ty
                sA[ty, tx] = A[r, k] if (r < M and k < K) else ZERO
            # op(B) tile. B is (N, K) when transposed: let tx run along K, B's contiguous axis.
            if trans_b:
                k = k0 + tx
                c = col0 + ty
                sB[tx, ty] = B[c, k] if (c < N and k < K) else ZERO
            else:
                k = k0 + ty
                c = col0 + tx
                sB[ty, tx] = B[k, c] if (k < K and c < N) else ZERO
            cuda.syncthreads()
            for kk in range(TS):
                acc += sA[ty, kk] * sB[kk, tx]
            cuda.syncthreads()
        r = row0 + ty
        c = col0 + tx
        if r < M and c < N:
            if beta == ZERO:
                C[r, c] = alpha * acc
            else:
                C[r, c] = alpha * acc + beta * C[r, c]

    return gemm


@lru_cache(maxsize=None)
def _blocked_kernel(dtype):
    """The register-blocked kernel for one dtype: a 16 x 16 block computes a 64 x 64 tile of C.

    Thread (ty, tx) owns rows ``ty + 16 i`` and columns ``tx + 16 j`` of the tile (i, j < 4):
    spread out this way, the 16 threads of a half-warp read 16 neighbouring words of ``sB``
    (no bank conflict) and two words of ``sA`` (a broadcast).
    """
    dtype = np.dtype(dtype)
    ZERO = dtype.type(0)
    TM, NT, TK, P = BLOCKED, BLOCK_THREADS, BLOCK_K, PER_THREAD
    TM1 = TM + 1                  # padded: the transposed stores below then spread over banks
    LOADS = TM * TK // (NT * NT)  # elements of each operand's tile one thread loads per step: 4

    @cuda.jit(device=True)
    def load_tile(X, k_first, start, L, k0, K, e, s):
        """s[k, r] = Y[start + r, k0 + k] for the e-th element of a TK x TM tile, zero outside Y.

        Y is (L, K): X itself, or X.T when X is stored ``k_first`` as (K, L). Threads with
        neighbouring e read neighbouring addresses of X either way (coalesced). op(A) is Y for
        X = A (``k_first`` = trans_a); op(B) is the transpose of Y for X = B (``k_first`` =
        not trans_b), so the same tile layout, s[k, c] = op(B)[k0 + k, start + c], serves both.
        """
        if k_first:
            k = e // TM
            r = e % TM
            s[k, r] = X[k0 + k, start + r] if (k0 + k < K and start + r < L) else ZERO
        else:
            r = e // TK
            k = e % TK
            s[k, r] = X[start + r, k0 + k] if (start + r < L and k0 + k < K) else ZERO

    @cuda.jit
    def gemm_blocked(A, B, C, alpha, beta, trans_a, trans_b):
        sA = cuda.shared.array((TK, TM1), dtype)      # sA[k, r] = op(A)[row0 + r, k0 + k]
        sB = cuda.shared.array((TK, TM1), dtype)      # sB[k, c] = op(B)[k0 + k, col0 + c]
        acc = cuda.local.array((P, P), dtype)         # this thread's 4 x 4 patch of C
        a = cuda.local.array(P, dtype)
        b = cuda.local.array(P, dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * NT + tx
        row0 = cuda.blockIdx.y * TM
        col0 = cuda.blockIdx.x * TM
        M = C.shape[0]
        N = C.shape[1]
        K = A.shape[0] if trans_a else A.shape[1]
        for i in range(P):
            for j in range(P):
                acc[i, j] = ZERO
        for k0 in range(0, K, TK):
            for l in range(LOADS):
                e = tid + l * NT * NT                 # 0 .. TM*TK - 1: which element to load
                load_tile(A, trans_a, row0, M, k0, K, e, sA)
                load_tile(B, not trans_b, col0, N, k0, K, e, sB)
            cuda.syncthreads()
            for kk in range(TK):
                for i in range(P):
                    a[i] = sA[kk, ty + i * NT]
                    b[i] = sB[kk, tx + i * NT]
                for i in range(P):
                    for j in range(P):
                        acc[i, j] += a[i] * b[j]
            cuda.syncthreads()
        for i in range(P):
            r = row0 + ty + i * NT
            for j in range(P):
                c = col0 + tx + j * NT
                if r < M and c < N:
                    if beta == ZERO:
                        C[r, c] = alpha * acc[i, j]
                    else:
                        C[r, c] = alpha * acc[i, j] + beta * C[r, c]

    return gemm_blocked


# ---------------------------------------------------------------------------------------------
# cuBLAS through CuPy (optional)
# ---------------------------------------------------------------------------------------------

#: Products of at least this many multiply-adds go to cuBLAS when it is used. Around it either
#: way takes 0.03-0.06 ms on an H200 (4-17M multiply-adds, launch latency mostly); the big
#: products of a layer are 100-7000M.
CUBLAS_MIN_WORK = 1 << 24
BACKENDS = ("auto", "cublas", "numba")
_backend = os.environ.get("RNNCORE_CUDA_GEMM", "auto").strip().lower() or "auto"
_cublas = None             # the Cublas instance, once made; False where it cannot be


def set_backend(name):
    """Where ``gemm_device`` sends big products: "auto", "cublas" or "numba" (see module doc)."""
    global _backend, _cublas
    if name not in BACKENDS:
        raise ValueError(f"name: expected one of {BACKENDS}, got {name!r}")
    _backend = name
    if _cublas is False:   # try again: CuPy may have been installed since
        _cublas = None


def backend():
    """What the big products run on now: "cublas" or "numba"."""
    return "cublas" if _cublas_or_none() is not None else "numba"


def _cublas_or_none():
    """The Cublas instance if the backend setting and this machine allow it, else None."""
    global _cublas
    if _backend not in BACKENDS:
        raise ValueError(f"RNNCORE_CUDA_GEMM: expected one of {BACKENDS}, got {_backend!r}")
    if _backend == "numba" or SIMULATOR:
        if _backend == "cublas":
            raise RuntimeError("RNNCORE_CUDA_GEMM=cublas: cuBLAS needs a real GPU, and numba.cuda "
                               "is running on its simulator (NUMBA_ENABLE_CUDASIM=1)")
        return None
    if _cublas is None:
        try:
            _cublas = Cublas()
        except Exception as e:          # no CuPy (ImportError), or one that does not load here
            if _backend == "cublas":
                raise RuntimeError("RNNCORE_CUDA_GEMM=cublas: cuBLAS is reached through CuPy, which "
                                   f"is not importable ({type(e).__name__}: {e}); pip install "
                                   "cupy-cuda12x (or -13x) or set RNNCORE_CUDA_GEMM=numba") from e
            if not isinstance(e, ImportError):
                warnings.warn(f"kernels.cuda: CuPy is installed but does not load ({type(e).__name__}: "
                              f"{e}); the big products use numba's kernels", RuntimeWarning)
            _cublas = False
    return _cublas or None


def cublas_call(M, N, K, trans_a, trans_b, lda, ldb, ldc):
    """The column-major cuBLAS gemm that computes the row-major ``C = op(A) @ op(B)``.

    A row-major ``(r, c)`` array with row stride ``ld`` is, to cuBLAS, the column-major
    ``(c, r)`` matrix of its transpose. So cuBLAS computes ``C^T = op(B)^T @ op(A)^T``: B comes
    first, each operand transposed exactly when the caller's is, and m, n swap.
    Returns (trans of the first operand, trans of the second, m, n, k, ld first, ld second, ldc).
    """
    return bool(trans_b), bool(trans_a), N, M, K, ldb, lda, ldc


class Cublas:
    """cuBLAS's gemm on numba device arrays, through CuPy's binding of the cuBLAS library.

    One cuBLAS handle per CUDA context, bound to the legacy default stream, where numba's
    kernels run too, so cuBLAS's products and the kernels run in order. Host pointer mode: alpha
    and beta are read from host memory when the call is made.
    """

    def __init__(self):
        import cupy  # noqa: F401  (loads the CUDA libraries CuPy was built against)
        from cupy_backends.cuda.libs import cublas
        self.lib = cublas
        self.ops = (cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T)
        self.gemm = {np.dtype(np.float32): cublas.sgemm, np.dtype(np.float64): cublas.dgemm}
        self.handles = {}
        self.proven = False        # a call has worked in this process

    def handle(self):
        ctx = cuda.current_context()
        h = self.handles.get(id(ctx))
        if h is None:
            h = self.lib.create()
            self.lib.setStream(h, 0)
            self.lib.setPointerMode(h, self.lib.CUBLAS_POINTER_MODE_HOST)
            self.handles[id(ctx)] = h
        return h

    def __call__(self, A, B, C, alpha, beta, trans_a, trans_b):
        """``C = alpha * op(A) @ op(B) + beta * C``; every array C-contiguous, K >= 1."""
        dtype = np.dtype(C.dtype)
        M, N = C.shape
        K = A.shape[0] if trans_a else A.shape[1]
        t1, t2, m, n, k, ld1, ld2, ldc = cublas_call(M, N, K, trans_a, trans_b,
                                                     A.shape[1], B.shape[1], N)
        scalars = np.array([alpha, beta], dtype)      # alive until the call returns
        self.gemm[dtype](self.handle(), self.ops[t1], self.ops[t2], m, n, k,
                         scalars.ctypes.data, B.device_ctypes_pointer.value, ld1,
                         A.device_ctypes_pointer.value, ld2,
                         scalars.ctypes.data + dtype.itemsize, C.device_ctypes_pointer.value, ldc)


def _use_cublas(A, B, C, M, N, K):
    """The Cublas instance if this product should go to cuBLAS, else None."""
    if M * N * K < CUBLAS_MIN_WORK:
        return None
    cb = _cublas_or_none()
    if cb is None or not (A.is_c_contiguous() and B.is_c_contiguous() and C.is_c_contiguous()):
        return None
    return cb


def _cublas_product(cb, A, B, C, alpha, beta, trans_a, trans_b):
    """Run one product on cuBLAS. True if it ran; False if the very first call failed under
    ``auto`` (a CuPy that cannot work here: warned once, and numba's kernels take over)."""
    global _cublas
    try:
        cb(A, B, C, alpha, beta, trans_a, trans_b)
    except Exception as e:
        if cb.proven or _backend == "cublas":
            raise
        warnings.warn(f"kernels.cuda: cuBLAS (through CuPy) failed on its first product "
                      f"({type(e).__name__}: {e}); using numba's kernels instead", RuntimeWarning)
        _cublas = False
        return False
    cb.proven = True
    return True


def gemm_device(A, B, C, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, tile=None):
    """``C = alpha * op(A) @ op(B) + beta * C`` on device arrays of one dtype (no checks, no copies).

    A, B, C: 2-D C-contiguous device arrays (views such as ``a3d[t]`` or ``a3d.reshape(T*B, n)`` are
    fine). Big products go to cuBLAS where the backend setting allows (module doc); otherwise,
    or when ``tile`` is given, a numba kernel: ``tile`` = 4, 8, 16 (classic) or ``BLOCKED``
    (register-blocked) overrides ``tile_size``. Returns ``C``.
    """
    dtype = np.dtype(C.dtype)
    M, N = C.shape
    if M == 0 or N == 0:
        return C
    if tile is None:
        K = A.shape[0] if trans_a else A.shape[1]
        cb = _use_cublas(A, B, C, M, N, K)
        if cb is not None and _cublas_product(cb, A, B, C, alpha, beta, trans_a, trans_b):
            return C
    TS = int(tile) if tile else tile_size(M, N)    # a Python int: a constant of the kernel
    if TS == BLOCKED:
        kernel, grid, block = (_blocked_kernel(dtype), (ceil_div(N, BLOCKED), ceil_div(M, BLOCKED)),
                               (BLOCK_THREADS, BLOCK_THREADS))
    else:
        kernel, grid, block = _gemm_kernel(dtype, TS), (ceil_div(N, TS), ceil_div(M, TS)), (TS, TS)
    launch(kernel, grid, block, 0, A, B, C, dtype.type(alpha), dtype.type(beta),
           bool(trans_a), bool(trans_b))
    return C


def _finite_number(v, name):
    """``v`` as a float: a finite real number (not a bool, not an array), else an error
    naming ``name``."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating,
                                                              np.integer)):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    return float(v)


def matmul(A, B, C=None, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, tile=None):
    """``alpha * op(A) @ op(B) + beta * C`` with the tiled kernel; the public, checked entry point.

    A, B (and C): NumPy or device arrays, float32 or float64 (A's dtype rules). If A is a device
    array the result is a device array (``C`` itself when given, updated in place; a device
    ``C`` must share no memory with A or B: ValueError); otherwise NumPy. ``tile``: 4, 8, 16
    or ``BLOCKED`` (64) runs that numba kernel; default (None): what ``gemm_device`` picks,
    cuBLAS included.
    """
    require_cuda()
    enter()
    trans_a, trans_b = as_flag(trans_a, "trans_a"), as_flag(trans_b, "trans_b")
    alpha, beta = _finite_number(alpha, "alpha"), _finite_number(beta, "beta")
    if tile is not None and (isinstance(tile, (bool, np.bool_))
                             or not isinstance(tile, (int, np.integer))
                             or tile not in TILE_SIZES + (BLOCKED,)):
        raise ValueError(f"tile: expected one of {TILE_SIZES + (BLOCKED,)} or None, got {tile!r}")
    dtype = float_dtype_of(A, "A")
    on_device = is_device_array(A)
    dA, dB = to_device(A, dtype, "A"), to_device(B, dtype, "B")
    if dA.ndim != 2 or dB.ndim != 2:
        raise ValueError(f"A, B: expected 2-D arrays, got shapes {dA.shape} and {dB.shape}")
    M, K = (dA.shape[1], dA.shape[0]) if trans_a else dA.shape
    Kb, N = (dB.shape[1], dB.shape[0]) if trans_b else dB.shape
    if K != Kb:
        raise ValueError(f"B: expected op(B) to have {K} rows (op(A) is {M}x{K}), got {Kb}")
    if C is None:
        if beta != 0:
            raise ValueError(f"C: expected an array when beta != 0 (beta={beta}), got None")
        dC = empty((M, N), dtype)
    else:
        dC = to_device(C, dtype, "C")
        if tuple(dC.shape) != (M, N):
            raise ValueError(f"C: expected shape {(M, N)}, got {tuple(dC.shape)}")
        if is_device_array(C) and (overlaps(dC, dA) or overlaps(dC, dB)):
            # blocks would read tiles of A or B that other blocks have already overwritten
            raise ValueError("C: expected a device array that shares no memory with A or B "
                             "(the product reads them while it writes C), got one that does")
    gemm_device(dA, dB, dC, alpha, beta, trans_a, trans_b, tile)   # K == 0 gives beta * C
    return dC if on_device else dC.copy_to_host()
