"""kernels.cuda against the NumPy reference, on numba's CUDA simulator (no GPU needed).

The simulator must be chosen before numba.cuda is first imported: this module sets
``NUMBA_ENABLE_CUDASIM=1`` (unless the environment already says otherwise, e.g.
``NUMBA_ENABLE_CUDASIM=0`` on a machine with a GPU to run these same tests on it) and, if numba
itself was imported earlier in this process, makes numba re-read its environment. Nothing else in
the project imports numba.cuda. Should it have been imported without the simulator anyway, the
tests here cannot run in this process: ``test_rerun_in_a_fresh_process`` then runs this file in a
new interpreter instead.

The simulator runs every GPU thread as a Python thread, so shapes are tiny (T, B, I, H ~ 3-5)
and there are few cases; each still goes through every kernel of its path. The multi-block
persistent kernel runs with one launch per step (``PersistentPlan(steps_per_launch=1)``),
because the simulator's cooperative grid is a single block.

**On a real GPU** (``NUMBA_ENABLE_CUDASIM=0 python -m pytest tests/test_cuda_kernels.py``) the
same tests run, plus those marked ``real_gpu``: every cell and path at T=64, B=32, I=128, H=256
(float32 and float64, ragged, reverse) against the float64 reference, H=512 at batch 1 and 64,
and a determinism check (a race shows as results that change between identical runs).
"""
import os
import re
import subprocess
import sys

from _cudasim import READY, needs_cuda, only_when_not_ready, rerun_in_a_fresh_process  # first

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cuda as kc
from kernels import reference as ref
from kernels.cuda import gemm
from kernels.cuda.persistent import PersistentPlan

#: A real GPU answered (not the simulator): the ``real_gpu`` tests run at real sizes.
REAL_GPU = READY and not kc.SIMULATOR
real_gpu = pytest.mark.skipif(not REAL_GPU, reason="real sizes need a GPU: run with "
                              "NUMBA_ENABLE_CUDASIM=0 on a machine with one")

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _problem(cell, rng, T=3, B=3, I=3, H=4, dtype=np.float64, states=True, wscale=0.5):
    """Weights, input, initial states and upstream grads for one cell, as ``dtype``.

    wscale: standard deviation of the weights (at real sizes use ~1/sqrt(H), as initialisers
    do, or every gate saturates and the comparison tests nothing)."""
    G = GATES[cell]

    def r(*shape, scale=wscale):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    weights = (r(G * H, I), r(G * H, H), r(G * H)) + ((r(G * H),) if cell == "gru" else ())
    n_states = 2 if cell == "lstm" else 1
    return dict(
        x=r(T, B, I, scale=1.0), weights=weights,
        states=tuple(r(B, H) for _ in range(n_states)) if states else (None,) * n_states,
        dy=r(T, B, H, scale=1.0), dstates=tuple(r(B, H) for _ in range(n_states)))


def _forward(module, cell, p, lengths, reverse, **kw):
    return getattr(module, f"{cell}_forward")(p["x"], *p["weights"], *p["states"],
                                              lengths=lengths, reverse=reverse, **kw)


def _backward(module, cell, dy, dstates, cache, **kw):
    return getattr(module, f"{cell}_backward")(dy, *dstates, cache, **kw)


def _check_cell(cell, p, lengths, reverse, path, dy=True, dstates=True, rtol=1e-10, atol=1e-10):
    """Forward and backward through kernels.cuda and the reference; every output compared.
    ``path``: one for both, or a tuple (the forward's, the backward's)."""
    path_f, path_b = path if isinstance(path, tuple) else (path, path)
    ours = _forward(kc, cell, p, lengths, reverse, path=path_f)
    theirs = _forward(ref, cell, {k: (tuple(np.float64(a) if a is not None else None for a in v)
                                      if isinstance(v, tuple) else np.float64(v))
                                  for k, v in p.items()}, lengths, reverse)
    up_dy = p["dy"] if dy else None
    up_ds = p["dstates"] if dstates else (None,) * len(p["dstates"])
    g_ours = _backward(kc, cell, up_dy, up_ds, ours[-1], path=path_b)
    g_theirs = _backward(ref, cell, None if up_dy is None else np.float64(up_dy),
                         tuple(None if a is None else np.float64(a) for a in up_ds), theirs[-1])
    got = list(ours[:-1]) + list(g_ours)
    want = list(theirs[:-1]) + list(g_theirs)
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert isinstance(a, np.ndarray) and a.dtype == p["x"].dtype, (k, type(a))
        assert a.shape == b.shape, (k, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{cell} output #{k}")
    return got


# ---------------------------------------------------------------------------------------------
# the tiled matrix multiply
# ---------------------------------------------------------------------------------------------

@needs_cuda
@settings(max_examples=8)
@given(M=st.integers(1, 9), N=st.integers(1, 9), K=st.integers(0, 10),
       trans_a=st.booleans(), trans_b=st.booleans(), tile=st.sampled_from([4, 8]),
       beta=st.sampled_from([0.0, 1.0, -0.5]), seed=st.integers(0, 2**16))
def test_matmul_matches_numpy(M, N, K, trans_a, trans_b, tile, beta, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, M) if trans_a else (M, K))
    B = rng.standard_normal((N, K) if trans_b else (K, N))
    C = rng.standard_normal((M, N))
    got = kc.matmul(A, B, C.copy(), alpha=1.5, beta=beta, trans_a=trans_a, trans_b=trans_b, tile=tile)
    want = 1.5 * (A.T if trans_a else A) @ (B.T if trans_b else B) + beta * C
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@needs_cuda
def test_matmul_16_tiles_ragged_edges_float32(rng):
    """17x18 result, K = 19: every tile of 16 has a partial edge; float32 stays float32."""
    A = rng.standard_normal((19, 17)).astype(np.float32)       # used transposed
    B = rng.standard_normal((18, 19)).astype(np.float32)       # used transposed
    got = kc.matmul(A, B, trans_a=True, trans_b=True, tile=16)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, A.T.astype(np.float64) @ B.T.astype(np.float64), rtol=1e-5, atol=1e-5)


@needs_cuda
def test_matmul_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="B: expected op"):
        kc.matmul(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="C: expected an array"):
        kc.matmul(np.zeros((2, 3)), np.zeros((3, 5)), beta=1.0)


@needs_cuda
@pytest.mark.parametrize("kw, error, match", [
    (dict(trans_b="False"), TypeError, r"^trans_b: expected True or False, got 'False'"),
    (dict(trans_a=np.array([0, 1])), TypeError, r"^trans_a: expected True or False"),
    (dict(alpha=None), TypeError, r"^alpha: expected a real number, got NoneType"),
    (dict(alpha=np.array([1.0, 2.0])), TypeError, r"^alpha: expected a real number, got ndarray"),
    (dict(beta=float("nan"), C=np.zeros((2, 2))), ValueError, r"^beta: expected a finite number"),
    (dict(tile=4.0), ValueError, r"^tile: expected one of \(4, 8, 16, 64\) or None, got 4\.0"),
    (dict(tile=True), ValueError, r"^tile: expected one of .* got True"),
])
def test_matmul_refuses_bad_flags_and_numbers_by_name(kw, error, match):
    """They were taken as bool(...) and dtype.type(...): trans_b='False' computed A @ B.T,
    alpha=None all NaN, tile=4.0 failed in numba's launch."""
    A, B = np.arange(4.0).reshape(2, 2), np.array([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(error, match=match):
        kc.matmul(A, B, **kw)
    np.testing.assert_allclose(kc.matmul(A, B, trans_b=np.bool_(True), alpha=np.float32(2),
                                         tile=np.int64(4)), 2 * A @ B.T)


@needs_cuda
def test_matmul_builds_its_kernel_with_a_python_int_tile(monkeypatch):
    """A NumPy integer tile had built the kernel with it as its constant: on a GPU the shared
    array's shape was then no constant (a typing error), and the cached kernel failed for every
    later product with that tile in the process."""
    from kernels.cuda import gemm
    seen = []
    real = gemm._gemm_kernel
    monkeypatch.setattr(gemm, "_gemm_kernel", lambda dtype, TS: seen.append(TS) or real(dtype, TS))
    A = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(kc.matmul(A, A, trans_b=True, tile=np.int64(8)), A @ A.T)
    assert seen == [8] and type(seen[0]) is int


@needs_cuda
def test_matmul_refuses_a_device_c_that_shares_memory_with_a_or_b():
    """C = A (or a view overlapping B) had been taken: the blocks then read tiles of A that other
    blocks had already overwritten (8x8 ones @ ones + C gave 9s and 41s, not all 9)."""
    from numba import cuda
    big = cuda.to_device(np.ones((16, 8)))
    A, B = big[:8], cuda.to_device(np.ones((8, 8)))
    for C, other in ((A, B), (big[4:12], B), (B, A)):
        with pytest.raises(ValueError, match="^C: expected a device array that shares no memory"):
            kc.matmul(*((A, other) if other is B else (other, B)), C=C, beta=1.0, tile=4)
    np.testing.assert_array_equal(big.copy_to_host(), np.ones((16, 8)))      # nothing written
    C = big[8:]                                              # next to A, not on it: fine
    np.testing.assert_array_equal(kc.matmul(A, B, C=C, beta=1.0, tile=4).copy_to_host(),
                                  np.full((8, 8), 9.0))


@needs_cuda
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_blocked_matmul_ragged_edges(trans_a, trans_b, rng):
    """The register-blocked kernel: a 70 x 67 result (two 64-tiles each way, the second almost
    empty), K = 19 (a full step of 16 and a partial one), alpha and beta, every transpose."""
    M, N, K = 70, 67, 19
    A = rng.standard_normal((K, M) if trans_a else (M, K))
    B = rng.standard_normal((N, K) if trans_b else (K, N))
    C = rng.standard_normal((M, N))
    got = kc.matmul(A, B, C.copy(), alpha=1.5, beta=-0.5, trans_a=trans_a, trans_b=trans_b,
                    tile=gemm.BLOCKED)
    want = 1.5 * (A.T if trans_a else A) @ (B.T if trans_b else B) - 0.5 * C
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_tile_size_picks_the_blocked_kernel_for_wide_results():
    assert gemm.tile_size(6400, 2048) == gemm.BLOCKED and gemm.tile_size(64, 8192) == gemm.BLOCKED
    assert gemm.tile_size(64, 2048) == 16          # 32 tiles of 64: too few blocks for a GPU
    assert gemm.tile_size(63, 1 << 20) == 16 and gemm.tile_size(8, 2048) == 8 and gemm.tile_size(1, 9) == 4


@needs_cuda
@pytest.mark.parametrize("R, N", [(0, 3), (1, 1), (5, 3), (300, 40), (1100, 33)])
def test_column_sum_in_chunks(R, N, rng):
    """Two passes: chunks of 256 rows, then the chunks' sums (1100 rows: five chunks, the last
    partial; 33 and 40 columns: a partial block of 32)."""
    from numba import cuda

    from kernels.cuda import _common
    a = rng.standard_normal((R, N))
    got = _common.column_sum(cuda.to_device(a), np.float64).copy_to_host()
    np.testing.assert_allclose(got, a.sum(0), rtol=1e-12, atol=1e-12)


def _colmajor_gemm(trans1, trans2, m, n, k, alpha, buf1, ld1, buf2, ld2, beta, bufc, ldc):
    """What a column-major BLAS gemm does: C = alpha op(X1) op(X2) + beta C on flat buffers,
    element (i, j) of a column-major matrix with leading dimension ld at buf[i + j * ld]."""
    def mat(buf, rows, cols, ld):
        return buf[:cols * ld].reshape(cols, ld)[:, :rows].T
    X1 = mat(buf1, k, m, ld1).T if trans1 else mat(buf1, m, k, ld1)
    X2 = mat(buf2, n, k, ld2).T if trans2 else mat(buf2, k, n, ld2)
    C = mat(bufc, m, n, ldc)
    C[...] = alpha * X1 @ X2 + beta * C       # a view into bufc


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_cublas_call_computes_the_row_major_product(trans_a, trans_b, rng):
    """The argument mapping for cuBLAS (column-major) run through a column-major gemm in NumPy:
    it must give the row-major ``alpha op(A) op(B) + beta C`` for every transpose."""
    M, N, K = 5, 7, 3
    A = rng.standard_normal((K, M) if trans_a else (M, K))
    B = rng.standard_normal((N, K) if trans_b else (K, N))
    C = rng.standard_normal((M, N))
    want = 2.0 * (A.T if trans_a else A) @ (B.T if trans_b else B) + 0.5 * C
    t1, t2, m, n, k, ld1, ld2, ldc = gemm.cublas_call(M, N, K, trans_a, trans_b, A.shape[1], B.shape[1], N)
    got = C.copy()
    _colmajor_gemm(t1, t2, m, n, k, 2.0, B.ravel(), ld1, A.ravel(), ld2, 0.5, got.reshape(-1), ldc)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


class _FakeCublasLib:
    """Stands in for CuPy's cuBLAS binding: runs gemm in NumPy on buffers registered by
    'pointer', reads alpha and beta from the host addresses it is given, as cuBLAS does."""
    CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_POINTER_MODE_HOST = 0, 1, 0

    def __init__(self, fail=False):
        self.buffers, self.calls, self.fail = {}, [], fail

    def create(self):
        return 7

    def setStream(self, handle, stream):
        self.stream = stream

    def setPointerMode(self, handle, mode):
        self.mode = mode

    def _gemm(self, dtype, handle, t1, t2, m, n, k, palpha, p1, ld1, p2, ld2, pbeta, pc, ldc):
        import ctypes
        if self.fail:
            raise RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED")
        scalar = lambda p: np.frombuffer((ctypes.c_char * dtype.itemsize).from_address(p), dtype)[0]  # noqa: E731
        self.calls.append((t1, t2, m, n, k))
        _colmajor_gemm(t1 == 1, t2 == 1, m, n, k, scalar(palpha), self.buffers[p1], ld1,
                       self.buffers[p2], ld2, scalar(pbeta), self.buffers[pc], ldc)

    def sgemm(self, *args):
        self._gemm(np.dtype(np.float32), *args)

    def dgemm(self, *args):
        self._gemm(np.dtype(np.float64), *args)


class _FakeDeviceArray:
    """What Cublas reads of a numba device array: shape, dtype, contiguity, its pointer."""

    def __init__(self, a, lib):
        import types
        self.a, self.shape, self.dtype = a, a.shape, a.dtype
        self.device_ctypes_pointer = types.SimpleNamespace(value=1000 + len(lib.buffers))
        lib.buffers[self.device_ctypes_pointer.value] = a.reshape(-1)

    def is_c_contiguous(self):
        return True


@pytest.fixture
def fake_cublas(monkeypatch):
    """gemm's cuBLAS path on the fake binding, as on a GPU with CuPy (the simulator flag off for
    gemm only: nothing here launches a kernel)."""
    lib = _FakeCublasLib()
    cb = gemm.Cublas.__new__(gemm.Cublas)
    cb.lib, cb.ops, cb.handles, cb.proven = lib, (0, 1), {}, False
    cb.gemm = {np.dtype(np.float32): lib.sgemm, np.dtype(np.float64): lib.dgemm}
    monkeypatch.setattr(cb, "handle", lambda: 7)
    monkeypatch.setattr(gemm, "SIMULATOR", False)
    monkeypatch.setattr(gemm, "_backend", "auto")
    monkeypatch.setattr(gemm, "_cublas", cb)
    return cb, lib


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, True), (True, False), (False, False)])
def test_gemm_device_sends_big_products_to_cublas(fake_cublas, trans_a, trans_b, dtype, rng):
    """A product of at least CUBLAS_MIN_WORK multiply-adds goes to cuBLAS with the operands,
    transposes and scalars it needs (checked by the result); a smaller one does not; with the
    backend set to numba, none does."""
    cb, lib = fake_cublas
    M, N, K = 300, 256, 256                       # 19.7M multiply-adds >= 2^24
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    want = 1.5 * (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B) + C
    dA, dB, dC = (_FakeDeviceArray(a, lib) for a in (A, B, C))
    assert gemm.gemm_device(dA, dB, dC, alpha=1.5, beta=1.0, trans_a=trans_a, trans_b=trans_b) is dC
    assert lib.calls == [(trans_b, trans_a, N, M, K)] and cb.proven
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(C, want, rtol=tol, atol=tol)
    assert gemm._use_cublas(dA, dB, dC, 255, 256, 256) is None      # 16.7M - 65K < 2^24
    gemm.set_backend("numba")
    assert gemm._use_cublas(dA, dB, dC, M, N, K) is None and gemm.backend() == "numba"


def test_cublas_failing_on_its_first_product_hands_over_to_numba(fake_cublas, rng):
    cb, lib = fake_cublas
    lib.fail = True
    A, B, C = (_FakeDeviceArray(np.zeros(s, np.float32), lib) for s in ((256, 256), (256, 256), (256, 256)))
    with pytest.warns(RuntimeWarning, match="using numba's kernels instead"):
        assert not gemm._cublas_product(cb, A, B, C, 1.0, 0.0, False, False)
    assert gemm._cublas is False and gemm.backend() == "numba"
    gemm._cublas = cb                            # once a product has worked, a failure is raised
    cb.proven = True
    with pytest.raises(RuntimeError, match="NOT_INITIALIZED"):
        gemm._cublas_product(cb, A, B, C, 1.0, 0.0, False, False)


@pytest.mark.parametrize("error, warns", [(ImportError("No module named 'cupy'"), False),
                                          (OSError("libcublas.so.12: cannot open"), True)])
def test_cupy_missing_or_broken_leaves_the_products_to_numba(error, warns, monkeypatch):
    """No CuPy: numba's kernels, silently. A CuPy that fails to load: the same, with a warning.
    RNNCORE_CUDA_GEMM=cublas: either is an error that says what to do."""
    def fail():
        raise error
    monkeypatch.setattr(gemm, "SIMULATOR", False)
    monkeypatch.setattr(gemm, "Cublas", fail)
    monkeypatch.setattr(gemm, "_cublas", None)
    monkeypatch.setattr(gemm, "_backend", "auto")
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert gemm.backend() == "numba" and gemm._cublas is False
    assert any("does not load" in str(w.message) for w in seen) == warns
    monkeypatch.setattr(gemm, "_cublas", None)
    monkeypatch.setattr(gemm, "_backend", "cublas")
    with pytest.raises(RuntimeError, match="RNNCORE_CUDA_GEMM=cublas: .*pip install cupy"):
        gemm.backend()


def test_backend_setting_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="name: expected one of"):
        gemm.set_backend("cudnn")
    monkeypatch.setattr(gemm, "_backend", "fast")          # as if from RNNCORE_CUDA_GEMM
    with pytest.raises(ValueError, match="RNNCORE_CUDA_GEMM: expected one of"):
        gemm.backend()
    if gemm.SIMULATOR:
        monkeypatch.setattr(gemm, "_backend", "cublas")
        with pytest.raises(RuntimeError, match="simulator"):
            gemm.backend()
        monkeypatch.setattr(gemm, "_backend", "auto")
        assert gemm.backend() == "numba"


# ---------------------------------------------------------------------------------------------
# cells vs the reference
# ---------------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("path", ["steps", "persistent"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_ragged_reverse_with_states_matches_reference(cell, path, rng):
    """float64 to 1e-10: ragged lengths (one sequence of length 1), reverse, given h0 (c0),
    every upstream grad given."""
    p = _problem(cell, rng)
    _check_cell(cell, p, np.array([3, 1, 2]), True, path)


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_reverse_is_true_or_false_only(cell, rng):
    """As on the CPU (kernels._common.as_flag): bool("False") would have run in reverse."""
    p = _problem(cell, rng, T=2, B=2)
    for bad in ("False", np.array([1, 0]), 2):
        with pytest.raises(TypeError, match="^reverse: expected True or False"):
            _forward(kc, cell, p, None, bad)


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_defaults_match_reference(cell, rng):
    """lengths=None, reverse=False, zero initial states, only dy given; path="auto"."""
    p = _problem(cell, rng, T=3, B=2, states=False)
    _check_cell(cell, p, None, False, "auto", dstates=False)


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_persistent_multi_block_partition(cell, rng):
    """H = 5 over blocks of 3 units (the last block has 2): the weight slicing and the
    unit-to-block mapping of the persistent kernels, one launch per step (and phase)."""
    p = _problem(cell, rng, T=3, B=2, H=5)
    plan = PersistentPlan(units_per_block=3, steps_per_launch=1)
    _check_cell(cell, p, np.array([2, 3]), True, plan)


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_persistent_batch_chunks_and_tiles(cell, rng):
    """B = 3 in chunks of 2 sequences (the last chunk has 1) and work items of 2 sequences
    (the last item half empty), and items of 1: the staging of h / dG rows through shared memory."""
    p = _problem(cell, rng, T=3, B=3, H=4)
    for tile in (2, 1):
        plan = PersistentPlan(units_per_block=4, batch_chunk=2, batch_tile=tile,
                              threads=(2, 4) if kc.SIMULATOR else None)
        _check_cell(cell, p, np.array([3, 1, 2]), False, plan)


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_persistent_direct_reads_match_reference(cell, rng):
    """Rows read directly from global memory inside the sums instead of staged in shared memory
    first (``staged=False``): two blocks, B = 3 in chunks of 2, items of 2 sequences, ragged,
    reverse."""
    p = _problem(cell, rng, T=3, B=3, H=4)
    plan = PersistentPlan(units_per_block=2, steps_per_launch=1, batch_chunk=2, batch_tile=2,
                          threads=(2, 4) if kc.SIMULATOR else None, staged=False)
    _check_cell(cell, p, np.array([3, 1, 2]), True, plan)


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("staged", [True, False])
def test_persistent_layouts_match_reference(cell, staged, rng):
    """Layouts, staged and direct, ragged, reverse, B = 3:
    - sums unrolled (each thread reads 2 strided values per pass) with items of 8 sequences (one
      item, mostly empty); on a GPU the unroll must divide H / 32, so H = 64 there;
    - the backward's items of several units: 2 per item over blocks of 3 (the last item half past
      the block's units) and 4 over blocks of 4, with items of 2 sequences; the forward then
      runs a plain plan."""
    threads = (2, 4) if kc.SIMULATOR else None
    p = _problem(cell, rng, T=3, B=3, H=4 if kc.SIMULATOR else 64)
    plan = PersistentPlan(units_per_block=2, steps_per_launch=1, batch_tile=8, unroll=2,
                          threads=threads, staged=staged)
    _check_cell(cell, p, np.array([3, 1, 2]), True, plan)
    p = _problem(cell, rng, T=3, B=3, H=6)
    for U, UT in ((3, 2), (4, 4)):
        plain = PersistentPlan(units_per_block=U, steps_per_launch=1, threads=threads)
        tiled = PersistentPlan(units_per_block=U, steps_per_launch=1, batch_tile=2, unit_tile=UT,
                               threads=threads, staged=staged)
        _check_cell(cell, p, np.array([3, 1, 2]), True, (plain, tiled))


@needs_cuda
def test_plan_defaults_follow_the_batch_rows_and_sum_length(monkeypatch):
    """Direct rows take the cell's default unroll where it divides the sums' passes, else 1;
    staged rows take 1. Items hold BATCH_TILE sequences from ONE_PER_ITEM_BELOW on, else 1 (and
    ``plan`` follows changed values). An explicit unroll that does not divide is refused by
    name; 1 always divides."""
    from kernels.cuda import persistent
    monkeypatch.setattr(persistent, "UNROLL", {"rnn": 2})
    monkeypatch.setattr(persistent, "BATCH_TILE", 2)
    monkeypatch.setattr(persistent, "ONE_PER_ITEM_BELOW", {"forward": 3, "backward": 2})
    KS = persistent.SPLIT
    done = lambda H, staged, cell="rnn", B=3, d="forward": persistent._complete(  # noqa: E731
        cell, d, np.float64, B, H, PersistentPlan(1, staged=staged))
    assert (done(2 * KS, False).unroll, done(2 * KS, False).batch_tile) == (2, 2)
    assert done(3 * KS, False).unroll == 1 and done(2 * KS, False, "lstm").unroll == 1
    assert (done(2 * KS, True).unroll, done(2 * KS, True).batch_tile) == (1, 2)
    assert done(2 * KS, True, B=2).batch_tile == 1
    assert done(2 * KS, True, B=2, d="backward").batch_tile == 2
    assert persistent.plan("rnn", "forward", np.float64, 2, 4).batch_tile == 1
    monkeypatch.setattr(persistent, "ONE_PER_ITEM_BELOW", {"forward": 2, "backward": 2})
    assert persistent.plan("rnn", "forward", np.float64, 2, 4).batch_tile == 2
    with pytest.raises(ValueError, match=r"^path: expected unroll dividing the sum's length"):
        persistent.plan_for("rnn", "forward", PersistentPlan(1, unroll=2), np.float64, 2, 3 * KS)
    odd = PersistentPlan(1, unroll=1, steps_per_launch=1)
    assert persistent.plan_for("rnn", "forward", odd, np.float64, 2, 3 * KS + 1).unroll == 1


@needs_cuda
def test_staging_follows_the_batch(monkeypatch):
    """Rows are staged below STAGE_BELOW sequences (per direction) and read directly from there;
    the plan cache follows a changed threshold."""
    from kernels.cuda import persistent
    monkeypatch.setattr(persistent, "STAGE_BELOW", {"forward": 3, "backward": 2})
    staged = lambda direction, B: persistent.plan("lstm", direction, np.float64, B, 4).staged  # noqa: E731
    assert staged("forward", 2) and not staged("forward", 3)
    assert staged("backward", 1) and not staged("backward", 2)
    monkeypatch.setattr(persistent, "STAGE_BELOW", {"forward": 0, "backward": 1 << 30})
    assert not staged("forward", 2) and staged("backward", 2)
    assert persistent.plan_for("gru", "backward", PersistentPlan(4, staged=False),
                               np.float64, 2, 4).staged is False


@needs_cuda
def test_float32_lstm_ragged_with_none_upstream(rng):
    """float32 in, float32 out, close to the float64 reference; dy=None, dc_n=None."""
    p = _problem("lstm", rng, dtype=np.float32)
    p["dstates"] = (p["dstates"][0], None)
    _check_cell("lstm", p, np.array([3, 2, 2]), False, "auto", dy=False, rtol=2e-5, atol=2e-5)


@needs_cuda
def test_device_arrays_stay_on_device(rng):
    """A device x gives device results (forward and backward) equal to the NumPy path's,
    and leaves the caller's device initial state untouched."""
    from numba import cuda
    p = _problem("rnn", rng, T=2, B=2, H=3)
    x_d, h0_d = cuda.to_device(p["x"]), cuda.to_device(p["states"][0])
    y, h_n, cache = kc.rnn_forward(x_d, *p["weights"], h0_d, lengths=np.array([2, 1]))
    assert all(cuda.devicearray.is_cuda_ndarray(a) for a in (y, h_n))
    grads = kc.rnn_backward(cuda.to_device(p["dy"]), None, cache)
    assert all(cuda.devicearray.is_cuda_ndarray(g) for g in grads)
    np.testing.assert_array_equal(h0_d.copy_to_host(), p["states"][0])
    y_np, h_np, cache_np = kc.rnn_forward(p["x"], *p["weights"], p["states"][0], lengths=np.array([2, 1]))
    np.testing.assert_allclose(y.copy_to_host(), y_np, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(h_n.copy_to_host(), h_np, rtol=1e-14, atol=1e-14)
    for g_d, g_np in zip(grads, kc.rnn_backward(p["dy"], None, cache_np)):
        np.testing.assert_allclose(g_d.copy_to_host(), g_np, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# refusals: named arguments, before any work
# ---------------------------------------------------------------------------------------------

@needs_cuda
def test_bad_inputs_are_refused_by_name(rng):
    p = _problem("lstm", rng, T=2, B=2, H=3)
    x, (W_ih, W_hh, b) = p["x"], p["weights"]
    with pytest.raises(ValueError, match=r"^x: expected an array or nested lists of one shape"):
        kc.lstm_forward([x[0], x[1][:, :1]], W_ih, W_hh, b)            # (a ragged list)
    y_swapped = kc.lstm_forward(x.astype(x.dtype.newbyteorder()), W_ih, W_hh, b)[0]
    np.testing.assert_array_equal(y_swapped, kc.lstm_forward(x, W_ih, W_hh, b)[0])   # as the CPU
    with pytest.raises(ValueError, match="W_hh: expected shape"):
        kc.lstm_forward(x, W_ih, W_hh[:-1], b)
    with pytest.raises(ValueError, match="W_ih: expected shape"):
        kc.lstm_forward(x, W_ih[:, :-1], W_hh, b)
    with pytest.raises(ValueError, match="h0: expected shape"):
        kc.lstm_forward(x, W_ih, W_hh, b, h0=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="lengths: expected 1 <= lengths"):
        kc.lstm_forward(x, W_ih, W_hh, b, lengths=np.array([0, 2]))
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64"):
        kc.lstm_forward(x.astype(np.int32), W_ih, W_hh, b)
    with pytest.raises(ValueError, match="path: expected"):
        kc.lstm_forward(x, W_ih, W_hh, b, path="fast")


@needs_cuda
def test_lengths_are_checked_as_the_cpu_kernels_check_them(rng):
    """A masked ``lengths`` had been taken with its mask dropped (the CPU kernels refuse it),
    and uint64 lengths past int64's range were reported as negative values."""
    p = _problem("rnn", rng, T=2, B=2, H=3)
    masked = np.ma.masked_array([1, 2], mask=[True, False])
    with pytest.raises(TypeError, match="^lengths: expected a plain array, got a masked array"):
        _forward(kc, "rnn", p, masked, False)
    with pytest.raises(ValueError, match=r"^lengths: expected 1 <= lengths\[b\] <= T=2, got "
                                         r"min 1, max 9223372036854775809"):
        _forward(kc, "rnn", p, np.array([2**63 + 1, 1], np.uint64), False)
    from numba import cuda
    y_dev_lengths = _forward(kc, "rnn", p, cuda.to_device(np.array([1, 2], np.int32)), False)[0]
    np.testing.assert_array_equal(y_dev_lengths, _forward(kc, "rnn", p, [1, 2], False)[0])


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_float32_steps_path_ragged_matches_reference(cell, rng):
    """The per-step kernels in float32 (at simulator sizes "auto" picks the persistent kernel,
    so the steps ran only when asked for), ragged, both directions."""
    p = _problem(cell, rng, dtype=np.float32)
    for reverse in (False, True):
        _check_cell(cell, p, np.array([3, 1, 2]), reverse, "steps", rtol=2e-5, atol=2e-5)


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_persistent_in_chunks_of_steps_matches_reference(cell, rng):
    """One launch per two steps (``steps_per_launch=2``: T = 3 is a chunk of 2 and one of 1)."""
    p = _problem(cell, rng)
    _check_cell(cell, p, np.array([3, 1, 2]), False, PersistentPlan(units_per_block=4,
                                                                    steps_per_launch=2))


@needs_cuda
def test_auto_falls_back_to_the_steps_where_the_weights_do_not_fit(rng, monkeypatch):
    """"auto" runs the per-step path (and gives the reference's numbers) when no persistent
    plan fits: here the plan is made to say so."""
    from kernels.cuda import persistent
    called = []
    monkeypatch.setattr(persistent, "plan", lambda *a, **k: called.append(a) or None)
    p = _problem("gru", rng)
    _check_cell("gru", p, np.array([2, 3, 1]), True, "auto")
    assert called                                       # (asked, and told: does not fit)


@needs_cuda
@pytest.mark.parametrize("cell, other", [("lstm", "gru"), ("gru", "rnn"), ("rnn", "gru"),
                                         ("rnn", "lstm")])
def test_backward_refuses_another_cells_cache(cell, other, rng):
    """The backward read its cache unchecked: a GRU cache given to rnn_backward gave gradients
    of the wrong shapes, the other way round an IndexError (out of bounds on a GPU)."""
    p, q = _problem(cell, rng, T=2, B=2, H=3), _problem(other, rng, T=2, B=2, H=3)
    cache = _forward(kc, other, q, None, False)[-1]
    cpu_cache = _forward(ref, cell, p, None, False)[-1]
    for bad in (cache, cpu_cache, None, cache[:-1]):
        with pytest.raises(TypeError, match=rf"^cache: expected the cache that "
                                            rf"kernels.cuda.{cell}_forward returned"):
            _backward(kc, cell, p["dy"], p["dstates"], bad)


@needs_cuda
def test_empty_dimensions_and_non_real_weights_are_refused(rng):
    """As on the CPU: T, B, I, H >= 1 (T = 0 had failed inside the persistent path, H = 0 with
    ZeroDivisionError), and real weights (bool was taken, complex lost its imaginary part)."""
    p = _problem("rnn", rng, T=2, B=2, I=3, H=3)
    x, (W_ih, W_hh, b) = p["x"], p["weights"]
    for bad_x in (x[:0], x[:, :0], np.zeros((2, 2, 0))):
        with pytest.raises(ValueError, match=r"^x: expected a \(T, B, I\) array with T, B, I >= 1"):
            kc.rnn_forward(bad_x, np.zeros((3, bad_x.shape[2])), W_hh, b)
    with pytest.raises(ValueError, match=r"^W_hh: expected shape \(1\*H, H\) with H >= 1"):
        kc.rnn_forward(x, np.zeros((0, 3)), np.zeros((0, 0)), np.zeros(0))
    with pytest.raises(TypeError, match="^W_ih: expected a real array, got dtype bool"):
        kc.rnn_forward(x, W_ih > 0, W_hh, b)
    with pytest.raises(TypeError, match="^b: expected a real array, got dtype complex128"):
        kc.rnn_forward(x, W_ih, W_hh, b + 1j)
    # a bias of None had been taken as zeros (the CPU kernels refuse it)
    with pytest.raises(TypeError, match=r"^b: expected a real array of shape \(3,\), got None"):
        kc.rnn_forward(x, W_ih, W_hh, None)
    g = _problem("gru", rng, T=2, B=2, I=3, H=3)
    W_ih, W_hh, b_ih, b_hh = g["weights"]
    with pytest.raises(TypeError, match=r"^b_hh: expected a real array of shape \(9,\), got None"):
        kc.gru_forward(g["x"], W_ih, W_hh, b_ih, None)


@needs_cuda
@pytest.mark.parametrize("plan, match", [
    (PersistentPlan(units_per_block=4, steps_per_launch=-1), "steps_per_launch >= 0"),
    (PersistentPlan(units_per_block=4, threads=(0, 2)), r"threads \(KS, PS\)"),
    (PersistentPlan(units_per_block=4, batch_chunk=0), "batch_chunk >= 1"),
    (PersistentPlan(units_per_block=4, batch_tile=3), r"batch_tile one of \(1, 2, 4, 8\), got 3"),
    (PersistentPlan(units_per_block=4, unroll=3), r"unroll one of \(1, 2, 4, 8\) or None, got 3"),
    (PersistentPlan(units_per_block=4, unit_tile=3), r"unit_tile one of \(1, 2, 4\) or None, got 3"),
    (PersistentPlan(units_per_block=4, unit_tile=2), r"unit_tile 1 or None in a forward"),
] + ([(PersistentPlan(units_per_block=4, threads=(2, 64)), r"KS\*PS <= 64 on the CUDA simulator")]
     if kc.SIMULATOR else []))
def test_bad_persistent_plans_are_refused(plan, match, rng):
    """These were taken, and computed numbers far from the reference."""
    p = _problem("lstm", rng, T=2, B=2, H=4)
    with pytest.raises(ValueError, match=f"^path: expected {match}" if "KS" not in match
                       else match):
        _forward(kc, "lstm", p, None, False, path=plan)


@needs_cuda
@pytest.mark.parametrize("plan, match", [
    (PersistentPlan(units_per_block=2.0, steps_per_launch=1), "units_per_block an int, got 2.0"),
    (PersistentPlan(units_per_block=True), "units_per_block an int, got True"),
    (PersistentPlan(units_per_block=4, steps_per_launch=1.0), "steps_per_launch an int, got 1.0"),
    (PersistentPlan(units_per_block=4, batch_chunk=1.5), "batch_chunk an int or None, got 1.5"),
    (PersistentPlan(units_per_block=4, threads=(2, 2, 2)), "threads a pair of ints"),
    (PersistentPlan(units_per_block=4, staged=1), "staged True, False or None, got 1"),
    (PersistentPlan(units_per_block=4, unroll=2.0), "unroll an int or None, got 2.0"),
    (PersistentPlan(units_per_block=4, unit_tile=2.0), "unit_tile an int or None, got 2.0"),
])
def test_persistent_plan_fields_of_another_type_are_refused_by_name(plan, match, rng):
    """A float or a string had failed inside the kernel launch, in numba's words."""
    p = _problem("lstm", rng, T=2, B=2, H=4)
    with pytest.raises(TypeError, match=f"^path: expected {re.escape(match)}"):
        _forward(kc, "lstm", p, None, False, path=plan)


@needs_cuda
def test_persistent_refused_when_weights_do_not_fit():
    """float64 LSTM, H = 1300: one hidden unit's rows of W_hh (4 x 1300 x 8 bytes = 40.6 KiB) plus
    the partial-sum buffer exceed a block's 48 KiB, on any GPU and on the simulator.
    "persistent" refuses, "auto" falls back to the steps."""
    from kernels.cuda import persistent
    assert persistent.plan("lstm", "forward", np.float64, 1, 1300) is None
    small = persistent.plan("lstm", "forward", np.float64, 1, 4)
    assert small is not None and small.blocks(4) >= 1
    if kc.SIMULATOR:                       # one block: it owns every unit
        assert small.units_per_block == 4 and small.batch_chunk == 1
    x = np.zeros((1, 1, 1))
    W_ih, W_hh, b = np.zeros((5200, 1)), np.zeros((5200, 1300)), np.zeros(5200)
    with pytest.raises(ValueError, match="does not fit"):
        kc.lstm_forward(x, W_ih, W_hh, b, path="persistent")
    if kc.SIMULATOR:
        with pytest.raises(ValueError, match="steps_per_launch=1"):
            kc.lstm_forward(x[:, :, :1], W_ih[:192], W_hh[:192, :48], b[:192],
                            path=PersistentPlan(units_per_block=8))


# ---------------------------------------------------------------------------------------------
# real sizes (a GPU only)
# ---------------------------------------------------------------------------------------------

def _rel_err(a, b):
    """||a - b|| / ||b|| (Frobenius), the measure for large float32 results."""
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-300))


def _check_real(cell, T, B, I, H, dtype, path, reverse, rng, tol):
    p = _problem(cell, rng, T=T, B=B, I=I, H=H, dtype=dtype, wscale=1.0 / np.sqrt(H))
    lengths = np.maximum(1, T - (np.arange(B) * 7) % T)               # ragged, one of length T
    ours = _forward(kc, cell, p, lengths, reverse, path=path)
    p64 = {k: (tuple(None if a is None else np.float64(a) for a in v) if isinstance(v, tuple)
               else np.float64(v)) for k, v in p.items()}
    theirs = _forward(ref, cell, p64, lengths, reverse)
    g_ours = _backward(kc, cell, p["dy"], p["dstates"], ours[-1], path=path)
    g_theirs = _backward(ref, cell, p64["dy"], p64["dstates"], theirs[-1])
    errs = []
    for k, (a, b) in enumerate(zip(list(ours[:-1]) + list(g_ours),
                                   list(theirs[:-1]) + list(g_theirs))):
        assert a.dtype == dtype and a.shape == b.shape, (k, a.dtype, a.shape, b.shape)
        assert np.all(np.isfinite(a)), f"{cell} {path} output #{k} not finite"
        errs.append(_rel_err(a, b))
    assert max(errs) < tol, (cell, path, np.dtype(dtype).name, errs)
    return ours, g_ours


@pytest.fixture(params=["auto", "numba"])
def gemm_backend(request, monkeypatch):
    """The cells' products on the default backend (cuBLAS where CuPy is installed) and on
    numba's kernels alone (the register-blocked kernel for the big products)."""
    monkeypatch.setattr(gemm, "_backend", request.param)
    monkeypatch.setattr(gemm, "_cublas", None)
    return request.param


@real_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ["steps", "persistent"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_real_size_matches_reference(cell, path, dtype, gemm_backend, rng):
    """T=64, B=32, I=128, H=256, ragged and reverse: every output and gradient within
    ||ours - ref|| / ||ref|| < 1e-5 (float32) or 1e-11 (float64) of the float64 reference."""
    tol = 1e-5 if dtype == np.float32 else 1e-11
    _check_real(cell, 64, 32, 128, 256, dtype, path, True, rng, tol)


@real_gpu
@pytest.mark.parametrize("backend", ["numba", "cublas"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_real_matmul_on_each_backend(backend, trans_a, trans_b, rng, monkeypatch):
    """A 1000 x 700 x 300 float32 product (register-blocked kernel, or cuBLAS) with alpha, beta
    and every transpose, against float64 NumPy."""
    if backend == "cublas":
        pytest.importorskip("cupy")
    monkeypatch.setattr(gemm, "_backend", backend)
    monkeypatch.setattr(gemm, "_cublas", None)
    assert gemm.backend() == backend
    M, N, K = 1000, 700, 300
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    C = rng.standard_normal((M, N)).astype(np.float32)
    got = kc.matmul(A, B, C.copy(), alpha=0.5, beta=2.0, trans_a=trans_a, trans_b=trans_b)
    want = 0.5 * np.float64(A.T if trans_a else A) @ np.float64(B.T if trans_b else B) + 2.0 * C
    assert _rel_err(got, want) < 1e-6


@real_gpu
@pytest.mark.parametrize("B", [1, 64])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_real_h512_persistent_matches_reference(cell, B, rng):
    """H = 512 float32, the benchmark's shape family: the persistent kernel over 100+ blocks."""
    _check_real(cell, 32, B, 64, 512, np.float32, "persistent", False, rng, 1e-5)


@real_gpu
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_real_persistent_is_deterministic(cell, rng):
    """Three identical persistent runs give bit-identical results: a missing barrier or a read of
    a value another block has not yet written shows up as results that move between runs."""
    p = _problem(cell, rng, T=48, B=16, I=32, H=384, dtype=np.float32, wscale=1 / np.sqrt(384))
    lengths = np.maximum(1, 48 - np.arange(16) * 3)
    runs = []
    for _ in range(3):
        out = _forward(kc, cell, p, lengths, False, path="persistent")
        runs.append(list(out[:-1]) + list(_backward(kc, cell, p["dy"], p["dstates"], out[-1],
                                                    path="persistent")))
    for other in runs[1:]:
        for k, (a, b) in enumerate(zip(runs[0], other)):
            np.testing.assert_array_equal(a, b, err_msg=f"{cell} output #{k} moved between runs")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_results_of_earlier_calls_survive_later_calls(cell, rng):
    """Buffers are reused between calls (the pool on a GPU): results a caller still holds, device
    or host, and a forward's cache must never be overwritten by a later call."""
    from numba import cuda
    kw = dict(T=5, B=3, I=4, H=6) if REAL_GPU else {}
    p1 = _problem(cell, rng, dtype=np.float32, **kw)
    p2 = _problem(cell, rng, dtype=np.float32, **kw)
    dev = lambda p: dict(p, x=cuda.to_device(p["x"]))           # noqa: E731
    first = _forward(kc, cell, dev(p1), None, False)
    kept = [a.copy_to_host() for a in first[:-1]]
    g1 = [a.copy_to_host() for a in _backward(kc, cell, p1["dy"], p1["dstates"], first[-1])]
    for _ in range(2):                     # later calls at the same shapes, other values
        _backward(kc, cell, p2["dy"], p2["dstates"], _forward(kc, cell, dev(p2), None, False)[-1])
    for a, b in zip(first[:-1], kept):
        np.testing.assert_array_equal(a.copy_to_host(), b)
    again = _backward(kc, cell, p1["dy"], p1["dstates"], first[-1])   # the cache is intact too
    for a, b in zip(again, g1):
        np.testing.assert_array_equal(a.copy_to_host(), b)


@given(st.integers(1, 1 << 34))
@settings(max_examples=200, deadline=None)
def test_pool_size_classes_fit_and_waste_at_most_a_quarter(nbytes):
    """A request gets a block of its size class: never smaller, at most 25 % (or 511 bytes) larger,
    and sizes that differ a little share a class (so reuse happens across nearby shapes)."""
    from kernels.cuda._common import _size_class
    c = _size_class(nbytes)
    assert nbytes <= c <= nbytes + max(511, nbytes // 4)
    assert _size_class(c) == c


@real_gpu
def test_real_pool_reuses_blocks_and_slices_keep_them():
    """A dropped array's block is handed out again; a slice of it keeps it out of the pool."""
    import gc
    from kernels.cuda import _common
    _common.enter()
    ptr = lambda a: a.device_ctypes_pointer.value                 # noqa: E731
    a = _common.empty((1000,), np.float32)
    a.copy_to_device(np.arange(1000, dtype=np.float32))
    where = ptr(a)
    part = a[100:110]
    del a
    gc.collect()
    b = _common.empty((1000,), np.float32)                        # must not get the held block
    assert ptr(b) != where
    b.copy_to_device(np.zeros(1000, np.float32))
    np.testing.assert_array_equal(part.copy_to_host(), np.arange(100, 110, dtype=np.float32))
    del part
    gc.collect()
    c = _common.empty((990,), np.float32)                         # same size class: reused
    assert ptr(c) == where
    z = _common.zeros((3, 7), np.float64)
    np.testing.assert_array_equal(z.copy_to_host(), np.zeros((3, 7)))


@real_gpu
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_real_direct_launch_matches_numba_launch(cell, rng):
    """The direct driver launch is used, and gives bit-identical results to numba's launch."""
    from kernels.cuda import _common
    p = _problem(cell, rng, T=20, B=4, I=32, H=128, dtype=np.float32, wscale=1 / np.sqrt(128))
    lengths = np.maximum(1, 20 - np.arange(4) * 3)
    runs = []
    for direct in (False, True, True):
        _common.DIRECT_LAUNCH = direct
        try:
            for path in ("persistent", "steps"):
                out = _forward(kc, cell, p, lengths, True, path=path)
                runs.append((direct, path, list(out[:-1]) + list(
                    _backward(kc, cell, p["dy"], p["dstates"], out[-1], path=path))))
        finally:
            _common.DIRECT_LAUNCH = True
    assert sum(d is not None for d in _common._DIRECT.values()) >= 4, _common._DIRECT
    for k, (_, path, ref_run) in enumerate(runs[:2]):
        for direct, path2, run in runs[2 + k::2]:
            assert path2 == path
            for a, b in zip(run, ref_run):
                np.testing.assert_array_equal(a, b, err_msg=f"{cell} {path} direct={direct}")


# ---------------------------------------------------------------------------------------------
# The simulator: launches switch threads faster, and its static shared arrays are thread-safe
# ---------------------------------------------------------------------------------------------

simulator_only = pytest.mark.skipif(not (READY and kc.SIMULATOR), reason="the simulator's own "
                                    "behaviour: nothing to check on a GPU")


@needs_cuda
@simulator_only
def test_simulated_threads_that_race_for_a_static_shared_array_get_the_same_one():
    """Eight threads ask at once for the shared array of one source line, each paused inside
    the lookup (as a thread switch there would): all get one array. The simulator's own lookup,
    unlocked, gives each its own, and a block's sums then read other threads' stale arrays."""
    import threading
    import time
    from numba.cuda.simulator import kernelapi
    shared = kernelapi.FakeCUDAShared(0)

    class SlowLookup(dict):
        def get(self, key, default=None):
            found = super().get(key, default)
            time.sleep(0.005)                   # every other thread runs meanwhile
            return found

    shared._allocations = SlowLookup()
    start, got = threading.Barrier(8), []

    def thread():
        start.wait()
        got.append(shared.array((4,), np.float32))

    threads = [threading.Thread(target=thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(a is got[0] for a in got)
    assert len(shared._allocations) == 1


@needs_cuda
@simulator_only
def test_a_simulated_launch_switches_threads_faster_and_then_puts_the_interval_back():
    """Inside a simulated kernel the interpreter's switch interval is SIMULATOR_SWITCH_INTERVAL
    (so the simulator's polling thread lets the GPU threads run); after it, even after a kernel
    that raised, the interval is what it was."""
    from numba import cuda
    from kernels.cuda import _common
    seen = []

    @cuda.jit
    def record(out, i):
        seen.append(sys.getswitchinterval())    # (the simulator runs kernels as Python)
        out[i] = 1.0

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        out = np.zeros(2)
        _common.launch(record, 1, 2, 0, out, 1)
        assert out.tolist() == [0.0, 1.0]
        assert seen == [pytest.approx(_common.SIMULATOR_SWITCH_INTERVAL)] * 2
        assert sys.getswitchinterval() == pytest.approx(0.005)
        with pytest.raises(IndexError):
            _common.launch(record, 1, 2, 0, out, 2)   # past the end of out
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(before)


@needs_cuda
@simulator_only
def test_overlapping_simulated_launches_put_the_interval_back():
    """Two threads' launches overlapping (one starts, the other starts, the first ends, then the
    second): the interval is the one from before both. Each launch had restored what it found,
    so the second put back the first one's short interval, and the process kept it."""
    from kernels.cuda import _common
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        first, second = _common._simulator_switching(), _common._simulator_switching()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert sys.getswitchinterval() == pytest.approx(_common.SIMULATOR_SWITCH_INTERVAL)
        second.__exit__(None, None, None)
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(before)


# ---------------------------------------------------------------------------------------------
# CPU-only users never touch numba.cuda
# ---------------------------------------------------------------------------------------------

def test_cpu_imports_do_not_load_numba_cuda_and_missing_cuda_is_explained():
    """In a fresh process without the simulator: ``import rnncore`` / ``kernels`` leave numba.cuda
    alone; ``kernels.cuda`` imports, and without a GPU its kernels (and ``persistent.plan``,
    which had raised numba's CudaSupportError) raise a RuntimeError saying what to install or
    set: the simulator's variable set before numba is imported."""
    code = (
        "import sys, numpy as np\n"
        "import kernels, kernels.reference, rnncore\n"
        "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported by a CPU import'\n"
        "import kernels.cuda as kc\n"
        "if kc.is_available():\n"
        "    print('gpu')\n"
        "else:\n"
        "    try:\n"
        "        kc.rnn_forward(np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1))\n"
        "    except RuntimeError as e:\n"
        "        assert 'NUMBA_ENABLE_CUDASIM' in str(e) and '.[cuda]' in str(e), str(e)\n"
        "        assert 'before numba is imported' in str(e), str(e)\n"
        "    from kernels.cuda import persistent\n"
        "    try:\n"
        "        persistent.plan('lstm', 'forward', np.float32, 2, 4)\n"
        "    except RuntimeError as e:\n"
        "        assert 'NUMBA_ENABLE_CUDASIM' in str(e), str(e)\n"
        "        print('explained')\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("gpu", "explained"), out.stdout


@only_when_not_ready
def test_rerun_in_a_fresh_process():
    rerun_in_a_fresh_process(__file__)


@needs_cuda
@pytest.mark.parametrize("path", ["steps", "persistent"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_matches_torch(cell, path, rng):
    """float64, against PyTorch's layer on the CPU (the same weights; LSTM and RNN take the sum
    of PyTorch's two biases): outputs, final states and every gradient, given h0 (c0) and
    upstream grads of y and of the final states."""
    torch = pytest.importorskip("torch")
    T, B, I, H = 3, 2, 3, 4
    tl = dict(lstm=torch.nn.LSTM, gru=torch.nn.GRU, rnn=torch.nn.RNN)[cell](I, H).double()
    sd = {k: v.detach().numpy() for k, v in tl.state_dict().items()}
    biases = ((sd["bias_ih_l0"], sd["bias_hh_l0"]) if cell == "gru"
              else (sd["bias_ih_l0"] + sd["bias_hh_l0"],))
    n_states = 2 if cell == "lstm" else 1
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    s0 = [rng.standard_normal((B, H)) for _ in range(n_states)]
    ds = [rng.standard_normal((B, H)) for _ in range(n_states)]

    ours = getattr(kc, f"{cell}_forward")(x, sd["weight_ih_l0"], sd["weight_hh_l0"], *biases, *s0,
                                          path=path)
    grads = getattr(kc, f"{cell}_backward")(dy, *ds, ours[-1], path=path)

    xt = torch.from_numpy(x).requires_grad_()
    st = [torch.from_numpy(s[None]).requires_grad_() for s in s0]
    y, fin = tl(xt, tuple(st) if cell == "lstm" else st[0])
    fin = fin if cell == "lstm" else (fin,)
    loss = (y * torch.from_numpy(dy)).sum() + sum((f * torch.from_numpy(d[None])).sum()
                                                  for f, d in zip(fin, ds))
    loss.backward()
    want = [y, *(f[0] for f in fin)]
    for k, (a, b) in enumerate(zip(ours[:-1], want)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"output {k}")
    params = dict(tl.named_parameters())
    want_g = [xt.grad, params["weight_ih_l0"].grad, params["weight_hh_l0"].grad]
    want_g += ([params["bias_ih_l0"].grad, params["bias_hh_l0"].grad] if cell == "gru"
               else [params["bias_ih_l0"].grad])                   # = bias_hh's: they are summed
    want_g += [s.grad[0] for s in st]
    assert len(grads) == len(want_g)
    for k, (a, b) in enumerate(zip(grads, want_g)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-10, err_msg=f"gradient {k}")


# -- launch edges, buffers never read before written, the caller's device arrays -------------
def _small(cell, T=2, B=2, H=3):
    return _problem(cell, np.random.default_rng(0), T=T, B=B, I=2, H=H, states=False)


@needs_cuda
@pytest.mark.parametrize("cell", sorted(GATES))
def test_pointwise_kernels_over_several_blocks(cell, monkeypatch):
    """Blocks of 4 threads: B*H = 6 units need two blocks, the second partial (on a GPU, any
    B*H above 128 and not a multiple of it). A grid rounded down left units uncomputed; a
    loosened ``idx < B*H`` wrote past the arrays (every other test fits in one block)."""
    from kernels.cuda import _common
    monkeypatch.setattr(_common, "MAX_THREADS_1D", 4)
    _check_cell(cell, _small(cell), np.array([2, 1]), False, "steps")


@needs_cuda
@pytest.mark.parametrize("path", ["steps", "persistent"])
@pytest.mark.parametrize("cell", sorted(GATES))
def test_buffers_are_written_before_they_are_read(cell, path, monkeypatch):
    """Every device buffer from ``empty`` starts as NaN (a recycled block of the memory pool
    may hold anything; the simulator's held finite values, so 0 * garbage passed): ragged and
    reversed, every output and gradient still matches the reference."""
    import kernels.cuda.gemm
    import kernels.cuda.gru
    import kernels.cuda.lstm
    import kernels.cuda.persistent
    import kernels.cuda.rnn
    from numba import cuda
    from kernels.cuda import _common
    poisoned = lambda shape, dtype: cuda.to_device(np.full(shape, np.nan, dtype))   # noqa: E731
    for module in (_common, kernels.cuda.lstm, kernels.cuda.gru, kernels.cuda.rnn,
                   kernels.cuda.persistent, kernels.cuda.gemm):
        if hasattr(module, "empty"):
            monkeypatch.setattr(module, "empty", poisoned)
    _check_cell(cell, _small(cell, T=3, B=3), np.array([3, 1, 2]), True, path)


@needs_cuda
@pytest.mark.parametrize("tile", [4, 16, 64])
def test_matmul_with_beta_zero_never_reads_c(tile):
    got = kc.matmul(np.ones((5, 3)), np.ones((3, 6)), np.full((5, 6), np.nan), beta=0.0, tile=tile)
    np.testing.assert_array_equal(got, np.full((5, 6), 3.0))


@needs_cuda
@pytest.mark.parametrize("path", ["steps", "persistent"])
@pytest.mark.parametrize("cell", sorted(GATES))
def test_the_callers_device_states_and_grads_are_left_as_they_were(cell, path):
    """Device h0/c0 and dh_n/dc_n are inputs: the kernels work on copies (the steps path had
    updated h0 in place, and both paths added into dh_n, when the copy was skipped)."""
    from numba import cuda
    p = _small(cell)
    s0 = [np.full((2, 3), 0.1 * (k + 1)) for k in range(len(p["states"]))]
    ds = [np.full((2, 3), 0.5 * (k + 1)) for k in range(len(p["states"]))]
    s0_d, ds_d = [cuda.to_device(a) for a in s0], [cuda.to_device(a) for a in ds]
    out = getattr(kc, f"{cell}_forward")(cuda.to_device(p["x"]), *p["weights"], *s0_d,
                                         lengths=np.array([2, 1]), path=path)
    getattr(kc, f"{cell}_backward")(None, *ds_d, out[-1], path=path)
    for d, a in zip(s0_d + ds_d, s0 + ds):
        np.testing.assert_array_equal(d.copy_to_host(), a)


@needs_cuda
@pytest.mark.parametrize("path", [np.array("steps"), b"steps", "tiled", None])
def test_a_path_that_is_not_one_of_the_names_is_refused(path, rng):
    """A 0-d array holding 'steps' compared equal to it and was taken."""
    p = _problem("gru", rng, T=2, B=2, H=4)
    with pytest.raises(ValueError, match="^path: expected 'auto', 'steps', 'persistent' or a "
                                         "PersistentPlan, got"):
        _forward(kc, "gru", p, None, False, path=path)


def test_kernel_arrays_have_constant_shapes():
    """numba.cuda types ``cuda.local.array`` / ``cuda.shared.array`` only with a constant shape:
    a literal or a name bound outside the kernel, or a tuple of them. An expression such as
    ``NB * UT`` is typed as a run-time int, a typing error on a GPU, while the simulator (plain
    Python) takes it: this is the check CI can make without a GPU (``benchmarks/gpu.py
    --compile-only`` compiles every default kernel where numba-cuda is installed)."""
    import ast
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "kernels", "cuda")
    plain = lambda n: isinstance(n, (ast.Constant, ast.Name))          # noqa: E731
    seen, bad = 0, []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(root, name)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "array" and isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr in ("local", "shared")):
                seen += 1
                shape = node.args[0]
                if not (plain(shape) or (isinstance(shape, ast.Tuple) and all(map(plain, shape.elts)))):
                    bad.append(f"{name}:{node.lineno}: {ast.unparse(shape)}")
    assert seen >= 10 and not bad, (seen, bad)
