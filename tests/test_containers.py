"""Sequential, Sequencer, LastStep, pad_sequences and summary.

Gradients of whole stacks (recurrent layers included) by float64 central differences; the
Sequencer's two input kinds (list of steps, (T, B, F) array) against each other; padding
(``lengths=``) against running each sequence alone, trimmed.
"""

import copy
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncore
from rnncore import (GRU, LSTM, Dropout, Embedding, LastStep, LeakyReLU, Linear, LogSoftMax, ReLU,
                     Sequencer, Sequential, Tanh, pad_sequences)
from rnncore.containers import _refuses_cleanly as clean_refuses
from rnncore.summary import summary
from _buffers import assert_backward_ignores_a_refilled_input
from _numeric import numeric_grad, rel_err

TOL = 1e-6


def check_grads(m, x, lengths=None, seed=0):
    """Analytic vs numerical gradients of loss = sum(m(x) * dout) for x (if float) and every param."""
    y = np.asarray(m.forward(x, lengths=lengths))
    dout = np.random.default_rng(seed).standard_normal(y.shape)
    m.zero_grad_parameters()
    gx = m.backward(x, dout)
    analytic = [p.grad.copy() for p in m.parameters()]

    def loss():
        return float(np.sum(np.asarray(m.forward(x, lengths=lengths)) * dout))

    if x.dtype.kind == "f":
        assert rel_err(np.asarray(gx), numeric_grad(loss, x)) < TOL
    for p, a in zip(m.parameters(), analytic):
        assert rel_err(a, numeric_grad(loss, p.data)) < TOL, p.name


def ragged(rng, T, B):
    """lengths (B,) in [1, T] with at least one full-length sequence."""
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    return lengths


# -- Sequential --------------------------------------------------------------------------------
@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple),
       i=st.integers(1, 3), h=st.integers(1, 3), o=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_sequential_gradients(lead, i, h, o, seed):
    rnncore.manual_seed(seed)
    m = Sequential(Linear(i, h), Tanh(), Linear(h, o), LogSoftMax(), dtype=np.float64)
    x = np.random.default_rng(seed).standard_normal(lead + (i,))
    check_grads(m, x, seed=seed)
    # (step 1e-4: some of the nets drawn saturate their Tanh, and at the default 1e-6 the
    # difference quotient's rounding alone is 3e-6-1e-5 of their tiny gradients; gradcheck's doc)
    assert rnncore.gradcheck(m, x, eps=1e-4) < TOL


def test_sequential_is_the_chain():
    rnncore.manual_seed(0)
    a, b = Linear(3, 4, dtype=np.float64), Linear(4, 2, dtype=np.float64)
    m = Sequential(a, ReLU(dtype=np.float64), b)
    x = np.random.default_rng(0).standard_normal((5, 3))
    y = m.forward(x)
    np.testing.assert_array_equal(y, b.forward(np.maximum(a.forward(x), 0)))
    gy = np.ones_like(y)
    gx = m.backward(x, gy)
    np.testing.assert_allclose(gx, ((gy @ b.weight.data) * (a.forward(x) > 0)) @ a.weight.data)
    assert list(m.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert m.parameters()[2] is b.weight
    assert len(m) == 3 and m[2] is b


def test_sequential_dtype_rules():
    assert Sequential(Linear(2, 2), Tanh()).dtype == np.float32
    m = Sequential(Linear(2, 2), Tanh(), dtype=np.float64)
    assert m.dtype == np.float64 and all(p.data.dtype == np.float64 for p in m.parameters())
    m.astype(np.float32)
    assert m[0].dtype == np.float32 and m[0].weight.data.dtype == np.float32
    assert m.add(Linear(2, 1)) is m and len(m) == 3


def test_sequential_hands_lengths_to_every_child():
    """Sequential(LSTM, LSTM(return_sequences=False)) with lengths == the final states at lengths-1."""
    rnncore.manual_seed(2)
    m = Sequential(LSTM(2, 3), LSTM(3, 2, return_sequences=False), dtype=np.float64)
    rng = np.random.default_rng(0)
    x, lengths = rng.standard_normal((5, 3, 2)), np.array([5, 2, 3])
    y = m.forward(x, lengths=lengths)                             # (B, 2)
    for b in range(3):
        alone = m.forward(x[:lengths[b], b:b + 1])                 # the sequence on its own
        np.testing.assert_allclose(y[b], alone[0], rtol=1e-12, atol=1e-14)
    assert rnncore.gradcheck(m, x, lengths=lengths) < TOL


def test_sequential_padding_is_zero_and_takes_no_gradient():
    """With lengths, a chain whose output keeps (T, B) has zeros at padding steps (not the
    Linear's bias) and padding takes no gradient: the same numbers as the Sequencer."""
    rng = np.random.default_rng(3)
    x, lengths = rng.standard_normal((4, 3, 2)), np.array([2, 4, 1])
    gy = rng.standard_normal((4, 3, 2))
    rnncore.manual_seed(1)
    chain = Sequential(LSTM(2, 3), Linear(3, 2), dtype=np.float64)
    rnncore.manual_seed(1)
    wrapped = Sequencer(Sequential(LSTM(2, 3), Linear(3, 2)), dtype=np.float64)
    y = chain.forward(x, lengths=lengths)
    np.testing.assert_array_equal(y, wrapped.forward(x, lengths=lengths))
    assert not y[2:, 0].any() and not y[1:, 2].any() and y[1:, 1].all()
    np.testing.assert_array_equal(chain.backward(x, gy), wrapped.backward(x, gy))
    for p, q in zip(chain.parameters(), wrapped.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    chain.zero_grad_parameters()
    pad = np.zeros_like(gy)
    pad[2:, 0], pad[1:, 2] = 1.0, 1.0                               # gradient at padding only
    assert not chain.backward(x, pad).any()
    assert not any(p.grad.any() for p in chain.parameters())
    assert rnncore.gradcheck(chain, x, lengths=lengths) < TOL
    ends = Sequential(LSTM(2, 3), LastStep(), Linear(3, 2), dtype=np.float64)   # no time axis
    assert ends.forward(x, lengths=lengths).shape == (3, 2)
    square = np.arange(1.0, 9.0).reshape(2, 2, 2, 1)        # T == B: (B, 2, 1) out looks (T, B, ..)
    np.testing.assert_array_equal(Sequential(LastStep(dtype=np.float64)).forward(square, lengths=[1, 2]),
                                  square[[0, 1], [0, 1]])


def _grads(m):
    return [p.grad.copy() for p in m.parameters()]


def test_refused_forward_leaves_every_child_and_the_random_stream_as_they_were():
    """A child that refuses after others ran: the chain, its caches, states and the dropout
    stream are as before the call, so backward and the next draws are those of a run without it."""
    rng = np.random.default_rng(4)
    x, gy = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 3))

    def run(refuse):
        rnncore.manual_seed(0)
        m = Sequencer(Sequential(rnncore.Dropout(0.5), LSTM(2, 3), dtype=np.float64))
        m.forward(x)
        if refuse:                                  # Dropout draws, then the LSTM refuses width 5
            with pytest.raises(ValueError, match="input_size"):
                m.forward(rng.standard_normal((3, 2, 5)))
        gx = m.backward(x, gy)
        lstm = m.module[1]
        return gx, _grads(m), lstm.h_n, rnncore.random.generator().random(4)

    for a, b in zip(run(False), run(True)):
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            np.testing.assert_array_equal(u, v)


def test_refused_batch_change_in_a_remembered_child_keeps_the_chain():
    """The second LSTM remembers batch 4 and refuses batch 5 after the first one ran on it: the
    first LSTM keeps its batch-4 forward, so backward on the batch-4 input still works."""
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 3), LSTM(3, 4).remember(), dtype=np.float64)
    rng = np.random.default_rng(5)
    x4, x5 = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 5, 2))
    y = m.forward(x4)
    with pytest.raises(ValueError, match="batch size 4"):
        m.forward(x5)
    assert m[0].h_n.shape == (1, 4, 3)
    assert m.backward(x4, np.ones_like(y)).shape == x4.shape


def test_refused_sequencer_output_check_keeps_the_child():
    """The Sequencer refuses a child output without the time axis only after the child ran."""
    rnncore.manual_seed(0)
    m = Sequencer(LSTM(2, 3, return_sequences=False), dtype=np.float64)
    x = np.random.default_rng(6).standard_normal((3, 2, 2))
    child = m.module
    with pytest.raises(ValueError, match="leading"):
        m.forward(x)
    assert child.h_n is None and child._cache is None


def test_sequencer_refuses_a_child_without_the_time_axis_even_when_sizes_coincide():
    """(B, H) == (T, B): the child's output has the input's leading sizes but no time axis;
    ``output_shape`` with T unknown says so (the shapes alone had let it through, and with
    lengths its final states were zeroed as if they were padding steps)."""
    rnncore.manual_seed(0)
    m = Sequencer(LSTM(2, 3, return_sequences=False), dtype=np.float64)
    x = np.random.default_rng(6).standard_normal((3, 3, 2))           # T = B = H = 3
    with pytest.raises(ValueError, match="belongs outside the Sequencer"):
        m.forward(x, lengths=np.array([1, 3, 2]))
    assert m.module.h_n is None and m.module._cache is None
    y = Sequencer(Sequential(LSTM(2, 3), Linear(3, 3)), dtype=np.float64).forward(x)
    assert y.shape == (3, 3, 3)                                        # time-major: accepted


def test_sequencer_sees_return_sequences_switched_off_after_a_forward():
    """The Sequencer remembers its judgement of the child's output per structure: switching
    ``return_sequences`` off had kept the old answer, and at T == B == H the (B, H) final
    states were taken for a time-major output and their "padding" rows zeroed."""
    class Plain(LSTM):                   # a subclass that overrides it with a class attribute
        return_sequences = True

    x = np.random.default_rng(6).standard_normal((3, 3, 2))           # T = B = H = 3
    lengths = np.array([1, 3, 2])
    for layer in (LSTM, Plain):
        rnncore.manual_seed(0)
        m = Sequencer(layer(2, 3), dtype=np.float64)
        assert m.forward(x, lengths=lengths).shape == (3, 3, 3)
        m.module.return_sequences = False
        with pytest.raises(ValueError, match="belongs outside the Sequencer"):
            m.forward(x, lengths=lengths)
        m.module.return_sequences = True
        assert m.forward(x, lengths=lengths).shape == (3, 3, 3)
        with pytest.raises(TypeError, match="return_sequences: expected True or False, got 'no'"):
            m.module.return_sequences = "no"
        assert m.module.return_sequences is True
    assert not hasattr(LSTM.__new__(LSTM), "return_sequences")         # (AttributeError)


def test_sequencer_output_shape_refuses_what_forward_refuses():
    """summary and trace ask output_shape: a Sequencer around a layer that drops the time
    axis showed (None, 4) there, while its forward refuses it."""
    for inner in (LSTM(2, 4, return_sequences=False), Sequential(Linear(2, 3), LastStep())):
        with pytest.raises(ValueError, match="belongs outside the Sequencer"):
            Sequencer(inner).output_shape((None, 3, 2))
    assert Sequencer(LSTM(2, 4)).output_shape((None, 3, 2)) == (None, 3, 4)
    # an input without (T, B), and an output that loses B: summary counted and printed them
    with pytest.raises(ValueError, match=r"input_shape: expected a time-major shape "
                                         r"\(T, B, \.\.\.\), got \(5,\)"):
        Sequencer(Linear(5, 2)).output_shape((5,))
    with pytest.raises(ValueError, match=r"modules\[1\] \(Sequencer\).*time-major"):
        Sequential(Linear(3, 5), Sequencer(Linear(5, 2))).summary((3,), print_fn=None)
    with pytest.raises(ValueError, match=r"module: expected an output with the input's leading"):
        Sequencer(Linear(3, 2)).output_shape((2, 3))          # (2, 2): (T, B) = (2, 3) lost
    for m in (Tanh(), Dropout(0.5), LogSoftMax()):              # forward refuses a scalar
        with pytest.raises(ValueError, match=r"input_shape: expected at least one dimension"):
            m.output_shape(())


def test_refused_container_dtype_converts_no_child():
    """Sequential(..., dtype=) checks every child fits the dtype before it converts any."""
    a = LSTM(2, 3, dtype=np.float64)
    b = Linear(3, 2, dtype=np.float64)
    b.weight.data[0, 0] = 1e300                                        # beyond float32
    w = a.parameters()[0].data.copy()
    for make in (Sequential, Sequencer):
        children = (Sequential(a, b),) if make is Sequencer else (a, b)
        with pytest.raises(ValueError, match="beyond float32's range"):
            make(*children, dtype=np.float32)
        assert a.dtype == np.float64 and a.parameters()[0].data.dtype == np.float64
        np.testing.assert_array_equal(a.parameters()[0].data, w)
    lrelu = LeakyReLU(1e39, dtype=np.float64)                         # inf in float32
    with pytest.raises(ValueError, match="slope: expected a number that is finite in the "
                                         "module's dtype float32"):
        Sequential(a.astype(np.float64), lrelu, dtype=np.float32)
    assert a.dtype == np.float64 and lrelu.dtype == np.float64


def test_a_used_container_is_freed_without_the_garbage_collector():
    """No reference cycle (the all-or-nothing forward keeps a list of the subtree): a model and
    its caches go as soon as the last reference does, not at the next garbage collection."""
    import gc
    import weakref
    m = Sequencer(Sequential(LSTM(2, 3), Linear(3, 1)))
    m.forward(np.ones((3, 2, 2), np.float32))
    gone = weakref.ref(m)
    gc.disable()
    try:
        del m
        assert gone() is None
    finally:
        gc.enable()


def test_sequential_backward_checks_x_before_any_gradient():
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 3), Linear(3, 1), dtype=np.float64)
    x = np.random.default_rng(7).standard_normal((3, 2, 2))
    y = m.forward(x)
    for bad in (np.ones((7, 7, 7)), np.full(x.shape, np.nan)):
        with pytest.raises(ValueError, match="^x: expected"):
            m.backward(bad, np.ones_like(y))
        assert not any(p.grad.any() for p in m.parameters())
    np.testing.assert_array_equal(m.backward(x.copy(), np.ones_like(y)),
                                  m.backward(list(x), np.ones_like(y)))   # equal inputs are fine


def test_parameter_names_are_the_outermost_state_dict_keys():
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(LSTM(2, 3), Linear(3, 1)))
    assert [p.name for p in m.parameters()] == list(m.state_dict())
    assert m.parameters()[0].name == "0.0.weight_ih_l0"
    lone = Linear(3, 1)
    assert [p.name for p in lone.parameters()] == ["weight", "bias"]
    tied = Sequential(lone, Tanh(), lone)                       # one Linear used twice
    assert [p.name for p in tied.parameters()] == list(tied.state_dict()) == ["0.weight", "0.bias"]
    inner = Sequential(Linear(2, 2))
    outer = Sequential(Tanh(), inner)
    inner.add(Linear(2, 3))                                     # grown after it was adopted
    assert [p.name for p in outer.parameters()] == list(outer.state_dict()) == \
        ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias"]
    opt_params = outer.parameters()
    [c.parameters() for c in outer] + [inner[1].parameters()]   # asking inner modules renames
    assert [p.name for p in opt_params] == list(outer.state_dict())   # nothing
    outer.zero_grad_parameters()
    summary(outer, (None, 2), print_fn=None)                    # rnncore's own listings of
    outer.backward(np.ones((1, 2), np.float32),                 # inner modules rename nothing
                   np.ones_like(outer.forward(np.ones((1, 2), np.float32))))
    assert [p.name for _, p in outer.named_parameters()] == list(outer.state_dict())


def test_a_module_used_twice_is_stepped_once():
    lin = Linear(2, 2, dtype=np.float64)
    m = Sequential(lin, Tanh(dtype=np.float64), lin)
    x = np.random.default_rng(8).standard_normal((3, 2))
    assert rnncore.gradcheck(m, x) < TOL
    m.forward(x)
    m.backward(x, np.ones((3, 2)))
    before, g = lin.weight.data.copy(), lin.weight.grad.copy()
    m.update_parameters(0.1)
    np.testing.assert_allclose(lin.weight.data, before - 0.1 * g)
    rnncore.optim.Adam(m.parameters(), lr=0.1).step()            # not refused as a duplicate


# -- Sequencer ---------------------------------------------------------------------------------
def test_sequencer_applies_the_module_at_every_step():
    rnncore.manual_seed(0)
    lin = Linear(3, 2, dtype=np.float64)
    m = Sequencer(Sequential(lin, LogSoftMax(dtype=np.float64)))
    steps = list(np.random.default_rng(0).standard_normal((4, 5, 3)))   # the Lua table
    ys = m.forward(steps)
    assert isinstance(ys, list) and len(ys) == 4
    for x_t, y_t in zip(steps, ys):
        z = lin.forward(x_t)
        np.testing.assert_allclose(y_t, z - np.log(np.exp(z).sum(-1, keepdims=True)), rtol=1e-12)


@given(T=st.integers(1, 3), B=st.integers(1, 3), seed=st.integers(0, 2**16),
       cell=st.sampled_from(["lstm", "gru"]))
@settings(max_examples=6)
def test_sequencer_recurrent_gradients_with_lengths(T, B, seed, cell):
    rnncore.manual_seed(seed)
    rnn = (LSTM if cell == "lstm" else GRU)(2, 2)
    m = Sequencer(Sequential(rnn, Linear(2, 3), LogSoftMax()), dtype=np.float64)
    rng = np.random.default_rng(seed)
    x, lengths = rng.standard_normal((T, B, 2)), ragged(rng, T, B)
    check_grads(m, x, lengths=lengths, seed=seed)
    assert rnncore.gradcheck(m, x, lengths=lengths) < TOL


def test_sequencer_list_and_array_agree():
    rnncore.manual_seed(4)
    make = lambda: Sequencer(Sequential(LSTM(3, 4), Linear(4, 2), LogSoftMax()), dtype=np.float64)
    a = make()
    b = make()
    b.load_state_dict(a.state_dict())
    rng = np.random.default_rng(0)
    x, lengths = rng.standard_normal((5, 3, 3)), np.array([5, 1, 3])
    gy = rng.standard_normal((5, 3, 2))
    ya, yb = a.forward(x, lengths=lengths), b.forward(list(x), lengths=lengths)
    assert isinstance(ya, np.ndarray) and isinstance(yb, list)
    np.testing.assert_array_equal(ya, np.stack(yb))
    ga, gb = a.backward(x, gy), b.backward(list(x), list(gy))
    assert isinstance(gb, list)
    np.testing.assert_array_equal(ga, np.stack(gb))
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


@pytest.mark.parametrize("inner", [lambda: Sequential(LSTM(2, 3), Linear(3, 2)),
                                   lambda: Linear(2, 2),             # (takes no lengths itself)
                                   lambda: LSTM(2, 1, bidirectional=True)])   # (2 outputs)
def test_sequencer_padding_is_zero_and_takes_no_gradient(inner):
    """With lengths: padding outputs are 0, and outputs/grads equal each sequence run alone;
    a recurrent layer is handed the lengths (its reverse direction starts at each sequence's
    last valid step, its h_n is read there)."""
    rnncore.manual_seed(1)
    m = Sequencer(inner(), dtype=np.float64)
    rnn = m.module if isinstance(m.module, LSTM) else None
    rng = np.random.default_rng(1)
    x, lengths = rng.standard_normal((4, 3, 2)), np.array([2, 4, 1])
    gy = rng.standard_normal((4, 3, 2))
    y = m.forward(x, lengths=lengths)
    h_n = None if rnn is None else rnn.h_n.copy()
    m.zero_grad_parameters()
    gx = m.backward(x, gy)
    grads = [p.grad.copy() for p in m.parameters()]
    expect = [np.zeros_like(g) for g in grads]
    for b, n in enumerate(lengths):
        assert not y[n:, b].any() and not gx[n:, b].any()
        m.zero_grad_parameters()
        yb = m.forward(x[:n, b:b + 1])
        np.testing.assert_allclose(y[:n, b:b + 1], yb, rtol=1e-12, atol=1e-14)
        if rnn is not None:
            np.testing.assert_allclose(h_n[:, b:b + 1], rnn.h_n, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gx[:n, b:b + 1], m.backward(x[:n, b:b + 1], gy[:n, b:b + 1]),
                                   rtol=1e-12, atol=1e-14)
        for e, p in zip(expect, m.parameters()):
            e += p.grad
    for g, e in zip(grads, expect):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("inner", [lambda: Linear(2, 3),          # (masked by the Sequencer only)
                                   lambda: LSTM(2, 2, bidirectional=True)])
def test_sequencer_of_one_layer_passes_gradcheck_with_lengths(inner):
    """Central differences where the Sequencer's own handling of lengths is all there is: no
    inner chain masks the padding again, and a reverse direction needs the lengths handed on."""
    rnncore.manual_seed(2)
    m = Sequencer(inner(), dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((4, 3, 2))
    lengths = np.array([2, 4, 1])
    check_grads(m, x, lengths=lengths)
    assert rnncore.gradcheck(m, x, lengths=lengths) < TOL


def test_sequencer_with_embedding_ids():
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(Embedding(6, 3), LSTM(3, 2), Linear(2, 4)), dtype=np.float64)
    ids = np.random.default_rng(0).integers(0, 6, size=(5, 2))      # (T, B)
    lengths = np.array([5, 3])
    y = m.forward(ids, lengths=lengths)
    assert y.shape == (5, 2, 4) and not y[3:, 1].any()
    np.testing.assert_array_equal(np.stack(m.forward(list(ids), lengths=lengths)), y)
    assert m.backward(ids, np.ones_like(y)) is None                # no gradient for ids
    assert rnncore.gradcheck(m, ids, lengths=lengths) < TOL
    assert list(m.state_dict())[:2] == ["0.0.weight", "0.1.weight_ih_l0"]


def test_sequencer_state_dict_round_trip():
    rnncore.manual_seed(0)
    a = Sequencer(Sequential(LSTM(2, 3), Linear(3, 2), LogSoftMax()))
    rnncore.manual_seed(1)
    b = Sequencer(Sequential(LSTM(2, 3), Linear(3, 2), LogSoftMax()))
    x = np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32)
    assert not np.allclose(a.forward(x), b.forward(x))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    assert list(a.state_dict()) == ["0.0.weight_ih_l0", "0.0.weight_hh_l0", "0.0.bias_l0",
                                    "0.1.weight", "0.1.bias"]


# -- LastStep ----------------------------------------------------------------------------------
def test_last_step_values_and_scatter():
    x = np.arange(4 * 3 * 2, dtype=np.float64).reshape(4, 3, 2)
    m = LastStep(dtype=np.float64)
    lengths = np.array([1, 4, 2])
    y = m.forward(x, lengths=lengths)
    np.testing.assert_array_equal(y, np.stack([x[0, 0], x[3, 1], x[1, 2]]))
    gx = m.backward(x, np.ones((3, 2)))
    mask = np.zeros((4, 3), bool)
    mask[[0, 3, 1], [0, 1, 2]] = True
    np.testing.assert_array_equal(gx, np.broadcast_to(mask[..., None], x.shape).astype(float))
    np.testing.assert_array_equal(m.forward(x), x[-1])            # no lengths: step T-1
    assert isinstance(m.forward(list(x)), np.ndarray)
    assert isinstance(m.backward(list(x), np.ones((3, 2))), list)
    assert m.output_shape((4, None, 2)) == (None, 2)


@given(T=st.integers(1, 4), B=st.integers(1, 3), seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_last_step_gradients(T, B, seed):
    rng = np.random.default_rng(seed)
    x, lengths = rng.standard_normal((T, B, 2)), ragged(rng, T, B)
    check_grads(LastStep(dtype=np.float64), x, lengths=lengths, seed=seed)


def test_last_step_of_sequences_equals_return_sequences_false():
    rnncore.manual_seed(5)
    full = LSTM(2, 3, dtype=np.float64)
    last = LSTM(2, 3, return_sequences=False, dtype=np.float64)
    last.load_state_dict(full.state_dict())
    m = Sequential(full, LastStep(dtype=np.float64))
    rng = np.random.default_rng(0)
    x, lengths = rng.standard_normal((5, 4, 2)), np.array([3, 5, 1, 4])
    np.testing.assert_allclose(m.forward(x, lengths=lengths), last.forward(x, lengths=lengths),
                               rtol=1e-12, atol=1e-14)
    gy = rng.standard_normal((4, 3))
    np.testing.assert_allclose(m.backward(x, gy), last.backward(x, gy), rtol=1e-10, atol=1e-13)
    assert rnncore.gradcheck(m, x, lengths=lengths) < TOL


# -- gradcheck itself ---------------------------------------------------------------------------
class _WrongTanh(Tanh):
    """Tanh with a deliberately wrong backward (forgets the square)."""

    def _df(self, gy, y):
        return gy * (1 - y)


class _WrongLinear(Linear):
    """Linear whose bias gradient is off by a factor of 2."""

    def _backward(self, x, gy):
        gx = super()._backward(x, gy)
        self.bias.grad *= 2
        return gx


class _DoubleBiasLinear(Linear):
    """Linear that adds its bias gradient twice: wrong, but it accumulates as it should (so the
    second-backward check cannot see it; only central differences can)."""

    def _backward(self, x, gy):
        gx = super()._backward(x, gy)
        self.bias.grad += np.asarray(gy).reshape(-1, self.out_features).sum(axis=0)
        return gx


def test_gradcheck_catches_wrong_gradients():
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert rnncore.gradcheck(_WrongTanh(), x) > 0.1
    assert rnncore.gradcheck(Sequential(Linear(4, 2), _WrongLinear(2, 2)), x) > 0.1
    assert rnncore.gradcheck(Sequential(Linear(4, 2), Linear(2, 2)), x) < TOL
    # every parameter is compared, the last one of a chain too
    assert rnncore.gradcheck(_DoubleBiasLinear(4, 2), x) > 0.1
    assert rnncore.gradcheck(Sequential(Linear(4, 3), Tanh(), _DoubleBiasLinear(3, 2)), x) > 0.1


def test_gradcheck_is_relative_for_small_gradients_and_takes_its_eps():
    """The error is relative to each array's largest gradient (floor 1e-8): a 1.5x input
    gradient of a layer whose gradients are ~1e-7 is 0.33 wrong, not 1e-7. And ``eps`` is the
    step: central differences on Tanh are off by ~eps^2, visibly so at 0.1."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    rnncore.manual_seed(0)
    m = _ScaledInputLinear(4, 2, dtype=np.float64)
    m.weight.data[...] *= 1e-6
    assert rnncore.gradcheck(m, x, eps=1e-4) > 0.1
    assert rnncore.gradcheck(Tanh(), x, eps=1e-1) > 1e-4 > rnncore.gradcheck(Tanh(), x, eps=1e-6)


class _OverwritingLinear(Linear):
    """Linear whose backward sets its grads instead of adding to them."""

    def _backward(self, x, gy):
        for p in self.parameters():
            p.grad.fill(0)
        return super()._backward(x, gy)


class _ScaledInputLinear(Linear):
    """Linear whose input gradient is 1.5 times too large."""

    def _backward(self, x, gy):
        return 1.5 * super()._backward(x, gy)


def test_gradcheck_catches_a_backward_that_does_not_accumulate():
    """One backward's grads were right, so gradcheck passed (1.7e-10); a second backward (a
    second mini-batch summed into the same grads) then left them as one."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert rnncore.gradcheck(_OverwritingLinear(4, 2), x) == pytest.approx(1.0)
    assert rnncore.gradcheck(Sequential(_OverwritingLinear(4, 2), Tanh()), x) > 0.1
    assert rnncore.gradcheck(Linear(4, 2), x) < TOL


def test_gradcheck_checks_integer_features_given_to_rnncore_layers():
    """An integer array was always taken as ids, its gradient not checked: a Linear with a
    1.5x input gradient passed (1.5e-10) when given integers."""
    x = np.random.default_rng(0).integers(-3, 4, (3, 4))
    assert rnncore.gradcheck(_ScaledInputLinear(4, 2), x.astype(np.float64)) > 0.1
    assert rnncore.gradcheck(_ScaledInputLinear(4, 2), x) > 0.1
    assert rnncore.gradcheck(Sequential(_ScaledInputLinear(4, 3), Tanh()), x) > 0.1
    assert rnncore.gradcheck(Sequential(Linear(4, 2), Tanh()), x) < TOL
    ids = np.random.default_rng(1).integers(0, 5, (3, 2))
    assert rnncore.gradcheck(Sequential(Embedding(5, 4), Linear(4, 2)), ids) < TOL   # ids


class _BadGradLinear(Linear):
    """Linear whose backward leaves a NaN in its bias gradient and an Inf in its weight's."""

    def _backward(self, x, gy):
        gx = super()._backward(x, gy)
        self.bias.grad[0] = np.nan
        self.weight.grad[0, 0] = np.inf
        return gx


class _FlatTanh(Tanh):
    """Tanh whose backward drops the leading axis of length 1 (a shape that broadcasts)."""

    def _backward(self, x, gy):
        return super()._backward(x, gy)[0]


class _MaskBlindDropout(rnncore.Dropout):
    """Dropout whose backward forgets the mask (right in evaluate mode only)."""

    def _df(self, gy, mask):
        return gy.copy()


def test_gradcheck_counts_a_nan_or_inf_gradient_as_infinitely_wrong():
    x = np.random.default_rng(0).standard_normal((3, 4))
    # first as the last array checked (after x, weight): max() once let a NaN there through
    assert rnncore.gradcheck(_BadGradLinear(4, 2), x) == np.inf
    assert rnncore.gradcheck(Sequential(Linear(4, 2), _BadGradLinear(2, 2)), x) == np.inf


def test_gradcheck_refuses_an_input_gradient_of_another_shape():
    x = np.random.default_rng(0).standard_normal((1, 2, 4))
    with pytest.raises(ValueError, match=r"module: _FlatTanh.backward returned a gradient of "
                                         r"shape \(2, 4\) for an input of shape \(1, 2, 4\)"):
        rnncore.gradcheck(_FlatTanh(), x)


def test_gradcheck_in_training_mode_checks_the_dropout_masks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 2))
    rnncore.manual_seed(0)
    lstm = LSTM(2, 3, num_layers=2, dropout=0.5)
    chain = Sequential(Linear(2, 3), rnncore.Dropout(0.5), Linear(3, 2))
    blind = Sequential(Linear(2, 3), _MaskBlindDropout(0.5), Linear(3, 2))
    blind.load_state_dict(chain.state_dict())
    state = rnncore.random.generator().bit_generator.state
    assert rnncore.gradcheck(lstm, x, training=True) < TOL
    assert rnncore.gradcheck(chain, x, training=True) < TOL
    assert rnncore.gradcheck(blind, x) < TOL                   # evaluate mode: no mask to forget
    assert rnncore.gradcheck(blind, x, training=True) > 0.1
    assert rnncore.random.generator().bit_generator.state == state   # the caller's stream
    assert lstm.train and chain.train and blind.train               # the caller's modes
    with pytest.raises(TypeError, match="training: expected True or False, got 1"):
        rnncore.gradcheck(chain, x, training=1)


def test_gradcheck_leaves_the_module_alone():
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 2), rnncore.Dropout(0.5), Linear(2, 1))   # float32, training mode
    m[0].remember()
    x = np.random.default_rng(0).standard_normal((3, 2, 2))
    m.forward(x)                                                  # a carried state
    before = {k: v.copy() for k, v in m.state_dict().items()}
    grads = [p.grad.copy() for p in m.parameters()]
    carry = m[0]._carry
    state = rnncore.random.generator().bit_generator.state
    assert rnncore.gradcheck(m, x) < TOL                          # float64 copy, dropout off
    assert m.dtype == np.float32 and m.train and m[1].train
    assert all(np.array_equal(before[k], v) for k, v in m.state_dict().items())
    assert all(np.array_equal(g, p.grad) for g, p in zip(grads, m.parameters()))
    assert m[0]._carry is carry
    assert rnncore.random.generator().bit_generator.state == state



class _Double(rnncore.Module):
    """y = 2x, with a backward of one's own (below)."""

    def _forward(self, x, lengths):
        return 2.0 * np.asarray(x, np.float64)


class _ZeroingDouble(_Double):
    """Wrong (returns 0, not 2 gy), and clears the gy it was given."""

    def _backward(self, x, gy):
        gy[...] = 0.0
        return gy


class _InPlaceDouble(_Double):
    """Right (2 gy), computed in the gy it was given."""

    def _backward(self, x, gy):
        gy *= 2.0
        return gy


def test_gradcheck_is_not_fooled_by_a_backward_that_writes_into_its_gy():
    """gradcheck gave backward the very dout its differences weighted the output by: a backward
    that cleared its gy made both gradients 0 (err 0.0 for a wrong one), one that doubled it in
    place was reported 0.5 wrong."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert rnncore.gradcheck(_ZeroingDouble(), x) == pytest.approx(1.0)
    assert rnncore.gradcheck(_InPlaceDouble(), x) < TOL


def test_gradcheck_takes_parameters_tied_to_one_array_as_one_weight():
    """b.weight.data = a.weight.data (a tie the optimizers take as one weight): a difference
    moves both uses, and was compared with each grad alone (err 0.8 for a right backward)."""
    rnncore.manual_seed(0)
    a, b = Linear(3, 3), Linear(3, 3)          # (float32: checked on a float64 copy)
    b.weight.data = a.weight.data
    x = np.random.default_rng(0).standard_normal((2, 3))
    assert rnncore.gradcheck(Sequential(a, Tanh(), b), x) < TOL
    wrong = _WrongLinear(3, 3)                                    # its bias grad doubled
    wrong.weight.data = a.weight.data
    assert rnncore.gradcheck(Sequential(a, Tanh(), wrong), x) > 0.1
    frozen = Linear(3, 3)
    frozen.weight.data = a.weight.data
    frozen.weight.requires_grad = False
    with pytest.raises(ValueError, match=r"module: '2.weight' shares memory with the trainable "
                                         r"'0.weight' \(frozen\)"):
        rnncore.gradcheck(Sequential(a, Tanh(), frozen), x)
    square = Linear(3, 3)
    square.weight.data = a.weight.data.T                          # a tie through a view
    with pytest.raises(ValueError, match=r"module: '2.weight' shares memory with the trainable "
                                         r"'0.weight' \(a view\)"):
        rnncore.gradcheck(Sequential(a, Tanh(), square), x)

# -- pad_sequences -----------------------------------------------------------------------------
def test_pad_sequences_features_and_ids():
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 2)).astype(np.float32) for n in (3, 1, 4)]
    x, lengths = pad_sequences(seqs)
    assert x.shape == (4, 3, 2) and x.dtype == np.float32
    assert lengths.dtype == np.int64 and lengths.tolist() == [3, 1, 4]
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(x[:len(s), b], s)
        assert not x[len(s):, b].any()
    ids, lengths = pad_sequences([[1, 2, 3], np.array([4])])
    assert ids.tolist() == [[1, 4], [2, 0], [3, 0]] and ids.dtype.kind == "i"
    assert lengths.tolist() == [3, 1]
    assert pad_sequences(seqs, dtype=np.float64)[0].dtype == np.float64


def test_pad_sequences_maxlen_cuts_and_pads_to_a_fixed_length():
    seqs = [np.arange(1, 6), np.array([7, 8]), np.arange(10, 13)]       # lengths 5, 2, 3
    x, lengths = pad_sequences(seqs, maxlen=3)
    assert x.shape == (3, 3) and lengths.tolist() == [3, 2, 3]
    assert x[:, 0].tolist() == [1, 2, 3] and x[:, 1].tolist() == [7, 8, 0]
    x, lengths = pad_sequences(seqs, maxlen=3, truncating="pre")
    assert x[:, 0].tolist() == [3, 4, 5] and x[:, 2].tolist() == [10, 11, 12]
    x, lengths = pad_sequences(seqs, maxlen=8)                         # longer than all: pads
    assert x.shape == (8, 3) and lengths.tolist() == [5, 2, 3] and not x[5:].any()
    f, lf = pad_sequences([np.ones((4, 2)), np.ones((2, 2))], maxlen=3)
    assert f.shape == (3, 2, 2) and lf.tolist() == [3, 2]
    for bad, err, match in [(0, ValueError, "maxlen: expected an int >= 1"),
                            (2.0, TypeError, "maxlen: expected an int >= 1"),
                            (True, TypeError, "maxlen")]:
        with pytest.raises(err, match=match):
            pad_sequences(seqs, maxlen=bad)
    with pytest.raises(ValueError, match="truncating: expected 'post'"):
        pad_sequences(seqs, maxlen=2, truncating="both")
    for bad in (np.array([1.0, 2.0]), np.array([]), np.array(["post", "pre"])):   # (NumPy's
        with pytest.raises(ValueError, match="truncating: expected 'post'"):      # "truth value
            pad_sequences(seqs, maxlen=2, truncating=bad)                         # of an array")


def test_pad_sequences_feeds_a_model():
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(Embedding(5, 2), GRU(2, 3), Linear(3, 2)))
    ids, lengths = pad_sequences([[1, 2, 3], [4], [0, 0]])
    y = m.forward(ids, lengths=lengths)
    assert y.shape == (3, 3, 2) and y.dtype == np.float32 and not y[1:, 1].any()


# -- summary -----------------------------------------------------------------------------------
def test_summary_keras_counts():
    lines = []
    total = Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False)).summary(
        (5, None, 2), print_fn=lines.append)
    assert total == 17152 + 12416
    text = "\n".join(lines)
    assert "(5, None, 64)" in text and "17152" in text
    assert "(None, 32)" in text and "12416" in text
    assert "Total params: 29568" in text


def test_summary_is_a_function_of_the_package_like_trace():
    import rnncore
    model = Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False))
    lines, method_lines = [], []
    assert rnncore.summary(model, (5, None, 2), print_fn=lines.append) == 17152 + 12416
    model.summary((5, None, 2), print_fn=method_lines.append)
    assert lines == method_lines and "summary" in rnncore.__all__


def test_summary_opens_sequencer_and_counts_frozen():
    lines = []
    emb = Embedding.from_pretrained(np.zeros((10, 4)), dtype=np.float32)
    m = Sequencer(Sequential(emb, GRU(4, 3), Linear(3, 2), LogSoftMax()))
    total = summary(m, (7, None), print_fn=lines.append)
    gru = 3 * 3 * (4 + 3) + 6 * 3
    assert total == 40 + gru + 8
    names = [line.split()[0] for line in lines[2:6]]
    assert names == ["0.0", "0.1", "0.2", "0.3"]
    assert "(7, None, 2)" in lines[4]
    assert f"Trainable params: {gru + 8:,}" in lines and "Non-trainable params: 40" in lines



class _Gated(Sequential):
    """y = g * chain(x), with one learnable scalar g of the container's own."""

    def __init__(self, *modules):
        super().__init__(*modules)
        self.g = self._param("g", np.ones(1, np.float32))

    def _forward(self, x, lengths):
        return super()._forward(x, lengths) * self.g.data


def test_summary_and_trace_count_a_containers_own_parameters():
    """A container of one's own holding a parameter itself: summary and trace opened it and
    counted only its children's (127 of the state_dict's 128 numbers)."""
    m = Sequential(Linear(2, 2), _Gated(LSTM(2, 4), Linear(4, 3)))
    n = sum(v.size for v in m.state_dict().values())
    lines = []
    assert summary(m, (5, None, 2), print_fn=lines.append) == n == 6 + 128
    assert [line.split()[:2] for line in lines[2:4]] == [["0", "(Linear)"], ["1", "(_Gated)"]]
    assert "(5, None, 3)" in lines[3]
    rows = rnncore.trace(m, np.ones((5, 2, 2), np.float32), print_fn=None)
    assert [(r.path, r.kind, r.params) for r in rows] == [("0", "Linear", 6), ("1", "_Gated", 128)]

# -- a backward through a chain changes everything or nothing ----------------------------------
def _unchanged(m, before):
    return all(np.array_equal(a, p.grad) for a, p in zip(before, m.parameters()))


def test_refused_backward_leaves_every_grad_alone():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    rnncore.manual_seed(0)
    s = Sequential(LSTM(3, 4), Linear(4, 2))
    s.forward(x)
    s.backward(x, np.ones((4, 2, 2), np.float32))                # some grads and grad_h0 to keep
    before, h0 = _grads(s), s[0].grad_h0.copy()
    s.forward(x)
    s[0].astype(np.float64)                                      # drops the LSTM's forward only
    with pytest.raises(RuntimeError, match="LSTM.backward: call forward first"):
        s.backward(x, np.ones((4, 2, 2), np.float32))
    assert _unchanged(s, before)

    s[1].weight.data[...] = 1.0
    s.forward(x)
    with pytest.raises(ValueError, match=r"the gradient reaching modules\[0\] \(LSTM\) from the modules after it"):
        s.backward(x, np.full((4, 2, 2), 3e38, np.float32))   # finite, overflows in the Linear
    assert _unchanged(s, before) and np.array_equal(s[0].grad_h0, h0)
    # nested: the outer container commits or drops the inner ones' changes
    outer = Sequencer(Sequential(s))
    outer.forward(x)
    with pytest.raises(ValueError, match=r"^the gradient reaching modules\[0\]\[0\]\[0\] \(LSTM\) "
                                         r"from the modules after it: gy: expected finite"):
        outer.backward(x, np.full((4, 2, 2), 3e38, np.float32))
    assert _unchanged(s, before)
    outer.backward(x, np.ones((4, 2, 2), np.float32))
    assert not _unchanged(s, before)


class _EncDec(rnncore.Module):
    """A module of one's own: reads the decoder's grad_h0 right after its backward."""

    def __init__(self, dtype=np.float64):
        super().__init__(dtype)
        self.enc = self._child(GRU(3, 4, return_sequences=False, dtype=dtype))
        self.dec = self._child(GRU(3, 4, dtype=dtype))

    def _forward(self, x, lengths):
        return self.dec.forward(x, h0=self.enc.forward(x)[None])

    def _backward(self, x, gy):
        gx = self.dec.backward(x, gy)
        return gx + self.enc.backward(x, self.dec.grad_h0[0])


class _Pruned(Linear):
    """A module of one's own: masks its weight grad after the Linear's backward added to it."""

    def _backward(self, x, gy):
        gx = super()._backward(x, gy)
        self.weight.grad[:, 1:] = 0
        return gx


class _Scale(rnncore.Module):
    """A module of one's own that keeps nothing from its forward."""

    def _forward(self, x, lengths):
        return 2 * np.asarray(x)

    def _backward(self, x, gy):
        return 2 * np.asarray(gy)


class _TryOrZero(rnncore.Module):
    """A module of one's own that catches its child's refusal."""

    def __init__(self, inner):
        super().__init__()
        self.inner = self._child(inner)

    def _forward(self, x, lengths):
        return self.inner.forward(x)

    def _backward(self, x, gy):
        try:
            return self.inner.backward(x, gy)
        except ValueError:
            return np.zeros_like(x)


def test_modules_of_ones_own_inside_a_chain():
    """Inside a chain a module sees its children's grads and grad_h0 as soon as their backward
    returns, as outside one; a refused inner chain is put back even where an outer module
    catches the refusal; modules of one's own that keep nothing may repeat."""
    rnncore.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    m = _EncDec()
    assert rnncore.gradcheck(m, x) < TOL
    m.dec.grad_h0 = None
    assert rnncore.gradcheck(Sequential(m, Linear(4, 2, dtype=np.float64)), x) < TOL
    lin = _Pruned(3, 3)
    s = Sequential(lin, Tanh())
    s.forward(x.astype(np.float32))
    s.backward(x, np.ones((4, 2, 3), np.float32))
    assert np.all(lin.weight.grad[:, 1:] == 0) and np.any(lin.weight.grad[:, 0] != 0)
    scale = _Scale(np.float64)
    assert rnncore.gradcheck(Sequential(scale, Linear(3, 3, dtype=np.float64), scale), x) < TOL
    d = Dropout(0.0, np.float64)
    assert rnncore.gradcheck(Sequential(d, Tanh(np.float64), d), x) < TOL
    d2 = Dropout(0.5, np.float64)
    twice = Sequential(d2, Tanh(np.float64), d2).evaluate()
    twice.forward(x)
    twice.backward(x, np.ones_like(x))                   # evaluate(): the identity, allowed
    twice.training().forward(x)
    with pytest.raises(ValueError, match="is the same Dropout"):
        twice.backward(x, np.ones_like(x))               # training: its mask, refused
    inner = Sequential(Linear(3, 3), Linear(3, 3))
    inner[1].weight.data[...] = 3e38                     # its dx overflows: inner[0] refuses
    outer = Sequential(_TryOrZero(inner), Dropout(0.0))
    xs = np.full((2, 3), 1e-3, np.float32)
    outer.backward(xs, np.ones_like(outer.forward(xs)))
    assert not inner[0].weight.grad.any() and not inner[1].weight.grad.any()


class _AddsThenRefuses(Linear):
    """A module of one's own whose backward adds to its grads, then refuses (once told to)."""

    refuse = False

    def _backward(self, x, gy):
        gx = super()._backward(x, gy)
        if self.refuse:
            raise ValueError("gy: refused after adding to the grads")
        return gx


def test_a_first_child_of_ones_own_that_refuses_late_is_put_back():
    """A chain's first child and a Sequencer's child are not backed up where rnncore's own
    modules are below (they refuse before they change anything), but are where a module of
    one's own is: its refusal after adding to its grads then changes nothing either."""
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    for make in (lambda m: Sequential(m, Tanh()), lambda m: Sequencer(m),
                 lambda m: Sequential(Sequential(m, Tanh()), Linear(3, 2))):
        first = _AddsThenRefuses(3, 3)
        model = make(first)
        model.forward(x)
        model.backward(x, np.ones_like(model.forward(x)))
        before = [p.grad.copy() for p in model.parameters()]
        first.refuse = True
        with pytest.raises(ValueError, match="refused after adding"):
            model.backward(x, np.ones_like(model.forward(x)))
        assert all(np.array_equal(p.grad, b) for p, b in zip(model.parameters(), before))
    clean = Sequential(Linear(3, 3), Tanh())
    assert clean_refuses(clean) and clean_refuses(clean[0])
    assert not clean_refuses(Sequential(_Scale(), Tanh()))
    lin = Linear(3, 3)                                   # rnncore's, with a backward of one's own
    plain_backward = lin.backward

    def adds_then_refuses(x, gy):
        plain_backward(x, gy)
        raise ValueError("gy: refused after adding to the grads")
    lin.backward = adds_then_refuses
    model = Sequential(lin, Tanh())
    model.forward(x)
    with pytest.raises(ValueError, match="refused after adding"):
        model.backward(x, np.ones((4, 2, 3), np.float32))
    assert not any(p.grad.any() for p in model.parameters())


def test_backward_errors_name_what_was_wrong():
    """The caller's own x is named as it is; a gradient from the children after a child is
    named as that; the forward's input refilled with NaN since is not the caller's fault."""
    s = Sequential(Embedding(10, 3), LSTM(3, 2))
    ids = np.array([[1, 2], [3, 4]])
    s.forward(ids)
    with pytest.raises(ValueError, match=r"^x: expected the input of the last forward"):
        s.backward(np.array([[1, 2], [3, 99]]), np.ones((2, 2, 2), np.float32))
    alone = Sequential(Embedding(10, 3))                 # (one child: it reads the x given)
    alone.forward(ids)
    with pytest.raises(ValueError, match=r"^x: expected ids in \[0, 9\]"):
        alone.backward(np.array([[1, 2], [3, 99]]), np.ones((2, 2, 3), np.float32))
    s2 = Sequential(Linear(3, 3), Linear(3, 2))
    buf = np.ones((4, 2, 3), np.float32)
    s2.forward(buf)
    buf[...] = np.nan                                    # the caller's buffer, refilled
    assert s2.backward(np.ones((4, 2, 3), np.float32), np.ones((4, 2, 2), np.float32)).shape == (4, 2, 3)


def test_a_chain_names_the_child_that_refuses_the_one_before_it():
    """The caller's x is fine, the architecture is not: the message says which child refused
    which child's output; the caller's own x is named as it is."""
    x = np.zeros((4, 3, 3), np.float32)
    chain = Sequential(LSTM(3, 5), Linear(4, 2))
    for model, at in ((chain, ""), (Sequencer(chain), r"\[0\]")):   # (the Sequencer's module: [0])
        with pytest.raises(ValueError, match=rf"^modules{at}\[1\] \(Linear\), given the output of "
                                             rf"modules{at}\[0\] \(LSTM\): x: expected \(\.\.\., 4\)"):
            model.forward(x)
    with pytest.raises(ValueError, match=r"^x: expected \(T, B, 3\)"):
        Sequential(LSTM(3, 5), Linear(5, 2)).forward(np.zeros((4, 3, 4), np.float32))
    nested = Sequential(Linear(3, 4), Sequential(Tanh(), Linear(5, 2)))
    with pytest.raises(ValueError, match=r"^modules\[1\]\[1\] \(Linear\), given the output of "
                                         r"modules\[1\]\[0\] \(Tanh\): x: expected"):
        nested.forward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"^1\.1 \(Linear\), given the output of 1\.0 \(Tanh\): "
                                         r"input_shape: expected \(\.\.\., 5\)"):
        summary(nested, (None, 3), print_fn=None)
    wrapped = Sequential(Linear(3, 4), Sequencer(Sequential(Tanh(), Linear(5, 2))))   # a
    path = r"^modules\[1\]\[0\]\[1\] \(Linear\), given the output of modules\[1\]\[0\]\[0\]"
    with pytest.raises(ValueError, match=path + r" \(Tanh\): x: expected"):      # Sequencer's
        wrapped.forward(np.ones((2, 4, 3), np.float32))                           # module is [0]
    with pytest.raises(ValueError, match=path + r" \(Tanh\): input_shape: expected"):
        wrapped.output_shape((2, None, 3))

    class Refuses(rnncore.Module):                       # messages about something else,
        def _forward(self, x, lengths):                  # or that only look like a path
            raise ValueError(self.message)
    for message in ("xavier init is not supported here", "modules[2] is unknown"):
        own = Refuses()
        own.message = message
        for model in (Sequential(Linear(3, 3), own), Sequencer(Sequential(own, Tanh()))):
            with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
                model.forward(np.ones((4, 2, 3), np.float32))


class _RefusesItsGradient(rnncore.Module):
    def _forward(self, x, lengths):
        return x

    def _backward(self, x, gy):
        raise ValueError("gy: expected shape (3, 2, 3)")


def test_a_refused_gradient_is_named_by_its_whole_path():
    x = np.ones((3, 2, 3), np.float32)
    m = Sequential(Linear(3, 3), Sequencer(Sequential(Linear(3, 3), _RefusesItsGradient(), Linear(3, 3))),
                   Tanh())
    y = m.forward(x)
    with pytest.raises(ValueError, match=re.escape("the gradient reaching modules[1][0][1] "
                                                   "(_RefusesItsGradient) from the modules after it: gy:")):
        m.backward(x, np.ones_like(y))
    assert not any(p.grad.any() for p in m.parameters())
    m2 = Sequential(Linear(3, 3))
    y2 = m2.forward(x)
    with pytest.raises(ValueError, match=r"^x: expected a list of arrays of one shape"):
        m2.backward([np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 3))], np.ones_like(y2))


def test_add_after_forward_needs_a_new_forward():
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    s = Sequential(Linear(3, 3))
    s.forward(x)
    s.add(Linear(3, 3))
    with pytest.raises(RuntimeError, match="call forward first"):
        s.backward(x, np.ones((4, 2, 3), np.float32))
    s.forward(x)
    assert s.backward(x, np.ones((4, 2, 3), np.float32)).shape == x.shape


def test_a_module_that_keeps_its_forward_may_not_repeat():
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    t, lin = rnncore.Tanh(np.float64), Linear(3, 3, dtype=np.float64)
    s = Sequential(t, lin, t)
    s.forward(x)                                                  # forward alone is fine
    before = _grads(s)
    with pytest.raises(ValueError, match=r"modules\[2\] is the same Tanh object as modules\[0\]"):
        s.backward(x, np.ones((4, 2, 3)))
    assert _unchanged(s, before)
    lstm = LSTM(3, 3, dtype=np.float64)
    with pytest.raises(ValueError, match=r"modules\[1\]\[0\] is the same LSTM object as modules\[0\]"):
        rnncore.gradcheck(Sequential(lstm, Sequential(lstm)), x)
    # a Linear reads the input it is given: shared weights are fine, and gradchecked
    assert rnncore.gradcheck(Sequential(lin, rnncore.Tanh(np.float64), lin), x) < TOL


def test_the_callers_buffers_may_change_between_forward_and_backward():
    """Forward keeps its own copies of x and lengths; backward's first child gets the x given
    to backward (Torch7): refilling the caller's arrays meanwhile changes no gradient."""
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 2))
    lengths = np.array([4, 2])
    rnncore.manual_seed(0)
    ref = Sequential(Linear(3, 3, dtype=np.float64), LSTM(3, 2, dtype=np.float64))
    rnncore.manual_seed(0)
    m = Sequential(Linear(3, 3, dtype=np.float64), LSTM(3, 2, dtype=np.float64))
    lstm = LSTM(3, 2, dtype=np.float64)
    lstm.load_state_dict(m[1].state_dict())
    ref.forward(x, lengths=lengths)
    gx_ref = ref.backward(x, gy)
    xb, lb = x.copy(), lengths.copy()
    m.forward(xb, lengths=lb)
    xb[...], lb[...] = 0.0, [10 ** 8, 2]                          # the caller reuses its buffers
    np.testing.assert_array_equal(m.backward(x, gy), gx_ref)
    for p, q in zip(m.parameters(), ref.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    assert_backward_ignores_a_refilled_input(lstm, rng.standard_normal((4, 2, 3)), gy)  # alone


def test_sequencer_and_embedding_argument_errors():
    with pytest.raises(TypeError, match="module: expected a rnncore Module, got str"):
        Sequencer("x")
    with pytest.raises(ValueError, match="embeddings: expected values within"):
        Embedding.from_pretrained(np.full((2, 2), 1e39))          # beyond float32


def test_array_likes_that_numpy_wraps_are_copied_too():
    """A memoryview or an object with __array_interface__ (NumPy wraps both without a copy)
    refilled between forward and backward changes no gradient either."""
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 5))
    rnncore.manual_seed(0)
    m = LSTM(3, 5, dtype=np.float64)
    m.forward(x)
    m.backward(x, gy)
    ref = [p.grad.copy() for p in m.parameters()]

    class Wrapped:
        def __init__(self, a):
            self.a = a
            self.__array_interface__ = a.__array_interface__

    for make in (memoryview, Wrapped):
        m.zero_grad_parameters()
        buf = x.copy()
        m.forward(make(buf))
        buf[...] = 0.0
        m.backward(x, gy)
        for p, r in zip(m.parameters(), ref):
            np.testing.assert_array_equal(p.grad, r)


def test_a_shared_activation_refuses_another_models_input():
    rng = np.random.default_rng(31)
    xa, xb = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    t = Tanh(np.float64)
    A = Sequential(Linear(3, 3, dtype=np.float64), t)
    B = Sequential(Linear(3, 3, dtype=np.float64), t)
    ya = A.forward(xa)
    B.forward(xb)
    with pytest.raises(RuntimeError, match=r"modules\[1\] \(Tanh\) has run another forward"):
        A.backward(xa, np.ones_like(ya))
    with pytest.raises(ValueError, match="x: expected the input of the last forward"):
        t.backward(xa, np.ones_like(ya))                          # (the module itself says so)
    A.forward(xa)
    gx = A.backward(xa, np.ones_like(ya))
    assert gx.shape == xa.shape


def test_sequencer_time_axis_check_over_ids_and_for_a_module_of_ones_own():
    """Ids (T, B) = (4, 4) through Embedding and a sequence-to-one LSTM give (B, H) = (4, 4):
    refused; a module of one's own whose output_shape cannot take an unknown T (None) works."""
    ids = np.random.default_rng(2).integers(0, 5, (4, 4))
    with pytest.raises(ValueError, match="belongs outside the Sequencer"):
        Sequencer(Sequential(Embedding(5, 4), LSTM(4, 4, return_sequences=False))).forward(ids)
    assert Sequencer(Sequential(Embedding(5, 4), LSTM(4, 4))).forward(ids).shape == (4, 4, 4)

    class Doubler(Tanh):
        def _f(self, x):
            return 2 * x, None

        def _df(self, gy, cache):
            return 2 * gy

        def output_shape(self, input_shape):
            return (input_shape[0] + 0,) + tuple(input_shape[1:])   # (no None: a TypeError)

    x = np.ones((3, 2, 2), np.float32)
    np.testing.assert_array_equal(Sequencer(Doubler()).forward(x), 2 * x)


def test_activation_backward_takes_any_x_whose_forward_keeps_the_same():
    """Checked by computing the forward again for a different x: the forward's own array (or
    list) refilled since is taken; a copy of the old values is taken; new values are refused."""
    t = Tanh(np.float64)
    x = np.random.default_rng(3).standard_normal((3, 2))
    old = x.copy()
    t.forward(x)
    x[...] = 5.0                                            # refilled after the forward
    gy = np.ones((3, 2))
    want = 1 - np.tanh(old) ** 2
    np.testing.assert_allclose(t.backward(x, gy), want)     # its own array: as forwarded
    np.testing.assert_allclose(t.backward(old.copy(), gy), want)
    with pytest.raises(ValueError, match="x: expected the input of the last forward"):
        t.backward(x.copy(), gy)
    r = ReLU(np.float64)
    r.forward(old)
    np.testing.assert_array_equal(r.backward(old * 2, gy), (old > 0) * 1.0)   # same signs


@pytest.mark.parametrize("first", ["linear", "embedding"])
def test_a_chain_whose_first_child_reads_x_differentiates_the_forwards_values(first):
    """Sequential(Linear or Embedding, LSTM, ...): the LSTM differentiates what the forward made
    of x, so the first child, which reads the x it is given, must too. Other values are refused
    with nothing changed; the forward's own array refilled since, or a copy of its old values,
    give the forward's gradients; a chain of one still reads the x it is given (Torch7)."""
    rng = np.random.default_rng(5)
    if first == "linear":
        x, other = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
        head = Linear(2, 4, dtype=np.float64)
    else:
        x, other = rng.integers(0, 6, (4, 3)), rng.integers(0, 6, (4, 3))
        head = Embedding(6, 4, dtype=np.float64)
    m = Sequential(head, LSTM(4, 3, dtype=np.float64))
    gy = rng.standard_normal((4, 3, 3))
    m.forward(x)
    m.backward(x, gy)
    want = [p.grad.copy() for p in m.parameters()]

    m.zero_grad_parameters()
    m.forward(x)
    with pytest.raises(ValueError, match="x: expected the input of the last forward"):
        m.backward(other, gy)
    assert not any(p.grad.any() for p in m.parameters())
    for passed, refill in ((x, False), (x.copy(), False), ("own", True), (list(x), False)):
        m.zero_grad_parameters()
        buf = x.copy()
        m.forward(buf)
        if refill:
            buf[...] = other
        m.backward(buf if isinstance(passed, str) else passed, gy)
        for p, w in zip(m.parameters(), want):
            np.testing.assert_array_equal(p.grad, w)

    alone = Sequential(Linear(2, 4, dtype=np.float64))
    xs = rng.standard_normal((4, 3, 2))
    alone.forward(xs)
    alone.backward(2 * xs, np.ones((4, 3, 4)))                # (Torch7: the x given here)
    np.testing.assert_allclose(alone[0].weight.grad, np.ones((4, 12)) @ (2 * xs).reshape(12, 2))


def test_summary_refuses_the_sequencer_that_forward_refuses():
    with pytest.raises(ValueError, match="belongs outside the Sequencer"):
        Sequencer(LSTM(2, 4, return_sequences=False)).summary((5, None, 2), print_fn=None)
    assert Sequencer(LSTM(2, 4)).summary((5, None, 2), print_fn=None) == 4 * 4 * (2 + 4) + 16


# -- modules and criteria of one's own ----------------------------------------------------------
class _MeanOverTime(rnncore.Module):
    """(T, B, H) -> (B, H), written without an output_shape (Module's default would say (T, B, H))."""

    def _forward(self, x, lengths):
        self._T = x.shape[0]
        return np.asarray(x).mean(axis=0)

    def _backward(self, x, gy):
        return np.repeat(gy[None] / self._T, self._T, axis=0)


def test_summary_shows_unknown_after_a_module_without_output_shape():
    """Module's default output_shape (the input's) had been printed as the shape of a module of
    one's own that drops the time axis, and the rows after it followed from it: (5, None, 4)
    and (5, None, 3) for outputs (B, 4) and (B, 3)."""
    lines = []
    total = Sequential(LSTM(2, 4), _MeanOverTime(), Linear(4, 3)).summary((5, None, 2),
                                                                          print_fn=lines.append)
    assert total == 4 * 4 * (2 + 4) + 16 + 15
    rows = {line.split()[0]: line.split()[2] for line in lines[2:5]}
    assert rows == {"0": "(5,", "1": "?", "2": "?"}
    assert lines[-1].startswith("?: 1 (_MeanOverTime) cannot say its output shape")
    assert Sequential(LSTM(2, 4), Linear(4, 3)).summary((5, None, 2), print_fn=lines.append)
    assert not lines[-1].startswith("?")

    class CannotSay(_MeanOverTime):
        def output_shape(self, input_shape):
            raise NotImplementedError

    lines = []                                      # (a bare NotImplementedError had escaped)
    Sequential(LSTM(2, 4), CannotSay(), Linear(4, 3)).summary((5, None, 2), print_fn=lines.append)
    assert [line.split()[2] for line in lines[2:5]] == ["(5,", "?", "?"]
    # the time axis gone before the module that cannot say: refused as forward refuses it
    for inner in (Sequential(LSTM(2, 4, return_sequences=False), _MeanOverTime()),
                  Sequential(LSTM(2, 4), LastStep(), _MeanOverTime(), Linear(4, 3))):
        with pytest.raises(ValueError, match="belongs outside the Sequencer"):
            Sequencer(inner).summary((5, None, 2), print_fn=None)


@pytest.mark.parametrize("T, B, H", [(3, 3, 3), (3, 2, 4)])
def test_chain_with_lengths_leaves_the_output_of_a_module_without_output_shape_alone(T, B, H):
    """The chain took Module's default output_shape at its word and "zeroed the padding" of a
    (B, H) output as if it were (T, B): silently wrong at T == B == H, a broadcasting error else."""
    rnncore.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((T, B, 2)).astype(np.float32)
    lengths = np.array([T, 1, 2][:B])
    lstm = LSTM(2, H)
    chain = Sequential(lstm, _MeanOverTime())
    y = chain.forward(x, lengths=lengths)
    np.testing.assert_array_equal(y, _MeanOverTime().forward(lstm.forward(x, lengths=lengths)))


def test_calling_a_module_or_criterion_runs_its_own_forward():
    """``m(x)`` was bound to the base class's forward: a subclass's forward was skipped."""
    x = np.ones((2, 1, 3), np.float32)

    class Doubled(Tanh):
        def forward(self, x, lengths=None):
            return 2 * super().forward(x, lengths)

    class Torch7Style(rnncore.Module):
        def forward(self, x, lengths=None):
            return np.asarray(x) * 3

    class Counted(LSTM):
        calls = 0

        def forward(self, x, lengths=None, h0=None, c0=None):
            Counted.calls += 1
            return super().forward(x, lengths, h0, c0)

    class HalfMSE(rnncore.MSECriterion):
        def forward(self, input, target, lengths=None):
            return 0.5 * super().forward(input, target, lengths)

    np.testing.assert_array_equal(Doubled()(x), 2 * np.tanh(x))
    np.testing.assert_array_equal(Torch7Style()(x), 3 * x)
    Counted(3, 2)(x)
    assert Counted.calls == 1
    assert HalfMSE()(x, 0 * x) == 0.5 == HalfMSE().forward(x, 0 * x)


def test_sequencer_criterion_scores_with_the_inner_criterions_own_forward_and_backward():
    """It scored with the parent class's per-row form, skipping a subclass's forward/backward."""
    class HalfMSE(rnncore.MSECriterion):
        def forward(self, input, target, lengths=None):
            return 0.5 * super().forward(input, target, lengths)

        def backward(self, input, target, lengths=None):
            return 0.5 * super().backward(input, target, lengths)

    rng = np.random.default_rng(0)
    y, t = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    inner = HalfMSE()
    crit = rnncore.SequencerCriterion(inner)
    expected = sum(inner.forward(y[s], t[s]) for s in range(3))
    assert crit.forward(y, t) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(crit.backward(y, t),
                               np.stack([inner.backward(y[s], t[s]) for s in range(3)]), rtol=1e-12)


@pytest.mark.parametrize("make", [Tanh, rnncore.Sigmoid, rnncore.SoftMax, LogSoftMax,
                                  lambda: Sequential(Linear(4, 4), Tanh())])
def test_writing_into_an_activations_output_leaves_its_backward_alone(make):
    """Tanh & co returned the array their backward reads: ``y[...] = 0.5`` changed the gradient."""
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    rnncore.manual_seed(0)
    m = make()
    ref = copy.deepcopy(m)
    y = m.forward(x)
    gy = np.linspace(-1, 1, y.size, dtype=np.float32).reshape(y.shape)
    ref.forward(x)
    expected = ref.backward(x, gy)
    y[...] = 0.5
    np.testing.assert_array_equal(m.backward(x, gy), expected)


class _Doubled(rnncore.Module):
    """An elementwise module of one's own, without an output_shape: keeps (T, B, H)."""

    def _forward(self, x, lengths):
        return 2 * np.asarray(x)

    def _backward(self, x, gy):
        return 2 * np.asarray(gy)


@pytest.mark.parametrize("build", [
    lambda: Sequential(LSTM(2, 3), _Doubled(), Linear(3, 3)),
    lambda: Sequential(_Doubled(), LSTM(2, 3), Linear(3, 3)),
    lambda: Sequential(LSTM(2, 3), Sequencer(_Doubled()), Linear(3, 3)),
])
def test_chain_with_lengths_zeroes_padding_around_a_module_of_ones_own_that_keeps_the_shape(build):
    """Refusing to guess a shape (the fix above, first version) stopped the zeroing for every
    chain holding such a module: padding outputs were Linear's bias and took gradient."""
    rnncore.manual_seed(0)
    m = build()
    x = np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32)
    lengths = np.array([3, 1])
    y = m.forward(x, lengths=lengths)
    assert not y[1:, 1].any()
    m.zero_grad_parameters()
    m.backward(x, np.ones_like(y))
    np.testing.assert_array_equal(m[-1].bias.grad, [4, 4, 4])        # the 4 valid steps only


class _Widen(rnncore.Module):
    """(T, B, F) -> (T, B, 2F), without an output_shape (the default's guess is wrong)."""

    def _forward(self, x, lengths):
        return np.concatenate([x, x], axis=-1) + 1

    def _backward(self, x, gy):
        F = np.shape(x)[-1]
        return gy[..., :F] + gy[..., F:]


class _CannotSay(_Doubled):
    def output_shape(self, input_shape):
        raise NotImplementedError


@pytest.mark.parametrize("own", [_Widen, _CannotSay])
def test_chain_judges_a_module_that_cannot_say_its_shape_by_its_output(own):
    """Where the guess was wrong (a wider output) or missing, padding kept the values and
    took gradient: a (T, B, ...) output with T != B keeps the time axis whatever the guess."""
    x = np.ones((3, 2, 4), np.float32)
    m = Sequential(Linear(4, 4), own())
    y = m.forward(x, lengths=np.array([1, 3]))
    assert not y[1:, 0].any() and y[:, 1].all()
    gx = m.backward(x, np.ones_like(y))
    assert not gx[1:, 0].any()


def test_an_empty_chain_with_lengths_is_the_identity_too():
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    lengths = np.array([3, 1])
    for m in (Sequential(), Sequencer(Sequential())):
        y = m.forward(x, lengths=lengths)
        np.testing.assert_array_equal(y[:, 0], x[:, 0])
        assert not y[1:, 1].any()
        g = m.backward(x, np.ones_like(x))
        assert g[:, 0].all() and not g[1:, 1].any()


def test_a_nested_load_error_names_the_key_as_given():
    # the inner container emptied the dict the outer one renamed keys from: '1.bias_hh_l0'
    from rnncore import Tanh
    m = Sequential(Tanh(), Sequential(Tanh(), LSTM(3, 2)))
    state = {"1.1.weight_ih_l0": np.zeros((8, 3)), "1.1.weight_hh_l0": np.zeros((8, 2)),
             "1.1.bias_ih_l0": np.zeros(8), "1.1.bias_hh_l0": np.zeros(7)}
    with pytest.raises(ValueError, match=re.escape("state['1.1.bias_hh_l0']: expected shape (8,)")):
        m.load_state_dict(state)
    state["1.1.bias_hh_l0"] = state["1.1.bias_ih_l0"] = np.zeros(7)  # both: not 'bias_l0'
    with pytest.raises(ValueError, match=re.escape("state['1.1.bias_ih_l0']: expected shape (8,)")):
        m.load_state_dict(state)


def test_load_state_dict_reads_every_source_before_writing():
    # a source that is another key's live weight (a swap) was read after being overwritten
    m = LSTM(2, 3, bidirectional=True)
    p = dict(m.named_parameters())
    fwd, rev = p["weight_hh_l0"].data.copy(), p["weight_hh_l0_reverse"].data.copy()
    state = m.state_dict()
    state["weight_hh_l0"], state["weight_hh_l0_reverse"] = (p["weight_hh_l0_reverse"].data,
                                                           p["weight_hh_l0"].data)
    m.load_state_dict(state)
    np.testing.assert_array_equal(p["weight_hh_l0"].data, rev)
    np.testing.assert_array_equal(p["weight_hh_l0_reverse"].data, fwd)


class _LastOfOwn(rnncore.Module):
    """(T, B, H) -> (B, H), the last step; says nothing of its output shape."""

    def _forward(self, x, lengths):
        return np.asarray(x)[-1].copy()

    def _backward(self, x, gy):
        g = np.zeros(np.shape(x), np.float32)
        g[-1] = gy
        return g


class _HalveOfOwn(rnncore.Module):
    """(T, B, 4) -> (T, B, 2); says nothing of its output shape."""

    def _forward(self, x, lengths):
        return np.asarray(x)[..., :2] * 2 + 1

    def _backward(self, x, gy):
        g = np.zeros(np.shape(x), np.float32)
        g[..., :2] = 2 * np.asarray(gy)
        return g


@pytest.mark.parametrize("T, B, H", [(3, 3, 4), (3, 3, 3), (4, 3, 3)])
def test_sequencer_refuses_a_module_of_ones_own_that_drops_the_time_axis(T, B, H):
    # at T == B == H its (B, H) output looked like (T, B): accepted, then "padding" zeroed
    x = np.arange(T * B * H, dtype=np.float32).reshape(T, B, H) + 1
    with pytest.raises(ValueError, match="module: expected an output with the input's leading"):
        Sequencer(_LastOfOwn()).forward(x, lengths=np.array([1, 3, 3]))
    np.testing.assert_array_equal(Sequential(_LastOfOwn()).forward(x, lengths=np.array([1, 3, 3])),
                                  x[-1])


@pytest.mark.parametrize("T, B", [(3, 2), (3, 3)])
def test_padding_is_zeroed_after_a_module_of_ones_own_that_changes_the_features(T, B):
    rnncore.manual_seed(0)
    net = Sequential(LSTM(1, 4), _HalveOfOwn())
    x = np.ones((T, B, 1), np.float32)
    y = net.forward(x, lengths=np.array([1] + [T] * (B - 1)))
    assert y.shape == (T, B, 2)
    np.testing.assert_array_equal(y[1:, 0], 0)
    assert np.all(y[:, 1:] != 0)
    Sq = Sequencer(Sequential(LSTM(1, 4), _HalveOfOwn()))
    assert Sq.forward(x, lengths=np.array([1] + [T] * (B - 1))).shape == (T, B, 2)


@pytest.mark.parametrize("wrap", [Sequential, Sequencer])
def test_a_float64_leaf_reads_its_gradient_in_float64_through_nested_containers(wrap):
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 2, 2))

    def grad(outer):
        rnncore.manual_seed(0)
        inner = Sequential(Linear(3, 3), Linear(3, 2))
        inner[1].astype(np.float64)                         # the leaf reading gy
        net = outer(inner)
        net.forward(x, lengths=np.array([3, 2]))
        net.backward(x, gy)
        return inner[1].weight.grad.copy()

    np.testing.assert_array_equal(grad(wrap), grad(lambda m: m))


def test_an_empty_sequential_checks_its_input_and_keeps_the_gradients_dtype():
    s = Sequential()
    for bad, exc in ((np.array([[1.0, np.nan]]), ValueError), ("abc", TypeError),
                     (np.zeros((0, 3)), ValueError)):
        with pytest.raises(exc, match="x: expected"):
            s.forward(bad)
    x = np.ones((2, 3))
    np.testing.assert_array_equal(s.forward(x), x)
    g = s.backward(x, np.full((2, 3), 1 + 1e-12))
    assert g.dtype == np.float64 and g[0, 0] != 1.0
    assert s.backward(x, np.ones((2, 3), np.int64)).dtype == np.float32


@pytest.mark.parametrize("shared", ["dropout", "lstm_lengths", "lstm_h0"])
def test_a_backward_after_another_models_forward_of_a_shared_child_is_refused(shared):
    # equal x values passed the "input of the last forward" check, while the other model's
    # forward had drawn another dropout mask or used other lengths / h0: A got B's gradient
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4))
    child = Dropout(0.5, dtype=np.float64) if shared == "dropout" else LSTM(4, 6, dtype=np.float64)
    A, B = Sequential(child), Sequencer(Sequential(child))
    ya = A.forward(x)
    if shared == "lstm_lengths":
        B.forward(x, lengths=np.array([5, 2, 4]))
    elif shared == "lstm_h0":
        child.forward(x, h0=np.ones((1, 3, 6)))                   # (the child itself, directly)
    else:
        B.forward(x)
    with pytest.raises(RuntimeError, match=r"modules\[0\] \((Dropout|LSTM)\) has run another "
                                           r"forward since this container's"):
        A.backward(x, np.ones_like(ya))
    yb = B.forward(x)                                             # B's own pair is fine
    B.backward(x, np.ones_like(yb))
    with pytest.raises(RuntimeError, match="has run another forward"):
        A.backward(x, np.ones_like(ya))
    A.backward(x, np.ones_like(A.forward(x)))                     # a fresh forward: fine


def test_a_refused_forward_in_one_thread_is_undone_while_another_thread_runs_a_chain():
    # the undo point was one for the process: thread B's chain skipped its own while thread
    # A's was open, and a refused forward in B kept its first child's new state
    import threading
    rng = np.random.default_rng(0)
    A = Sequential(LSTM(3, 8), Linear(8, 2))
    xa = rng.standard_normal((6, 4, 3)).astype(np.float32)
    x, bad = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 6))
    gy = rng.standard_normal((4, 3, 2))
    Bm = Sequential(Tanh(dtype=np.float64), Linear(5, 2, dtype=np.float64))
    stop, kept = threading.Event(), []

    def loop_a():
        while not stop.is_set():
            A.forward(xa)

    t = threading.Thread(target=loop_a)
    t.start()
    try:
        for _ in range(300):
            Bm.forward(x)
            with pytest.raises(ValueError, match=r"^modules\[1\] \(Linear\), given the output"):
                Bm.forward(bad)                                   # Linear(5, 2) refuses width 6
            kept.append(Bm.backward(x, gy))                       # Tanh kept x's forward
    finally:
        stop.set()
        t.join()
    assert all(np.array_equal(k, kept[0]) for k in kept)


def test_an_empty_sequential_answers_with_arrays_of_its_own():
    s, x = Sequential(), np.ones((2, 3))
    y = s.forward(x)
    y[...] = 5
    assert np.all(x == 1)
    gy = np.ones((2, 3), np.float32)
    g = s.backward(x, gy)
    g[...] = 7
    assert np.all(gy == 1)
    chain = Sequential(Sequential(dtype=np.float64), Linear(3, 2, dtype=np.float64))
    chain.forward(x)
    chain.backward(x, np.ones((2, 2)))
    np.testing.assert_array_equal(chain[1].weight.grad, np.full((2, 3), 2.0))


class _ScoreOfOwn(rnncore.Module):
    """(T, B, H) -> (T, B): one score per step; says nothing of its output shape."""

    def _forward(self, x, lengths):
        return np.asarray(x).sum(-1)

    def _backward(self, x, gy):
        return np.broadcast_to(np.asarray(gy)[..., None], np.shape(x)).astype(np.float32)


@pytest.mark.parametrize("T, B", [(4, 3), (4, 4)])
def test_a_sequencer_keeps_a_module_of_ones_own_that_scores_each_step(T, B):
    # at T == B its (T, B) output has fewer dimensions than the guess (T, B, H): it was refused
    x = np.ones((T, B, 5), np.float32)
    lengths = np.array([2] + [T] * (B - 1))
    y = Sequencer(Sequential(Linear(5, 5), _ScoreOfOwn())).forward(x, lengths=lengths)
    assert y.shape == (T, B) and np.all(y[2:, 0] == 0)


def test_a_shared_child_inside_a_module_of_ones_own_is_noticed_too():
    class Block(rnncore.Module):
        def __init__(self, inner):
            super().__init__(inner.dtype)
            self.inner = self._child(inner)

        def _forward(self, x, lengths):
            return self.inner.forward(x, lengths=lengths)

        def _backward(self, x, gy):
            return self.inner.backward(x, gy)

    x = np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32)
    lstm = LSTM(2, 3)
    A, B = Sequential(Block(lstm), Linear(3, 1)), Sequential(lstm, Linear(3, 1))
    ya = A.forward(x, lengths=np.array([3, 3]))
    B.forward(x, lengths=np.array([1, 1]))
    with pytest.raises(RuntimeError, match=r"^modules\[0\]\[0\] \(LSTM\) has run another forward"):
        A.backward(x, np.ones_like(ya))


@pytest.mark.parametrize("H, O, head", [(5, 2, "last_state"), (3, 2, "last_state"),
                                        (3, 3, "last_state"), (3, 3, "last_step")])
def test_a_chain_after_the_time_axis_is_dropped_gets_no_lengths(H, O, head):
    # the outer chain handed lengths to an inner one whose input was already (B, F): refused
    # (H != B), a NumPy broadcasting error (H == B), or rows silently zeroed (H == O == B)
    x = np.random.default_rng(0).standard_normal((4, 3, H if head == "last_step" else 2))
    lengths = np.array([1, 2, 3])

    def build():
        rnncore.manual_seed(0)
        first = LastStep() if head == "last_step" else LSTM(2, H, return_sequences=False)
        return first, Linear(H, O), Tanh()

    a, b, c = build()
    flat = Sequential(a, b, c)
    y = flat.forward(x, lengths=lengths)
    g_flat = flat.backward(x, np.ones_like(y))
    a2, b2, c2 = build()
    nested = Sequential(a2, Sequential(b2, c2))
    np.testing.assert_array_equal(nested.forward(x, lengths=lengths), y)
    np.testing.assert_array_equal(nested.backward(x, np.ones_like(y)), g_flat)
    np.testing.assert_array_equal(b2.weight.grad, b.weight.grad)


def test_a_module_that_cannot_say_its_shape_at_t_equal_b_still_passes_lengths_on():
    # judged "cannot tell" (T == B, output_shape raises), the chain had stopped handing lengths
    # to the LSTM after it: the LSTM then ran over the padding
    class Own(rnncore.Module):
        def _forward(self, x, lengths):
            return np.array(x)

        def _backward(self, x, gy):
            return np.array(gy)

        def output_shape(self, input_shape):
            raise NotImplementedError

    x = np.random.default_rng(0).standard_normal((4, 4, 3)).astype(np.float32)
    lengths = np.array([4, 2, 3, 1])
    for first in (Own(), Sequencer(Own())):
        lstm = LSTM(3, 5, return_sequences=False)
        y = Sequential(first, lstm).forward(x, lengths=lengths)
        np.testing.assert_array_equal(y, lstm.forward(x, lengths=lengths))


def test_a_flipped_return_sequences_is_seen_by_the_next_forward():
    # the chain's answer was cached per structure: after lstm.return_sequences = False the
    # (B, O) output at T == B == O was still zeroed as (T, B) padding
    x = np.random.default_rng(0).standard_normal((4, 4, 2)).astype(np.float32)
    lengths = np.array([4, 1, 2, 3])
    lstm, lin = LSTM(2, 3), Linear(3, 4)
    chain = Sequential(lstm, lin)
    chain.forward(x, lengths=lengths)
    lstm.return_sequences = False
    np.testing.assert_array_equal(chain.forward(x, lengths=lengths),
                                  lin.forward(lstm.forward(x, lengths=lengths)))


def test_a_dropout_switched_on_by_itself_is_noticed_when_shared():
    # the list of modules that keep their forward was cached per structure and the container's
    # own mode: a Dropout switched back on by itself stayed unlisted
    lin, drop = Linear(3, 6), Dropout(0.5)
    A, B = Sequential(lin, drop), Sequential(lin, drop)          # a second head sharing both
    x = np.ones((4, 2, 3), np.float32)
    drop.evaluate()
    A.forward(x)                                                 # listed without the Dropout
    drop.training()
    ya = A.forward(x)
    B.forward(x)                                                 # another mask
    with pytest.raises(RuntimeError, match=r"modules\[1\] \(Dropout\) has run another forward"):
        A.backward(x, np.ones_like(ya))


@pytest.mark.parametrize("inner", [lambda: LSTM(2, 3), lambda: Sequential(GRU(2, 3), Linear(3, 2))])
def test_sequencer_given_a_list_of_steps_takes_them_refilled_before_backward(inner):
    """A Torch7 table (a list of (B, F) step arrays) whose arrays the caller refills with the
    next batch before backward, as a recurrent layer allows: the Sequencer had stacked the
    refilled values again and its layer refused them. Now the forward's own stacked input goes
    down, and the gradients are those of the forward's input."""
    x = np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32)
    grads = []
    for refill in (False, True):
        rnncore.manual_seed(0)
        m = Sequencer(inner())
        steps = [s.copy() for s in x]
        y = m.forward(steps)
        gy = [np.ones_like(s) for s in y]
        if refill:
            for s in steps:
                s[...] = 7.0
        gx = m.backward(steps, gy)
        grads.append([np.stack(gx)] + [p.grad.copy() for p in m.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="x: expected the input of the last forward"):
        m.backward([s.copy() for s in steps], gy)       # another list, other values: refused


@pytest.mark.parametrize("where", ["load", "gradcheck"])
def test_loading_or_checking_in_one_thread_leaves_another_threads_draws_alone(where, tmp_path,
                                                                               monkeypatch):
    """A model being loaded (its modules built with a throwaway generator) or gradient-checked
    (its dropout masks drawn afresh each evaluation) in one thread: another thread's draws
    meanwhile came from that throwaway generator (the shared stream had been swapped)."""
    import importlib
    import threading
    io = importlib.import_module("rnncore.io")
    path = str(tmp_path / "m.npz")
    rnncore.save(Sequential(LSTM(2, 3), Linear(3, 2)), path)
    inside, go_on = threading.Event(), threading.Event()

    def pause(original):
        def paused(*args, **kwargs):
            inside.set()
            assert go_on.wait(30)
            return original(*args, **kwargs)
        return paused

    if where == "load":
        monkeypatch.setattr(io, "_own_dtypes", pause(io._own_dtypes))
        work = lambda: rnncore.load(path)                                       # noqa: E731
    else:
        monkeypatch.setattr(Dropout, "forward", pause(Dropout.forward))    # (in an evaluation)
        x = np.random.default_rng(0).standard_normal((3, 2, 2))
        m = Sequential(Linear(2, 2), Dropout(0.5))
        work = lambda: rnncore.gradcheck(m, x, training=True)                  # noqa: E731
    rnncore.manual_seed(7)
    want = rnncore.random.generator().random(8)
    rnncore.manual_seed(7)
    done = []
    t = threading.Thread(target=lambda: done.append(work()))
    t.start()
    try:
        assert inside.wait(30)
        got = rnncore.random.generator().random(5)                   # while the other is inside
    finally:
        go_on.set()
        t.join()
    assert len(done) == 1                                            # (the work itself worked)
    np.testing.assert_array_equal(got, want[:5])
    np.testing.assert_array_equal(rnncore.random.generator().random(3), want[5:])   # unmoved


# -- every exported module passes the float64 gradient check -----------------------------------
EVERY_MODULE = {                           # (float32: gradcheck checks a float64 copy)
    "Linear": lambda: Linear(3, 2),
    "LSTM": lambda: LSTM(3, 2, num_layers=2, bidirectional=True),
    "GRU": lambda: GRU(3, 2, num_layers=2, bidirectional=True),
    "RNN": lambda: rnncore.RNN(3, 2, num_layers=2, bidirectional=True),
    "Embedding": lambda: Embedding(6, 3),
    "Dropout": lambda: Dropout(0.5),
    "LastStep": lambda: LastStep(),
    "Tanh": lambda: Tanh(),
    "Sigmoid": lambda: rnncore.Sigmoid(),
    "ReLU": lambda: ReLU(),
    "LeakyReLU": lambda: LeakyReLU(0.1),
    "SoftMax": lambda: rnncore.SoftMax(),
    "LogSoftMax": lambda: LogSoftMax(),
    "Sequential": lambda: Sequential(LSTM(3, 4), Tanh(), Linear(4, 2), LogSoftMax()),
    "Sequencer": lambda: Sequencer(Sequential(Linear(3, 4), rnncore.Sigmoid(), Linear(4, 2))),
}


def test_every_exported_module_has_a_gradient_check_below():
    import inspect
    exported = {n for n in rnncore.__all__ if inspect.isclass(getattr(rnncore, n))
                and issubclass(getattr(rnncore, n), rnncore.Module) and n != "Module"}
    assert exported == set(EVERY_MODULE)


@pytest.mark.parametrize("name", sorted(EVERY_MODULE))
@pytest.mark.parametrize("ragged", [False, True])
def test_every_exported_module_passes_gradcheck(name, ragged):
    rnncore.manual_seed(1)
    m = EVERY_MODULE[name]()
    assert type(m).__name__ == name
    rng = np.random.default_rng(2)
    if name == "Embedding":
        x = rng.integers(0, 6, (4, 3))                             # ids: the table is checked
    else:
        x = rng.standard_normal((4, 3, 3)) + 0.1                   # (ReLU's kink far from x)
    lengths = np.array([4, 2, 3]) if ragged else None
    assert rnncore.gradcheck(m, x, lengths=lengths, training=name == "Dropout") < TOL
