"""A tiled shared-memory matrix multiply for numba.cuda (there is no cuBLAS inside kernels).

    C = alpha * op(A) @ op(B) + beta * C          op(A): (M, K)   op(B): (K, N)   C: (M, N)

with ``op(X) = X`` or ``X.T`` chosen by ``trans_a`` / ``trans_b``. The RNN kernels use four
variants:

    input projection     xW  = x  @ W_ih.T        (T*B, I)  x (4H, I)^T     trans_b
    recurrent product    R   = h  @ W_hh.T        (B, H)    x (4H, H)^T     trans_b
    backward recurrence  dh += dz @ W_hh          (B, 4H)   x (4H, H)       beta = 1
    weight gradients     dW  = dG.T @ x           (T*B, 4H)^T x (T*B, I)    trans_a
    input gradient       dx  = dG @ W_ih          (T*B, 4H) x (4H, I)

The kernel is the classic one (Kirk & Hwu, ch. 5): a ``TS x TS`` thread block computes one
``TS x TS`` tile of ``C``; it walks ``K`` in steps of ``TS``, each thread loading one element of
``op(A)`` and one of ``op(B)`` into shared memory, then every thread does ``TS`` multiply-adds
out of shared memory. Transposed operands are loaded with the thread index running along the
operand's contiguous axis (so global reads stay coalesced) and stored transposed into the tile;
tiles have a padding column so that those transposed stores do not hit the same bank.

This is a readable kernel, not a cuBLAS competitor: one output per thread, no register blocking,
no double buffering. ``beta == 0`` never reads ``C`` (it may be uninitialised memory).
"""
from functools import lru_cache

import numpy as np
from numba import cuda

from ._common import (ceil_div, empty, enter, float_dtype_of, is_device_array, launch,
                      require_cuda, to_device)

__all__ = ["matmul", "tile_size", "TILE_SIZES"]

#: Tile edges a kernel is compiled for; ``tile_size`` picks one per problem.
TILE_SIZES = (4, 8, 16)


def tile_size(M, N):
    """Tile edge for an ``(M, N)`` result: 16 (256 threads) unless the result is too thin to fill
    such tiles, e.g. the per-step ``(B, 4H)`` product at batch 1-4, where 4 or 8 wastes fewer threads.
    """
    m = min(M, N)
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


def gemm_device(A, B, C, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, tile=None):
    """``C = alpha * op(A) @ op(B) + beta * C`` on device arrays of one dtype (no checks, no copies).

    A, B, C: 2-D C-contiguous device arrays (views such as ``a3d[t]`` or ``a3d.reshape(T*B, n)`` are
    fine). ``tile`` overrides ``tile_size``. Returns ``C``.
    """
    dtype = np.dtype(C.dtype)
    M, N = C.shape
    if M == 0 or N == 0:
        return C
    TS = tile or tile_size(M, N)
    kernel = _gemm_kernel(dtype, TS)
    launch(kernel, (ceil_div(N, TS), ceil_div(M, TS)), (TS, TS), 0,
           A, B, C, dtype.type(alpha), dtype.type(beta), bool(trans_a), bool(trans_b))
    return C


def matmul(A, B, C=None, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, tile=None):
    """``alpha * op(A) @ op(B) + beta * C`` with the tiled kernel; the public, checked entry point.

    A, B (and C): NumPy or device arrays, float32 or float64 (A's dtype rules). If A is a device
    array the result is a device array (``C`` itself when given, updated in place); otherwise
    NumPy. ``tile``: 4, 8 or 16 (default: ``tile_size(M, N)``).
    """
    require_cuda()
    enter()
    dtype = float_dtype_of(A, "A")
    on_device = is_device_array(A)
    dA, dB = to_device(A, dtype, "A"), to_device(B, dtype, "B")
    if dA.ndim != 2 or dB.ndim != 2:
        raise ValueError(f"A, B: expected 2-D arrays, got shapes {dA.shape} and {dB.shape}")
    M, K = (dA.shape[1], dA.shape[0]) if trans_a else dA.shape
    Kb, N = (dB.shape[1], dB.shape[0]) if trans_b else dB.shape
    if K != Kb:
        raise ValueError(f"B: expected op(B) to have {K} rows (op(A) is {M}x{K}), got {Kb}")
    if tile is not None and tile not in TILE_SIZES:
        raise ValueError(f"tile: expected one of {TILE_SIZES}, got {tile}")
    if C is None:
        if beta != 0:
            raise ValueError(f"C: expected an array when beta != 0 (beta={beta}), got None")
        dC = empty((M, N), dtype)
    else:
        dC = to_device(C, dtype, "C")
        if tuple(dC.shape) != (M, N):
            raise ValueError(f"C: expected shape {(M, N)}, got {tuple(dC.shape)}")
    gemm_device(dA, dB, dC, alpha, beta, trans_a, trans_b, tile)   # K == 0 gives beta * C
    return dC if on_device else dC.copy_to_host()
