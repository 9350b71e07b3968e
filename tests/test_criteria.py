"""Criteria: values and gradients against PyTorch (float64), gradients against central
differences, and SequencerCriterion's sum over steps with and without lengths."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _torch import F, torch  # noqa: E402

import rnncore  # noqa: E402
from rnncore import (BCECriterion, ClassNLLCriterion, CrossEntropyCriterion,  # noqa: E402
                     MSECriterion, SequencerCriterion)
from _numeric import numeric_grad, rel_err  # noqa: E402


def log_probs(rng, shape):
    z = rng.standard_normal(shape)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def make_case(name, rng, shape):
    """(criterion, input, target, torch loss function) for a (N, C)-like shape."""
    N, C = shape
    if name == "mse":
        return MSECriterion(), rng.standard_normal(shape), rng.standard_normal(shape), F.mse_loss
    if name == "nll":
        return ClassNLLCriterion(), log_probs(rng, shape), rng.integers(0, C, N), F.nll_loss
    if name == "ce":
        return CrossEntropyCriterion(), rng.standard_normal(shape) * 3, rng.integers(0, C, N), F.cross_entropy
    if name == "bce":
        return (BCECriterion(), rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape),
                F.binary_cross_entropy)
    raise AssertionError(name)


NAMES = ["mse", "nll", "ce", "bce"]


@pytest.mark.parametrize("name", NAMES)
@given(N=st.integers(1, 4), C=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_criterion_matches_torch_and_central_differences(name, N, C, seed):
    rng = np.random.default_rng(seed)
    c, x, t, f = make_case(name, rng, (N, C))
    xt = torch.tensor(x, requires_grad=True)
    lt = f(xt, torch.tensor(t))
    lt.backward()
    loss = c.forward(x, t)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, lt.item(), rtol=1e-12, atol=1e-15)
    g = c.backward(x, t)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    assert rel_err(g, numeric_grad(lambda: c.forward(x, t), x)) < 1e-6
    assert c(x, t) == loss


def test_bce_clamps_like_torch():
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    t = np.array([0.0, 1.0, 1.0, 0.0, 0.3])
    pt = torch.tensor(p, requires_grad=True)
    lt = F.binary_cross_entropy(pt, torch.tensor(t))
    lt.backward()
    c = BCECriterion()
    np.testing.assert_allclose(c.forward(p, t), lt.item(), rtol=1e-12)   # log clamped at -100
    # denominators clamped at 1e-12 (PyTorch's constant is float32(1e-12): 4e-9 apart)
    np.testing.assert_allclose(c.backward(p, t), pt.grad.numpy(), rtol=1e-8)
    assert np.isfinite(c.backward(p, t)).all()
    # the same through SequencerCriterion, whose all-steps path has its own clamps: per step
    # torch's batch mean, summed over the steps (a clamp at -200 there passed the suite)
    P = np.stack([p, p[::-1], np.full(5, 0.25)])[:, :, None]             # (T, B, 1)
    Tg = np.stack([t, t[::-1], np.array([0.0, 1.0, 1.0, 0.0, 0.5])])[:, :, None]
    Pt = torch.tensor(P, requires_grad=True)
    total = sum(F.binary_cross_entropy(Pt[s], torch.tensor(Tg[s])) for s in range(3))
    total.backward()
    s = SequencerCriterion(BCECriterion())
    np.testing.assert_allclose(s.forward(P, Tg), total.item(), rtol=1e-12)
    np.testing.assert_allclose(s.backward(P, Tg), Pt.grad.numpy(), rtol=1e-8)


def test_cross_entropy_is_logsoftmax_then_nll():
    rng = np.random.default_rng(0)
    z, t = rng.standard_normal((5, 4)) * 50, rng.integers(0, 4, 5)       # large logits: stable
    lsm = rnncore.LogSoftMax(dtype=np.float64)
    nll = ClassNLLCriterion()
    logp = lsm.forward(z)
    np.testing.assert_allclose(CrossEntropyCriterion().forward(z, t), nll.forward(logp, t), rtol=1e-12)
    np.testing.assert_allclose(CrossEntropyCriterion().backward(z, t),
                               lsm.backward(z, nll.backward(logp, t)), rtol=1e-10, atol=1e-15)
    # logits whose exp overflows without the max taken out first (|z| <= 116 above did not:
    # a shift by the mean passed); against PyTorch
    big = np.array([[1000.0, 0.0, -1000.0], [-800.0, 900.0, 5.0]])
    tb = np.array([1, 1])
    ours = CrossEntropyCriterion().forward(big, tb)
    theirs = F.cross_entropy(torch.from_numpy(big), torch.from_numpy(tb)).item()
    assert np.isfinite(ours) and ours == pytest.approx(theirs, rel=1e-12)
    zt = torch.from_numpy(big.copy()).requires_grad_(True)
    F.cross_entropy(zt, torch.from_numpy(tb)).backward()
    np.testing.assert_allclose(CrossEntropyCriterion().backward(big, tb), zt.grad.numpy(),
                               rtol=1e-12, atol=1e-300)


def test_grad_dtype_follows_the_input():
    x = np.zeros((2, 3), dtype=np.float32)
    assert MSECriterion().backward(x, np.ones((2, 3))).dtype == np.float32
    assert ClassNLLCriterion().backward(x, np.array([0, 2])).dtype == np.float32
    assert MSECriterion().backward(x.astype(np.float64), np.ones((2, 3))).dtype == np.float64


# -- SequencerCriterion ------------------------------------------------------------------------
def test_other_float_dtypes_are_computed_in_float64():
    """float16 and longdouble inputs or targets: the float64 numbers, not a compiler error."""
    rng = np.random.default_rng(0)
    y, t = rng.uniform(0.1, 0.9, (3, 4)), rng.uniform(0, 1, (3, 4))
    for dt in (np.float16, np.longdouble):
        y2, t2 = y.astype(dt), t.astype(dt)
        for c in (MSECriterion(), BCECriterion()):
            assert c.forward(y2, t2) == pytest.approx(c.forward(y2.astype(np.float64),
                                                                t2.astype(np.float64)), rel=1e-12)
            assert c.backward(y2, t2).dtype == np.float64
        ids = np.array([0, 3, 1])
        assert ClassNLLCriterion().forward(np.log(y2 / y2.sum(1, keepdims=True)), ids) == \
            pytest.approx(ClassNLLCriterion().forward(np.log(y / y.sum(1, keepdims=True)).astype(dt)
                                                      .astype(np.float64), ids), rel=1e-12)
        seq = SequencerCriterion(MSECriterion())
        assert seq.forward(y2[:, :, None], t[:, :, None]) == pytest.approx(
            seq.forward(y2[:, :, None].astype(np.float64), t[:, :, None]), rel=1e-12)


def test_sequencer_criterion_never_reads_padding_targets():
    """NaN targets at padding steps (a common way to pad) are fine; at a valid step, an error."""
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 2))
    lengths = np.array([3, 1])
    padded = t.copy()
    padded[1:, 1] = np.nan
    for c in (SequencerCriterion(MSECriterion()), SequencerCriterion(BCECriterion())):
        y = 1 / (1 + np.exp(-x))
        assert c.forward(y, padded if isinstance(c.criterion, MSECriterion) else
                         np.where(np.isnan(padded), np.nan, t > 0), lengths) == pytest.approx(
            c.forward(y, t if isinstance(c.criterion, MSECriterion) else (t > 0) * 1.0, lengths))
    g = SequencerCriterion(MSECriterion())
    np.testing.assert_array_equal(g.backward(x, padded, lengths), g.backward(x, t, lengths))
    with pytest.raises(ValueError, match="target"):
        g.forward(x, padded, np.array([3, 2]))                    # step 1 of row 1 is valid


def test_sequencer_criterion_sums_over_steps():
    rng = np.random.default_rng(1)
    T, B, C = 4, 3, 5
    x, t = log_probs(rng, (T, B, C)), rng.integers(0, C, (T, B))
    c = SequencerCriterion(ClassNLLCriterion())
    expect = sum(F.nll_loss(torch.tensor(x[s]), torch.tensor(t[s])).item() for s in range(T))
    np.testing.assert_allclose(c.forward(x, t), expect, rtol=1e-12)
    np.testing.assert_allclose(c.forward(list(x), list(t)), expect, rtol=1e-12)   # Lua tables
    g = c.backward(x, t)
    assert isinstance(g, np.ndarray) and g.shape == x.shape
    gl = c.backward(list(x), list(t))
    assert isinstance(gl, list) and len(gl) == T
    np.testing.assert_array_equal(np.stack(gl), g)
    assert rel_err(g, numeric_grad(lambda: c.forward(x, t), x)) < 1e-6


@given(T=st.integers(1, 4), B=st.integers(1, 4), seed=st.integers(0, 2**16),
       inner=st.sampled_from(["nll", "mse", "ce", "bce"]))
@settings(max_examples=24)
def test_sequencer_criterion_with_lengths(T, B, seed, inner):
    """Step t's inner criterion sees the rows with t < lengths[b]; padding gets zero gradient."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    C = 3
    if inner == "mse":
        crit, x, t = MSECriterion(), rng.standard_normal((T, B, C)), rng.standard_normal((T, B, C))
        f = F.mse_loss
    elif inner == "bce":
        crit, x, t = BCECriterion(), rng.uniform(0.05, 0.95, (T, B, C)), rng.uniform(0, 1, (T, B, C))
        f = F.binary_cross_entropy
    else:
        crit = ClassNLLCriterion() if inner == "nll" else CrossEntropyCriterion()
        f = F.nll_loss if inner == "nll" else F.cross_entropy
        x, t = log_probs(rng, (T, B, C)), rng.integers(0, C, (T, B))
        t[np.arange(T)[:, None] >= lengths] = -1                 # junk at padding: never read
    c = SequencerCriterion(crit)
    xt = torch.tensor(x, requires_grad=True)
    total = 0
    for s in range(T):
        rows = torch.tensor(np.flatnonzero(lengths > s))
        total = total + f(xt[s, rows], torch.tensor(t)[s, rows])
    total.backward()
    np.testing.assert_allclose(c.forward(x, t, lengths=lengths), total.item(), rtol=1e-12)
    g = c.backward(x, t)                                          # reuses forward's lengths
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    assert not g[np.arange(T)[:, None] >= lengths].any()
    np.testing.assert_array_equal(c.backward(x, t, lengths=lengths), g)   # explicit lengths


def test_sequencer_criterion_remembers_the_last_forwards_lengths():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((3, 2, 1)), rng.standard_normal((3, 2, 1))
    c = SequencerCriterion(MSECriterion())
    c.forward(x, t, lengths=np.array([1, 3]))
    assert not c.backward(x, t)[1:, 0].any()
    c.forward(x, t)                                               # a forward without lengths
    assert c.backward(x, t)[1:, 0].all()


def test_sequencer_criterion_trains_a_sequencer_end_to_end():
    """The Lua example, ported: loss goes down under update_parameters."""
    rnncore.manual_seed(0)
    model = rnncore.Sequencer(rnncore.Sequential(rnncore.LSTM(2, 8), rnncore.Linear(8, 3),
                                                 rnncore.LogSoftMax()))
    crit = SequencerCriterion(ClassNLLCriterion())
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((4, 2)).astype(np.float32) for _ in range(5)]   # 5 steps, batch 4
    t = [(s[:, 0] > 0).astype(np.int64) + (s[:, 1] > 0) for s in x]            # classes 0..2
    losses = []
    for _ in range(60):
        y = model.forward(x)
        losses.append(crit.forward(y, t))
        model.zero_grad_parameters()
        model.backward(x, crit.backward(y, t))
        model.update_parameters(0.5)
    assert losses[-1] < 0.1 * losses[0]


@given(T=st.integers(1, 4), B=st.integers(1, 4), seed=st.integers(0, 2**16),
       inner=st.sampled_from(["nll", "mse", "ce", "bce"]), ragged=st.booleans())
@settings(max_examples=25)
def test_sequencer_criterion_all_steps_at_once_equals_step_by_step(T, B, seed, inner, ragged):
    """The vectorized path (inner ``_rows``) gives the per-step loop's numbers, for every inner."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, B) if ragged else None
    C = 3
    if inner in ("mse", "bce"):
        crit = MSECriterion() if inner == "mse" else BCECriterion()
        x = rng.uniform(0.05, 0.95, (T, B, C))
        t = rng.uniform(0, 1, (T, B, C))
    else:
        crit = ClassNLLCriterion() if inner == "nll" else CrossEntropyCriterion()
        x, t = log_probs(rng, (T, B, C)), rng.integers(0, C, (T, B))
    c = SequencerCriterion(crit)
    loss, grad = c._all_steps(x, t, lengths)
    loss_ref, grad_ref = c._per_step(x, t, lengths)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-12, atol=1e-15)


def test_sequencer_criterion_falls_back_to_steps_for_a_criterion_without_rows():
    class Half(MSECriterion):                 # a user's criterion: its own loss, no _rows
        def _loss(self, x, t):
            return 0.5 * super()._loss(x, t)

        def _grad(self, x, t):
            return 0.5 * super()._grad(x, t)

    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 2))
    lengths = np.array([3, 1])
    full, half = SequencerCriterion(MSECriterion()), SequencerCriterion(Half())
    np.testing.assert_allclose(half.forward(x, t, lengths), 0.5 * full.forward(x, t, lengths))
    np.testing.assert_allclose(half.backward(x, t), 0.5 * full.backward(x, t))


def test_sequencer_criterion_backward_after_forward_on_the_same_values():
    """backward after forward on equal inputs answers with forward's gradient (kept, not scored
    again); changed values, in place or new, get their own gradient or their own error."""
    rng = np.random.default_rng(0)
    x, t = log_probs(rng, (4, 3, 5)).astype(np.float32), rng.integers(0, 5, (4, 3))
    c, fresh = SequencerCriterion(ClassNLLCriterion()), SequencerCriterion(ClassNLLCriterion())
    c.forward(x, t)
    g = c.backward(x, t)
    np.testing.assert_array_equal(g, fresh.backward(x, t))
    g[...] = 7                                                   # the caller's copy
    np.testing.assert_array_equal(c.backward(x.copy(), t.copy()), fresh.backward(x, t))
    x[0, 0, t[0, 0]] -= 1.0                                      # changed in place after forward
    np.testing.assert_array_equal(c.backward(x, t), fresh.backward(x, t))
    t[1, 2] = (t[1, 2] + 1) % 5
    np.testing.assert_array_equal(c.backward(x, t), fresh.backward(x, t))
    np.testing.assert_array_equal(c.backward(x.astype(np.float64), t),
                                  fresh.backward(x.astype(np.float64), t))
    c.forward(x, t)
    x[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match="input"):
        c.backward(x, t)
    x[2, 1, 0] = -1.0
    c.forward(x[:, :2], t[:, :2])
    with pytest.raises(ValueError, match="target"):
        c.backward(x[:, :2], np.full((4, 2), 5))


def test_sequencer_criterion_checks_a_new_inner_criterion_and_forgets_the_kept_gradient():
    """``criterion`` was a plain attribute: after ``s.criterion = CrossEntropyCriterion()`` a
    backward on the forward's values handed back the kept NLL gradient (0.29 off), and a
    non-criterion failed in the next forward with an AttributeError."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((3, 2, 4)), rng.integers(0, 4, (3, 2))
    s = SequencerCriterion(ClassNLLCriterion())
    s.forward(x, t)
    s.criterion = CrossEntropyCriterion()
    np.testing.assert_array_equal(s.backward(x, t),
                                  SequencerCriterion(CrossEntropyCriterion()).backward(x, t))
    with pytest.raises(TypeError, match="criterion: expected a rnncore Criterion, got ufunc"):
        s.criterion = np.tanh
    assert type(s.criterion) is CrossEntropyCriterion


@pytest.mark.parametrize("inner", ["nll", "mse", "ce", "bce"])
@pytest.mark.parametrize("ragged", [False, True])
def test_sequencer_criterion_kept_gradient_for_every_inner(inner, ragged):
    """The gradient a forward keeps is the one backward computes from scratch, for every inner
    criterion with a per-row form, with and without lengths."""
    rng = np.random.default_rng(1)
    T, B, C = 4, 3, 5
    lengths = np.array([4, 1, 3]) if ragged else None
    if inner in ("mse", "bce"):
        make = MSECriterion if inner == "mse" else BCECriterion
        x, t = rng.uniform(0.05, 0.95, (T, B, C)), rng.uniform(0, 1, (T, B, C))
    else:
        make = ClassNLLCriterion if inner == "nll" else CrossEntropyCriterion
        x, t = log_probs(rng, (T, B, C)), rng.integers(0, C, (T, B))
    c, fresh = SequencerCriterion(make()), SequencerCriterion(make())
    loss = c.forward(x, t, lengths)
    assert c._kept is not None                                    # the kept path is the one tested
    g = c.backward(x, t)
    np.testing.assert_array_equal(g, fresh.backward(x, t, lengths))
    assert loss == fresh.forward(x, t, lengths)
    assert rel_err(g, numeric_grad(lambda: fresh.forward(x, t, lengths), x)) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequencer_criterion_nll_one_pass_equals_the_rows_path(dtype):
    """A plain ClassNLLCriterion inside SequencerCriterion is scored in one compiled pass; a
    subclass takes the general per-row path: same loss, same gradient, same errors."""
    class Subclassed(ClassNLLCriterion):
        pass

    rng = np.random.default_rng(2)
    T, B, C = 5, 3, 4
    x, t = log_probs(rng, (T, B, C)).astype(dtype), rng.integers(0, C, (T, B))
    fast, general = SequencerCriterion(ClassNLLCriterion()), SequencerCriterion(Subclassed())
    np.testing.assert_allclose(fast.forward(x, t), general.forward(x, t), rtol=1e-13)
    g_fast, g_general = fast.backward(x.copy(), t), general.backward(x.copy(), t)
    assert g_fast.dtype == g_general.dtype == dtype and g_fast.shape == x.shape
    np.testing.assert_array_equal(g_fast, g_general)
    for bad in (C, -1):
        t_bad = t.copy()
        t_bad[T - 1, B - 1] = bad
        with pytest.raises(ValueError, match=r"target: expected class ids in \[0, 3\]"):
            fast.forward(x, t_bad)
    with pytest.raises(TypeError, match="target"):
        fast.forward(x, t.astype(np.float64) + 0.5)


# -- refusals of SequencerCriterion: the caller's shapes, nothing changed -----------------------
@pytest.mark.parametrize("inner, x_shape, t_shape, lengths, match", [
    (MSECriterion, (3, 2, 2), (3, 2, 3), None, r"target: expected shape \(6, 2\), got \(6, 3\) "
     r"\(the \(T, B\) steps of input \(3, 2, 2\) and target \(3, 2, 3\) as T\*B rows\)"),
    (MSECriterion, (3, 2, 2), (3, 2, 3), [3, 1], r"input \(3, 2, 2\) and target \(3, 2, 3\) as "
     r"T\*B rows, valid steps only\)"),
    (ClassNLLCriterion, (3, 2, 4, 1), (3, 2), None, r"got shape \(6, 4, 1\) \(the \(T, B\) "
     r"steps of input \(3, 2, 4, 1\) and target \(3, 2\)"),
    (ClassNLLCriterion, (3, 2, 4), (3, 2, 1), [2, 3], r"input \(3, 2, 4\) and target \(3, 2, 1\)"),
])
def test_sequencer_criterion_refusals_name_the_callers_shapes(inner, x_shape, t_shape, lengths,
                                                              match):
    """The inner criterion sees the steps as T*B rows; its message gave only those shapes."""
    c = SequencerCriterion(inner())
    t = np.zeros(t_shape, int if inner is ClassNLLCriterion else float)
    lengths = None if lengths is None else np.array(lengths)
    with pytest.raises(ValueError, match=match):
        c.forward(np.full(x_shape, -1.0), t, lengths=lengths)
    assert c.output is None


def test_sequencer_criterion_backward_says_whose_lengths_it_refuses():
    c = SequencerCriterion(ClassNLLCriterion())
    c.forward(np.full((3, 5, 4), -1.0), np.zeros((3, 5), int), lengths=np.array([3, 1, 2, 3, 3]))
    with pytest.raises(ValueError, match=r"^lengths \(of the last forward, which backward reuses "
                                         r"when given none\): expected shape \(2,\)"):
        c.backward(np.full((3, 2, 4), -1.0), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"^lengths: expected shape \(2,\)"):    # the caller's
        c.backward(np.full((3, 2, 4), -1.0), np.zeros((3, 2), int), lengths=np.array([1, 2, 3]))


def test_sequencer_criterion_refused_step_leaves_its_inner_criterion_as_it_was():
    """Step by step (an inner criterion without a per-row form), a refusal at step 2 had left
    the inner criterion's ``output`` from steps 0 and 1."""
    class L1(MSECriterion):
        def _loss(self, x, t):
            return float(np.mean(np.abs(x - t)))

        def _grad(self, x, t):
            return np.sign(x - t) / x.size

    inner = L1()
    c = SequencerCriterion(inner)
    x, t = np.zeros((3, 2, 1)), np.ones((3, 2, 1))
    assert c.forward(x, t) == 3.0 and inner.output == 1.0
    t[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"target: expected finite values.*\(at step 2 of input "
                                         r"\(3, 2, 1\), target \(3, 2, 1\)\)"):
        c.forward(x + 0.5, t, lengths=np.array([3, 3]))
    assert inner.output == 1.0 and c.output == 3.0


def test_sequencer_criterion_passes_a_criterions_own_exceptions_as_they_are():
    """Only rnncore's plain ValueError / TypeError get the step added to their message; an
    exception class of one's own (here one whose constructor takes two arguments) arrives as
    raised, and the inner criterion is left as it was either way."""
    class Refusal(ValueError):
        def __init__(self, what, why):
            super().__init__(f"{what}: {why}")

    class Picky(MSECriterion):
        def _loss(self, x, t):
            if (t > 5).any():
                raise Refusal("target", "too large")
            return super()._loss(x, t)

    inner = Picky()
    c = SequencerCriterion(inner)
    t = np.zeros((3, 2, 1))
    c.forward(np.zeros((3, 2, 1)), t)
    kept = inner.output
    t[1, 0, 0] = 9
    with pytest.raises(Refusal, match="^target: too large$"):
        c.forward(np.zeros((3, 2, 1)), t)
    assert inner.output == kept


def test_padding_targets_are_not_read_in_the_list_form_either():
    """A SequencerCriterion never reads padding targets: NaN there is fine as an array AND as
    a list of steps (the list had been checked step by step, padding included, and refused);
    without lengths every target is read, and NaN is refused either way."""
    rng = np.random.default_rng(3)
    T, B = 3, 4
    x = rng.standard_normal((T, B, 2))
    t = rng.standard_normal((T, B, 2))
    lengths = np.array([3, 1, 2, 3])
    t[1:, 1] = np.nan                                         # padding of sequence 1
    t[2, 2] = np.nan                                          # padding of sequence 2
    crit = SequencerCriterion(MSECriterion())
    as_array = crit.forward(x, t, lengths)
    assert np.isfinite(as_array)
    assert crit.forward(x, list(t), lengths) == as_array
    np.testing.assert_array_equal(crit.backward(x, list(t), lengths), crit.backward(x, t, lengths))
    for target in (t, list(t)):
        with pytest.raises(ValueError, match="target: expected finite values"):
            crit.forward(x, target)
    with pytest.raises(TypeError, match=r"target\[0\]: expected a real-valued array"):
        crit.forward(x, [np.array(["a"] * B)] * T, lengths)


def test_sequencer_criterion_scores_through_a_forward_replaced_on_the_object():
    inner = MSECriterion()
    inner.forward = lambda y, t, lengths=None: 99.0
    x, t = np.ones((3, 2, 4), np.float32), np.zeros((3, 2, 4))
    assert SequencerCriterion(inner).forward(x, t) == pytest.approx(3 * 99.0)


@pytest.mark.parametrize("lengths", [None, np.array([1])])
def test_sequencer_criterion_forward_is_silent_where_its_kept_gradient_overflows(lengths):
    """The loss of a float32 input at 3e38 is finite (3.6e77, in float64); the gradient kept for
    backward overflows float32. The forward had warned ("overflow encountered in cast", an
    error under -W error) where MSECriterion's is silent; the backward refuses the Inf."""
    import warnings

    x = np.full((2, 1, 1), 3e38, np.float32)
    t = -x.astype(np.float64)
    crit = rnncore.SequencerCriterion(MSECriterion())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = crit.forward(x, t, lengths=lengths)
    assert np.isfinite(loss) and loss > 1e77
    with pytest.raises(ValueError, match=r"^input, target: expected values for which the "
                                         r"gradient is finite in float32"):
        crit.backward(x, t, lengths=lengths)
