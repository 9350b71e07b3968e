"""RNN, LSTM and GRU layers: gradients, ragged batches, bidirectional, stacking, remember/forget,
state dicts, shapes and input validation. (PyTorch parity: test_recurrent_torch.py.)"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnncore
from rnncore import GRU, LSTM, RNN, Linear, Sequential
from _numeric import numeric_grad

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
N_STATES = {"lstm": 2, "gru": 1, "rnn": 1}
STATE_KW = ("h0", "c0")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def ragged_lengths(rng, T, B):
    """(B,) lengths in [1, T], in random order: at least one full-length sequence and, where
    B and T are at least 2, at least one shorter (so that padding is really there)."""
    lengths = rng.integers(1, T + 1, size=B)
    full = rng.integers(B)
    lengths[full] = T
    if B > 1 and T > 1:
        lengths[(full + 1 + rng.integers(B - 1)) % B] = rng.integers(1, T)
    return lengths


def rel_err(analytic, numeric):
    """Worst entry's error, relative to the array's largest gradient (floor 1e-6)."""
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), 1e-6)
    return np.abs(analytic - numeric).max() / scale


def check_gradients(m, x, lengths=None, states0=(), reseed=None, tol=1e-6):
    """Compare backward's dx, parameter grads and initial-state grads with central differences.

    loss = sum(forward(x) * dout) with a random dout; ``reseed`` re-seeds rnncore before each
    forward so that a dropout mask is the same in every evaluation. ``states0``: (h0, c0) in
    that order, or a dict of the ones given ({"c0": ...}).
    """
    rng = np.random.default_rng(0)
    kwargs = dict(states0) if isinstance(states0, dict) else dict(zip(STATE_KW, states0))

    def forward():
        if reseed is not None:
            rnncore.manual_seed(reseed)
        return m.forward(x, lengths=lengths, **kwargs)

    dout = rng.standard_normal(forward().shape)

    def loss():
        return float(np.sum(forward() * dout))

    m.zero_grad_parameters()
    forward()
    dx = m.backward(x, dout)
    errors = {"x": rel_err(dx, numeric_grad(loss, x))}
    for name, p in m.named_parameters():
        errors[name] = rel_err(p.grad.copy(), numeric_grad(loss, p.data))
    for kw, s in kwargs.items():
        forward()
        m.backward(x, dout)
        errors[kw] = rel_err(getattr(m, f"grad_{kw}").copy(), numeric_grad(loss, s))
    worst = max(errors, key=errors.get)
    assert errors[worst] < tol, f"{worst}: relative error {errors[worst]:.2e} ({errors})"
    return errors


def make(cell, I, H, **kw):
    return CELLS[cell](I, H, dtype=np.float64, **kw)


# ---------------------------------------------------------------------------------------------
# gradients (float64 central differences)
# ---------------------------------------------------------------------------------------------

CONFIGS = {
    "plain": dict(),
    "stacked": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "ragged": dict(ragged=True),
    "last": dict(return_sequences=False),
    "states": dict(states=True),
    "all": dict(num_layers=2, bidirectional=True, ragged=True, return_sequences=False, states=True),
    "all_sequences": dict(num_layers=2, bidirectional=True, ragged=True, states=True),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradcheck_configurations(cell, config):
    kw = dict(CONFIGS[config])
    ragged, states = kw.pop("ragged", False), kw.pop("states", False)
    rng = np.random.default_rng(11)
    T, B, I, H = 4, 3, 2, 3
    rnncore.manual_seed(1)
    m = make(cell, I, H, **kw)
    D = 2 if m.bidirectional else 1
    x = rng.standard_normal((T, B, I))
    lengths = ragged_lengths(rng, T, B) if ragged else None
    assert not ragged or lengths.min() < T                   # padding really there
    states0 = [rng.standard_normal((m.num_layers * D, B, H)) for _ in range(N_STATES[cell])] if states else []
    check_gradients(m, x, lengths, states0)


@given(cell=st.sampled_from(sorted(CELLS)), T=st.integers(1, 4), B=st.integers(1, 3),
       I=st.integers(1, 3), H=st.integers(1, 3), num_layers=st.integers(1, 2),
       bidirectional=st.booleans(), return_sequences=st.booleans(), ragged=st.booleans(),
       states=st.booleans(), seed=st.integers(0, 2**16))
def test_gradcheck_hypothesis(cell, T, B, I, H, num_layers, bidirectional, return_sequences, ragged,
                              states, seed):
    rng = np.random.default_rng(seed)
    rnncore.manual_seed(seed)
    m = make(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
             return_sequences=return_sequences)
    D = 2 if bidirectional else 1
    x = rng.standard_normal((T, B, I))
    lengths = ragged_lengths(rng, T, B) if ragged else None
    states0 = [rng.standard_normal((num_layers * D, B, H)) for _ in range(N_STATES[cell])] if states else []
    check_gradients(m, x, lengths, states0)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_rnncore_gradcheck_stacked_bidirectional_ragged(cell, return_sequences):
    """rnncore.gradcheck on a float32 layer (checked on a float64 copy, in evaluate mode: its
    dropout is off there; training-mode dropout: the test below)."""
    rng = np.random.default_rng(21)
    m = CELLS[cell](2, 3, num_layers=2, bidirectional=True, return_sequences=return_sequences,
                    dropout=0.3)
    x = rng.standard_normal((4, 3, 2))
    assert rnncore.gradcheck(m, x, lengths=np.array([2, 4, 1])) < 1e-6


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradcheck_with_dropout_reuses_the_mask(cell):
    """Dropout between layers in training mode: backward must use forward's mask."""
    rng = np.random.default_rng(2)
    rnncore.manual_seed(3)
    m = make(cell, 2, 3, num_layers=3, bidirectional=True, dropout=0.5).training()
    x = rng.standard_normal((3, 2, 2))
    rnncore.manual_seed(99)
    y_drop = m(x)
    assert not np.allclose(y_drop, m.evaluate()(x))        # the mask does something
    m.training()
    check_gradients(m, x, ragged_lengths(rng, 3, 2), reseed=99)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradcheck_where_a_layer_runs_two_calls_at_once(cell, monkeypatch):
    """Central differences through the paths that run two kernel calls at once (forced here:
    the real rule takes them only at large shapes): a bidirectional layer's two directions
    paired, everything else on; a one-directional layer's batch in halves, with initial
    states, the last step only and dropout in training. Each path is asserted taken."""
    monkeypatch.setattr("rnncore.recurrent._pair_pays", lambda work: True)
    rng = np.random.default_rng(1)
    T, B, I, H = 4, 3, 2, 3
    m = make(cell, I, H, num_layers=2, bidirectional=True, return_sequences=False)
    states = [rng.standard_normal((4, B, H)) for _ in range(N_STATES[cell])]
    check_gradients(m, rng.standard_normal((T, B, I)), np.array([4, 1, 3]), states)
    assert m._cache["paired"]
    m = make(cell, I, H, num_layers=2, return_sequences=False, dropout=0.4).training()
    m._halves_from = 0                                  # (an instance's own bound)
    states = [rng.standard_normal((2, 5, H)) for _ in range(N_STATES[cell])]
    check_gradients(m, rng.standard_normal((T, 5, I)), np.array([4, 1, 3, 2, 4]), states,
                    reseed=77)
    assert m._cache["halves"]


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradcheck_from_a_remembered_state(cell):
    """remember(): the carried state is a constant of the next call; its gradient check holds
    (rnncore.gradcheck evaluates every perturbation from the same carried state)."""
    rng = np.random.default_rng(2)
    m = make(cell, 2, 3, num_layers=2, bidirectional=True).remember()
    m.forward(rng.standard_normal((3, 3, 2)), lengths=np.array([3, 2, 1]))
    assert np.abs(m._carry[0]).max() > 0
    assert rnncore.gradcheck(m, rng.standard_normal((4, 3, 2)), lengths=np.array([2, 4, 3])) < 1e-6


@pytest.mark.parametrize("given", ["h0", "c0"])
def test_gradcheck_lstm_given_one_initial_state(given):
    rng = np.random.default_rng(5)
    m = make("lstm", 2, 3, num_layers=2, bidirectional=True)
    x, s = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 3))
    assert given in check_gradients(m, x, np.array([1, 4, 2]), {given: s})


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_float32_layer_on_the_tiled_kernel_agrees_with_float64(cell, bidirectional, monkeypatch):
    """The tiled kernels (float32; ``path="auto"`` takes them at mid-sized shapes, by CPU) seen
    through the module: forced here at a small shape, with ragged lengths, initial states and
    the last step only, against the same layer in float64 (never tiled)."""
    # (imported before the patch: a tiled module imported under it kept the stand-in as its
    # own ``uses_tiled`` afterwards, and a later test then saw every shape tiled)
    import kernels.gru_tiled, kernels.lstm_tiled, kernels.rnn_tiled  # noqa: E401, F401
    monkeypatch.setattr("kernels._auto.uses_tiled",
                        lambda gates, dtype, *shape: np.dtype(dtype) == np.float32)
    rng = np.random.default_rng(3)
    T, B, I, H = 5, 4, 8, 64
    D = 2 if bidirectional else 1
    rnncore.manual_seed(0)
    m32 = CELLS[cell](I, H, num_layers=2, bidirectional=bidirectional, return_sequences=False)
    m64 = CELLS[cell](I, H, num_layers=2, bidirectional=bidirectional, return_sequences=False,
                      dtype=np.float64)
    m64.load_state_dict(m32.state_dict())
    x, lengths = rng.standard_normal((T, B, I)), np.array([5, 2, 4, 1])
    states = {k: 0.5 * rng.standard_normal((2 * D, B, H)) for k in STATE_KW[:N_STATES[cell]]}
    dy = rng.standard_normal((B, D * H))
    y32, y64 = m32.forward(x, lengths=lengths, **states), m64.forward(x, lengths=lengths, **states)
    assert all(isinstance(c[0], str) and c[0] == "tiled" for c in m32._cache["caches"])
    assert not any(isinstance(c[0], str) for c in m64._cache["caches"])   # (tiled caches only)
    np.testing.assert_allclose(y32, y64, atol=2e-5)
    np.testing.assert_allclose(m32.backward(x, dy), m64.backward(x, dy), atol=2e-5)
    for p32, p64 in zip(m32.parameters(), m64.parameters()):
        np.testing.assert_allclose(p32.grad, p64.grad, atol=1e-4 * max(1.0, np.abs(p64.grad).max()))
    np.testing.assert_allclose(m32.grad_h0, m64.grad_h0, atol=2e-5)


def test_gradcheck_in_evaluate_mode_ignores_dropout():
    rng = np.random.default_rng(5)
    m = make("lstm", 2, 3, num_layers=2, dropout=0.5).evaluate()
    x = rng.standard_normal((3, 2, 2))
    np.testing.assert_array_equal(m(x), m(x))               # deterministic: no mask
    check_gradients(m, x)


# ---------------------------------------------------------------------------------------------
# ragged batches, bidirectional, final states
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", sorted(CELLS))
def test_padded_batch_equals_each_sequence_alone(cell):
    """Bidirectional, stacked, return_sequences=False over a padded batch (garbage in the padding)
    gives, for every sequence, what running that sequence unpadded alone gives."""
    rng = np.random.default_rng(8)
    T, B, I, H = 7, 4, 3, 4
    lengths = np.array([3, 7, 1, 5])
    x = rng.standard_normal((T, B, I))                    # padding holds random values on purpose
    m = make(cell, I, H, num_layers=2, bidirectional=True, return_sequences=False)
    seq = make(cell, I, H, num_layers=2, bidirectional=True).load_state_dict(m.state_dict())
    last = m(x, lengths=lengths)
    assert last.shape == (B, 2 * H)
    full = seq(x, lengths=lengths)
    for b, n in enumerate(lengths):
        alone = m(x[:n, b:b + 1])
        np.testing.assert_allclose(last[b], alone[0], rtol=1e-12, atol=1e-14)
        alone_seq = seq(x[:n, b:b + 1])
        np.testing.assert_allclose(full[:n, b], alone_seq[:, 0], rtol=1e-12, atol=1e-14)
        assert np.all(full[n:, b] == 0)                    # padding outputs are zero


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_h_n_layout_is_pytorchs(cell):
    """h_n[layer*D + d]: forward direction at each last valid step, backward direction at step 0."""
    rng = np.random.default_rng(9)
    T, B, I, H = 5, 3, 2, 3
    lengths = np.array([2, 5, 4])
    m = make(cell, I, H, num_layers=2, bidirectional=True)
    y = m(rng.standard_normal((T, B, I)), lengths=lengths)
    assert m.h_n.shape == (4, B, H)
    np.testing.assert_array_equal(m.h_n[2], y[lengths - 1, np.arange(B), :H])
    np.testing.assert_array_equal(m.h_n[3], y[0, :, H:])
    if cell == "lstm":
        assert m.c_n.shape == (4, B, H)
    else:
        assert not hasattr(m, "c_n")


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_list_input_gives_the_same_as_an_array(cell):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 2, 3))
    m = make(cell, 3, 2, bidirectional=True)
    y = m(x)
    gy = rng.standard_normal(y.shape)
    m.zero_grad_parameters()
    gx = m.backward(x, gy)
    grads = [p.grad.copy() for p in m.parameters()]
    y_list = m(list(x))
    assert isinstance(y_list, list) and len(y_list) == 4
    np.testing.assert_array_equal(np.stack(y_list), y)
    m.zero_grad_parameters()
    gx_list = m.backward(list(x), list(gy))
    assert isinstance(gx_list, list) and len(gx_list) == 4
    np.testing.assert_array_equal(np.stack(gx_list), gx)
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)
    last = make(cell, 3, 2, bidirectional=True, return_sequences=False).load_state_dict(m.state_dict())
    h = last(list(x))                                       # one (B, D*H) array either way
    np.testing.assert_array_equal(h, last(x))
    gx_last = last.backward(list(x), np.ones_like(h))
    assert isinstance(gx_last, list)
    np.testing.assert_array_equal(np.stack(gx_last), last.backward(x, np.ones_like(h)))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gradients_accumulate_until_zeroed(cell):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 2, 2))
    m = make(cell, 2, 3, num_layers=2)
    gy = rng.standard_normal(m(x).shape)
    m.zero_grad_parameters()
    m.backward(x, gy)
    once = [p.grad.copy() for p in m.parameters()]
    m.backward(x, gy)
    for p, g in zip(m.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-14)
    m.zero_grad_parameters()
    assert all(not p.grad.any() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# remember / forget (truncated BPTT)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", sorted(CELLS))
def test_remember_runs_chunks_like_the_whole_sequence(cell):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((10, 3, 2))
    m = make(cell, 2, 4, num_layers=2)
    whole = m(x)
    h_whole = m.h_n.copy()
    m.remember()
    chunks = [m(x[a:b]) for a, b in [(0, 3), (3, 7), (7, 8), (8, 10)]]
    np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.h_n, h_whole, rtol=1e-12, atol=1e-14)
    m.forget()                                             # back to zeros, still remembering
    np.testing.assert_allclose(m(x[:3]), whole[:3], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m(x[3:7]), whole[3:7], rtol=1e-12, atol=1e-14)
    m.remember(False)                                      # off: every call from zeros
    np.testing.assert_array_equal(m(x[:3]), m(x[:3]))
    np.testing.assert_allclose(m(x[3:7]), make(cell, 2, 4, num_layers=2)
                               .load_state_dict(m.state_dict())(x[3:7]), rtol=1e-14)
    m.remember()                                           # on again: remember(False) forgot
    m(x[3:7])
    m.remember(False)
    m.remember()
    np.testing.assert_allclose(m(x[:3]), whole[:3], rtol=1e-12, atol=1e-14)
    m.remember()                                           # again while on: changes nothing
    np.testing.assert_allclose(m(x[3:7]), whole[3:7], rtol=1e-12, atol=1e-14)
    # a one-step Torch7 table: a list of one (B, I) array, answered as a list of one
    m.forget()
    out = m([x[0]])
    assert isinstance(out, list) and len(out) == 1
    np.testing.assert_allclose(out[0], whole[0], rtol=1e-12, atol=1e-14)


def test_writing_into_h_n_leaves_the_remembered_state_alone():
    """remember() carries the final state itself: h_n and c_n are the caller's to write into
    (a copy is carried), so the next call starts from what the last one ended with."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((5, 3, 2))
    m = make("lstm", 2, 4)
    whole = m(x)
    m.remember()
    m(x[:2])
    m.h_n[...] = 7.0
    m.c_n[...] = -7.0
    np.testing.assert_allclose(m(x[2:]), whole[2:], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_no_gradient_crosses_the_remembered_boundary(cell):
    """After remember(), a call's backward is that of a fresh call given the carried state as h0."""
    rng = np.random.default_rng(14)
    x1, x2 = rng.standard_normal((3, 2, 2)), rng.standard_normal((4, 2, 2))
    m = make(cell, 2, 3, num_layers=2).remember()
    m(x1)
    carried = [m.h_n.copy()] + ([m.c_n.copy()] if cell == "lstm" else [])
    y2 = m(x2)
    gy = rng.standard_normal(y2.shape)
    m.zero_grad_parameters()
    gx = m.backward(x2, gy)

    fresh = make(cell, 2, 3, num_layers=2).load_state_dict(m.state_dict())
    np.testing.assert_array_equal(fresh(x2, **dict(zip(STATE_KW, carried))), y2)
    gx_fresh = fresh.backward(x2, gy)
    np.testing.assert_array_equal(gx, gx_fresh)
    for p, q in zip(m.parameters(), fresh.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    np.testing.assert_array_equal(m.grad_h0, fresh.grad_h0)   # reported, but goes nowhere


def test_explicit_h0_takes_precedence_over_the_remembered_state():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((3, 2, 2))
    h0 = rng.standard_normal((1, 2, 3))
    m = make("gru", 2, 3).remember()
    m(x)
    with_h0 = m(x, h0=h0)
    fresh = make("gru", 2, 3).load_state_dict(m.state_dict())
    np.testing.assert_array_equal(with_h0, fresh(x, h0=h0))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_bidirectional_layer_remembers_both_directions_final_states(cell):
    """The next chunk starts each direction of each layer from what the last one ended with
    (h_n, c_n: (L*D, B, H)): the same as a fresh layer given them as h0, c0."""
    rng = np.random.default_rng(17)
    m = make(cell, 2, 3, num_layers=2, bidirectional=True).remember()
    m(rng.standard_normal((4, 2, 2)))
    states = dict(h0=m.h_n.copy(), **(dict(c0=m.c_n.copy()) if cell == "lstm" else {}))
    assert all(np.abs(s).min() > 0 for s in states.values())   # every direction carries some
    nxt = rng.standard_normal((3, 2, 2))
    fresh = make(cell, 2, 3, num_layers=2, bidirectional=True).load_state_dict(m.state_dict())
    np.testing.assert_array_equal(m(nxt), fresh(nxt, **states))


@pytest.mark.parametrize("given", ["h0", "c0"])
def test_an_explicit_h0_or_c0_replaces_only_its_own_remembered_state(given):
    """An LSTM that remembers, given h0 only, keeps its carried c (and the other way round)."""
    rng = np.random.default_rng(18)
    m = make("lstm", 2, 3).remember()
    m(rng.standard_normal((4, 2, 2)))
    carried = dict(h0=m.h_n.copy(), c0=m.c_n.copy())
    new = rng.standard_normal((1, 2, 3))
    nxt = rng.standard_normal((3, 2, 2))
    fresh = make("lstm", 2, 3).load_state_dict(m.state_dict())
    expected = fresh(nxt, **dict(carried, **{given: new}))
    np.testing.assert_array_equal(m(nxt, **{given: new}), expected)


def test_remembered_state_refuses_a_new_batch_size_until_forget():
    rng = np.random.default_rng(16)
    m = make("lstm", 2, 3).remember()
    m(rng.standard_normal((3, 4, 2)))
    h_n = m.h_n.copy()
    nxt = rng.standard_normal((2, 4, 2))
    with pytest.raises(ValueError, match=r"x: .*batch size 4"):
        m(rng.standard_normal((3, 5, 2)))
    np.testing.assert_array_equal(m.h_n, h_n)                # nothing changed
    expected = make("lstm", 2, 3).load_state_dict(m.state_dict())(nxt, h0=m.h_n, c0=m.c_n)
    np.testing.assert_array_equal(m(nxt), expected)          # the carried state survived
    m.forget()
    assert m(rng.standard_normal((3, 5, 2))).shape == (3, 5, 3)


# ---------------------------------------------------------------------------------------------
# parameters, state dicts, shapes, dtypes, config
# ---------------------------------------------------------------------------------------------

def test_keras_parameter_counts():
    first, second = LSTM(2, 64), LSTM(64, 32, return_sequences=False)
    assert sum(p.data.size for p in first.parameters()) == 17152
    assert sum(p.data.size for p in second.parameters()) == 12416


@given(cell=st.sampled_from(sorted(CELLS)), I=st.integers(1, 9), H=st.integers(1, 9),
       L=st.integers(1, 3), bidirectional=st.booleans())
def test_parameter_count_formula(cell, I, H, L, bidirectional):
    D = 2 if bidirectional else 1

    def per_direction(fan_in):
        return {"lstm": 4 * H * (fan_in + H) + 4 * H,
                "gru": 3 * H * (fan_in + H) + 6 * H,
                "rnn": H * (fan_in + H) + H}[cell]

    expected = D * (per_direction(I) + (L - 1) * per_direction(D * H))
    m = CELLS[cell](I, H, num_layers=L, bidirectional=bidirectional)
    assert sum(p.data.size for p in m.parameters()) == expected


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_state_dict_keys_and_shapes(cell):
    m = CELLS[cell](3, 5, num_layers=2, bidirectional=True)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    biases = ["bias_ih", "bias_hh"] if cell == "gru" else ["bias"]
    expected = {}
    for k, fan_in in [(0, 3), (1, 10)]:
        for sfx in ["", "_reverse"]:
            expected[f"weight_ih_l{k}{sfx}"] = (G * 5, fan_in)
            expected[f"weight_hh_l{k}{sfx}"] = (G * 5, 5)
            for b in biases:
                expected[f"{b}_l{k}{sfx}"] = (G * 5,)
    sd = m.state_dict()
    assert list(sd) == list(expected)
    assert {k: v.shape for k, v in sd.items()} == expected
    assert [p.name for p in m.parameters()] == list(expected)


def test_init_is_uniform_with_pytorch_bound_and_lstm_forget_bias_one():
    rnncore.manual_seed(0)
    H = 16
    m = LSTM(8, H)
    for name, p in m.named_parameters():
        values = p.data if name != "bias_l0" else np.delete(p.data, np.s_[H:2 * H])
        assert np.abs(values).max() <= 1 / np.sqrt(H)
        assert np.abs(values).max() > 0.8 / np.sqrt(H)       # spread over the whole range
    np.testing.assert_array_equal(m.state_dict()["bias_l0"][H:2 * H], np.ones(H, np.float32))
    rnncore.manual_seed(0)
    again = LSTM(8, H)
    for a, b in zip(m.parameters(), again.parameters()):
        np.testing.assert_array_equal(a.data, b.data)        # seeded: identical


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_load_state_dict_round_trip_and_refusals(cell):
    src = CELLS[cell](2, 3, num_layers=2, bidirectional=True)
    m = CELLS[cell](2, 3, num_layers=2, bidirectional=True)
    m.load_state_dict(src.state_dict())
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, src.state_dict()[k])

    m = CELLS[cell](2, 3, num_layers=2, bidirectional=True)
    before = m.state_dict()
    good = src.state_dict()
    bad_dicts = {
        "weight_hh_l9": {**good, "weight_hh_l9": good["weight_hh_l0"]},        # unknown
        "weight_ih_l1_reverse": {k: v for k, v in good.items() if k != "weight_ih_l1_reverse"},
        "weight_hh_l0": {**good, "weight_hh_l0": good["weight_hh_l0"][:, :-1]},  # wrong shape
        "weight_ih_l1": {**good, "weight_ih_l1": np.full_like(good["weight_ih_l1"], np.nan)},
    }
    for key, bad in bad_dicts.items():
        with pytest.raises(ValueError, match=key):
            m.load_state_dict(bad)
        for k, v in m.state_dict().items():
            np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_casts_to_the_module_dtype():
    src = LSTM(2, 3, dtype=np.float64)
    m = LSTM(2, 3).load_state_dict(src.state_dict())
    assert all(p.data.dtype == np.float32 for p in m.parameters())


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_output_shape(cell):
    cls = CELLS[cell]
    assert cls(2, 64).output_shape((5, None, 2)) == (5, None, 64)
    assert cls(64, 32, return_sequences=False).output_shape((5, None, 64)) == (None, 32)
    assert cls(3, 4, num_layers=2, bidirectional=True).output_shape((None, 7, 3)) == (None, 7, 8)
    assert cls(3, 4, bidirectional=True, return_sequences=False).output_shape((5, 7, None)) == (7, 8)
    m = cls(3, 4, bidirectional=True)
    y = m(np.zeros((5, 2, 3)))
    assert y.shape == m.output_shape((5, 2, 3))
    with pytest.raises(ValueError, match="input_shape"):
        m.output_shape((5, 2, 4))
    with pytest.raises(ValueError, match="input_shape"):
        m.output_shape((5, 3))


def test_summary_keras_counts_if_the_table_exists():
    """Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False)).summary((5, None, 2))."""
    lines = []
    model = rnncore.Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False))
    total = model.summary((5, None, 2), print_fn=lines.append)
    text = "\n".join(lines)
    assert total == 17152 + 12416
    assert "17152" in text.replace(",", "") and "12416" in text.replace(",", "")
    assert "(5, None, 64)" in text and "(None, 32)" in text


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_input_is_cast_to_the_module_dtype(cell):
    m = CELLS[cell](3, 2)
    x64 = np.random.default_rng(17).standard_normal((4, 2, 3))
    y = m(x64)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, m(x64.astype(np.float32)))
    assert m(np.ones((4, 2, 3), dtype=np.int64)).dtype == np.float32
    m(x64)
    gx = m.backward(x64.copy(), np.ones_like(y, dtype=np.float64))   # (cast, then compared)
    assert gx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in m.parameters())


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_astype_converts_parameters_and_carried_state(cell):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((6, 2, 3))
    m = CELLS[cell](3, 4, num_layers=2).remember()
    m(x[:3].astype(np.float32))
    assert m.astype(np.float64) is m
    assert m.h_n.dtype == np.float64 and m._carry[0].dtype == np.float64
    y = m(x[3:])
    assert y.dtype == np.float64
    ref = make(cell, 3, 4, num_layers=2).load_state_dict(m.state_dict()).remember()
    ref(x[:3].astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(y, ref(x[3:]), rtol=1e-5, atol=1e-6)   # float32 first chunk
    gx = m.backward(x[3:], np.ones_like(y))
    assert gx.dtype == np.float64


@pytest.mark.parametrize("cell", ["gru", "lstm"])           # (an RNN's h is a tanh: bounded)
def test_astype_refuses_a_carried_state_beyond_the_new_dtype(cell):
    """A remembered state of 1e60 became inf in float32 (a warning only), and the next
    backward's grads NaN; astype refuses it now, as it refuses such a parameter, and changes
    nothing."""
    m = CELLS[cell](2, 3, dtype=np.float64).remember()
    x = np.ones((2, 1, 2))
    s0 = np.full((1, 1, 3), 1e60)
    m(x, c0=s0) if cell == "lstm" else m(x, h0=s0)
    carry = m._carry
    state = "c" if cell == "lstm" else "h"
    assert np.abs(carry[-1]).max() > 1e38                    # (what the test is about)
    with pytest.raises(ValueError, match=rf"dtype: the remembered {state} \(the next forward's "
                                         rf"{state}0\) holds finite values beyond float32's range"):
        m.astype(np.float32)
    assert m.dtype == np.float64 and m._carry is carry
    assert all(p.data.dtype == np.float64 for p in m.parameters())
    m.forget()
    if cell == "lstm":                                        # c_n, kept for the caller, too
        with pytest.raises(ValueError, match="dtype: c_n holds finite values beyond"):
            m.astype(np.float32)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_backward_differentiates_the_forwards_output_after_return_sequences_is_switched(cell):
    """return_sequences set between forward and backward: backward read the new setting, so
    it refused a gy like the forward's output and took one of an output never returned."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 2)).astype(np.float32)
    for first in (True, False):
        rnncore.manual_seed(0)
        m = CELLS[cell](2, 3, return_sequences=first)
        ref = CELLS[cell](2, 3, return_sequences=first)
        ref.load_state_dict(m.state_dict())
        y = m.forward(x)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        m.return_sequences = not first
        ref.forward(x)
        np.testing.assert_array_equal(m.backward(x, gy), ref.backward(x, gy))
        with pytest.raises(ValueError, match="gy"):
            m.backward(x, np.ones((5, 3) if first else (4, 5, 3), np.float32))
        assert m.forward(x).ndim == (2 if first else 3)      # the next forward: the new setting


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_dropout_only_between_layers_and_only_in_training(cell):
    rng = np.random.default_rng(19)
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    with pytest.warns(UserWarning, match="dropout=0.5 does nothing with num_layers=1"):
        one = CELLS[cell](2, 3, dropout=0.5)                            # (as PyTorch warns)
    np.testing.assert_array_equal(one(x), one.evaluate()(x))            # one layer: nothing to drop
    m = CELLS[cell](2, 3, num_layers=2, dropout=0.5)
    rnncore.manual_seed(4)
    a = m(x)
    rnncore.manual_seed(4)
    np.testing.assert_array_equal(m(x), a)                             # seeded: bit-identical
    assert not np.allclose(m(x), a)                                    # a new mask each call
    m.evaluate()
    np.testing.assert_array_equal(m(x), CELLS[cell](2, 3, num_layers=2)
                                  .load_state_dict(m.state_dict())(x))  # no dropout in evaluate


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_dropout_between_layers_is_inverted(cell):
    """Kept entries are scaled by 1 / (1 - p), as PyTorch's are, so that a training forward keeps
    the evaluate forward's expectation: the mask holds 0 and 1 / (1 - p) only."""
    x = np.random.default_rng(20).standard_normal((3, 400, 2))
    m = CELLS[cell](2, 3, num_layers=3, dropout=0.75, dtype=np.float64)
    m(x)
    for mask in m._cache["masks"][1:]:                   # (below layers 1 and 2)
        assert set(np.unique(mask)) == {0.0, 4.0}
        assert 0.7 < np.mean(mask == 0) < 0.8


def test_dropout_between_layers_draws_every_step_anew():
    """As PyTorch's, the mask between layers is drawn per entry of the (T, B, D*H) input, each
    step independently: not one mask per sequence reused at every step."""
    x = np.random.default_rng(21).standard_normal((4, 300, 2))
    m = GRU(2, 3, num_layers=2, bidirectional=True, dropout=0.5, dtype=np.float64)
    m(x)
    mask = m._cache["masks"][1]
    assert mask.shape == (4, 300, 6)
    for t in range(3):                       # two independent draws differ in half the entries
        assert 0.4 < np.mean(mask[t] != mask[t + 1]) < 0.6


def test_dropout_keeps_the_expected_output_of_a_near_linear_layer():
    """Black-box: an RNN whose second layer is nearly linear (tiny weights: tanh(z) ~ z) gives,
    averaged over a large batch, the same output in training as in evaluate mode."""
    rnncore.manual_seed(0)
    m = RNN(3, 8, num_layers=2, dropout=0.5, dtype=np.float64)
    sd = m.state_dict()
    sd.update(weight_ih_l1=np.full_like(sd["weight_ih_l1"], 1e-3),
              weight_hh_l1=np.zeros_like(sd["weight_hh_l1"]),
              bias_l1=np.zeros_like(sd["bias_l1"]), bias_l0=np.full_like(sd["bias_l0"], 2.0))
    m.load_state_dict(sd)
    x = np.ones((1, 20000, 3))
    ratio = m.training()(x).mean() / m.evaluate()(x).mean()
    assert abs(ratio - 1) < 0.03, ratio


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_config_rebuilds_and_repr(cell):
    cls = CELLS[cell]
    m = cls(3, 4, num_layers=2, bidirectional=True, dropout=0.25, return_sequences=False)
    assert m.config() == dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                              dropout=0.25, return_sequences=False)
    clone = cls(**m.config())
    assert clone.config() == m.config()
    assert [p.data.shape for p in clone.parameters()] == [p.data.shape for p in m.parameters()]
    assert repr(m) == (f"{cls.__name__}(3, 4, num_layers=2, bidirectional=True, dropout=0.25, "
                       f"return_sequences=False)")
    assert repr(cls(3, 4)) == f"{cls.__name__}(3, 4)"


# ---------------------------------------------------------------------------------------------
# bad input: the right error, naming the argument, and nothing changes
# ---------------------------------------------------------------------------------------------

BAD_CONSTRUCTORS = [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(input_size=2.5), TypeError, "input_size"),
    (dict(input_size=True), TypeError, "input_size"),
    (dict(hidden_size=-1), ValueError, "hidden_size"),
    (dict(hidden_size="4"), TypeError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(num_layers=1.0), TypeError, "num_layers"),
    (dict(bidirectional=1), TypeError, "bidirectional"),
    (dict(bidirectional="yes"), TypeError, "bidirectional"),
    (dict(return_sequences=None), TypeError, "return_sequences"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(dropout="0.1"), TypeError, "dropout"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(dtype=np.float16), TypeError, "dtype"),
]


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("kwargs, error, name", BAD_CONSTRUCTORS)
def test_constructor_refuses_bad_arguments(cell, kwargs, error, name):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(error, match=rf"^{name}\b"):
        CELLS[cell](**args)


T0, B0, I0, H0 = 4, 3, 2, 5            # the shapes of the good calls below (L=2, bidirectional)
_x = np.random.default_rng(20).standard_normal((T0, B0, I0))
_nan = _x.copy()
_nan[1, 2, 0] = np.nan
_inf = _x.copy()
_inf[0, 0, 1] = -np.inf

BAD_FORWARDS = [
    (dict(x=_x[..., :1]), ValueError, "x"),                              # wrong input_size
    (dict(x=_x[0]), ValueError, "x"),                                    # 2-D
    (dict(x=_x[None]), ValueError, "x"),                                 # 4-D
    (dict(x=_nan), ValueError, "x"),
    (dict(x=_inf), ValueError, "x"),
    (dict(x=_x > 0), TypeError, "x"),                                    # bool
    (dict(x="abc"), TypeError, "x"),
    (dict(x=[]), ValueError, "x"),                                       # empty list
    (dict(x=[_x[0], _x[1, :2]]), ValueError, "x"),                       # steps of unequal shape
    (dict(x=np.zeros((0, B0, I0))), ValueError, "x"),                    # no steps
    (dict(lengths=[1, 2]), ValueError, "lengths"),                       # wrong batch
    (dict(lengths=[1, 0, 2]), ValueError, "lengths"),
    (dict(lengths=[1, T0 + 1, 2]), ValueError, "lengths"),
    (dict(lengths=[1.0, 2.0, 3.0]), TypeError, "lengths"),
    (dict(h0=np.zeros((4, B0, H0 + 1))), ValueError, "h0"),
    (dict(h0=np.zeros((2, B0, H0))), ValueError, "h0"),                  # L*D = 4 expected
    (dict(h0=np.full((4, B0, H0), np.nan)), ValueError, "h0"),
    (dict(h0="zeros"), TypeError, "h0"),
]
BAD_LSTM_FORWARDS = [
    (dict(c0=np.zeros((4, B0 + 1, H0))), ValueError, "c0"),
    (dict(c0=np.full((4, B0, H0), np.inf)), ValueError, "c0"),
]


def _snapshot(m):
    snap = {"params": m.state_dict(), "grads": [p.grad.copy() for p in m.parameters()],
            "h_n": m.h_n.copy(), "carry": [c.copy() for c in m._carry], "cache": m._cache,
            "lengths": m._lengths}
    if hasattr(m, "c_n"):
        snap["c_n"] = m.c_n.copy()
    return snap


def _assert_unchanged(m, snap):
    after = _snapshot(m)
    for k in snap["params"]:
        np.testing.assert_array_equal(after["params"][k], snap["params"][k])
    for a, b in zip(after["grads"], snap["grads"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(after["h_n"], snap["h_n"])
    for a, b in zip(after["carry"], snap["carry"]):
        np.testing.assert_array_equal(a, b)
    assert after["cache"] is snap["cache"]
    np.testing.assert_array_equal(after["lengths"], snap["lengths"])
    if "c_n" in snap:
        np.testing.assert_array_equal(after["c_n"], snap["c_n"])


def _primed(cell):
    """A layer after one good forward/backward with remember() on: it has state to lose."""
    m = CELLS[cell](I0, H0, num_layers=2, bidirectional=True).remember()
    y = m(_x, lengths=[4, 2, 3])
    m.backward(_x, np.ones_like(y))
    m(_x, lengths=[4, 2, 3])
    return m


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("kwargs, error, name", BAD_FORWARDS + BAD_LSTM_FORWARDS)
def test_forward_refuses_bad_input_and_changes_nothing(cell, kwargs, error, name):
    if "c0" in kwargs and cell != "lstm":
        with pytest.raises(TypeError, match="c0"):          # only the LSTM has a cell state
            CELLS[cell](I0, H0)(_x, c0=np.zeros((1, B0, H0)))
        return
    m = _primed(cell)
    snap = _snapshot(m)
    call = dict(x=_x)
    call.update(kwargs)
    with pytest.raises(error, match=rf"^{name}\b"):           # the message starts with the name
        m.forward(call.pop("x"), **call)
    _assert_unchanged(m, snap)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_backward_refuses_bad_input_and_changes_nothing(cell):
    m = _primed(cell)
    snap = _snapshot(m)
    gy = np.ones((T0, B0, 2 * H0))
    bad = [
        (dict(x=_x, gy=gy[..., :-1]), ValueError, "gy"),
        (dict(x=_x, gy=gy[0]), ValueError, "gy"),
        (dict(x=_x, gy=np.where(gy > 0, np.nan, 0)), ValueError, "gy"),
        (dict(x=_x, gy="ones"), TypeError, "gy"),
        (dict(x=_x[:2], gy=gy), ValueError, "x"),                  # not forward's input shape
        (dict(x=_x[..., :1], gy=gy), ValueError, "x"),
        (dict(x=_nan, gy=gy), ValueError, "x"),
    ]
    for kwargs, error, name in bad:
        with pytest.raises(error, match=rf"^{name}\b"):
            m.backward(**kwargs)
        _assert_unchanged(m, snap)


def test_backward_before_forward_is_refused():
    with pytest.raises(RuntimeError, match="forward"):
        GRU(2, 3).backward(np.zeros((2, 1, 2)), np.zeros((2, 1, 3)))


def test_remember_refuses_a_non_bool():
    with pytest.raises(TypeError, match="mode"):
        RNN(2, 3).remember("yes")


def test_backward_reads_only_the_shape_of_x():
    """The forward kept what backward needs: backward gives the same gradients for the forward's
    own input array and for an equal copy; a different array must still be a valid input."""
    rnncore.manual_seed(0)
    m = rnncore.LSTM(3, 4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    gy = rng.standard_normal((5, 2, 4)).astype(np.float32)
    m.forward(x)
    m.zero_grad_parameters()
    gx = m.backward(x, gy)
    grads = [p.grad.copy() for p in m.parameters()]
    m.zero_grad_parameters()
    np.testing.assert_array_equal(m.backward(x.copy(), gy), gx)
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^x\b"):
        m.backward(bad, gy)
    with pytest.raises(ValueError, match=r"^x\b"):
        m.backward(x[:4], gy)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_backward_refuses_an_input_other_than_the_last_forwards(cell):
    """backward differentiates the last forward (its kept values): an x with other values is
    refused, not silently answered with that forward's gradient. The case: one layer shared by
    two models, A.forward(xa), B.forward(xb), A.backward(xa, ...): the container notices that
    its child ran another forward; the layer itself, that x is not its last forward's."""
    rng = np.random.default_rng(30)
    xa, xb = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 3))
    enc = CELLS[cell](3, 4, dtype=np.float64)
    A = Sequential(enc, Linear(4, 1, dtype=np.float64))
    B = Sequential(enc, Linear(4, 2, dtype=np.float64))
    ya = A.forward(xa)
    B.forward(xb)
    grads = [p.grad.copy() for p in enc.parameters()]
    with pytest.raises(RuntimeError, match=r"modules\[0\] \(\w+\) has run another forward "
                                           r"since this container's"):
        A.backward(xa, np.ones_like(ya))
    for p, g in zip(enc.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)                   # nothing added
    A.forward(xa)
    A.backward(xa, np.ones_like(ya))                                # after its own forward: fine
    C = Sequential(Linear(3, 3, dtype=np.float64), enc)             # shared, not first: named
    yc = C.forward(xa)
    B.forward(xb)
    with pytest.raises(RuntimeError, match=r"^modules\[1\] \(\w+\) has run another forward"):
        C.backward(xa, np.ones_like(yc))
    m = CELLS[cell](3, 4)
    m(xa)
    m(xb)
    gy = np.ones((4, 2, 4), np.float32)
    with pytest.raises(ValueError, match="x: expected the input of the last forward"):
        m.backward(xa, gy)
    np.testing.assert_array_equal(m.backward(list(xb), gy), m.backward(xb.copy(), gy))


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_c0_is_refused_by_a_cell_without_one(cell):
    with pytest.raises(TypeError, match=f"c0: a {cell.upper()} has no cell state"):
        CELLS[cell](2, 3)(np.ones((2, 1, 2)), c0=np.zeros((1, 1, 3)))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_frozen_parameters_take_no_gradient(cell):
    m = CELLS[cell](2, 3)
    frozen = m.parameters()[0]
    frozen.requires_grad = False
    x = np.ones((3, 2, 2), np.float32)
    m.backward(x, np.ones_like(m(x)))
    assert not frozen.grad.any() and all(p.grad.any() for p in m.parameters()[1:])


def test_backward_takes_the_forwards_own_list_refilled_in_place():
    m = LSTM(2, 3)
    steps = [np.ones((2, 2), np.float32) for _ in range(3)]
    y = m(steps)
    want = m.backward([s.copy() for s in steps], [np.ones_like(s) for s in y])
    for s in steps:
        s[...] = 7.0                                        # refilled, as an array may be
    got = m.backward(steps, [np.ones_like(s) for s in y])
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_remember_carries_only_states_of_forwards_made_in_that_mode(cell):
    # a model trained on batches of 8, then remember() for a stream of batch 1: the stream
    # starts from zeros (carrying the last training batch's state raised on the batch size)
    rng = np.random.default_rng(15)
    m = make(cell, 2, 3, num_layers=2)
    m(rng.standard_normal((4, 8, 2)))
    x = rng.standard_normal((6, 1, 2))
    whole = make(cell, 2, 3, num_layers=2).load_state_dict(m.state_dict())(x)
    m.remember()
    np.testing.assert_allclose(np.concatenate([m(x[:2]), m(x[2:])]), whole, rtol=1e-12,
                               atol=1e-14)
