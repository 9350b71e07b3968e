"""`gradcheck`: compare a module's analytic gradients with central differences, in float64.

The loss is ``L = sum(forward(x) * dout)`` for a fixed random ``dout`` (so every output element
matters, with its own weight). For the input (when it is a float array) and for every trainable
parameter ``w`` the numerical gradient is, element by element::

    n_i = (L(w + eps e_i) - L(w - eps e_i)) / (2 eps)

and the analytic one ``a`` is what ``backward(x, dout)`` returns (input) or accumulates into
``Parameter.grad`` (parameters). Each array gets the relative error

    err = max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|, 1e-8)

(relative to the array's largest gradient, so tiny entries next to large ones do not blow it up;
the 1e-8 floor makes an all-but-zero array count in absolute terms). An array with a NaN or Inf
in either gradient gets ``err = inf``. ``gradcheck`` returns the worst ``err`` over all arrays.
The differences carry their own rounding, ~1e-16 |L| / eps in absolute terms (about 1e-10 for
a loss of order 1 at eps = 1e-6), so a correct backward gives err ~ 1e-16 |L| / (eps * g) for
an array whose largest gradient is g (at least the 1e-8 floor): ~1e-9 or less where g is of
order 1 or more, but 1e-4 at g = 1e-6 and up to 1e-2 at the floor (a weight of 1e-7 makes the
input gradient of a `Linear` that small; so can gradients that fade through a deep stack).
Such an error falls as 1/eps: check such a module with a larger eps (1e-4) as well; a wrong
gradient stays wrong, rounding does not. An input gradient whose shape
is not the input's is a ValueError, not an error size (it would broadcast in the comparison).

Parameters tied to one array (``b.weight.data = a.weight.data``) are one weight, as the
optimizers take them: a difference moves the shared array, so every use at once, and is
compared with the sum of their grads. Memory shared any other way (one Parameter holding a
view of another's array, or a frozen Parameter holding a trainable one's) is a ValueError: a
difference there would move weights whose gradient no grad holds. Each backward gets its own
copy of ``dout`` (and the differences use one nobody else sees), so a backward that writes
into its ``gy`` cannot change the loss being differenced.

A second ``backward(x, dout)`` then runs without zeroing: it must return the same input
gradient and add the same amount to every ``Parameter.grad`` again (the API's accumulation),
each compared as above (a backward that overwrites the grads instead of adding gets err = 1).
A module that refuses a second backward (RuntimeError) is not checked for this.

An integer ``x`` is taken as ids (no input gradient) when the module may take ids: it holds an
`Embedding`, or a module of one's own built on `Module` itself. Given to rnncore's other layers
alone (or subclasses of them), an integer array is a float input like any other (converted to
float64, its gradient checked).

What it expects of a module: only the base API (``forward(x, lengths=)``, ``backward(x, gy)``,
``parameters()``, ``astype``, ``evaluate``) and that ``copy.deepcopy`` works. It never touches
the caller's module: it works on a float64 deep copy in ``evaluate()`` mode (dropout off), and
each evaluation runs on a fresh copy of that snapshot, so a module that carries state between
calls (``remember()``) starts every evaluation from the same state. The global random stream
(``rnncore.manual_seed``) is not used either.

``training=True`` checks the training-mode backward instead (dropout on, with its masks): every
evaluation then draws its masks from a stream seeded alike, so all of them use the same masks,
and the caller's stream is put back afterwards.
"""

import copy

import numpy as np

from . import _checks
from . import random as _random
from .module import Module
from .optim import _tied

__all__ = ["gradcheck"]


def _takes_ids(module):
    """Whether an integer input may be ids for ``module``: it holds an `Embedding`, or a module
    of one's own built on `Module` itself (which may take ids in its own way). A subclass of
    one of rnncore's other layers takes what that layer takes."""
    from .layers import Embedding

    for m in module.modules():
        if isinstance(m, Embedding):
            return True
        own = next(k for k in type(m).__mro__ if k.__module__.startswith("rnncore."))
        if own is Module:
            return True
    return False


def _as_input(x, ids_allowed=True):
    """The input as one array: a list of step arrays is stacked (modules accept both kinds)."""
    if isinstance(x, (list, tuple)) and x and all(isinstance(s, np.ndarray) for s in x):
        shapes = sorted({s.shape for s in x})
        if len(shapes) != 1:
            raise ValueError(f"x: expected a list of step arrays of one shape, got shapes {shapes}")
        x = np.stack(x)
    x = _checks._as_array(x, "x")
    if x.dtype.kind == "f":
        return _checks.finite_array(x, "x", dtype=np.float64).copy(), True
    if x.dtype.kind in "iu":
        if not ids_allowed:                                      # features given as integers
            return _checks.finite_array(x, "x", dtype=np.float64).copy(), True
        return x.copy(), False                                   # ids: no input gradient
    raise TypeError(f"x: expected a float or integer array, got dtype {x.dtype}")


def _rel_error(a, n):
    """max |a - n| / max(max |a|, max |n|, 1e-8) over one array."""
    a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(n).all()):
        return float("inf")
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0), 1e-8)
    return float(np.abs(a - n).max(initial=0.0) / scale)


def gradcheck(module, x, lengths=None, eps=1e-6, *, training=False):
    """Worst relative error between analytic and central-difference gradients (see module doc).

    module: any rnncore Module (float32 modules are checked on a float64 copy)
    x: the input: a float array (or list of step arrays) whose gradient is checked too, or an
       integer array: ids for an `Embedding` (or a module built on `Module`), whose gradient is
       not; features otherwise (see the module doc)
    lengths: passed to ``forward``
    eps: the central-difference step
    training: False (``evaluate()`` mode) or True (training mode, dropout masks held fixed)
    """
    if not isinstance(module, Module):
        raise TypeError(f"module: expected a rnncore Module, got {type(module).__name__}")
    eps = _checks.positive_number(eps, "eps")
    training = _checks.flag(training, "training")
    x, x_is_float = _as_input(x, _takes_ids(module))
    _weights(module)                # (asked of the caller's: astype keeps ties, but not views)
    base = copy.deepcopy(module).astype(np.float64)             # the caller's module is untouched
    base = base.training() if training else base.evaluate()
    with _random.private_stream():                          # the caller's stream stays put
        return _check(base, x, x_is_float, lengths, eps, training, type(module).__name__)


def _weights(module):
    """The trainable Parameters of ``module`` grouped by the array they hold (``optim._tied``:
    a tie is one weight); ValueError where memory is shared in any other way (see the module
    doc)."""
    params = module._parameter_list()              # (parameters() may rename: not the caller's)
    groups = [list(ps) for ps in _tied(params)]
    for ps in groups:
        a = ps[0]._data
        for q in params:
            b = q._data
            if (b is a and not q.requires_grad) or (b is not a and np.shares_memory(a, b)):
                raise ValueError(f"module: {q.name!r} shares memory with the trainable "
                                 f"{ps[0].name!r} ({'frozen' if b is a else 'a view'}): a central "
                                 f"difference would move both, and no grad holds the gradient "
                                 f"of both; tie parameters by giving both one array "
                                 f"(b.data = a.data), both trainable")
    return groups


def _grad_of(ps):
    """The gradient of a weight: its one Parameter's grad, or the sum of a tie's."""
    return sum((p.grad for p in ps[1:]), ps[0].grad.copy())


def _accumulation_errors(m, weights, x, dout, gx, analytic, x_is_float):
    """A second backward of the same forward, grads not zeroed: the relative errors of its
    input gradient against the first's and of what it added to each grad against the first
    amount ([] where the module refuses a second backward with a RuntimeError); ``weights``:
    ``_weights(m)``."""
    before = [_grad_of(ps) for ps in weights]
    try:
        gx2 = m.backward(x, dout.copy())
    except RuntimeError:
        return []
    with np.errstate(invalid="ignore", over="ignore"):          # (Inf - Inf: err = inf anyway)
        errors = [_rel_error(_grad_of(ps) - b, a) for ps, b, a in zip(weights, before, analytic)]
    if x_is_float and gx is not None and gx2 is not None:
        gx2 = np.asarray(gx2, dtype=np.float64)
        errors.append(_rel_error(gx2, gx) if gx2.shape == np.shape(gx) else float("inf"))
    return errors


def _check(base, x, x_is_float, lengths, eps, training, name):
    """gradcheck's work on ``base``, the float64 copy in its mode."""
    weights = _weights(base)                     # (one entry per array: a tie is one weight)
    if not x_is_float and not weights:
        raise ValueError("module: nothing to check: integer input and no trainable parameters")

    def run(xv):
        """A fresh copy of the snapshot, its output for xv, and the copy itself."""
        m = copy.deepcopy(base)
        with _random.private_stream():             # the same dropout masks in every evaluation
            return np.asarray(m.forward(xv, lengths=lengths), dtype=np.float64), m

    # Analytic gradients: one forward and one backward with upstream gradient dout (each
    # backward gets its own copy: one that writes into its gy changes no one else's), on a copy
    # of x (given to both, as a caller would: the same array)
    xa = x.copy()
    y, m = run(xa)
    dout = np.random.default_rng(0).standard_normal(y.shape)    # local stream, seeded
    m.zero_grad_parameters()
    gx = m.backward(xa, dout.copy())
    weights_m = _weights(m)
    analytic = [_grad_of(ps) for ps in weights_m]

    def loss(xv):
        return float(np.sum(run(xv)[0] * dout))

    def numeric(arr, xv):
        """Central differences of the loss w.r.t. every element of ``arr`` (perturbed in place)."""
        n = np.zeros(arr.shape)
        for i in np.ndindex(arr.shape):
            keep = arr[i]
            arr[i] = keep + eps
            up = loss(xv)
            arr[i] = keep - eps
            down = loss(xv)
            arr[i] = keep
            n[i] = (up - down) / (2 * eps)
        return n

    errors = _accumulation_errors(m, weights_m, xa, dout, gx, analytic, x_is_float)
    if x_is_float:
        if gx is None:
            raise ValueError(f"module: {name}.backward returned None for a float input")
        gx = np.asarray(gx)
        if gx.shape != x.shape:
            raise ValueError(f"module: {name}.backward returned a gradient of shape {gx.shape} "
                             f"for an input of shape {x.shape}")
        errors.append(_rel_error(gx, numeric(x, x)))
    for ps, a in zip(weights, analytic):
        errors.append(_rel_error(a, numeric(ps[0].data, x)))
    return max(errors)
