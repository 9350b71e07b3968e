"""`trace`: run one real input through a model and show what each layer receives and returns.

`Module.summary` works out shapes from the constructor arguments alone; ``trace`` feeds an actual
array and records each layer's input and output as they happen, so it also answers "what does
the next layer really get?". For a recurrent layer it adds the final states ``h_n`` (and
``c_n``), shaped ``(num_layers * D, B, H)``:

    >>> x = np.zeros((5, 3, 2), np.float32)                  # (T, B, F)
    >>> rows = rnncore.trace(Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False)), x)
    Layer (type)   Input shape   Output shape   Params   Final states
    ===================================================================================
    0 (LSTM)       (5, 3, 2)     (5, 3, 64)      17152   h_n (1, 3, 64), c_n (1, 3, 64)
    1 (LSTM)       (5, 3, 64)    (3, 32)         12416   h_n (1, 3, 32), c_n (1, 3, 32)
    ===================================================================================
    Total params: 29568

Read it top-down: the first LSTM returns its whole output sequence (5, 3, 64), which is the
second one's input; the second returns only its last hidden state (3, 32), which equals its
``h_n[-1]``. 17152 = 4 gates * (64 * (2 + 64) + 64), and 12416 = 4 * (32 * (64 + 32) + 32).

Containers are opened as `summary` opens them: a `Sequential` lists its children, a `Sequencer`
its wrapped module; rows are named by the child index path (the prefix of their ``state_dict``
keys).

How it works: every leaf module's ``forward`` is wrapped for the duration of the call (an
instance attribute, removed afterwards) to record shapes. The run is in ``evaluate()`` mode
(no dropout; no random numbers drawn). Afterwards every module's attributes are put back as they
were: mode, caches of the previous forward, ``h_n``/``c_n``, remembered state. So a ``backward``
after ``trace`` still pairs with the forward before it, and a ``remember()``-ing layer carries
the same state as if ``trace`` had never run. What is put back is each attribute, not what is
inside it: rnncore's modules rebind their attributes in a forward, but a module of one's own
that writes into an array or a list it holds (a running mean updated in place, a log it
appends to) keeps what the traced forward wrote there.
"""

from collections import namedtuple
from types import MappingProxyType

import numpy as np

from .module import Module, restore, snapshot
from .recurrent import _Recurrent
from .summary import _fmt_shape, _leaves, _table_lines

__all__ = ["trace"]


class TraceRow(namedtuple("TraceRow", "path kind input_shape output_shape params")):
    """One leaf module's call: ``(path, kind, input_shape, output_shape, params)``.

    path: the child index path ('0', '1.0'; '-' for a model that is one layer)
    kind: the class name; params: its parameter count (0 at a later call of a module used
    twice: counted at its first, as ``state_dict`` holds them once).
    ``row.states``: {'h_n': shape, 'c_n': shape} for a recurrent layer, else {}.
    """

    states = MappingProxyType({})                             # rows built by _make/_replace

    def __new__(cls, path, kind, input_shape, output_shape, params, states=None):
        row = super().__new__(cls, path, kind, input_shape, output_shape, params)
        row.states = dict(states or {})
        return row


def _shape(a):
    """Shape of an array, or of a list of T step arrays read as one (T, ...) array."""
    if isinstance(a, (list, tuple)):
        return (len(a),) + (tuple(np.shape(a[0])) if len(a) else ())
    return tuple(np.shape(a))


def _recording(m, paths, rows, counted, running):
    """A stand-in for ``m.forward`` that calls it and appends a `TraceRow`; a module used twice
    has its parameters counted at its first call (``counted``: ids of those counted so far).
    A call made inside another recorded one (a leaf of one's own that calls a module it holds)
    is part of that row, not one of its own (``running``: [recorded calls under way])."""
    inner = m.forward                                         # the bound method of the class
    calls = [0]

    def forward(x, *args, **kwargs):
        if running[0]:
            return inner(x, *args, **kwargs)
        running[0] += 1
        try:
            y = inner(x, *args, **kwargs)
        finally:
            running[0] -= 1
        path = paths[calls[0] % len(paths)]
        calls[0] += 1
        states = {}
        if isinstance(m, _Recurrent):
            states = {f"{s}_n": getattr(m, f"{s}_n").shape for s in m._states}
        n = sum(p._data.size for p in m._parameter_list() if id(p) not in counted)
        counted.update(id(p) for p in m._parameter_list())
        rows.append(TraceRow(path, type(m).__name__, _shape(x), _shape(y), n, states))
        return y

    return forward


def _print_table(rows, print_fn):
    head = ("Layer (type)", "Input shape", "Output shape", "Params", "Final states")
    table = [head] + [(f"{r.path} ({r.kind})", _fmt_shape(r.input_shape),
                       _fmt_shape(r.output_shape), f"{r.params}",
                       ", ".join(f"{k} {_fmt_shape(v)}" for k, v in r.states.items()))
                      for r in rows]
    if not any(r.states for r in rows):
        table = [t[:4] for t in table]
    lines = _table_lines(table, right=(3,))
    lines.append(f"Total params: {sum(r.params for r in rows)}")
    for text in lines:
        print_fn(text)


def trace(model, x, lengths=None, print_fn=print):
    """Run ``model.forward(x, lengths=lengths)`` once and report every layer's shapes.

    x: the model's input ((T, B, F) floats, a list of T (B, F) arrays, or (T, B) ids)
    lengths: None or (B,) ints, as for ``forward``
    print_fn: called once per line of the table (None prints nothing)
    returns a list of `TraceRow` ``(path, kind, input_shape, output_shape, params)``, one per
    leaf-module call, in call order; recurrent rows also carry ``row.states``.

    The model is left as it was (see the module docstring: a module of one's own that writes
    into what it holds keeps that). Errors of the forward
    itself (a wrong input shape, say) propagate unchanged, after the model is restored.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model: expected a rnncore Module, got {type(model).__name__}")
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"print_fn: expected a function or None, got {type(print_fn).__name__}")
    paths = {}                                                # {id(leaf): [path, ...]}:
    for path, leaf in _leaves(model):                         # a leaf used twice has two
        paths.setdefault(id(leaf), []).append(path)
    saved = snapshot(model)                                   # every attribute, to put back
    modules = [m for m, _ in saved]                           # (each module once)
    rows, counted, running = [], set(), [0]
    try:
        model.evaluate()
        for m in modules:
            if id(m) in paths:
                m.forward = _recording(m, paths[id(m)], rows, counted, running)
        model.forward(x, lengths=lengths)
    finally:
        restore(saved)                                        # also removes the stand-ins
    if print_fn is not None:
        _print_table(rows, print_fn)
    return rows
