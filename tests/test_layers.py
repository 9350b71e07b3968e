"""Linear, Embedding, activations, Dropout, LogSoftMax, SoftMax.

Gradients: float64 central differences (written out here, and rnncore.gradcheck) with a random
upstream gradient ``loss = sum(out * dout)``, on hypothesis-drawn small shapes. Values: the same
computation in PyTorch (float64). Then the Torch7 contract: grads accumulate until
zero_grad_parameters, update_parameters is ``data -= lr * grad``, state dicts, astype.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _torch import F, torch  # noqa: E402

import rnncore  # noqa: E402
from rnncore import (Dropout, Embedding, LeakyReLU, Linear, LogSoftMax, ReLU, Sigmoid,  # noqa: E402
                     Sequential, SoftMax, Tanh)
from _numeric import numeric_grad, rel_err  # noqa: E402

TOL = 1e-6          # relative gradient error allowed in float64


# -- central differences, written out once for every test here -------------------------------


def check_grads(m, x, lengths=None, seed=0):
    """Analytic vs numerical gradients of loss = sum(m(x) * dout) for x (if float) and every param."""
    rng = np.random.default_rng(seed)
    y = np.asarray(m.forward(x, lengths=lengths))
    dout = rng.standard_normal(y.shape)
    m.zero_grad_parameters()
    gx = m.backward(x, dout)
    analytic = [p.grad.copy() for p in m.parameters()]

    def loss():
        return float(np.sum(np.asarray(m.forward(x, lengths=lengths)) * dout))

    if x.dtype.kind == "f":
        assert rel_err(np.asarray(gx), numeric_grad(loss, x)) < TOL
    for p, a in zip(m.parameters(), analytic):
        assert rel_err(a, numeric_grad(loss, p.data)) < TOL, p.name


def snapshot(m):
    return [(p.data.copy(), p.grad.copy()) for p in m.parameters()]


def same(s1, s2):
    return all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(s1, s2))


shapes = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)   # leading dims N...
ACTIVATIONS = {             # (the PyTorch functions in lambdas: looked up when a test runs)
    "ReLU": (ReLU, {}, lambda t: F.relu(t)),
    "LeakyReLU": (LeakyReLU, {"slope": 0.2}, lambda t: F.leaky_relu(t, 0.2)),
    "Tanh": (Tanh, {}, lambda t: torch.tanh(t)),
    "Sigmoid": (Sigmoid, {}, lambda t: torch.sigmoid(t)),
    "LogSoftMax": (LogSoftMax, {}, lambda t: F.log_softmax(t, dim=-1)),
    "SoftMax": (SoftMax, {}, lambda t: F.softmax(t, dim=-1)),
    "Dropout": (Dropout, {"p": 0.3}, lambda t: t),        # evaluate(): the identity
}


def away_from_kinks(x):
    """Keep |x| >= 0.05 so that central differences never straddle ReLU's kink at 0."""
    return np.where(x >= 0, x + 0.05, x - 0.05)


# -- gradients -------------------------------------------------------------------------------
@given(lead=shapes, i=st.integers(1, 4), o=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_linear_gradients(lead, i, o, seed):
    rnncore.manual_seed(seed)
    m = Linear(i, o, dtype=np.float64)
    x = np.random.default_rng(seed).standard_normal(lead + (i,))
    check_grads(m, x, seed=seed)
    assert rnncore.gradcheck(m, x) < TOL


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_activation_gradients(name, shape, seed):
    cls, kw, _ = ACTIVATIONS[name]
    m = cls(dtype=np.float64, **kw).evaluate()
    # N(0, 1) inputs: a saturated unit's gradient (tanh'(6) ~ 2e-5) is below what central
    # differences resolve relative to itself (their noise is ~1e-10 absolute)
    x = away_from_kinks(np.random.default_rng(seed).standard_normal(shape))
    check_grads(m, x, seed=seed)
    assert rnncore.gradcheck(m, x) < TOL


@given(shape=shapes, v=st.integers(1, 5), e=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_embedding_gradients(shape, v, e, seed):
    rnncore.manual_seed(seed)
    m = Embedding(v, e, dtype=np.float64)
    ids = np.random.default_rng(seed).integers(0, v, size=shape)    # repeats accumulate
    check_grads(m, ids, seed=seed)
    assert rnncore.gradcheck(m, ids) < TOL
    assert m.backward(ids, np.ones(shape + (e,))) is None          # no gradient for ids


def test_dropout_training_gradient_is_the_mask():
    rnncore.manual_seed(3)
    m = Dropout(0.4, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((50, 40))
    y = m.forward(x)
    mask = y / x                                                   # 0 or 1 / (1 - p)
    assert set(np.round(np.unique(mask), 12)) == {0.0, round(1 / 0.6, 12)}
    assert abs((mask == 0).mean() - 0.4) < 0.05                    # 2000 draws
    gy = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_allclose(m.backward(x, gy), gy * mask, rtol=1e-12)


def test_dropout_training_gradient_by_central_differences():
    """In training mode, with the same mask for every evaluation (the stream reseeded before
    each forward): backward against central differences of sum(forward(x) * gy)."""
    m = Dropout(0.4, dtype=np.float64)
    rng = np.random.default_rng(2)
    x, gy = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))

    def loss(v):
        rnncore.manual_seed(5)
        return float((m.forward(v) * gy).sum())

    loss(x)
    gx = m.backward(x, gy)
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = 1e-6
        num[i] = (loss(x + step) - loss(x - step)) / 2e-6
    assert np.any(gx == 0) and np.any(gx != 0)                      # a real mask: both kinds
    np.testing.assert_allclose(gx, num, rtol=1e-7, atol=1e-9)


def test_dropout_seeded_identity_in_evaluate_and_at_p0():
    x = np.random.default_rng(0).standard_normal((6, 7)).astype(np.float32)
    rnncore.manual_seed(11)
    a = Dropout(0.5).forward(x)
    rnncore.manual_seed(11)
    b = Dropout(0.5).forward(x)
    assert np.array_equal(a, b) and not np.array_equal(a, x)      # same seed, same mask
    assert np.array_equal(Dropout(0.5).evaluate().forward(x), x)
    assert np.array_equal(Dropout(0.0).forward(x), x)
    m = Dropout(0.5).evaluate()
    y = m.forward(x)
    g = 2 * x
    gx = m.backward(x, g)
    assert np.array_equal(gx, 2 * x)
    y[...], gx[...] = 0, 0                                        # copies, not the caller's arrays
    assert x.all() and g.all()


# -- PyTorch parity (float64) ----------------------------------------------------------------
@given(lead=shapes, i=st.integers(1, 4), o=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_linear_matches_torch(lead, i, o, seed):
    rng = np.random.default_rng(seed)
    m = Linear(i, o, dtype=np.float64)
    tm = torch.nn.Linear(i, o).double()
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x, dout = rng.standard_normal(lead + (i,)), rng.standard_normal(lead + (o,))
    xt = torch.tensor(x, requires_grad=True)
    yt = tm(xt)
    (yt * torch.tensor(dout)).sum().backward()
    np.testing.assert_allclose(m.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.backward(x, dout), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.weight.grad, tm.weight.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.bias.grad, tm.bias.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_linear_init_is_pytorch_bound():
    rnncore.manual_seed(0)
    m = Linear(16, 50)
    for p in m.parameters():
        assert np.abs(p.data).max() <= 0.25 and np.abs(p.data).max() > 0.2   # U(-1/4, 1/4)
    assert m.weight.data.shape == (50, 16) and m.bias.data.shape == (50,)
    assert m.weight.data.dtype == np.float32


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_torch(name):
    cls, kw, f = ACTIVATIONS[name]
    rng = np.random.default_rng(5)
    x = away_from_kinks(rng.standard_normal((3, 4, 5)) * 4)
    dout = rng.standard_normal(x.shape)
    m = cls(dtype=np.float64, **kw).evaluate()
    xt = torch.tensor(x, requires_grad=True)
    yt = f(xt)
    (yt * torch.tensor(dout)).sum().backward()
    np.testing.assert_allclose(m.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(m.backward(x, dout), xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_leaky_relu_default_slope_is_pytorchs():
    """LeakyReLU() without a slope is PyTorch's nn.LeakyReLU(): slope 0.01, forward and backward."""
    x = away_from_kinks(np.random.default_rng(6).standard_normal((4, 5)) * 3)
    dout = np.random.default_rng(7).standard_normal(x.shape)
    m = LeakyReLU(dtype=np.float64)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.LeakyReLU()(xt)
    (yt * torch.tensor(dout)).sum().backward()
    np.testing.assert_allclose(m.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(m.backward(x, dout), xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_embedding_matches_torch():
    rng = np.random.default_rng(2)
    tm = torch.nn.Embedding(7, 3).double()
    m = Embedding(7, 3, dtype=np.float64)
    m.load_state_dict({"weight": tm.weight.detach().numpy()})
    ids = rng.integers(0, 7, size=(5, 4))                          # (T, B) ids
    dout = rng.standard_normal((5, 4, 3))
    (tm(torch.tensor(ids)) * torch.tensor(dout)).sum().backward()
    np.testing.assert_array_equal(m.forward(ids), tm(torch.tensor(ids)).detach().numpy())
    m.backward(ids, dout)
    np.testing.assert_allclose(m.weight.grad, tm.weight.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_stable_at_extreme_inputs():
    x = np.array([[-1000.0, 0.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is fine
        s = Sigmoid(dtype=np.float64).forward(x)
        ls = LogSoftMax(dtype=np.float64).forward(x)
        sm = SoftMax(dtype=np.float64).forward(x)
    np.testing.assert_allclose(s, [[0.0, 0.5, 1.0]], atol=1e-300)
    np.testing.assert_allclose(ls, [[-2000.0, -1000.0, 0.0]])
    np.testing.assert_allclose(sm, [[0.0, 0.0, 1.0]])
    x32 = np.array([[88.0, -88.0, 104.0, -104.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_allclose(Sigmoid().forward(x32), torch.sigmoid(torch.tensor(x32)).numpy(),
                                   rtol=1e-6, atol=1e-38)


# -- Torch7 contract -------------------------------------------------------------------------
def test_grads_accumulate_until_zeroed_and_update_parameters():
    rnncore.manual_seed(0)
    m = Linear(3, 2, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((4, 3))
    dout = np.random.default_rng(1).standard_normal((4, 2))
    m.forward(x)
    m.backward(x, dout)
    once = [p.grad.copy() for p in m.parameters()]
    m.backward(x, dout)
    for p, g in zip(m.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-14)      # accumulated, not replaced
    before = [p.data.copy() for p in m.parameters()]
    m.update_parameters(0.1)
    for p, w in zip(m.parameters(), before):
        np.testing.assert_allclose(p.data, w - 0.1 * p.grad, rtol=1e-14)
    m.zero_grad_parameters()
    assert all(not p.grad.any() for p in m.parameters())


def test_parameters_are_the_same_objects():
    m = Linear(3, 2)
    assert [id(p) for p in m.parameters()] == [id(p) for p in m.parameters()]
    assert [p.name for p in m.parameters()] == ["weight", "bias"] == list(m.state_dict())


def test_state_dict_round_trip_and_cast():
    rnncore.manual_seed(1)
    a, b = Linear(4, 3), Linear(4, 3, dtype=np.float64)
    sd = a.state_dict()
    sd["weight"][...] = 0                                          # a copy: a is untouched
    assert a.weight.data.any()
    b.load_state_dict(a.state_dict())
    assert b.weight.data.dtype == np.float64                       # cast to the module's dtype
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_allclose(b.forward(x), a.forward(x), rtol=1e-6)


def test_load_state_dict_refusals_leave_module_unchanged():
    m = Linear(3, 2)
    before = snapshot(m)
    with pytest.raises(ValueError, match="weight"):
        m.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})     # wrong shape
    with pytest.raises(ValueError, match="extra"):
        m.load_state_dict({**m.state_dict(), "extra": np.zeros(1)})             # unknown key
    with pytest.raises(ValueError, match=r"^state\['weight'\]: expected values within "
                                         r"\+-3\.403e\+38 \(the range of float32\)"):
        m.load_state_dict({"weight": np.full((2, 3), 1e39), "bias": np.zeros(2)})  # beyond
    assert same(before, snapshot(m))


def test_load_state_dict_key_errors_name_only_what_is_wrong():
    m = Linear(3, 2)
    sd = m.state_dict()
    expected = r"^state: expected exactly the keys \['weight', 'bias'\], got "
    with pytest.raises(ValueError, match=expected + r"unknown keys \['extra'\]$"):
        m.load_state_dict({**sd, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=expected + r"missing keys \['bias'\]$"):
        m.load_state_dict({"weight": sd["weight"]})
    both = r"unknown keys \['b'\], missing keys \['bias'\]$"
    with pytest.raises(ValueError, match=expected + both):
        m.load_state_dict({"weight": sd["weight"], "b": sd["bias"]})


def test_load_state_dict_writes_into_the_parameters_arrays():
    """In place: the same arrays (an optimizer's views of them stay valid), tied weights stay
    tied, and each write counts as a change of the Parameter (``version``)."""
    a, b = Linear(3, 3, dtype=np.float64), Linear(3, 3, dtype=np.float64)
    b.weight.data = a.weight.data                            # tied: one array
    m = Sequential(a, b)
    arrays = [p.data for p in m.parameters()]
    versions = [p.version for p in m.parameters()]
    state = {k: np.full_like(v, i + 1.0) for i, (k, v) in enumerate(m.state_dict().items())}
    state["1.weight"] = state["0.weight"]
    m.load_state_dict(state)
    assert all(p.data is w for p, w in zip(m.parameters(), arrays))
    assert a.weight.data is b.weight.data
    assert all(p.version > v for p, v in zip(m.parameters(), versions))
    np.testing.assert_array_equal(a.weight.data, state["0.weight"])


def test_astype_converts_in_place():
    m = Linear(3, 2)
    w = m.weight.data.copy()
    assert m.astype(np.float64) is m
    assert m.weight.data.dtype == m.weight.grad.dtype == np.float64 and m.dtype == np.float64
    np.testing.assert_array_equal(m.weight.data, w.astype(np.float64))
    assert m.forward(np.ones((1, 3), dtype=np.float32)).dtype == np.float64   # input cast


def test_astype_refuses_values_beyond_the_new_range_and_converts_nothing():
    m = Sequential(Linear(2, 2, dtype=np.float64), Linear(2, 2, dtype=np.float64))
    m[1].weight.data[0, 0] = 1e39                   # float32's largest is ~3.4e38
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"dtype: 1\.weight holds finite values beyond float32"):
        m.astype(np.float32)
    assert same(before, snapshot(m)) and m[0].weight.data.dtype == np.float64
    m[1].weight.data[0, 0] = 0
    m[1].weight.grad[1, 1] = -1e300
    with pytest.raises(ValueError, match=r"1\.weight\.grad"):
        m.astype(np.float32)
    m[1].weight.grad[1, 1] = 0
    assert m.astype(np.float32)[1].weight.data.dtype == np.float32


def test_astype_keeps_inf_and_nan_as_they_are():
    """Only finite values beyond the new range are refused: inf stays inf (converting it loses
    nothing), to a wider dtype as to a narrower one."""
    m = Linear(2, 2)
    m.weight.data[0, 0], m.weight.data[0, 1] = np.inf, np.nan
    m.bias.grad[0] = -np.inf
    m.astype(np.float64)
    assert m.weight.data[0, 0] == np.inf and np.isnan(m.weight.data[0, 1])
    m.astype(np.float32)
    assert m.bias.grad[0] == -np.inf and m.weight.data.dtype == np.float32


def test_parameter_data_takes_only_an_array_of_its_shape_and_dtype():
    m = Linear(3, 2)
    p = m.weight
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"weight\.data: expected a float32 array of shape \(2, 3\), "
                                         r"got float32 \(3, 2\)"):
        p.data = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="float64"):
        p.data = np.zeros((2, 3))
    with pytest.raises(TypeError, match="weight.data: expected a NumPy array, got list"):
        p.data = [[0.0] * 3] * 2
    # arrays an in-place update would write wrongly or not at all (one entry for all: an
    # update_parameters step once left a broadcast bias at 0 where it should have moved)
    with pytest.raises(ValueError, match="weight.data: expected a writable array"):
        p.data = np.broadcast_to(np.float32(0), (2, 3))
    locked = np.zeros((2, 3), np.float32)
    locked.flags.writeable = False
    with pytest.raises(ValueError, match="weight.data: expected a writable array"):
        p.data = locked
    assert not locked.flags.writeable                      # the caller's array is left alone
    shared = np.lib.stride_tricks.as_strided(np.zeros(3, np.float32), (2, 3), (0, 4))
    with pytest.raises(ValueError, match=r"weight.data: expected an array whose entries are "
                                         r"separate memory .* strides \(0, 4\)"):
        p.data = shared
    # rows that overlap (each starts one entry after the last): no zero stride, still shared
    rows = np.lib.stride_tricks.as_strided(np.zeros(4, np.float32), (2, 3), (4, 4))
    with pytest.raises(ValueError, match=r"separate memory .* strides \(4, 4\)"):
        p.data = rows
    with pytest.raises(ValueError, match=r"weight\.grad: expected an array whose entries"):
        p.grad = rows
    assert same(before, snapshot(m))
    p.data = np.zeros((4, 6), np.float32)[::2, ::-2]       # a strided slice is its own memory
    new = np.asfortranarray(np.ones((2, 3), np.float32))    # any memory layout is fine
    p.data = new
    assert p.data is new
    np.testing.assert_array_equal(m.forward(np.ones((1, 3), np.float32)), [[3 + b for b in m.bias.data]])



def test_parameter_grad_takes_only_a_writable_array_of_its_shape_and_dtype():
    m = Linear(3, 2)
    p = m.weight
    kept = p.grad
    with pytest.raises(ValueError, match=r"weight\.grad: expected a float32 array of shape \(2, 3\), "
                                         r"got float32 \(3, 2\)"):
        p.grad = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="weight.grad: .* got float64"):
        p.grad = np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"weight\.grad: expected a NumPy array, got NoneType .*zero_grad"):
        p.grad = None
    locked = np.zeros((2, 3), np.float32)
    locked.flags.writeable = False
    with pytest.raises(ValueError, match="weight.grad: expected a writable array"):
        p.grad = locked
    assert p.grad is kept
    x, gy = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    m.forward(x)
    m.backward(x, gy)
    want = p.grad.copy()
    p.grad = np.zeros((3, 2), np.float32).T                 # any memory layout is fine
    m.forward(x)
    m.backward(x, gy)
    np.testing.assert_array_equal(p.grad, want)
    assert not p.grad.flags.c_contiguous


def test_relu_gradients_at_exactly_zero_are_pytorchs():
    """dy/dx at x = 0 is 0 for ReLU (1 if x > 0 else 0) and the slope for LeakyReLU, as in
    PyTorch (the tests elsewhere keep away from the kink: x >= 0 passed them)."""
    x = np.array([[-1.0, 0.0, 2.0]])
    gy = np.ones_like(x)
    for m, f in ((ReLU(dtype=np.float64), F.relu),
                 (LeakyReLU(0.1, dtype=np.float64), lambda t: F.leaky_relu(t, 0.1))):
        m.forward(x)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        f(xt).backward(torch.from_numpy(gy))
        np.testing.assert_array_equal(m.backward(x, gy), xt.grad.numpy())


def test_leaky_relu_slope_must_be_finite_in_the_module_dtype():
    """A slope of 1e39 is inf in float32: NaN at x = 0, -inf below. Refused where the module
    is built or converted (``astype``), which then changes nothing."""
    with pytest.raises(ValueError, match="slope: expected a number that is finite in the "
                                         "module's dtype float32"):
        LeakyReLU(1e39)
    m = LeakyReLU(1e39, dtype=np.float64)
    with pytest.raises(ValueError, match="slope"):
        m.astype(np.float32)
    assert m.dtype == np.float64
    np.testing.assert_array_equal(m.forward(np.array([-1.0, 0.0, 2.0])), [-1e39, 0.0, 2.0])
    with pytest.raises(ValueError, match="slope: expected a number that is not 0"):
        LeakyReLU(1e-50)


def test_float32_default_and_input_cast():
    for m in [Linear(3, 2), Tanh(), Embedding(4, 2)]:
        assert m.dtype == np.float32
    y = Linear(3, 2).forward(np.ones((2, 3)))                       # float64 input
    assert y.dtype == np.float32


def test_list_input_gives_list_output():
    rnncore.manual_seed(0)
    m = Linear(3, 2, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((4, 5, 3))        # (T, B, F)
    y = m.forward(list(x))
    assert isinstance(y, list) and len(y) == 4
    np.testing.assert_array_equal(np.stack(y), m.forward(x))
    gx = m.backward(list(x), list(np.ones((4, 5, 2))))
    assert isinstance(gx, list)
    t = Tanh(dtype=np.float64)
    assert isinstance(t.forward(list(x)), list)


@pytest.mark.parametrize("make", [lambda: Linear(3, 2), lambda: rnncore.LSTM(3, 2),
                                  lambda: rnncore.GRU(3, 2, bidirectional=True),
                                  lambda: rnncore.RNN(3, 2, num_layers=2)])
def test_a_frozen_parameter_collects_no_gradient(make):
    """requires_grad = False: backward adds nothing to that Parameter's grad, and the others
    get theirs as before (a stale sum would be applied if it were unfrozen later)."""
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    m = make()
    params = m.parameters()
    for frozen in range(len(params)):
        for p in params:
            p.requires_grad = True
        params[frozen].requires_grad = False
        m.zero_grad_parameters()
        m.backward(x, np.ones_like(m.forward(x)))
        assert not params[frozen].grad.any(), params[frozen].name
        assert all(p.grad.any() for i, p in enumerate(params) if i != frozen)


def test_embedding_from_pretrained_frozen():
    w = np.arange(12, dtype=np.float64).reshape(4, 3)
    assert rnncore.Embedding.from_pretrained(w).dtype == np.float32     # the default, as everywhere
    m = rnncore.Embedding.from_pretrained(w, dtype=np.float64)
    assert m.dtype == np.float64 and not m.weight.requires_grad and m.freeze
    ids = np.array([[0, 3], [2, 2]])
    np.testing.assert_array_equal(m.forward(ids), w[ids])
    m.backward(ids, np.ones((2, 2, 3)))
    assert not m.weight.grad.any()                                 # frozen: no accumulation
    m.weight.grad[...] = 1.0                                       # even a stray grad ...
    m.update_parameters(0.5)
    rnncore.optim.SGD(m.parameters(), lr=0.5).step()
    rnncore.optim.Adam(m.parameters(), lr=0.5).step()
    np.testing.assert_array_equal(m.weight.data, w)                # ... changes nothing
    assert m.weight.data is not w                                  # a copy of the array
    t = rnncore.Embedding.from_pretrained(w, freeze=False, dtype=np.float32)
    t.forward(ids)
    t.backward(ids, np.ones((2, 2, 3)))
    t.update_parameters(0.5)
    assert t.weight.requires_grad and t.weight.data[2, 0] == 6 - 0.5 * 2    # id 2 seen twice
    assert Embedding(**m.config()).freeze                          # config rebuilds frozen


def test_embedding_init_and_shapes():
    rnncore.manual_seed(0)
    m = Embedding(1000, 8)
    assert abs(m.weight.data.std() - 1.0) < 0.05                   # N(0, 1) like PyTorch
    assert m.output_shape((5, None)) == (5, None, 8)
    assert m.forward(np.zeros((5, 2), dtype=np.int32)).shape == (5, 2, 8)


def test_output_shapes_and_config():
    assert Linear(3, 5).output_shape((7, None, 3)) == (7, None, 5)
    assert Linear(3, 5).output_shape((None, None)) == (None, 5)
    assert Tanh().output_shape((2, None, 4)) == (2, None, 4)
    for m in [Linear(3, 5), LeakyReLU(0.3), Dropout(0.2), Embedding(4, 2), Sigmoid()]:
        clone = type(m)(**m.config())
        assert clone.config() == m.config()
        assert [p.data.shape for p in clone.parameters()] == [p.data.shape for p in m.parameters()]
    assert repr(Linear(3, 5)) == "Linear(in_features=3, out_features=5)"


@pytest.mark.parametrize("make", [lambda: Linear(2, 3, dtype=np.float64), lambda: rnncore.Tanh(np.float64),
                                  lambda: rnncore.LogSoftMax(np.float64), lambda: Dropout(0.0, np.float64)])
def test_lengths_zero_padding_outputs_and_gradients(make):
    """Called directly with lengths=, a layer acting on each step keeps its valid outputs, sets
    those at padding steps to 0, and padding takes no gradient (API: every sequence-aware call)."""
    m = make()
    rng = np.random.default_rng(0)
    x, lengths = rng.standard_normal((4, 2, 2)), np.array([4, 1])
    full = m.forward(x)
    gy = rng.standard_normal(full.shape)
    gx_full = m.backward(x, gy)
    y = m.forward(x, lengths=lengths)
    np.testing.assert_array_equal(y[:, 0], full[:, 0])
    np.testing.assert_array_equal(y[:1, 1], full[:1, 1])
    assert np.all(y[1:, 1] == 0)
    gy_masked = gy.copy()
    gy_masked[1:, 1] = 0
    np.testing.assert_array_equal(m.backward(x, gy), m.backward(x, gy_masked))
    assert not np.array_equal(m.backward(x, gy), gx_full)
    for bad, err in [(np.array([5, 1]), ValueError), (np.array([0, 1]), ValueError),
                     (np.array([1, 1, 1]), ValueError), ("ab", TypeError), (np.array([1.5, 1]), TypeError)]:
        with pytest.raises(err, match="lengths"):
            m.forward(x, lengths=bad)
    with pytest.raises(ValueError, match="lengths: given, so x must be time-major"):
        m.forward(x[0], lengths=np.array([1, 1]))                # (B, F): no time axis


def test_embedding_lengths_zero_padding_outputs_and_gradients():
    m = Embedding(5, 3, dtype=np.float64)
    ids, lengths = np.array([[1, 2], [3, 4], [0, 1]]), np.array([3, 1])   # (T, B)
    y = m.forward(ids, lengths=lengths)
    np.testing.assert_array_equal(y[:, 0], m.weight.data[ids[:, 0]])
    assert np.all(y[1:, 1] == 0) and np.array_equal(y[0, 1], m.weight.data[2])
    m.backward(ids, np.ones((3, 2, 3)))
    assert np.all(m.weight.grad[4] == 0) and np.all(m.weight.grad[[0, 1, 2, 3]] == 1)  # 4, 1: padding
    with pytest.raises(ValueError, match="lengths"):
        m.forward(ids, lengths=np.array([4, 1]))
    with pytest.raises(ValueError, match="time-major"):
        m.forward(np.array([1, 2]), lengths=np.array([1, 1]))


def test_containers_zero_the_padding_once():
    """In a chain the layers acting on each step get no lengths (the chain zeroes its padding
    once, at its end): same outputs and grads as before."""
    rnncore.manual_seed(0)
    seen = []

    class Spy(rnncore.Tanh):
        def _forward(self, x, lengths):
            seen.append(lengths)
            return super()._forward(x, lengths)

    m = rnncore.Sequential(rnncore.LSTM(2, 3), Spy(), Linear(3, 2))
    x = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float32)
    y = m.forward(x, lengths=np.array([4, 2]))
    assert seen == [None] and np.all(y[2:, 1] == 0) and np.all(y[:, 0] != 0)


@pytest.mark.parametrize("make", [rnncore.LogSoftMax, rnncore.Tanh, rnncore.ReLU, rnncore.Sigmoid])
def test_activation_backward_reads_only_the_shape_of_x(make):
    """An activation's backward uses what its forward kept: the forward's own input array and
    an equal copy give the same gradient; any other x must still be a valid input."""
    rng = np.random.default_rng(0)
    m = make()
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 2, 3)).astype(np.float32)
    m.forward(x)
    np.testing.assert_array_equal(m.backward(x, gy), m.backward(x.copy(), gy))
    bad = x.copy()
    bad[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"^x\b"):
        m.backward(bad, gy)
    with pytest.raises(ValueError, match=r"^x\b"):
        m.backward(x[:3], gy)


def test_linear_refusals_name_the_callers_shapes():
    """An empty axis was reported with the kernel's reshaped (N, I) shape, and a backward given
    another x than its forward's blamed only gy."""
    m = Linear(4, 2)
    with pytest.raises(ValueError, match=r"x: expected \(\.\.\., 4\) .*no axis empty, got shape "
                                         r"\(3, 0, 4\)"):
        m.forward(np.ones((3, 0, 4), np.float32))
    x = np.ones((3, 2, 4), np.float32)
    gy = np.ones((3, 2, 2), np.float32)
    m.forward(x)
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"gy: expected shape \(3, 1, 2\) \(this Linear's output "
                                         r"for its input of shape \(3, 1, 4\)\), got \(3, 2, 2\)"):
        m.backward(x[:, :1], gy)
    assert same(before, snapshot(m))


def test_embedding_answers_a_list_of_steps_with_a_list():
    """As every module: a list of T (B,) id arrays in, a list of T (B, E) arrays out (a flat
    list of ids is one array of ids, and answered with one array)."""
    ids = np.random.default_rng(4).integers(0, 5, (4, 3))
    e = Embedding(5, 2)
    out = e.forward(list(ids))
    assert isinstance(out, list) and len(out) == 4
    np.testing.assert_array_equal(np.stack(out), e.forward(ids))
    assert isinstance(e.forward([1, 2, 3]), np.ndarray)
    chain = rnncore.Sequential(Embedding(5, 2), rnncore.LSTM(2, 3))
    assert isinstance(chain.forward(list(ids)), list)


def test_astype_to_the_dtype_already_held_changes_nothing():
    # no new arrays (a tie or a held reference stays the weight), the saved forward is kept
    from rnncore import LSTM, Sequential
    a, b = Linear(3, 3), Linear(3, 3)
    b.weight.data = a.weight.data                                     # a tie
    m = Sequential(a, Tanh(), b, LSTM(3, 2))
    held = m[3].parameters()[0].data
    x = np.ones((2, 1, 3), np.float32)
    y = m.forward(x)
    assert m.astype(np.float32) is m
    assert a.weight.data is b.weight.data and m[3].parameters()[0].data is held
    m.backward(x, np.ones_like(y))                                    # no "forward first"
    m.astype(np.float64)
    assert m[3].parameters()[0].data.dtype == np.float64 and m[3].parameters()[0].data is not held


def test_from_pretrained_draws_nothing_from_the_seeded_stream():
    rnncore.manual_seed(3)
    first = Linear(4, 4).weight.data.copy()
    rnncore.manual_seed(3)
    table = np.arange(12.0).reshape(4, 3)
    emb = Embedding.from_pretrained(table)
    np.testing.assert_array_equal(Linear(4, 4).weight.data, first)
    table[0, 0] = 99                                                  # a copy, not the caller's
    assert emb.weight.data[0, 0] == 0 and emb.freeze
    emb64 = Embedding.from_pretrained(table, freeze=False, dtype=np.float64)
    table[0, 1] = 99
    assert emb64.weight.data[0, 1] == 1 and not emb64.freeze


def test_from_pretrained_on_a_subclass_with_its_own_initialisation_keeps_the_table():
    class Scaled(Embedding):
        def __init__(self, num_embeddings, embedding_dim, freeze=False, dtype=np.float32):
            super().__init__(num_embeddings, embedding_dim, freeze=freeze, dtype=dtype)
            self.weight.data[...] *= 0.1

    rnncore.manual_seed(4)
    first = Linear(3, 3).weight.data.copy()
    rnncore.manual_seed(4)
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    e = Scaled.from_pretrained(table)
    assert type(e) is Scaled and np.array_equal(e.weight.data, table)
    np.testing.assert_array_equal(Linear(3, 3).weight.data, first)   # the stream untouched
