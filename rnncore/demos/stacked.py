"""Demo ``stacked``: how stacked recurrent layers feed each other, and where their parameter
counts come from.

    python -m rnncore demo stacked              # instant; trains nothing

For each model a real input ``x (T=5, B=3, 2)`` goes through `rnncore.trace`, which prints every
layer's input and output shape and its final states ``h_n`` / ``c_n``. Then each layer's count
is worked out from its formula (per direction and layer; I = the layer's input size, H = hidden
size, D = 2 if bidirectional)::

    LSTM  4*H*(I+H) + 4*H      4 gates (i, f, g, o), each an H x (I+H) matrix and one bias
    GRU   3*H*(I+H) + 6*H      3 gates (r, z, n), two biases each (the reset_after form)
    RNN     H*(I+H) +   H      one tanh layer

A bidirectional layer has D = 2 copies (the backward direction's parameter names end in
``_reverse``) and outputs D*H features, forward half first, so the next layer's I is 2*H.
``LSTM(2, 64, num_layers=2)`` is the same computation as two stacked ``LSTM`` objects: same
count, same output once the weights are copied over.
"""

import numpy as np

import rnncore
from rnncore import GRU, LSTM, RNN, Sequential

from .. import _checks

__all__ = ["run", "layer_params"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_BIASES = {"LSTM": 1, "GRU": 2, "RNN": 1}


def layer_params(kind, input_size, hidden_size, num_layers=1, bidirectional=False):
    """Parameter counts of a recurrent layer, worked out from the formula.

    Returns ``[(count, text), ...]``, one entry per layer k (both directions together), e.g.
    ``(17152, "4*64*(2+64) + 4*64 = 17152")`` for ``("LSTM", 2, 64)``.
    """
    G, nb, D, H = _GATES[kind], _BIASES[kind], 2 if bidirectional else 1, hidden_size
    rows = []
    for k in range(num_layers):
        I = input_size if k == 0 else D * H                  # layer k reads layer k-1's D*H
        n = D * (G * H * (I + H) + nb * G * H)
        g = f"{G}*" if G > 1 else ""
        b = f"{nb * G}*" if nb * G > 1 else ""
        text = f"{g}{H}*({I}+{H}) + {b}{H}"
        rows.append((n, (f"2*({text})" if D == 2 else text) + f" = {n}"))
    return rows


def _show(title, model, x, print_fn):
    """Trace ``model`` on ``x``, then each recurrent layer's formula; returns the numbers."""
    print_fn(f"\n{title}")
    rows = rnncore.trace(model, x, print_fn=lambda s: print_fn("  " + s))
    layers = list(model) if isinstance(model, Sequential) else [model]
    counts, formula = [], []
    for row, layer in zip(rows, layers):
        parts = layer_params(type(layer).__name__, layer.input_size, layer.hidden_size,
                             layer.num_layers, layer.bidirectional)
        for k, (n, text) in enumerate(parts):
            name = (f"layer {row.path}" if len(parts) == 1 else
                    f"layer {k} of num_layers={len(parts)}")
            print_fn(f"  {name}: {text}")
        counts.append(row.params)
        formula.append(sum(n for n, _ in parts))
    return {"params": counts, "formula": formula,
            "output_shapes": [tuple(r.output_shape) for r in rows],
            "input_shapes": [tuple(r.input_shape) for r in rows],
            "states": [dict(r.states) for r in rows]}


def _backward_chain(model, x, print_fn):
    """The backward through the stack, one layer at a time by hand, against ``model.backward``:
    the top layer's dL/d(its input) is the bottom layer's dL/dy."""
    gy = np.ones((x.shape[1], model[1].hidden_size), np.float32)     # dL/dy of the top (B, H2)
    model.forward(x)
    gx = model.backward(x, gy)
    h = model[0].forward(x)                                      # (T, B, H1)
    model[1].forward(h)
    g_h = model[1].backward(h, gy)                               # (T, B, H1): dL/dh, each step
    g_x = model[0].backward(x, g_h)                              # (T, B, 2)
    model.zero_grad_parameters()
    per_step = np.abs(g_h).sum(axis=(1, 2))
    diff = float(np.abs(g_x - gx).max())
    print_fn(f"  Backward runs the chain the other way. The top layer gets dL/dy only at its "
             f"last step\n  (return_sequences=False: it enters as dL/dh_n), and its backward "
             f"returns dL/d(its input)\n  {g_h.shape}: a gradient for every step of the first "
             f"layer's output, which is that layer's dy.\n  Summed |dL/dh_t| for t = 0..{len(per_step) - 1}: "
             f"{np.array2string(per_step, precision=3)} (BPTT: an earlier step's\n"
             f"  gradient came back through more of the top layer's steps, each scaling it). "
             f"The first layer's\n  backward then gives dL/dx {g_x.shape}; by hand, layer by "
             f"layer, it differs from model.backward's\n  by {diff:.1e}.")
    return {"backward_by_hand": diff, "grad_per_step": per_step.tolist()}


def run(seed=0, epochs=None, hidden=None, quick=False, progress=True, save=None, plot=None,
        print_fn=print):
    """Print the shape traces and the counts; return them.

    hidden: the first layer's hidden size (default 64; the second layer has
    max(hidden // 2, 1)); seed: seeds x and the initial weights, though nothing printed depends
    on them; epochs, quick, progress, save, plot: ignored here (nothing is trained); the CLI
    refuses --epochs, --save and --plot with exit status 2 rather than let them look as if
    they did something.

    returns {"lstm" | "bidirectional" | "gru" | "rnn" | "num_layers_2" | "two_objects":
    {"params": [per layer, as counted], "formula": [per layer, from the formula],
    "output_shapes", "input_shapes", "states"}, "same_output" and "same_h_n": max abs
    differences of the outputs and of the top final states between num_layers=2 and two
    stacked objects with the same weights}, "backward_by_hand" (max abs difference of dL/dx from
    the two layers' backwards by hand and from the stack's) and "grad_per_step" (summed
    |dL/dh_t| the top layer hands the bottom one, t = 0 .. T-1).
    """
    H1 = 64 if hidden is None else _checks.positive_int(hidden, "hidden")
    H2 = max(H1 // 2, 1)
    rnncore.manual_seed(seed)
    x = np.random.default_rng(seed).standard_normal((5, 3, 2)).astype(np.float32)  # (T, B, 2)
    out = {}
    print_fn(f"Input x: (T, B, F) = {x.shape}, time-major. Each table: rnncore.trace(model, x).")
    model = Sequential(LSTM(2, H1), LSTM(H1, H2, return_sequences=False))
    out["lstm"] = _show(f"Sequential(LSTM(2, {H1}), LSTM({H1}, {H2}, return_sequences=False))",
                        model, x, print_fn)
    print_fn(f"  The first layer returns every step (5, 3, {H1}): that is the second layer's "
             f"input, so its I is {H1}.\n  The second returns only its last hidden state "
             f"(3, {H2}) = its h_n[-1].")
    out.update(_backward_chain(model, x, print_fn))
    out["bidirectional"] = _show(
        f"Sequential(LSTM(2, {H1}, bidirectional=True),\n"
        f"           LSTM({2 * H1}, {H2}, bidirectional=True, return_sequences=False))",
        Sequential(LSTM(2, H1, bidirectional=True),
                   LSTM(2 * H1, H2, bidirectional=True, return_sequences=False)), x, print_fn)
    print_fn(f"  D = 2 directions: outputs are D*H = {2 * H1} wide (forward half first), the "
             f"next layer's I is {2 * H1},\n  h_n has num_layers*D = 2 rows, and each layer "
             f"holds two copies of the weights.")
    out["gru"] = _show(f"Sequential(GRU(2, {H1}), GRU({H1}, {H2}, return_sequences=False))",
                       Sequential(GRU(2, H1), GRU(H1, H2, return_sequences=False)), x, print_fn)
    print_fn("  GRU: 3 gates, two biases each (b_ih and b_hh: the reset gate multiplies "
             "W_hn h + b_hn);\n  no cell state, so no c_n.")
    out["rnn"] = _show(f"Sequential(RNN(2, {H1}), RNN({H1}, {H2}, return_sequences=False))",
                       Sequential(RNN(2, H1), RNN(H1, H2, return_sequences=False)), x, print_fn)

    one = LSTM(2, H1, num_layers=2)
    two = Sequential(LSTM(2, H1), LSTM(H1, H1))
    out["num_layers_2"] = _show(f"LSTM(2, {H1}, num_layers=2): one object, two layers",
                                one, x, print_fn)
    out["two_objects"] = _show(f"Sequential(LSTM(2, {H1}), LSTM({H1}, {H1})): two objects",
                               two, x, print_fn)
    # copy the two objects' weights into the one: 0.weight_ih_l0 -> weight_ih_l0, 1.* -> *_l1
    state = {(k[2:] if k.startswith("0.") else k[2:].replace("_l0", "_l1")): v
             for k, v in two.state_dict().items()}
    one.load_state_dict(state)
    diff = float(np.abs(one.forward(x) - two.forward(x)).max())
    hn = float(np.abs(one.h_n[1] - two[1].h_n[0]).max())
    out["same_output"] = diff
    out["same_h_n"] = hn
    total_one, total_two = sum(out["num_layers_2"]["params"]), sum(out["two_objects"]["params"])
    print_fn(f"  Same count ({total_one} = {total_two}). With the same weights (state-dict "
             f"keys 0.weight_ih_l0 ->\n  weight_ih_l0, 1.weight_ih_l0 -> weight_ih_l1, ...) "
             f"the outputs\n  differ by {diff:.1e} and the top h_n by {hn:.1e}.")
    return out
