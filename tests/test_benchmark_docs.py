"""The benchmark numbers quoted in the docs are the numbers in the records they cite.

A benchmarker compares the tables of ``benchmarks/README.md`` with what ``python -m benchmarks.
layer_step`` prints, and looks up the JSON record a paragraph names: a record renamed or never
committed, or a table left behind when its record was replaced, would send them nowhere or to
other numbers. So every record named in the docs must be in ``benchmarks/results/``, the
"Latest results" table must hold the speedups of the record it names, formatted as the
benchmark prints them, and the README's newest-run paragraph must quote the same run.
"""

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DOCS = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "README.md")] + sorted(
    os.path.join(RESULTS, f) for f in os.listdir(RESULTS) if f.endswith(".md"))
CITED = re.compile(r"`([\w./-]+\.json)`")                # a record named in backticks
CELLS = ("lstm", "gru", "rnn")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _latest_section():
    text = _read(os.path.join(ROOT, "benchmarks", "README.md"))
    start = text.index("\n## Latest results\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _latest_record():
    """The layer_step record the "Latest results" section names first, loaded."""
    name = re.search(r"results/(cpu_\w+_layer_step_\w+\.json)", _latest_section()).group(1)
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        return name, json.load(f)


def _speedups(record):
    """{(cell, (T, B, I, H), pass): kernel speedup} of a layer_step record."""
    return {(r["cell"], (r["T"], r["B"], r["I"], r["H"]), r["pass"]): r["speedup"]
            for r in record["layer"]}


def test_every_record_the_docs_name_is_committed():
    missing = []
    for doc in DOCS:
        for name in CITED.findall(_read(doc)):
            if name.startswith("bench_out/"):            # where a run writes by default
                continue
            if not os.path.isfile(os.path.join(RESULTS, os.path.basename(name))):
                missing.append(f"{os.path.relpath(doc, ROOT)}: {name}")
    assert not missing, ("records named in the docs but not in benchmarks/results/: "
                         + ", ".join(missing))


def test_the_latest_table_holds_the_speedups_of_its_record():
    name, record = _latest_record()
    speedups = _speedups(record)
    table = re.search(r"^\|.*\|\n(?:^\|.*\|\n?)+", _latest_section(), re.M).group(0)  # the first
    rows = re.findall(r"^\| (\d+), (\d+), (\d+), (\d+) \|(.*)\|$", table, re.M)
    assert len(rows) == 5, f"expected the five shapes of the grid, found {len(rows)} rows"
    for *shape, cells in rows:
        shape = tuple(map(int, shape))
        shown = [c.strip() for c in cells.split("|")]
        want = [f"{speedups[(cell, shape, p)]:.2f}x" for cell in CELLS for p in ("fwd", "fwd+bwd")]
        assert shown == want, f"{shape}: the table shows {shown}, {name} holds {want}"


def test_the_readmes_newest_run_quotes_the_same_record():
    # "LSTM 13.9x / 2.7x / 1.31x / 1.00x / 1.04x, GRU 24.4x / ...": fwd+bwd at the five shapes,
    # each as printed to its own number of decimals
    name, record = _latest_record()
    speedups = _speedups(record)
    text = _read(os.path.join(ROOT, "README.md"))
    para = text[text.index("The newest run,"):]
    para = para[:para.index("\n\n")]
    shapes = [tuple(r[k] for k in "TBIH") for r in record["layer"] if r["cell"] == "lstm"
              and r["pass"] == "fwd+bwd"]
    for cell, label in (("lstm", "LSTM"), ("gru", "GRU")):
        found = re.search(label + r" ([\d.]+)x\s*/\s*([\d.]+)x\s*/\s*([\d.]+)x\s*/\s*([\d.]+)x"
                          r"\s*/\s*([\d.]+)x", para)
        assert found, f"README's newest-run paragraph: no five {label} ratios"
        for shown, shape in zip(found.groups(), shapes):
            decimals = len(shown.split(".")[1]) if "." in shown else 0
            want = f"{speedups[(cell, shape, 'fwd+bwd')]:.{decimals}f}"
            assert shown == want, (f"README: {label} at {shape} reads {shown}x, {name} holds "
                                   f"{speedups[(cell, shape, 'fwd+bwd')]:.4f}")
