"""Criteria (losses), Torch7 style: ``loss = c.forward(input, target)``, ``grad = c.backward(input, target)``.

Shape key: N = rows (a batch), C = classes, T = time steps, B = batch.

A criterion has no parameters. ``forward`` returns the loss as a Python float; ``backward``
returns dL/dinput, an array of the input's shape and dtype where that is float32 or float64
(other real dtypes, ints or float16, give float64; the sums themselves run in float64).
``c(input, target)`` is ``c.forward(input, target)``.

Losses are averaged over the batch (Torch7's ``sizeAverage = true``). `SequencerCriterion`
sums its inner criterion over the time steps and is the one criterion that takes ``lengths=``;
the others have no time axis and refuse it (wrap them in `SequencerCriterion`).

Finite but huge values can make a loss overflow float64, or a gradient its input's dtype
(`MSECriterion` on float32 values near 3e38): such a call is refused with a ValueError, never
answered with inf.
"""

import contextlib
import math

import numpy as np
from numba import njit

from kernels import _ahead

from . import _checks
from .containers import _stack_steps, _valid_mask
from .layers import _is_table
from .module import checked

__all__ = ["Criterion", "MSECriterion", "ClassNLLCriterion", "CrossEntropyCriterion",
           "BCECriterion", "SequencerCriterion"]


def _float_input(x, name="input"):
    """``x`` as a finite float32/float64 array (other real dtypes become float64); a table of
    step arrays is stacked. Returns ``(array, was_list)``."""
    if _is_table(x):
        a, was_list = _checks.sequence(x, name, ndim=np.ndim(x[0]) + 1)
    else:
        a, was_list = _checks.finite_array(x, name), False
    if a.dtype not in _checks.FLOAT_DTYPES:
        a = a.astype(np.float64)
    if a.ndim == 0:
        raise ValueError(f"{name}: expected an array of at least 1 dimension, got a 0-d one")
    if a.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {a.shape}")
    return a, was_list


def _class_targets(target, N, C, check_range=True):
    """0-based class ids (N,) as int64, each in [0, C) (not looked at when ``check_range`` is
    False: the caller checks them on its own way through, as `_nll_scored` does)."""
    t = _checks.finite_array(target, "target", kind="i")
    if t.shape != (N,):
        raise ValueError(f"target: expected shape ({N},) (one class id per input row), got {t.shape}")
    if not check_range:
        return t
    lo, hi = _checks.int_range(t)                                # N >= 1: input is non-empty
    if lo < 0 or hi >= C:
        raise ValueError(f"target: expected class ids in [0, {C - 1}] (C = {C}, 0-based), "
                         f"got min {lo}, max {hi}")
    return t


def _overflow(what, x, t):
    """The ValueError for a loss or gradient that overflowed although ``x`` and ``t`` are finite."""
    dtype = "float64" if what == "loss" else x.dtype
    target = f", |target| up to {np.abs(t).max():.4g}" if t.dtype.kind == "f" else ""
    return ValueError(f"input, target: expected values for which the {what} is finite in {dtype}, "
                      f"got |input| up to {np.abs(x).max():.4g}{target}: the {what} overflows")


class Criterion:
    """Base class: validation, ``forward`` / ``backward`` plumbing. Subclasses implement

      _check(input, target) -> (x, t)     validated arrays (x: float32/float64)
      _loss(x, t)           -> float      the loss, computed in float64
      _grad(x, t)           -> array      dL/dx in float64 (cast to x's dtype by ``backward``)

    and, optionally, the per-row form that lets `SequencerCriterion` score every step at once:

      _rows(x, t) -> (l, g)   l: (N,) row losses with ``loss = mean(l)``;
                              g: dL/dx times N, so ``grad = g / N``

    A loss that is not finite is refused (ValueError); so is a gradient, unless the class sets
    ``_grad_bounded = True`` (its gradient cannot overflow: the check is skipped).
    """

    _rows = None                                                 # no per-row form: loop over steps
    _grad_bounded = False            # True where |dL/dinput| is small by design: no overflow check

    def __init__(self):
        self.output = None                                       # the last forward's loss

    def forward(self, input, target, lengths=None):
        """The loss (a float) of ``input`` against ``target``."""
        self._no_lengths(lengths)
        x, t = self._check(input, target)
        loss = float(self._loss(x, t))
        if not math.isfinite(loss):
            raise _overflow("loss", x, t)
        self.output = loss
        return self.output

    def __call__(self, *args, **kwargs):
        """``m(...)`` is ``m.forward(...)``, a subclass's own ``forward`` included."""
        return self.forward(*args, **kwargs)

    def backward(self, input, target, lengths=None):
        """dL/dinput, shaped like ``input``, in its dtype where that is float32 or float64
        (else float64)."""
        self._no_lengths(lengths)
        x, t = self._check(input, target)
        with np.errstate(over="ignore"):                         # (an overflow: refused below)
            g = self._grad(x, t).astype(x.dtype, copy=False)
        return self._finite_grad(g, x, t)

    def _finite_grad(self, g, x, t):
        """``g``, unless huge (finite) values of ``x`` and ``t`` made it overflow: ValueError."""
        if self._grad_bounded or _checks._all_finite(g):
            return g
        raise _overflow("gradient", x, t)

    def _no_lengths(self, lengths):
        if lengths is not None:
            raise ValueError(f"lengths: {type(self).__name__} has no time axis, expected None, got "
                             f"{type(lengths).__name__}; wrap it in SequencerCriterion to use lengths")

    def config(self):
        """Constructor arguments that rebuild this criterion."""
        return {}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class MSECriterion(Criterion):
    """Mean squared error over every element: ``L = mean((x - t)^2)``.

    input, target: the same shape, any.
    """

    def _check(self, input, target):
        x, _ = _float_input(input)
        t = _checks.finite_array(target, "target", dtype=np.float64)
        _checks.same_shape(t, x.shape, "target")
        return x, t

    def _loss(self, x, t):
        return np.mean((x.astype(np.float64) - t) ** 2)

    def _grad(self, x, t):
        return 2.0 * (x.astype(np.float64) - t) / x.size        # dL/dx = 2 (x - t) / numel

    def _rows(self, x, t):
        d = (x.astype(np.float64) - t).reshape(len(x), -1)      # (N, F): F elements per row
        F = d.shape[1]
        return (d * d).mean(axis=1), (2.0 / F * d).reshape(x.shape)


class ClassNLLCriterion(Criterion):
    """Negative log-likelihood of the target classes: ``L = -mean_n x[n, t_n]``.

    input: (N, C) log-probabilities (a `LogSoftMax` output); target: (N,) 0-based class ids.
    """

    _grad_bounded = True                                         # -1/N or 0

    def _check(self, input, target):
        x, _ = _float_input(input)
        return x, _class_targets(target, *_log_probs_shape(x))

    def _loss(self, x, t):
        return -np.mean(x[np.arange(len(t)), t], dtype=np.float64)

    def _grad(self, x, t):
        g = np.zeros(x.shape)                                    # (N, C)
        g[np.arange(len(t)), t] = -1.0 / len(t)                  # dL/dx[n, t_n] = -1/N
        return g

    def _rows(self, x, t):
        return _nll_rows(np.ascontiguousarray(x), np.ascontiguousarray(t))


def _log_probs_shape(x):
    """(N, C) of ClassNLLCriterion's input, or the ValueError naming it."""
    if x.ndim != 2:
        raise ValueError(f"input: expected (N, C) log-probabilities, got shape {x.shape}")
    return x.shape


def _nll_scored(x, target, n, need_grad):
    """`SequencerCriterion`'s whole batch for a plain `ClassNLLCriterion`, in one compiled pass:
    ``(sum_r l_r / n, dL/dx)`` with l_r = -x[r, t_r] and dL/dx = -1/n at (r, t_r), else 0, in
    x's dtype (the numbers of ``_rows`` and its weighting, without their temporaries).

    x: (N, C), already checked by the caller (finite, float32/float64); target: checked here.
    """
    N, C = _log_probs_shape(x)
    t = _class_targets(target, N, C, check_range=False)
    g = np.zeros(x.shape, x.dtype) if need_grad else np.zeros((0, C), x.dtype)
    _ahead.follow("nll")                                         # (empty cache: kernels._ahead)
    loss, ok = _nll_scored_core(np.ascontiguousarray(x), np.ascontiguousarray(t), n, g)
    if not ok:
        _class_targets(t, N, C)                                  # raises, naming the range
    return loss, (g if need_grad else None)


@njit(cache=True)
def _nll_scored_core(x, t, n, g):
    """Fills ``g`` (zeros on entry, (N, C) or (0, C) for no gradient) and returns (loss, True);
    (0.0, False) without touching anything when a class id is outside [0, C)."""
    N, C = x.shape
    for r in range(N):
        if t[r] < 0 or t[r] >= C:
            return 0.0, False
    total = 0.0
    for r in range(N):
        total -= x[r, t[r]]
        if g.shape[0]:
            g[r, t[r]] = -1.0 / n
    return total / n, True


@njit(cache=True)
def _nll_rows(x, t):
    """``ClassNLLCriterion._rows``: l[n] = -x[n, t_n] and g = dl[n]/dx (-1 at (n, t_n), else 0),
    both float64, in one compiled pass (NumPy's fancy indexing cost ~10 us at 5 rows)."""
    N, C = x.shape
    l = np.empty(N)
    g = np.zeros((N, C))
    for n in range(N):
        l[n] = -x[n, t[n]]
        g[n, t[n]] = -1.0
    return l, g


def _log_softmax(z):
    """log softmax over the last axis in float64, shifted by the max."""
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class CrossEntropyCriterion(ClassNLLCriterion):
    """`LogSoftMax` then `ClassNLLCriterion`, in one stable step: ``L = -mean_n log softmax(x_n)[t_n]``.

    input: (N, C) unnormalised scores (logits); target: (N,) 0-based class ids.
    """

    def _check(self, input, target):
        x, _ = _float_input(input)
        if x.ndim != 2:
            raise ValueError(f"input: expected (N, C) scores (logits), got shape {x.shape}")
        return x, _class_targets(target, *x.shape)

    def _loss(self, x, t):
        return super()._loss(_log_softmax(x), t)

    def _grad(self, x, t):
        g = np.exp(_log_softmax(x))                              # softmax, (N, C)
        g[np.arange(len(t)), t] -= 1.0                           # dL/dx = (softmax - onehot(t)) / N
        return g / len(t)

    def _rows(self, x, t):
        n = np.arange(len(t))
        logp = _log_softmax(x)
        g = np.exp(logp)
        g[n, t] -= 1.0
        return -logp[n, t], g


class BCECriterion(Criterion):
    """Binary cross-entropy: ``L = -mean(t log p + (1 - t) log(1 - p))``.

    input p: probabilities in [0, 1] (a `Sigmoid` output); target t: the same shape, in [0, 1].
    As in PyTorch, each log is clamped at -100 so that p = 0 or 1 gives a finite loss, and the
    gradient's denominator p (1 - p) at 1e-12.
    """

    _grad_bounded = True                                         # at most 1e12 / numel

    def _check(self, input, target):
        x, _ = _float_input(input)
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"input: expected probabilities in [0, 1], got min {x.min()}, max {x.max()}")
        t = _checks.finite_array(target, "target", dtype=np.float64)
        _checks.same_shape(t, x.shape, "target")
        if t.min() < 0 or t.max() > 1:
            raise ValueError(f"target: expected values in [0, 1], got min {t.min()}, max {t.max()}")
        return x, t

    def _loss(self, p, t):
        p = p.astype(np.float64)
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), -100.0)
            log_1mp = np.maximum(np.log(1.0 - p), -100.0)
        return -np.mean(t * log_p + (1.0 - t) * log_1mp)

    def _grad(self, p, t):
        p = p.astype(np.float64)
        # dL/dp = (p - t) / (p (1 - p)) / numel
        return (p - t) / np.maximum(p * (1.0 - p), 1e-12) / p.size

    def _rows(self, p, t):
        p = p.astype(np.float64)
        F = p.size // len(p)                                     # elements per row
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), -100.0)
            log_1mp = np.maximum(np.log(1.0 - p), -100.0)
        l = -(t * log_p + (1.0 - t) * log_1mp).reshape(len(p), -1).mean(axis=1)
        return l, (p - t) / np.maximum(p * (1.0 - p), 1e-12) / F


def _rows_match_loss(criterion):
    """Whether ``criterion._rows`` describes its own loss: the nearest class (in method order)
    that defines ``_loss`` or ``_grad`` also defines ``_rows``, and no class before it defines
    ``forward`` or ``backward``. A user's subclass that changes the loss of, say,
    `MSECriterion` without a ``_rows`` of its own, or that wraps its ``forward`` (Torch7 style),
    is scored step by step, through its own ``forward`` and ``backward``; so is a criterion
    whose ``forward`` or ``backward`` was replaced on the object itself."""
    own = getattr(criterion, "__dict__", ())
    if "forward" in own or "backward" in own:                # (replaced on the instance)
        return False
    klass = type(criterion)
    found = _ROWS_MATCH.get(klass)
    if found is None:
        found = False
        for k in klass.__mro__:
            own = vars(k)
            if k is not Criterion and ("forward" in own or "backward" in own):
                break
            if "_loss" in own or "_grad" in own:
                found = own.get("_rows") is not None
                break
        _ROWS_MATCH[klass] = found
    return found


_ROWS_MATCH = {}        # criterion class -> _rows_match_loss, looked up once per class

# SequencerCriterion keeps the gradient its forward computed for inputs up to this many entries:
# at tiny shapes checking and scoring again cost a visible part of a training step, and up to
# this size the copies kept are cheaper than that.
_KEEP_MAX = 1 << 16


def _same_values(a, kept):
    """Whether ``a`` is an array with ``kept``'s dtype, shape and bytes. Bytes, not values: a
    kept target may hold NaN at padding steps (never read, so never checked), and equal bytes
    match there where ``==`` would not."""
    return (type(a) is np.ndarray and a.dtype == kept.dtype and a.shape == kept.shape
            and a.tobytes() == kept.tobytes())


@contextlib.contextmanager
def _as_rows_of(x, t, which=""):
    """Around an inner criterion's check of the (T, B) steps flattened to T*B rows: its refusal
    gets the caller's shapes added (its own are of the rows). Only rnncore's plain ValueError /
    TypeError: an exception class of one's own passes as it was raised."""
    try:
        yield
    except (ValueError, TypeError) as e:
        if type(e) not in (ValueError, TypeError):
            raise
        raise type(e)(f"{e} (the (T, B) steps of input {x.shape} and target {t.shape} as T*B "
                      f"rows{which})") from None


class SequencerCriterion(Criterion):
    """Apply ``criterion`` at every time step and SUM over the steps (Torch7's ``nn.SequencerCriterion``).

    input: (T, B, ...) array or a list of T (B, ...) arrays; target: (T, B, ...) array or a list
    of T arrays (e.g. (T, B) class ids for `ClassNLLCriterion`).
    ``L = sum_t criterion(input[t], target[t])``.

    With ``lengths`` (B,): step t's criterion sees only the rows still running at that step,
    ``{b : t < lengths[b]}`` (so its batch average is over those rows); padding steps add nothing
    to the loss, take a zero gradient, and their targets are never read (pad them with anything).
    ``backward`` reuses the lengths of the last ``forward`` unless given its own, and answers in
    the kind the input came in (list or array). A ``backward`` on the values of the last
    ``forward`` (equal arrays, no lengths of its own) returns a copy of the gradient that forward
    computed alongside the loss (kept for inputs up to 2^16 entries), the same numbers.
    """

    def _new_criterion(self, criterion):
        if not isinstance(criterion, Criterion):
            raise TypeError(f"criterion: expected a rnncore Criterion, got {type(criterion).__name__}")
        self._kept = None                # (the gradient kept by a forward was the old one's)
        return criterion

    #: The criterion applied at every step; checked when set, also after construction (a
    #: backward after a swap then computes the new one's gradient, not the kept old one's).
    criterion = checked(_new_criterion)

    def __init__(self, criterion):
        super().__init__()
        self.criterion = criterion
        self._lengths = None                                     # lengths of the last forward
        self._kept = None                                        # (input, target, grad) copies

    def _check_seq(self, input, target, lengths):
        x, was_list = _float_input(input)
        if x.ndim < 2:
            raise ValueError(f"input: expected a time-major array (T, B, ...), got shape {x.shape}")
        t, _ = _stack_steps(target, "target", finite=False)     # (checked where read, below)
        if t.shape[:2] != x.shape[:2]:
            raise ValueError(f"target: expected leading (T, B) = {x.shape[:2]} like input, "
                             f"got shape {t.shape}")
        T, B = x.shape[:2]
        lengths = _checks.lengths(lengths, T, B)
        if t.dtype.kind == "f" and lengths is None:              # (with lengths the inner
            _checks.finite_array(t, "target")                    # criterion checks valid rows)
        return x, t, was_list, lengths

    def _all_steps(self, x, t, lengths, need_grad=True):
        """Loss and dL/dx (T, B, ...) of every step at once, through the inner ``_rows``.

        L = sum_s mean_{b valid at s} l(s, b): each valid row's loss and gradient are weighted by
        1 / (rows valid at its step), the same numbers as calling the inner criterion per step.
        """
        T, B = x.shape[:2]
        if lengths is None and type(self.criterion) is ClassNLLCriterion:   # the common case,
            with _as_rows_of(x, t):                                         # in one pass
                loss, g = _nll_scored(x.reshape(T * B, *x.shape[2:]),
                                      t.reshape(T * B, *t.shape[2:]), B, need_grad)
            return loss, (None if g is None else g.reshape(x.shape))
        if lengths is None:                                      # every row of every step:
            with _as_rows_of(x, t):                              # one weight, 1/B
                xv, tv = self.criterion._check(x.reshape(T * B, *x.shape[2:]),
                                               t.reshape(T * B, *t.shape[2:]))
            l, g = self.criterion._rows(xv, tv)
            loss = float(l.sum()) / B
            if not need_grad:
                return loss, None
            with np.errstate(over="ignore"):                     # (backward refuses an Inf)
                g = (g * (1.0 / B)).astype(x.dtype, copy=False)
            return loss, g.reshape(x.shape)
        valid = _valid_mask(lengths, T, B)                       # (T, B): step s of row b runs
        rows = valid.reshape(-1)
        per_step = valid.sum(axis=1)                             # rows still running at step s
        weight = np.repeat(1.0 / np.maximum(per_step, 1), B)[rows]
        xv, tv = x.reshape(T * B, *x.shape[2:])[rows], t.reshape(T * B, *t.shape[2:])[rows]
        with _as_rows_of(x, t, ", valid steps only"):           # validated once, valid rows
            xv, tv = self.criterion._check(xv, tv)
        l, g = self.criterion._rows(xv, tv)
        if not need_grad:
            return float(np.dot(l, weight)), None
        grad = np.zeros(x.shape, x.dtype)                        # 0 at padding
        with np.errstate(over="ignore"):                         # (backward refuses an Inf)
            grad.reshape(T * B, *x.shape[2:])[rows] = g * weight.reshape(-1, *[1] * (g.ndim - 1))
        return float(np.dot(l, weight)), grad

    def _per_step(self, x, t, lengths, need_grad=True):
        """The same by definition: the inner criterion called once per step (any criterion)."""
        T, B = x.shape[:2]
        steps = np.full(B, T) if lengths is None else lengths
        loss, grad = 0.0, (np.zeros_like(x) if need_grad else None)
        saved = dict(self.criterion.__dict__)                    # (its .output, say)
        try:
            for s in range(T):
                r = np.flatnonzero(steps > s)                    # rows still running at step s
                if r.size:
                    loss += self.criterion.forward(x[s, r], t[s, r])
                    if need_grad:
                        grad[s, r] = self.criterion.backward(x[s, r], t[s, r])
        except Exception as e:                                   # a step refused: as it was
            self.criterion.__dict__.clear()
            self.criterion.__dict__.update(saved)
            if type(e) in (ValueError, TypeError):               # (not a subclass of one's own)
                raise type(e)(f"{e} (at step {s} of input {x.shape}, target {t.shape})") from e
            raise
        return loss, grad

    def _step_sums(self, input, target, lengths):
        """(S, C), each (T,): S[s] the sum of the losses of the rows valid at step s, C[s] their
        count, so that ``forward`` is ``sum over s with C[s] > 0 of S[s] / C[s]``. Sums of
        batches give the loss of the whole set (``rnncore.score``), which averages of batch
        losses do not when ``lengths`` leave each step's batches with other row counts. Changes
        nothing the last ``forward`` kept."""
        x, t, _, lengths = self._check_seq(input, target, lengths)
        T, B = x.shape[:2]
        valid = np.ones((T, B), bool) if lengths is None else _valid_mask(lengths, T, B)
        counts = valid.sum(axis=1)
        if _rows_match_loss(self.criterion):
            rows = valid.reshape(-1)
            xv, tv = x.reshape(T * B, *x.shape[2:])[rows], t.reshape(T * B, *t.shape[2:])[rows]
            with _as_rows_of(x, t, "" if lengths is None else ", valid steps only"):
                xv, tv = self.criterion._check(xv, tv)
            l, _ = self.criterion._rows(xv, tv)
            step = np.repeat(np.arange(T), B)[rows]
            sums = np.bincount(step, weights=np.asarray(l, np.float64), minlength=T)
        else:                                                    # any criterion: its batch mean
            saved = dict(self.criterion.__dict__)                # times the rows it averaged
            try:
                sums = np.array([self.criterion.forward(x[s, valid[s]], t[s, valid[s]]) * counts[s]
                                 if counts[s] else 0.0 for s in range(T)])
            finally:
                self.criterion.__dict__.clear()
                self.criterion.__dict__.update(saved)
        if not np.all(np.isfinite(sums)):
            raise _overflow("loss", x, t)
        return sums, counts

    def _evaluate(self, x, t, lengths, need_grad):
        if _rows_match_loss(self.criterion):
            return self._all_steps(x, t, lengths, need_grad)
        return self._per_step(x, t, lengths, need_grad)

    def forward(self, input, target, lengths=None):
        x, t, _, lengths = self._check_seq(input, target, lengths)
        # The per-row form yields the gradient with the loss: keep it (and copies of what it was
        # computed from) when small, for a backward on the same values (see ``backward``).
        keep = x.size <= _KEEP_MAX and _rows_match_loss(self.criterion)
        loss, g = self._evaluate(x, t, lengths, need_grad=keep)
        if not math.isfinite(loss):
            raise _overflow("loss", x, t)
        self._lengths = lengths
        self._kept = (x.copy(), t.copy(), g) if keep else None
        self.output = float(loss)
        return self.output

    def backward(self, input, target, lengths=None):
        if lengths is None:
            kept = getattr(self, "_kept", None)                  # the usual training step:
            if kept is not None and _same_values(input, kept[0]) and _same_values(target, kept[1]):
                return self._finite_grad(kept[2].copy(), *kept[:2])   # forward's gradient
            kept_lengths, lengths = True, self._lengths
        else:
            kept_lengths = False
        try:
            x, t, was_list, lengths = self._check_seq(input, target, lengths)
        except ValueError as e:
            if kept_lengths and str(e).startswith("lengths:"):   # not the caller's: say whose
                raise ValueError(f"lengths (of the last forward, which backward reuses when "
                                 f"given none): {str(e)[len('lengths: '):]}") from None
            raise
        _, g = self._evaluate(x, t, lengths, need_grad=True)
        g = self._finite_grad(g, x, t)
        return list(g) if was_list else g

    @property
    def _grad_bounded(self):
        return self.criterion._grad_bounded

    def __repr__(self):
        return f"SequencerCriterion({self.criterion!r})"
