"""The command line and the demos: each demo runs at its --quick size through ``cli.main`` and the
numbers it reports are checked (accuracy, shapes, parameter counts, the regression identities),
not only its exit status."""

import contextlib
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from rnncore import cli
from rnncore.demos import DEMOS, _outputs, functions, lua_port, regression, stacked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(argv, monkeypatch=None):
    """cli.main(argv) with stdout captured; returns (status, stdout, the demo's returned dict)."""
    captured = {}
    patches = []
    for name, mod in DEMOS.items():
        original = mod.run

        def recording(*args, _original=original, _name=name, **kwargs):
            captured[_name] = _original(*args, **kwargs)
            return captured[_name]
        patches.append((mod, original))
        mod.run = recording
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            status = cli.main(argv)
    finally:
        for mod, original in patches:
            mod.run = original
    result = next(iter(captured.values()), None)
    return status, buf.getvalue(), result


def percent(text, label):
    """The percentage printed after ``label`` in the demo's output, as a fraction."""
    m = re.search(re.escape(label) + r"\s*([0-9.]+)%", text)
    assert m, f"{label!r} not found in the output:\n{text}"
    return float(m.group(1)) / 100


# -- functions: one quick run (with --save and --plot) shared by several tests -------------
@pytest.fixture(scope="module")
def functions_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("functions")
    save = str(folder / "model.npz")
    plots = str(folder / "plots")
    status, out, result = run_cli(["demo", "--quick", "--no-progress", "--seed", "0",
                                   "--save", save, "--plot", plots])
    return dict(status=status, out=out, result=result, save=save, plots=plots)


def test_demo_alone_runs_functions_and_learns_the_hard_task(functions_run):
    r, out = functions_run["result"], functions_run["out"]
    assert functions_run["status"] == 0
    assert "rnncore demo functions" in out
    # Part 1: the Lua port converges on the fixed-k task (by the last step)
    assert r["lua_step_accuracy"][-1] >= 0.95
    assert len(r["lua_step_accuracy"]) == functions.POINTS
    assert r["lua_loss"][-1][1] < 0.5 * r["lua_loss"][0][1]
    # ... the same recipe does not learn the hard task
    assert r["lua_hard_accuracy"] < 0.6
    # Part 2: the recipe does, on 8 points and on shorter sequences (at the quick size, seeds
    # 0-7 gave >= 98.5 % and >= 94.5 %)
    assert r["accuracy_8"] >= 0.95
    assert r["accuracy_short"] >= 0.90
    assert set(r["accuracy_by_length"]) == {4, 5, 6, 7, 8}
    # what was printed is what was returned
    assert percent(out, "test accuracy, 8 points:") == pytest.approx(r["accuracy_8"], abs=6e-4)
    assert percent(out, "test accuracy, 4-7 points:") == pytest.approx(r["accuracy_short"],
                                                                        abs=6e-4)
    assert percent(out, "test accuracy after all 8 points:") == pytest.approx(
        r["lua_hard_accuracy"], abs=6e-4)
    assert r["history"]["epochs"] == len(r["history"]["loss"]) > 1
    assert r["history"]["loss"][-1] < r["history"]["loss"][0]


def test_functions_save_then_load_round_trip(functions_run):
    path, model = functions_run["save"], functions_run["result"]["model"]
    assert os.path.isfile(path) and functions_run["result"]["saved"] == path
    assert "rnncore.load(" in functions_run["out"]
    loaded = rnncore.load(path).evaluate()
    x, labels, lengths = functions.make_functions(200, np.random.default_rng(7), min_points=4)
    np.testing.assert_array_equal(loaded.forward(x, lengths=lengths),
                                  model.evaluate().forward(x, lengths=lengths))
    acc = np.mean(loaded.forward(x, lengths=lengths).argmax(axis=1) == labels)
    assert acc >= 0.8                                       # the weights are the trained ones


def test_functions_plot_writes_pngs(functions_run):
    names = sorted(os.listdir(functions_run["plots"]))
    assert names == ["functions_history.png", "functions_lstm_gates.png"]
    for name in names:
        with open(os.path.join(functions_run["plots"], name), "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(os.path.join(functions_run["plots"], name)) > 10_000


def test_functions_ablation_table_is_complete(capsys):
    res = functions._ablation(seed=0, hidden=4, updates=8, test=32, print_fn=print)
    assert len(res) == 12
    assert {k[0] for k in res} == {"raw", "standardised"}
    assert all(0.0 <= v <= 1.0 for v in res.values())
    table = capsys.readouterr().out
    assert table.count("%") == 12 + 1                       # 12 cells + "chance 33%"


def test_make_functions_standardises_each_sequence_over_its_valid_points():
    x, labels, lengths = functions.make_functions(50, np.random.default_rng(0), min_points=4)
    assert x.shape == (8, 50, 2) and labels.shape == lengths.shape == (50,)
    assert set(np.unique(lengths)) <= set(range(4, 9)) and set(labels) <= {0, 1, 2}
    for b in range(50):
        seq = x[:lengths[b], b].astype(np.float64)
        np.testing.assert_allclose(seq.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(seq.std(axis=0), 1.0, atol=1e-4)
        assert not x[lengths[b]:, b].any()                  # padding stays zero
    raw, labels, _ = functions.make_functions(20, np.random.default_rng(1), fixed=True,
                                              standardised=False)
    xs, ys = raw[..., 0].astype(np.float64), raw[..., 1].astype(np.float64)
    shape = np.select([labels == 0, labels == 1], [xs, xs ** 2], np.sqrt(xs))
    np.testing.assert_allclose(ys, functions.K_FIXED * shape + functions.B_FIXED, rtol=1e-6)


# -- regression -----------------------------------------------------------------------------
def test_regression_demo_shows_which_output_is_the_prediction(tmp_path):
    status, out, r = run_cli(["demo", "regression", "--quick", "--no-progress", "--seed", "1",
                              "--save", str(tmp_path / "reg.npz"), "--plot", str(tmp_path)])
    assert status == 0
    assert r["test_rmse"] < 0.5 * r["baseline_rmse"]       # it learned something
    lengths = np.array(r["lengths"])
    assert lengths.max() == 10 and (lengths < 10).any()
    # the output at each sequence's last valid step IS the prediction, and Linear(h_n[-1])
    assert r["diff_last_valid_vs_seq_to_one"] <= 1e-6
    assert r["diff_h_n_vs_seq_to_one"] <= 1e-6
    np.testing.assert_allclose(r["last_valid"], r["seq_to_one"], atol=1e-6)
    # output[-1] is it only for the full-length sentence; elsewhere it is padding: 0
    last_row, s2o = np.array(r["output_last_row"]), np.array(r["seq_to_one"])
    full = lengths == lengths.max()
    np.testing.assert_allclose(last_row[full], s2o[full], atol=1e-6)
    assert r["diff_last_row_vs_seq_to_one"] > 1e-3
    assert not last_row[~full].any() and r["bias"] != 0
    assert np.abs(np.array(r["no_lengths_last_row"])[~full] - s2o[~full]).min() > 1e-4
    # bidirectional: forward half at the last valid step = h_n[-2]; backward ends at step 0
    assert r["bi_forward_last_valid_vs_h_n"] <= 1e-6
    assert r["bi_backward_step0_vs_h_n"] <= 1e-6
    assert r["bi_seq_to_one_vs_h_n"] <= 1e-6
    assert r["bi_backward_last_row_vs_h_n"] > 1e-2
    assert r["bi_backward_last_row_vs_h_n_full"] > 1e-2
    assert f"{r['bi_backward_last_row_vs_h_n']:.3f}" in out
    # --save and --plot work here too
    loaded = rnncore.load(tmp_path / "reg.npz")
    assert loaded.state_dict().keys() == r["model"].state_dict().keys()
    xt, _, lt = regression.make_sentences(20, np.random.default_rng(3))
    np.testing.assert_array_equal(loaded.evaluate().forward(xt, lengths=lt),
                                  r["model"].evaluate().forward(xt, lengths=lt))
    with open(tmp_path / "regression_history.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_says_on_stderr_when_the_kernels_compile_first(monkeypatch, capsys):
    # With an empty Numba cache the first step waits seconds for the compiler: say so, on
    # stderr, so that the demo's own output (what the README shows) stays as it is.
    from kernels import _ahead
    monkeypatch.setenv(_ahead.ENV, "0")                  # (no compile-ahead child meanwhile)
    for cold in (True, False):
        monkeypatch.setattr(_ahead, "_cold", lambda core, cold=cold: cold)
        status, out, _ = run_cli(["demo", "stacked"])
        err = capsys.readouterr().err
        assert status == 0 and "First run here" not in out
        assert ("First run here: Numba compiles the kernels" in err) == cold


# -- stacked --------------------------------------------------------------------------------
def test_stacked_demo_counts_and_shapes():
    status, out, r = run_cli(["demo", "stacked"])
    assert status == 0 and out.startswith("rnncore demo stacked\n")   # no seed: none applies
    assert r["lstm"]["params"] == r["lstm"]["formula"] == [17152, 12416]
    assert "4*64*(2+64) + 4*64 = 17152" in out and "4*32*(64+32) + 4*32 = 12416" in out
    assert r["lstm"]["input_shapes"] == [(5, 3, 2), (5, 3, 64)]
    assert r["lstm"]["output_shapes"] == [(5, 3, 64), (3, 32)]
    assert r["bidirectional"]["params"] == r["bidirectional"]["formula"] == [34304, 41216]
    assert r["bidirectional"]["input_shapes"][1] == (5, 3, 128)       # next layer reads 2H
    assert r["bidirectional"]["output_shapes"] == [(5, 3, 128), (3, 64)]
    assert r["bidirectional"]["states"][0]["h_n"] == (2, 3, 64)
    assert r["gru"]["params"] == r["gru"]["formula"] == [3 * 64 * 66 + 6 * 64, 3 * 32 * 96 + 6 * 32]
    assert "c_n" not in r["gru"]["states"][0]
    assert r["rnn"]["params"] == r["rnn"]["formula"] == [64 * 66 + 64, 32 * 96 + 32]
    assert sum(r["num_layers_2"]["params"]) == sum(r["two_objects"]["params"]) == 50176
    assert r["same_output"] <= 1e-6 and r["same_h_n"] <= 1e-6
    # the backward chain: layer by layer by hand is the stack's backward; every step of the
    # bottom layer's output gets a gradient, though only the top's last step had one
    assert r["backward_by_hand"] <= 1e-6
    assert len(r["grad_per_step"]) == 5 and min(r["grad_per_step"]) > 0
    assert "dL/dx (5, 3, 2)" in out


def test_stacked_hidden_option_changes_the_formula():
    status, out, r = run_cli(["demo", "stacked", "--hidden", "10"])
    assert status == 0
    assert r["lstm"]["params"] == [4 * 10 * (2 + 10) + 4 * 10, 4 * 5 * (10 + 5) + 4 * 5]
    assert stacked.layer_params("GRU", 3, 4, num_layers=2, bidirectional=True) == [
        (2 * (3 * 4 * 7 + 6 * 4), "2*(3*4*(3+4) + 6*4) = 216"),
        (2 * (3 * 4 * 12 + 6 * 4), "2*(3*4*(8+4) + 6*4) = 336")]


def test_python_dash_m_rnncore_runs_the_stacked_demo():
    proc = subprocess.run([sys.executable, "-m", "rnncore", "demo", "stacked"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "17152" in proc.stdout and "= 17152" in proc.stdout and "= 12416" in proc.stdout


def test_console_script_points_at_cli_main():
    eps = [e for e in importlib.metadata.entry_points(group="console_scripts")
           if e.name == "rnncore"]
    assert len(eps) == 1 and eps[0].value == "rnncore.cli:main"
    assert eps[0].load() is cli.main


# -- usage ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["--version"]])
def test_help_and_version_exit_0(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "rnncore" in out
    if argv == ["demo", "--help"]:
        for word in ("functions", "regression", "stacked", "--seed", "--epochs", "--hidden",
                     "--save", "--plot", "--quick", "--no-progress"):
            assert word in out


@pytest.mark.parametrize("argv, message", [
    (["demo", "nope"], "invalid choice: 'nope'"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--hidden", "x"], "--hidden"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--bogus"], "unrecognized arguments"),
    (["train"], "invalid choice: 'train'"),
    (["demo", "stacked", "--save", "m.npz"], "stacked demo trains nothing"),
    (["demo", "stacked", "--ablation"], "--ablation"),
    ([], "usage: rnncore"),
    (["demo", "--save", os.path.join(ROOT, "no-such-dir", "m.npz")], "does not exist"),
    (["demo", "--hidden", "1000000"], "--hidden: expected an integer from 1 to 4096, got 1000000"),
    (["demo", "--hidden", "4097"], "--hidden: expected an integer from 1 to 4096, got 4097"),
    # (this had passed argparse and ended in the demo's own check: a traceback, exit 1)
    (["demo", "regression", "--epochs", str(2 ** 63)],
     f"--epochs: expected a positive integer below 2**63, got {2 ** 63}"),
])
def test_usage_errors_exit_2_with_a_message(argv, message, capsys, monkeypatch):
    for name in DEMOS:                              # (an accepted argv would train: stop it)
        monkeypatch.setattr(DEMOS[name], "run", lambda _name=name, **kw: pytest.fail(_name))
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_usage_error_before_training(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib -> ImportError
    called = []
    monkeypatch.setattr(functions, "run", lambda **kw: called.append(kw))
    assert cli.main(["demo", "functions", "--plot", "plots"]) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and 'pip install -e ".[plot]"' in err
    assert called == []                                         # nothing was trained


def test_options_reach_the_demo(monkeypatch):
    seen = {}
    monkeypatch.setattr(functions, "run", lambda **kw: seen.update(kw) or {})
    assert cli.main(["demo", "--seed", "5", "--epochs", "3", "--hidden", "7", "--quick",
                     "--no-progress", "--save", "m.npz"]) == 0
    assert seen == dict(seed=5, epochs=3, hidden=7, quick=True, progress=False, save="m.npz",
                        plot=None)


def test_a_plain_demo_runs_with_seed_0_and_says_so(monkeypatch, capsys):
    """--help and the README say the default seed is 0: the demo gets 0, the header names it."""
    seen = {}
    monkeypatch.setattr(functions, "run", lambda **kw: seen.update(kw) or {})
    assert cli.main(["demo"]) == 0
    assert seen["seed"] == 0
    assert capsys.readouterr().out.startswith("rnncore demo functions (seed 0)\n")


def test_an_interrupted_demo_exits_130(monkeypatch, capsys):
    def interrupted(**kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(regression, "run", interrupted)
    assert cli.main(["demo", "regression"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_lua_port_main_starts_from_the_same_weights_every_run(monkeypatch):
    """The script seeds its weights (nn.manual_seed(0)) as the Lua one did with torch.manualSeed."""
    sums = []

    def record(rnn, *a, **k):
        sums.append(sum(float(np.abs(p.data).sum()) for p in rnn.parameters()))
        return iter(())
    monkeypatch.setattr(lua_port, "train", record)
    monkeypatch.setattr(lua_port, "per_step_accuracy", lambda *a: np.zeros(8))
    for _ in range(2):
        rnncore.manual_seed(len(sums) + 7)                  # whatever the caller seeded before
        lua_port.main([])
    assert len(sums) == 2 and sums[0] == sums[1]


def _quiet(line):
    pass


def test_functions_part2_reports_what_it_measured(monkeypatch, tmp_path):
    """Part 2's numbers recomputed from its recipe (Part 1 stubbed): epochs and hidden reach
    it, a seed repeats it, the test accuracies are those of the test sets drawn after the
    training and validation sets, by length included, and each figure has its own name."""
    monkeypatch.setattr(lua_port, "train", lambda *a, **k: [(0, 1.0)])
    monkeypatch.setattr(lua_port, "per_step_accuracy", lambda *a: np.full(8, 0.4))
    from rnncore import plots
    drawn = {}
    monkeypatch.setattr(plots, "plot_history", lambda h, path: drawn.update(history=path))
    monkeypatch.setattr(plots, "plot_lstm_gates",
                        lambda layer, x, path, **kw: drawn.update(gates=path))
    lines = []
    runs = [functions.run(seed=3, quick=True, hidden=2, epochs=1, progress=False,
                          plot=str(tmp_path), print_fn=lines.append) for _ in range(2)]
    r, model = runs[0], runs[0]["model"]
    assert r["history"]["epochs"] == len(r["history"]["loss"]) == 1
    said = "\n".join(lines)
    assert "  1 epoch: training loss" in said and "(1 epoch, " in said and "epochs" not in said
    assert model[0].hidden_size == 2
    for key in ("accuracy_8", "accuracy_short", "accuracy_by_length"):
        assert runs[1][key] == r[key]
    assert runs[1]["history"]["loss"] == r["history"]["loss"]
    rng = np.random.default_rng(3 + 1)                          # Part 2's draws, in its order
    functions.make_functions(2000, rng, min_points=4)           # training (quick size)
    functions.make_functions(200, rng, min_points=4)            # validation
    x8, l8, len8 = functions.make_functions(400, rng)
    xs, ls, lens = functions.make_functions(400, rng, points=7, min_points=4)
    assert r["accuracy_8"] == functions._accuracy(model, x8, l8, len8)
    assert r["accuracy_short"] == functions._accuracy(model, xs, ls, lens)
    assert r["accuracy_by_length"][8] == r["accuracy_8"]
    for P in range(4, 8):
        m = lens == P
        assert r["accuracy_by_length"][P] == functions._accuracy(model, xs[:P, m], ls[m], lens[m])
    assert drawn == {"history": str(tmp_path / "functions_history.png"),
                     "gates": str(tmp_path / "functions_lstm_gates.png")}


def test_make_functions_draws_both_signs_of_k():
    """The hard task's k has a random sign: about half of the raw curves fall."""
    x, _, _ = functions.make_functions(2000, np.random.default_rng(0), standardised=False)
    falling = np.mean(x[-1, :, 1] < x[0, :, 1])
    assert 0.4 < falling < 0.6


def test_regression_demo_reports_what_it_measured():
    """epochs reach it, a seed repeats it, the test RMSE is that of the test set drawn after
    the training set, and the printed maximum is the maximum over the short sentences (a
    minimum printed 0.000 beside "output[-1] is not it" where a prediction was near 0)."""
    lines = []
    runs = [regression.run(seed=1, quick=True, epochs=2, progress=False, print_fn=lines.append)
            for _ in range(2)]
    r = runs[0]
    assert r["history"]["epochs"] == len(r["history"]["loss"]) == 2
    assert "sentences, 2 epochs:" in lines[0]
    assert runs[1]["test_rmse"] == r["test_rmse"] and runs[1]["targets"] == r["targets"]
    rng = np.random.default_rng(1)
    regression.make_sentences(1000, rng)                        # training (quick size)
    xt, yt, lt = regression.make_sentences(200, rng)
    loss = rnncore.score(r["model"], rnncore.MSECriterion(), xt, yt, lt)["loss"]
    assert r["test_rmse"] == pytest.approx(np.sqrt(loss), rel=1e-12)
    short = np.array(r["lengths"]) < xt.shape[0]
    gap = np.abs(np.array(r["output_last_row"]) - np.array(r["seq_to_one"]))
    assert short.any() and r["diff_last_row_vs_seq_to_one"] == pytest.approx(gap[short].max())


# -- usage errors come before any training ----------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    """Every demo's run replaced by a recorder: a usage error must come before any of them."""
    called = []
    for name in DEMOS:
        monkeypatch.setattr(DEMOS[name], "run", lambda _name=name, **kw: called.append(_name))
    return called


@pytest.mark.parametrize("argv, message", [
    (["demo", "regression", "--save", ""], "--save: expected a file path, got an empty string"),
    (["demo", "--save", "newname/"], "--save: expected a file path, got 'newname/', which ends "
                                     "with a path separator"),
    (["demo", "--save", "existing.txt/"], "--save: expected a file path, got 'existing.txt/'"),
    (["demo", "--save", "existing.txt/m.npz"], "existing.txt is not a directory"),
    (["demo", "--save", "."], "--save: expected a file path, got '.', which is a directory"),
    (["demo", "regression", "--plot", ""], "--plot: expected a directory, existing or to be "
                                           "created, got an empty string"),
    (["demo", "--plot", "existing.txt/"], "--plot: expected a directory"),
    # names longer than the file system takes (255 bytes here): an OSError after the training
    (["demo", "--save", "m" * 300 + ".npz"], "the file name is 304 bytes long, longer than the"),
    (["demo", "--plot", "new/" + "d" * 300], "--plot: " + repr("d" * 300) + ": the file name is"),
])
def test_bad_save_and_plot_paths_are_usage_errors_before_training(
        argv, message, tmp_path, monkeypatch, capsys, no_training):
    """D2: these passed the check (abspath drops a trailing slash and maps '' to the working
    directory), so the demo trained first and crashed at the end with a traceback (exit 1)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing.txt").write_text("a file")
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert no_training == [] and os.listdir(tmp_path) == ["existing.txt"]


def test_save_onto_a_read_only_file_is_a_usage_error_before_training(
        tmp_path, monkeypatch, capsys, no_training):
    """rnncore.save refuses a file it may not write: the CLI says so before the training."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept.npz").write_text("a file")
    os.chmod(tmp_path / "kept.npz", 0o444)
    real = os.access                                   # (root may write it all the same)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        False if mode & os.W_OK and os.path.basename(p) == "kept.npz" else real(p, mode, **kw)))
    assert cli.main(["demo", "regression", "--save", "kept.npz"]) == 2
    assert "--save: 'kept.npz' is a file that cannot be written" in capsys.readouterr().err
    assert no_training == [] and (tmp_path / "kept.npz").read_text() == "a file"


@pytest.mark.parametrize("name", ["regression", "functions"])
def test_plot_file_that_is_a_directory_is_a_usage_error_before_training(
        name, tmp_path, monkeypatch, capsys, no_training):
    """A folder where the demo's figure goes failed only after the whole training."""
    monkeypatch.chdir(tmp_path)
    figure = DEMOS[name].PLOT_FILES[-1]
    os.makedirs(os.path.join("plots", figure))
    assert cli.main(["demo", name, "--plot", "plots"]) == 2
    assert (f"--plot: {os.path.join('plots', figure)!r} is a directory; the {name} demo writes "
            f"its figure there") in capsys.readouterr().err
    assert no_training == []


@pytest.mark.parametrize("name", ["regression", "functions"])
def test_save_and_plot_that_collide_are_usage_errors_before_training(
        name, tmp_path, monkeypatch, capsys, no_training):
    """Each path was checked alone: a model saved as one of the demo's figures was then
    overwritten by it (exit 0, "Saved the regressor to ..." printed, a PNG left), and
    ``--save out --plot out`` failed after the training (FileExistsError)."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    os.mkdir("plots")
    figure = os.path.join("plots", DEMOS[name].PLOT_FILES[0])
    for save, plot, message in ((figure, "plots", "which would overwrite it"),
                                (os.path.join("plots", ".", os.path.basename(figure)),
                                 "plots/", "which would overwrite it"),
                                ("out", "out", "would be where the plots' directory"),
                                ("out", os.path.join("out", "sub"), "would be where the plots'")):
        assert cli.main(["demo", name, "--save", save, "--plot", plot]) == 2
        err = capsys.readouterr().err
        assert f"--save / --plot: the model file {save!r}" in err and message in err
    os.makedirs(os.path.join("elsewhere", "dir"))
    os.symlink(os.path.join("..", "elsewhere", "dir"), os.path.join("plots", "sub"))
    # ``save`` writes plots/sub/../x as plots/x (lexically, as the path reads), not elsewhere/x
    save = os.path.join("plots", "sub", "..", DEMOS[name].PLOT_FILES[0])
    assert cli.main(["demo", name, "--save", save, "--plot", "plots"]) == 2
    assert "which would overwrite it" in capsys.readouterr().err
    assert cli.main(["demo", name, "--save", save, "--plot", "elsewhere"]) == 0
    assert no_training == [name]
    no_training.clear()
    os.unlink(os.path.join("plots", "sub"))
    shutil.rmtree("elsewhere")
    assert no_training == [] and os.listdir(".") == ["plots"] and os.listdir("plots") == []
    assert cli.main(["demo", name, "--save", os.path.join("plots", "model.npz"),
                     "--plot", "plots"]) == 0 and no_training == [name]


@pytest.mark.parametrize("flags", [["--epochs", "2"], ["--plot", "plots"], ["--save", "m.npz"]])
def test_stacked_refuses_training_options(flags, capsys, no_training):
    """Q8: --epochs was accepted by the stacked demo, which trains nothing, and changed nothing
    it printed; like --save and --plot it is now a usage error. The options every demo takes
    (--seed, --quick, --no-progress) pass: a loop over the demos may give them to each."""
    assert cli.main(["demo", "stacked", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{flags[0]}: the stacked demo trains nothing" in err and no_training == []
    assert cli.main(["demo", "stacked", "--hidden", "8", "--seed", "3", "--quick",
                     "--no-progress"]) == 0
    assert no_training == ["stacked"]


def test_hidden_help_says_what_stacked_does(capsys):
    """Q8: the help said the second layer gets "N//2"; --hidden 1 gives it 1."""
    assert cli.main(["demo", "--help"]) == 0
    assert "max(N//2, 1)" in " ".join(capsys.readouterr().out.split())
    status, out, r = run_cli(["demo", "stacked", "--hidden", "1"])
    assert status == 0 and r["lstm"]["output_shapes"][1] == (3, 1)


def test_lua_port_main_from_python_ignores_the_host_programs_arguments(monkeypatch):
    """Called from Python (a notebook), main() had parsed the host program's sys.argv."""
    ran = []
    monkeypatch.setattr(lua_port, "train", lambda *a, **k: ran.append(1) or iter(()))
    monkeypatch.setattr(sys, "argv", ["jupyter", "--some-kernel-flag", "x.json"])
    try:
        lua_port.main()
    except SystemExit as e:
        raise AssertionError(f"main() exited with {e.code}") from None
    assert ran == [1]


def test_lua_port_takes_only_help(monkeypatch, capsys):
    """D6: ``python -m rnncore.demos.lua_port --help`` (or a typo) started the 3000-iteration
    run; --help now prints the usage (exit 0) and anything else exits 2, before training."""
    def no_training(*args, **kwargs):
        raise AssertionError("lua_port trained")
    monkeypatch.setattr(lua_port, "train", no_training)
    with pytest.raises(SystemExit) as info:
        lua_port.main(["--help"])
    assert info.value.code == 0
    assert "usage: python -m rnncore.demos.lua_port" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        lua_port.main(["--iterations", "5"])
    assert info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "rnncore.demos.lua_port", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


@pytest.mark.parametrize("mode", ["training", "evaluate", "mixed"])
def test_per_step_accuracy_gives_the_modes_back(mode):
    """Q11: per_step_accuracy left every module in training mode, whatever it was before."""
    rnncore.manual_seed(0)
    rnn, _ = lua_port.build(hidden=4)
    if mode == "evaluate":
        rnn.evaluate()
    elif mode == "mixed":
        rnn.module[1].evaluate()                            # the Linear only
    before = [m.train for m in rnn.modules()]
    x, labels, _ = functions.make_functions(10, np.random.default_rng(0), fixed=True,
                                            standardised=False)
    acc = lua_port.per_step_accuracy(rnn, x, labels)
    assert acc.shape == (functions.POINTS,)
    assert [m.train for m in rnn.modules()] == before


@pytest.mark.parametrize("flag", ["--save", "--plot"])
def test_a_folder_that_cannot_be_written_is_a_usage_error_before_training(
        flag, tmp_path, monkeypatch, capsys, no_training):
    """A read-only folder (os.access cannot tell: it says yes to root): a file is made and
    removed there first. The demo had trained, then failed with a traceback (exit 1)."""
    made = []

    def refuse(dir=None, **kw):
        made.append(dir)
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(_outputs.tempfile, "mkstemp", refuse)
    target = str(tmp_path / "m.npz") if flag == "--save" else str(tmp_path / "plots")
    assert cli.main(["demo", "regression", flag, target]) == 2
    assert f"{flag}: cannot write in {tmp_path} (Permission denied)" in capsys.readouterr().err
    assert made == [str(tmp_path)] and no_training == []


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_output_into_a_closed_pipe_exits_141_without_a_traceback(unbuffered):
    """``demo stacked | true``: the reader is gone before the first line. The header was
    printed outside the demo's try (a traceback, exit 1, when unbuffered), and the rest only
    flushed at exit (exit 120, "Exception ignored")."""
    r, w = os.pipe()
    os.close(r)
    env = dict(os.environ, PYTHONUNBUFFERED=unbuffered)
    if not unbuffered:
        env.pop("PYTHONUNBUFFERED")
    try:
        out = subprocess.run([sys.executable, "-m", "rnncore", "demo", "stacked"], stdout=w,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=300)
    finally:
        os.close(w)
    assert out.returncode == 141, out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr


def test_save_through_a_link_is_checked_in_the_links_target_folder(tmp_path, monkeypatch, capsys,
                                                                  no_training):
    if os.name != "posix":
        return
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    os.symlink(tmp_path / "real" / "m.npz", tmp_path / "links" / "m.npz")
    seen = []

    def refuse(dir=None, **kw):
        seen.append(dir)
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(_outputs.tempfile, "mkstemp", refuse)
    assert cli.main(["demo", "regression", "--save", str(tmp_path / "links" / "m.npz")]) == 2
    assert seen == [str(tmp_path / "real")] and no_training == []


def _read_only(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_demos_check_epochs_and_hidden_before_any_training(monkeypatch, tmp_path):
    """functions.run(epochs=0) trained Part 1, then died of a ZeroDivisionError."""
    def no_training(*args, **kwargs):
        raise AssertionError("trained")
    monkeypatch.setattr(lua_port, "train", no_training)
    monkeypatch.setattr(rnncore, "fit", no_training)
    for demo in (functions, regression):
        with pytest.raises(ValueError, match="epochs: expected an int >= 1, got 0"):
            demo.run(epochs=0, print_fn=lambda *a: None)
        with pytest.raises(TypeError, match="hidden: expected an int >= 1, got 2.5"):
            demo.run(hidden=2.5, print_fn=lambda *a: None)
        with pytest.raises(FileNotFoundError, match="save: '/nonexistent/m.npz': the folder"):
            demo.run(save="/nonexistent/m.npz", print_fn=lambda *a: None)   # (had trained first)
        with pytest.raises(ValueError, match="save / plot: the model file .* is the "
                                             f"{demo.__name__.rsplit('.', 1)[1]} demo's plot"):
            demo.run(save=os.path.join(tmp_path, demo.PLOT_FILES[0]), plot=tmp_path,
                     print_fn=lambda *a: None)
        # plot= alone was checked by the CLI only: run() trained, then failed to write
        a_file = tmp_path / "a_file"
        a_file.write_text("")
        for plot, error, message in ((a_file, ValueError, "plot: expected a directory, existing or "
                                                          "to be created, got"),
                                     ("", ValueError, "plot: expected a directory.*empty string"),
                                     (3, TypeError, "plot: expected a str or os.PathLike, "
                                                    "got int")):
            with pytest.raises(error, match=message):
                demo.run(plot=plot, print_fn=lambda *a: None)
        os.makedirs(tmp_path / "figs" / demo.PLOT_FILES[0])
        with pytest.raises(ValueError, match="is a directory; the .* demo writes its figure there"):
            demo.run(plot=tmp_path / "figs", print_fn=lambda *a: None)
        monkeypatch.setattr(_outputs.tempfile, "mkstemp", _read_only)
        with pytest.raises(OSError, match="save: cannot write in"):
            demo.run(save=os.path.join(tmp_path, "m.npz"), print_fn=lambda *a: None)
        monkeypatch.undo()
        monkeypatch.setattr(lua_port, "train", no_training)
        monkeypatch.setattr(rnncore, "fit", no_training)
    with pytest.raises(ValueError, match="hidden: expected an int >= 1, got 0"):  # (hidden_size)
        stacked.run(hidden=0, print_fn=lambda *a: None)


def test_make_functions_refuses_lengths_outside_one_to_points():
    """min_points=0 gave sequences of length 0 (the model refused them only later)."""
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="min_points: expected an int >= 1, got 0"):
        functions.make_functions(6, rng, min_points=0)
    with pytest.raises(ValueError, match="points: expected an int >= 1, got 0"):
        functions.make_functions(6, rng, points=0)
    with pytest.raises(ValueError, match="min_points: expected at most points = 8, got 9"):
        functions.make_functions(6, rng, min_points=9)
    x, _, lengths = functions.make_functions(6, rng, points=3, min_points=3)
    assert x.shape == (3, 6, 2) and lengths.tolist() == [3] * 6


def test_make_sentences_and_lua_train_check_their_arguments():
    """make_sentences (public, in __all__) failed on bad arguments with NumPy's errors, an
    AttributeError (rng=0) or one naming an internal argument (n=0: 'sequences'); lua_port's
    train returned [] for iterations=0 and raised range's TypeError for 2.5."""
    rng = np.random.default_rng(0)
    for kwargs, error, message in (
            (dict(n=0), ValueError, "n: expected an int >= 1, got 0"),
            (dict(n=2.5), TypeError, "n: expected an int >= 1, got 2.5"),
            (dict(n=3, min_words=0), ValueError, "min_words: expected an int >= 1, got 0"),
            (dict(n=3, min_words=5, max_words=3), ValueError,
             "min_words: expected at most max_words = 3, got 5"),
            (dict(n=3, rng="a"), TypeError, "rng: expected a numpy Generator")):
        with pytest.raises(error, match=message):
            regression.make_sentences(**{"rng": rng, **kwargs})
    ids, targets, lengths = regression.make_sentences(4, 0, min_words=2, max_words=2)   # a seed
    assert ids.shape == (2, 4) and lengths.tolist() == [2] * 4 and targets.shape == (4, 1)
    for kwargs, error in ((dict(iterations=0), ValueError), (dict(iterations=2.5), TypeError),
                          (dict(iterations=3, checkpoints=0), ValueError)):
        with pytest.raises(error, match=next(iter(kwargs.keys() - {"iterations"}), "iterations")):
            lua_port.train(None, None, None, **kwargs)


def test_standardise_and_make_functions_check_their_arguments():
    """standardise took lengths beyond T (sample 0 came back with mean 0.9, variance 1.4),
    float lengths (2.5: three steps, divided by 2.5) and 0 (RuntimeWarnings); make_functions
    given a seed for rng failed with "'int' object has no attribute 'uniform'"."""
    x = np.arange(24, dtype=np.float64).reshape(4, 3, 2)
    for lengths, error, message in (([9, 4, 4], ValueError, r"lengths: expected values in "
                                                            r"\[1, 4\]"),
                                    ([0, 4, 4], ValueError, "lengths: expected values in"),
                                    ([2.5, 4, 4], TypeError, "lengths"),
                                    ([4, 4], ValueError, r"lengths: expected shape \(3,\)")):
        with pytest.raises(error, match=message):
            functions.standardise(x, np.array(lengths))
    with pytest.raises(ValueError, match="x: expected"):
        functions.standardise(np.full((4, 3, 2), np.nan))
    with pytest.raises(ValueError, match=r"x: expected \(T, N, F\)"):
        functions.standardise(np.zeros((4, 3)))
    z = functions.standardise(x, np.array([2, 4, 3]))
    np.testing.assert_allclose(z[:2, 0].mean(axis=0), 0, atol=1e-6)
    assert (z[2:, 0] == 0).all()
    a = functions.make_functions(5, 7)[0]
    b = functions.make_functions(5, np.random.default_rng(7))[0]
    np.testing.assert_array_equal(a, b)
    for bad, error in ((np.random.RandomState(0), TypeError), (True, TypeError), (2.0, TypeError),
                       (-1, ValueError)):
        with pytest.raises(error, match="rng: expected a"):
            functions.make_functions(5, bad)
    np.testing.assert_array_equal(functions.make_functions(5, np.random.SeedSequence(7))[0], a)
    with pytest.raises(ValueError, match=r"x: expected \(T, N, F\) with T >= 1"):
        functions.standardise(np.zeros((0, 3, 2)))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("quick", [False, True])
def test_functions_suggests_dropping_quick_only_when_quick(quick, monkeypatch):
    """Part 1's hint said "run without --quick" to a run without --quick."""
    monkeypatch.setattr(lua_port, "train", lambda *a, **k: [(0, 1.0)])
    monkeypatch.setattr(lua_port, "per_step_accuracy", lambda *a: np.full(8, 0.4))
    lines = []

    def print_fn(line):
        lines.append(line)
        if "not converged" in line:
            raise _Stop

    with pytest.raises(_Stop):
        functions.run(quick=quick, hidden=2, print_fn=print_fn)
    assert ("--quick" in lines[-1]) == quick
