"""Feed-forward layers: `Linear`, `Embedding`, activations, `Dropout`, `LogSoftMax`, `SoftMax`.

Shape key: N... = any leading dimensions (a batch ``(B,)``, or a whole time-major sequence
``(T, B)``: these layers act on the last axis only, so one call covers every step at once),
I = in_features, O = out_features, V = num_embeddings, E = embedding_dim.

Every layer follows the Torch7 contract of `rnncore.Module`::

    y  = m.forward(x)        # x: (N..., F) array, or a list of T (B, F) arrays -> same kind back
    gx = m.backward(x, gy)   # dL/dx; parameter grads are ADDED to Parameter.grad

These layers act on each step on its own, so padding steps cannot change valid ones; the
containers zero a chain's outputs at padding steps once, at its end, and do not hand
``lengths=`` to these layers (``Module._takes_lengths``). Called directly with ``lengths=``
(B,), a layer checks it against its time-major input (T, B, ...) and does the same itself: its
outputs at padding steps are 0, and padding takes no gradient.

Inputs are cast to the module's dtype (float32 by default, float64 for gradient checks).
"""

import reprlib

import numpy as np

from . import _checks
from .module import Module, checked
from .random import generator, uniform
from kernels.linear import linear_backward_unchecked, linear_forward_unchecked
from kernels.log_softmax import log_softmax_backward_unchecked, log_softmax_forward_unchecked

__all__ = ["Linear", "Embedding", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout",
           "LogSoftMax", "SoftMax"]


# -- input helpers shared by the layers and containers ------------------------------------------
def _is_table(x):
    """A Torch7 ``Sequencer`` table: a non-empty list (or tuple) of NumPy arrays, one per step."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(s, np.ndarray) for s in x)


def _float_input(x, dtype, name="x", empty_ok=False):
    """``x`` as a finite array of ``dtype``, no dimension 0 (unless ``empty_ok``: the caller
    says what it expects); a table of step arrays is stacked on a new axis 0.

    Returns ``(array, was_list)`` so that the caller answers in the kind it was given.
    """
    if _is_table(x):
        a, was_list = _checks.sequence(x, name, dtype=dtype, ndim=np.ndim(x[0]) + 1)
    else:
        a, was_list = _checks.finite_array(x, name, dtype=dtype), False
    if a.ndim == 0:
        raise ValueError(f"{name}: expected an array with at least one dimension, got a scalar")
    if 0 in a.shape and not empty_ok:            # as every layer with weights refuses it
        raise ValueError(f"{name}: expected non-empty dimensions, got shape {a.shape}")
    return a, was_list


def _like(y, was_list):
    """Answer in the kind the input came in: a list of steps, or one array."""
    return list(y) if was_list else y


def _valid_mask(lengths, T, B):
    """(T, B) bool, True at valid steps ``t < lengths[b]``."""
    return np.arange(T)[:, None] < lengths[None, :]


def _zero_padding(a, valid):
    """``a`` (T, B, ...) with the padding steps set to 0 (a new array)."""
    v = valid.reshape(valid.shape + (1,) * (a.ndim - 2))
    return np.where(v, a, a.dtype.type(0))


def _valid_steps(x, lengths, min_ndim):
    """None without ``lengths``; else the (T, B) valid steps of the time-major ``x`` (at least
    ``min_ndim`` axes: (T, B, F...) for float inputs, (T, B) for ids), ``lengths`` checked
    against its leading (T, B)."""
    if lengths is None:
        return None
    if x.ndim < min_ndim:
        layout = "(T, B)" if min_ndim == 2 else "(T, B, F...)"
        raise ValueError(f"lengths: given, so x must be time-major, {layout}, got shape {x.shape}")
    T, B = x.shape[:2]
    return _valid_mask(_checks.lengths(lengths, T, B), T, B)


def _check_input_shape(input_shape, name="input_shape"):
    if isinstance(input_shape, np.ndarray) and input_shape.ndim != 1:
        raise TypeError(f"{name}: expected a tuple of ints or None, got an array of shape "
                        f"{input_shape.shape} (pass its .shape)")
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{name}: expected a tuple of ints or None, "
                        f"got {reprlib.repr(input_shape)}") from None
    for i, d in enumerate(shape):
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1):
            raise ValueError(f"{name}: expected positive ints or None, got {reprlib.repr(shape)} "
                             f"({reprlib.repr(d)} at [{i}])")
    return shape


# -- Linear ------------------------------------------------------------------------------------
class Linear(Module):
    """Affine map of the last axis: ``y = x W^T + b``.

    x: (N..., I) -> y: (N..., O). Parameters ``weight`` (O, I) and ``bias`` (O,), initialised
    U(-1/sqrt(I), 1/sqrt(I)) as PyTorch does.
    """

    _takes_lengths = False                # (a container zeroes the padding itself)

    def __init__(self, in_features, out_features, dtype=np.float32):
        in_features = _checks.positive_int(in_features, "in_features")
        out_features = _checks.positive_int(out_features, "out_features")
        super().__init__(dtype)
        _checks.fits_in_memory(2 * self._parameter_count(in_features, out_features), self.dtype,
                               f"Linear(in_features={in_features}, out_features={out_features})",
                               "parameter and gradient values")
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / np.sqrt(in_features)
        self.weight = self._param("weight", uniform((out_features, in_features), bound, self.dtype))
        self.bias = self._param("bias", uniform((out_features,), bound, self.dtype))
        self._valid = None                                       # (T, B) with lengths=, else None

    @staticmethod
    def _parameter_count(in_features, out_features):
        """The number of parameter values of ``Linear(in_features, out_features)``."""
        return out_features * in_features + out_features        # weight (O, I), bias (O,)

    def _check_x(self, x):
        x, was_list = _float_input(x, self.dtype, empty_ok=True)
        if x.shape[-1] != self.in_features or x.size == 0:
            raise ValueError(f"x: expected (..., {self.in_features}) (in_features={self.in_features}), "
                             f"no axis empty, got shape {x.shape}")
        return x, was_list

    def _forward(self, x, lengths):
        x, was_list = self._check_x(x)
        valid = _valid_steps(x, lengths, 3)                      # (T, B, I) with lengths
        k = _checks.for_kernel                                   # (the kernel checks nothing)
        y = linear_forward_unchecked(k(x.reshape(-1, self.in_features)), k(self.weight.data),
                                     k(self.bias.data))
        y = y.reshape(x.shape[:-1] + (self.out_features,))      # (N..., O)
        self._valid = valid
        return _like(y if valid is None else _zero_padding(y, valid), was_list)

    def _backward(self, x, gy):
        # Torch7: the gradients are those of the given input (the one forward saw).
        x, was_list = self._check_x(x)
        gy, _ = _float_input(gy, self.dtype, "gy")
        expected = x.shape[:-1] + (self.out_features,)
        if gy.shape != expected:                 # (either may be the wrong one: name both)
            raise ValueError(f"gy: expected shape {expected} (this Linear's output for its input "
                             f"of shape {x.shape}), got {gy.shape}")
        if self._valid is not None and x.shape[:2] == self._valid.shape:
            gy = _zero_padding(gy, self._valid)                  # padding outputs are constant 0
        x2 = x.reshape(-1, self.in_features)                     # (N, I)
        g2 = gy.reshape(-1, self.out_features)                   # (N, O)
        k = _checks.for_kernel                                   # (the kernel checks nothing)
        gx, dW, db = linear_backward_unchecked(k(g2), k(x2), k(self.weight.data))
        if self.weight.requires_grad:                            # (frozen: nothing added)
            self.weight.grad += dW                               # dL/dW = sum_n gy_n x_n^T
        if self.bias.requires_grad:
            self.bias.grad += db                                 # dL/db = sum_n gy_n
        return _like(gx.reshape(x.shape), was_list)              # dL/dx = gy W, (N..., I)

    def output_shape(self, input_shape):
        shape = _check_input_shape(input_shape)
        if not shape or shape[-1] not in (None, self.in_features):
            raise ValueError(f"input_shape: expected (..., {self.in_features}), got {shape}")
        return shape[:-1] + (self.out_features,)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features)


# -- Embedding ---------------------------------------------------------------------------------
class Embedding(Module):
    """Lookup table: integer ids ``x`` of any shape -> rows of ``weight``, ``y = weight[x]``.

    x: (N...) ints in [0, V) -> y: (N..., E); e.g. a time-major batch of ids (T, B) -> (T, B, E).
    Parameter ``weight`` (V, E), initialised N(0, 1) as PyTorch does. ``freeze=True`` sets
    ``weight.requires_grad = False``: backward then accumulates nothing, and
    ``update_parameters`` and the optimizers leave the table alone.

    ``backward`` returns ``None``: there is no gradient with respect to integer ids.
    """

    _takes_lengths = False

    def __init__(self, num_embeddings, embedding_dim, freeze=False, dtype=np.float32):
        num_embeddings = _checks.positive_int(num_embeddings, "num_embeddings")
        embedding_dim = _checks.positive_int(embedding_dim, "embedding_dim")
        if not isinstance(freeze, (bool, np.bool_)):
            raise TypeError(f"freeze: expected True or False, got {freeze!r}")
        given = self.__dict__.pop("_pretrained", None)           # (from_pretrained's table)
        super().__init__(dtype)
        if given is None:
            _checks.fits_in_memory(2 * self._parameter_count(num_embeddings, embedding_dim),
                                   self.dtype,
                                   f"Embedding(num_embeddings={num_embeddings}, "
                                   f"embedding_dim={embedding_dim})", "parameter and gradient values")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        w = given if given is not None else \
            generator().standard_normal((num_embeddings, embedding_dim)).astype(self.dtype)
        self.weight = self._param("weight", w, requires_grad=not freeze)
        self._valid = None                                       # (T, B) with lengths=, else None

    @staticmethod
    def _parameter_count(num_embeddings, embedding_dim):
        """The number of parameter values of ``Embedding(num_embeddings, embedding_dim)``."""
        return num_embeddings * embedding_dim                    # weight (V, E)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, dtype=np.float32):
        """An `Embedding` holding a copy of ``embeddings`` (V, E), cast to ``dtype`` (the
        default float32 of every module, whatever the array's own: vectors loaded as float64
        then fit a float32 model; pass ``dtype=np.float64`` to keep float64). Draws nothing
        from the seeded stream (``rnncore.manual_seed``; a subclass's own ``__init__`` may):
        the initialisation that follows is the one it would have been without this call."""
        a = _checks.finite_array(embeddings, "embeddings", dtype=_checks.float_dtype(dtype, "dtype"))
        if a.ndim != 2 or 0 in a.shape:
            raise ValueError(f"embeddings: expected a non-empty 2-D array (num_embeddings, "
                             f"embedding_dim), got shape {a.shape}")
        if a is embeddings or np.may_share_memory(a, embeddings):
            a = a.copy()                                          # (the caller's stays theirs)
        own_init = cls.__init__ is not Embedding.__init__         # (a subclass's may change
        m = cls.__new__(cls)                                      # the weight after ours)
        m.__dict__["_pretrained"] = a.copy() if own_init else a   # Embedding.__init__ takes it
        m.__init__(a.shape[0], a.shape[1], freeze=freeze, dtype=dtype)
        if own_init:
            m.weight.data[...] = a
        return m

    @property
    def freeze(self):
        return not self.weight.requires_grad

    def _check_x(self, x):
        x = _checks.finite_array(x, "x", kind="i")                # (N...) int64
        if x.size == 0:
            raise ValueError(f"x: expected a non-empty array of ids, got shape {x.shape}")
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= self.num_embeddings:
            raise ValueError(f"x: expected ids in [0, {self.num_embeddings - 1}] "
                             f"(num_embeddings={self.num_embeddings}), got min {lo}, max {hi}")
        return x

    def _forward(self, x, lengths):
        was_list = _is_table(x)                                  # a list of (B,) steps: a list
        x = self._check_x(x)
        valid = _valid_steps(x, lengths, 2)                      # ids (T, B) with lengths
        y = self.weight.data[x]                                  # (N..., E)
        self._valid = valid
        return _like(y if valid is None else _zero_padding(y, valid), was_list)

    def _backward(self, x, gy):
        x = self._check_x(x)
        gy = _checks.finite_array(gy, "gy", dtype=self.dtype)
        _checks.same_shape(gy, x.shape + (self.embedding_dim,), "gy")
        if self._valid is not None and x.shape[:2] == self._valid.shape:
            gy = _zero_padding(gy, self._valid)                  # padding outputs are constant 0
        if self.weight.requires_grad:
            # y[n] = W[x[n]]  =>  dL/dW[v] = sum of gy[n] over the n with x[n] == v
            np.add.at(self.weight.grad, x.ravel(), gy.reshape(-1, self.embedding_dim))
        return None

    def output_shape(self, input_shape):
        return _check_input_shape(input_shape) + (self.embedding_dim,)

    def config(self):
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    freeze=self.freeze)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}" + (", freeze=True" if self.freeze else "")


# -- activations: y = f(x) elementwise (or along the last axis), any shape --------------------
class _Activation(Module):
    """Shared plumbing: validate, call ``_f`` / ``_df``, answer in the input's kind.

    Subclasses write the math as a pair, side by side:
      _f(x)            -> (y, cache)      the forward, and what the backward needs
      _df(gy, cache)   -> gx              the backward of that forward
    """

    _takes_lengths = False
    _keeps_forward = True
    _kept_for_backward = ("_cache",)

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self._cache = None

    def _forward(self, x, lengths):
        x_in = x
        x, was_list = _float_input(x, self.dtype)
        valid = _valid_steps(x, lengths, 3)                      # (T, B, F...) with lengths
        y, cache = self._f(x)
        self._cache = (x.shape, cache, x_in, was_list, valid)
        y = y if valid is None else _zero_padding(y, valid)
        if any(isinstance(c, np.ndarray) and np.may_share_memory(y, c) for c in _as_tuple(cache)):
            y = y.copy()          # the caller's to write into: backward reads the cache (tanh's y)
        return _like(y, was_list)

    def _backward(self, x, gy):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first")
        shape, cache, x_in, was_list, valid = self._cache
        # ``_df`` reads the forward's cache, never x: the forward's own input (array or list,
        # refilled since or not) needs no second check; anything else must be an input of that
        # shape for which the forward keeps the same (another forward in between, by a model
        # sharing this module, would otherwise go unnoticed: the gradient would silently be
        # that forward's). Computed again for it, so nothing is copied in the usual case.
        if x is not x_in:
            x, was_list = _float_input(x, self.dtype)
            _checks.same_shape(x, shape, "x")
            if not self._same_backward(x, cache):
                raise ValueError("x: expected the input of the last forward (backward "
                                 "differentiates that forward), got other values of its shape; "
                                 "call forward(x) first")
        gy, _ = _float_input(gy, self.dtype, "gy")
        _checks.same_shape(gy, shape, "gy")
        if valid is not None:
            gy = _zero_padding(gy, valid)                        # padding outputs are constant 0
        return _like(self._df(gy, cache), was_list)

    def _same_backward(self, x, cache):
        """Whether the forward of ``x`` would keep ``cache``: then backward is the same."""
        _, again = self._f(x)
        return all(np.array_equal(a, b) for a, b in zip(_as_tuple(again), _as_tuple(cache)))

    def output_shape(self, input_shape):
        shape = _check_input_shape(input_shape)
        if not shape:                                            # as forward refuses a scalar
            raise ValueError(f"input_shape: expected at least one dimension, got {shape}")
        return shape

    def _on_astype(self, dtype):
        self._cache = None                                       # backward needs a fresh forward


def _as_tuple(cache):
    return cache if isinstance(cache, tuple) else (cache,)


class ReLU(_Activation):
    """``y = max(x, 0)``."""

    def _f(self, x):
        pos = x > 0
        return np.where(pos, x, self.dtype.type(0)), pos

    def _df(self, gy, pos):
        return np.where(pos, gy, self.dtype.type(0))             # dy/dx = 1 if x > 0 else 0


def _checked_slope(v, dtype):
    v = _checks.positive_number(v, "slope", allow_zero=True)
    _checks.fits_dtype(v, "slope", dtype, "the module's dtype")     # 1e39: inf in float32
    return v


class LeakyReLU(_Activation):
    """``y = x if x > 0 else slope * x``."""

    slope = checked(lambda m, v: _checked_slope(v, m.dtype),
                    "The slope for x <= 0: a finite number >= 0 that the module's dtype holds.")

    def __init__(self, slope=0.01, dtype=np.float32):
        super().__init__(dtype)
        self.slope = slope

    def _check_astype(self, dtype):
        _checks.fits_dtype(self.slope, "slope", dtype, "the module's dtype")

    def _f(self, x):
        pos = x > 0
        return np.where(pos, x, self.dtype.type(self.slope) * x), pos

    def _df(self, gy, pos):
        return np.where(pos, gy, self.dtype.type(self.slope) * gy)   # dy/dx = 1 or slope

    def config(self):
        return dict(slope=self.slope)


class Tanh(_Activation):
    """``y = tanh(x)``."""

    def _f(self, x):
        y = np.tanh(x)
        return y, y

    def _df(self, gy, y):
        return gy * (1 - y * y)                                  # dy/dx = 1 - y^2


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp is only taken of -|x| <= 0."""
    e = np.exp(-np.abs(x))                                       # in (0, 1]
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``, computed without overflow for large |x|."""

    def _f(self, x):
        y = _sigmoid(x)
        return y, y

    def _df(self, gy, y):
        return gy * y * (1 - y)                                  # dy/dx = y (1 - y)


class Dropout(_Activation):
    """Inverted dropout: in ``training()`` mode ``y = x * m / (1 - p)`` with ``m ~ Bernoulli(1 - p)``.

    The mask comes from ``rnncore.random.generator()`` (seeded by ``rnncore.manual_seed``) and is
    reused by backward. In ``evaluate()`` mode, and when ``p == 0``, the layer is the identity,
    answering with a copy (as Torch7's does), never the caller's own array: writing into the
    output must not change the input.
    """

    p = checked(lambda m, v: _checks.probability(v, "p"), "The dropout rate, in [0, 1).")

    def __init__(self, p=0.5, dtype=np.float32):
        self.p = p
        super().__init__(dtype)

    @property
    def _keeps_forward(self):
        """Only its mask: in evaluate() mode, or at p = 0, it may appear twice in a chain."""
        return self.train and self.p > 0

    def _f(self, x):
        if not self.train or self.p == 0:
            return x.copy(), None
        mask = (generator().random(x.shape) >= self.p).astype(self.dtype)
        mask /= self.dtype.type(1 - self.p)                     # (N...), 0 or 1/(1-p)
        return x * mask, mask

    def _df(self, gy, mask):
        return gy.copy() if mask is None else gy * mask          # dy/dx = mask

    def _same_backward(self, x, cache):
        """Its backward reads the mask only: any x with the identity (evaluate(), p = 0); in
        training, the forward's own values (a mask drawn for another model's forward would
        otherwise pass)."""
        return cache is None or np.array_equal(x, _float_input(self._cache[2], self.dtype)[0])

    def config(self):
        return dict(p=self.p)


class LogSoftMax(_Activation):
    """``y = x - log(sum_j exp(x_j))`` over the last axis, shifted by the max for stability."""

    # the math, one compiled loop per row: kernels/log_softmax.py
    def _f(self, x):
        C = x.shape[-1]                     # (> 0: _float_input refuses empty dimensions)
        y = log_softmax_forward_unchecked(_checks.for_kernel(x.reshape(-1, C))).reshape(x.shape)
        return y, y

    def _df(self, gy, y):
        # dy_i/dx_j = [i == j] - softmax_j  =>  gx = gy - softmax * sum_i gy_i
        C = y.shape[-1]
        gx = log_softmax_backward_unchecked(_checks.for_kernel(gy.reshape(-1, C)),
                                            y.reshape(-1, C))    # (y: the forward's own output)
        return gx.reshape(y.shape)


class SoftMax(_Activation):
    """``y = exp(x) / sum_j exp(x_j)`` over the last axis, shifted by the max for stability."""

    def _f(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        return y, y

    def _df(self, gy, y):
        # dy_i/dx_j = y_i ([i == j] - y_j)  =>  gx = y * (gy - sum_i gy_i y_i)
        return y * (gy - (gy * y).sum(axis=-1, keepdims=True))
