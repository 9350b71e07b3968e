"""The per-step recurrent product ``out = A @ Wb`` with ``Wb`` packed once for all T steps.

Why a hand-written product at all. Every step of an RNN multiplies a thin matrix (the batch's
hidden states, ``(B, H)`` with B of 1 to 64) by the same weight matrix (``(H, 4H)`` for LSTM).
BLAS libraries are tuned for big square products; for this thin shape OpenBLAS reached a
fraction of what the same core does on a large product (measured on a 2-core AVX-512 Xeon:
~90-100 GF/s against ~190-200 for a 2048-square product; on a 2-core AMD EPYC: 11-20 GF/s at
4-8 rows against ~60 for the same product packed here). Two things cost it:

1. BLAS re-packs the weight matrix into its tile layout on every call, T times per sequence.
   Here it is packed once per kernel call (``pack``) and reused by every step.
2. The register tile (``mac``). It keeps a block of ``out`` in registers while it walks the
   shared dimension K: per k, one broadcast of A per row, one load per vector of the packed
   weights, a fused multiply-add per (row, vector). That is the shape of a BLAS micro-kernel.
   The block fills half the vector registers with AVX-512 (4 rows x 64 columns: 16 of 32
   registers of 16 floats) and 12 of the 16 with AVX2 (4 rows x 24 columns at a time, registers
   of 8 floats; measured against 4 x 16: 12-25 % faster products, the tiled LSTM's backward at
   (64, 32, 128, 256) 59.5 -> 52.3 ms).

The packed layout: ``Wp[t, k, l] = Wb[k, t * 64 + l]``, zero-padded past the last column, so
tile ``t`` is one contiguous (K, 64) block read straight through.

Where the product is large enough (``MAX_WORK`` below) BLAS wins after all, given the product
transposed (``step_product``): out^T = Wb^T A^T, whose long dimension it shares out over its
threads. ``step_operands`` and ``step_product`` are what the serial cores call at each step.

Two compiler details, both set here, not globally:

* ``_stack_tile`` puts a 4 x 64 tile on the stack (an ``alloca``), where LLVM can promote it to
  registers; a NumPy array there would live on the heap and stay in memory.
* ``_prefer_512_bit`` marks the compiled function with ``"prefer-vector-width"="512"``. LLVM
  otherwise uses 256-bit vectors on AVX-512 CPUs for the plain loops around the tile (the
  cells' activations in ``lstm_tiled``) and in the serial cells' forward cores (``rnn.py``,
  ``gru.py``, ``lstm.py``); on CPUs without AVX-512 it changes nothing.

Only float32 uses this path (the kernels' default precision); float64 is for gradient checks,
where ``np.dot`` is fine. Results equal ``np.dot``'s to float32 round-off (the sums run in
another order). ``tests/test_kernels_gemm.py`` checks every tail case.

Caching: the cores carry a copy of ``mac``; an edit here makes every cached kernel stale
(``_cache_stamp``).
"""

import llvmlite.binding as ll
import llvmlite.ir as ir
import numpy as np
from numba import carray, njit, types
from numba.core import cgutils, config, errors
from numba.extending import intrinsic

from . import _ahead, _workspace
from ._common import copy_row, dot_into

__all__ = ["pack", "pack_for", "step_operands", "step_product", "gemm_packed", "mac",
           "TILE_ROWS", "TILE_COLS", "NARROW_COLS", "MIN_ROWS", "MAX_WORK", "ONE_ROW_MAX_WEIGHTS",
           "VECTOR"]

TILE_ROWS = 4        # rows of A (and of out) per register tile
TILE_COLS = 64       # columns of out per register tile (4 x 16 floats)
NARROW_COLS = 16     # columns per pass over a last, partial tile (``gemm_packed``)


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


@intrinsic
def fmuladd(typingctx, a, b, c):
    """``a * b + c``, fused into one instruction where the CPU has FMA (``llvm.fmuladd``).

    Why, where ``fastmath={"contract"}`` fuses anyway. In ``x * y + z * w`` LLVM may fuse
    either product with the add, and which one it takes depends on the code around it: the
    tiled LSTM's cell update (3) came out one way in a process that compiled its core and the
    other way where the core was loaded from the cache (Numba optimizes a cached caller with a
    copy of its callees, ``_unroll_twice``), so the first run on an empty cache differed from
    every later one by ~2e-7 relative in y. Written ``fmuladd(x, y, z * w)`` there is one way.
    """
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        flt = context.get_value_type(signature.return_type)
        name = f"llvm.fmuladd.f{64 if signature.return_type == types.float64 else 32}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(flt, [flt] * 3), name)
        return builder.call(fn, args)
    return a(a, b, c), codegen


def _target_features():
    """The CPU features Numba compiles for: NUMBA_CPU_FEATURES when set, else the host's."""
    if config.CPU_FEATURES:
        return {f[1:]: f[0] == "+" for f in config.CPU_FEATURES.split(",") if f}
    return ll.get_host_cpu_features()


_features = _target_features()
_HOST_CPU = ll.get_host_cpu_name()      # LLVM's name of this CPU: "znver4", "icelake-server"
VECTOR = 16 if _features.get("avx512f", False) else 8   # float32 lanes of one vector register
ACC_VECTORS = 16 if VECTOR == 16 else 12                 # vector registers the tile may hold:
                                                          # 16 of 32 (AVX-512), 12 of 16 (AVX2)


class _LoopID(ir.values.MDValue):
    """A loop's metadata node, ``distinct !{!self, options...}``: LLVM identifies a loop's node
    by that reference to itself, which llvmlite's ``add_metadata`` cannot write."""
    def descr(self, buf):
        ops = ", ".join([self.get_reference()] + [op.get_reference() for op in self.operands])
        buf += (f"distinct !{{ {ops} }}", "\n")


def _unroll_twice(module):
    """Loop metadata: unroll this loop exactly twice (``llvm.loop.unroll.count 2``).

    Why. Numba compiles a function that calls another with a copy of the callee's already
    optimized code, and optimizes the whole again; a process that loads the caller from the
    on-disk cache runs that copy (one that compiled everything itself ran the callee's own
    library). LLVM unrolled ``mac``'s k loop once more in the copy: 4 k per pass instead of 2,
    161 instructions for 48 FMAs instead of 50 for 24, and the tiled LSTM's input part on one
    core ran at 32-35 GF/s loaded from the cache against 46-50 compiled in the process (AMD
    EPYC). An explicit count is applied once and marks the loop as unrolled, so every copy
    keeps the same loop: 55 GF/s both ways.
    """
    count = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.count"),
                                 ir.Constant(ir.IntType(32), 2)])
    return _LoopID(module, [count], name=str(len(module.metadata)))


@intrinsic
def mac(typingctx, acc, A, W, rows, cols):
    """``acc[:rows, :cols] += A[:rows, :K] @ W[:K, :cols]`` (K = A.shape[1]): the register
    tile, written as explicit vector code (float32; float64 too, for the kernels' float64
    signature, where the packed path is compiled but never taken). The same as the loop

        for k in range(K):
            for r in range(rows):
                for l in range(cols):
                    acc[r, l] += A[r, k] * W[k, l]        # one fused multiply-add each

    ``rows`` and ``cols`` are compile-time constants (a global or a literal at the call site),
    ``cols`` a multiple of the lanes per vector (``VECTOR`` in float32). acc's and W's rows must
    be contiguous (any row stride); A may have any strides. No bounds checks: the caller passes
    views of the right sizes.

    Why not that loop. Its speed depends on LLVM keeping ``acc`` in registers while it walks K,
    and whether LLVM does depends on the CPU: on AVX-512 the 4 x 64 tile is 16 of 32 registers
    and it did; on AVX2 (16 registers of 8 floats) the same tile needs 32, LLVM spilled it to
    memory or vectorized the wrong loop, and the product ran at a third of BLAS's speed
    (measured on a 2-core AMD EPYC: 28 against 59 GF/s). Here the columns go in groups of at most
    ``ACC_VECTORS // rows`` vectors; each group's accumulators are SSA values carried around
    the K loop (LLVM phi nodes), which the register allocator keeps in registers: per k, one
    load per vector of W's row, one broadcast per row of A, ``rows x vectors`` FMAs.

    The K products of one call are summed from zero, and that sum is then added to ``acc``
    (not ``acc`` carried through the loop): a long sum made of calls over chunks of K (the
    weight gradients' sums over all T*B rows, in ``lstm_tiled``) is a sum of short partial sums,
    whose round-off grows with chunk + number of chunks rather than with the whole length.
    Measured against float64, tiled LSTM at (T, B, I, H) = (400, 64, 64, 128): dW_hh 5.7e-6
    relative as one running sum, 5.6e-7 as partial sums; with all 8e4 rows alike, 7.9e-4 and
    4.5e-6 (``tests/test_kernels_sums.py``). The cost, one add per vector per call, was below
    the timing noise.
    """
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(cols, types.IntegerLiteral)):
        return None
    for name, a in (("acc", acc), ("A", A), ("W", W)):
        if not (isinstance(a, types.Array) and a.ndim == 2
                and a.dtype in (types.float32, types.float64)):
            raise errors.TypingError(f"mac: {name} must be a 2-D float array, got {a}")
    if W.dtype != acc.dtype:
        raise errors.TypingError(f"mac: W must have acc's dtype {acc.dtype}, got {W.dtype}")
    a_wide = A.dtype == types.float64                # A's numbers are converted to acc's type
    wide = acc.dtype == types.float64
    lanes = VECTOR // 2 if wide else VECTOR          # (float64 is only compiled, for the
    R, C = rows.literal_value, cols.literal_value    # kernels' float64 signature)
    if R < 1 or C < lanes or C % lanes:
        raise errors.TypingError(f"mac: rows >= 1 and cols a multiple of {lanes}, got {R}, {C}")
    sig = types.none(acc, A, W, rows, cols)

    def codegen(context, builder, signature, args):
        flt, i64 = (ir.DoubleType() if wide else ir.FloatType()), ir.IntType(64)
        size = 8 if wide else 4
        a_flt = ir.DoubleType() if a_wide else ir.FloatType()
        vec = ir.VectorType(flt, lanes)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fmuladd.v{lanes}f{8 * size}")
        arrays = [context.make_array(t)(context, builder, v)
                  for t, v in zip(signature.args[:3], args[:3])]
        acc_p, A_p, W_p = (builder.bitcast(a.data, ir.IntType(8).as_pointer()) for a in arrays)
        acc_s0 = cgutils.unpack_tuple(builder, arrays[0].strides, 2)[0]      # strides in bytes
        A_s0, A_s1 = cgutils.unpack_tuple(builder, arrays[1].strides, 2)
        W_s0 = cgutils.unpack_tuple(builder, arrays[2].strides, 2)[0]
        K = cgutils.unpack_tuple(builder, arrays[1].shape, 2)[1]
        const = lambda v: ir.Constant(i64, v)                                # noqa: E731
        splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

        def at(base, offset, ty):            # typed pointer to ``base + offset`` bytes
            return builder.bitcast(builder.gep(base, [offset]), ty.as_pointer())

        def acc_row(r, col):                 # &acc[r, col] as a vector pointer
            return at(acc_p, builder.add(builder.mul(const(r), acc_s0), const(size * col)), vec)

        n_vec = C // lanes
        per_group = max(1, min(n_vec, ACC_VECTORS // R))
        for g0 in range(0, n_vec, per_group):
            vs = range(g0, min(g0 + per_group, n_vec))           # this group's vectors
            start = [ir.Constant(vec, [-0.0] * lanes)] * (R * len(vs))    # at 0 (-0: acc + -0
                                                                          # is acc, even -0)
            before = builder.block
            body = builder.append_basic_block("mac.k")
            after = builder.append_basic_block("mac.done")
            builder.cbranch(builder.icmp_signed(">", K, const(0)), body, after)

            builder.position_at_end(body)                        # for k in range(K):
            k = builder.phi(i64)
            sums = [builder.phi(vec) for _ in start]
            w_row = builder.mul(k, W_s0)
            w = [builder.load(at(W_p, builder.add(w_row, const(size * v * lanes)), vec), align=size)
                 for v in vs]
            new = []
            for r in range(R):
                a_rk = builder.load(at(A_p, builder.add(builder.mul(const(r), A_s0),
                                                        builder.mul(k, A_s1)), a_flt))
                if a_wide != wide:
                    a_rk = (builder.fpext if wide else builder.fptrunc)(a_rk, flt)
                a = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vec, ir.Undefined), a_rk,
                                           ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(vec, ir.Undefined), splat)       # A[r, k] in every lane
                new += [builder.call(fma, [a, w_v, sums[r * len(vs) + i]])
                        for i, w_v in enumerate(w)]
            k_next = builder.add(k, const(1))
            k.add_incoming(const(0), before)
            k.add_incoming(k_next, body)
            for phi, s0, s1 in zip(sums, start, new):
                phi.add_incoming(s0, before)
                phi.add_incoming(s1, body)
            back = builder.cbranch(builder.icmp_signed("<", k_next, K), body, after)
            back.set_metadata("llvm.loop", _unroll_twice(builder.module))

            builder.position_at_end(after)                       # add the group's sums to acc
            totals = [builder.phi(vec) for _ in start]           # (phi nodes come first)
            for i, (total, s0, s1) in enumerate(zip(totals, start, new)):
                total.add_incoming(s0, before)
                total.add_incoming(s1, body)
                r, v = divmod(i, len(vs))
                row = acc_row(r, vs[v] * lanes)
                builder.store(builder.fadd(builder.load(row, align=size), total), row, align=size)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def transpose8(typingctx, src, dst):
    """``dst[:8, :8] = src[:8, :8].T`` in vector registers (float32 or float64): eight row
    loads, 24 shuffles, eight row stores. Rows of both must be contiguous (any row stride); no
    bounds checks: the caller passes (8, 8) views.

    Why. The packers turn weight matrices around (``pack(W, transposed=True)``, the tiled
    kernels' ``_pack_cols_into`` and ``_unpack_grad``), and element by element a transpose cost
    ~2.5 cycles a number: the tiled LSTM's packings and unpackings were 1.8 ms of its 29.6 ms
    fwd+bwd at (64, 32, 128, 256) (2-core AMD EPYC, Zen 4). With this, one core, that W_hh
    (1 MB) packed for the forward in 78 instead of 294 us, its gradient unpacked in 124
    instead of 530.

    How. Three rounds, one per bit of the row and column indices (1, 2, 4). A round pairs row i
    (that bit 0) with row i + bit, and swaps, between the two, the entries whose column has the
    other value of that bit: entry (i, j) goes to (i ^ bit, j ^ bit) where bit is set in
    exactly one of i and j. After all three, (i, j) has gone to (j, i). Each new row takes
    numbers from two old ones: one two-input shuffle (``shufflevector``, whose mask picks lanes
    0-7 from the first and 8-15 from the second), which LLVM turns into the CPU's shuffle,
    unpack or lane-permute instructions.
    """
    for name, a in (("src", src), ("dst", dst)):
        if not (isinstance(a, types.Array) and a.ndim == 2
                and a.dtype in (types.float32, types.float64)):
            raise errors.TypingError(f"transpose8: {name} must be a 2-D float array, got {a}")
    if src.dtype != dst.dtype:
        raise errors.TypingError(f"transpose8: dst must have src's dtype {src.dtype}, "
                                 f"got {dst.dtype}")
    sig = types.none(src, dst)

    def codegen(context, builder, signature, args):
        wide = signature.args[0].dtype == types.float64
        size = 8 if wide else 4
        vec = ir.VectorType(ir.DoubleType() if wide else ir.FloatType(), 8)
        arrays = [context.make_array(t)(context, builder, v)
                  for t, v in zip(signature.args, args)]

        def row(a, r):                       # &a[r, 0] as a vector pointer
            base = builder.bitcast(a.data, ir.IntType(8).as_pointer())
            stride = cgutils.unpack_tuple(builder, a.strides, 2)[0]
            offset = builder.mul(stride, ir.Constant(ir.IntType(64), r))
            return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

        def mask(lanes):
            return ir.Constant(ir.VectorType(ir.IntType(32), 8), lanes)

        rows = [builder.load(row(arrays[0], r), align=size) for r in range(8)]
        for bit in (1, 2, 4):
            for i in (i for i in range(8) if not i & bit):
                lo, hi = rows[i], rows[i | bit]
                # row i keeps its columns without the bit and takes row i+bit's others; row
                # i+bit the reverse (lanes 8-15 of the shuffle are hi's)
                rows[i] = builder.shuffle_vector(
                    lo, hi, mask([8 + (j ^ bit) if j & bit else j for j in range(8)]))
                rows[i | bit] = builder.shuffle_vector(
                    lo, hi, mask([8 + j if j & bit else j ^ bit for j in range(8)]))
        for r in range(8):
            builder.store(rows[r], row(arrays[1], r), align=size)
        return context.get_dummy_value()
    return sig, codegen


def pack(Wb, transposed=False):
    """``Wb`` (K, N) -> ``Wp`` (ceil(N / 64), K, 64) float32, tile t = columns t*64 ... t*64+63.

    ``transposed=True``: ``Wb`` is given as its transpose W (N, K) (a weight matrix in PyTorch's
    layout, whose transpose the forward multiplies by), read as it is: no transposed copy first.
    One compiled pass either way (NumPy's zero-pad, transpose and copy took ~35 us for a (100,
    400) matrix, a tenth of a small training step).
    """
    Wb = np.ascontiguousarray(Wb, dtype=np.float32)
    N, K = Wb.shape if transposed else Wb.shape[::-1]
    Wp = _workspace.empty((-(-N // TILE_COLS), K, TILE_COLS))   # on a cache line (_workspace)
    if transposed:
        _pack_transposed_into(Wb, Wp)
    else:
        _ahead.follow("pack")                            # (empty cache: see _ahead)
        _pack_into(Wb, Wp)
    return Wp


@njit(cache=True)
def _pack_into(Wb, Wp):
    """``Wp[t, k, l] = Wb[k, 64 t + l]``, zeros past Wb's last column."""
    K, N = Wb.shape
    for t in range(Wp.shape[0]):
        for k in range(K):
            for l in range(TILE_COLS):
                j = t * TILE_COLS + l
                Wp[t, k, l] = Wb[k, j] if j < N else 0


@njit(cache=True)
def _pack_transposed_into(W, Wp):
    """``Wp[t, k, l] = W[64 t + l, k]`` (the packing of W^T), zeros past W's last row. In
    8 x 8 blocks (``transpose8``), eight rows of Wp[t] (whole tile rows) at a time; rows of W
    short of a block of 8, and the last K % 8 columns, one number at a time. (Element by
    element in 8 x 8 blocks this took 2.4x less than one column at a time, k by k; with the
    shuffles of ``transpose8``, ``pack`` of a (1024, 256) W took 62 instead of 113 us, of a
    (2048, 512) one 356 instead of 522, on one core of an AMD EPYC Zen 4.)"""
    N, K = W.shape
    K8 = K - K % 8
    for t in range(Wp.shape[0]):
        j_end = min(N - t * TILE_COLS, TILE_COLS)       # rows of W in tile t (<= 0: none)
        l8 = max(0, j_end - j_end % 8)                  # of them in whole blocks of 8
        for k0 in range(0, K8, 8):
            for l0 in range(0, l8, 8):
                j0 = t * TILE_COLS + l0
                transpose8(W[j0:j0 + 8, k0:k0 + 8], Wp[t, k0:k0 + 8, l0:l0 + 8])
        for k in range(K):                              # the rest, one number at a time,
            for l in range(l8 if k < K8 else 0, max(j_end, 0)):    # then the padding's zeros
                Wp[t, k, l] = W[t * TILE_COLS + l, k]
            for l in range(max(j_end, 0), TILE_COLS):
                Wp[t, k, l] = 0


@njit(cache=True, error_model="numpy")
def gemm_packed(A, Wp, out):
    """``out = A @ Wb`` for A (M, K) float32 and Wp = pack(Wb); out (M, N), N <= 64 * Wp.shape[0].

    Rows go four at a time (the register tile, ``mac``), then one at a time for the last M % 4.
    A last tile narrower than 64 columns is computed 16 columns at a time, as far as it
    reaches, not whole: at H = 100 the LSTM's forward product has N = 400 = 6 x 64 + 16, and
    the seventh tile's 64 columns were 11 % of the work for 4 % of the output (kernel at (8,
    8, 2, 100): H = 100 took ~16 % longer than H = 96, and as long as H = 112).
    """
    M = A.shape[0]
    N = out.shape[1]
    acc = carray(_stack_tile(), (TILE_ROWS, TILE_COLS))
    for t in range(Wp.shape[0]):
        w_t = Wp[t]                                          # (K, 64) contiguous
        c0 = t * TILE_COLS
        width = min(TILE_COLS, N - c0)                       # the last tile may be partial
        m0 = 0
        while m0 + TILE_ROWS <= M:                           # full 4-row tiles
            _zero(acc)
            if width == TILE_COLS:
                mac(acc, A[m0:m0 + TILE_ROWS], w_t, TILE_ROWS, TILE_COLS)
            else:                                            # (16 columns: 4 of 32 registers)
                for l0 in range(0, width, NARROW_COLS):
                    mac(acc[:, l0:l0 + NARROW_COLS], A[m0:m0 + TILE_ROWS],
                        w_t[:, l0:l0 + NARROW_COLS], TILE_ROWS, NARROW_COLS)
            for r in range(TILE_ROWS):
                copy_row(acc[r, :width], out[m0 + r, c0:c0 + width])
            m0 += TILE_ROWS
        for m in range(m0, M):                               # the last M % 4 rows
            _zero(acc[:1])
            mac(acc[:1], A[m:m + 1], w_t, 1, TILE_COLS)
            copy_row(acc[0, :width], out[m, c0:c0 + width])


@njit(cache=True, inline="always")
def _zero(a):
    """``a[:, :] = 0`` as a loop (slice code is slow to compile: ``_common.copy_row``)."""
    for r in range(a.shape[0]):
        for l in range(a.shape[1]):
            a[r, l] = 0


# Where the packed product beats BLAS depends on the CPU (and its OpenBLAS kernels), so the
# bounds are per vector width, each measured on one machine against BLAS on the transposed
# product (``step_product``), one product at a time, medians of 9 timings:
#   AVX-512 (2-core Xeon): packed faster from 1 row up to ~8M multiply-adds: (8, 100) @
#     (100, 400) 7.4 vs 16.2 us, (4, 512) @ (512, 2048) 145 vs 240; level at 2^23 ((32, 256) @
#     (256, 1024) 95 vs 101); mixed at 2^24 ((16, 512) @ (512, 2048) 311 vs 359 packed faster,
#     (64, 512) @ (512, 512) 254 vs 197 slower) and BLAS faster at 2^25 ((32, 512) @ (512,
#     2048) 565 vs 477), so BLAS from above 2^23 (MAX_WORK). One row is a
#     matrix-vector product that streams the weights: packed wins while they are small ((1, 256)
#     @ (256, 1024), 1 MB: 10.8 vs 22.6 us) and loses when large ((1, 512) @ (512, 2048), 4 MB:
#     149 vs 58 us: BLAS reads them on both cores), hence ONE_ROW_MAX_WEIGHTS.
#   AVX2 (2-core AMD EPYC, Zen 3), 100 steps of each cell's products, both passes: packed faster
#     at (8, 100) (RNN 0.33 vs 0.50 ms, LSTM forward 1.0 vs 1.7) and (16, 128) (RNN 0.78 vs
#     1.27; LSTM level, 2^20 multiply-adds); level at the RNN's (32, 256) @ (256, 256) (2^21);
#     BLAS faster from 2^22 (RNN (64, 256): 10-11 vs 13-14 ms; the LSTM's (32, 256) @
#     (256, 1024): 15 vs 23, backward 19 vs 27; RNN (64, 512): 32 vs 50). One row: first
#     measured level; on 2026-12-02 (``benchmarks/choices``, 11 rounds) packed faster while the
#     weights are small ((1, 64) @ (64, 256) 0.86 vs 1.2 us, (1, 128) @ (128, 512) 3.6 vs 6.4,
#     (1, 256) @ (256, 1024) 19 vs 23-26), BLAS at (1, 512) @ (512, 2048) (72 vs 51, and level in
#     another run): the same ONE_ROW_MAX_WEIGHTS as AVX-512. Whole kernels at B = 1, fwd+bwd,
#     packing included, BLAS / packed time (medians of 15 alternated rounds): LSTM (50, 1, 16,
#     128) 1.35, (100, 1, 32, 256) 1.13, GRU 1.42 and 1.14, RNN 1.19 and 1.26; level at H = 64
#     and 100 (1.04, 1.07, 0.98).
# Short sequences. A kernel packs W once per call and saves a little on each of its T steps,
# so a call of few steps does not win the packing back. On a 2-core AMD EPYC Zen 4 (AVX-512) on
# 2026-12-04, the float32 forward kernels (``*_forward_unchecked``, path "steps", I = 32),
# packed / BLAS for W_hh^T, best of 5: LSTM H = 256, one row: T = 1 81.6 / 27.1 us, T = 4 132
# / 83, T = 8 183 / 144, T = 16 281 / 262; two rows, T = 8 265 / 271; four rows, T = 1 101 /
# 62, T = 4 171 / 186, T = 16 467 / 662; H = 128, one row, T = 1 22.8 / 12.1; the GRU and RNN
# alike (GRU H = 256, one row, T = 1 64.0 / 21.1; RNN 23.9 / 9.7). BLAS was as fast or
# faster in every call measured of fewer than MIN_ROW_STEPS rows in all, T * B < 8 (one row at
# T = 1, 2 and 4, two rows at T = 1 and 2, four at T = 1: 54 of 54 calls, H = 64, 128 and 256,
# three cells), and at four rows packing won from T = 4 for the LSTM and GRU, so a forward
# packs only from MIN_ROW_STEPS. (With one or two rows packing paid only from T = 8 to 35,
# depending on the shape, and the RNN's not up to T = 16 at four rows either; the bound keeps
# the side measured, since the AVX-512 Xeon's one-row products above, 10.8 vs 22.6 us, would
# win a packing that costs what it does here, ~55 us, back from about T = 5.) The backward
# keeps packing at any T: its BLAS operand is a transposed copy of W_hh, which costs more than
# packing it ((1024, 256): 95 against 32 us).
MIN_ROWS = 1                            # rows below which: BLAS (none, on both)
MAX_WORK = (1 << 23) if VECTOR == 16 else (1 << 21)     # multiply-adds above which: BLAS
ONE_ROW_MAX_WEIGHTS = 1 << 18           # K * N above which one row stays with BLAS
MIN_ROW_STEPS = 8                       # steps * rows below which a forward's W stays with BLAS
# Many rows on AMD's AVX-512 CPUs. The Xeon's MAX_WORK above is not AMD's: on a 2-core AMD EPYC
# Zen 4 on 2026-12-04 (OpenBLAS of SciPy 1.17), one product, packed / BLAS, us: (32, 100) @
# (100, 400) 23.2 / 21.6, (32, 128) @ (128, 512) 37.5 / 32.6, (32, 256) @ (256, 1024) 148 /
# 111, (32, 256) @ (256, 256) 36.6 / 28.7, while at eight rows and fewer packed stayed ahead up
# to MAX_WORK ((8, 256) @ (256, 1024) 37.1 / 51.2, (4, 512) @ (512, 512) 18.6 / 41.6). Whole
# kernels, path "steps", fwd+bwd, packed up to MAX_WORK / BLAS from MANY_ROWS rows above 2^20
# (medians of 7 alternated rounds, ms): LSTM (64, 64, 32, 100) 15.08 / 13.27, (50, 32, 50, 200)
# 19.62 / 16.46, (32, 16, 64, 200) 5.79 / 5.19, GRU (50, 32, 50, 200) 14.62 / 13.34, RNN
# (20, 32, 128, 300) 3.99 / 3.49; nearer 2^20 (1.28M multiply-adds a step) mixed: LSTM
# (100, 32, 10, 100) 12.19 / 10.81, but training steps of that size ((8, 32, 2, 100),
# (32, 32, 16, 100)) 0.82-1.09x as fast over five runs; RNN (50, 32, 50, 200) 4.39 / 3.94
# but (16, 32, 64, 200) 1.96 / 2.18. At 16 rows below 2^20, and at 4 and 8 rows at any size,
# packed was the faster (LSTM (32, 8, 64, 200) 2.92 packed / 3.40 BLAS). So on AMD's AVX-512
# CPUs (LLVM's "znver" names for the host) a product of MANY_ROWS rows or more packs only up
# to MANY_ROWS_MAX_WORK = 2^21, above which BLAS was ahead in every case measured; elsewhere
# that bound is MAX_WORK (the Xeon was level at 32 rows and 2^23: (32, 256) @ (256, 1024)
# 95 / 101 us). The LSTM's training step through the modules, (50, 32, 50, 200), five runs:
# 1.05-1.18x as fast.
MANY_ROWS = 16                          # rows from which MANY_ROWS_MAX_WORK bounds the packing
MANY_ROWS_MAX_WORK = (1 << 21) if VECTOR == 16 and _HOST_CPU.startswith("znver") else MAX_WORK
_NO_PACK = np.zeros((0, 0, TILE_COLS), np.float32)
_FLOAT32 = np.dtype(np.float32)


def pack_for(Wb, rows, transposed=False, steps=None):
    """``pack(Wb, transposed)`` where the packed product pays off for ``rows`` rows of float32
    (at least MIN_ROWS rows and at most MAX_WORK multiply-adds, rows * K * N, see above, from
    MANY_ROWS rows MANY_ROWS_MAX_WORK; at one row, weights up to ONE_ROW_MAX_WEIGHTS; with
    ``steps``, the number of products the packing serves, at least MIN_ROW_STEPS rows in all,
    steps * rows), else an empty array that tells a kernel's core to call BLAS
    (``_common.dot_into``) instead. Outputs narrower than one tile
    (N < 64) are packed from four rows up, where ``gemm_packed`` computes them 16 columns at a
    time, and stay with BLAS below NARROW_COLS columns or four rows (the rows beyond whole
    register tiles run whole 64-column tiles). Measured on the 2-core AMD EPYC Zen 4, one
    product, packed / BLAS: (8, 32) @ (32, 32) 0.33 / 0.55 us, (8, 12) @ (12, 48) 0.26 / 0.68,
    (32, 32) @ (32, 32) 0.91 / 1.53; kernels fwd+bwd, new / old, 21 alternated rounds: RNN
    (20, 16, 16, 32) 0.85, (50, 4, 8, 24) 0.74, GRU (20, 8, 8, 32) 0.94, LSTM (10, 16, 8, 48)
    0.99 (its backward's N = H: 0.96). At one row the LSTM at (5, 1, 6, 6) packed its forward's
    (1, 6) @ (6, 24) and took 1.09x as long (the packing costs more than the product saves),
    hence four rows.
    """
    if rows < MIN_ROWS or Wb.dtype != _FLOAT32:                 # (the common small case first)
        return _NO_PACK
    if steps is not None and steps * rows < MIN_ROW_STEPS:      # too few products to pay
        return _NO_PACK
    N, K = Wb.shape if transposed else Wb.shape[::-1]
    narrowest = NARROW_COLS if rows >= TILE_ROWS else TILE_COLS
    work = rows * K * N
    if (N < narrowest or work > MAX_WORK or (rows == 1 and K * N > ONE_ROW_MAX_WEIGHTS)
            or (rows >= MANY_ROWS and work > MANY_ROWS_MAX_WORK and _blas_on_cores())):
        return _NO_PACK
    return pack(Wb, transposed)


def _blas_on_cores():
    """Whether BLAS runs a product on two threads or more now. The packed product runs on the
    calling thread only, so MANY_ROWS_MAX_WORK's BLAS wins by the second core: not inside a
    pair of calls (``_pair`` holds BLAS at one thread while each runs on its own core: a GRU
    whose batch ran in halves at (50, 32, 50, 200), 16 rows each, took 11.6 ms a training step
    with packing, 13.1 with BLAS, measured with the bound at 2^20), nor where the user gave
    BLAS one thread."""
    from ._pair import blas_threads                      # (here: _pair imports this module)
    return any(n >= 2 for n in blas_threads())


def step_operands(Wb, rows, transposed=False, steps=None):
    """What ``step_product`` needs for ``out = A @ Wb`` with ``rows`` rows of A, given ``Wb``
    (K, N), or its transpose W (N, K) when ``transposed`` (a weight matrix in PyTorch's layout,
    as the forward cores multiply by W_hh^T): ``(Wt, Wp, outT)``, either

    * Wb packed (``pack_for`` packs it; ``steps``: the products it will serve) as Wp, with Wt
      and outT empty (0, 0); or
    * for BLAS, Wt = Wb^T (N, K) C-contiguous (W itself when transposed: no copy) and outT, an
      (N, rows) buffer for the transposed result, with Wp empty.

    The copy Wb^T is ``_transpose_into``'s from ``_workspace.MIN_BYTES`` up: NumPy's copy of
    a transposed view took 320 us for a (1024, 256) float32 Wb, 3.6 ms for (2048, 512), against
    95 us and 0.41 ms (2-core AMD EPYC Zen 4), in every backward that leaves W_hh to BLAS.
    """
    packed = pack_for(Wb, rows, transposed, steps)
    nothing = np.empty((0, 0), Wb.dtype)
    if packed.size:
        return nothing, packed, nothing
    if transposed:
        Wt = Wb
    elif Wb.nbytes < _workspace.MIN_BYTES:
        Wt = np.ascontiguousarray(Wb.T)
    else:
        Wt = _workspace.empty(Wb.shape[::-1], Wb.dtype)
        _transpose_into(Wb, Wt)
    return Wt, packed, _workspace.empty((Wt.shape[0], rows), Wb.dtype)


@njit(cache=True, error_model="numpy")
def step_product(A, Wt, Wp, outT, out):
    """One step's recurrent product ``out = A @ Wb`` (A (M, K), out (M, N)), with the operands of
    ``step_operands``: ``gemm_packed`` where Wb is packed, else BLAS on the transposed problem

        out^T = Wb^T A^T     (N, K) @ (K, M) into outT, then transposed into out.

    Why transposed. OpenBLAS shares the thin product (M, K) @ (K, N), M = 1 to 64 rows of the
    batch, out poorly over its threads; with the roles swapped, M is the narrow right operand
    and the N rows of Wb^T are split. On a 2-core AMD EPYC (Zen 3), 100 steps at B = 64,
    H = 512, the transposes back (~0.5 ns a number) included: the LSTM's forward products
    135-165 -> 115-137 ms, its backward's 120-173 -> 102-131, the GRU's 98-142 -> 79-125; the
    kernels at (100, 64, 512, 512), in-process A/B: LSTM forward 0.91x the time, backward
    0.93x; GRU 0.91x and 0.96x; RNN forward 0.81x (where it had been packed). At one row both
    ways took the same. A^T is the transposed view of A (no copy): BLAS reads it as it is.
    """
    if Wp.size:
        gemm_packed(A, Wp, out)
    else:
        dot_into(Wt, A.T, outT)
        _transpose_into(outT, out)


@njit(cache=True)
def _transpose_into(src, dst):
    """``dst[:, :] = src.T`` (src (N, M), dst (M, N)), 16 rows of src at a time: each row of dst
    is written 16 contiguous numbers at a time while those 16 rows of src stay in L1 (2x faster
    than NumPy's copy of the transposed view at (2048, 64), and than 8 x 8 blocks)."""
    N, M = src.shape
    n16 = N - N % 16
    for i0 in range(0, n16, 16):
        for j in range(M):
            for i in range(i0, i0 + 16):
                dst[j, i] = src[i, j]
    for j in range(M):
        for i in range(n16, N):
            dst[j, i] = src[i, j]
