"""The tiled float32 kernels of every cell (``kernels/lstm_tiled.py``, ``gru_tiled.py``,
``rnn_tiled.py``), each through its cell's wrapper with ``path="tiled"``: against the float64
reference for every padding case (B not a multiple of 4, H not a multiple of 64, I not a multiple
of 4), ragged, reversed, with initial states, and against PyTorch; the same bits whatever the
number of threads and whether the backward goes by rows or by units; caches and inputs left
alone; where the LSTM and the GRU leave the weight gradients to BLAS. What is a cell's own
(its auto rule, its BLAS weight gradients against the team's, the team's own parts) is in that
cell's ``test_kernels_<cell>_tiled.py``."""

import importlib

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.reference as ref
from kernels import _gemm, gru, lstm, lstm_tiled, rnn
from kernels._team import team_size

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
BIASES = {"lstm": 1, "gru": 2, "rnn": 1}
STATES = {"lstm": 2, "gru": 1, "rnn": 1}
FAST = {"lstm": lstm, "gru": gru, "rnn": rnn}
CELLS = sorted(GATES)


def _problem(cell, rng, T, B, I, H, scale=0.3):
    """float64 (x, W_ih, W_hh, *biases, *initial states) of ``cell``."""
    G = GATES[cell]
    x = rng.standard_normal((T, B, I))
    W = [rng.uniform(-scale, scale, (G * H, K)) for K in (I, H)]
    biases = [rng.uniform(-scale, scale, G * H) for _ in range(BIASES[cell])]
    states = [rng.standard_normal((B, H)) * 0.5 for _ in range(STATES[cell])]
    return (x, *W, *biases, *states)


def _f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


def forward(cell, args, **kw):
    """``<cell>_forward(*args, **kw)``: (y, *final states, cache)."""
    return getattr(FAST[cell], f"{cell}_forward")(*args, **kw)


def backward(cell, dy, dstates, cache):
    """``<cell>_backward(dy, *dstates, cache)``: the gradients."""
    return getattr(FAST[cell], f"{cell}_backward")(dy, *dstates, cache)


def _upstream(cell, rng, T, B, H):
    """float32 dy and one upstream gradient per final state."""
    return _f32(rng.standard_normal((T, B, H)),
                *(rng.standard_normal((B, H)) for _ in range(STATES[cell])))


def _check_against_reference(cell, T, B, I, H, seed, ragged, reverse):
    rng = np.random.default_rng(seed)
    args = _problem(cell, rng, T, B, I, H)
    lengths = rng.integers(1, T + 1, B) if ragged else None
    *out, cache = forward(cell, _f32(*args), lengths=lengths, reverse=reverse, path="tiled")
    assert cache[0] == "tiled"
    *want, cache_r = getattr(ref, f"{cell}_forward")(*args, lengths=lengths, reverse=reverse)
    for got, w in zip(out, want):
        assert got.dtype == np.float32 and got.shape == w.shape
        np.testing.assert_allclose(got, w, atol=2e-5)
    dy, *dstates = _upstream(cell, rng, T, B, H)
    got = backward(cell, dy, dstates, cache)
    want = getattr(ref, f"{cell}_backward")(*[a.astype(np.float64) for a in (dy, *dstates)],
                                           cache_r)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == np.float32, i
        np.testing.assert_allclose(g, w, atol=2e-4 * max(1.0, np.abs(w).max()), err_msg=str(i))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T, B, I, H", [
    (5, 8, 4, 64),          # no padding
    (4, 9, 3, 70),          # B, I, H all padded
    (3, 33, 5, 130),        # more than one row group, three backward tiles
    (2, 4, 200, 64),        # I > the k-chunk
    (3, 8, 5, 200),         # H > the k-chunk (the steps' products in chunks), 4 backward tiles
    (35, 8, 3, 64),         # a longer sequence: 280 rows in the input product
    (1, 4, 2, 64),          # one step: dh0 straight after the last cell
])
def test_matches_the_reference(cell, T, B, I, H, ragged, reverse):
    _check_against_reference(cell, T, B, I, H, 0, ragged, reverse)


@pytest.mark.parametrize("cell", CELLS)         # (each cell its own draws: a sampled cell
@given(T=st.integers(1, 4), B=st.integers(1, 13),  # left the GRU without a ragged one)
       I=st.integers(1, 9), H=st.integers(1, 140), ragged=st.booleans(), reverse=st.booleans(),
       seed=st.integers(0, 2**16))
@settings(max_examples=14, deadline=None)
def test_matches_the_reference_any_shape(cell, T, B, I, H, ragged, reverse, seed):
    """path="tiled" works at any shape (auto only picks it where it is faster)."""
    _check_against_reference(cell, T, B, I, H, seed, ragged, reverse)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T, B, ragged", [(49, 24, True), (64, 32, False)])
def test_matches_the_reference_with_capped_panels(cell, T, B, ragged):
    """T * B above 8 * IN_ROWS (``lstm_tiled._input_part``, which every cell's forward runs):
    the input product's panels are capped at IN_ROWS rows (the last one partial at 1176 rows),
    a regime none of the shapes above reaches."""
    assert T * B > 8 * lstm_tiled.IN_ROWS
    _check_against_reference(cell, T, B, 5, 64, 1, ragged, False)


@pytest.mark.parametrize("cell", CELLS)
def test_same_bits_with_one_thread_or_all(cell):
    """Each tile's sums do not depend on how tiles are shared out: results are bit-identical."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only: no second sharing of the tiles to compare with")
    rng = np.random.default_rng(4)
    T, B, I, H = 5, 24, 7, 130
    args = _f32(*_problem(cell, rng, T, B, I, H))
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    runs = []
    before = numba.get_num_threads()
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            *out, cache = forward(cell, args, path="tiled")
            runs.append(tuple(out) + tuple(backward(cell, dy, [None] * STATES[cell], cache)))
    finally:
        numba.set_num_threads(before)
    for u, v in zip(runs[0], runs[-1]):
        np.testing.assert_array_equal(u, v)


def _backward_team(B, H):
    """(Bp, n_workers) as every tiled backward computes them for a batch B and H units."""
    t = lstm_tiled
    Bp, Hp = t._round_up(B, t.R), t._round_up(H, t.V)
    return Bp, team_size((Hp // t.V) * -(-Bp // t.RG))


@pytest.mark.parametrize("cell, by_blas", [("lstm", False), ("lstm", True), ("gru", False),
                                           ("gru", True), ("rnn", False)])
@pytest.mark.parametrize("T, B, I, H, ragged, reverse", [
    (6, 8, 5, 128, False, False),     # two register tiles of rows, one for each worker
    (5, 9, 3, 70, True, True),        # Bp = 12: three tiles of rows, shared 1 / 2; padded H
    (4, 21, 7, 130, True, False),     # Bp = 24, three backward tiles of units
])
def test_backward_by_rows_or_by_units_gives_the_same_bits(monkeypatch, cell, by_blas, T, B, I,
                                                          H, ragged, reverse):
    """The backward's steps shared out by rows (each worker its own sequences, no barrier per
    step) or by units (a barrier per step) compute every tile's sums alike: the same bits (the
    LSTM's and the GRU's also with BLAS's weight gradients)."""
    if numba.get_num_threads() < 2:
        pytest.skip("one thread only: the backward runs one worker, by units")
    rng = np.random.default_rng(11)
    args = _f32(*_problem(cell, rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B) if ragged else None
    dy, *dstates = _upstream(cell, rng, T, B, H)
    *_, cache = forward(cell, args, lengths=lengths, reverse=reverse, path="tiled")
    if by_blas:                                     # (the LSTM's and the GRU's)
        tiled = importlib.import_module(f"kernels.{cell}_tiled")
        monkeypatch.setattr(tiled, "BLAS_GRADS_MIN_H", 0)
        monkeypatch.setattr(tiled, "BLAS_GRADS_FROM", 0)
    monkeypatch.setattr(lstm_tiled, "BACKWARD_BY_ROWS", True)   # (the rule: AVX-512 CPUs)
    assert lstm_tiled._backward_rows(*_backward_team(B, H)) == 1
    rows = backward(cell, dy, dstates, cache)
    monkeypatch.setattr(lstm_tiled, "BACKWARD_BY_ROWS", False)
    assert lstm_tiled._backward_rows(*_backward_team(B, H)) == 0
    units = backward(cell, dy, dstates, cache)
    for i, (a, b) in enumerate(zip(rows, units)):
        np.testing.assert_array_equal(a, b, err_msg=str(i))
    *_, cache_r = getattr(ref, f"{cell}_forward")(*[a.astype(np.float64) for a in args],
                                                  lengths=lengths, reverse=reverse)
    want = getattr(ref, f"{cell}_backward")(*[a.astype(np.float64) for a in (dy, *dstates)],
                                           cache_r)
    for i, (a, w) in enumerate(zip(rows, want)):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-4, err_msg=str(i))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T, B, I, H, ragged, reverse", [
    (5, 3, 7, 70, True, False),       # padded B, I and H (Hp = 128), ragged
    (6, 4, 4, 64, True, True),        # no padding, reversed
    (4, 9, 2, 16, False, False),      # one unit tile of 16, Hp = 64
])
def test_weight_grads_by_blas_match_the_reference_and_the_team(monkeypatch, cell, T, B, I, H,
                                                               ragged, reverse):
    """The LSTM's and the GRU's backward whose weight gradients BLAS computes from dz in
    PyTorch's columns (taken for large shapes on AVX-512 CPUs: forced here at any size) gives
    the reference's gradients and the team's up to float32 rounding; the initial states'
    gradients, the steps' own, are the same bits."""
    rng = np.random.default_rng(7)
    args = _f32(*_problem(cell, rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B) if ragged else None
    dy, *dstates = _upstream(cell, rng, T, B, H)
    *_, cache = forward(cell, args, lengths=lengths, reverse=reverse, path="tiled")
    tiled = importlib.import_module(f"kernels.{cell}_tiled")
    monkeypatch.setattr(tiled, "BLAS_GRADS_MIN_H", None)
    assert not tiled._blas_grads(T, B, I, H)
    team = backward(cell, dy, dstates, cache)
    monkeypatch.setattr(tiled, "BLAS_GRADS_MIN_H", 0)
    monkeypatch.setattr(tiled, "BLAS_GRADS_FROM", 0)
    assert tiled._blas_grads(T, B, I, H)
    blas = backward(cell, dy, dstates, cache)

    *_, cache_r = getattr(ref, f"{cell}_forward")(*[a.astype(np.float64) for a in args],
                                                  lengths=lengths, reverse=reverse)
    want = getattr(ref, f"{cell}_backward")(*[a.astype(np.float64) for a in (dy, *dstates)],
                                           cache_r)
    for i, (got, alt, w) in enumerate(zip(blas, team, want)):
        assert got.dtype == np.float32 and got.shape == w.shape and got.flags.c_contiguous, i
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4, err_msg=str(i))
        np.testing.assert_allclose(got, alt, rtol=1e-5, atol=1e-5, err_msg=str(i))
    for got, alt in zip(blas[-STATES[cell]:], team[-STATES[cell]:]):
        np.testing.assert_array_equal(got, alt)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_blas_weight_grads_only_for_large_layers_on_avx512(monkeypatch, cell):
    """The rule of the LSTM's and the GRU's tiled backward: BLAS does the weight gradients from
    H = BLAS_GRADS_MIN_H and BLAS_GRADS_FROM multiply-adds in them (T Bp G H (H + 2I)), never
    on AVX2."""
    tiled = importlib.import_module(f"kernels.{cell}_tiled")
    assert (tiled.BLAS_GRADS_MIN_H is not None) == (_gemm.VECTOR == 16)
    monkeypatch.setattr(tiled, "BLAS_GRADS_MIN_H", 512)
    monkeypatch.setattr(tiled, "BLAS_GRADS_FROM", 1 << 32)
    assert tiled._blas_grads(100, 64, 512, 512)           # LSTM 2^34.2, GRU 2^33.8
    assert tiled._blas_grads(32, 64, 512, 512)            # 2^32.6, 2^32.2
    assert not tiled._blas_grads(16, 64, 512, 512)        # 2^31.6, 2^31.2
    assert not tiled._blas_grads(100, 64, 256, 256)       # H = 256
    monkeypatch.setattr(tiled, "BLAS_GRADS_MIN_H", None)
    assert not tiled._blas_grads(100, 64, 512, 512)


@pytest.mark.parametrize("cell", CELLS)
def test_path_argument_is_checked(cell):
    args = _problem(cell, np.random.default_rng(5), 2, 8, 3, 64)
    with pytest.raises(ValueError, match="path"):
        forward(cell, _f32(*args), path="fast")
    with pytest.raises(TypeError, match="float32"):
        forward(cell, args, path="tiled")                        # float64 has no tiled path


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_not_modified(cell):
    rng = np.random.default_rng(6)
    args = _f32(*_problem(cell, rng, 3, 8, 4, 64))
    copies = [a.copy() for a in args]
    dy, *dstates = _upstream(cell, rng, 3, 8, 64)
    upstream = [dy.copy()] + [d.copy() for d in dstates]
    *_, cache = forward(cell, args, path="tiled")
    backward(cell, dy, dstates, cache)
    for a, c in zip(args + [dy] + dstates, copies + upstream):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T, B, I, H, ragged, reverse", [(4, 9, 3, 70, True, True),
                                                         (3, 8, 4, 64, False, False)])
def test_backward_leaves_the_cache_alone(cell, T, B, I, H, ragged, reverse):
    """Two backwards of one tiled forward give the same bits, and the cache is unchanged (a
    backward writing dL/dz over the cached gates was right once, wrong the second time)."""
    rng = np.random.default_rng(6)
    args = _f32(*_problem(cell, rng, T, B, I, H))
    lengths = rng.integers(1, T + 1, B) if ragged else None
    *_, cache = forward(cell, args, lengths=lengths, reverse=reverse, path="tiled")
    kept = [a.copy() if isinstance(a, np.ndarray) else a for a in cache]
    dy, *dstates = _upstream(cell, rng, T, B, H)
    first = backward(cell, dy, dstates, cache)
    for a, k in zip(cache, kept):                   # (bytes: padding may hold NaN, != itself)
        assert a.tobytes() == k.tobytes() if isinstance(a, np.ndarray) else a == k
    second = backward(cell, dy, dstates, cache)
    for g1, g2 in zip(first, second):
        assert g1 is not g2 and np.array_equal(g1, g2)


def _flip_valid(a, lengths):
    """Each sequence's valid steps in reverse order, padding zero: a[L-1-s, b] at step s."""
    out = np.zeros_like(a)
    for b, L in enumerate(lengths):
        out[:L, b] = a[:L, b][::-1]
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_torch_ragged_with_final_state_grads(cell, reverse):
    """Ragged sequences (PyTorch's packed ones), in either direction, and a loss that also
    reads the final states: the tiled kernels' outputs and every gradient against PyTorch.
    A reversed run is PyTorch's on each sequence's valid steps in reverse order (what the
    backward half of a bidirectional layer computes)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    rng = np.random.default_rng(17)
    T, B, I, H = 7, 12, 5, 80
    lengths = rng.integers(1, T + 1, B)
    lengths[:2] = T, 1
    x, W_ih, W_hh, *rest = _f32(*_problem(cell, rng, T, B, I, H))
    biases, states = rest[:BIASES[cell]], rest[BIASES[cell]:]
    dy, *dstates = _upstream(cell, rng, T, B, H)
    *out, cache = forward(cell, [x, W_ih, W_hh, *biases, *states], lengths=lengths,
                          reverse=reverse, path="tiled")
    assert cache[0] == "tiled"
    grads = backward(cell, dy, dstates, cache)
    m = getattr(torch.nn, cell.upper())(I, H)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(W_ih))
        m.weight_hh_l0.copy_(torch.from_numpy(W_hh))
        m.bias_ih_l0.copy_(torch.from_numpy(biases[0]))
        m.bias_hh_l0.copy_(torch.from_numpy(biases[1]) if len(biases) == 2 else
                           torch.zeros(GATES[cell] * H))
    flip = (lambda a: _flip_valid(a, lengths)) if reverse else (lambda a: a)
    xt = torch.tensor(flip(x), requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]
    packed = pack_padded_sequence(xt, torch.from_numpy(lengths), enforce_sorted=False)
    yp, final = m(packed, tuple(st) if cell == "lstm" else st[0])
    yt = pad_packed_sequence(yp, total_length=T)[0]
    final = final if cell == "lstm" else (final,)
    loss = (yt * torch.from_numpy(flip(dy))).sum()
    for f, d in zip(final, dstates):
        loss = loss + (f[0] * torch.from_numpy(d)).sum()
    loss.backward()
    for i, (got, t) in enumerate(zip(out, [yt] + [f[0] for f in final])):   # y, h_n (, c_n)
        t = t.detach().numpy()
        np.testing.assert_allclose(got, flip(t) if i == 0 else t, atol=1e-5, err_msg=str(i))
    bias_grads = [m.bias_ih_l0.grad] + ([m.bias_hh_l0.grad] if len(biases) == 2 else [])
    want = [flip(xt.grad.numpy()), m.weight_ih_l0.grad, m.weight_hh_l0.grad, *bias_grads,
            *(s.grad[0] for s in st)]
    assert len(grads) == len(want)
    for i, (got, t) in enumerate(zip(grads, want)):
        t = np.asarray(t)
        np.testing.assert_allclose(got, t, atol=1e-4 * max(1.0, np.abs(t).max()), err_msg=str(i))


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell):
    """The tiled kernels against PyTorch's layer (its CPU kernels, float32), initial states
    given; rnncore's one LSTM / RNN bias is PyTorch's bias_ih with bias_hh zero."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    T, B, I, H = 7, 12, 5, 80
    x, W_ih, W_hh, *rest = _f32(*_problem(cell, rng, T, B, I, H))
    biases, states = rest[:BIASES[cell]], rest[BIASES[cell]:]
    *out, cache = forward(cell, [x, W_ih, W_hh, *biases, *states], path="tiled")
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    grads = backward(cell, dy, [None] * STATES[cell], cache)
    m = getattr(torch.nn, cell.upper())(I, H)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(W_ih))
        m.weight_hh_l0.copy_(torch.from_numpy(W_hh))
        m.bias_ih_l0.copy_(torch.from_numpy(biases[0]))
        if len(biases) == 2:
            m.bias_hh_l0.copy_(torch.from_numpy(biases[1]))
        else:
            m.bias_hh_l0.zero_()
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]
    yt, final = m(xt, tuple(st) if cell == "lstm" else st[0])
    final = final if cell == "lstm" else (final,)
    (yt * torch.from_numpy(dy)).sum().backward()
    for got, t in zip(out, [yt] + [f[0] for f in final]):          # y, h_n (, c_n)
        np.testing.assert_allclose(got, t.detach().numpy(), atol=1e-5)
    bias_grads = [m.bias_ih_l0.grad] + ([m.bias_hh_l0.grad] if len(biases) == 2 else [])
    want = [xt.grad, m.weight_ih_l0.grad, m.weight_hh_l0.grad, *bias_grads,
            *(s.grad[0] for s in st)]
    assert len(grads) == len(want)
    for i, (got, t) in enumerate(zip(grads, want)):
        np.testing.assert_allclose(got, t.numpy(), atol=1e-4 * max(1.0, np.abs(t.numpy()).max()),
                                   err_msg=str(i))


@pytest.mark.skipif(lstm_tiled.VECTOR != 16, reason="gathers and scatters are AVX-512 code: "
                                                    "LLVM compiled none for AVX2 before either")
@pytest.mark.parametrize("cell", CELLS)
def test_the_tiled_passes_compile_without_gathers_or_scatters(cell):
    """The cores' loops read and write rows with unit stride. A loop indexing a 2-D view's row
    (``acc[r, j]`` of ``dh[m:m + R, c0:c0 + 64]``: a runtime stride) or an offset Numba cannot
    prove >= 0 (``hs[s, b, j0 + j]``, ``dZ_mat[t, b, g4 * H + j0 + j]``: a negative index's
    wraparound per number) had compiled to AVX-512 gathers and scatters, one number at a time:
    the tiled GRU's forward took 1.12x as long, the large LSTM's backward 1.03x. Each core is
    compiled afresh (the cache's copies cannot be inspected) for the signatures a ragged,
    reversed call used."""
    import re

    from numba import njit
    tiled = importlib.import_module(f"kernels.{cell}_tiled")
    T, B, I, H = 5, 6, 3, 20
    x, W_ih, W_hh, *rest = _f32(*_problem(cell, np.random.default_rng(0), T, B, I, H))
    biases = rest[:BIASES[cell]]
    out = getattr(FAST[cell], f"{cell}_forward")(x, W_ih, W_hh, *biases,
                                                 lengths=np.array([5, 1, 3, 2, 5, 4]),
                                                 reverse=True, path="tiled")
    getattr(FAST[cell], f"{cell}_backward")(np.ones((T, B, H), np.float32),
                                            *[None] * STATES[cell], out[-1])
    for name in ("_forward_core", "_backward_core"):
        core = getattr(tiled, name)
        assert core.signatures, name
        options = {k: v for k, v in core.targetoptions.items() if k not in ("cache", "nopython")}
        fresh = njit(**options)(core.py_func)
        for signature in core.signatures:
            fresh.compile(signature)
        asm = "\n".join(fresh.inspect_asm().values())
        found = sorted(set(re.findall(r"\bv(?:p?gather|p?scatter)\w*", asm)))
        assert not found, f"{cell}_tiled.{name}: {found}"
