"""Every ```python block of README.md runs: the blocks are executed in order in one namespace
(later blocks use earlier names, as a reader pasting them into one session would), in a
temporary working directory (the tour writes a model file). A block that trains nothing prints
exactly the ```text block that follows it in the README; a training block's numbers depend on
the CPU (float32 sums in another order), so only the facts the text relies on are checked."""

import contextlib
import io
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
TRAINS = ("fit(", "update_parameters(", ".step()")     # a block with one of these trains


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


def test_every_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    outputs, compared = [], 0
    for i, (block, shown) in enumerate(python_blocks(with_output=True)):
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
    assert compared >= 3                                         # the three questions
    # a few of the printed facts the README's text relies on
    text = "\n".join(outputs)
    assert "17,152" in text and "12,416" in text and "17152 12416" in text
    assert "50176 = 50176" in text
    assert "return_sequences=False == [h_n[-2], h_n[-1]]: True" in text
    assert os.path.isfile(tmp_path / "functions.npz")
