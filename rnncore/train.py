"""`fit` and `score`: the training loop every example writes, written once.

    history = rnncore.fit(model, criterion, rnncore.optim.Adam(model.parameters(), lr=1e-2),
                          x, y, lengths, epochs=20, batch_size=32, validation=(xv, yv, lv))
    history.loss[-1], history.val_accuracy[-1]
    rnncore.score(model, criterion, x_test, y_test, lengths_test)   # {'loss': ..., 'accuracy': ...}

Shape key: T = time steps, N = samples (the batch axis of the whole data set), F = features.

Data layout, as everywhere in rnncore, is time-major:

* ``x``: (T, N, F) floats, or a list of T (N, F) arrays, or (T, N) integer ids for a model
  that starts with an `Embedding`. Batches are cut along axis 1.
* ``lengths``: None or (N,) ints (see `rnncore.pad_sequences`); cut like ``x``.
* ``y``: with a `SequencerCriterion` (one target per step), time-major (T, N, ...) and cut along
  axis 1; with any other criterion (one target per sequence), (N,) class ids or (N, K) values
  and cut along axis 0.

One step of the loop is the Torch7 recipe, nothing hidden::

    model.zero_grad_parameters()
    out  = model.forward(xb, lengths=lb)
    loss = criterion.forward(out, yb)           # + lengths=lb for a SequencerCriterion
    g    = criterion.backward(out, yb)          # + lengths=lb
    model.backward(xb, g)
    clip_grad_norm(model.parameters(), clip)    # only if clip is given
    optimizer.step()                            # or model.update_parameters(lr) for a float

What the numbers mean:

* ``loss`` of an epoch is the mean of the batch losses weighted by batch size, i.e. the mean of
  what ``criterion.forward`` returns. Criteria average over the batch, except that a
  `SequencerCriterion` SUMS its per-step losses over time, so its loss grows with T.
* ``val_loss`` and `score`'s loss are the loss of the whole set, computed batch by batch:
  ``criterion.forward`` on all of it, whatever ``batch_size``. (With ``lengths``, a
  `SequencerCriterion`'s step averages over the rows still running, a number that differs from
  batch to batch: its per-step sums and counts are added up over the batches instead.)
* ``accuracy`` is computed when the criterion is a `ClassNLLCriterion` or
  `CrossEntropyCriterion` (on its own or inside a `SequencerCriterion`): the fraction of
  predictions whose argmax over the last axis equals the target, over the valid steps only
  when ``lengths`` is given. Training accuracy is measured on each batch's forward before that
  batch's update (as Keras does); validation runs after the epoch. Other criteria: loss only.
* Mode: ``fit`` runs ``model.training()`` for the updates and ``model.evaluate()`` for the
  validation; ``fit`` and ``score`` give every module back the mode it had before the call.

Randomness: the batch order comes from ``rnncore.random.generator()`` (seeded by
``rnncore.manual_seed``), or from ``np.random.default_rng(seed)`` when ``seed`` is given.
Weight initialisation and dropout masks always come from ``rnncore.random``, so seed that too:
``rnncore.manual_seed(s)``, then build the model, then ``fit(..., seed=s)`` gives bit-identical
runs on the same machine.

Every sample is independent here: a recurrent layer in ``remember()`` mode would carry its state
from one shuffled batch into the next, which is truncated BPTT over a stream, not this loop.
"""

import contextlib
import numbers
import time

import math
import signal
import threading

import numpy as np
from tqdm import tqdm

from . import _checks
from . import random as _random
from .containers import Sequencer, Sequential, _check_not_repeated, _stack_steps, _valid_mask
from .criteria import (BCECriterion, ClassNLLCriterion, Criterion, MSECriterion,
                       SequencerCriterion)
from .layers import Embedding
from .module import Module, restore, snapshot
from .optim import Optimizer, _refuse_partial_ties, _step_refuses_partial_ties, clip_grad_norm
from kernels._pair import _DEFERRED

__all__ = ["fit", "score", "History"]


class History:
    """What `fit` measured, one entry per epoch run.

    loss, val_loss: lists of floats; accuracy, val_accuracy: lists of floats in [0, 1], empty
    when not computed (no classification criterion, or no validation data);
    seconds: wall time of each epoch (validation included); epochs: how many epochs ran
    (fewer than asked when a callback stopped training).

    ``history["loss"]`` is ``history.loss``; ``as_dict()`` gives plain lists (e.g. for JSON).
    Its names are ``keys()`` (``"val_loss" in history``, ``for name in history``), the lists'
    and "epochs", whether or not a list has entries.
    """

    _keys = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")

    def __init__(self):
        self.loss, self.accuracy = [], []
        self.val_loss, self.val_accuracy = [], []
        self.seconds = []
        self.epochs = 0

    def __getitem__(self, name):
        if name == "epochs":
            return self.epochs
        if name not in self._keys:
            raise KeyError(f"{name!r}: expected one of {list(self._keys) + ['epochs']}")
        return getattr(self, name)

    def keys(self):
        """The names ``history[name]`` takes: loss, accuracy, val_loss, val_accuracy, seconds,
        epochs."""
        return list(self._keys) + ["epochs"]

    def __iter__(self):                  # (else Python iterates with history[0], a KeyError)
        return iter(self.keys())

    def __contains__(self, name):
        return name in self.keys()

    def as_dict(self):
        """``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...],
        "seconds": [...], "epochs": n}`` with copies of the lists."""
        d = {k: list(getattr(self, k)) for k in self._keys}
        d["epochs"] = self.epochs
        return d

    def __repr__(self):
        parts = [f"epochs={self.epochs}"]
        for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
            v = getattr(self, k)
            if v:
                parts.append(f"{k}={v[-1]:.4f}")
        return f"History({', '.join(parts)})"


# -- input checks --------------------------------------------------------------------------
def _as_time_major(x, name, finite=True):
    """x as one numeric array (T, N, ...): a list of T step arrays (N, ...) is stacked (each
    checked finite unless ``finite=False``: targets, checked below where they are read)."""
    a, _ = _stack_steps(x, name, finite)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return a


def _data(x, y, lengths, per_step, names=("x", "y", "lengths")):
    """Validated (x, y, lengths) arrays and N; y's batch axis is 1 if per_step else 0."""
    nx, ny, nl = names
    x = _as_time_major(x, nx)
    T, N = x.shape[:2]
    if per_step:
        if not isinstance(y, (list, tuple)) and np.ndim(y) < 2:
            raise ValueError(f"{ny}: expected time-major targets with leading (T, N) = {(T, N)} "
                             f"like {nx} (SequencerCriterion), got shape {np.shape(y)}")
        y = _as_time_major(y, ny, finite=False)
        if y.shape[:2] != (T, N):
            raise ValueError(f"{ny}: expected time-major targets with leading (T, N) = {(T, N)} "
                             f"like {nx} (SequencerCriterion), got shape {y.shape}")
    else:
        y = _checks._as_array(y, ny)
        if y.ndim == 0 or y.shape[0] != N:
            raise ValueError(f"{ny}: expected one target per sample, shape ({N}, ...) with N = {N} "
                             f"from {nx} {x.shape} (axis 1), got shape {y.shape}")
    lengths = _checks.lengths(lengths, T, N, name=nl)
    # NaN/Inf anywhere would otherwise surface only when its batch comes up, after updates;
    # targets only where they are read (a SequencerCriterion skips padding steps)
    read = y[_valid_mask(lengths, T, N)] if per_step and lengths is not None else y
    for a, name in ((x, nx), (read, ny)):
        if a.dtype.kind == "f":
            _checks.finite_array(a, name)
    return x, y, lengths, N


def _check_model_criterion(model, criterion):
    if not isinstance(model, Module):
        raise TypeError(f"model: expected a rnncore Module, got {type(model).__name__}")
    carrying = [type(m).__name__ for m in model.modules() if getattr(m, "_remember", False)]
    if carrying:
        raise ValueError(f"model: expected no layer in remember() mode (its state would carry "
                         f"from one shuffled batch into the next), got {carrying}; call "
                         f"remember(False) on them first")
    if not isinstance(criterion, Criterion):
        raise TypeError(f"criterion: expected a rnncore Criterion, got {type(criterion).__name__}")


def _check_backward_possible(model):
    """What every container's backward would refuse, checked before ``fit`` touches the model:
    a module that keeps its forward used twice in a chain (Dropout as in training mode)."""
    train = [(m, m.train) for m in model.modules()]
    try:
        for m, _ in train:
            m.train = True
        for m, _ in train:
            if isinstance(m, Sequential):
                _check_not_repeated(m)
    finally:
        for m, mode in train:
            m.train = mode


# -- targets against the model's output ----------------------------------------------------
# The built-in criteria say what their targets must be; some of it (the number of classes, the
# shape to match) depends on the model's output, which is known before any forward only through
# ``output_shape``. So `fit` and `score` check every target up front, against that shape, and a
# bad label in the last batch (or in the validation data) is refused before the first update.
# A criterion of your own is not looked into: it checks its targets as each batch comes (the
# inputs, x and validation[0], are checked against the model all the same).

def _output_shape(model, x, lengths, per_step, name="x"):
    """The shape of ``model``'s output for all of ``x`` (T, N, ...), the model left untouched.

    From ``model.output_shape`` where every module is one of rnncore's own (their
    ``output_shape`` is exact); otherwise, or where it refuses the shape, from a forward of the
    first sample alone in evaluate mode, after which every module's attributes and the
    ``rnncore.random`` stream are put back as `rnncore.trace` puts them back (a forward rebinds
    attributes, it never writes into parameters or kept arrays). An input the model refuses
    raises its reason for all of ``x`` (for modules of one's own, that forward's error and x's
    shape), named after ``name`` (the caller's argument), with the model as it was. The batch
    axis of the output (1 if ``per_step`` else 0) is then given N."""
    refused = None
    if all(type(m).__module__.startswith("rnncore.") for m in model.modules()):
        try:
            return tuple(model.output_shape(x.shape))
        except (TypeError, ValueError) as e:
            refused = e                                  # the reason for all of x, not one sample
        except NotImplementedError:
            pass
    saved = snapshot(model)
    stream = _random.generator().bit_generator
    state = stream.state
    try:
        model.evaluate()                                 # no dropout: nothing drawn
        out = model.forward(x[:, :1], lengths=None if lengths is None else lengths[:1])
    except (TypeError, ValueError) as e:
        if refused is not None:       # output_shape's reason, for all of x (its input_shape)
            msg = str(refused).replace("input_shape: ", "", 1)   # (x is what fit was given)
            e = type(refused)(f"x: {msg}")
        else:                         # a module of one's own: only the forward can say
            e = type(e)(f"{e} (from a forward of the first sample alone, x[:, :1], of x {x.shape})")
        raise (e if name == "x" else type(e)(f"{name}: the model refuses it: {e}")) from None
    finally:
        restore(saved)
        stream.state = state
    shape = list(np.shape(out))
    axis = 1 if per_step else 0
    if len(shape) > axis:
        shape[axis] = x.shape[1]
    return tuple(shape)


def _check_x_values(model, x, name="x"):
    """Every id of ``x`` against the `Embedding` that reads it, if one does (the first module
    along the chain of containers): an id out of range in the last batch is refused before
    the first update, not when that batch comes. Likewise floats beyond the range of the dtype
    in which the first module (one of rnncore's) reads them: a float64 1e39 for a float32
    layer, which its forward would refuse in that batch."""
    first = model
    while isinstance(first, (Sequential, Sequencer)) and first._children:
        first = first._children[0]
    if isinstance(first, Embedding):
        try:
            first._check_x(x)
        except (TypeError, ValueError) as e:
            if name == "x":
                raise
            raise type(e)(f"{name}: for the model's Embedding: {e}") from None
    elif (x.dtype.kind == "f" and x.size and type(first).__module__.startswith("rnncore.")
          and np.finfo(x.dtype).max > np.finfo(first.dtype).max):
        with np.errstate(over="ignore"):                       # (the extremes, cast: no copy
            ends = np.array([x.min(), x.max()]).astype(first.dtype)   # of x where they fit)
        if not np.isfinite(ends).all():
            _checks.finite_array(x, name, dtype=first.dtype)   # (its ValueError naming ``name``)


def _check_targets(model, criterion, x, y, lengths, per_step, names=("x", "y")):
    """Refuse targets that ``criterion`` would refuse in some batch: kind, shape against the
    model's output, class ids against its width, BCE targets outside [0, 1]. Read only where
    the criterion reads them: with a `SequencerCriterion` and ``lengths``, padding steps are
    skipped. Returns nothing; every check is one pass over ``y``."""
    nx, ny = names
    inner = criterion.criterion if per_step else criterion
    classify = isinstance(inner, ClassNLLCriterion)      # CrossEntropyCriterion included
    if not (classify or isinstance(inner, (MSECriterion, BCECriterion))):
        _output_shape(model, x, lengths, per_step, nx)   # a criterion of your own: its targets
        return                                           # are its business, x is the model's
    if classify:
        y = _checks.finite_array(y, ny, kind="i")        # TypeError for floats, naming y
    elif y.dtype.kind not in "fiu":
        raise TypeError(f"{ny}: expected a real-valued array for {type(inner).__name__}, got "
                        f"dtype {y.dtype}")
    out = _output_shape(model, x, lengths, per_step, nx)
    crit = type(inner).__name__
    if classify:
        lead = 2 if per_step else 1                      # (T, N) or (N,) ids for (..., C) scores
        if len(out) != lead + 1:
            raise ValueError(f"model: expected an output {'(T, N, C)' if per_step else '(N, C)'} "
                             f"for {type(criterion).__name__}, got shape {out} for {nx} "
                             f"{x.shape}")
        expected, C = out[:-1], out[-1]
    else:
        expected = out
    if y.shape != expected:
        raise ValueError(f"{ny}: expected shape {expected} for {crit} (the model's output is "
                         f"{out} for {nx} {x.shape}), got {y.shape}")
    if per_step and lengths is not None:
        y = y[_valid_mask(lengths, *y.shape[:2])]        # (valid steps, ...): padding not read
    if classify:
        lo, hi = _checks.int_range(y)
        if lo < 0 or hi >= C:
            raise ValueError(f"{ny}: expected class ids in [0, {C - 1}] (C = {C}, the width of "
                             f"the model's output, 0-based), got min {lo}, max {hi}")
    elif isinstance(inner, BCECriterion):
        lo, hi = y.min(), y.max()
        if lo < 0 or hi > 1:
            raise ValueError(f"{ny}: expected values in [0, 1] for {crit}, got min {lo}, max {hi}")
    elif y.size:                                         # MSE: a loss and gradient that fit
        big = _mse_target_bound(model.dtype, y.size)
        top = float(np.abs(y).max())
        if top > big:
            raise ValueError(f"{ny}: expected |values| <= {big:.3g} for {crit} (beyond that the "
                             f"squared error or its gradient overflows {np.dtype(model.dtype)} "
                             f"whatever the model answers), got {top:.4g}")


def _mse_target_bound(dtype, count):
    """The largest |target| `fit` and `score` take for `MSECriterion` over ``count`` target
    values: a quarter of the model's dtype's largest number (the gradient 2 (x - t) / n stays
    finite for any output |x| up to the same), and at most half the square root of float64's
    largest over ``count`` (the squared errors of any batch, at most ``count`` of them, are
    summed in float64). Beyond it some batch would be refused only when it came up, after
    updates."""
    return min(float(np.finfo(dtype).max) / 4,
               math.sqrt(float(np.finfo(np.float64).max) / count) / 2)


# -- one batch -----------------------------------------------------------------------------
def _is_classifier(criterion):
    inner = criterion.criterion if isinstance(criterion, SequencerCriterion) else criterion
    return isinstance(inner, ClassNLLCriterion)          # CrossEntropyCriterion included


def _crit_kwargs(criterion, lb):
    return {"lengths": lb} if isinstance(criterion, SequencerCriterion) else {}


def _hits(out, yb, lb, per_step):
    """(correct, counted) predictions of one batch: argmax over the last axis vs the target."""
    pred = np.asarray(out).argmax(axis=-1)                # (N,) or (T, N)
    right = pred == yb
    if per_step and lb is not None:
        valid = _valid_mask(lb, *right.shape)                 # (T, N): t < lengths[b]
        return int(right[valid].sum()), int(valid.sum())
    return int(right.sum()), int(right.size)


def _batches(N, batch_size, order):
    return [order[i:i + batch_size] for i in range(0, N, batch_size)]


def _take(x, y, lengths, idx, per_step):
    xb = x[:, idx]
    yb = y[:, idx] if per_step else y[idx]
    lb = None if lengths is None else lengths[idx]
    return xb, yb, lb


@contextlib.contextmanager
def _in_batch(epoch, b, n):
    """A ValueError or TypeError raised inside a training step says where: what the model made
    of a batch (non-finite outputs or gradients once a run diverges; a BCE criterion's input
    outside [0, 1]) is only known there, and the message names the module's own argument."""
    try:
        yield
    except (ValueError, TypeError) as e:
        if type(e) not in (ValueError, TypeError):               # (an exception class of one's own)
            raise
        hint = (" (the run diverged? a lower learning rate, or clip=, may help)"
                if "finite" in str(e) else "")
        raise type(e)(f"fit, epoch {epoch}, batch {b + 1} of {n} (the parameters are as the "
                      f"batch before left them): {e}{hint}") from e


def _check_finite_after(params, epoch, n, before):
    """A ValueError if the epoch's last update left a parameter NaN/Inf: the next batch's
    forward finds such a run diverged (``_in_batch``), but after the last batch there is none,
    and ``fit`` had returned normally with a model of NaN weights. Parameters whose ids are in
    ``before`` held NaN/Inf when ``fit`` began (a frozen table's unused row, say): not its
    doing, and not looked at."""
    for p in params:
        if id(p) not in before and not _checks._all_finite(p._data):   # (_data: no change)
            raise ValueError(f"fit, epoch {epoch}, batch {n} of {n}: its update made "
                             f"parameter {p.name!r} non-finite (the run diverged? a lower "
                             f"learning rate, or clip=, may help); the parameters are as "
                             f"that update left them")


def _modes(model):
    return [(m, m.train) for m in model.modules()]


def _restore_modes(saved):
    for m, mode in saved:
        m.train = mode


def _evaluate(model, criterion, x, y, lengths, N, batch_size, per_step):
    """(loss, accuracy or None) over the data in evaluate mode (the caller restores the mode)."""
    model.evaluate()
    classify = _is_classifier(criterion)
    # With lengths, a SequencerCriterion's steps average over other row counts in each batch:
    # its per-step sums and counts add up to the loss of the whole set, batch means do not
    by_step = per_step and lengths is not None and isinstance(criterion, SequencerCriterion)
    total, sums, counts, correct, counted = 0.0, 0.0, 0, 0, 0
    for idx in _batches(N, batch_size, np.arange(N)):
        xb, yb, lb = _take(x, y, lengths, idx, per_step)
        out = model.forward(xb, lengths=lb)
        if by_step:
            s, n = criterion._step_sums(out, yb, lb)
            sums, counts = sums + s, counts + n
        else:
            total += criterion.forward(out, yb, **_crit_kwargs(criterion, lb)) * len(idx)
        if classify:
            c, n = _hits(out, yb, lb, per_step)
            correct, counted = correct + c, counted + n
    if by_step:
        total = N * float(np.sum(sums[counts > 0] / counts[counts > 0]))
    return total / N, (correct / counted if classify else None)


# -- public API ----------------------------------------------------------------------------
def score(model, criterion, x, y, lengths=None, *, batch_size=256):
    """Loss (and accuracy) of ``model`` on a data set, in evaluate mode; no parameter changes.

    Data layout as in `fit`. Returns ``{"loss": float, "accuracy": float or None}``: the loss is
    ``criterion.forward`` on the whole set, computed batch by batch (see the module docstring:
    the same for any ``batch_size``); accuracy as in `fit`
    (None for criteria that are not classification losses). Every module gets its mode back,
    and what its last forward kept (caches for a backward, ``h_n``...), and the criterion what
    its last forward kept (``output``, a SequencerCriterion's lengths): scoring between a
    forward and its backward changes neither. The targets are checked up front, as in `fit`:
    a refused call leaves the model as it was.
    """
    _check_model_criterion(model, criterion)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    per_step = isinstance(criterion, SequencerCriterion)
    x, y, lengths, N = _data(x, y, lengths, per_step)
    _check_x_values(model, x)
    _check_targets(model, criterion, x, y, lengths, per_step)
    saved = snapshot(model)                             # modes and kept forwards (rebound)
    crits = [criterion] + ([criterion.criterion] if per_step else [])
    kept = [dict(c.__dict__) for c in crits]            # its output, kept lengths and gradient
    try:
        loss, acc = _evaluate(model, criterion, x, y, lengths, N, batch_size, per_step)
    finally:
        restore(saved)
        for c, d in zip(crits, kept):
            c.__dict__.clear()
            c.__dict__.update(d)
    return {"loss": loss, "accuracy": acc}


def _stops(answer):
    """A callback's answer as True / False: NumPy's "truth value ... is ambiguous" (an array of
    several values returned) named as the callback's."""
    try:
        return bool(answer)
    except (ValueError, TypeError) as e:
        raise TypeError(f"callback: expected it to return True, False or None, got "
                        f"{type(answer).__name__} ({e})") from None


def fit(model, criterion, optimizer, x, y, lengths=None, *, epochs=10, batch_size=32,
        validation=None, clip=None, shuffle=True, progress=True, seed=None, callback=None):
    """Train ``model`` on (x, y) with mini-batches; return a `History`.

    model: a rnncore Module; criterion: a rnncore Criterion (see the module docstring for how
        its type decides the layout of ``y`` and whether accuracy is measured)
    optimizer: an ``rnncore.optim`` optimizer built over ``model.parameters()``, or a float
        ``lr`` meaning plain SGD through ``model.update_parameters(lr)`` (finite in the
        parameters' dtype, as an optimizer's ``lr`` must be)
    x, y, lengths: the training data, time-major (module docstring)
    epochs, batch_size: positive ints; the last batch of an epoch may be smaller
    validation: None, ``(x, y)`` or ``(x, y, lengths)``: scored after every epoch in evaluate
        mode, giving ``history.val_loss`` (and ``val_accuracy``)
    clip: None, or a max L2 norm for all gradients together (``optim.clip_grad_norm``);
        ``inf`` clips nothing, as None does
    shuffle: draw a new batch order every epoch (else samples in order)
    progress: show a tqdm bar per epoch (batches, running loss and accuracy); the bar stays as
        that epoch's one-line summary, validation numbers included
    seed: None (batch order from ``rnncore.random``) or an int for a private generator
    callback: None or ``callback(epoch, history)``, called after every epoch with the number
        of epochs done so far (1, 2, ...); returning True (any true value) stops training

    Every argument is checked before the model is touched, the targets of every batch (and of
    the validation data) included: their kind, their shape against the model's output, class
    ids against its width (for a built-in criterion; one of your own checks its targets batch
    by batch). Returns the `History`; every module ends in the mode (training / evaluate) it
    had before the call.

    Interrupted (Ctrl-C, or an exception from ``callback`` or from a criterion or module of
    your own), or stopped by what the model made of a batch (a ValueError that names the epoch
    and batch: outputs or gradients that became NaN/Inf as a run diverged, or a criterion's
    refusal of the model's output, such as probabilities outside [0, 1] for a BCE criterion;
    or an epoch's last update that left a parameter NaN/Inf): the exception propagates, every
    module gets its mode back, and the parameters (and the optimizer's state) are as the last
    finished batch left them. The History is not
    returned then; ``callback`` sees it after every epoch, so keep a reference there if an
    interrupted run's epochs matter.
    """
    # 1. Validate everything first: a refused call leaves the model as it was.
    _check_model_criterion(model, criterion)
    _check_backward_possible(model)
    per_step = isinstance(criterion, SequencerCriterion)
    if isinstance(optimizer, Optimizer):
        own = {id(p) for p in model.parameters()}
        if own and not any(id(p) in own for p in optimizer.params):
            raise ValueError("optimizer: expected an optimizer over model.parameters(), got one "
                             "that holds none of the model's parameters (built for another model?)")
        optimizer._check_dtypes()       # its numbers in the parameters' dtypes (after astype)
        lr = None
    elif isinstance(optimizer, numbers.Real) and not isinstance(optimizer, (bool, np.bool_)):
        lr = _checks.positive_number(optimizer, "optimizer")
        for dtype in {p._data.dtype for p in model.parameters()}:
            _checks.fits_dtype(lr, "optimizer", dtype)          # 1e39 is inf in float32: NaN weights
    else:
        raise TypeError(f"optimizer: expected an rnncore.optim optimizer or a float learning rate, "
                        f"got {type(optimizer).__name__}")
    epochs = _checks.positive_int(epochs, "epochs")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if clip is not None:
        clip = _checks.positive_number(clip, "clip", allow_inf=True)
        clip = None if np.isinf(clip) else clip          # inf: a bound no norm exceeds
    shuffle = _checks.flag(shuffle, "shuffle")
    progress = _checks.flag(progress, "progress")
    if seed is not None:
        seed = _checks.positive_int(seed, "seed", minimum=0, bounded=False)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function callback(epoch, history), "
                        f"got {type(callback).__name__}")
    if clip is not None or (lr is None and _step_refuses_partial_ties(optimizer)):
        # Parameters tied through views, which the step or the clipping would refuse at the
        # first batch, after its backward had overwritten every grad: refused here instead
        _refuse_partial_ties(model.parameters(), "model")
    x, y, lengths, N = _data(x, y, lengths, per_step)
    val = None
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3):
            raise TypeError(f"validation: expected None, (x, y) or (x, y, lengths), got "
                            f"{type(validation).__name__}"
                            + (f" of length {len(validation)}"
                               if isinstance(validation, (tuple, list)) else ""))
        vx, vy, vl = (tuple(validation) + (None,))[:3]
        val = _data(vx, vy, vl, per_step,
                    names=("validation[0]", "validation[1]", "validation[2]"))
    _check_x_values(model, x)
    _check_targets(model, criterion, x, y, lengths, per_step)
    if val is not None:
        _check_x_values(model, val[0], "validation[0]")
        _check_targets(model, criterion, *val[:3], per_step,
                       names=("validation[0]", "validation[1]"))

    rng = np.random.default_rng(seed) if seed is not None else _random.generator()
    classify = _is_classifier(criterion)
    params = model.parameters()
    history = History()
    nonfinite = {id(p) for p in params if not _checks._all_finite(p._data)}   # (not fit's doing)
    saved = _modes(model)
    whole = _WholeUpdates()
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            model.training()
            order = rng.permutation(N) if shuffle else np.arange(N)
            batches = _batches(N, batch_size, order)
            total, seen, correct, counted = 0.0, 0, 0, 0
            # A manual bar (not tqdm(batches)): it must stay open for the validation numbers.
            bar = tqdm(total=len(batches), desc=f"epoch {epoch}/{epochs}", unit="batch",
                       leave=True, disable=not progress, dynamic_ncols=True)
            try:
                for b, idx in enumerate(batches):
                    xb, yb, lb = _take(x, y, lengths, idx, per_step)
                    kw = _crit_kwargs(criterion, lb)
                    with _in_batch(epoch, b, len(batches)):
                        out = model.forward(xb, lengths=lb)
                        loss = criterion.forward(out, yb, **kw)
                        g = criterion.backward(out, yb, **kw)
                        model.zero_grad_parameters()     # (here: a refusal above keeps them)
                        model.backward(xb, g)
                        with whole:                      # (Ctrl-C: after, not amid it)
                            if clip is not None and params:
                                clip_grad_norm(params, clip)
                            if lr is None:
                                optimizer.step()
                            else:
                                model.update_parameters(lr)
                    total, seen = total + loss * len(idx), seen + len(idx)
                    post = {"loss": f"{total / seen:.4f}"}
                    if classify:
                        c, n = _hits(out, yb, lb, per_step)
                        correct, counted = correct + c, counted + n
                        post["acc"] = f"{correct / counted:.4f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                _check_finite_after(params, epoch, len(batches), nonfinite)
                history.loss.append(total / N)
                if classify:
                    history.accuracy.append(correct / counted)
                if val is not None:
                    vloss, vacc = _evaluate(model, criterion, *val, batch_size, per_step)
                    history.val_loss.append(vloss)
                    post["val_loss"] = f"{vloss:.4f}"
                    if vacc is not None:
                        history.val_accuracy.append(vacc)
                        post["val_acc"] = f"{vacc:.4f}"
                    bar.set_postfix(post, refresh=False)
            finally:
                bar.close()
            history.seconds.append(time.perf_counter() - start)
            history.epochs = epoch
            if callback is not None and _stops(callback(epoch, history)):
                break
    finally:
        whole.close()
        _restore_modes(saved)
    return history


class _WholeUpdates:
    """``with whole:`` around an update (clipping and the optimizer's step): the Python handlers
    of signals (Ctrl-C's KeyboardInterrupt; those ``kernels._pair`` defers) that arrive inside
    run when it has ended, so that an interrupt never leaves some parameters updated and the
    others not (an update is a Python loop over the parameters). The handlers are replaced once
    for the whole run (swapping one costs ~8 us, a small batch's update a few), on the main
    thread only (the only one where Python runs them); ``close`` puts back each one that is
    still this object's."""

    def __init__(self):
        self.inside, self.arrived, self.originals = False, [], {}
        if threading.current_thread() is not threading.main_thread():
            return
        for s in _DEFERRED:
            handler = signal.getsignal(s)
            if callable(handler):
                self.originals[s] = handler
                signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        if self.inside:
            if signum not in self.arrived:
                self.arrived.append(signum)
        else:
            self.originals[signum](signum, frame)

    def __enter__(self):
        self.inside = True

    def __exit__(self, *exc):
        self.inside = False
        arrived, self.arrived = self.arrived, []
        for s in arrived:                                # now that the update has ended
            self.originals[s](s, None)

    def close(self):
        for s, handler in self.originals.items():
            if signal.getsignal(s) == self._handle:     # (not one set since: left as it is)
                signal.signal(s, handler)
