"""rnncore.optim against torch.optim in float64: the same gradients fed to both for several
steps must give the same parameters (momentum buffers, Adam's bias correction and all)."""

import numpy as np
import pytest

from _torch import torch  # noqa: E402

import rnncore  # noqa: E402
from rnncore import optim  # noqa: E402
from rnncore.module import Parameter  # noqa: E402

SHAPES = [(3, 4), (4,), (2, 2, 2)]
CASES = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum_wd": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
                        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
    "sgd_momentum": (lambda p: optim.SGD(p, lr=0.05, momentum=0.8),             # (each option
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8)),      # alone too)
    "sgd_wd": (lambda p: optim.SGD(p, lr=0.1, weight_decay=0.3),
               lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.3)),
    "adam": (lambda p: optim.Adam(p), lambda p: torch.optim.Adam(p)),
    "adam_custom": (lambda p: optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
                    lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    "rmsprop": (lambda p: optim.RMSprop(p, lr=0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
    "rmsprop_alpha": (lambda p: optim.RMSprop(p, lr=0.03, alpha=0.9, eps=1e-6),
                      lambda p: torch.optim.RMSprop(p, lr=0.03, alpha=0.9, eps=1e-6)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_optim(name):
    ours_f, theirs_f = CASES[name]
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in SHAPES]
    ps = [Parameter(a.copy(), f"p{i}") for i, a in enumerate(init)]
    frozen = Parameter(rng.standard_normal(3), "frozen", requires_grad=False)
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt, topt = ours_f(ps + [frozen]), theirs_f(tps)
    frozen_before = frozen.data.copy()
    for _ in range(6):
        opt.zero_grad()
        topt.zero_grad()
        for p, tp in zip(ps, tps):
            g = rng.standard_normal(p.data.shape)
            p.grad += g
            tp.grad = torch.tensor(g)
        frozen.grad += 1.0
        opt.step()
        topt.step()
        for p, tp in zip(ps, tps):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert np.array_equal(frozen.data, frozen_before)               # requires_grad=False: skipped
    assert not np.allclose(ps[0].data, init[0])


def test_plain_sgd_rounds_lr_in_each_parameters_own_dtype():
    """Parameters of two dtypes in one plain SGD: each takes lr in its own dtype (float32's
    0.1 is not float64's), as NumPy's ``w -= dtype(lr) * g`` would, whichever comes first."""
    rng = np.random.default_rng(4)
    for order in ((np.float32, np.float64), (np.float64, np.float32)):
        ws = [rng.standard_normal((3, 5)).astype(d) for d in order]
        gs = [rng.standard_normal((3, 5)).astype(d) for d in order]
        ps = [Parameter(w.copy(), f"p{i}") for i, w in enumerate(ws)]
        for p, g in zip(ps, gs):
            p.grad[...] = g
        optim.SGD(ps, lr=0.1).step()
        for p, w, g, d in zip(ps, ws, gs, order):
            expect = w.copy()
            expect -= d(0.1) * g
            assert p.data.dtype == d
            np.testing.assert_array_equal(p.data, expect)


def test_step_updates_data_in_place_and_keeps_dtype():
    rnncore.manual_seed(0)
    m = rnncore.Linear(3, 2)                                       # float32
    w = m.weight.data
    opt = optim.Adam(m.parameters(), lr=0.1)
    m.weight.grad[...] = 1.0
    opt.step()
    assert m.weight.data is w and w.dtype == np.float32            # the same array, updated
    assert m.bias.data.dtype == np.float32
    opt.zero_grad()
    assert not m.weight.grad.any() and not m.bias.grad.any()


@pytest.mark.parametrize("factor", [0.16, 0.5, 0.99, 1.01, 2.0, 32.0])
def test_clip_grad_norm_matches_torch(factor):
    """max_norm as a multiple of the grads' norm, on both sides of 1 and close to it (at 0.16
    and 32 only, a clipper that scaled grads below the limit up, or began 5x over, passed)."""
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s) for s in SHAPES]
    max_norm = factor * float(np.sqrt(sum((g ** 2).sum() for g in grads)))
    ps = [Parameter(np.zeros(s), f"p{i}") for i, s in enumerate(SHAPES)]
    for p, g in zip(ps, grads):
        p.grad[...] = g
    tps = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for tp, g in zip(tps, grads):
        tp.grad = torch.tensor(g)
    norm = optim.clip_grad_norm(ps, max_norm)
    tnorm = torch.nn.utils.clip_grad_norm_(tps, max_norm)
    assert isinstance(norm, float)
    np.testing.assert_allclose(norm, tnorm.item(), rtol=1e-12)
    np.testing.assert_allclose(norm, np.sqrt(sum((g ** 2).sum() for g in grads)), rtol=1e-12)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
    after = np.sqrt(sum((p.grad ** 2).sum() for p in ps))
    assert after <= max_norm * (1 + 1e-9)
    if max_norm > norm:
        for p, g in zip(ps, grads):
            np.testing.assert_array_equal(p.grad, g)               # under the limit: untouched


def test_clip_grad_norm_ignores_frozen_params():
    a = Parameter(np.zeros(2), "a")
    b = Parameter(np.zeros(2), "b", requires_grad=False)
    a.grad[...] = [3.0, 4.0]
    b.grad[...] = [100.0, 100.0]
    assert optim.clip_grad_norm([a, b], 1.0) == 5.0
    np.testing.assert_allclose(a.grad, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(b.grad, [100.0, 100.0])


def test_optimizers_train_a_model():
    """A small regression with each optimizer: the loss drops well below its start."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    crit = rnncore.MSECriterion()
    for make in (lambda p: optim.SGD(p, lr=0.1, momentum=0.5), lambda p: optim.Adam(p, lr=0.05),
                 lambda p: optim.RMSprop(p, lr=0.01)):
        rnncore.manual_seed(0)
        m = rnncore.Linear(3, 1, dtype=np.float64)
        opt = make(m.parameters())
        losses = []
        for _ in range(100):
            out = m.forward(x)
            losses.append(crit.forward(out, y))
            opt.zero_grad()
            m.backward(x, crit.backward(out, y))
            opt.step()
        assert losses[-1] < 0.05 * losses[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_sgd_compiled_update_is_numpys_rule(dtype):
    """Plain SGD updates through flat views of data and grad: the same numbers as NumPy's
    ``w -= lr * g`` in the parameter's dtype, in place; new arrays (data or grad replaced, or a
    non-contiguous data array) are followed, not the old views."""
    rng = np.random.default_rng(3)
    w0, g0 = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((5, 7)).astype(dtype)
    p = Parameter(w0.copy(), "w")
    opt = optim.SGD([p], lr=0.3)
    w = p.data
    p.grad[...] = g0
    opt.step()
    expect = w0.copy()
    expect -= dtype(0.3) * g0
    assert p.data is w and w.dtype == dtype
    np.testing.assert_array_equal(w, expect)
    version = p.version
    opt.step()                                                   # the same arrays again
    expect -= dtype(0.3) * g0
    np.testing.assert_array_equal(p.data, expect)
    assert p.version > version                                   # a write counts as a change
    p.grad = np.full((5, 7), 2.0, dtype)                         # a new grad array
    opt.step()
    expect -= dtype(0.3) * dtype(2.0)
    np.testing.assert_array_equal(p.data, expect)
    big = np.zeros((5, 14), dtype)
    big[:, ::2] = expect
    p.data = big[:, ::2]                                         # non-contiguous data
    opt.step()
    expect -= dtype(0.3) * dtype(2.0)
    np.testing.assert_array_equal(big[:, ::2], expect)
    assert not big[:, 1::2].any()


def test_sgd_subclass_with_its_own_update_rule_is_used():
    """The compiled plain-SGD loop must not bypass a subclass's ``_update``."""
    class HalfStep(optim.SGD):
        def _update(self, p, state):
            p.data[...] -= 0.5 * self.lr * p.grad

    p = Parameter(np.ones(4), "w")
    opt = HalfStep([p], lr=1.0)
    p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(p.data, np.full(4, 0.5))


# -- refusals and dtype changes ---------------------------------------------------------------
MAKERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda p: optim.Adam(p, lr=0.01),
    "rmsprop": lambda p: optim.RMSprop(p, lr=0.01),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_parameter_listed_twice_is_refused(name):
    w = Parameter(np.ones(3), "w")
    b = Parameter(np.ones(2), "b")
    with pytest.raises(ValueError, match=r"params: expected each Parameter once, got 'w' at "
                                         r"\[0\] and \[2\]"):
        MAKERS[name]([w, b, w])
    # A model using one module twice lists its parameters once (Module.named_parameters).
    lin = rnncore.Linear(3, 3, dtype=np.float64)
    m = rnncore.Sequential(lin, rnncore.Tanh(dtype=np.float64), lin)
    opt = MAKERS[name](m.parameters())
    before = lin.weight.data.copy()
    lin.weight.grad[...] = 1.0
    opt.step()
    single = MAKERS[name]([Parameter(before.copy(), "w")])
    single.params[0].grad[...] = 1.0
    single.step()
    np.testing.assert_array_equal(lin.weight.data, single.params[0].data)   # one step, not two


def test_clip_grad_norm_counts_a_parameter_listed_twice_once():
    a = Parameter(np.zeros(2), "a")
    a.grad[...] = [3.0, 4.0]
    assert optim.clip_grad_norm([a, a], 1.0) == 5.0
    np.testing.assert_allclose(a.grad, [0.6, 0.8], rtol=1e-6)         # scaled once


@pytest.mark.parametrize("name", ["sgd_momentum", "adam", "rmsprop"])
@pytest.mark.parametrize("old, new", [(np.float32, np.float64), (np.float64, np.float32)])
def test_state_follows_the_parameters_dtype(name, old, new):
    """After ``model.astype`` the next step converts the state (momentum buffer, moments) to
    the parameters' new dtype: the update is then the one an optimizer built in that dtype,
    with the same state, makes. Without it a float32 state would round every float64 step."""
    rng = np.random.default_rng(2)
    rnncore.manual_seed(0)
    m = rnncore.Linear(4, 3, dtype=old)
    opt = MAKERS[name](m.parameters())
    for _ in range(3):
        for p in m.parameters():
            p.grad[...] = rng.standard_normal(p.grad.shape)
        opt.step()
    m.astype(new)
    twin = [Parameter(p.data.copy(), p.name) for p in m.parameters()]
    ref = MAKERS[name](twin)
    ref.state = [{k: (v.astype(new) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                 for s in opt.state]
    for p, q in zip(m.parameters(), twin):
        p.grad[...] = q.grad[...] = rng.standard_normal(p.grad.shape)
    opt.step()
    ref.step()
    for s in opt.state:
        assert all(v.dtype == np.dtype(new) for v in s.values() if isinstance(v, np.ndarray))
    for p, q in zip(m.parameters(), twin):
        assert p.data.dtype == np.dtype(new)
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_learning_rate_set_later_is_checked_too(name):
    """opt.lr = ... between steps (a schedule) is checked as at construction; the step keeps
    using the last good value."""
    rnncore.manual_seed(0)
    opt = MAKERS[name](rnncore.Linear(3, 2).parameters())     # float32
    good = opt.lr
    opt.lr *= 0.5
    assert opt.lr == good * 0.5
    for bad, exc in [(-0.1, ValueError), (0.0, ValueError), (1e39, ValueError), ("0.1", TypeError),
                     (float("nan"), ValueError)]:
        with pytest.raises(exc, match="^lr: expected"):
            opt.lr = bad
        assert opt.lr == good * 0.5


@pytest.mark.parametrize("make, name", [
    (lambda p: optim.SGD(p, lr=1e39), "lr"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=1e39), "weight_decay"),
    (lambda p: optim.Adam(p, lr=1e39), "lr"),
    (lambda p: optim.RMSprop(p, lr=1e39), "lr"),
    (lambda p: optim.Adam(p, eps=1e-50), "eps"),
    (lambda p: optim.RMSprop(p, lr=0.1, eps=1e-50), "eps"),
    # 1e38 fits float32, but Adam's first step size lr / (1 - b1) = 1e39 does not
    (lambda p: optim.Adam(p, lr=1e38), r"lr / \(1 - betas\[0\]\)"),
    (lambda p: optim.Adam(p, lr=1e37, betas=(0.99, 0.999)), r"lr / \(1 - betas\[0\]\)"),
])
def test_numbers_that_do_not_fit_the_dtype_are_refused(make, name):
    """lr = 1e39 is inf in float32 (inf * 0 = NaN weights); eps = 1e-50 is 0 (0 / 0 = NaN
    for a zero gradient). Refused when built over float32 parameters, and, for an optimizer
    built over float64 ones, by the first step after ``astype(float32)``, before any update."""
    rnncore.manual_seed(0)
    m = rnncore.Linear(3, 2)
    with pytest.raises(ValueError, match=rf"{name}: expected a number that is .* float32"):
        make(m.parameters())
    m.astype(np.float64)
    opt = make(m.parameters())                                   # fine in float64
    opt.step()
    m.astype(np.float32)
    before = [p.data.copy() for p in m.parameters()]
    for p in m.parameters():
        p.grad[...] = 1.0
    with pytest.raises(ValueError, match=rf"{name}: expected a number that is .* float32"):
        opt.step()
    assert all(np.array_equal(p.data, b) for p, b in zip(m.parameters(), before))


def test_hyperparameters_set_between_steps_are_checked_as_at_construction():
    """eps = 1e-50 is 0 in float32 (NaN weights at the first zero gradient), weight_decay =
    1e40 inf (NaN weights), momentum = 2 diverges: each refused where it is set, the old value
    kept; a valid new value is taken."""
    lin = rnncore.Linear(3, 2)
    adam = optim.Adam(lin.parameters())
    sgd = optim.SGD(lin.parameters(), lr=0.1, momentum=0.5)
    rms = optim.RMSprop(lin.parameters(), lr=0.1)
    for opt, name, value, exc, match in [
            (adam, "eps", 1e-50, ValueError, "eps: expected a number that is not 0 in .*float32"),
            (adam, "eps", -1.0, ValueError, "eps: expected a finite number > 0"),
            (adam, "betas", (0.9, 1.5), ValueError, r"betas\[1\]: expected a number in \[0, 1\)"),
            (adam, "betas", 0.9, TypeError, "betas: expected a pair"),
            (sgd, "weight_decay", 1e40, ValueError, "weight_decay: expected a number that is "
                                                    "finite in .*float32"),
            (sgd, "momentum", 2.0, ValueError, r"momentum: expected a number in \[0, 1\)"),
            (rms, "alpha", "0.9", TypeError, r"alpha: expected a number in \[0, 1\)"),
            (rms, "eps", float("nan"), ValueError, "eps: expected a finite number > 0")]:
        before = getattr(opt, name)
        with pytest.raises(exc, match=match):
            setattr(opt, name, value)
        assert getattr(opt, name) == before
    adam.eps, sgd.momentum, rms.alpha = 1e-6, 0.9, 0.5
    assert (adam.eps, sgd.momentum, rms.alpha) == (1e-6, 0.9, 0.5)
    adam64 = optim.Adam(rnncore.Linear(3, 2, dtype=np.float64).parameters())
    adam64.eps = 1e-50                                        # not 0 in float64
    assert adam64.eps == 1e-50


def test_clip_grad_norm_measures_with_inf_and_takes_no_parameters():
    """As torch.nn.utils.clip_grad_norm_: max_norm=inf only measures; no parameters: 0.0."""
    lin = rnncore.Linear(3, 2)
    lin.weight.grad[...] = 3.0
    g = lin.weight.grad.copy()
    norm = optim.clip_grad_norm(lin.parameters(), float("inf"))
    assert norm == pytest.approx(np.sqrt(6 * 9.0))
    np.testing.assert_array_equal(lin.weight.grad, g)
    assert optim.clip_grad_norm([], 1.0) == 0.0
    lin.weight.requires_grad = lin.bias.requires_grad = False
    assert optim.clip_grad_norm(lin.parameters(), 1.0) == 0.0
    for bad, exc in ((0.0, ValueError), (float("nan"), ValueError), (-1, ValueError),
                     (None, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="max_norm: expected a number > 0"):
            optim.clip_grad_norm(lin.parameters(), bad)


def test_clip_grad_norm_takes_an_empty_generator_and_old_pickles_load():
    assert optim.clip_grad_norm(iter([]), 1.0) == 0.0
    lin = rnncore.Linear(2, 2)
    lin.weight.grad[...] = 1.0
    assert optim.clip_grad_norm((p for p in lin.parameters()), 10.0) == pytest.approx(2.0)
    sgd = optim.SGD.__new__(optim.SGD)
    assert not hasattr(sgd, "momentum")                       # AttributeError, not KeyError
    sgd.__dict__["momentum"] = 0.5                            # as a pickle from before kept it
    assert sgd.momentum == 0.5
    p = Parameter.__new__(Parameter)                          # slot state with "grad" (before)
    g = np.ones((2, 2), np.float32)
    p.__setstate__((None, {"_data": np.zeros((2, 2), np.float32), "grad": g, "name": "w",
                           "requires_grad": True, "version": 0}))
    assert p.grad is g
    opt = optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    opt.step()                                                # (a momentum buffer to keep)
    kept = opt.__getstate__()
    kept["params"], kept["state"] = list(kept.pop("_params")), kept.pop("_state")   # (before)
    old = optim.SGD.__new__(optim.SGD)
    old.__setstate__(kept)
    assert old.params == tuple(lin.parameters()) and old.state is opt.state
    before = lin.weight.data.copy()
    old.step()                                                # the kept momentum is used
    np.testing.assert_allclose(lin.weight.data, before - 0.1 * (0.9 * 1.0 + 1.0), rtol=1e-6)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_plain_sgd_still_updates_a_copied_model(how):
    # the step's cached flat views must not survive a copy: a copy's would be arrays of their
    # own, and the copied weights would never change
    import copy
    import pickle
    lin = rnncore.Linear(3, 2)
    opt = optim.SGD(lin.parameters(), lr=0.1)
    for p in lin.parameters():
        p.grad[...] = 1.0
    opt.step()                                                # (makes the views)
    lin2, opt2 = (copy.deepcopy((lin, opt)) if how == "deepcopy"
                  else pickle.loads(pickle.dumps((lin, opt))))
    before = [p.data.copy() for p in lin2.parameters()]
    opt2.step()
    for b, p in zip(before, lin2.parameters()):
        np.testing.assert_allclose(p.data, b - np.float32(0.1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameters_tied_to_one_array_update_as_torchs_one_parameter(name):
    # b.weight.data = a.weight.data: one weight; PyTorch's one Parameter used twice gets the
    # sum of the two grads and one update (Adam moved it twice as far before)
    ours_f, theirs_f = CASES[name]
    rng = np.random.default_rng(1)
    a, b = Parameter(rng.standard_normal((3, 4)), "a"), Parameter(np.zeros((3, 4)), "b")
    c = Parameter(rng.standard_normal(4), "c")
    b.data = a.data
    t = torch.nn.Parameter(torch.tensor(a.data.copy()))
    tc = torch.nn.Parameter(torch.tensor(c.data.copy()))
    ours, theirs = ours_f([a, b, c]), theirs_f([t, tc])
    for _ in range(3):
        ga, gb, gc = (rng.standard_normal(s) for s in ((3, 4), (3, 4), 4))
        a.grad[...], b.grad[...], c.grad[...] = ga, gb, gc
        t.grad, tc.grad = torch.tensor(ga + gb), torch.tensor(gc)
        ours.step()
        theirs.step()
        assert a.data is b.data
        np.testing.assert_allclose(a.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c.data, tc.detach().numpy(), rtol=1e-12, atol=1e-14)
    a.grad[...], b.grad[...] = 1.0, 2.0                       # the norm of the summed grad
    assert optim.clip_grad_norm([a, b], np.inf) == pytest.approx(3.0 * np.sqrt(12))


def test_adams_first_step_size_is_checked_when_lr_or_betas_change():
    """lr / (1 - b1^k) is what Adam casts to the parameters' dtype, largest at k = 1: an lr or
    a b1 set later that makes it inf in float32 (NaN weights where a gradient is 0) is refused
    where it is set, and the old value kept."""
    lin = rnncore.Linear(3, 2)
    adam = optim.Adam(lin.parameters(), lr=1e36)
    for name, value in (("lr", 1e38), ("betas", (0.999, 0.999))):
        before = getattr(adam, name)
        with pytest.raises(ValueError, match=r"lr / \(1 - betas\[0\]\): expected a number that "
                                             r"is finite in .*float32"):
            setattr(adam, name, value)
        assert getattr(adam, name) == before
    adam.lr, adam.betas = 3e37, (0.5, 0.999)                  # 6e37: fits
    for p in lin.parameters():
        p.grad[...] = 0.0
    adam.step()
    assert all(np.isfinite(p.data).all() for p in lin.parameters())


def test_a_number_assigned_after_astype_is_checked_in_the_new_dtype():
    lin = rnncore.Linear(2, 2)                                # float32
    opt = optim.SGD(lin.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 1e-46                                        # 0 in float32
    lin.astype(np.float64)
    opt.step()
    opt.lr = 1e-46                                            # not 0 in float64: no float32 now
    assert opt.lr == 1e-46


def test_parameters_holding_different_views_of_one_memory_are_refused():
    a, b = Parameter(np.ones((3, 3)), "a"), Parameter(np.zeros((3, 3)), "b")
    adam, sgd = optim.Adam([a, b]), optim.SGD([a, b], lr=0.1)
    b.data = a.data.T                                         # a tie through a view, made after
    a.grad[...], b.grad[...] = 1.0, np.arange(9.0).reshape(3, 3)
    before = a.data.copy()
    for call in (adam.step, optim.SGD([a, b], lr=0.1, momentum=0.9).step,
                 lambda: optim.clip_grad_norm([a, b], 1.0)):
        with pytest.raises(ValueError, match=r"'a' at \[0\] and 'b' at \[1\] hold different "
                                             r"views of the same memory"):
            call()
        np.testing.assert_array_equal(a.data, before)         # refused before any update
        assert a.grad[0, 0] == 1.0
    sgd.step()                                                # plain SGD: exact, allowed
    np.testing.assert_allclose(a.data, before - 0.1 * (1.0 + np.arange(9.0).reshape(3, 3).T))
    b.requires_grad = False                                   # frozen: nothing updated twice
    optim.Adam([a, b]).step()
    c = Parameter(np.ones(6), "c")
    d, e = Parameter(np.zeros(3), "d"), Parameter(np.zeros(3), "e")
    d.data, e.data = c.data[:3], c.data[3:]                   # views of one base, apart: fine
    optim.Adam([d, e]).step()


def test_astype_keeps_a_tie_one_array():
    from rnncore import Linear, Sequential, Tanh
    a, b = Linear(3, 3), Linear(3, 3)
    b.weight.data = a.weight.data
    m = Sequential(a, Tanh(), b).astype(np.float64)
    assert a.weight.data is b.weight.data and a.weight.data.dtype == np.float64


def test_plain_sgd_reads_a_subclass_lr_property_and_a_norm_leaves_ties_unmarked():
    class Halved(optim.SGD):
        @property
        def lr(self):
            return self._lr / 2

        @lr.setter
        def lr(self, value):
            self._lr = value

    p = Parameter(np.zeros(3), "w")
    p.grad[...] = 1.0
    Halved([p], lr=1.0).step()
    np.testing.assert_array_equal(p.data, -0.5)
    a, b = Parameter(np.ones(2), "a"), Parameter(np.ones(2), "b")
    b.data = a.data
    versions = a.version, b.version
    optim.clip_grad_norm([a, b], np.inf)              # measures only: nothing marked changed
    assert (a.version, b.version) == versions


def test_a_setting_the_optimizer_does_not_have_is_refused():
    # ``adam.weight_decay = 1e-4`` had been kept as an attribute nothing reads: training ran
    # without weight decay, silently. Subclasses may add settings of their own.
    p = [Parameter(np.ones(3), "w")]
    for opt, name, known in ((optim.Adam(p), "weight_decay", "lr, betas, eps"),
                             (optim.SGD(p, lr=0.1), "momentun", "lr, momentum, weight_decay"),
                             (optim.RMSprop(p, lr=0.1), "momentum", "lr, alpha, eps")):
        before = dict(vars(opt))
        with pytest.raises(AttributeError, match=f"has no setting '{name}' "
                                                 f"\\(its settings: {known}\\)"):
            setattr(opt, name, 0.9)
        assert vars(opt).keys() == before.keys()
    sgd = optim.SGD(p, lr=0.1)
    sgd.momentum, sgd.lr = 0.5, 0.2                       # its own settings: accepted
    assert (sgd.momentum, sgd.lr) == (0.5, 0.2)

    class Nesterov(optim.SGD):
        def __init__(self, params, lr, nesterov=True):
            super().__init__(params, lr)
            self.nesterov = nesterov

    assert Nesterov(p, lr=0.1).nesterov is True


def test_params_assigned_later_keep_their_own_state_and_no_one_elses():
    """``opt.params = ...`` left the per-parameter lists as they were: a longer list failed
    with an IndexError at the next step, and a list of new Parameters of the same shapes
    took over the momentum of the ones that had been at their index."""
    rnncore.manual_seed(0)
    a, b = rnncore.Linear(2, 2, dtype=np.float64), rnncore.Linear(2, 2, dtype=np.float64)
    opt = optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    for p in a.parameters():
        p.grad[...] = 1.0
    opt.step()
    opt.params = b.parameters()                                  # same shapes: a new model
    assert all(s == {} for s in opt.state)
    before = [p.data.copy() for p in b.parameters()]
    for p in b.parameters():
        p.grad[...] = 1.0
    opt.step()                                                   # a first step: no momentum
    for p, w in zip(b.parameters(), before):
        np.testing.assert_allclose(p.data, w - 0.1, rtol=0, atol=1e-15)
    adam = optim.Adam(a.parameters(), lr=0.1)
    adam.step()
    adam.params = b.parameters() + a.parameters()                # (a's kept, whatever index)
    adam.step()
    assert [s["step"] for s in adam.state] == [1, 1, 2, 2]
    with pytest.raises(AttributeError):                          # not grown behind its state
        adam.params.append(rnncore.Linear(2, 2).weight)
    with pytest.raises(ValueError, match=r"^lr: expected a number that is finite in the "):
        optim.SGD(a.parameters(), lr=1e39).params = rnncore.Linear(2, 2).parameters()   # float32
    kept = adam.params
    with pytest.raises(ValueError, match=r"^params: expected each Parameter once"):
        adam.params = a.parameters() * 2
    assert adam.params is kept and [s["step"] for s in adam.state] == [1, 1, 2, 2]
    with pytest.raises(ValueError, match=r"^state: expected a list of 4 dicts"):
        adam.state = [{}]
    with pytest.raises(TypeError, match=r"^state\[1\]: expected a dict, got int"):
        adam.state = [{}, 0, {}, {}]
    assert [s["step"] for s in adam.state] == [1, 1, 2, 2]
