"""`summary`: a Keras-like table of a model's layers, output shapes and parameter counts.

    >>> Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False)).summary((5, None, 2))
    Layer (type)   Output shape    Params
    =====================================
    0 (LSTM)       (5, None, 64)    17152
    1 (LSTM)       (None, 32)       12416
    =====================================
    Total params: 29568
    Trainable params: 29568
    Non-trainable params: 0
    29568

Containers are opened up: a `Sequential` lists its children (each fed the previous one's
output shape), a `Sequencer` its wrapped module's rows. A row's name is the child's index path,
the prefix of its ``state_dict`` keys. Shapes come from each module's ``output_shape``;
``None`` is a dimension not known in advance (the batch, say). A module of one's own that does
not define ``output_shape`` (`Module`'s default, the input's shape, is only a guess), or whose
``output_shape`` raises NotImplementedError, shows ``?``, and so does every row after it; a
line under the table names it. A module used twice (shared weights) has a row for each use and
its parameters counted once, in the first. A container of one's own that holds parameters of
its own is one row, not opened: its ``output_shape`` and its count cover everything below it.
"""

from .containers import OUTSIDE, Sequencer, Sequential, _says_its_shape
from .layers import _check_input_shape
from .module import Module

__all__ = ["summary"]


def _leaves(module, path=""):
    """``(path, leaf)`` for every leaf module in call order, containers opened: a `Sequential`'s
    children, a `Sequencer`'s module. path: the child index path ('0', '1.0'; '-' for a model
    that is one leaf), the prefix of the leaf's ``state_dict`` keys. A container of one's own
    that holds parameters itself (a subclass's ``_param``) is a leaf: its row covers it and
    everything below it (opened, its own parameters would have no row)."""
    if module._params:
        yield path.rstrip(".") or "-", module
    elif isinstance(module, Sequential):
        for i, child in enumerate(module._children):
            yield from _leaves(child, f"{path}{i}.")
    elif isinstance(module, Sequencer):
        yield from _leaves(module.module, f"{path}0.")
    else:
        yield path.rstrip(".") or "-", module


def _rows(module, shape):
    """[(path, type, output shape, params, trainable params)] for ``module`` fed ``shape``:
    one row per leaf, each fed the previous one's output shape. A module used twice has a row
    for each use, its parameters counted in the first (as ``state_dict`` holds them once).
    The shape is None from the first leaf that does not say its own on."""
    rows, counted = [], set()
    for path, leaf in _leaves(module):
        if shape is None or not _says_its_shape(leaf):
            shape = None
        else:
            try:
                shape = _output_shape(leaf, shape, path, rows)
            except NotImplementedError:                  # (one that cannot say: unknown too)
                shape = None
        params = [p for p in leaf._parameter_list() if id(p) not in counted]
        counted.update(id(p) for p in params)
        rows.append((path, type(leaf).__name__, shape, sum(p._data.size for p in params),
                     sum(p._data.size for p in params if p.requires_grad)))
    return rows


def _output_shape(leaf, shape, path, rows):
    """``leaf.output_shape(shape)``, an error about the input shape naming the row that gave it."""
    try:
        return leaf.output_shape(shape)
    except (ValueError, TypeError) as e:
        if (not rows or type(e) not in (ValueError, TypeError)
                or not str(e).startswith("input_shape:")):
            raise                                    # (the caller's own shape, or not about it)
        raise type(e)(f"{path} ({type(leaf).__name__}), given the output of {rows[-1][0]} "
                      f"({rows[-1][1]}): {e}") from e


def _shared_paths(module):
    """{path: "0" or "0, 2"}: for each row with a parameter that an earlier row holds too (a
    module used again, or a weight tied to another layer's), the rows that counted them."""
    first, shared = {}, {}
    for path, leaf in _leaves(module):
        earlier = {first.setdefault(id(p), path) for p in leaf._parameter_list()} - {path}
        if earlier:
            shared[path] = ", ".join(sorted(earlier))
    return shared


def _fmt_shape(shape):
    if shape is None:
        return "?"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _table_lines(table, right=()):
    """Rows of text cells (the first one the header) as aligned lines, a rule of '=' under the
    header and after the last row; the columns numbered in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]

    def line(row):
        cells = [f"{c:>{w}}" if i in right else f"{c:<{w}}"
                 for i, (c, w) in enumerate(zip(row, widths))]
        return "   ".join(cells).rstrip()

    rule = "=" * (sum(widths) + 3 * (len(widths) - 1))
    return [line(table[0]), rule] + [line(row) for row in table[1:]] + [rule]


def summary(module, input_shape, print_fn=print):
    """Print the table (one ``print_fn`` call per line) and return the total parameter count.

    input_shape: the input's shape, None for unknown dimensions, e.g. (T, None, F).
    print_fn: called once per line of the table (None prints nothing)
    """
    if not isinstance(module, Module):
        raise TypeError(f"module: expected a rnncore Module, got {type(module).__name__}")
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"print_fn: expected a function or None, got {type(print_fn).__name__}")
    shape = _check_input_shape(input_shape)
    rows = _rows(module, shape)
    unknown = [(name, kind) for name, kind, out, _, _ in rows if out is None]
    try:
        module.output_shape(shape)      # and the containers' own checks (a Sequencer's), as forward
    except (ValueError, TypeError, NotImplementedError) as e:
        # past a module that cannot say its shape, the chain ran on Module's guess: only a
        # Sequencer's refusal (a layer before it dropped the time axis) is sure to hold
        if not unknown or OUTSIDE in str(e):
            raise
    table = [("Layer (type)", "Output shape", "Params")]
    shared = _shared_paths(module)
    table += [(f"{name} ({kind})", _fmt_shape(out),
               f"{n}" + (f" (shared with {shared[name]})" if name in shared else ""))
              for name, kind, out, n, _ in rows]
    total = sum(r[3] for r in rows)
    trainable = sum(r[4] for r in rows)
    lines = _table_lines(table, right=(2,))
    lines += [f"Total params: {total}", f"Trainable params: {trainable}",
              f"Non-trainable params: {total - trainable}"]
    if unknown:
        lines.append(f"?: {unknown[0][0]} ({unknown[0][1]}) cannot say its output shape (no "
                     f"output_shape of its own, or one that raised NotImplementedError), so it "
                     f"and those after it are unknown here (rnncore.trace shows them from a "
                     f"forward)")
    if print_fn is not None:
        for line in lines:
            print_fn(line)
    return total
