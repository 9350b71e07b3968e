"""Containers: `Sequential` (a chain), `Sequencer` (apply a module at every time step) and
`LastStep` (each sequence's output at its last valid step).

Shape key: T = time steps, B = batch, F = features (any trailing shape).

Containers own no parameters; their children's ``state_dict`` keys are prefixed with the
child's index (``0.weight_ih_l0``, ``1.weight``). A container's constructor takes its children
positionally, so ``type(c)(*children, **c.config())`` rebuilds it.
"""

import numpy as np

from . import _checks
from . import random as _random
from .layers import _check_input_shape, _float_input, _like, _valid_mask, _zero_padding
from .module import Module, _adoptions, restore, snapshot

__all__ = ["Sequential", "Sequencer", "LastStep"]


def _children_dtype(modules, dtype):
    """The container's dtype: ``dtype`` if given (children are converted), else the children's."""
    for i, m in enumerate(modules):
        if not isinstance(m, Module):
            raise TypeError(f"modules[{i}]: expected a rnncore Module, got {type(m).__name__}")
    if dtype is not None:
        dtype = _checks.float_dtype(dtype, "dtype")
        for m in modules:                                # all checked before any is converted
            m._check_astype_tree(dtype)
        for m in modules:
            m.astype(dtype)
        return dtype
    found = sorted({str(m.dtype) for m in modules})
    if len(found) > 1:
        raise ValueError(f"modules: expected one dtype for every module, got {found}; "
                         f"pass dtype= to convert them")
    return modules[0].dtype if modules else np.dtype(np.float32)


_PROBE_T = (1_000_003, 1_000_033)     # sequence lengths that no other dimension has


def _time_major_output(module, input_shape):
    """Whether ``module`` maps a time-major input (T, B, ...) to a time-major output: its
    ``output_shape`` asked for two lengths T that no other size has, whose output must begin
    with that T, so that no coincidence of sizes (T == B, (B, H) == (T, B), or an unknown
    batch None beside an unknown T) can fool the answer; None where the module cannot say."""
    rest = tuple(input_shape[1:])
    try:
        outs = [module.output_shape((t,) + rest) for t in _PROBE_T]
    except (NotImplementedError, ValueError, TypeError):     # (one's own may not take these)
        return None
    return all(len(out) >= 2 and out[0] == t for out, t in zip(outs, _PROBE_T))


def _says_its_shape(module):
    """Whether ``module``'s ``output_shape`` is its own: defined by its class (or a parent),
    or inherited by one of rnncore's layers, for which `Module`'s default is right."""
    for k in type(module).__mro__:
        if k is Module:
            return False
        if "output_shape" in vars(k) or k.__module__.startswith("rnncore."):
            return True
    return False


def _judged_by_output(module, input_shape, out_shape, said):
    """For a chain with a module that does not say its output shape: whether an output of
    ``out_shape`` keeps the input's (T, B) leading axes, judged by the output itself.
    (T, B, ...) with T != B does (a (B, ...) output cannot begin with (T, B) then). Where
    T == B it does if it has as many dimensions as ``module.output_shape`` predicts from the
    guess of `Module`'s default (``said`` True; a module that changes the feature size); it
    does not if it is the guess without its time axis (a module that drops the time axis of a
    (T, B, H) with T == B == H answers (B, H)). None where it cannot tell: fewer dimensions
    otherwise ((T, B) from a per-step score, or (B, F) with F == B), or no guess exists (an
    ``output_shape`` raised); a module of one's own there should say its ``output_shape``."""
    T, B = input_shape[:2]
    if len(out_shape) < 2 or tuple(out_shape[:2]) != (T, B):
        return False
    if T != B:
        return True
    if said is None:
        return None
    guess = tuple(module.output_shape(input_shape))               # (T, B, ...)
    if len(out_shape) == len(guess):
        return True
    return False if tuple(out_shape) == guess[1:] else None


def _gy_dtype(module):
    """The dtype in which the gradient reaching container ``module`` is read: that of the
    leaf at the end of its chain (a float64 child of a float32 container reads float64), or
    None for an empty chain (the identity: gy keeps its own float dtype)."""
    while module._children:
        module = module._children[-1]
    return None if isinstance(module, (Sequential, Sequencer)) else module.dtype


def _stack_steps(x, name="x", finite=True):
    """A time-major array ``(T, B, ...)`` from an array or a list of ``T`` step arrays ``(B, ...)``.

    Keeps the dtype (ids for an `Embedding` stay ints): the wrapped module validates the values.
    Returns ``(array, was_list)``.
    """
    was_list = isinstance(x, (list, tuple))
    if was_list:
        if len(x) == 0:
            raise ValueError(f"{name}: expected a non-empty list of (B, ...) arrays, got an empty list")
        a = _stacked_steps(x, name, finite)
    else:
        a = _checks._as_array(x, name)
    if a.ndim < 2 or 0 in a.shape:
        raise ValueError(f"{name}: expected a time-major array (T, B, ...) with non-empty dimensions, "
                         f"got shape {a.shape}")
    return a, was_list


def _stacked_steps(x, name, finite=True):
    """The non-empty list ``x`` of step arrays, each checked (finite reals, or ints), stacked.
    ``finite=False`` (targets, read only at valid steps): numbers, NaN allowed; the caller
    checks what it reads, as it does for an array."""
    steps = [_checks._as_array(s, f"{name}[{t}]") for t, s in enumerate(x)]
    if finite:
        steps = [_checks.finite_array(s, f"{name}[{t}]", kind="i" if s.dtype.kind in "iu" else "f")
                 for t, s in enumerate(steps)]
    else:
        for t, s in enumerate(steps):
            if s.dtype.kind not in "fiu":
                raise TypeError(f"{name}[{t}]: expected a real-valued array, got dtype {s.dtype}")
    shapes = sorted({s.shape for s in steps})
    if len(shapes) != 1:
        raise ValueError(f"{name}: expected a list of arrays of one shape (B, ...), got shapes {shapes}")
    return np.stack(steps)


def _all_or_nothing(container, run, *args):
    """``run(*args)``, a forward through ``container``'s children; if it raises, every module
    below ``container`` and the random stream are put back as they were before the call.

    Why: each child checks its own input before it changes anything, but in a chain the children
    before the one that refuses have already run; without this they would keep their new
    caches, final states and dropout masks, and the next ``backward`` would pair them with the
    others' old ones. A forward rebinds a module's attributes (``self._cache = ...``) rather
    than writing into arrays it kept, and never touches parameters or their grads, so a shallow
    copy of each module's attributes is all there is to put back (``module.snapshot``).
    Nested containers: the outermost one does it.
    """
    if not _random.undo_point():                 # inside an outer container: it undoes
        return run(*args)
    saved = snapshot(container)
    refused = True
    try:
        y = run(*args)
        refused = False
        return y
    finally:
        if refused:
            restore(saved)
        _random.end_undo_point(refused)


def _backup(module):
    """What a backward through ``module`` can change, copied: every module's attributes below
    it (a backward rebinds them: ``grad_h0``, say; ``module.snapshot``) and every parameter's
    grad (a backward adds into them). ``_put_back`` restores them."""
    kept = module.__dict__.get("_params_below")                  # (listed once per structure)
    if kept is None or kept[0] != _adoptions[0]:
        kept = module._params_below = (_adoptions[0], module._parameter_list())
    return snapshot(module), [(p.grad, p.grad.copy()) for p in kept[1]]


def _refuses_cleanly(module):
    """Whether ``module``'s backward refuses (raises) before it changes anything: true of
    rnncore's own modules (each checks its inputs first; a chain backs up what its later
    children changed), and so of a tree of them; not known of a module of one's own (one may
    add to its grads and then raise), of a subclass of rnncore's, nor of a module whose
    backward was replaced on the instance. The classes are looked at once per structure."""
    kept = module.__dict__.get("_own_classes")
    if kept is None or kept[0] != _adoptions[0]:
        tree = module._subtree()                   # (kept without the module itself: a list
        kept = module._own_classes = (_adoptions[0], tree[1:],   # holding it would be a cycle)
                                      all(type(m).__module__.startswith("rnncore.") for m in tree))
    if not kept[2]:
        return False
    for m in (module, *kept[1]):
        d = m.__dict__
        if "backward" in d or "_backward" in d:
            return False
    return True


def _put_back(backups):
    for attributes, grads in backups:
        restore(attributes)
        for grad, before in grads:
            grad[...] = before


def _check_not_repeated(container):
    """ValueError if a module that keeps its forward for the backward (an activation, a
    recurrent layer, a container: ``Module._keeps_forward``) appears twice below
    ``container``: its second forward replaced the first one's, so a backward through both
    would be wrong. `Linear` and `Embedding` may repeat (weights shared): their backward reads
    the input it is given; so may modules of one's own, which rnncore cannot look into."""
    seen = {}
    for path, m in _paths(container):
        if not m._keeps_forward:
            continue
        if id(m) in seen:
            raise ValueError(f"modules: {path} is the same {type(m).__name__} object as {seen[id(m)]}; "
                             f"it keeps only its last forward, so a backward through both would be "
                             f"wrong: use a separate {type(m).__name__} for each place")
        seen[id(m)] = path


def _copy(x):
    """A copy of an input (an array, or a list of step arrays, copied step by step)."""
    return [np.array(s) for s in x] if isinstance(x, (list, tuple)) else np.array(x)


def _noted_serials(container):
    """``[(module, its count of forwards (Module.forward))]`` of every module below
    ``container`` that keeps its forward for the backward (nested ones included, also inside a
    module of one's own), noted by the container's forward; the modules below are listed once
    per structure, whether each keeps its forward is asked each time (a Dropout keeps its mask
    in training only)."""
    kept = container.__dict__.get("_below")
    if kept is None or kept[0] != _adoptions[0]:
        seen, below = set(), []
        for _, m in _paths(container):
            if id(m) not in seen:
                seen.add(id(m))
                below.append(m)
        kept = container._below = (_adoptions[0], below)
    return [(m, m.__dict__.get("_serial")) for m in kept[1] if m._keeps_forward]


def _check_serials(container, noted):
    """RuntimeError if a module below ``container`` that keeps its forward has run another one
    since the container's forward ``noted`` it (``_noted_serials``): its backward
    would differentiate that other forward (a model sharing it ran it, perhaps with equal
    inputs but another dropout mask, other lengths or another initial state)."""
    for m, n in noted or ():
        if n is not None and m.__dict__.get("_serial") != n:
            path = next(p for p, c in _paths(container) if c is m)
            raise RuntimeError(f"{path} ({type(m).__name__}) has run another forward since this "
                               f"container's (is it shared with another model?); its backward "
                               f"would differentiate that one: call forward again")


# the start of the refusal of a backward whose x is not its last forward's input (recurrent
# layers, activations)
_NOT_THE_LAST_FORWARDS = "x: expected the input of the last forward"


def _with_path(e, path, rest):
    """A new exception of ``e``'s type saying ``path`` (rnncore's words, naming children by
    their index path) then ``rest``; it remembers where the path ends, so that each chain
    above can put its own index in front (``_from_child``)."""
    new = type(e)(path + rest)
    new._rnncore_path = len(path)
    return new


def _from_child(e, i):
    """``e``, raised by child i of a chain (or of a Sequencer, i = 0), as the chain's own
    error: where its message names children by path (``_with_path``), each ``modules[`` of
    the path gets ``[i]`` in front; else None (a message as it came)."""
    n = getattr(e, "_rnncore_path", None)
    if n is None:
        return None
    msg = str(e)
    return _with_path(e, msg[:n].replace("modules[", f"modules[{i}]["), msg[n:])


def _name_the_child(chain, i, e, about_its_input):
    """Raise ``e`` (a ValueError or TypeError from child i of ``chain``) again saying which
    child refused which one's output, where its message is about that child's input (starts
    with one of ``about_its_input``) and the input was not the caller's own (i > 0); one that
    already names a child of an inner chain gets this chain's index in front. Returns (the
    caller then re-raises ``e`` itself) where neither applies."""
    if type(e) not in (ValueError, TypeError):
        return
    outer = _from_child(e, i)
    if outer is not None:
        raise outer from e
    if i > 0 and str(e).startswith(about_its_input):
        before = chain._children[i - 1]
        raise _with_path(e, f"modules[{i}] ({type(chain._children[i]).__name__}), given the "
                            f"output of modules[{i - 1}] ({type(before).__name__})", f": {e}") from e


def _paths(m, path="modules"):
    """(index path, module) of every module below ``m``, depth first, repeats included."""
    for i, child in enumerate(m._children):
        yield f"{path}[{i}]", child
        yield from _paths(child, f"{path}[{i}]")


def _shape_of(x):
    """The shape of an input (an array, or a list of T step arrays), values unread."""
    return (len(x),) + np.shape(x[0]) if isinstance(x, (list, tuple)) and len(x) else np.shape(x)


def _time_major_shape(x):
    """The shape (T, B, ...) of a time-major input (an array, or a list of T step arrays),
    refused naming ``x`` where it has none (ragged nested lists, on which NumPy's message
    names nothing) or an empty axis (before ``lengths`` is checked against it, which would
    otherwise be named for x's fault)."""
    try:
        shape = _shape_of(x)
    except ValueError as e:
        raise TypeError(f"x: expected a numeric array, got {type(x).__name__} ({e})") from None
    if len(shape) < 2:
        raise ValueError(f"x: expected a time-major input (T, B, ...) with lengths=, got shape {shape}")
    if 0 in shape:
        raise ValueError(f"x: expected non-empty dimensions, got shape {tuple(shape)}")
    return shape


def _same_values(given, kept, dtype):
    """Whether ``given`` holds ``kept``'s values as a module of ``dtype`` reads them: floats
    compared in that dtype (a float64 x for a float32 forward's values passes, as a layer's
    own check takes it), ids as they are."""
    if given.dtype.kind == "f" or kept.dtype.kind == "f":
        with np.errstate(over="ignore"):
            given, kept = given.astype(dtype, copy=False), kept.astype(dtype, copy=False)
    return np.array_equal(given, kept)


def _as_checked_input(x):
    """``x`` (an array or a list of step arrays) as one checked array: finite reals, or ints."""
    if isinstance(x, (list, tuple)) and len(x):
        return _stacked_steps(x, "x")
    a = _checks._as_array(x, "x")
    return _checks.finite_array(a, "x", kind="i" if a.dtype.kind in "iu" else "f")


# -- Sequential --------------------------------------------------------------------------------
class Sequential(Module):
    """``y = m_n(... m_2(m_1(x)))``: each child's output is the next one's input.

    ``forward(x, lengths)`` hands ``lengths`` to every sequence-aware child while the time axis
    lasts (not to those after `LastStep` or ``return_sequences=False``); ``backward`` runs the
    children in reverse, each with the input it saw in the last forward (the first one with the
    ``x`` given to backward, as in Torch7; with more than one child, that ``x`` must hold the
    forward's input values, since the others differentiate what the forward made of them, and a
    first child that reads its input in backward, a `Linear` or `Embedding`, gets a copy the
    forward kept). Children keep their own dtype: ``dtype=None`` takes theirs (they must agree), a
    given ``dtype`` converts them.

    With ``lengths`` (B,), the input must be time-major, (T, B, ...) (ids (T, B) for an
    `Embedding`). Only sequence-aware children get ``lengths`` (recurrent layers, `LastStep`,
    containers); a layer acting on the last axis computes something at padding steps too (a
    `Linear`'s bias), so where the output keeps the (T, B) leading axes the chain's outputs at
    padding steps are set to 0 and the upstream gradient there is dropped, as in `Sequencer`:
    padding takes no gradient. Whether it keeps them is what the children's ``output_shape``
    say; a module of one's own that does not say (no ``output_shape``, or one that raises
    NotImplementedError) is judged by its output: (T, B, ...) keeps them where T != B; where
    T == B (the output could be (B, H)) only if it has as many dimensions as `Module`'s
    default output_shape predicts (``_judged_by_output``), and not at all under a module whose
    ``output_shape`` raises.

    All or nothing: a forward that any child refuses leaves every child as it was, and so does
    a backward (the grads the children after the refusing one had added to are put back). A
    module that keeps its forward for the backward (an activation, a recurrent layer, a training
    Dropout) may appear only once in a chain that runs backward; a `Linear` or `Embedding` may
    repeat (shared weights), and so may modules of one's own.
    """

    _keeps_forward = True                                        # (each child's input)
    _kept_for_backward = ("_inputs", "_x_kept")

    def __init__(self, *modules, dtype=None):
        super().__init__(_children_dtype(modules, dtype))
        for m in modules:
            self._child(m)
        self._inputs = None                                      # input of each child, last forward
        self._valid = None                                       # (T, B) valid steps, with lengths
        self._checked_at = None                                  # (_adoptions, train) when checked

    def add(self, module):
        """Append ``module`` (Torch7's ``:add``); returns ``self``. A forward before it is
        forgotten: backward needs a forward through the new chain."""
        if isinstance(module, Module) and module.dtype != self.dtype:
            raise ValueError(f"module: expected dtype {self.dtype} (the container's), got "
                             f"{module.dtype}; convert it with module.astype({self.dtype.name!r})")
        self._child(module)
        self._inputs = self._valid = None
        return self

    def __len__(self):
        return len(self._children)

    def __getitem__(self, i):
        return self._children[i]

    def _forward(self, x, lengths):
        return _all_or_nothing(self, self._chain, x, lengths)

    def _chain(self, x, lengths):
        if lengths is not None:
            shape = _time_major_shape(x)
            lengths = _checks.lengths(lengths, *shape[:2])
        if not self._children:                                   # the identity: x checked as
            _as_checked_input(x)                                 # any module checks its input
            shape = _shape_of(x)                                 # (then it has a shape)
            if 0 in shape:
                raise ValueError(f"x: expected non-empty dimensions, got shape {tuple(shape)}")
        inputs, h = [], x
        timed = lengths is not None              # with lengths: h is still (T, B, ...)
        unsure = False                           # (a child could not tell: no zeroing below)
        for i, m in enumerate(self._children):
            inputs.append(h)
            h_shape = _shape_of(h) if timed else None
            try:                                 # (lengths only while the time axis lasts)
                h = m.forward(h, lengths=lengths if timed and m._takes_lengths else None)
            except (ValueError, TypeError) as e:
                _name_the_child(self, i, e, ("x:", "x["))
                raise
            if timed:
                kept = self._keeps_time_axis(i, h_shape, h)
                timed, unsure = kept is not False, unsure or kept is None
        valid = None
        if timed and not unsure:
            valid = _valid_mask(lengths, *shape[:2])             # (T, B): zeros at padding
            h = _like(_zero_padding(np.asarray(h), valid), isinstance(h, list))
        self._inputs, self._valid = inputs or [x], valid     # (no child: Torch7's identity)
        # A first child that reads the x it is given in backward (a Linear, an Embedding, a
        # module of one's own) gets the forward's values then, as the others differentiate
        # what the forward made of them: a copy, since the caller may refill x in between (a
        # recurrent layer or an activation keeps what it needs itself)
        first = self._children[0] if self._children else None
        self._x_kept = (None if len(self._children) < 2 or first._keeps_forward else
                        np.stack(x) if isinstance(x, (list, tuple)) else np.array(x))
        self._serials = _noted_serials(self)
        return _copy(h) if not self._children else h        # (not the caller's own array)

    def _keeps_time_axis(self, i, input_shape, out):
        """Whether child ``i``'s output ``out`` is time-major like its input, (T, B, ...),
        rather than (B, ...) (after `LastStep` or ``return_sequences=False``); the children
        after one that dropped the time axis get no ``lengths`` (a chain among them read a
        (B, F) input as (T, B)), and the chain's padding is not zeroed. As the child's
        ``output_shape`` says where it and every module below it can. Otherwise (a module of
        one's own without one: `Module`'s default, the input's shape, is a guess; or one that
        raises NotImplementedError), ``out`` says (``_judged_by_output``); None where it
        cannot tell: the children after it still get ``lengths``, as a time-major output
        would need, but the chain's padding is not zeroed."""
        m = self._children[i]
        says = _time_major_output(m, input_shape)        # (asked each time: a layer's
        if says is not None and all(_says_its_shape(k) for k in m.modules()):   # return_
            return says                                  # sequences may have been changed)
        return _judged_by_output(m, input_shape, _shape_of(out), says)

    def _backward(self, x, gy):
        if self._inputs is None:
            raise RuntimeError("Sequential.backward: call forward first")
        x0, kept = self._inputs[0], self.__dict__.get("_x_kept")
        if x is not x0:                  # checked here, before any child adds to a gradient
            given = _as_checked_input(x)
            _checks.same_shape(given, _shape_of(x0), "x")
            if kept is not None and kept.dtype.kind in "iu" and given.dtype.kind not in "iu":
                # (ids in floats: the forward refuses them; compared as floats, they passed)
                raise TypeError(f"x: expected an integer array (the ids of the last forward), "
                                f"got dtype {given.dtype}")
            if kept is not None and not _same_values(given, kept, self._children[0].dtype):
                raise ValueError(f"{_NOT_THE_LAST_FORWARDS} (the chain's later children "
                                 f"differentiate that forward), got other values of its shape; "
                                 f"call forward(x) first")
        if kept is not None:             # the forward's values, whatever x holds now (_chain), in
            x = _like(kept, isinstance(x, (list, tuple)))    # the kind given (an array or steps)
        dtype = _gy_dtype(self)                                  # (the leaf's that reads it)
        if self._valid is not None:                              # padding outputs are constant 0
            g, was_list = _float_input(gy, dtype, "gy")
            _checks.same_shape(g, (*self._valid.shape, *g.shape[2:]), "gy")
            gy = _like(_zero_padding(g, self._valid), was_list)
        if not self._children:                                   # the identity: dL/dx = gy
            g, was_list = _float_input(gy, None, "gy")
            if g.dtype.kind != "f":
                g = g.astype(self.dtype)
            _checks.same_shape(g, _shape_of(x0), "gy")
            return _like(g.copy() if g is gy else g, was_list)   # (not the caller's own)
        if self._checked_at != (_adoptions[0], self.train):      # (once per structure and mode:
            _check_not_repeated(self)                            # a Dropout's answer needs it)
            self._checked_at = (_adoptions[0], self.train)
        _check_serials(self, self.__dict__.get("_serials"))
        # Chain rule, last child first. All or nothing: each child checks its input before it
        # changes anything, but the children after it have run by then; so each child but the
        # first is backed up before its backward, and put back if a child before it refuses
        # (also where an outer module catches that); the first one too where it may change
        # something before it refuses (a module of one's own below it).
        last, backups = len(self._children) - 1, []
        try:
            for i in range(last, -1, -1):
                m = self._children[i]
                if i > 0 or not _refuses_cleanly(m):
                    backups.append(_backup(m))
                try:                                             # (Torch7: the first child gets
                    gy = m.backward(x if i == 0 else self._inputs[i], gy)   # the x given here)
                except (ValueError, TypeError) as e:
                    if type(e) not in (ValueError, TypeError):
                        raise
                    outer = _from_child(e, i)                    # (an inner chain's: its path)
                    if outer is not None:
                        raise outer from e
                    if i > 0 and str(e).startswith(_NOT_THE_LAST_FORWARDS):
                        # a module shared with another model, which ran it since this forward
                        raise _with_path(e, f"modules[{i}] ({type(m).__name__})",
                                         f": its input here is not its last forward's (did "
                                         f"another model run it since?): {e}") from e
                    if i == last or not str(e).startswith("gy"):
                        raise                                    # (the caller's own x or gy: as is)
                    raise _with_path(e, f"the gradient reaching modules[{i}] ({type(m).__name__})",
                                     f" from the modules after it: {e}") from e
        except BaseException:
            _put_back(backups)
            raise
        return gy

    def _on_astype(self, dtype):
        self._inputs = None                                      # backward needs a fresh forward

    def output_shape(self, input_shape):
        shape = _check_input_shape(input_shape)
        for i, m in enumerate(self._children):
            try:
                shape = m.output_shape(shape)
            except (ValueError, TypeError) as e:
                _name_the_child(self, i, e, ("input_shape:",))
                raise
        return shape


# -- Sequencer ---------------------------------------------------------------------------------
OUTSIDE = "belongs outside the Sequencer"      # ends its refusal of a module without time axis


class Sequencer(Module):
    """Apply ``module`` at every time step (Torch7's ``nn.Sequencer``).

    x: a (T, B, ...) array or a list of T arrays (B, ...) (the Torch7 table); the answer comes
    in the same kind. The wrapped module runs once over the whole (T, B, ...) array: recurrent
    layers inside run over the sequence, and layers acting on the last axis (`Linear`,
    `LogSoftMax`, ...) cover every step at once. Its output must keep the (T, B) leading axes.

    With ``lengths`` (B,), outputs at padding steps (t >= lengths[b]) are set to 0 and the
    upstream gradient there is dropped, so padding takes no gradient.
    """

    _keeps_forward = True
    _kept_for_backward = ("_cache",)

    def __init__(self, module, dtype=None):
        if not isinstance(module, Module):
            raise TypeError(f"module: expected a rnncore Module, got {type(module).__name__}")
        super().__init__(_children_dtype([module], dtype))
        self.module = self._child(module)
        self._cache = None

    def _forward(self, x, lengths):
        return _all_or_nothing(self, self._over_steps, x, lengths)

    def _over_steps(self, x, lengths):
        x_in = x
        x, was_list = _stack_steps(x)                            # (T, B, ...)
        T, B = x.shape[:2]
        lengths = _checks.lengths(lengths, T, B)
        m = self.module
        try:
            y = np.asarray(m.forward(x, lengths=lengths if m._takes_lengths else None))  # (T, B, ...)
        except (ValueError, TypeError) as e:
            _name_the_child(self, 0, e, ())          # (an inner chain's path: with this [0])
            raise
        if y.ndim < 2 or y.shape[:2] != (T, B) or not self._keeps_time_axis(x.shape, y.shape):
            raise ValueError(f"module: expected an output with the input's leading (T, B) = {(T, B)}, "
                             f"got shape {y.shape}; a layer that drops the time axis "
                             f"(return_sequences=False, LastStep) {OUTSIDE}")
        valid = None if lengths is None else _valid_mask(lengths, T, B)
        if valid is not None:
            y = _zero_padding(y, valid)
        self._cache = dict(x=x, x_in=x_in, valid=valid, y_shape=y.shape, was_list=was_list,
                           serials=_noted_serials(self))
        return _like(y, was_list)

    def _keeps_time_axis(self, shape, y_shape):
        """Whether the module's output, of ``y_shape``, keeps (T, B) for inputs of ``shape``:
        by its ``output_shape`` (``_time_major_output``: sizes can coincide, (B, H) == (T, B))
        where every module below says its own (asked once per input shape past T and structure
        of the model, then remembered), else judged by the output as `Sequential` judges it
        (``_judged_by_output``; kept where it cannot tell: a Sequencer's module is meant to)."""
        key = (tuple(shape[1:]), _adoptions[0], id(self.module))
        if self.__dict__.get("_time_axis_key") != key:
            self._time_axis_key = key
            said = _time_major_output(self.module, shape)
            self._time_axis_said = said, all(_says_its_shape(m) for m in self.module.modules())
        said, all_say = self._time_axis_said
        if all_say:
            return said is not False
        return _judged_by_output(self.module, shape, y_shape, said) is not False

    def _backward(self, x, gy):
        if self._cache is None:
            raise RuntimeError("Sequencer.backward: call forward first")
        c = self._cache
        xa = c["x"]
        # The forward's own input (an array, or a list of steps whose arrays the caller may have
        # refilled since, as a recurrent layer allows) goes down as the forward stacked it;
        # anything else is stacked (Torch7: the module gets the given input) and judged below
        if x is not xa and x is not c["x_in"]:
            xa, _ = _stack_steps(x)
            _checks.same_shape(xa, c["x"].shape, "x")
        _check_serials(self, c.get("serials"))
        g, _ = _float_input(gy, _gy_dtype(self) or self.dtype, "gy")   # (the leaf's: it may differ)
        _checks.same_shape(g, c["y_shape"], "gy")
        if c["valid"] is not None:
            g = _zero_padding(g, c["valid"])                     # padding outputs are constant 0
        # (one child: it refuses before it changes anything, unless a module of one's own is
        # below it, which may not: then it is backed up)
        backup = None if _refuses_cleanly(self.module) else _backup(self.module)
        try:
            gx = self.module.backward(xa, g)
        except BaseException as e:
            if backup is not None:
                _put_back([backup])
            outer = _from_child(e, 0) if type(e) in (ValueError, TypeError) else None
            if outer is not None:                                # (an inner chain's: with [0])
                raise outer from e
            raise
        return gx if gx is None else _like(np.asarray(gx), c["was_list"])

    def _on_astype(self, dtype):
        self._cache = None

    def output_shape(self, input_shape):
        shape = _check_input_shape(input_shape)
        if len(shape) < 2:                                       # as forward refuses it
            raise ValueError(f"input_shape: expected a time-major shape (T, B, ...), got {shape}")
        try:
            out = self.module.output_shape(shape)
        except (ValueError, TypeError) as e:
            _name_the_child(self, 0, e, ())
            raise
        B = shape[1]
        if (_time_major_output(self.module, shape) is False      # as forward: (T, B) kept
                or (len(out) >= 2 and None not in (B, out[1]) and out[1] != B)):
            raise ValueError(f"module: expected an output with the input's leading (T, B), got "
                             f"{out} from input_shape {shape}; a layer that drops the time axis "
                             f"(return_sequences=False, LastStep) {OUTSIDE}")
        return out


# -- LastStep ----------------------------------------------------------------------------------
class LastStep(Module):
    """Each sequence's output at its last valid step: ``y[b] = x[lengths[b] - 1, b]``.

    x: (T, B, F...) array or list of T (B, F...) arrays -> y: (B, F...). Without ``lengths`` every
    sequence ends at step T - 1. Backward scatters gy back to those steps, zero elsewhere.
    """

    _keeps_forward = True
    _kept_for_backward = ("_cache",)

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self._cache = None

    def _check_x(self, x):
        x, was_list = _float_input(x, self.dtype)
        if x.ndim < 2:
            raise ValueError(f"x: expected a time-major array (T, B, ...), got shape {x.shape}")
        return x, was_list

    def _forward(self, x, lengths):
        x, was_list = self._check_x(x)
        T, B = x.shape[:2]
        lengths = _checks.lengths(lengths, T, B)
        last = np.full(B, T - 1) if lengths is None else lengths - 1   # (B,)
        self._cache = dict(shape=x.shape, last=last, was_list=was_list)
        return x[last, np.arange(B)]                             # (B, F...)

    def _backward(self, x, gy):
        if self._cache is None:
            raise RuntimeError("LastStep.backward: call forward first")
        c = self._cache
        x, _ = self._check_x(x)
        _checks.same_shape(x, c["shape"], "x")
        T, B = c["shape"][:2]
        gy = _checks.finite_array(gy, "gy", dtype=self.dtype)
        _checks.same_shape(gy, (B,) + c["shape"][2:], "gy")
        gx = np.zeros(c["shape"], dtype=self.dtype)              # (T, B, F...)
        gx[c["last"], np.arange(B)] = gy                         # y[b] = x[last[b], b]
        return _like(gx, c["was_list"])

    def _on_astype(self, dtype):
        self._cache = None

    def output_shape(self, input_shape):
        shape = _check_input_shape(input_shape)
        if len(shape) < 2:
            raise ValueError(f"input_shape: expected (T, B, ...), got {shape}")
        return shape[1:]
