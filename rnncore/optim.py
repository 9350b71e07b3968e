"""Optimizers: `SGD`, `Adam`, `RMSprop`, and `clip_grad_norm` — the same update rules as
``torch.optim``, over rnncore `Parameter` objects. The defaults they have are torch's; ``lr``
has none for `SGD` and `RMSprop` (torch has 0.001 and 0.01), and ``momentum``, ``betas`` and
``alpha`` must lie in [0, 1).

    opt = rnncore.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()                 # grads accumulate until zeroed (Torch7 semantics)
    model.backward(x, criterion.backward(model.forward(x), y))
    opt.step()                      # updates every Parameter.data in place

``step()`` skips parameters with ``requires_grad = False`` (a frozen `Embedding`, say). The
per-parameter state (momentum buffers, moment estimates, Adam's step count) lives in
``opt.state[i]`` for the i-th parameter, created at its first update as PyTorch does; another
list of Parameters may be assigned to ``opt.params`` (each keeps its own state, a new one starts
with none).
Updates run in the parameter's own dtype, and the state follows it: after ``model.astype``
the next step converts the state's arrays to the parameter's new dtype.

Parameters tied to one array (``b.weight.data = a.weight.data``) are one weight: ``step()``
updates it once, with the sum of their grads, in the first one's state (PyTorch's one Parameter
used twice). Two trainable ones holding different views of one memory (a tie through ``.T``)
are refused by ``step()`` before any update (plain SGD excepted: its two updates in turn are
one with the summed gradient, up to rounding) and by ``clip_grad_norm``. Refused (ValueError
naming the argument): a parameter listed twice in ``params`` (it would be updated twice per
step), and a hyperparameter that the update casts to a parameter's dtype (``lr``, ``eps``,
``weight_decay``) where that cast is not finite (``lr=1e39`` is inf in float32, and inf * 0 =
NaN weights) or turns a non-zero number into 0. They are checked at construction against the
parameters' dtypes, and again by ``step()`` (before any update) for a dtype that appeared
since, as after ``model.astype``. Every hyperparameter is an attribute a schedule may change
between steps (``opt.lr *= 0.1``, ``opt.momentum = 0.95``); an assignment is checked as the
constructor's argument was.

Not checked, as in PyTorch: an update beyond the dtype's range from settings each in range
(``lr`` and ``weight_decay`` of 1e154 each: the step is Inf in float64); and the gradients
themselves. A NaN or Inf entry of a grad (from a
diverged loss) makes the same entry of the parameter NaN or Inf after ``step()`` (and of that
parameter's Adam / RMSprop moment estimates), other entries update as usual; and
``clip_grad_norm`` then returns the non-finite norm, scaling by 0 for an Inf one (every finite
grad becomes 0, the Inf entry NaN). Check ``np.isfinite(clip_grad_norm(...))`` where that can
happen.
"""

import numbers

import numpy as np
from numba import njit

from kernels import _ahead

from . import _checks
from .module import Module, Parameter, checked

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "clip_grad_norm"]


def _param_list(params, name="params", once=True):
    """A non-empty list of `Parameter` objects from an iterable (``model.parameters()``);
    with ``once``, each object at most once."""
    if isinstance(params, Module):
        raise TypeError(f"{name}: expected an iterable of Parameter, got a {type(params).__name__} "
                        f"module; pass module.parameters()")
    if isinstance(params, Parameter):
        params = [params]
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{name}: expected an iterable of Parameter, got {type(params).__name__}") from None
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{name}[{i}]: expected a rnncore Parameter, got {type(p).__name__}")
    if not params:
        raise ValueError(f"{name}: expected at least one Parameter, got an empty list")
    if once:
        first = {}
        for i, p in enumerate(params):
            j = first.setdefault(id(p), i)
            if j != i:
                raise ValueError(f"{name}: expected each Parameter once, got {p.name!r} at [{j}] "
                                 f"and [{i}] (it would be updated twice per step)")
    return params


def _refuse_partial_ties(params, name):
    """ValueError where two trainable Parameters hold different arrays over the same memory (a
    tie made through a view: ``b.weight.data = a.weight.data.T``): their grads are in two
    layouts of one weight, which a rule with state (momentum, Adam, RMSprop) or a norm cannot
    add up; a tie is one array given to both (then one weight, ``_tied``). Plain SGD, whose
    two updates in turn are one with the summed gradient (up to rounding), does not ask.
    Arrays are compared only within a family of views of one base."""
    families = {}
    for i, p in enumerate(params):
        if p.requires_grad:
            a = p._data
            families.setdefault(id(a if a.base is None else a.base), []).append((i, p))
    for family in families.values():
        for k, (i, p) in enumerate(family):
            for j, q in family[:k]:
                if p._data is not q._data and np.shares_memory(p._data, q._data):
                    raise ValueError(f"{name}: {q.name!r} at [{j}] and {p.name!r} at [{i}] hold "
                                     f"different views of the same memory (each would update "
                                     f"it with its own gradient); tie parameters by giving "
                                     f"both one array: b.data = a.data")


def _step_refuses_partial_ties(optimizer):
    """Whether ``optimizer.step()`` refuses Parameters tied through views (``_refuse_partial_ties``,
    before any update): every rule with state does, plain SGD's own loop does not, and a step
    of one's own is its own business. ``fit`` asks, to refuse them before its first batch."""
    step = type(optimizer).step
    return step is Optimizer.step or (step is SGD.step and not optimizer._plain())


def _follow_dtype(state, dtype):
    """Convert the state's arrays to ``dtype`` where they differ (the parameter was converted
    by ``Module.astype`` since they were made), so that precision follows the parameter."""
    for k, v in state.items():
        if type(v) is np.ndarray and v.dtype != dtype:
            state[k] = v.astype(dtype)


def _fraction(v, name):
    """A number in [0, 1) (momentum terms, decay rates): checked as a dropout rate is."""
    return _checks.probability(v, name)


def _betas(v, name):
    try:
        b1, b2 = v
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair (beta1, beta2), got {v!r}") from None
    return (_fraction(b1, f"{name}[0]"), _fraction(b2, f"{name}[1]"))


def _non_negative(v, name):
    return _checks.positive_number(v, name, allow_zero=True)


class _Hyper(checked):
    """A hyperparameter attribute (``opt.eps``, ``opt.momentum``, ...) checked at every
    assignment as at construction, so that one changed between steps cannot slip through: and
    where the update casts it to a parameter's dtype (``_cast``), finite and non-zero there,
    as ``lr`` is (``eps = 1e-50`` is 0 in float32: NaN weights at the first zero gradient).
    ``check(value, name)``; read as `rnncore.module.checked` reads (an optimizer pickled
    before has it under its own name)."""

    def __set__(self, obj, value):
        value = self.check(value, self.name)
        if self.name in type(obj)._cast:
            for dtype in _current_dtypes(obj):
                _checks.fits_dtype(value, self.name, dtype)
        _set_checking_derived(obj, self.slot, value)


_UNSET = object()


def _set_checking_derived(opt, slot, value):
    """``opt.<slot> = value``, then the numbers the update derives from several settings
    (``Optimizer._derived``) checked in the parameters' dtypes; undone if one fails there."""
    d = opt.__dict__
    old = d.get(slot, _UNSET)
    d[slot] = value
    try:
        for label, v in opt._derived():
            for dtype in _current_dtypes(opt):
                _checks.fits_dtype(v, label, dtype)
    except (TypeError, ValueError):
        if old is _UNSET:
            del d[slot]
        else:
            d[slot] = old
        raise


def _current_dtypes(opt):
    """The dtypes of the optimizer's parameters now (none while it is being built): a number
    assigned later is checked in these, not in one the parameters had before an ``astype``."""
    return {p._data.dtype for p in getattr(opt, "params", ())}


def _tied(params):
    """The trainable ``params`` grouped by the array they hold, in order of first appearance:
    one list per array. Two Parameters given one array (``b.weight.data = a.weight.data``, a
    tie) are one weight: updated once, with the sum of their grads (PyTorch's one shared
    Parameter), not once each."""
    groups = {}
    for p in params:
        if p.requires_grad:
            groups.setdefault(id(p._data), []).append(p)
    return groups.values()


class _Sum:
    """A tie's stand-in for ``_update``: the shared array and the sum of the members' grads,
    with the first member's name. For an update (``update``) the array is taken through
    ``Parameter.data`` for every member, as an update of each would: each then counts it as
    changed ([device]: unlocked, and copied to the GPU again); a norm only reads it."""

    def __init__(self, ps, update=True):
        if update:
            for p in ps[1:]:
                p.data                                   # noqa: B018 (marks it changed)
        self.data = ps[0].data if update else ps[0]._data   # (a norm only reads it)
        self.grad = sum(p._grad for p in ps[1:]) + ps[0]._grad
        self.name, self.requires_grad = ps[0].name, True


class Optimizer:
    """Base class: holds the parameters and their state; subclasses implement ``_update``.

    ``_cast`` names the hyperparameters the update casts to a parameter's dtype: a subclass
    calls ``_check_dtypes()`` at the end of its ``__init__``, and ``step`` calls it first.
    """

    _cast = ("lr",)

    def __init__(self, params):
        self._dtypes = set()          # parameter dtypes the ``_cast`` numbers were checked in
        self.params = params          # (also makes the per-parameter lists: ``params.setter``)

    @property
    def params(self):
        """The Parameters ``step`` updates, a tuple (a list grown in place would leave the
        per-parameter lists behind it). Another list may be assigned (parameters unfrozen
        later, say): it is checked as the constructor's ``params`` was, and in the dtypes of
        the new parameters as ``step`` checks them; each Parameter that was there keeps its
        state, the others start with an empty one. (The per-parameter lists were left as they
        were: an IndexError at the next step, or a Parameter updated with the state of the
        one that had been at its index.)"""
        return self._params

    @params.setter
    def params(self, value):
        params = tuple(_param_list(value))
        d = self.__dict__
        old = {k: d[k] for k in ("_params", "_state", "_checked", "_flat") if k in d}
        kept = ({id(p): s for p, s in zip(self._params, self._state)}
                if "_params" in d else None)                         # (None: being built)
        d["_params"] = params
        d["_state"] = [kept.get(id(p), {}) if kept else {} for p in params]
        d["_checked"] = [None] * len(params)      # per parameter: its data's dtype when checked
        if "_flat" in old:
            d["_flat"] = [None] * len(params)     # (SGD's flat views, made again)
        if kept is None:
            return                                # (the constructor checks the dtypes last)
        try:
            self._check_dtypes()
        except (TypeError, ValueError):
            for k in ("_params", "_state", "_checked", "_flat"):
                d.pop(k, None)
            d.update(old)
            raise

    @property
    def state(self):
        """Per parameter, in the order of ``params``: a dict (momentum buffer, moment estimates,
        Adam's step count), empty until its first update. A list may be assigned (a copy kept
        from before, say): one dict per parameter, checked."""
        return self._state

    @state.setter
    def state(self, value):
        n = len(self.params)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"state: expected a list of {n} dicts (one per parameter), got "
                            f"{type(value).__name__}")
        if len(value) != n:
            raise ValueError(f"state: expected a list of {n} dicts (one per parameter), got "
                             f"{len(value)}")
        for i, s in enumerate(value):
            if not isinstance(s, dict):
                raise TypeError(f"state[{i}]: expected a dict, got {type(s).__name__}")
        self.__dict__["_state"] = list(value)

    def __setstate__(self, state):
        """Unpickling: a pickle from before ``params`` and ``state`` were checked properties
        kept them under those names; they move to the ones the properties read."""
        state = dict(state)
        for old, new in (("params", "_params"), ("state", "_state")):
            if old in state:
                state[new] = state.pop(old)
        if "_params" in state:
            state["_params"] = tuple(state["_params"])
        self.__dict__.update(state)

    @property
    def lr(self):
        """The learning rate; a schedule may set it between steps (``opt.lr *= 0.1``), checked
        as at construction: a number > 0, finite and non-zero in the parameters' dtypes."""
        return self._lr

    @lr.setter
    def lr(self, value):
        value = _checks.positive_number(value, "lr")
        for dtype in _current_dtypes(self):
            _checks.fits_dtype(value, "lr", dtype)
        _set_checking_derived(self, "_lr", value)

    def _derived(self):
        """``(label, number)`` for each number the update casts to a parameter's dtype that is
        made of several settings (Adam's first step size, say); none here."""
        return ()

    def __setattr__(self, name, value):
        """rnncore's own optimizers refuse a setting they do not have (``opt.nesterov = True``,
        ``adam.weight_decay = 1e-4``, a misspelt ``opt.momentun``): it would change nothing,
        silently. A subclass may add settings of its own."""
        cls = type(self)
        if cls in _OWN and not name.startswith("_") and not hasattr(cls, name):
            raise AttributeError(f"{cls.__name__} has no setting {name!r} (its settings: "
                                 f"{', '.join(_settings(cls))}); setting it would change nothing")
        object.__setattr__(self, name, value)

    def zero_grad(self):
        """Set every parameter's grad to zero."""
        for p in self.params:
            p.grad.fill(0)

    def _check_dtypes(self):
        """``_checks.fits_dtype`` each ``_cast`` number in every parameter dtype not seen before.
        A parameter whose dtype is the one seen last time is not looked at. (Its dtype, not its
        array, is what is kept: a reference to the array would count, on "cuda", as one that
        may write it unseen, and make every forward compare the weights; rnncore/device.py.)"""
        checked = self._checked
        for i, p in enumerate(self.params):
            dtype = p._data.dtype                 # (not p.data: that counts as a change)
            if dtype is checked[i]:
                continue
            if dtype not in self._dtypes:
                for name in self._cast:
                    v = getattr(self, name, None)
                    if isinstance(v, numbers.Real):
                        _checks.fits_dtype(float(v), name, dtype)
                for label, v in self._derived():
                    _checks.fits_dtype(v, label, dtype)
                self._dtypes.add(dtype)
            checked[i] = dtype

    def step(self):
        """One update of every trainable parameter, in place (Parameters tied to one array:
        one update of it, with the sum of their grads, in the first one's state)."""
        self._check_dtypes()
        _refuse_partial_ties(self.params, "params")      # (before any update)
        if len({id(p._data) for p in self.params}) == len(self.params):
            for p, state in zip(self.params, self.state):
                if p.requires_grad:
                    self._update(p, state)
            return
        index = {id(p): i for i, p in enumerate(self.params)}
        for ps in _tied(self.params):
            self._update(ps[0] if len(ps) == 1 else _Sum(ps), self.state[index[id(ps[0])]])

    def _update(self, p, state):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay (``torch.optim.SGD``)::

        g = grad + weight_decay * w
        v = g                      (first step)      v = momentum * v + g   (later steps)
        w = w - lr * v             (v = g when momentum = 0)
    """

    _cast = ("lr", "weight_decay")
    momentum = _Hyper(_fraction)
    weight_decay = _Hyper(_non_negative)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self._flat = [None] * len(self.params)       # per parameter: (data, grad, flat views)
        self._check_dtypes()

    def __getstate__(self):
        """Pickling (and ``copy.deepcopy``): without the flat views, which a copy would turn
        into arrays of their own, no longer views of the copied weights (steps would update
        those and leave the weights as they were)."""
        state = dict(self.__dict__)
        state.pop("_flat", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._flat = [None] * len(self.params)       # (made again at the first step)

    def _plain(self):
        """Whether ``step`` runs the plain rule's own loop (no momentum, no weight decay, SGD's
        own update), which takes Parameters tied through views (``_refuse_partial_ties``)."""
        return not (self.momentum or self.weight_decay or type(self)._update is not SGD._update)

    def step(self):
        """One update of every trainable parameter, in place. The plain rule (no momentum, no
        weight decay) runs as one compiled loop per parameter over flat views of its data and
        grad, made once per pair of arrays (at tiny shapes NumPy's ``w -= lr * g``, a temporary
        and two calls, was a tenth of a training step); the numbers are NumPy's (no fused
        multiply-add). Parameters tied to one array each update it in turn: the same step as
        one update with the sum of their grads, up to rounding."""
        if not self._plain():
            return super().step()                            # (a subclass's own rule included)
        self._check_dtypes()
        _ahead.follow("descend")                             # (empty cache: kernels._ahead)
        dtype = lr = None
        rate = self.lr                                       # (a subclass's property included)
        for i, p in enumerate(self.params):
            if not p.requires_grad:
                continue
            w, g = p.data, p._grad
            views = self._flat[i]
            if views is None or views[0] is not w or views[1] is not g:
                views = self._flat[i] = (w, g) + _flat_views(w, g)
            if w.dtype is not dtype:                         # (lr in each dtype, made once)
                dtype = w.dtype
                lr = dtype.type(rate)
            if views[2] is None:
                w -= lr * g
            else:
                _descend(views[2], views[3], lr)

    def _update(self, p, state):
        w, g = p.data, p.grad                                    # w: updated in place
        f = w.dtype.type
        _follow_dtype(state, w.dtype)
        if self.weight_decay:
            g = g + f(self.weight_decay) * w
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = np.array(g, dtype=w.dtype)
            else:
                buf = state["momentum_buffer"]
                buf *= f(self.momentum)
                buf += g
            g = state["momentum_buffer"]
        w -= f(self.lr) * g


def _flat_views(w, g):
    """1-D views of ``w`` and ``g`` for ``_descend``, or (None, None) where the compiled loop
    does not apply (other shapes or dtypes, or a layout whose flat view would be a copy)."""
    if (type(w) is np.ndarray and type(g) is np.ndarray and w.dtype == g.dtype
            and w.flags.writeable                        # (Numba refuses a read-only one)
            and w.dtype in _checks.FLOAT_DTYPES and w.shape == g.shape
            and w.flags.c_contiguous and g.flags.c_contiguous):
        return w.reshape(-1), g.reshape(-1)
    return None, None


@njit(cache=True)
def _descend(w, g, lr):
    """``w -= lr * g`` over two 1-D arrays of one dtype, ``lr`` in that dtype."""
    for i in range(w.shape[0]):
        w[i] -= lr * g[i]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam``; with step count k = 1, 2, ...::

        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        w = w - lr / (1 - b1^k) * m / (sqrt(v) / sqrt(1 - b2^k) + eps)
    """

    _cast = ("lr", "eps")
    betas = _Hyper(_betas)
    eps = _Hyper(_checks.positive_number)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self._check_dtypes()

    def _derived(self):
        """The first step size, lr / (1 - b1): the largest lr / (1 - b1^k) the update casts
        (lr = 1e38 fits float32, but that step is inf there, and inf * 0 makes NaN weights)."""
        lr, betas = getattr(self, "_lr", None), getattr(self, "betas", None)
        if lr is None or betas is None:                  # (while being built)
            return ()
        return (("lr / (1 - betas[0])", lr / (1 - betas[0])),)

    def _update(self, p, state):
        w = p.data                                               # updated in place
        f = w.dtype.type
        b1, b2 = self.betas
        _follow_dtype(state, w.dtype)
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(w), exp_avg_sq=np.zeros_like(w))
        state["step"] += 1
        k, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
        m *= f(b1)
        m += f(1 - b1) * g
        v *= f(b2)
        v += f(1 - b2) * g * g
        step_size = self.lr / (1 - b1 ** k)
        denom = np.sqrt(v) / f(np.sqrt(1 - b2 ** k)) + f(self.eps)
        w -= f(step_size) * (m / denom)


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012), as ``torch.optim.RMSprop`` (not centred, no momentum)::

        v = alpha v + (1 - alpha) g^2
        w = w - lr * g / (sqrt(v) + eps)
    """

    _cast = ("lr", "eps")
    alpha = _Hyper(_fraction)
    eps = _Hyper(_checks.positive_number)

    def __init__(self, params, lr, alpha=0.99, eps=1e-8):
        super().__init__(params)
        self.lr = lr
        self.alpha = alpha
        self.eps = eps
        self._check_dtypes()

    def _update(self, p, state):
        w = p.data                                               # updated in place
        f = w.dtype.type
        _follow_dtype(state, w.dtype)
        if not state:
            state["square_avg"] = np.zeros_like(w)
        v, g = state["square_avg"], p.grad
        v *= f(self.alpha)
        v += f(1 - self.alpha) * g * g
        w -= f(self.lr) * g / (np.sqrt(v) + f(self.eps))


_OWN = (Optimizer, SGD, Adam, RMSprop)


def _settings(cls):
    """The names of ``cls``'s hyperparameters: ``lr`` and its `_Hyper` attributes."""
    return ["lr"] + sorted(n for n in dir(cls) if isinstance(getattr(cls, n, None), _Hyper))


def clip_grad_norm(params, max_norm):
    """Scale the grads of the trainable ``params`` in place so that their joint L2 norm is at
    most ``max_norm``; return that norm before clipping, as a float (``torch.nn.utils.clip_grad_norm_``).

        norm = sqrt(sum_p ||grad_p||^2)        grad_p *= min(1, max_norm / (norm + 1e-6))

    A parameter listed twice is one gradient: counted and scaled once; Parameters tied to one array
    are one weight whose gradient is the sum of theirs (the norm counts that sum).
    ``max_norm=inf`` only measures the norm; no parameters (an empty list, or none trainable)
    give 0.0, as in PyTorch.
    """
    if not isinstance(params, (Module, Parameter)):
        try:
            params = list(params)                        # (a generator: taken once, here)
        except TypeError:
            pass                                         # (refused below, naming params)
    params = [] if isinstance(params, list) and not params else _param_list(params, once=False)
    _refuse_partial_ties(params, "params")                       # (before anything is scaled)
    ties = list(_tied({id(p): p for p in params}.values()))     # (one entry per array)
    params = [p for ps in ties for p in ps]
    if isinstance(max_norm, (bool, np.bool_)) or not isinstance(max_norm, numbers.Real):
        raise TypeError(f"max_norm: expected a number > 0 (or inf), got {max_norm!r}")
    max_norm = _checks.as_float(max_norm, "max_norm", "a number > 0 (or inf)")
    if not max_norm > 0:                                          # (NaN included)
        raise ValueError(f"max_norm: expected a number > 0 (or inf), got {max_norm}")
    norm = float(np.sqrt(sum(np.sum(np.square(ps[0].grad if len(ps) == 1 else _Sum(ps, False).grad,
                                              dtype=np.float64)) for ps in ties)))
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return norm
