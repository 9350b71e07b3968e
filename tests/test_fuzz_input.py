"""Random malformed input, drawn by hypothesis: to modules (x, lengths, states, gy), criteria,
``load_state_dict``, ``pad_sequences``, optimizers, ``fit``, and the kernels' entry points
(``kernels.<cell>`` and the NumPy reference). Whatever is drawn, a call either
works or raises ValueError or TypeError with a message (never IndexError, a Numba typing error,
AttributeError, ...), and a refused call leaves the model's parameters and grads as they were
(and, for the modules, what their next backward reads and the random stream).

``tests/test_errors.py`` holds one row per known bad input with the exact argument named; this
file throws combinations at the same API (dtypes from bool to complex and strings, 0-d to 4-d,
empty dimensions, NaN/Inf, 1e30 and subnormal values, lists, ragged lists, masked, Fortran-order,
strided and read-only arrays).

Drawn at random, nearly every such call is refused by its first check (x, gy), so the
``..._one_broken_...`` properties (second half of the file) draw a VALID call first (modules,
criteria, the kernels' forward and backward, ``fit``'s settings) and break exactly one property
of one argument (its dtype, one dimension, a NaN/Inf or out-of-range value at a drawn place, a
length of 0 or T+1, a class id out of range, the batch of h0, a list, a layout): the call must
refuse it naming THAT argument, or, where the API takes the value (another float dtype, an int
array, a list, a Fortran or read-only array, a NumPy scalar), answer as the valid call with the
plain array does; a refused call leaves the model as a twin that never saw it.

The CI runs 25 cases per property; ``python -m pytest tests/test_fuzz_input.py
--hypothesis-profile=deep`` runs 500 fresh ones (checked clean with 2000-4000 cases per property,
300 for `fit`, 2026-12-02; the one-broken properties with 3000 each, `fit`'s 52 all).
"""
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncore
from rnncore import (GRU, LSTM, RNN, BCECriterion, ClassNLLCriterion, CrossEntropyCriterion,
                     Dropout, Embedding, LastStep, Linear, LogSoftMax, MSECriterion, Sequencer,
                     Sequential, SequencerCriterion, SoftMax, Tanh)

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint8, np.bool_, np.complex64,
          object, "U3"]
#: (the draws are cheap and mostly refused: hypothesis would call that a filter that is too slow)
fuzz = settings(suppress_health_check=list(HealthCheck))


@st.composite
def arrays(draw, max_dims=4):
    """An array (or its nested list) of any dtype, 0-4 dimensions of 0-4, maybe one NaN/Inf/0,
    in some layout."""
    nd = draw(st.integers(0, max_dims))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=nd, max_size=nd)))
    dt = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    a = np.asarray(rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e30, 1e-40])))
    if a.size and draw(st.booleans()):
        special = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
        a.flat[draw(st.integers(0, a.size - 1))] = special
    if dt == "U3":
        return a.astype(str)
    with np.errstate(all="ignore"):
        a = np.asarray(a.astype(dt))
    kind = draw(st.sampled_from(["array", "array", "list", "fortran", "view", "readonly"]))
    if kind == "list":
        return a.tolist()
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "view" and a.ndim and a.shape[-1] > 1:
        return a[..., ::2]
    if kind == "readonly":
        a.flags.writeable = False
    return a


ANY = st.one_of(arrays(), st.none(), st.just(3), st.just(2.5), st.just("x"), st.just([[1, 2], [3]]),
                st.just(np.ma.masked_array([1.0, 2.0], mask=[0, 1])))
LENGTHS = st.one_of(st.none(), arrays(max_dims=2), st.just([1, 2]), st.just([0, 1]),
                    st.just([5, 5]), st.just(np.array([1.5, 2.0])), st.just(np.array([-1, 2])))
NUM = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.none(),
                st.just("1"), st.just((0.9, 0.999)), st.just((0.9,)), st.just(np.float32(0.1)),
                st.just(True), st.just(1e39))

MODELS = {
    "linear": lambda: Linear(3, 2),
    "lstm": lambda: LSTM(3, 2),
    "gru_bi": lambda: GRU(3, 2, num_layers=2, bidirectional=True),
    "rnn_last": lambda: RNN(3, 2, return_sequences=False),
    "seq": lambda: Sequencer(Sequential(LSTM(3, 4), Linear(4, 2), LogSoftMax())),
    "chain": lambda: Sequential(LSTM(3, 4), LastStep(), Linear(4, 2), Tanh()),
    "emb": lambda: Sequential(Embedding(5, 3), LSTM(3, 2)),
    "drop": lambda: Sequential(Linear(3, 3), Dropout(0.5), SoftMax()).training(),
}
GOOD_X = {"emb": np.array([[1, 2], [3, 4], [0, 1]])}
CRITERIA = {"nll": ClassNLLCriterion, "mse": MSECriterion, "bce": BCECriterion,
            "ce": CrossEntropyCriterion, "seqnll": lambda: SequencerCriterion(ClassNLLCriterion())}


def snapshot(m):
    return [(p.data.copy(), p.grad.copy()) for p in m.parameters()]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y, equal_nan=True)
                                    and np.array_equal(g, h, equal_nan=True)
                                    for (x, g), (y, h) in zip(a, b))


# What a refusal's message starts with: the argument it is about (``x:``, ``lengths[2]:``,
# ``modules[1] (LSTM), given ...:``, ``'lr':``, ``save / plot:``), then what was expected.
# (A bare message passed: NumPy's "The truth value of an array ... is ambiguous" for
# pad_sequences(truncating=<array>) names none.)
NAMED = re.compile(r"^[\w.]+(\[[^\]]*\])*(=[^:\s]*)?"    # x, sequences[0], path='tiled'
                   r"( \([^()]*\)(, given the output of [^:]*)?)?"    # modules[1] (LSTM), ...
                   r"( / [^:]*)?:")                   # save / plot, lr / (1 - betas[0])


def refused_cleanly(call, m=None):
    """Run ``call``; True if it raised ValueError/TypeError with a message that names its
    argument and left ``m`` as it was, False if it worked; any other exception fails the test."""
    before = snapshot(m) if m is not None else None
    try:
        call()
    except (ValueError, TypeError) as e:
        assert NAMED.match(str(e)), f"{type(e).__name__} not naming its argument: {e}"
        assert m is None or same(before, snapshot(m)), f"changed by a refused call: {e}"
        return True
    except Exception as e:
        raise AssertionError(f"{type(e).__name__} (expected ValueError or TypeError): {e}") from e
    return False


@fuzz
@given(name=st.sampled_from(sorted(MODELS)), x=ANY, lengths=LENGTHS, gy=ANY,
       which=st.sampled_from(["forward", "forward with lengths", "backward"]))
def test_modules_refuse_bad_input_cleanly(name, x, lengths, gy, which):
    """Also what the parameters and grads do not show: after a refusal, the model's backward of
    its last good forward (its caches, masks, states) and the random stream are those of a twin
    that never saw the refused call."""
    good = GOOD_X.get(name, np.random.default_rng(0).standard_normal((3, 2, 3)))
    models = []
    for _ in range(2):                                  # m and its twin, built and run alike
        rnncore.manual_seed(0)
        models.append(MODELS[name]())
        out = models[-1].forward(good)
        for p in models[-1].parameters():
            p.grad[...] = 0.25                          # (grads that a refusal must keep)
    m, twin = models
    stream = rnncore.random.generator().bit_generator.state
    if which == "forward":
        refused = refused_cleanly(lambda: m.forward(x), m)
    elif which == "forward with lengths":
        refused = refused_cleanly(lambda: m.forward(x, lengths=lengths), m)
    else:
        refused = refused_cleanly(lambda: m.backward(good, gy), m)
    if refused:
        assert rnncore.random.generator().bit_generator.state == stream
        gy_good = np.ones_like(np.asarray(out))
        gx, gx_twin = m.backward(good, gy_good), twin.backward(good, gy_good)
        assert (gx is None) == (gx_twin is None)        # (None: ids, for an Embedding)
        if gx is not None:
            np.testing.assert_array_equal(gx, gx_twin)
        for p, q in zip(m.parameters(), twin.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)


@fuzz
@given(h0=ANY, c0=ANY, lengths=LENGTHS, cell=st.sampled_from(["lstm", "gru", "rnn"]),
       bidirectional=st.booleans())
def test_recurrent_layers_refuse_bad_states_cleanly(h0, c0, lengths, cell, bidirectional):
    rnncore.manual_seed(0)
    layer = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell]
    m = layer(3, 2, num_layers=2, bidirectional=bidirectional)
    x = np.random.default_rng(0).standard_normal((3, 2, 3))
    m.forward(x)
    kw = dict(h0=h0, c0=c0) if cell == "lstm" else dict(h0=h0)
    refused_cleanly(lambda: m.forward(x, lengths=lengths, **kw), m)


@fuzz
@given(name=st.sampled_from(sorted(CRITERIA)), x=ANY, t=ANY,
       which=st.sampled_from(["forward", "backward"]))
def test_criteria_refuse_bad_input_cleanly(name, x, t, which):
    c = CRITERIA[name]()
    refused_cleanly(lambda: getattr(c, which)(x, t))


@fuzz
@given(key=st.sampled_from(["weight_ih_l0", "weight_hh_l0", "bias_l0", "nope", "weight_ih_l1", ""]),
       value=ANY)
def test_load_state_dict_refuses_bad_entries_cleanly(key, value):
    rnncore.manual_seed(0)
    m = LSTM(3, 2)
    state = dict(m.state_dict(), **{key: value})
    refused_cleanly(lambda: m.load_state_dict(state), m)


@fuzz
@given(seqs=st.one_of(ANY, st.lists(ANY, max_size=3)),
       kw=st.dictionaries(st.sampled_from(["dtype", "truncating", "maxlen"]),
                          st.one_of(ANY, st.sampled_from([np.float32, 0, -1, 2, "pre", "post",
                                                          "mid"]))))
def test_pad_sequences_refuses_bad_input_cleanly(seqs, kw):
    refused_cleanly(lambda: rnncore.pad_sequences(seqs, **kw))


# each optimizer's own settings (another's, a TypeError of Python's own, took most draws)
SETTINGS = {"SGD": ["lr", "momentum", "weight_decay"], "Adam": ["lr", "betas", "eps"],
            "RMSprop": ["lr", "alpha", "eps"]}


@fuzz
@given(which_kw=st.sampled_from(sorted(SETTINGS)).flatmap(
           lambda w: st.tuples(st.just(w), st.dictionaries(st.sampled_from(SETTINGS[w]), NUM))),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_optimizers_refuse_bad_settings_cleanly(which_kw, dtype):
    """A setting refused at construction or at the step; a step that runs leaves finite weights."""
    which, kw = which_kw
    rnncore.manual_seed(0)
    m = Linear(3, 2, dtype=dtype)
    for p in m.parameters():
        p.grad[...] = 0.5
    if which != "Adam":
        kw.setdefault("lr", 0.1)                         # (required there)

    def make_and_step():
        getattr(rnncore.optim, which)(m.parameters(), **kw).step()

    if not refused_cleanly(make_and_step, m):
        # finite weights, unless the settings, each finite, make an update beyond the dtype's
        # range (lr * weight_decay * w: not checked, as in PyTorch; optim's module doc)
        big = np.finfo(dtype).max
        step = abs(kw.get("lr", 1e-3)) * (1 + abs(kw.get("weight_decay", 0.0)))
        assert step * 1.0 > big / 4 or all(np.isfinite(p.data).all() for p in m.parameters()), \
            (which, kw)


@fuzz
@given(x=ANY, y=ANY, lengths=LENGTHS,
       kw=st.dictionaries(st.sampled_from(["epochs", "batch_size", "clip", "shuffle", "seed",
                                           "validation"]), st.one_of(NUM, ANY)))
def test_fit_refuses_bad_input_cleanly(x, y, lengths, kw):
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(LSTM(3, 4), Linear(4, 2), LogSoftMax()))
    opt = rnncore.optim.SGD(m.parameters(), lr=0.1)
    crit = SequencerCriterion(ClassNLLCriterion())
    refused_cleanly(lambda: rnncore.fit(m, crit, opt, x, y, lengths, progress=False, **kw), m)


# -- the kernels' entry points (kernels.<cell>, and the NumPy reference) ----------------------
_r = np.random.default_rng(0)
KT, KB, KI, KH = 3, 2, 3, 4
KX = _r.standard_normal((KT, KB, KI))
KERNEL_ARGS = {
    "lstm": [KX, _r.standard_normal((4 * KH, KI)), _r.standard_normal((4 * KH, KH)),
             _r.standard_normal(4 * KH)],
    "gru": [KX, _r.standard_normal((3 * KH, KI)), _r.standard_normal((3 * KH, KH)),
            _r.standard_normal(3 * KH), _r.standard_normal(3 * KH)],
    "rnn": [KX, _r.standard_normal((KH, KI)), _r.standard_normal((KH, KH)), _r.standard_normal(KH)],
}


def _kernels(cell, reference=False):
    from kernels import gru, lstm, reference as ref, rnn
    mod = ref if reference else {"lstm": lstm, "gru": gru, "rnn": rnn}[cell]
    return getattr(mod, f"{cell}_forward"), getattr(mod, f"{cell}_backward")


@fuzz
@given(cell=st.sampled_from(["lstm", "gru", "rnn"]), position=st.integers(0, 4), value=ANY,
       lengths=LENGTHS, reverse=st.one_of(st.booleans(), ANY), h0=st.one_of(st.none(), ANY),
       path=st.sampled_from(["auto", "steps", "tiled", "other", None, 3]), reference=st.booleans())
def test_kernels_refuse_bad_arguments_cleanly(cell, position, value, lengths, reverse, h0, path,
                                              reference):
    """``<cell>_forward`` with one argument (x, a weight, a bias; none for position 4 of an LSTM
    or RNN) replaced by a drawn value, and drawn lengths, reverse, h0 and path."""
    args = list(KERNEL_ARGS[cell])
    if position < len(args):
        args[position] = value
    kw = dict(lengths=lengths, reverse=reverse, h0=h0)
    if not reference:
        kw["path"] = path
    forward = _kernels(cell, reference)[0]
    refused_cleanly(lambda: forward(*args, **kw))


@fuzz
@given(cell=st.sampled_from(["lstm", "gru", "rnn"]), dy=ANY, dh_n=st.one_of(st.none(), ANY),
       dc_n=st.one_of(st.none(), ANY), cache=st.sampled_from(["own", "another cell's", "None",
                                                               "short", "a number"]))
def test_kernel_backwards_refuse_bad_arguments_cleanly(cell, dy, dh_n, dc_n, cache):
    forward, backward = _kernels(cell)
    own = forward(*KERNEL_ARGS[cell])[-1]
    other = "gru" if cell != "gru" else "lstm"
    c = {"own": own, "another cell's": _kernels(other)[0](*KERNEL_ARGS[other])[-1], "None": None,
         "short": own[:-1], "a number": 3}[cache]
    if cell == "lstm":
        refused_cleanly(lambda: backward(dy, dh_n, dc_n, c))
    else:
        refused_cleanly(lambda: backward(dy, dh_n, c))


# -- one property of one argument broken, the rest of the call valid ----------------------------
# The properties above draw every argument at random, so nearly every draw is refused by the
# first check (x, gy). Those below draw a valid call first, then break exactly one property of
# one argument, and require the refusal to name THAT argument; or, where the broken property
# is one the API accepts (another float dtype, an int array, a list, a layout), the answer of
# the valid call made with that value as a plain C-contiguous array.
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


class Arg:
    """How an argument may be broken. ``kind``: "f" (reals), "i" (ids, class ids), "lengths";
    ``dtype``: the dtype it is read in (None: its own); ``values``: NaN/Inf refused (the
    kernels read no values); ``casts``: other real dtypes taken (the kernels' x: float32 and
    float64 only); ``optional``: None is a valid value of its own (not drawn); ``shapes``: the
    shape breaks that are refused, naming ``shape_name`` (default the argument); ``hi``: ids
    below it; ``bounds``: the range of its values; ``unread``: flat positions never read;
    ``either``: a value the call takes may give another answer (a backward's x)."""

    def __init__(self, name, kind="f", dtype=None, values=True, casts=True, optional=False,
                 shapes=(), shape_name=None, hi=None, bounds=None, unread=None, T=None, B=None,
                 either=False, default=None):
        self.name, self.kind, self.dtype, self.values, self.casts = name, kind, dtype, values, casts
        self.optional, self.shapes, self.shape_name = optional, shapes, shape_name or name
        self.hi, self.bounds, self.unread, self.T, self.B = hi, bounds, unread, T, B
        self.either, self.default = either, default


SHAPES = ("wider", "narrower", "extra axis", "drop axis", "empty")


def _reshaped(kind, a, axis):
    """``a`` with one change of shape: ``axis`` one longer or shorter, an axis more or less,
    or ``axis`` empty."""
    if kind == "wider":
        return np.concatenate([a, np.take(a, [0], axis=axis)], axis=axis)
    if kind == "narrower":
        return np.take(a, range(a.shape[axis] - 1), axis=axis)
    if kind == "extra axis":
        return a[..., None]
    if kind == "drop axis":
        return a[..., 0]
    return np.take(a, [], axis=axis)                                 # empty


def _ragged(a, path):
    """``a`` as nested lists, one of them (picked by ``path``) one item shorter than its
    siblings; None where no list has a sibling."""
    for depth in range(a.ndim - 1, 0, -1):
        outer = a.tolist()
        parent = outer
        for i in path[:depth - 1]:
            parent = parent[i % len(parent)]
        if len(parent) >= 2:
            parent[path[depth - 1] % len(parent)].pop()
            return outer
    return None


def broken(data, a, arg):
    """``(value, expect, reference, name)``: ``a`` (the valid value) with one property broken,
    and what the call must do: "refuse" (naming ``name``), "same" (work, and answer as the
    call with ``reference``, a plain array) or "either" (one or the other)."""
    value, expect, ref = _broken(data, a, arg)
    kind = arg._kind                                 # (the break ``_broken`` drew)
    name = arg.shape_name.get(kind, arg.name) if isinstance(arg.shape_name, dict) else (
        arg.shape_name if kind in SHAPES else arg.name)
    return value, expect, ref, name


def _broken(data, a, arg):
    k = arg.kind
    kinds = ["none", "str", "masked", "object", "complex", "list", "fortran", "readonly",
             "strided"]
    kinds += [s for s in arg.shapes] + (["steps", "ragged"] if a.ndim >= 2 else [])
    if k == "f":
        kinds += ["bool", "int", "float16", "other float", "big-endian", "scalar"]
        kinds += ["nan"] * 3 if arg.values else []
        kinds += ["beyond float32"] if arg.values and arg.dtype == F32 else []
        kinds += ["out of range"] * 2 if arg.bounds else []
    elif k == "i":
        kinds += ["high", "negative", "high", "negative", "float", "fraction", "bool", "int32",
                  "uint8"]
    else:                                                            # lengths
        kinds += ["zero", "above T", "negative", "float", "fraction", "bool", "int32", "uint8",
                  "longer", "row", "scalar", "uint64 huge", "tuple"]
    kind = arg._kind = data.draw(st.sampled_from(kinds), label=f"{arg.name}: break")
    pos = data.draw(st.integers(0, max(a.size - 1, 0)), label="position")
    refuse, same = ("refuse", None), ("either" if arg.either else "same", a)

    def at(value):                                   # a value at a drawn place: refused where read
        b = a.copy()
        b.flat[pos] = value
        read = arg.unread is None or not arg.unread(pos)
        return (b,) + (refuse if read else same)

    if kind == "none":                               # (optional: None means the default)
        return None, "same" if arg.optional else "refuse", arg.default
    if kind == "str":
        return a.astype(str), "refuse", None
    if kind == "masked":
        return np.ma.masked_array(a, mask=np.zeros(a.shape, bool)), "refuse", None
    if kind == "object":
        return a.astype(object), "either", a         # (NumPy's own object arrays of numbers)
    if kind == "complex":
        return a.astype(np.complex64), "refuse", None
    if kind in ("list", "steps", "tuple"):           # (answered as NumPy reads them)
        v = {"list": a.tolist, "steps": lambda: list(a), "tuple": lambda: tuple(a.tolist())}[kind]()
        return v, same[0], np.asarray(v)
    if kind == "fortran":
        return np.asfortranarray(a), same[0], a
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b, same[0], a
    if kind == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a, same[0], a
    if kind == "ragged":
        path = data.draw(st.lists(st.integers(0, 4), min_size=3, max_size=3), label="path")
        r = _ragged(a, path)
        return (a.tolist(), same[0], np.asarray(a.tolist())) if r is None else (r, "refuse", None)
    if kind in SHAPES:
        axis = data.draw(st.integers(0, a.ndim - 1), label="axis") if kind == "empty" else -1
        if kind == "narrower" and a.shape[-1] == 1:
            kind = "empty"
        return _reshaped(kind, a, axis), "refuse", None
    if k == "f":
        if kind == "bool":
            return a > 0, "refuse", None
        if kind == "int":
            b = np.round(a).astype(np.int64)
            return b, ("either" if arg.either else "same") if arg.casts else "refuse", \
                b.astype(np.float64)
        if kind == "float16":
            b = a.astype(np.float16)
            return b, ("either" if arg.either else "same") if arg.casts else "refuse", \
                b.astype(np.float64)
        if kind == "other float":
            b = a.astype(F32 if a.dtype == F64 else F64)
            return b, "either" if arg.either and a.dtype == F64 else "same", b
        if kind == "big-endian":
            b = a.astype(a.dtype.newbyteorder(">"))
            return b, same[0], a
        if kind == "scalar":
            return 1.5, "refuse", None
        if kind == "nan":
            return at(data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="value"))
        if kind == "beyond float32":
            b = a.astype(np.float64)
            b.flat[pos] = data.draw(st.sampled_from([1e39, -1e300]), label="value")
            return b, "refuse", None
        lo, hi = arg.bounds                                          # out of range
        return at(data.draw(st.sampled_from([lo - 0.5, hi + 1e-6, hi + 0.5]), label="value"))
    if k == "i":
        if kind == "high":
            return at(arg.hi)
        if kind == "negative":
            return at(-1)
        if kind == "float":
            return a.astype(np.float64), "refuse", None
        if kind == "fraction":
            return a + 0.5, "refuse", None
        if kind == "bool":
            return a.astype(bool), "refuse", None
        return a.astype(np.int32 if kind == "int32" else np.uint8), same[0], a
    # lengths (B,)
    if kind in ("zero", "above T", "negative"):
        return at({"zero": 0, "above T": arg.T + 1, "negative": -1}[kind])
    if kind == "float":
        return a.astype(np.float64), "refuse", None
    if kind == "fraction":
        return a + 0.5, "refuse", None
    if kind == "bool":
        return np.ones(a.shape, bool), "refuse", None
    if kind in ("int32", "uint8"):
        return a.astype(kind), same[0], a
    if kind == "longer":
        return np.append(a, 1), "refuse", None
    if kind == "row":
        return a[None], "refuse", None
    if kind == "scalar":
        return int(a[0]), "refuse", None
    b = a.astype(np.uint64)                                          # uint64 huge
    b[pos] = 2 ** 64 - 1
    return b, "refuse", None


def names(msg, name):
    """Whether the refusal ``msg`` starts with the argument ``name`` (``x:``, ``x[1]:``,
    ``path='tiled':``, ``lengths (of ...)``)."""
    return re.match(rf"{re.escape(name)}(\[|:|=| \()", msg) is not None


def same_answer(got, want):
    """Equal answers: arrays (a list of steps as its stacked array), tuples of them (a kernel's
    outputs, its cache left out), floats, None."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got[:-1], want[:-1]):
            same_answer(g, w)
        return
    if want is None or got is None:
        assert got is None and want is None
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
    # (equal but for round-off: lengths=None and all-T lengths, say, take other code paths)
    tol = dict(rtol=1e-5, atol=1e-6) if want.dtype == F32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, want, **tol)


def one_broken(data, args, specs):
    """Draw one argument of ``specs`` and break it: (its name, the arguments with it broken,
    the expected outcome, the arguments of the reference call)."""
    name = data.draw(st.sampled_from(sorted(specs)), label="argument")
    valid = args[name]
    if valid is None:                                 # (None is valid: break a valid array)
        valid = specs[name].default
    value, expect, ref, named = broken(data, np.asarray(valid), specs[name])
    return named, dict(args, **{name: value}), expect, dict(args, **{name: ref})


def outcome(call, name, expect):
    """Run ``call``; return ("refused", None) or ("answered", its answer), after checking that
    a refusal is a ValueError or TypeError naming ``name`` and that ``expect`` allows it."""
    try:
        got = call()
    except (ValueError, TypeError) as e:
        assert expect != "same", f"refused what the API takes ({type(e).__name__}): {e}"
        assert names(str(e), name), f"refusal of a broken {name} names another: {e}"
        return "refused", None
    except Exception as e:
        raise AssertionError(f"{type(e).__name__} (expected ValueError or TypeError): {e}") from e
    assert expect != "refuse", f"a broken {name} was taken"
    return "answered", got


BROKEN_MODELS = {                     # (make, its initial states)
    "linear": (lambda: Linear(3, 2), ()),
    "lstm": (lambda: LSTM(3, 2), ("h0", "c0")),
    "gru_bi2": (lambda: GRU(3, 2, num_layers=2, bidirectional=True), ("h0",)),
    "rnn_last": (lambda: RNN(3, 2, return_sequences=False), ("h0",)),
    "lstm_bi_last": (lambda: LSTM(3, 2, bidirectional=True, return_sequences=False),
                     ("h0", "c0")),
    "seq": (lambda: Sequencer(Sequential(LSTM(3, 4), Linear(4, 2), LogSoftMax())), ()),
    "chain": (lambda: Sequential(LSTM(3, 4), LastStep(), Linear(4, 2), Tanh()), ()),
    "emb": (lambda: Sequential(Embedding(5, 3), LSTM(3, 2)), ()),
    "drop": (lambda: Sequential(Linear(3, 3), Dropout(0.5), SoftMax()).training(), ()),
}


def lengths_for(data, T, B):
    return data.draw(st.one_of(st.none(), st.lists(st.integers(1, T), min_size=B, max_size=B)
                               .map(np.array)), label="lengths")


@fuzz
@given(name=st.sampled_from(sorted(BROKEN_MODELS)), dtype=st.sampled_from([F32, F64]),
       which=st.sampled_from(["forward", "backward"]), data=st.data())
def test_modules_refuse_one_broken_argument_by_its_name(name, dtype, which, data):
    """A valid forward (x, lengths, h0, c0) or backward (x, gy) with one argument broken. A
    refusal leaves the model as a twin that never saw the call (parameters, grads, final
    states, the random stream, the next backward); a call taken answers as the twin does the
    valid call with the plain array."""
    make, states = BROKEN_MODELS[name]
    T = data.draw(st.integers(1, 4), label="T")
    B = data.draw(st.sampled_from([1, 2, 4]), label="B")              # (never I = 3)
    r = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    x = r.integers(0, 5, (T, B)) if name == "emb" else r.standard_normal((T, B, 3)).astype(dtype)
    args = dict(x=x, lengths=lengths_for(data, T, B))
    rnncore.manual_seed(0)
    probe = make()
    if states:
        LD, H = probe.num_layers * probe.num_directions, probe.hidden_size
        for s in states:
            args[s] = r.standard_normal((LD, B, H)) if data.draw(st.booleans()) else None
    models = []
    for _ in range(2):                                 # m and its twin, built and run alike
        rnncore.manual_seed(0)
        models.append(make().astype(dtype))
        out = models[-1].forward(args["x"], **{k: v for k, v in args.items() if k != "x"})
        for p in models[-1].parameters():
            p.grad[...] = 0.25
    m, twin = models
    gy = r.standard_normal(np.shape(out)).astype(dtype)
    float_shapes = ("wider", "narrower", "extra axis", "drop axis", "empty")
    if name == "emb":
        x_spec = Arg("x", "i", hi=5, shapes=("empty",))
    else:
        x_spec = Arg("x", dtype=dtype, shapes=float_shapes, either=which == "backward")
    if which == "forward":
        specs = dict(x=x_spec, lengths=Arg("lengths", "lengths", T=T, B=B,
                                           optional=True, default=np.full(B, T)))
        for s in states:
            specs[s] = Arg(s, dtype=dtype, optional=True, shapes=float_shapes,
                           default=np.zeros((LD, B, H)))

        def call(model, a):
            a = dict(a)
            return model.forward(a.pop("x"), **a)
        args_call = args
    else:
        specs = dict(x=x_spec, gy=Arg("gy", dtype=dtype, shapes=float_shapes))
        args_call = dict(x=x, gy=gy)

        def call(model, a):
            return model.backward(a["x"], a["gy"])
    arg, bad, expect, ref = one_broken(data, args_call, specs)
    before = snapshot(m)
    stream = rnncore.random.generator().bit_generator.state
    done, got = outcome(lambda: call(m, bad), arg, expect)
    if done == "answered":
        rnncore.random.generator().bit_generator.state = stream   # (the twin's dropout masks)
        want = call(twin, ref)
        same_answer(got, want)
        for p, q in zip(m.parameters(), twin.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)
        return
    assert same(before, snapshot(m)), "changed by a refused call"
    assert rnncore.random.generator().bit_generator.state == stream
    for s in ("h_n", "c_n"):
        if hasattr(twin, s):
            same_answer(getattr(m, s), getattr(twin, s))
    gx, gx_twin = m.backward(x, gy), twin.backward(x, gy)
    same_answer(gx, gx_twin)
    for p, q in zip(m.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


def _log_softmax(z):
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@fuzz
@given(name=st.sampled_from(["nll", "ce", "mse", "bce", "seqnll", "seqmse", "seqbce"]),
       which=st.sampled_from(["forward", "backward"]), data=st.data())
def test_criteria_refuse_one_broken_argument_by_its_name(name, which, data):
    """A valid criterion call (input, target; lengths for SequencerCriterion) with one argument
    broken. A target at a padding step is never read: broken there, the call works, as the valid
    one. A refusal leaves the criterion as a twin (its loss, and the lengths and gradient that
    a backward without lengths reuses)."""
    r = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    dtype = data.draw(st.sampled_from([F32, F64]), label="dtype")
    seq = name.startswith("seq")
    lead = (data.draw(st.integers(1, 3), label="T"), data.draw(st.integers(1, 3), label="B")) \
        if seq else (data.draw(st.integers(1, 4), label="N"),)
    C = data.draw(st.integers(2, 4), label="C")
    inner = {"nll": ClassNLLCriterion, "ce": CrossEntropyCriterion, "mse": MSECriterion,
             "bce": BCECriterion}[name[3:] if seq else name]
    z = r.standard_normal(lead + (C,))
    if name.endswith("nll") or name == "ce":
        x, t = (_log_softmax(z) if name.endswith("nll") else z), r.integers(0, C, lead)
        x_spec = Arg("input", shapes=("extra axis", "drop axis", "empty"))
        t_spec = Arg("target", "i", hi=C, shapes=SHAPES)
    else:
        x = 1 / (1 + np.exp(-z)) if name.endswith("bce") else z
        t = r.random(lead + (C,)) if name.endswith("bce") else r.standard_normal(lead + (C,))
        bounds = (0.0, 1.0) if name.endswith("bce") else None
        x_spec = Arg("input", shapes=("wider", "extra axis", "empty"), bounds=bounds,
                     shape_name={"wider": "target", "extra axis": "target"})
        t_spec = Arg("target", shapes=SHAPES, bounds=bounds)
    args = dict(input=x.astype(dtype), target=t)
    specs = dict(input=x_spec, target=t_spec)
    if seq:
        T, B = lead
        args["lengths"] = lengths_for(data, T, B)
        lengths = args["lengths"]
        # (None: all T in a forward, the forward's lengths in a backward)
        default = np.full(B, T) if lengths is None or which == "forward" else lengths
        specs["lengths"] = Arg("lengths", "lengths", T=T, B=B, optional=True, default=default)
        per_row = int(np.prod(t.shape[2:]))
        t_spec.unread = None if lengths is None else \
            lambda pos: pos // (B * per_row) >= lengths[pos // per_row % B]
    make = (lambda: SequencerCriterion(inner())) if seq else inner
    crits = [make(), make()]
    for c in crits:
        c.forward(**args)
    c, twin = crits
    arg, bad, expect, ref = one_broken(data, args, specs)
    done, got = outcome(lambda: getattr(c, which)(**bad), arg, expect)
    if done == "answered":
        same_answer(got, getattr(twin, which)(**ref))
        return
    assert c.output == twin.output
    if seq:
        same_answer(c.backward(args["input"], t), twin.backward(args["input"], t))


def _cell_args(cell, r, dt, B, H, T=3, I=3):
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    args = dict(x=r.standard_normal((T, B, I)).astype(dt),
                W_ih=r.standard_normal((G * H, I)).astype(dt),
                W_hh=r.standard_normal((G * H, H)).astype(dt))
    for b in (("b_ih", "b_hh") if cell == "gru" else ("b",)):
        args[b] = r.standard_normal(G * H).astype(dt)
    return args


@fuzz
@given(cell=st.sampled_from(["lstm", "gru", "rnn"]), which=st.sampled_from(["forward", "backward"]),
       dtype=st.sampled_from([F32, F64]), data=st.data())
def test_kernels_refuse_one_broken_argument_by_its_name(cell, which, dtype, data):
    """``kernels.<cell>`` forward (x, the weights, h0, c0, lengths, reverse, path) or backward
    (dy, dh_n, dc_n) with one argument broken; the kernels read no values, so NaN is not a
    break there, and x must be float32 or float64 (it sets the dtype of the call). A backward,
    refused or not, leaves its cache as it was: the valid call answers as before."""
    forward, backward = _kernels(cell)
    r = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    T, B = data.draw(st.integers(1, 3), label="T"), data.draw(st.integers(1, 3), label="B")
    H = data.draw(st.sampled_from([1, 2, 4]), label="H")
    args = _cell_args(cell, r, dtype, B, H, T)
    states = ("h0", "c0") if cell == "lstm" else ("h0",)
    for s in states:
        args[s] = r.standard_normal((B, H)) if data.draw(st.booleans(), label=s) else None
    args["lengths"] = lengths_for(data, T, B)
    flags = dict(reverse=data.draw(st.booleans(), label="reverse"),
                 path=data.draw(st.sampled_from(["steps", "auto"]), label="path"))
    W = dict(values=False, shapes=SHAPES)
    if which == "forward":
        specs = {k: Arg(k, dtype=dtype, **W) for k in args if k not in ("x", "lengths")}
        specs["x"] = Arg("x", dtype=dtype, values=False, casts=False, shapes=SHAPES,
                         shape_name={"wider": "W_ih", "narrower": "W_ih"})
        specs["lengths"] = Arg("lengths", "lengths", T=T, B=B, optional=True,
                               default=np.full(B, T))
        for s in states:
            specs[s].optional, specs[s].default = True, np.zeros((B, H))
        which_flag = data.draw(st.sampled_from([None, "reverse", "path"]), label="flag")
        if which_flag is None:
            arg, bad, expect, ref = one_broken(data, args, specs)
        else:                                      # (value, taken as)
            values = {"reverse": [("True", None), (2, None), (None, None), (1.0, None),
                                  (np.array([1]), None), (np.True_, True), (np.int64(0), False),
                                  (1, True), (0, False)],
                      "path": [("other", None), (None, None), (3, None), ("STEPS", None)]
                      + ([("tiled", None)] if dtype == F64 else [])}[which_flag]   # (float32 only)
            v, taken = data.draw(st.sampled_from(values), label=which_flag)
            arg, bad, ref = which_flag, dict(args), dict(args)
            bad_flags = dict(flags, **{which_flag: v})
            expect = "refuse" if taken is None else "same"
            flags_ref = dict(flags, **{which_flag: taken})
            done, got = outcome(lambda: forward(**bad, **bad_flags), arg, expect)
            if done == "answered":
                same_answer(got, forward(**ref, **flags_ref))
            return
        done, got = outcome(lambda: forward(**bad, **flags), arg, expect)
        if done == "answered":
            same_answer(got, forward(**ref, **flags))
        return
    y, *finals, cache = forward(**args, **flags)
    grads = dict(dy=r.standard_normal(y.shape).astype(dtype))
    for s, f in zip(("dh_n", "dc_n"), finals):
        grads[s] = r.standard_normal(f.shape) if data.draw(st.booleans(), label=s) else None
    specs = {k: Arg(k, dtype=dtype, optional=True, default=np.zeros(y.shape if k == "dy"
                                                                      else (B, H)), **W)
             for k in grads}

    def call(g):
        return backward(*g.values(), cache)
    want = call(grads)
    arg, bad, expect, ref = one_broken(data, grads, specs)
    done, got = outcome(lambda: call(bad), arg, expect)
    if done == "answered":
        for g, w in zip(got, call(ref)):
            same_answer(g, w)
    for g, w in zip(call(grads), want):                 # (the cache as it was)
        np.testing.assert_array_equal(g, w)


def _fit_setup():
    rnncore.manual_seed(0)
    m = Sequential(LSTM(3, 4), LastStep(), Linear(4, 2), LogSoftMax())
    r = np.random.default_rng(0)
    return m, r.standard_normal((3, 4, 3)), r.integers(0, 2, 4)


_FX, _FY = _fit_setup()[1:]
_FNAN = _FX.copy()
_FNAN[2, 1, 0] = np.nan
FIT_SETTINGS = {              # keyword: [(value, the valid value it means or None: refused)]
    "epochs": [(0, None), (-1, None), (1.0, None), (True, None), ("1", None), (None, None),
               (2 ** 70, None), (np.int64(1), 1)],
    "batch_size": [(0, None), (2.5, None), (False, None), (np.int32(2), 2), (100, 100)],
    "shuffle": [(1, None), ("yes", None), (None, None), (np.False_, False), (np.True_, True)],
    "seed": [(-1, None), (1.5, None), ("0", None), (np.int64(0), 0), (2 ** 70, 2 ** 70)],
    "clip": [(0, None), (-1.0, None), (np.nan, None), (-np.inf, None), ("1", None), (True, None),
             (np.float64(1.0), 1.0), (1, 1.0), (np.inf, 1e300)],      # (inf: no clipping, as a
                                                                      # bound no norm reaches)
    "optimizer": [(-0.1, None), (0, None), (np.nan, None), ("0.1", None), (True, None),
                  (1e39, None), (np.float64(0.1), 0.1)],
    "progress": [("no", None), (0, None)],
    "callback": [(3, None), ("f", None)],
    "validation": [((_FX,), None), (_FX, None), ([_FX, _FY], (_FX, _FY))],
    "validation[0]": [((_FNAN, _FY), None), ((_FX[..., :2], _FY), None)],
    "validation[1]": [((_FX, np.full(4, 2)), None), ((_FX, _FY[:3]), None),
                      ((_FX, _FY.astype(float)), None)],
    "validation[2]": [((_FX, _FY, np.array([0, 1, 2, 3])), None),
                      ((_FX, _FY, np.ones(3, int)), None)],
}


@fuzz
@given(key=st.sampled_from(sorted(FIT_SETTINGS)), data=st.data())
def test_fit_refuses_one_broken_setting_by_its_name(key, data):
    """``fit`` with valid data and settings but one keyword (or the float learning rate) broken:
    refused naming it, the model as it was; or taken as the valid value it means (a NumPy
    scalar for an int, a list for a tuple), training to the same weights."""
    value, means = data.draw(st.sampled_from(FIT_SETTINGS[key]), label=key)
    kw = dict(epochs=1, batch_size=2, shuffle=True, seed=0, clip=None, progress=False,
              optimizer=0.1)
    keyword = key.split("[")[0]
    runs = []
    for v in (value, means):
        m, x, y = _fit_setup()
        m.training()
        args = dict(kw, **{keyword: v})
        lr = args.pop("optimizer")
        before = snapshot(m)
        runs.append((m, outcome(lambda: rnncore.fit(m, ClassNLLCriterion(), lr, x, y, **args),
                                key, "refuse" if means is None else "same")))
        if means is None:
            assert same(before, snapshot(m)), "changed by a refused fit"
            assert all(k.train for k in m.modules())
            return
    (m, _), (twin, _) = runs
    for p, q in zip(m.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
