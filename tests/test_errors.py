"""Bad input, one row each: the error type, a message that names the argument and says what was
expected and what came, and a model left exactly as it was (parameters and their grads)."""

import numpy as np
import pytest

import rnncore
from rnncore import (LSTM, BCECriterion, ClassNLLCriterion, Dropout, Embedding, LastStep, LeakyReLU,
                     Linear, LogSoftMax, MSECriterion, Sequencer, Sequential, SequencerCriterion, Tanh,
                     optim, pad_sequences)
from rnncore.summary import summary

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 2, 3))                      # (T, B, F)
NAN = X.copy()
NAN[1, 0, 2] = np.nan
INF = X.copy()
INF[0, 1, 0] = np.inf


def forwarded(m, x=X, **kw):
    """``m`` after one forward (so that a backward has something to differentiate)."""
    m.forward(x, **kw)
    return m


def seq_model():
    rnncore.manual_seed(0)
    return Sequencer(Sequential(LSTM(3, 4), Linear(4, 2), LogSoftMax()))


def with_grads(m):
    """``m`` with non-zero grads, so that 'unchanged' covers the grads too."""
    for p in m.parameters():
        p.grad[...] = 0.5
    return m


def lstm_chain():
    rnncore.manual_seed(0)
    return Sequential(LSTM(3, 2), Linear(2, 1))


def params(n=2):
    return Linear(3, n).parameters()


# (id, make the object under test, the refused call, error type, the argument's name)
CASES = [
    # -- Linear
    ("linear-x-width", lambda: Linear(3, 2), lambda m: m.forward(np.ones((2, 4))), ValueError, "x"),
    ("linear-x-nan", lambda: Linear(3, 2), lambda m: m.forward(NAN), ValueError, "x"),
    ("linear-x-inf", lambda: Linear(3, 2), lambda m: m.forward(INF), ValueError, "x"),
    ("linear-x-str", lambda: Linear(3, 2), lambda m: m.forward(np.array(["a", "b", "c"])), TypeError, "x"),
    ("linear-x-scalar", lambda: Linear(3, 2), lambda m: m.forward(1.0), ValueError, "x"),
    ("linear-gy-shape", lambda: with_grads(forwarded(Linear(3, 2))),
     lambda m: m.backward(X, np.ones((4, 2, 3))), ValueError, "gy"),
    ("linear-gy-nan", lambda: with_grads(forwarded(Linear(3, 2))),
     lambda m: m.backward(X, np.full((4, 2, 2), np.nan)), ValueError, "gy"),
    ("linear-in-zero", lambda: None, lambda m: Linear(0, 2), ValueError, "in_features"),
    ("linear-out-float", lambda: None, lambda m: Linear(3, 2.5), TypeError, "out_features"),
    ("linear-dtype", lambda: None, lambda m: Linear(3, 2, dtype=np.int32), TypeError, "dtype"),
    ("linear-output-shape", lambda: Linear(3, 2), lambda m: m.output_shape((5, None, 4)),
     ValueError, "input_shape"),
    ("astype-int", lambda: Linear(3, 2), lambda m: m.astype(np.int64), TypeError, "dtype"),
    ("update-lr", lambda: with_grads(Linear(3, 2)), lambda m: m.update_parameters(-0.1), ValueError, "lr"),
    ("update-lr-beyond-float32", lambda: with_grads(Linear(3, 2)), lambda m: m.update_parameters(1e39),
     ValueError, "lr"),
    # -- Embedding
    ("embedding-id-high", lambda: Embedding(5, 2), lambda m: m.forward(np.array([[1, 5]])), ValueError, "x"),
    ("embedding-id-negative", lambda: Embedding(5, 2), lambda m: m.forward(np.array([-1, 2])),
     ValueError, "x"),
    ("embedding-id-float", lambda: Embedding(5, 2), lambda m: m.forward(np.array([1.0, 2.0])),
     TypeError, "x"),
    ("embedding-backward-id", lambda: with_grads(forwarded(Embedding(5, 2), np.array([1, 2]))),
     lambda m: m.backward(np.array([1, 7]), np.ones((2, 2))), ValueError, "x"),
    ("embedding-gy-shape", lambda: with_grads(forwarded(Embedding(5, 2), np.array([1, 2]))),
     lambda m: m.backward(np.array([1, 2]), np.ones((2, 3))), ValueError, "gy"),
    ("embedding-pretrained-1d", lambda: None, lambda m: Embedding.from_pretrained(np.ones(4)),
     ValueError, "embeddings"),
    ("embedding-freeze-str", lambda: None, lambda m: Embedding(3, 2, freeze="yes"), TypeError, "freeze"),
    # -- activations, dropout
    ("dropout-p-one", lambda: None, lambda m: Dropout(1.0), ValueError, "p"),
    ("dropout-p-negative", lambda: None, lambda m: Dropout(-0.1), ValueError, "p"),
    ("leaky-slope-nan", lambda: None, lambda m: LeakyReLU(float("nan")), ValueError, "slope"),
    ("tanh-gy-shape", lambda: forwarded(Tanh()), lambda m: m.backward(X, np.ones((4, 2))), ValueError, "gy"),
    ("tanh-x-shape", lambda: forwarded(Tanh()), lambda m: m.backward(X[:2], X[:2]), ValueError, "x"),
    ("logsoftmax-x-nan", lambda: LogSoftMax(), lambda m: m.forward(NAN), ValueError, "x"),
    ("logsoftmax-x-empty", lambda: LogSoftMax(), lambda m: m.forward(np.ones((0, 3))), ValueError, "x"),
    ("softmax-x-empty", lambda: rnncore.SoftMax(), lambda m: m.forward(np.ones((2, 0))), ValueError, "x"),
    ("sequential-add-not-module", lambda: Sequential(Linear(3, 2)), lambda m: m.add(3), TypeError, "module"),
    ("lstm-dtype-none", lambda: None, lambda m: LSTM(3, 2, dtype=None), TypeError, "dtype"),
    ("astype-none", lambda: Linear(3, 2), lambda m: m.astype(None), TypeError, "dtype"),
    ("lstm-x-beyond-float32", lambda: LSTM(3, 2), lambda m: m.forward(np.full((2, 1, 3), 1e39)),
     ValueError, "x"),
    ("load-state-beyond-float32", lambda: with_grads(Linear(3, 2)),
     lambda m: m.load_state_dict({**m.state_dict(), "bias": np.array([1e39, 0.0])}), ValueError,
     "state['bias']"),
    ("load-state-int-key", lambda: with_grads(Sequential(Linear(3, 2))),
     lambda m: m.load_state_dict({0: np.ones((2, 3))}), TypeError, "state"),
    # -- Sequential, Sequencer, LastStep
    ("sequential-not-module", lambda: None, lambda m: Sequential(Linear(2, 2), "tanh"), TypeError,
     "modules[1]"),
    ("sequential-mixed-dtype", lambda: None,
     lambda m: Sequential(Linear(2, 2), Linear(2, 2, dtype=np.float64)), ValueError, "modules"),
    ("sequential-lengths-high", lambda: with_grads(Sequential(LSTM(3, 2), Linear(2, 1))),
     lambda m: m.forward(X, lengths=np.array([5, 1])), ValueError, "lengths"),
    ("sequential-lengths-1d-x", lambda: with_grads(Sequential(Linear(3, 1))),
     lambda m: m.forward(np.ones(3), lengths=np.array([1])), ValueError, "x"),
    ("sequential-backward-x-shape", lambda: with_grads(forwarded(Sequential(LSTM(3, 2), Linear(2, 1)))),
     lambda m: m.backward(np.ones((7, 7, 7)), np.ones((4, 2, 1))), ValueError, "x"),
    ("sequential-backward-x-nan", lambda: with_grads(forwarded(Sequential(LSTM(3, 2), Linear(2, 1)))),
     lambda m: m.backward(NAN, np.ones((4, 2, 1))), ValueError, "x"),
    # x checked before lengths is checked against its shape (lengths was named for an empty
    # x, and a ragged nested list raised NumPy's message, which names nothing)
    ("sequential-lengths-x-no-steps", lambda: with_grads(forwarded(lstm_chain())),
     lambda m: m.forward(np.ones((0, 2, 3)), lengths=np.array([1, 1])), ValueError, "x"),
    ("sequential-lengths-x-no-batch", lambda: with_grads(forwarded(lstm_chain())),
     lambda m: m.forward(np.ones((4, 0, 3)), lengths=np.array([1, 1])), ValueError, "x"),
    ("sequential-lengths-x-ragged", lambda: with_grads(forwarded(lstm_chain())),
     lambda m: m.forward([[[1.0, 2.0, 3.0], [1.0, 2.0]]], lengths=np.array([1, 1])), TypeError,
     "x"),
    ("sequential-empty-x-ragged", lambda: Sequential(),
     lambda m: m.forward([[[1.0, 2.0, 3.0], [1.0, 2.0]]]), TypeError, "x"),
    # ids given as floats to the backward of a chain that keeps its forward's ids (an Embedding
    # first): refused as its forward refuses them (compared as floats, they were taken)
    ("sequential-backward-ids-as-floats",
     lambda: with_grads(forwarded(Sequential(Embedding(5, 3), LSTM(3, 2)), np.array([[1, 2]]))),
     lambda m: m.backward(np.array([[1.0, 2.0]]), np.ones((1, 2, 2))), TypeError, "x"),
    ("sequential-lengths-uint64-huge", lambda: with_grads(Sequential(LSTM(3, 2))),
     lambda m: m.forward(X, lengths=np.array([2**64 - 1, 1], np.uint64)), ValueError, "lengths"),
    ("lstm-x-masked", lambda: with_grads(LSTM(3, 2)),
     lambda m: m.forward(np.ma.masked_array(X, mask=X > 1)), TypeError, "x"),
    ("mse-input-masked", lambda: None,
     lambda m: MSECriterion().forward(np.ma.masked_array(X, mask=X > 1), X), TypeError, "input"),
    ("lstm-lengths-scalar", lambda: with_grads(LSTM(3, 2)),
     lambda m: m.forward(X, lengths=3), ValueError, "lengths"),
    ("sequencer-lengths-zero", lambda: with_grads(seq_model()),
     lambda m: m.forward(X, lengths=np.array([0, 4])), ValueError, "lengths"),
    ("sequencer-lengths-shape", lambda: with_grads(seq_model()),
     lambda m: m.forward(X, lengths=np.array([4, 4, 4])), ValueError, "lengths"),
    ("sequencer-lengths-float", lambda: with_grads(seq_model()),
     lambda m: m.forward(X, lengths=np.array([4.0, 2.0])), TypeError, "lengths"),
    ("sequencer-list-ragged", lambda: with_grads(seq_model()),
     lambda m: m.forward([X[0], X[1, :1]]), ValueError, "x"),
    ("sequencer-list-empty", lambda: with_grads(seq_model()), lambda m: m.forward([]), ValueError, "x"),
    ("sequencer-x-nan", lambda: with_grads(seq_model()), lambda m: m.forward(NAN), ValueError, "x"),
    ("sequencer-x-1d", lambda: with_grads(seq_model()), lambda m: m.forward(np.ones(3)), ValueError, "x"),
    ("sequencer-gy-shape", lambda: with_grads(forwarded(seq_model())),
     lambda m: m.backward(X, np.ones((4, 2, 3))), ValueError, "gy"),
    ("sequencer-gy-inf", lambda: with_grads(forwarded(seq_model())),
     lambda m: m.backward(X, np.full((4, 2, 2), np.inf)), ValueError, "gy"),
    ("sequencer-drops-time", lambda: with_grads(Sequencer(LSTM(3, 2, return_sequences=False))),
     lambda m: m.forward(X), ValueError, "module"),
    ("laststep-lengths-high", lambda: LastStep(), lambda m: m.forward(X, lengths=np.array([1, 5])),
     ValueError, "lengths"),
    ("laststep-x-1d", lambda: LastStep(), lambda m: m.forward(np.ones(3)), ValueError, "x"),
    ("laststep-gy-shape", lambda: forwarded(LastStep()), lambda m: m.backward(X, np.ones((4, 3))),
     ValueError, "gy"),
    # -- state dicts
    ("load-unknown-key", lambda: with_grads(seq_model()),
     lambda m: m.load_state_dict({**m.state_dict(), "0.3.weight": np.ones(2)}), ValueError, "0.3.weight"),
    ("load-wrong-shape", lambda: with_grads(seq_model()),
     lambda m: m.load_state_dict({**m.state_dict(), "0.1.weight": np.ones((4, 2))}), ValueError,
     "0.1.weight"),
    ("load-nan", lambda: with_grads(seq_model()),
     lambda m: m.load_state_dict({**m.state_dict(), "0.1.bias": np.full(2, np.nan)}), ValueError,
     "0.1.bias"),
    # -- criteria
    ("mse-target-shape", lambda: None, lambda m: MSECriterion().forward(X, X[:, :1]), ValueError, "target"),
    ("mse-input-nan", lambda: None, lambda m: MSECriterion().forward(NAN, X), ValueError, "input"),
    ("mse-target-inf", lambda: None, lambda m: MSECriterion().backward(X, INF), ValueError, "target"),
    ("mse-lengths", lambda: None, lambda m: MSECriterion().forward(X, X, lengths=np.array([4, 4])),
     ValueError, "lengths"),
    ("nll-target-range", lambda: None,
     lambda m: ClassNLLCriterion().forward(np.zeros((2, 3)), np.array([0, 3])), ValueError, "target"),
    ("nll-target-float", lambda: None,
     lambda m: ClassNLLCriterion().forward(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError, "target"),
    ("nll-target-shape", lambda: None,
     lambda m: ClassNLLCriterion().forward(np.zeros((2, 3)), np.array([0, 1, 1])), ValueError, "target"),
    ("nll-input-3d", lambda: None,
     lambda m: ClassNLLCriterion().forward(np.zeros((2, 2, 3)), np.array([0, 1])), ValueError, "input"),
    ("bce-input-range", lambda: None,
     lambda m: BCECriterion().forward(np.array([0.5, 1.5]), np.array([0.0, 1.0])), ValueError, "input"),
    ("bce-target-range", lambda: None,
     lambda m: BCECriterion().forward(np.array([0.5, 0.5]), np.array([0.0, 2.0])), ValueError, "target"),
    ("seqcrit-target-steps", lambda: None,
     lambda m: SequencerCriterion(MSECriterion()).forward(X, X[:3]), ValueError, "target"),
    ("seqcrit-target-nan-at-a-valid-step", lambda: None,            # (padding is never read)
     lambda m: SequencerCriterion(MSECriterion()).forward(X, NAN, lengths=np.array([2, 1])),
     ValueError, "target"),
    ("seqcrit-lengths", lambda: None,
     lambda m: SequencerCriterion(MSECriterion()).forward(X, X, lengths=np.array([2, 9])),
     ValueError, "lengths"),
    ("seqcrit-inner", lambda: None, lambda m: SequencerCriterion(Tanh()), TypeError, "criterion"),
    # shapes of the right size but not the right shape (a size check alone broadcast them:
    # a (1, B) lengths gave Linear and Tanh a 4-D output, a (4, 1) target a (4, 4) gradient)
    ("linear-lengths-row", lambda: Linear(3, 2),
     lambda m: m.forward(X, lengths=np.array([[4, 2]])), ValueError, "lengths"),
    ("tanh-lengths-column", lambda: Tanh(),
     lambda m: m.forward(X, lengths=np.array([[4], [2]])), ValueError, "lengths"),
    ("seqcrit-lengths-row", lambda: None,
     lambda m: SequencerCriterion(MSECriterion()).forward(X, X, lengths=np.array([[4, 2]])),
     ValueError, "lengths"),
    ("mse-target-transposed", lambda: None,
     lambda m: MSECriterion().forward(np.ones((1, 4)), np.ones((4, 1))), ValueError, "target"),
    ("bce-target-transposed", lambda: None,
     lambda m: BCECriterion().backward(np.full((1, 4), 0.5), np.ones((4, 1))), ValueError,
     "target"),
    ("tanh-gy-transposed", lambda: forwarded(Tanh(), np.ones((1, 4))),
     lambda m: m.backward(np.ones((1, 4)), np.ones((4, 1))), ValueError, "gy"),
    # BCE's ranges at their bounds (a loosened bound let p = 1.2 through to a 1e11 gradient)
    ("bce-input-just-above-1", lambda: None,
     lambda m: BCECriterion().backward(np.array([0.5, 1 + 1e-6]), np.array([0.0, 1.0])),
     ValueError, "input"),
    ("bce-input-just-below-0", lambda: None,
     lambda m: BCECriterion().forward(np.array([-1e-6, 0.5]), np.array([0.0, 1.0])),
     ValueError, "input"),
    ("bce-target-just-above-1", lambda: None,
     lambda m: BCECriterion().forward(np.array([0.5, 0.5]), np.array([0.0, 1 + 1e-6])),
     ValueError, "target"),
    ("bce-target-just-below-0", lambda: None,
     lambda m: BCECriterion().backward(np.array([0.5, 0.5]), np.array([-1e-6, 1.0])),
     ValueError, "target"),
    ("seqcrit-class-range", lambda: None,
     lambda m: SequencerCriterion(ClassNLLCriterion()).forward(X, np.full((4, 2), 3)), ValueError, "target"),
    # -- optimizers
    ("sgd-lr-negative", lambda: None, lambda m: optim.SGD(params(), lr=-1.0), ValueError, "lr"),
    ("sgd-lr-zero", lambda: None, lambda m: optim.SGD(params(), lr=0), ValueError, "lr"),
    ("sgd-momentum", lambda: None, lambda m: optim.SGD(params(), lr=0.1, momentum=1.0), ValueError,
     "momentum"),
    ("adam-betas", lambda: None, lambda m: optim.Adam(params(), betas=(0.9, 1.0)), ValueError, "betas[1]"),
    ("adam-betas-scalar", lambda: None, lambda m: optim.Adam(params(), betas=0.9), TypeError, "betas"),
    ("rmsprop-alpha", lambda: None, lambda m: optim.RMSprop(params(), lr=0.1, alpha=-0.5), ValueError,
     "alpha"),
    ("optim-module", lambda: None, lambda m: optim.Adam(Linear(2, 2)), TypeError, "params"),
    ("optim-empty", lambda: None, lambda m: optim.Adam([]), ValueError, "params"),
    ("optim-array", lambda: None, lambda m: optim.Adam([np.zeros(3)]), TypeError, "params[0]"),
    ("clip-max-norm", lambda: with_grads(Linear(3, 2)),
     lambda m: optim.clip_grad_norm(m.parameters(), -1.0), ValueError, "max_norm"),
    # -- gradcheck, summary, pad_sequences
    ("gradcheck-module", lambda: None, lambda m: rnncore.gradcheck(np.tanh, X), TypeError, "module"),
    ("gradcheck-eps", lambda: Linear(3, 2), lambda m: rnncore.gradcheck(m, X, eps=0), ValueError, "eps"),
    ("gradcheck-nan", lambda: Linear(3, 2), lambda m: rnncore.gradcheck(m, NAN), ValueError, "x"),
    ("summary-shape", lambda: seq_model(), lambda m: summary(m, (5, None, 7)), ValueError, "input_shape"),
    ("summary-shape-none", lambda: seq_model(), lambda m: m.summary(None), TypeError, "input_shape"),
    ("pad-empty", lambda: None, lambda m: pad_sequences([]), ValueError, "sequences"),
    ("pad-features", lambda: None, lambda m: pad_sequences([np.ones((2, 3)), np.ones((2, 4))]),
     ValueError, "sequences"),
    ("pad-zero-length", lambda: None, lambda m: pad_sequences([np.ones((2, 3)), np.ones((0, 3))]),
     ValueError, "sequences[1]"),
    ("pad-nan", lambda: None, lambda m: pad_sequences([NAN[:, 0]]), ValueError, "sequences[0]"),
    ("pad-3d", lambda: None, lambda m: pad_sequences([X]), ValueError, "sequences[0]"),
    ("pad-array", lambda: None, lambda m: pad_sequences(X), TypeError, "sequences"),
    ("pad-int-dtype-for-floats", lambda: None,
     lambda m: pad_sequences([np.ones((2, 3))], dtype=np.int64), TypeError, "sequences[0]"),
    # -- randomness
    ("manual-seed-str", lambda: None, lambda m: rnncore.manual_seed("a"), TypeError, "seed"),
    ("manual-seed-negative", lambda: None, lambda m: rnncore.manual_seed(-1), ValueError, "seed"),
]


def snapshot(m):
    if m is None or not isinstance(m, rnncore.Module):
        return []
    return [(p.name, p.data.copy(), p.grad.copy(), p.data.dtype) for p in m.parameters()]


@pytest.mark.parametrize("make, call, exc, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(make, call, exc, name):
    m = make()
    before = snapshot(m)
    with pytest.raises(exc) as info:
        call(m)
    msg = str(info.value)
    assert msg.startswith(name) or f"{name}:" in msg or f"'{name}'" in msg, msg   # names the argument
    assert "expected" in msg and ("got" in msg or "unknown keys" in msg), msg   # expected vs came
    after = snapshot(m)
    assert len(after) == len(before)
    for (k, d0, g0, t0), (_, d1, g1, t1) in zip(before, after):  # the model is unchanged
        assert t0 == t1 and np.array_equal(d0, d1) and np.array_equal(g0, g1), k


def test_refused_sequencer_forward_keeps_the_last_good_backward():
    """A refused forward does not replace what backward differentiates."""
    m = seq_model().astype(np.float64)
    gy = np.ones((4, 2, 2))
    m.forward(X)
    m.zero_grad_parameters()
    good = m.backward(X, gy)
    with pytest.raises(ValueError):
        m.forward(X, lengths=np.array([0, 1]))
    m.zero_grad_parameters()
    np.testing.assert_array_equal(m.backward(X, gy), good)


def test_backward_before_forward():
    for m in (Tanh(), LastStep(), Sequencer(Linear(3, 2)), Sequential(Tanh())):
        with pytest.raises(RuntimeError, match="forward first"):
            m.backward(X, X)


def test_refused_sequencer_criterion_forward_keeps_the_lengths_backward_reuses():
    """backward without lengths= reuses the last forward's; a forward refused for a bad class
    id had not replaced them in the code, and must not (the gradient would be silently wrong)."""
    r = np.random.default_rng(0)
    x = list(np.log(r.dirichlet(np.ones(5), size=(4, 3))))           # (a list: no kept gradient)
    t = r.integers(0, 5, (4, 3))
    crit = SequencerCriterion(ClassNLLCriterion())
    crit.forward(x, t, lengths=np.array([4, 2, 1]))
    want = np.stack(crit.backward(x, t, lengths=np.array([4, 2, 1])))
    bad = t.copy()
    bad[0, 0] = 5
    with pytest.raises(ValueError, match="target"):
        crit.forward(x, bad, lengths=np.array([1, 1, 1]))
    np.testing.assert_array_equal(np.stack(crit.backward(x, t)), want)
