"""`summary`: a Keras-like table of a model's layers, output shapes and parameter counts.

    >>> Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False)).summary((5, None, 2))
    Layer (type)   Output shape    Params
    =====================================
    0 (LSTM)       (5, None, 64)   17,152
    1 (LSTM)       (None, 32)      12,416
    =====================================
    Total params: 29,568
    Trainable params: 29,568
    Non-trainable params: 0
    29568

Containers are opened up: a `Sequential` lists its children (each fed the previous one's
output shape), a `Sequencer` its wrapped module's rows. A row's name is the child's index path,
the prefix of its ``state_dict`` keys. Shapes come from each module's ``output_shape``;
``None`` is a dimension not known in advance (the batch, say).
"""

from .containers import Sequencer, Sequential
from .layers import _check_input_shape
from .module import Module

__all__ = ["summary"]


def _rows(module, shape, path):
    """[(name, type, output shape, params, trainable)] for ``module`` fed ``shape``; and its output shape."""
    if isinstance(module, Sequential):
        rows = []
        for i, child in enumerate(module._children):
            sub, shape = _rows(child, shape, f"{path}{i}.")
            rows += sub
        return rows, shape
    if isinstance(module, Sequencer):
        return _rows(module.module, shape, f"{path}0.")
    out = module.output_shape(shape)
    params = module.parameters()
    total = sum(p.data.size for p in params)
    trainable = sum(p.data.size for p in params if p.requires_grad)
    return [(path.rstrip(".") or "-", type(module).__name__, out, total, trainable)], out


def _fmt_shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def summary(module, input_shape, print_fn=print):
    """Print the table (one ``print_fn`` call per line) and return the total parameter count.

    input_shape: the input's shape, None for unknown dimensions, e.g. (T, None, F).
    """
    if not isinstance(module, Module):
        raise TypeError(f"module: expected a rnncore Module, got {type(module).__name__}")
    shape = _check_input_shape(input_shape)
    rows, _ = _rows(module, shape, "")
    table = [("Layer (type)", "Output shape", "Params")]
    table += [(f"{name} ({kind})", _fmt_shape(out), f"{n:,}") for name, kind, out, n, _ in rows]
    w0, w1, w2 = (max(len(r[i]) for r in table) for i in range(3))
    width = w0 + w1 + w2 + 6
    lines = [f"{table[0][0]:<{w0}}   {table[0][1]:<{w1}}   {table[0][2]:>{w2}}", "=" * width]
    lines += [f"{a:<{w0}}   {b:<{w1}}   {c:>{w2}}" for a, b, c in table[1:]]
    total = sum(r[3] for r in rows)
    trainable = sum(r[4] for r in rows)
    lines += ["=" * width, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}"]
    for line in lines:
        print_fn(line)
    return total
