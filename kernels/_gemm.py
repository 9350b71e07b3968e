"""The per-step recurrent product ``out = A @ Wb`` with ``Wb`` packed once for all T steps.

Why a hand-written product at all. Every step of an RNN multiplies a thin matrix (the batch's
hidden states, ``(B, H)`` with B of 1 to 64) by the same weight matrix (``(H, 4H)`` for LSTM).
BLAS libraries are tuned for big square products; for this thin shape OpenBLAS reached about
half of what the same core does on a large product (measured here: ~90-100 GF/s against
~190-200 for a 2048-square product and for MKL on the thin shape). Two things cost it:

1. BLAS re-packs the weight matrix into its tile layout on every call, T times per sequence.
   Here it is packed once per kernel call (``pack``) and reused by every step.
2. The register tile. The loop below keeps a 4 x 64 block of ``out`` in registers (16 AVX-512
   registers of 16 floats) while it walks the shared dimension K: per k, 4 loads of A, 4 loads
   of the packed weights, 16 fused multiply-adds. That is the shape of a BLAS micro-kernel.

The packed layout: ``Wp[t, k, l] = Wb[k, t * 64 + l]``, zero-padded past the last column, so
tile ``t`` is one contiguous (K, 64) block read straight through.

Two compiler details make the loop fast, and both are set here, not globally:

* ``_stack_tile`` puts the 4 x 64 accumulator on the stack (an ``alloca``), where LLVM can
  promote it to registers; a NumPy array there would live on the heap and stay in memory.
* ``_prefer_512_bit`` marks the compiled function with ``"prefer-vector-width"="512"``. LLVM
  otherwise uses 256-bit vectors on AVX-512 CPUs, which halves the multiply-add rate of this
  loop. On CPUs without AVX-512 the attribute changes nothing.

Only float32 uses this path (the kernels' default precision); float64 is for gradient checks,
where ``np.dot`` is fine. Results equal ``np.dot``'s to float32 round-off (the sums run in
another order). ``tests/test_kernels_gemm.py`` checks every tail case.

Caching caveat (as for ``_common``): Numba's on-disk cache keys each function on its own file,
so after editing this file delete ``kernels/__pycache__/*.nbi`` and ``*.nbc``, or the cores keep
the old product.
"""

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["pack", "pack_for", "gemm_packed", "TILE_ROWS", "TILE_COLS", "MIN_ROWS"]

TILE_ROWS = 4        # rows of A (and of out) per register tile
TILE_COLS = 64       # columns of out per register tile (4 x 16 floats)


@intrinsic
def _stack_tile(typingctx):
    """A pointer to TILE_ROWS * TILE_COLS float32 on the stack (LLVM can keep them in registers)."""
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32),
                                   size=TILE_ROWS * TILE_COLS)
    return types.CPointer(types.float32)(), codegen


@intrinsic
def _prefer_512_bit(typingctx):
    """Ask LLVM for 512-bit vectors in the function that calls this (a no-op at run time)."""
    def codegen(context, builder, signature, args):
        # llvmlite's FunctionAttributes only lists LLVM's keyword attributes; a string attribute
        # goes in verbatim through the underlying set.
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()
    return types.none(), codegen


def pack(Wb):
    """``Wb`` (K, N) -> ``Wp`` (ceil(N / 64), K, 64) float32, tile t = columns t*64 ... t*64+63."""
    K, N = Wb.shape
    n_tiles = -(-N // TILE_COLS)
    Wp = np.zeros((K, n_tiles * TILE_COLS), np.float32)
    Wp[:, :N] = Wb
    return np.ascontiguousarray(Wp.reshape(K, n_tiles, TILE_COLS).transpose(1, 0, 2))


@njit(cache=True, fastmath=True, error_model="numpy")
def gemm_packed(A, Wp, out):
    """``out = A @ Wb`` for A (M, K) float32 and Wp = pack(Wb); out (M, N), N <= 64 * Wp.shape[0].

    Rows go four at a time (the register tile), then one at a time for the last M % 4.
    """
    _prefer_512_bit()
    M, K = A.shape
    N = out.shape[1]
    acc = carray(_stack_tile(), (TILE_ROWS, TILE_COLS))
    for t in range(Wp.shape[0]):
        w_t = Wp[t]                                          # (K, 64) contiguous
        c0 = t * TILE_COLS
        width = min(TILE_COLS, N - c0)                       # the last tile may be partial
        m0 = 0
        while m0 + TILE_ROWS <= M:                           # full 4-row tiles
            for r in range(TILE_ROWS):
                for l in range(TILE_COLS):
                    acc[r, l] = 0
            for k in range(K):
                w = w_t[k]
                for r in range(TILE_ROWS):
                    a = A[m0 + r, k]
                    for l in range(TILE_COLS):
                        acc[r, l] += a * w[l]
            for r in range(TILE_ROWS):
                for l in range(width):
                    out[m0 + r, c0 + l] = acc[r, l]
            m0 += TILE_ROWS
        for m in range(m0, M):                               # the last M % 4 rows
            for l in range(TILE_COLS):
                acc[0, l] = 0
            for k in range(K):
                w = w_t[k]
                a = A[m, k]
                for l in range(TILE_COLS):
                    acc[0, l] += a * w[l]
            for l in range(width):
                out[m, c0 + l] = acc[0, l]


MIN_ROWS = 16          # below this many rows BLAS was as fast or faster (B = 8, H = 100)
MAX_WORK = 1 << 23     # multiply-adds per product above which BLAS, on two threads, was faster
_NO_PACK = np.zeros((0, 0, TILE_COLS), np.float32)


def pack_for(Wb, rows):
    """``pack(Wb)`` where the packed product pays off for ``rows`` rows of float32, else an
    empty array that tells a kernel's core to call BLAS (``np.dot``) instead.

    Measured on a 2-core AVX-512 machine: the packed product (one thread) beat OpenBLAS from
    16 rows up to about 8M multiply-adds per product, (B, H) = (32, 256) for an LSTM; above
    that OpenBLAS on two threads won (at (64, 512): 133 ms against 165 for an LSTM forward),
    though on one thread the packed product still did. Outputs narrower than one tile (N < 64)
    stay with BLAS: the tile would compute 64 columns for fewer.
    """
    K, N = Wb.shape
    if Wb.dtype != np.float32 or rows < MIN_ROWS or N < TILE_COLS or rows * K * N > MAX_WORK:
        return _NO_PACK
    return pack(Wb)
