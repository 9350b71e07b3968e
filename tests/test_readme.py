"""Every ```python block of README.md runs: the blocks are executed in order in one namespace
(later blocks use earlier names, as a reader pasting them into one session would), in a
temporary working directory (the tour writes a model file)."""

import contextlib
import io
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks():
    with open(README, encoding="utf-8") as f:
        return FENCE.findall(f.read())


def test_readme_keeps_its_two_commands_first():
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[2] == "```bash"
    assert lines[3] == "pip install -e . && python -m rnncore demo"
    assert lines[4] == 'pip install -e ".[dev,bench]" && python -m pytest -q'
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
    outputs = []
    for i, block in enumerate(python_blocks()):
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as e:                                   # name the failing block
            pytest.fail(f"README.md python block {i} raised {type(e).__name__}: {e}\n"
                        f"--- block {i} ---\n{block}")
        outputs.append(buf.getvalue())
    # a few of the printed facts the README's text relies on
    text = "\n".join(outputs)
    assert "17,152" in text and "12,416" in text and "17152 12416" in text
    assert "50176 = 50176" in text
    assert "return_sequences=False == [h_n[-2], h_n[-1]]: True" in text
    assert os.path.isfile(tmp_path / "functions.npz")
