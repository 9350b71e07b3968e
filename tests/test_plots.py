"""rnncore.plots: real image files, gate activations that match the layer, clear refusals."""

import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from rnncore import GRU, LSTM, History
from rnncore.plots import lstm_gates, plot_history, plot_lstm_gates

PNG = b"\x89PNG\r\n\x1a\n"


def history(accuracy=True, epochs=5):
    h = History()
    h.loss = list(np.linspace(1.0, 0.2, epochs))
    h.val_loss = list(np.linspace(1.1, 0.3, epochs))
    if accuracy:
        h.accuracy = list(np.linspace(0.5, 0.95, epochs))
        h.val_accuracy = list(np.linspace(0.45, 0.9, epochs))
    h.seconds, h.epochs = [0.1] * epochs, epochs
    return h


def is_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG and os.path.getsize(path) > 5000


def test_plot_history_writes_pngs(tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    assert plot_history(history(), tmp_path / "h.png") == str(tmp_path / "h.png")
    assert is_png(tmp_path / "h.png")
    assert is_png(plot_history(history(accuracy=False).as_dict(), str(tmp_path / "loss.png")))
    assert is_png(plot_history(history(epochs=1), tmp_path / "one.png"))
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot          # no pyplot, no window


@pytest.mark.parametrize("accuracy", [True, False])
def test_plot_history_draws_each_curve_against_its_epochs(accuracy, tmp_path, monkeypatch):
    """What is drawn, not only that a file is written: a Loss panel (and an Accuracy one when
    the history has it), each with the training and the validation values over epochs 1..n."""
    from rnncore import plots
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    h = history(accuracy=accuracy, epochs=3)
    plot_history(h, tmp_path / "h.png")
    axes = figures[0].axes
    keys = ["loss", "accuracy"] if accuracy else ["loss"]
    assert [ax.get_title() for ax in axes] == [k.capitalize() for k in keys]
    for ax, key in zip(axes, keys):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(lines) == ["training", "validation"]
        for label, values in (("training", h[key]), ("validation", h["val_" + key])):
            np.testing.assert_array_equal(lines[label].get_xdata(), [1, 2, 3])
            np.testing.assert_array_equal(lines[label].get_ydata(), values)


@pytest.mark.parametrize("epochs", [1, 3])
def test_plot_history_labels_whole_epochs_only(epochs, tmp_path, monkeypatch):
    """The epoch axis is ticked at whole epochs, one run included (an integer locator with
    its default two ticks fell back to 0.945, 0.960, ... epochs for a single point)."""
    from rnncore import plots
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plot_history(history(epochs=epochs), tmp_path / "h.png")
    figures[0].canvas.draw()
    for ax in figures[0].axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert set(range(1, epochs + 1)) <= {int(t) for t in ticks}


def test_format_follows_the_suffix(tmp_path):
    svg = plot_history(history(), tmp_path / "h.svg")
    assert open(svg, "rb").read(200).lstrip().startswith(b"<?xml")
    bare = plot_history(history(), tmp_path / "curves")
    assert bare == str(tmp_path / "curves") and is_png(bare)
    assert sorted(os.listdir(tmp_path)) == ["curves", "h.svg"]


def test_lstm_gates_match_the_layer():
    rnncore.manual_seed(0)
    layer = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((6, 3, 3))
    lengths = np.array([6, 4, 2])
    y = layer.forward(x, lengths=lengths)
    layer0 = LSTM(3, 4, dtype=np.float64)
    layer0.load_state_dict({k: v for k, v in layer.state_dict().items()
                            if k.endswith("_l0")})         # not "_l0_reverse", not "_l1"
    y0 = layer0.forward(x, lengths=lengths)                        # layer 0, forward direction
    for b in range(3):
        a = lstm_gates(layer, x, lengths=lengths, sample=b)
        assert all(a[k].shape == (lengths[b], 4) for k in "ifgoch")
        np.testing.assert_allclose(a["h"], y0[:lengths[b], b], rtol=0, atol=1e-12)
        np.testing.assert_allclose(a["h"], a["o"] * np.tanh(a["c"]), rtol=0, atol=1e-12)
        c_prev = np.vstack([np.zeros((1, 4)), a["c"][:-1]])
        np.testing.assert_allclose(a["c"], a["f"] * c_prev + a["i"] * a["g"], atol=1e-12)
        assert (a["i"] > 0).all() and (a["i"] < 1).all() and (np.abs(a["g"]) < 1).all()
    assert y.shape == (6, 3, 8)


def test_plot_lstm_gates_writes_a_png(tmp_path):
    rnncore.manual_seed(1)
    layer = LSTM(2, 12)
    x = np.random.default_rng(1).standard_normal((9, 2, 2)).astype(np.float32)
    path = plot_lstm_gates(layer, list(x), tmp_path / "gates.png", lengths=np.array([9, 5]),
                           sample=1)
    assert path == str(tmp_path / "gates.png") and is_png(path)


def test_bad_arguments(tmp_path):
    x = np.zeros((4, 2, 2))
    with pytest.raises(TypeError, match="layer: expected a rnncore LSTM, got GRU"):
        plot_lstm_gates(GRU(2, 3), x, tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"sample: expected an int in \[0, 1\]"):
        plot_lstm_gates(LSTM(2, 3), x, tmp_path / "g.png", sample=2)
    with pytest.raises(TypeError, match="sample"):
        plot_lstm_gates(LSTM(2, 3), x, tmp_path / "g.png", sample=0.0)
    with pytest.raises(ValueError, match=r"x: expected \(T, B, 3\)"):
        plot_lstm_gates(LSTM(3, 3), x, tmp_path / "g.png")
    with pytest.raises(ValueError, match="lengths"):
        plot_lstm_gates(LSTM(2, 3), x, tmp_path / "g.png", lengths=np.array([5, 1]))
    with pytest.raises(ValueError, match="history: expected at least one epoch"):
        plot_history(History(), tmp_path / "h.png")
    with pytest.raises(TypeError, match="history"):
        plot_history([0.1, 0.2], tmp_path / "h.png")
    with pytest.raises(TypeError, match="path"):
        plot_history(history(), 42)
    # paths checked as rnncore.save checks them, naming path (matplotlib's own errors did not)
    for bad, error, match in (("", ValueError, "path: expected a file path, got an empty"),
                              (str(tmp_path) + os.sep, ValueError, "path: expected a file path"),
                              (tmp_path, IsADirectoryError, "path: .* which is a directory"),
                              (tmp_path / "no" / "h.png", FileNotFoundError,
                               "path: .* the folder .* does not exist")):
        with pytest.raises(error, match=match):
            plot_history(history(), bad)
        with pytest.raises(error, match=match):
            plot_lstm_gates(LSTM(2, 3), x, bad)
    assert os.listdir(tmp_path) == []


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)      # import now fails
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[plot\]" \(in the rnncore repository\)'):
        plot_history(history(), tmp_path / "h.png")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[plot\]"'):
        plot_lstm_gates(LSTM(2, 3), np.zeros((3, 1, 2)), tmp_path / "g.png")


def test_plot_history_takes_a_dict_of_arrays(tmp_path):
    """D5: a dict of NumPy arrays (as_dict() through np.savez / np.load) raised NumPy's "truth
    value of an array ... is ambiguous"; a bad entry is now refused naming history[key]."""
    np.savez(tmp_path / "h.npz", **history().as_dict())
    with np.load(tmp_path / "h.npz") as f:
        assert is_png(plot_history(f, tmp_path / "npz.png"))
    arrays = {"loss": np.array([1.0, 0.5]), "accuracy": np.array([0.1, 0.2])}
    assert is_png(plot_history(arrays, tmp_path / "arrays.png"))
    assert is_png(plot_history({"loss": np.array([1.0, 0.5]), "accuracy": np.array([])},
                               tmp_path / "no_accuracy.png"))
    for bad, key in (({"loss": np.ones((2, 2))}, "loss"),
                     ({"loss": [1.0], "accuracy": ["a"]}, "accuracy"),
                     ({"loss": [1.0], "val_loss": 3.0}, "val_loss"),
                     # a bare KeyError, and lists that NumPy's float conversion took
                     ({"loss": None}, "loss"), ({"loss": ["1.0", "0.5"]}, "loss"),
                     ({"loss": [1.0, None, 0.5]}, "loss"), ({"loss": [True, False]}, "loss")):
        with pytest.raises(ValueError, match=rf"history\['{key}'\]: expected a list of numbers"):
            plot_history(bad, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="history: expected at least one epoch"):
        plot_history({"loss": np.array([])}, tmp_path / "bad.png")
    assert not os.path.exists(tmp_path / "bad.png")


def test_rnncore_plots_is_an_attribute_without_importing_matplotlib_first():
    """D7: ``import rnncore; rnncore.plots`` raised AttributeError (only ``import
    rnncore.plots`` worked); like train / io / data it loads on first use, and matplotlib only
    when a figure is drawn. A fresh interpreter: this one has imported rnncore.plots already."""
    code = ("import sys, rnncore\n"
            "assert 'rnncore.plots' not in sys.modules and 'matplotlib' not in sys.modules\n"
            "assert 'plots' in dir(rnncore)\n"
            "assert rnncore.plots.plot_history is sys.modules['rnncore.plots'].plot_history\n"
            "assert 'matplotlib' not in sys.modules\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_plots_take_bytes_paths_as_save_does(tmp_path):
    path = os.fsencode(str(tmp_path / "h.png"))
    assert plot_history(history(), path) == str(tmp_path / "h.png")
    assert is_png(str(tmp_path / "h.png"))
