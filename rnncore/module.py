"""`Parameter` and `Module`: the Torch7-style contract every layer, container and criterion follows.

A module's life in one training step::

    y  = m.forward(x, lengths=None)   # compute, and remember what backward needs
    gx = m.backward(x, gy)            # return dL/dx; ADD dL/dparam into every Parameter.grad
    m.update_parameters(lr)           # data -= lr * grad        (or an optimizer's step())
    m.zero_grad_parameters()          # grads back to zero: accumulation stops only here

Subclasses implement ``_forward(x, lengths)`` and ``_backward(x, gy)`` and declare their
parameters with ``self._param(name, array)`` and their children with ``self._child(module)``.
``forward`` / ``backward`` here do the shared work: a device array is copied to the host first,
and ``forward`` remembers ``lengths``; each module checks its own input in ``_forward``.
"""

import numpy as np

from . import _checks
from .device import check_device, to_host, unlock


class Parameter:
    """A trainable array and its gradient. Optimizers update ``data`` in place.

    ``version`` counts the times ``data`` was handed out or replaced: every ``p.data`` (read or
    write) may be followed by a change, so it counts as one. A layer on ``"cuda"`` keeps a GPU
    copy of its weights and uploads again when ``version`` (or the array itself) has moved, or
    when the values changed under another reference to the array (rnncore/device.py); while
    such a copy exists the host array is read-only, so a write through a reference taken since
    fails loudly instead of leaving the GPU copy stale (take ``p.data`` again to write).
    """

    __slots__ = ("_data", "_grad", "name", "_requires_grad", "version")

    def __init__(self, data, name, requires_grad=True):
        self._data = data
        self.version = 0
        self._grad = np.zeros_like(data)
        self.name = name
        self.requires_grad = requires_grad

    @property
    def data(self):
        self.version += 1
        d = self._data
        if not d.flags.writeable:
            unlock(d)             # locked while a GPU copy existed (rnncore/device.py)
        return d

    @data.setter
    def data(self, value):
        """A new array of the same shape and dtype (any memory layout); checked here, so that a
        wrong one is refused where it is set, not at some later forward or optimizer step."""
        old = self._data
        if value is old:                 # ``p.data -= u`` sets the same array back: changed
            self.version += 1
            return
        _check_replacement(value, old, f"{self.name}.data", "optimizers update it in place",
                           shape_hint=" (astype converts a model's dtype)")
        self._data = value
        self.version += 1

    _RENAMED = {"grad": "_grad", "requires_grad": "_requires_grad"}

    def __setstate__(self, state):
        """Unpickling (and ``copy.deepcopy``): the slots as saved; ``grad`` and
        ``requires_grad`` are the slots ``_grad`` and ``_requires_grad`` (a Parameter pickled
        before they were checked properties had them under their own names)."""
        for key, value in (state[1] if isinstance(state, tuple) else state).items():
            object.__setattr__(self, self._RENAMED.get(key, key), value)

    @property
    def requires_grad(self):
        """Whether backward adds into ``grad`` and optimizers update ``data`` (False: frozen)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        # checked here: "False" is truthy (the weight would go on training), and an array's
        # truth value fails deep inside a backward or an optimizer step, halfway through
        self._requires_grad = _checks.flag(value, f"{self.name}.requires_grad")

    @property
    def grad(self):
        """dL/d ``data``, same shape and dtype; backward *adds* to it (``zero_grad_parameters`` or
        an optimizer's ``zero_grad`` clears it)."""
        return self._grad

    @grad.setter
    def grad(self, value):
        """Checked like ``data``, and it must be writable: backward adds into this array."""
        if value is self._grad:          # ``p.grad += g`` sets the same array back: nothing new
            return
        _check_replacement(value, self._data, f"{self.name}.grad", "backward adds into it",
                           type_hint=" (to clear it: zero_grad_parameters(), or p.grad[...] = 0)")
        self._grad = value

    def __repr__(self):
        return f"Parameter({self.name}, shape={self._data.shape}, dtype={self._data.dtype})"


def _check_replacement(a, like, name, why, type_hint="", shape_hint=""):
    """Refuse ``a`` as the new array of a Parameter whose array is ``like`` unless it is a
    NumPy array of ``like``'s shape and dtype that takes in-place updates (``why``)."""
    if not isinstance(a, np.ndarray) or isinstance(a, (np.matrix, np.ma.MaskedArray)):
        hint = " (np.asarray(a) makes a plain array of it)" if isinstance(a, np.ndarray) else type_hint
        raise TypeError(f"{name}: expected a NumPy array, got {type(a).__name__}{hint}")
    if a.shape != like.shape or a.dtype != like.dtype:
        raise ValueError(f"{name}: expected a {like.dtype} array of shape {like.shape}, got "
                         f"{a.dtype} {a.shape}{shape_hint}")
    _check_writable(a, name, why)


def _check_writable(a, name, why):
    """Refuse an array that cannot take in-place updates entry by entry: a read-only one (a
    user's constant, ``np.broadcast_to``), or one whose entries share memory (a zero stride),
    where an update of one entry would change others too."""
    if not a.flags.writeable:
        raise ValueError(f"{name}: expected a writable array ({why}), got a read-only one; "
                         f"np.array(a) makes a writable copy")
    if _entries_may_overlap(a):
        raise ValueError(f"{name}: expected an array whose entries are separate memory ({why}), "
                         f"got strides {a.strides}; np.array(a) makes a copy")


def _entries_may_overlap(a):
    """True unless ``a``'s strides prove every entry its own memory: taken from the smallest
    stride up, each axis must step past all of the smaller axes' span (a zero stride, or a
    view made with ``as_strided`` whose rows overlap, fails; every slice, transpose and
    memory order of an ordinary array passes)."""
    span = a.itemsize                      # bytes covered by the axes taken so far
    for stride, n in sorted((abs(st), n) for st, n in zip(a.strides, a.shape) if n > 1):
        if stride < span:
            return True
        span += stride * (n - 1)
    return False


def snapshot(root):
    """Every module below ``root`` (each once, also if used twice) with a shallow copy of its
    attributes; ``restore`` puts them back. That is a module's whole state apart from its
    parameters, because a forward rebinds attributes (``self._cache = ...``, ``self.h_n``)
    rather than writing into arrays it kept, and never touches parameters or their grads.
    Used by containers (a refused forward changes nothing), ``trace`` and ``fit`` (a look at
    the output that leaves no trace)."""
    return [(m, m.__dict__.copy()) for m in root._subtree()]


def restore(saved):
    """Put back the attributes ``snapshot`` copied."""
    for m, attributes in saved:
        m.__dict__.clear()
        m.__dict__.update(attributes)


_adoptions = [0]     # counts every _child call: a subtree cached before one is built again


class checked:
    """A module attribute that every assignment checks, as the constructor checks its argument:
    ``p = checked(lambda module, v: _checks.probability(v, "p"))`` in a class body. Without it
    ``dropout.p = 1.0`` after construction gave all-NaN outputs (a 0/0 mask), and a str failed
    deep inside a forward. ``check(module, value)`` returns the value to keep or raises; the
    value lives in the instance's ``__dict__`` under ``_name`` (a module pickled before the
    attribute was checked has it under ``name``, and is read so)."""

    def __init__(self, check, doc=None):
        self.check, self.__doc__ = check, doc

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        d = obj.__dict__
        if self.slot in d:
            return d[self.slot]
        if self.name in d:
            return d[self.name]
        raise AttributeError(f"{type(obj).__name__!r} object has no attribute {self.name!r} "
                             f"(not set yet)")

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = self.check(obj, value)
        obj.__dict__.pop(self.name, None)


class Module:
    """Base class of every layer and container."""

    #: Where the module computes: "cpu", or "cuda" after ``to("cuda")`` (see rnncore/device.py).
    #: A container's is what its own last ``to()`` set: each child computes where its own says
    #: (one moved by itself, or added after the container's ``to()``, keeps its own; call
    #: ``to()`` on the whole model to move every module in it).
    device = "cpu"
    #: True where backward reads what the last forward kept (an activation's output, a
    #: recurrent layer's caches): such a module may not appear twice in a chain that runs
    #: backward, since its second forward replaces the first's (``Sequential`` refuses it).
    #: False here, for modules of one's own; rnncore's layers say which they are.
    _keeps_forward = False
    #: The attributes holding what the last forward kept for backward, which ``clear_state``
    #: sets to None (each of rnncore's modules whose backward asks for a forward when its
    #: attribute is None names it; a module of one's own may name its own).
    _kept_for_backward = ()
    #: False where ``lengths=`` changes nothing but the zeros at padding steps (layers acting on
    #: each step alone): a container then hands the layer none and zeroes the padding once.
    _takes_lengths = True
    #: True once a container adopted this module (``_child``): ``parameters()`` then leaves
    #: the names, which are the outermost container's keys, as they are.
    _adopted = False

    def __init__(self, dtype=np.float32):
        self.dtype = _checks.float_dtype(dtype, "dtype")
        self.train = True
        self._params = {}      # own parameters, by local name, in declaration order
        self._children = []    # sub-modules, in order
        self._lengths = None   # lengths= of the last forward (kept for inspection; each
                               # backward reads what its own forward kept, e.g. _cache, _valid)

    # -- declaration helpers for subclasses ------------------------------------------------
    def _param(self, name, array, requires_grad=True):
        p = Parameter(np.ascontiguousarray(array, dtype=self.dtype), name, requires_grad)
        self._params[name] = p
        return p

    def _child(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"module: expected a rnncore Module, got {type(module).__name__}")
        if any(m is self for m in module.modules()):
            raise ValueError(f"module: expected a module that does not hold this "
                             f"{type(self).__name__}, got "
                             f"{'itself' if module is self else 'one that holds it'} (a "
                             f"container inside itself would run forever)")
        self._children.append(module)
        module._adopted = True       # named by the containers above it from now on
        _adoptions[0] += 1
        for key, p in self.named_parameters():
            p.name = key             # its key in this state_dict (renamed again if this is adopted)
        return module

    # -- the Torch7 API ----------------------------------------------------------------------
    def forward(self, x, lengths=None):
        """Compute the output for ``x`` and keep what ``backward`` needs."""
        x = to_host(x)                  # [device] a device array is copied to NumPy first
        y = self._forward(x, lengths)
        self._lengths = lengths
        # Forwards finished (a refused one does not count; a container's undo puts the count
        # back): a container notes it, and refuses a backward after another model sharing the
        # module ran it (containers._noted_serials). A class replacing forward does not count.
        self._serial = self.__dict__.get("_serial", 0) + 1
        return y

    def __call__(self, *args, **kwargs):
        """``m(...)`` is ``m.forward(...)``, a subclass's own ``forward`` included."""
        return self.forward(*args, **kwargs)

    def backward(self, x, gy):
        """Return dL/dx for the input of the last ``forward`` and accumulate parameter grads."""
        return self._backward(to_host(x), to_host(gy))     # [device] as in forward

    def _forward(self, x, lengths):
        raise NotImplementedError

    def _backward(self, x, gy):
        raise NotImplementedError

    def named_parameters(self, prefix=""):
        """``(state_dict key, Parameter)`` pairs of this module and its children, in order. A
        module used twice (``Sequential(lin, Tanh(), lin)``) has its Parameters once, under
        their first key: optimizers and ``update_parameters`` then step each once."""
        seen = set()
        for key, p in self._all_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield key, p

    def _all_parameters(self, prefix):
        for name, p in self._params.items():
            yield prefix + name, p
        for i, child in enumerate(self._children):
            yield from child._all_parameters(f"{prefix}{i}.")

    def parameters(self):
        """Every Parameter of this module and its children (the same objects on every call).
        ``.name`` is its key in the ``state_dict`` of the outermost container: a Parameter is
        named when a container adopts its module, and again when that outermost module (one
        no container adopted) is asked here, since a module does not know the containers above
        it (an inner chain grown by ``add`` after it was adopted). Asking an inner module
        renames nothing."""
        if self._adopted:
            return self._parameter_list()
        params = []
        for key, p in self.named_parameters():
            p.name = key
            params.append(p)
        return params

    def _parameter_list(self):
        """``parameters()`` for rnncore's own use on any module of a tree: names left alone."""
        return [p for _, p in self.named_parameters()]

    def _subtree(self):
        """This module and every descendant, each once (a module used twice too). The
        descendants are kept until any container adopts a child (``snapshot`` runs on every
        container call); not ``self``, which would make the module a reference cycle, freed
        only by the garbage collector, its caches with it."""
        kept = self.__dict__.get("_descendants")
        if kept is None or kept[0] != _adoptions[0]:
            seen, below = {id(self)}, []
            for m in self.modules():
                if id(m) not in seen:
                    seen.add(id(m))
                    below.append(m)
            kept = self._descendants = (_adoptions[0], below)
        return [self] + kept[1]

    def modules(self):
        """This module and every descendant, depth first."""
        yield self
        for child in self._children:
            yield from child.modules()

    def zero_grad_parameters(self):
        for p in self._parameter_list():
            p.grad.fill(0)

    def update_parameters(self, lr):
        """Plain SGD step: ``data -= lr * grad`` for every trainable parameter."""
        lr = _checks.positive_number(lr, "lr", allow_zero=True)
        for dtype in {p._data.dtype for p in self._parameter_list()}:
            _checks.fits_dtype(lr, "lr", dtype)
        for p in self._parameter_list():
            if p.requires_grad:
                p.data -= p.data.dtype.type(lr) * p.grad

    def training(self):
        for m in self.modules():
            m.train = True
        return self

    def evaluate(self):
        for m in self.modules():
            m.train = False
        return self

    def clear_state(self):
        """Drop what the last forward kept for backward in this module and every one below it
        (Torch7's ``clearState``): recurrent layers' caches, activations' outputs, each child's
        input. A model that only predicts (``evaluate()``) keeps them too, since backward may
        follow any forward; after this, backward asks for a forward first. Outputs already
        returned, final states (``h_n``, ``c_n``), a remembered state, parameters and grads stay.
        The kernels' buffers go back to their pool, where the next forward reuses them
        (``kernels.release_workspace()`` returns the unused ones to the system). Returns self."""
        for m in self.modules():
            for name in m._kept_for_backward:
                setattr(m, name, None)
        return self

    # -- state -------------------------------------------------------------------------------
    def state_dict(self):
        """``{key: copy of the parameter's data}``; containers prefix keys with the child index."""
        return {key: p.data.copy() for key, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters, cast to this module's dtype.

        Unknown keys, missing keys and wrong shapes raise ``ValueError`` before anything changes.
        """
        state = dict(_checks.mapping(state, "state"))
        odd = [k for k in state if not isinstance(k, str)]
        if odd:
            raise TypeError(f"state: expected str keys like {next(iter(dict(self.named_parameters())), 'weight')!r}, "
                            f"got {odd[:3]!r}")
        state = self._convert_state(state)
        own = dict(self.named_parameters())
        unknown = sorted(set(state) - set(own))
        missing = sorted(set(own) - set(state))
        if unknown or missing:
            got = ", ".join(([f"unknown keys {unknown}"] if unknown else [])
                            + ([f"missing keys {missing}"] if missing else []))
            raise ValueError(f"state: expected exactly the keys {list(own)}, got {got}")
        staged = {}
        for key, p in own.items():
            arr = _checks.finite_array(state[key], f"state[{key!r}]", dtype=p._data.dtype)
            if arr.shape != p._data.shape:
                raise ValueError(f"state[{key!r}]: expected shape {p._data.shape}, got {arr.shape}")
            if any(np.may_share_memory(arr, q._data) for q in own.values()):
                arr = arr.copy()                         # (another key's weight, written first)
            staged[key] = arr
        for key, p in own.items():
            p.data[...] = staged[key]
        return self

    def _convert_state(self, state):
        """Hook for layers that accept foreign layouts (PyTorch's two LSTM biases, say)."""
        for i, child in enumerate(self._children):
            prefix = f"{i}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                for k in [k for k in state if k.startswith(prefix)]:
                    del state[k]
                keys = list(sub)                         # (a container child empties sub)
                try:
                    converted = child._convert_state(sub)
                except (ValueError, TypeError) as e:     # name the key as the caller wrote it
                    if type(e) not in (ValueError, TypeError):
                        raise
                    text = str(e)
                    for k in sorted(keys, key=len, reverse=True):
                        text = text.replace(repr(k), repr(prefix + k))
                    raise type(e)(text) from None
                state.update({prefix + k: v for k, v in converted.items()})
        return state

    def astype(self, dtype):
        """Convert every parameter (and grad) to ``dtype`` in place; returns ``self``.

        Refused (ValueError naming the parameter, nothing converted) where a finite value is
        outside ``dtype``'s range, as ``load_state_dict`` refuses one: float64 weights beyond
        float32's largest number would otherwise become inf. (An inf or NaN already there stays
        what it is.) A module already in ``dtype`` is left as it is: its arrays (and any ties
        between them), its saved forward and, on "cuda", its weight copies are kept.
        """
        dtype = self._check_astype_tree(dtype)
        converted = {}                                   # id(old array) -> (old, new): a tie
        for m in self.modules():                         # (two Parameters, one array) stays one
            params = list(m._params.values())
            if m.dtype == dtype and all(p._data.dtype == dtype and p._grad.dtype == dtype
                                        for p in params):
                continue
            m.dtype = dtype
            for p in params:
                if p._data.dtype != dtype:
                    old = p._data
                    p._data = converted.setdefault(id(old), (old, old.astype(dtype)))[1]
                    p.version += 1
                if p._grad.dtype != dtype:
                    p._grad = p._grad.astype(dtype)
            m._on_astype(dtype)
        return self

    def _check_astype_tree(self, dtype):
        """``dtype`` checked, and every module below (and its parameters) checked to fit it;
        raises before anything is converted. Returns the dtype."""
        dtype = _checks.float_dtype(dtype, "dtype")
        big = np.finfo(dtype).max
        for m in self.modules():
            for p in m._params.values():
                for what, a in (("", p._data), (".grad", p.grad)):
                    top = np.abs(a[np.isfinite(a)]).max(initial=0)   # (inf and NaN stay so)
                    if top > big:
                        raise ValueError(f"dtype: {p.name}{what} holds finite values beyond "
                                         f"{dtype}'s range (largest magnitude {top:.3g})")
            m._check_astype(dtype)
        return dtype

    def _check_astype(self, dtype):
        """Hook: raise if this module's non-parameter numbers do not fit ``dtype``."""

    def _on_astype(self, dtype):
        """Hook for modules with non-parameter float state (carried hidden states, say)."""

    # -- device ([device]: see rnncore/device.py for the design) ------------------------------
    def to(self, device):
        """Compute on ``device`` ("cpu" or "cuda") from now on; returns ``self``.

        On "cuda" the recurrent layers run their kernels on the GPU and keep GPU copies of their
        weights, uploaded again only after a change (rnncore/device.py says how one is seen);
        the authoritative parameters, gradients and optimizer state stay host NumPy arrays,
        inputs may be NumPy or device arrays, outputs are NumPy. Checked before anything
        changes: an unknown name raises ValueError, CUDA asked for where it cannot run raises
        RuntimeError (both naming ``device``), and the module is then left as it was. A
        recurrent layer's saved forward is dropped on a change of device (its kernels' caches
        belong to one device): call forward again before backward. The other modules compute
        on the host on either device and keep theirs.
        """
        device = check_device(device)
        for m in self.modules():
            if m.device != device:
                m.device = device
                m._on_to(device)
        return self

    def _on_to(self, device):
        """Hook for modules that keep device-specific state (a recurrent layer's kernel cache)."""

    # -- shapes ------------------------------------------------------------------------------
    def output_shape(self, input_shape):
        """Shape of the output for an input of ``input_shape`` (None for an unknown batch)."""
        return tuple(input_shape)

    def summary(self, input_shape, print_fn=print):
        """Print a table of layer, output shape and parameter count; return the total count."""
        from .summary import summary
        return summary(self, input_shape, print_fn=print_fn)

    def config(self):
        """Constructor arguments that rebuild this module (used by ``rnncore.save``)."""
        return {}

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

    def __repr__(self):
        name = type(self).__name__
        if not self._children:
            return f"{name}({self.extra_repr()})"
        inner = "\n".join(f"  ({i}): " + repr(c).replace("\n", "\n  ")
                          for i, c in enumerate(self._children))
        return f"{name}(\n{inner}\n)"
