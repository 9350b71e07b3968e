"""kernels._gemm: the packed per-step product, its tail cases, and the cells at batch sizes that
take it (float32, B >= MIN_ROWS) against the float64 reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.reference as ref
from kernels import _gemm, _workspace, gru, lstm, rnn
from numba import njit

from kernels._gemm import (MAX_WORK, MIN_ROWS, NARROW_COLS, ONE_ROW_MAX_WEIGHTS, TILE_COLS,
                           TILE_ROWS, gemm_packed, mac, pack, pack_for, step_operands,
                           step_product, transpose8)


@njit
def _mac_cases(acc4, acc3, acc1, A, W, acc48):
    """``mac`` at every row count the kernels use, 64 and 48 columns, on strided views."""
    mac(acc4, A[:4], W, 4, 64)
    mac(acc3, A[1:4], W, 3, 64)
    mac(acc1, A[2:3], W, 1, 64)
    mac(acc48, A[:4], W[:, 8:56], 4, 48)


@pytest.mark.parametrize("dtype,a_dtype", [(np.float32, np.float32), (np.float64, np.float64),
                                           (np.float32, np.float64)])
@pytest.mark.parametrize("K", [0, 1, 5, 130])
def test_mac_equals_the_loop_it_replaces(dtype, a_dtype, K):
    """acc += A @ W with any strides of A (here every other column of a wider array, so
    that k does not step by one), rows of acc and W inside wider arrays; K = 0 adds nothing."""
    rng = np.random.default_rng(K)
    A = rng.standard_normal((5, 2 * K + 1)).astype(a_dtype)[:, ::2][:, :K]   # (5, K), strided
    W = rng.standard_normal((K, 80)).astype(dtype)[:, 3:67]                # (K, 64), rows 80 apart
    start = rng.standard_normal((4, 100)).astype(dtype)
    start[:, ::3] = -0.0                                    # kept as -0.0 by K = 0
    bufs = [start.copy() for _ in range(4)]
    _mac_cases(bufs[0][:, :64], bufs[1][:3, 10:74], bufs[2][:1, 20:84], A, W, bufs[3][:, 30:78])
    A64, W64 = A.astype(dtype).astype(np.float64), W.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-5 * np.sqrt(K + 1)) if dtype == np.float32 else dict(rtol=1e-12)
    cases = [(bufs[0], slice(0, 4), 0, 0, 64), (bufs[1], slice(1, 4), 10, 0, 64),
             (bufs[2], slice(2, 3), 20, 0, 64), (bufs[3], slice(0, 4), 30, 8, 48)]
    for buf, rows, c0, w0, cols in cases:
        n = rows.stop - rows.start
        expect = start.astype(np.float64).copy()
        expect[:n, c0:c0 + cols] += A64[rows] @ W64[:, w0:w0 + cols]
        np.testing.assert_allclose(buf, expect, **tol)      # and nothing outside the tile moved
        if K == 0:
            assert buf.tobytes() == start.tobytes()         # bit for bit, signs of zeros too


@njit
def _transpose8_at(src, dst, i0, j0):
    transpose8(src[i0:i0 + 8, j0:j0 + 8], dst[j0 + 1:j0 + 9, i0 + 2:i0 + 10])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose8_moves_exactly_one_block(dtype):
    """dst's (8, 8) block becomes src's block transposed, bit for bit (signs of zeros, NaN,
    subnormals: shuffles move numbers, they compute nothing); views inside wider arrays at
    odd offsets, so that no row starts on a vector boundary; nothing outside the block moves."""
    rng = np.random.default_rng(8)
    src = rng.standard_normal((13, 21)).astype(dtype)
    src[3, 4], src[5, 6], src[7, 8] = -0.0, np.nan, np.finfo(dtype).smallest_subnormal
    start = rng.standard_normal((30, 17)).astype(dtype)
    dst = start.copy()
    _transpose8_at(src, dst, 3, 5)
    want = start.copy()
    want[6:14, 5:13] = src[3:11, 5:13].T
    assert dst.tobytes() == want.tobytes()


@given(M=st.integers(1, 11), K=st.integers(1, 40), N=st.integers(1, 2 * TILE_COLS + 7),
       seed=st.integers(0, 2**16))
@settings(max_examples=40)
def test_packed_product_equals_numpy(M, K, N, seed):
    """Every tail: rows M % 4, a partial last column tile, K = 1."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(np.float32)
    Wb = rng.standard_normal((K, N)).astype(np.float32)
    out = np.full((M, N), np.nan, np.float32)                   # every entry must be written
    gemm_packed(A, pack(Wb), out)
    expect = A.astype(np.float64) @ Wb.astype(np.float64)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5 * np.sqrt(K))


@pytest.mark.parametrize("width", [1, 15, 16, 17, 36, 48, 63, 64])
def test_a_partial_last_tile_is_exact_at_every_width(width):
    """The last tile, narrower than 64 columns, is computed 16 at a time (``NARROW_COLS``):
    at the widths either side of each step, its columns equal the whole tile's, bit for bit
    (the same sums in the same order), and match NumPy."""
    rng = np.random.default_rng(width)
    M, K, N = 9, 37, TILE_COLS + width
    A = rng.standard_normal((M, K)).astype(np.float32)
    Wb = rng.standard_normal((K, N)).astype(np.float32)
    out = np.full((M, N), np.nan, np.float32)
    gemm_packed(A, pack(Wb), out)
    whole = np.full((M, 2 * TILE_COLS), np.nan, np.float32)      # the same columns, padded
    Wb_whole = np.zeros((K, 2 * TILE_COLS), np.float32)          # to two whole tiles
    Wb_whole[:, :N] = Wb
    gemm_packed(A, pack(Wb_whole), whole)
    np.testing.assert_array_equal(out[:8], whole[:8, :N])       # (the 4-row tiles)
    np.testing.assert_allclose(out, A.astype(np.float64) @ Wb.astype(np.float64),
                               rtol=1e-5, atol=1e-5 * np.sqrt(K))


def test_packed_product_writes_only_its_columns():
    rng = np.random.default_rng(0)
    A, Wb = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((3, 70)).astype(np.float32)
    big = np.full((5, 80), 7.0, np.float32)
    gemm_packed(A, pack(Wb), big[:, :70])                     # a view: the padding must stay
    assert (big[:, 70:] == 7.0).all()


def test_pack_layout_and_when_it_is_used():
    Wb = np.arange(3 * 70, dtype=np.float32).reshape(3, 70)
    Wp = pack(Wb)
    assert Wp.shape == (2, 3, TILE_COLS) and Wp.flags.c_contiguous
    np.testing.assert_array_equal(Wp[1, :, :6], Wb[:, 64:])
    assert not Wp[1, :, 6:].any()                                # zero padding
    assert pack_for(Wb, MIN_ROWS).size and not pack_for(Wb, MIN_ROWS - 1).size
    assert bool(pack_for(Wb, 1).size) == (MIN_ROWS == 1)         # one row: small weights pack
    big = np.zeros((512, 2048), np.float32)                      # 4 MB: BLAS streams it faster
    assert 512 * 2048 > ONE_ROW_MAX_WEIGHTS and not pack_for(big, 1).size and pack_for(big, 2).size
    assert not pack_for(Wb.astype(np.float64), 64).size         # float64 keeps BLAS
    narrow = np.zeros((70, 63), np.float32)                   # narrower than a tile: packed
    assert pack_for(narrow, TILE_ROWS).size                   # from 4 rows (16 columns at a
    assert not pack_for(narrow, TILE_ROWS - 1).size           # time), BLAS for fewer rows
    assert not pack_for(np.zeros((70, NARROW_COLS - 1), np.float32), 32).size   # and columns
    assert pack_for(np.zeros((70, NARROW_COLS), np.float32), 32).size
    mid = np.zeros((256, 1024), np.float32)                      # LSTM, H = 256
    rows = MAX_WORK // (256 * 1024)                              # the most rows the bound allows
    if rows < _gemm.MANY_ROWS or _gemm.MANY_ROWS_MAX_WORK >= MAX_WORK:
        assert pack_for(mid, rows).size
    assert not pack_for(mid, rows + 1).size


@pytest.mark.parametrize("many_rows_max_work", [1 << 21, MAX_WORK])
def test_from_many_rows_a_second_bound(many_rows_max_work, monkeypatch):
    """From MANY_ROWS rows the packing stops at MANY_ROWS_MAX_WORK multiply-adds (2^21 on AMD's
    AVX-512 CPUs, MAX_WORK elsewhere), where BLAS has two threads; fewer rows keep MAX_WORK,
    whatever their size."""
    monkeypatch.setattr(_gemm, "MANY_ROWS_MAX_WORK", many_rows_max_work)
    W = np.zeros((100, 400), np.float32)                         # K N = 40000: an LSTM, H = 100
    many = _gemm.MANY_ROWS
    for rows in (many - 1, many, 2 * many, 4 * many):
        work = rows * W.size
        bound = many_rows_max_work if rows >= many else MAX_WORK
        assert bool(pack_for(W, rows).size) == (work <= min(bound, MAX_WORK)), rows
    assert pack_for(W, many - 1).size                            # (15 rows, 0.6M: packed)
    monkeypatch.setattr(_gemm, "_blas_on_cores", lambda: False)  # BLAS on one thread: packed
    assert pack_for(W, 4 * many).size                            # (2.6M <= MAX_WORK)


def test_blas_shares_no_cores_inside_a_pair():
    """``_blas_on_cores`` reads the loaded OpenBLAS libraries' thread counts: one each inside
    a pair of calls (``_pair``), so that each call's packing does not count on a second core;
    as many as OpenBLAS runs outside one (two or more on CI's two cores)."""
    from kernels import _pair
    inside = _pair.run_pair(_gemm._blas_on_cores, _gemm._blas_on_cores)
    assert inside == (False, False)
    assert _gemm._blas_on_cores() == any(n >= 2 for n in _pair.blas_threads())


def test_a_forward_of_few_steps_leaves_W_to_BLAS():
    """With ``steps``, W packs only for at least MIN_ROW_STEPS rows in all (steps * rows): a
    call of few steps would not win the packing back. Without it (the backward), as before."""
    W = np.zeros((256, 1024), np.float32)                        # an LSTM's W_hh, H = 256
    assert pack_for(W, 1).size                                    # (the bounds alone: packed)
    for rows in (1, 2, 4, 8):
        for steps in (1, 2, 3, 4, 7, 8, 16):
            packs = bool(pack_for(W, rows, steps=steps).size)
            assert packs == (steps * rows >= _gemm.MIN_ROW_STEPS), (rows, steps)
            Wt, Wp, outT = step_operands(W, rows, transposed=True, steps=steps)
            assert bool(Wp.size) == packs and (Wt is W) != packs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(70, 33), (300, 100), (1024, 256)])
def test_the_blas_operand_is_Wb_transposed(dtype, shape, monkeypatch):
    """step_operands' copy of Wb^T for BLAS: NumPy's below _workspace.MIN_BYTES, the blocked
    ``_transpose_into`` from there ((300, 100) float32 is 120 KB: a 16-row tail), both exact.
    (MAX_WORK = 0: float32 takes BLAS too.)"""
    monkeypatch.setattr(_gemm, "MAX_WORK", 0)
    Wb = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    Wt, Wp, outT = step_operands(Wb, 5)
    assert Wp.size == 0 and Wt.flags.c_contiguous and Wt.dtype == dtype
    np.testing.assert_array_equal(Wt, Wb.T)
    A = np.random.default_rng(1).standard_normal((outT.shape[1], shape[0])).astype(dtype)
    out = np.full((A.shape[0], shape[1]), np.nan, dtype)
    step_product(A, Wt, Wp, outT, out)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, A.astype(np.float64) @ Wb, rtol=tol, atol=tol * shape[0])


ALIGN_FROM = _workspace.MIN_BYTES // 4          # float32 numbers from which arrays are aligned


def test_large_working_arrays_start_on_a_cache_line():
    """_workspace.empty: float32, C-contiguous, the shape asked for, 64-byte aligned from
    ALIGN_FROM numbers up (NumPy's own large arrays start 16 bytes past a line); pack too."""
    for shape in [(ALIGN_FROM,), (3, 5, 7, ALIGN_FROM // 64), (64, 32, 256)]:
        for _ in range(3):
            a = _workspace.empty(shape)
            assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
            assert a.flags.writeable and a.ctypes.data % 64 == 0
            a[...] = 1                                              # the whole range is ours
            assert a.sum() == a.size
    small = _workspace.empty((3, 4))
    assert small.shape == (3, 4) and small.dtype == np.float32 and small.flags.c_contiguous
    Wp = pack(np.ones((300, 256), np.float32))                     # (4, 300, 64): 76800 floats
    assert Wp.size >= ALIGN_FROM and Wp.ctypes.data % 64 == 0 and Wp.flags.c_contiguous


@pytest.mark.parametrize("N", [1, 7, 64, 70, 130])
@pytest.mark.parametrize("K", [5, 8, 29])
def test_pack_of_a_transpose_reads_W_as_it_is(N, K):
    """pack(W, transposed=True) is pack(W.T) without the copy: by 8 x 8 blocks where they fit
    (K >= 8, eight rows of W), one number at a time in the rest, zeros past W's last row."""
    rng = np.random.default_rng(N)
    W = rng.standard_normal((N, K)).astype(np.float32)             # (N, K): PyTorch's layout
    np.testing.assert_array_equal(pack(W, transposed=True), pack(np.ascontiguousarray(W.T)))


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype,rows,packing", [(np.float32, MIN_ROWS, True),
                                                (np.float32, 3, False), (np.float32, 37, False),
                                                (np.float64, 3, True), (np.float64, 37, True),
                                                (np.float32, 37, True)])
def test_step_operands_and_product(transposed, dtype, rows, packing, monkeypatch):
    """step_operands gives step_product exactly one way: Wb packed, or Wb^T C-contiguous and a
    (N, rows) buffer for BLAS's transposed result; both give A @ Wb, for row counts that are
    not multiples of 16 (the transpose's tail) and N past one tile. ``packing=False`` switches
    packing off (MAX_WORK = 0), so that float32 takes BLAS on every CPU; float64 always does."""
    if not packing:
        monkeypatch.setattr(_gemm, "MAX_WORK", 0)
    rng = np.random.default_rng(rows)
    K, N = 70, 4 * 70 if not transposed else 70                    # a W_hh, H = 70, both ways
    W = rng.standard_normal((N, K) if transposed else (K, N)).astype(dtype)
    Wb = W.T if transposed else W
    Wt, Wp, outT = step_operands(W, rows, transposed)
    if dtype == np.float32 and rows >= MIN_ROWS and packing:
        assert Wt.size == 0 and outT.size == 0 and Wt.dtype == W.dtype
        np.testing.assert_array_equal(Wp, pack(np.ascontiguousarray(Wb)))
    else:
        assert Wp.size == 0 and Wt.flags.c_contiguous and Wt.dtype == W.dtype
        np.testing.assert_array_equal(Wt, Wb.T)
        assert outT.shape == (Wb.shape[1], rows) and outT.dtype == W.dtype
        if transposed:
            assert Wt is W                                         # no copy
    A = rng.standard_normal((rows, Wb.shape[0])).astype(dtype)
    out = np.full((rows, Wb.shape[1]), np.nan, dtype)              # every entry must be written
    step_product(A, Wt, Wp, outT, out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, A.astype(np.float64) @ Wb.astype(np.float64),
                               rtol=tol, atol=tol * np.sqrt(K))


def _weights(rng, G, I, H):
    return (rng.uniform(-0.3, 0.3, (G * H, I)), rng.uniform(-0.3, 0.3, (G * H, H)))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("product", ["packed", "packed one row", "blas", "short call"])
def test_cells_on_each_step_product_match_the_reference(cell, reverse, product, monkeypatch):
    """float32 through each way of ``step_product``, in both passes: B = MIN_ROWS + 3 takes the
    packed product (and its row and column tails); B = 1 with packing allowed from one row (as
    on AVX-512) the packed product's one-row tile; with packing switched off (MAX_WORK = 0),
    B = 19 takes BLAS's transposed product and the transpose back (G H = 70 G rows: 16-row
    blocks and a tail); a call of too few steps for its forward to pack (T B < MIN_ROW_STEPS)
    takes BLAS there and the packed product in its backward."""
    rng = np.random.default_rng(1)
    T, B, I, H = 5, MIN_ROWS + 3, 4, TILE_COLS + 6             # H >= 64: backward packs too
    if product == "blas":
        monkeypatch.setattr(_gemm, "MAX_WORK", 0)
        B = 19
    if product == "packed one row":
        monkeypatch.setattr(_gemm, "MIN_ROWS", 1)
        T, B = _gemm.MIN_ROW_STEPS, 1
    if product == "short call":
        monkeypatch.setattr(_gemm, "MIN_ROWS", 1)
        T, B = 3, 2
        assert T * B < _gemm.MIN_ROW_STEPS
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    W_ih, W_hh = _weights(rng, G, I, H)
    biases = [rng.uniform(-0.3, 0.3, G * H) for _ in range(2 if cell == "gru" else 1)]
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(1, T + 1, B)
    state = [rng.standard_normal((B, H)) * 0.5 for _ in range(2 if cell == "lstm" else 1)]
    fast = {"lstm": lstm, "gru": gru, "rnn": rnn}[cell]
    f_fwd, f_bwd = getattr(fast, f"{cell}_forward"), getattr(fast, f"{cell}_backward")
    r_fwd, r_bwd = getattr(ref, f"{cell}_forward"), getattr(ref, f"{cell}_backward")
    args = [x, W_ih, W_hh, *biases, *state]
    f32 = [a.astype(np.float32) for a in args]
    packs = product != "blas"                                    # the path under test:
    forward_packs = packs and product != "short call"
    assert bool(pack_for(np.zeros((H, G * H), np.float32), B, steps=T).size) == forward_packs
    assert bool(pack_for(np.zeros((G * H, H), np.float32), B).size) == packs   # backward
    steps = {"path": "steps"} if cell == "lstm" else {}        # (auto: lstm_tiled here)
    yf, *sf, cf = f_fwd(*f32, lengths=lengths, reverse=reverse, **steps)
    yr, *sr, cr = r_fwd(*args, lengths=lengths, reverse=reverse)
    np.testing.assert_allclose(yf, yr, atol=2e-5)
    for a, b in zip(sf, sr):
        np.testing.assert_allclose(a, b, atol=2e-5)
    dy = rng.standard_normal((T, B, H))
    dstate = [rng.standard_normal((B, H)) for _ in state]
    gf = f_bwd(dy.astype(np.float32), *[d.astype(np.float32) for d in dstate], cf)
    gr = r_bwd(dy, *dstate, cr)
    for a, b in zip(gf, gr):
        np.testing.assert_allclose(a, b, atol=2e-4 * max(1.0, np.abs(b).max()))


_OTHER_WIDTH = r"""
import numpy as np
from numba import njit
import kernels._gemm as g
g.VECTOR, g.ACC_VECTORS = {vector}, {acc}         # before anything compiles a call of mac

@njit(cache=False)
def cases(acc4, acc1, acc48, A, W):
    g.mac(acc4, A[:4], W, 4, 64)
    g.mac(acc1, A[:1], W, 1, 64)
    g.mac(acc48, A[:4], W[:, :48], 4, 48)

rng = np.random.default_rng(0)
A = rng.standard_normal((4, 37)).astype(np.float32)
W = rng.standard_normal((37, 64)).astype(np.float32)
a4, a1, a48 = (np.ones(shape, np.float32) for shape in ((4, 64), (1, 64), (4, 48)))
cases(a4, a1, a48, A, W)
ref = 1 + A.astype(np.float64) @ W
for got, want in ((a4, ref), (a1, ref[:1]), (a48, ref[:, :48])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
print("ok")
"""


@pytest.mark.parametrize("vector,acc", [(v, a) for v, a in ((16, 16), (8, 12), (4, 8))
                                        if (v, a) != (_gemm.VECTOR, _gemm.ACC_VECTORS)])
def test_mac_for_other_vector_widths(vector, acc):
    """The tile's code for the widths this CPU does not pick (of AVX-512's 16 lanes and 4 x 64
    tile, AVX2's 8 lanes in 12 accumulators, whose last column group is uneven, and 4-lane SSE
    vectors): LLVM lowers any vector width to this CPU's instructions, so the grouping of
    columns into vectors is checked here whatever the CI machine is."""
    import os
    import subprocess
    import sys
    code = _OTHER_WIDTH.format(vector=vector, acc=acc)
    env = {**os.environ, "NUMBA_CACHE_DIR": "/tmp/rnncore-mac-width"}   # not the shared cache
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


# Every kernel as compiled for an AVX2 CPU, in a child that Numba and ``_gemm`` see as one: the
# cores' float32 results against the float64 reference, the float32 kernels' rules for 8-lane
# vectors in force (``_gemm.VECTOR``, the backward's steps by units, the forward's k-chunk 64).
_AVX2_CHILD = r"""
import numpy as np
from numba import njit
from kernels import _gemm, gru, lstm, lstm_tiled, reference as ref, rnn
assert (_gemm.VECTOR, _gemm.ACC_VECTORS) == (8, 12), (_gemm.VECTOR, _gemm.ACC_VECTORS)
assert not lstm_tiled.BACKWARD_BY_ROWS and lstm_tiled.KC_STEP == 64
rng = np.random.default_rng(0)
worst = 0.0
cases = [("lstm", "tiled", (5, 6, 7, 72), True, True),      # cell, path, shape, ragged, reverse
         ("lstm", "tiled", (4, 8, 16, 128), False, False),
         ("gru", "tiled", (5, 6, 7, 72), True, True),
         ("gru", "tiled", (4, 8, 16, 128), False, False),
         ("lstm", "steps", (5, 5, 4, 70), True, False),
         ("gru", "steps", (5, 5, 4, 70), False, True),
         ("rnn", "steps", (5, 5, 4, 70), True, True),
         ("rnn", "tiled", (5, 6, 7, 72), True, True),
         ("rnn", "tiled", (4, 8, 16, 136), False, False)]
for cell, path, (T, B, I, H), ragged, reverse in cases:
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    W_ih, W_hh = rng.uniform(-0.3, 0.3, (G * H, I)), rng.uniform(-0.3, 0.3, (G * H, H))
    biases = [rng.uniform(-0.3, 0.3, G * H) for _ in range(2 if cell == "gru" else 1)]
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(1, T + 1, B) if ragged else np.full(B, T)
    state = [rng.standard_normal((B, H)) * 0.5 for _ in range(2 if cell == "lstm" else 1)]
    fast = {"lstm": lstm, "gru": gru, "rnn": rnn}[cell]
    kw = {"path": path}
    args = [x, W_ih, W_hh, *biases, *state]
    yf, *sf, cf = getattr(fast, cell + "_forward")(*[a.astype(np.float32) for a in args],
                                                 lengths=lengths, reverse=reverse, **kw)
    yr, *sr, cr = getattr(ref, cell + "_forward")(*args, lengths=lengths, reverse=reverse)
    dy = rng.standard_normal((T, B, H))
    dstate = [rng.standard_normal((B, H)) for _ in state]
    gf = getattr(fast, cell + "_backward")(dy.astype(np.float32),
                                           *[d.astype(np.float32) for d in dstate], cf)
    gr = getattr(ref, cell + "_backward")(dy, *dstate, cr)
    for a, b in zip([yf, *sf, *gf], [yr, *sr, *gr]):
        worst = max(worst, float(np.abs(a - b).max() / max(1.0, np.abs(b).max())))

@njit(cache=False)                                  # compiled here (a cached kernel shows no asm)
def probe(acc, A, W):
    _gemm.mac(acc, A, W, 4, 64)


probe(np.zeros((4, 64), np.float32), np.ones((4, 8), np.float32), np.ones((8, 64), np.float32))
asm = "".join(probe.inspect_asm().values())
assert "zmm" not in asm and "ymm" in asm            # 8-lane AVX2 vectors, no AVX-512
print(worst)
"""
_HASWELL = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+lzcnt,"
            "+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,"
            "+xsave,+xsaveopt")


@pytest.mark.skipif(_gemm.VECTOR != 16, reason="an AVX2 machine runs the AVX2 code everywhere "
                                               "in this suite")
def test_the_kernels_compiled_for_avx2_match_the_reference():
    """On an AVX-512 machine the suite runs the AVX-512 code; the AVX2 code (8-lane tiles, the
    backward by units, the forward's 64-row k-chunks) is what most other CPUs run. A child
    compiles for a Haswell (NUMBA_CPU_NAME and NUMBA_CPU_FEATURES, which ``_gemm`` reads too)
    and checks the LSTM, GRU and RNN (tiled and serial each), fwd and bwd, ragged and reversed,
    against the float64 reference."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": _HASWELL,
           "NUMBA_CACHE_DIR": "/tmp/rnncore-avx2-cache"}         # not the shared cache
    r = subprocess.run([sys.executable, "-c", _AVX2_CHILD], capture_output=True, text=True,
                       timeout=600, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 1e-4, r.stdout


_LANES = _gemm.VECTOR                        # a global: a compile-time constant in njit code


@njit(cache=False, error_model="numpy")
def _one_vector_tile(acc, A, W):
    mac(acc, A, W, 1, _LANES)                # one row, one vector: one FMA per k


@njit(cache=False, error_model="numpy")
def _calls_the_tile(acc, A, W):
    for _ in range(2):
        _one_vector_tile(acc, A, W)


def _fmas_per_pass_of_the_k_loop(asm):
    """FMAs in each loop of x86 assembly text that has any (a loop: a label and a later jump
    back to it)."""
    lines = asm.splitlines()
    labels = {ln.strip()[:-1]: i for i, ln in enumerate(lines) if ln.strip().endswith(":")}
    counts = []
    for i, ln in enumerate(lines):
        parts = ln.split()
        if parts and parts[0].startswith("j") and len(parts) > 1 and labels.get(parts[-1], i) < i:
            n = sum("vfmadd" in x for x in lines[labels[parts[-1]]:i])
            if n:
                counts.append(n)
    return counts


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"),
                    reason="reads x86 assembly")
def test_the_k_loop_is_unrolled_twice_also_in_a_callers_copy():
    """``mac`` marks its k loop "unroll exactly twice". A caller's copy of a function that calls
    mac is optimized a second time with the caller (what a process loading the caller from the
    on-disk cache runs); without the mark LLVM unrolled the loop again there, into a slower one.
    Both compiled functions must hold the same loop: 2 FMAs per pass for one vector per k."""
    acc = np.zeros((1, _gemm.VECTOR), np.float32)
    A = np.ones((1, 50), np.float32)
    W = np.ones((50, _gemm.VECTOR), np.float32)
    _calls_the_tile(acc, A, W)
    np.testing.assert_array_equal(acc, 100)
    for f in (_one_vector_tile, _calls_the_tile):
        (asm,) = f.inspect_asm().values()
        counts = _fmas_per_pass_of_the_k_loop(asm)
        assert counts and set(counts) == {2}, (f, counts)
