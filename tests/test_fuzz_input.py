"""Random malformed input, drawn by hypothesis: to modules (x, lengths, states, gy), criteria,
``load_state_dict``, ``pad_sequences``, optimizers, ``fit``, and the kernels' entry points
(``kernels.<cell>`` and the NumPy reference). Whatever is drawn, a call either
works or raises ValueError or TypeError with a message (never IndexError, a Numba typing error,
AttributeError, ...), and a refused call leaves the model's parameters and grads as they were
(and, for the modules, what their next backward reads and the random stream).

``tests/test_errors.py`` holds one row per known bad input with the exact argument named; this
file throws combinations at the same API (dtypes from bool to complex and strings, 0-d to 4-d,
empty dimensions, NaN/Inf, 1e30 and subnormal values, lists, ragged lists, masked, Fortran-order,
strided and read-only arrays). The CI runs 25 cases per property;
``python -m pytest tests/test_fuzz_input.py --hypothesis-profile=deep`` runs 500 fresh ones
(checked clean with 2000-4000 cases per property, 300 for `fit`, 2026-12-02).
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
