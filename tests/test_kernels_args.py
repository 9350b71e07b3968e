"""The recurrent kernels' arguments, for the three cells at once: ``reverse=`` takes only
True/False (or 0/1), each backward takes only a cache its own forward made, refusing any other
with a TypeError that names ``cache`` (not a Numba typing error or an unpacking error from
inside the function), and arrays of another kind or shape (bool or complex weights, bool
lengths, lengths that are not (B,)) are refused by name."""

import numpy as np
import pytest

from kernels import gru, linear, lstm, reference as ref, rnn

T, B, I, H = 3, 2, 4, 5
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
FORWARD = {"rnn": rnn.rnn_forward, "gru": gru.gru_forward, "lstm": lstm.lstm_forward}
BACKWARD = {"rnn": rnn.rnn_backward, "gru": gru.gru_backward, "lstm": lstm.lstm_backward}
PATHS = {cell: [{"path": "steps"}, {"path": "tiled"}] for cell in ("rnn", "gru", "lstm")}
STATES = {"rnn": 1, "gru": 1, "lstm": 2}                  # final states a forward returns
CELL_PATHS = [(cell, kw) for cell in FORWARD for kw in PATHS[cell]]


def inputs(cell, rng=None):
    """x (T, B, I) and the weights of ``cell`` in float32: W_ih, W_hh, then its biases."""
    rng = np.random.default_rng(0) if rng is None else rng
    G = GATES[cell]
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    weights = [(0.5 * rng.standard_normal(s)).astype(np.float32)
               for s in [(G * H, I), (G * H, H), (G * H,)]]
    if cell == "gru":
        weights.append(weights[2].copy())                 # b_ih, b_hh
    return x, weights


def _id(cell_kw):
    cell, kw = cell_kw
    return cell + (f"-{kw['path']}" if kw else "")


@pytest.mark.parametrize("cell, kw", CELL_PATHS, ids=map(_id, CELL_PATHS))
@pytest.mark.parametrize("reverse", ["False", "True", np.array([1, 0]), 2, -1, 1.0, None])
def test_reverse_is_true_or_false_only(cell, kw, reverse):
    """bool(reverse) ran "False" in reverse and raised NumPy's ambiguous-truth error for arrays."""
    x, weights = inputs(cell)
    with pytest.raises(TypeError, match="^reverse: expected True or False, got "):
        FORWARD[cell](x, *weights, reverse=reverse, **kw)


@pytest.mark.parametrize("cell", sorted(FORWARD))
@pytest.mark.parametrize("flag, same_as", [(np.True_, True), (np.False_, False), (1, True),
                                           (0, False), (np.int64(1), True)])
def test_reverse_takes_numpy_bools_and_0_1(cell, flag, same_as):
    x, weights = inputs(cell)
    lengths = np.array([3, 2])
    got = FORWARD[cell](x, *weights, lengths=lengths, reverse=flag)
    want = FORWARD[cell](x, *weights, lengths=lengths, reverse=same_as)
    for g, w in zip(got[:-1], want[:-1]):                 # y and the final states
        np.testing.assert_array_equal(g, w)


@pytest.fixture(scope="module")
def caches():
    """name -> the cache of one small float32 call of each forward kernel: the fast cells on
    every path, and the NumPy reference (whose caches are tuples of like lengths)."""
    out = {}
    for cell, kw in CELL_PATHS:
        x, weights = inputs(cell)
        out[_id((cell, kw))] = FORWARD[cell](x, *weights, **kw)[-1]
        out["reference " + cell] = getattr(ref, f"{cell}_forward")(x, *weights)[-1]
    return out


def _own(cell):
    return [_id((cell, kw)) for kw in PATHS[cell]]


def _no_grads(cell):
    return [None] * (1 + STATES[cell])                    # dy, then the final states' grads


@pytest.mark.parametrize("cell", sorted(FORWARD))
def test_backward_takes_its_forwards_caches(caches, cell):
    """Each path's backward on its own forward's cache gives the reference's gradients (random
    upstream ones: with None, all gradients are 0 and a backward returning zeros would pass)."""
    rng = np.random.default_rng(5)
    upstream = [rng.standard_normal((T, B, H)).astype(np.float32)] + [
        rng.standard_normal((B, H)).astype(np.float32) for _ in range(STATES[cell])]
    want = getattr(ref, f"{cell}_backward")(*upstream, caches["reference " + cell])
    for name in _own(cell):
        grads = BACKWARD[cell](*upstream, caches[name])
        for g, w in zip(grads, want):
            assert w.any()
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)


ALL_CACHES = [_id(c) for c in CELL_PATHS] + ["reference " + cell for cell in FORWARD]
DAMAGED = ["None", "a list", "one short", "first dropped"]


@pytest.mark.parametrize("cell, name", [(cell, name) for cell in sorted(FORWARD)
                                        for name in ALL_CACHES + DAMAGED
                                        if name not in _own(cell)])
def test_backward_refuses_any_other_cache(caches, cell, name):
    first, last = caches[_own(cell)[0]], caches[_own(cell)[-1]]     # (the tiled one, if any)
    damaged = {"None": None, "a list": list(first), "one short": first[:-1],
               "first dropped": last[1:]}
    cache = damaged[name] if name in damaged else caches[name]
    expected = f"^cache: expected the cache returned by {cell}_forward, got "
    with pytest.raises(TypeError, match=expected) as refused:
        BACKWARD[cell](*_no_grads(cell), cache)
    if name not in damaged and not name.startswith("reference"):    # another cell's fast cache
        maker = name.split("-")[0]
        gates = dict(lstm=4, gru=3, rnn=1)[maker]
        assert str(refused.value).endswith(f"that looks like {maker}_forward's (W_hh of {gates}H rows)")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_cache_keeps_its_own_lengths(cell):
    """The caller may refill its lengths array between forward and backward: the backward
    indexes with the forward's (a copy), never out of bounds."""
    mod = dict(lstm=lstm, gru=gru, rnn=rnn)[cell]
    fwd, bwd = getattr(mod, f"{cell}_forward"), getattr(mod, f"{cell}_backward")
    G = dict(lstm=4, gru=3, rnn=1)[cell]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3))
    w = [rng.standard_normal((G * 2, 3)), rng.standard_normal((G * 2, 2))]
    w += [rng.standard_normal(G * 2) for _ in range(2 if cell == "gru" else 1)]
    dy = rng.standard_normal((4, 2, 2))
    none = [None] * (2 if cell == "lstm" else 1)
    lengths = np.array([4, 2])
    ref = bwd(dy, *none, fwd(x, *w, lengths=lengths)[-1])
    cache = fwd(x, *w, lengths=lengths)[-1]
    lengths[:] = [10 ** 8, 2]
    for a, b in zip(bwd(dy, *none, cache), ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", sorted(FORWARD))
@pytest.mark.parametrize("which", ["x", "W_hh"])
def test_a_masked_array_is_refused_not_unmasked(cell, which):
    """np.asarray drops a masked array's mask: its masked entries would be computed with as if
    they were data. Refused with a TypeError naming the argument."""
    x, weights = inputs(cell)
    args = [x] + weights
    i = 0 if which == "x" else 2
    args[i] = np.ma.masked_array(args[i], mask=np.zeros(args[i].shape, bool))
    with pytest.raises(TypeError, match=f"{which}: expected a plain array, got a masked array"):
        FORWARD[cell](*args)


@pytest.mark.parametrize("forward", [FORWARD["lstm"], ref.lstm_forward], ids=["fast", "reference"])
def test_masked_lengths_are_refused_not_unmasked(forward):
    """The same for lengths: a masked entry was read as a length."""
    x, weights = inputs("lstm")
    lengths = np.ma.masked_array([3, 1], mask=[False, True])
    with pytest.raises(TypeError, match="^lengths: expected a plain array, got a masked array"):
        forward(x, *weights, lengths=lengths)


def _compiled_signatures():
    """How many signatures the compiled cores of the serial kernels hold, by core."""
    cores = {}
    for mod in (lstm, gru, rnn):
        for name in dir(mod):
            f = getattr(mod, name)
            if hasattr(f, "signatures") and hasattr(f, "py_func"):
                cores[f"{mod.__name__}.{name}"] = len(f.signatures)
    return cores


@pytest.mark.parametrize("cell", sorted(FORWARD))
def test_read_only_arrays_compile_no_other_signature(cell):
    """A read-only x, h0, weight or dy reached the compiled cores as Numba's readonly array
    type: every kernel compiled once more (~2 s for a backward), and the answer was the same."""
    x, weights = inputs(cell)
    kw = {"path": "steps"}
    out = FORWARD[cell](x, *weights, **kw)
    dy = np.ones_like(out[0])
    want = BACKWARD[cell](dy, *([None] * STATES[cell]), out[-1])
    before = _compiled_signatures()

    def locked(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    out2 = FORWARD[cell](locked(x), *map(locked, weights), h0=locked(np.zeros((B, H), np.float32)),
                         **kw)
    got = BACKWARD[cell](locked(dy), *([None] * STATES[cell]), out2[-1])
    assert _compiled_signatures() == before
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_an_upload_takes_a_read_only_array_as_it_is():
    """The copy that keeps a read-only array from the compiled cores is not made for a GPU
    upload (``writable=False``), which reads it as it is: a full copy per forward, for nothing."""
    from kernels._common import as_float_array
    a = np.zeros((3, 4), np.float32)
    a.flags.writeable = False
    assert as_float_array(a, "x", writable=False) is a
    b = as_float_array(a, "x")
    assert b is not a and b.flags.writeable and np.array_equal(a, b)


@pytest.mark.parametrize("cell, kw", CELL_PATHS, ids=map(_id, CELL_PATHS))
def test_messages_name_what_was_given(cell, kw):
    """A 0-d x was reported as "got shape (1,)" (ascontiguousarray promotes it); a path that is
    an array failed on NumPy's "truth value ... ambiguous"; a big-endian float32 x was refused
    (">f4") though big-endian weights were converted."""
    x, weights = inputs(cell)
    with pytest.raises(ValueError, match=r"x: expected a \(T, B, I\) array.*got shape \(\)$"):
        FORWARD[cell](np.float32(1), *weights, **kw)
    with pytest.raises(ValueError, match=r"W_hh: .*got shape \(\)$"):
        FORWARD[cell](x, weights[0], np.float32(1), *weights[2:], **kw)
    if kw:
        with pytest.raises(ValueError, match=r"path: expected 'auto', 'steps' or 'tiled', got "
                                             r"array\("):
            FORWARD[cell](x, *weights, path=np.array(["steps", "tiled"]))
    want = FORWARD[cell](x, *weights, **kw)[0]
    np.testing.assert_array_equal(FORWARD[cell](x.astype(">f4"), *weights, **kw)[0], want)


@pytest.mark.parametrize("cell, kw", CELL_PATHS, ids=map(_id, CELL_PATHS))
@pytest.mark.parametrize("which", [0, 1, 2, 3])
@pytest.mark.parametrize("make, kind", [(lambda a: a > 0, "bool"), (lambda a: a + 1j, "complex")])
def test_bool_and_complex_arrays_are_refused(cell, kw, which, make, kind):
    """A mask such as ``W_ih > 0`` passed by mistake is refused, not run as 0/1 weights."""
    x, weights = inputs(cell)
    args = [x, *weights]
    name = ["x", "W_ih", "W_hh", "b_ih" if cell == "gru" else "b"][which]
    args[which] = make(args[which])
    what = "float32 or float64" if name == "x" else "real"      # (x sets the dtype: no ints)
    with pytest.raises(TypeError, match=f"^{name}: expected a {what} array, got dtype {kind}"):
        FORWARD[cell](*args, **kw)


def test_linear_refuses_bool_and_complex_arrays():
    x, W, b = np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)
    for args, name in (((x > 0, W, b), "x"), ((x, W > 0, b), "W"), ((x, W, b + 1j), "b")):
        with pytest.raises(TypeError, match=f"^{name}: expected a (real|float32 or float64) "
                                             f"array, got dtype (bool|complex)"):
            linear.linear_forward(*args)


@pytest.mark.parametrize("cell, kw", CELL_PATHS, ids=map(_id, CELL_PATHS))
@pytest.mark.parametrize("lengths, error, match", [
    (np.ones(B, bool), TypeError, "expected an integer array, got dtype bool"),   # (a mask)
    (np.array([3, 2, 1]), ValueError, rf"expected shape \({B},\)"),   # the compiled loops read
    (np.array([3]), ValueError, rf"expected shape \({B},\)"),         # lengths[b] for b < B
    (np.array([[3, 2]]), ValueError, rf"expected shape \({B},\)")])
def test_lengths_of_another_kind_or_shape_are_refused(cell, kw, lengths, error, match):
    x, weights = inputs(cell)
    with pytest.raises(error, match="^lengths: " + match):
        FORWARD[cell](x, *weights, lengths=lengths, **kw)
