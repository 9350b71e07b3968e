"""Pictures of training: `plot_history` (loss and accuracy curves) and `plot_lstm_gates`
(what an LSTM's gates and cell state do over one sequence).

    rnncore.plots.plot_history(history, "history.png")
    rnncore.plots.plot_lstm_gates(model[0], x, "gates.png", lengths=lengths, sample=0)

matplotlib is an optional extra (in a checkout,
``pip install -e ".[plot]"``). The figures are drawn on matplotlib's Agg canvas directly, without
``pyplot``: no window opens, and the pyplot backend of the calling program (a notebook, say) is
left alone. The file format follows the path's suffix (.png, .pdf, .svg, ...); a path without a
known suffix gets a PNG, written at exactly that path. The path is checked as `rnncore.save`
checks its own, before anything is drawn (an error naming ``path``).

Reading a gate heat map (one row per hidden unit, one column per time step; see the equations
in ``kernels/reference.py``): the input gate i and the output gate o are in (0, 1) and say how
much of the candidate g (in (-1, 1)) is written into the cell and how much of tanh(c) is shown
as h; a forget gate f near 1 keeps the cell state, near 0 wipes it. A unit whose c keeps
growing over the sequence while f stays near 1 is a counter.
"""

import os
from collections.abc import Mapping

import numpy as np

from . import _checks
from .io import _file_path
from .recurrent import LSTM
from .train import History

__all__ = ["plot_history", "plot_lstm_gates", "lstm_gates"]

_INSTALL = 'plotting needs matplotlib: pip install -e ".[plot]" (in the rnncore repository)'


def _figure(**kwargs):
    """A matplotlib Figure on an Agg canvas (no pyplot, no window)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_INSTALL) from None
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _path(path):
    """``path`` as a str (bytes decoded as the file system does), checked as ``rnncore.save``
    checks its own, before anything is drawn: an empty path, one ending with a separator, a
    directory, a missing folder or a file that cannot be written raise an error naming
    ``path`` (matplotlib's own said ``[Errno 2] No such file or directory: ''``)."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path: expected a str, bytes or os.PathLike, got "
                        f"{type(path).__name__}") from None
    return _file_path(path)


def _save(fig, path):
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    fmt = suffix if suffix in fig.canvas.get_supported_filetypes() else "png"
    fig.savefig(path, format=fmt, dpi=110)
    return path


# -- training curves -----------------------------------------------------------------------
def _curves(history):
    """``history`` as {key: 1-D float array} for the keys that are plotted, so that a dict of
    NumPy arrays (``np.savez(**history.as_dict())`` read back) works as a dict of lists does;
    an entry that is not a list of numbers is refused with a ValueError naming it."""
    if isinstance(history, History):
        history = history.as_dict()
    elif not isinstance(history, Mapping) or "loss" not in history:
        raise TypeError(f"history: expected a rnncore History (or its as_dict(), a dict with a "
                        f"'loss' list), got {type(history).__name__}")
    curves = {}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        values = history.get(key)
        if values is None and key != "loss":                     # (an optional curve left out)
            continue
        try:
            a = np.asarray(values)                  # (no dtype: '1.0', None, True stay what
        except (TypeError, ValueError):             # they are, and are refused below)
            a = None
        if a is None or a.ndim != 1 or (a.size and a.dtype.kind not in "iuf"):
            raise ValueError(f"history[{key!r}]: expected a list of numbers, one per epoch, "
                             f"got {type(values).__name__} {str(values)[:60]}")
        curves[key] = a.astype(np.float64)
    return curves


def plot_history(history, path):
    """Loss (and accuracy, when measured) per epoch, training and validation; returns ``path``.

    history: a `History` from `rnncore.fit`, or a dict like its ``as_dict()``: lists (or 1-D
    arrays) of numbers under "loss" and optionally "accuracy", "val_loss", "val_accuracy".
    """
    path = _path(path)
    h = _curves(history)
    loss = h["loss"]
    if not loss.size:
        raise ValueError("history: expected at least one epoch, got an empty loss list")
    panels = [("loss", "Loss")] + ([("accuracy", "Accuracy")] if len(h.get("accuracy", ()))
                                   else [])
    fig = _figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for values, label, style in ((h.get(key, ()), "training", "-"),
                                     (h.get("val_" + key, ()), "validation", "--")):
            if len(values):
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o" if len(values) <= 30 else None,
                        markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        from matplotlib.ticker import MaxNLocator     # (matplotlib is there: _figure made the
        # figure); whole epochs, one tick at least (two asked gave 0.945 ... 1.05 for one epoch)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(key)
        if key == "accuracy":
            ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"Training history ({len(loss)} epoch{'s' if len(loss) != 1 else ''})")
    return _save(fig, path)


# -- LSTM gates ----------------------------------------------------------------------------
def lstm_gates(layer, x, lengths=None, sample=0):
    """Gate activations and cell states of ``layer``'s first layer (forward direction) over one
    sequence, recomputed in float64 with ``kernels.reference.lstm_forward`` (zero initial state).

    layer: an rnncore `LSTM`; x: its input, (T, B, I) or a list of T (B, I) arrays
    lengths: None or (B,) ints; sample: which sequence b (its first lengths[b] steps are used)
    returns {"i", "f", "g", "o", "c", "h"}: arrays (T_b, H), T_b = lengths[sample] (or T).
    """
    from kernels.reference import lstm_forward

    if not isinstance(layer, LSTM):
        raise TypeError(f"layer: expected a rnncore LSTM, got {type(layer).__name__}")
    x, _ = _checks.sequence(x, "x", dtype=np.float64)          # (T, B, I)
    T, B, I = x.shape
    if I != layer.input_size:
        raise ValueError(f"x: expected (T, B, {layer.input_size}) (the layer's input_size), "
                         f"got shape {x.shape}")
    lengths = _checks.lengths(lengths, T, B)
    if isinstance(sample, (bool, np.bool_)) or not isinstance(sample, (int, np.integer)):
        raise TypeError(f"sample: expected an int in [0, {B - 1}], got {sample!r}")
    if not 0 <= sample < B:
        raise ValueError(f"sample: expected an int in [0, {B - 1}] (B = {B}), got {sample}")
    Tb = T if lengths is None else int(lengths[sample])
    xs = np.ascontiguousarray(x[:Tb, sample:sample + 1])       # (T_b, 1, I)
    W_ih, W_hh, b = (p.data.astype(np.float64) for p in layer._layer_params(0, 0))
    y, _, _, cache = lstm_forward(xs, W_ih, W_hh, b)
    cs, gates = cache[7], cache[8]                             # (T_b+1, 1, H), (T_b, 1, 4H)
    H = layer.hidden_size
    g = gates[:, 0]                                            # (T_b, 4H): i, f, g, o
    return {"i": g[:, :H], "f": g[:, H:2 * H], "g": g[:, 2 * H:3 * H], "o": g[:, 3 * H:],
            "c": cs[1:, 0], "h": y[:, 0]}


def plot_lstm_gates(layer, x, path, lengths=None, sample=0):
    """Heat maps of the i, f, g, o gate activations and the cell state c over time for one
    sequence (layer 0, forward direction; see `lstm_gates`); returns ``path``.

    Rows are hidden units, columns time steps. Gates i, f, o share the colour scale [0, 1],
    g uses [-1, 1], and c a scale symmetric about 0.
    """
    path = _path(path)
    a = lstm_gates(layer, x, lengths=lengths, sample=sample)
    Tb, H = a["c"].shape
    panels = [("i", r"input gate  $i = \sigma(\cdot)$", "viridis", (0, 1)),
              ("f", r"forget gate  $f = \sigma(\cdot)$", "viridis", (0, 1)),
              ("g", r"candidate  $g = \tanh(\cdot)$", "RdBu_r", (-1, 1)),
              ("o", r"output gate  $o = \sigma(\cdot)$", "viridis", (0, 1)),
              ("c", r"cell state  $c_t = f \odot c_{t-1} + i \odot g$", "RdBu_r", None)]
    panel_h = min(2.6, 1.1 + 0.02 * H)
    fig = _figure(figsize=(min(14.0, 4.0 + 0.22 * Tb), 0.8 + panel_h * len(panels)),
                  layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True)
    extent = (-0.5, Tb - 0.5, H - 0.5, -0.5)                   # columns t, rows unit (0 on top)
    for ax, (key, title, cmap, lim) in zip(axes, panels):
        if lim is None:
            m = max(float(np.abs(a[key]).max()), 1e-12)
            lim = (-m, m)
        im = ax.imshow(a[key].T, aspect="auto", interpolation="nearest", cmap=cmap,
                       vmin=lim[0], vmax=lim[1], extent=extent)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("hidden unit")
        bar = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
        bar.set_label("activation" if key != "c" else "value", fontsize=8)
    axes[-1].set_xlabel("time step t")
    if Tb <= 40:
        axes[-1].set_xticks(np.arange(Tb))
    fig.suptitle(f"LSTM layer 0, forward direction: sequence {sample}, {Tb} steps, H = {H}")
    return _save(fig, path)
