"""Every ```python block of README.md runs: the blocks are executed in order in one namespace
(later blocks use earlier names, as a reader pasting them into one session would), in a
temporary working directory (the tour writes a model file). A block that trains nothing prints
exactly the ```text block that follows it in the README. A training block's numbers depend on
the CPU (float32 sums in another order), so its output must match the README's line for line
except that each decimal number may differ by up to 0.1 (10 % above 1): the summary table, the
counts and the True of a reloaded model exactly, the losses and accuracies roughly."""

import contextlib
import importlib.util
import io
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
TRAINS = ("fit(", "update_parameters(", ".step()")     # a block with one of these trains
DECIMAL = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")        # a number a training run may move


def _template(line):
    """``line`` with its decimals replaced by ``#`` and its spacing normalized (NumPy pads an
    array's shorter numbers: ``[0.916 0.95 ]`` beside ``[0.916 0.934]``)."""
    return re.sub(r"\s+\]", "]", re.sub(r"\s+", " ", DECIMAL.sub("#", line))).strip()


def roughly_the_same(printed, shown):
    """None where a training block printed what the README shows, up to its trained numbers
    (each decimal within 0.1, or 10 % above 1); else what differs."""
    got, want = printed.splitlines(), shown.splitlines()
    if len(got) != len(want):
        return f"{len(got)} lines printed, {len(want)} shown"
    for g, w in zip(got, want):
        if _template(g) != _template(w):
            return f"printed {g!r}, shown {w!r}"
        for a, b in zip(DECIMAL.findall(g), DECIMAL.findall(w)):
            if abs(float(a) - float(b)) > 0.1 * max(1.0, abs(float(b))):
                return f"printed {a} where the README shows {b}: {g!r}"
    return None


def python_blocks(with_output=False):
    """The ```python blocks in order; with ``with_output``, (block, the ```text block right
    after it or None)."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    fences = list(FENCE.finditer(text))
    out = []
    for i, m in enumerate(fences):
        if m.group(1) != "python":
            continue
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        shown = (nxt.group(2) if nxt is not None and nxt.group(1) == "text"
                 and not text[m.end():nxt.start()].strip() else None)
        out.append((m.group(2), shown))
    return out if with_output else [b for b, _ in out]


def test_readme_keeps_its_two_commands_first():
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[2] == "```bash"
    assert lines[3] == "pip install -e . && python -m rnncore demo"
    assert lines[4] == 'pip install -e ".[dev]" && python -m pytest -q'
    ci = os.path.join(os.path.dirname(README), ".ci", "run")
    with open(ci, encoding="utf-8") as f:
        assert lines[4] in f.read().splitlines()             # CI runs exactly the README's command


def test_readme_has_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 5
    assert any("Sequencer" in b and "update_parameters" in b for b in blocks)   # the Lua port
    assert any("17152" in b for b in blocks)


def test_readme_shows_the_demos_own_closing_summary():
    """The demo's output in the README (trained numbers, from its one machine) ends with the
    demo's fixed paragraph on why the Lua run stalled, word for word as the demo prints it."""
    from rnncore.demos import functions
    with open(README, encoding="utf-8") as f:
        text = f.read()
    demo = next(m.group(2) for m in FENCE.finditer(text) if m.group(1) == "text")
    assert demo.startswith("rnncore demo functions (seed 0)\n")
    assert functions.WHY.strip() + "\n\nTotal " in demo


def test_every_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    outputs, compared = [], 0
    for i, (block, shown) in enumerate(python_blocks(with_output=True)):
        if ("import torch" in block and importlib.util.find_spec("torch") is None
                and os.environ.get("RNNCORE_TESTS_WITHOUT_TORCH")):
            continue                                 # (conftest: the PyTorch parity ones skip)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as e:                                   # name the failing block
            pytest.fail(f"README.md python block {i} raised {type(e).__name__}: {e}\n"
                        f"--- block {i} ---\n{block}")
        outputs.append(buf.getvalue())
        if shown is not None and not any(t in block for t in TRAINS):
            assert buf.getvalue() == shown, f"README.md python block {i} printed something else"
            compared += 1
        elif shown is not None:
            differs = roughly_the_same(buf.getvalue(), shown)
            assert differs is None, f"README.md python block {i} (training): {differs}"
    assert compared >= 3                                         # the three questions
    # a few of the printed facts the README's text relies on
    text = "\n".join(outputs)
    assert "17152" in text and "12416" in text and "17152 12416" in text
    assert "50176 = 50176" in text
    assert "return_sequences=False == [h_n[-2], h_n[-1]]: True" in text
    assert "h[lengths-1] == h_n[-1]: True" in text                 # the last output IS h_n
    if importlib.util.find_spec("torch") is not None:
        assert "same output [forward | backward]: True" in text    # PyTorch's order too
    assert os.path.isfile(tmp_path / "functions.npz")
