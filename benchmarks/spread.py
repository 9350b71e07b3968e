"""How far one run's ratios can be trusted: each speedup of several ``layer_step`` runs as a
median and a range.

    python -m benchmarks.spread benchmarks/results/cpu_layer_step*.json
    python -m benchmarks.spread --pass fwd+bwd --json spread.json run1.json run2.json ...

On a shared or virtual machine one run's ratio moves by 10-30 % from run to run of the same
code (``benchmarks/README.md``): a single table can show 0.91x where the next shows 1.03x. This
reads the JSON records that ``layer_step`` wrote (it times nothing) and prints, per machine
(CPU model, L3 cache where the record has it, and core count) and per row of ``layer_step``'s
three tables, how many runs had that row and the median, smallest and largest speedup over
PyTorch among them: the kernel column and the module column for single layers, the module for
the bidirectional layer, the whole step for the training step. ``--quick`` records are left out (their sizes mean nothing), and so is a file
that is not a ``layer_step`` record (said on one line each). Runs of different code are pooled
as given: choose the files to compare like with like (records before 835b1e5 timed PyTorch's
forward under ``no_grad``, since under ``inference_mode``: their ``fwd`` rows read higher;
records up to fabb92f paused 0.12 s before each sample, later ones call the callable for
0.12 s instead, ``settle_s`` in the record: the smallest shapes' ratios moved most).
"""
import argparse
import json
import os
import statistics
import sys

if __package__ in (None, ""):                       # python benchmarks/spread.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402

NAME = "spread"
PASSES = ("fwd", "fwd+bwd")
_ROW_KEYS = {"cell", "T", "B", "I", "H", "pass"}
_STEP_KEYS = {"T", "B", "I", "H"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.spread", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="layer_step JSON records")
    ap.add_argument("--pass", dest="passes", choices=PASSES, action="append",
                    help="only this pass (may be given twice; default both)")
    ap.add_argument("--json", default=None, help="also write the summary here as JSON")
    args = ap.parse_args(argv)
    args.passes = tuple(args.passes or PASSES)
    return args


def _load(path):
    """The record at ``path``, or (None, why) when it is not a full layer_step record."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"cannot read it ({e})"
    if not isinstance(rec, dict) or rec.get("benchmark") != "layer_step":
        return None, "not a layer_step record"
    if rec.get("quick"):
        return None, "a --quick run"
    for part, keys in (("layer", _ROW_KEYS), ("bidirectional", _ROW_KEYS), ("train_step", _STEP_KEYS)):
        rows = rec.get(part, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) and keys <= r.keys() for r in rows):
            return None, f"its {part!r} rows are not layer_step's (each needs {', '.join(sorted(keys))})"
    return rec, None


def _machine(rec):
    """A record's machine: CPU name and cores, and its L3 cache where recorded (one CPU name
    covers machines of different caches and speeds). Records before 835b1e5 lack the cache:
    they form a group of their own per CPU name, whichever machine each came from (the 2-core
    Xeons of ``results/cpu.md`` before 2026-12-03, and the 480 MB one's first runs), so pass
    such files only with their own machine's."""
    m = rec.get("machine") or {}
    l3 = f", L3 {m['l3_cache']}" if m.get("l3_cache") else ""
    return f"{m.get('cpu', '?')}{l3}, {m.get('cores', '?')} cores"


def collect(records, passes=PASSES):
    """{machine: {row key: {column: [speedups]}}, plus the commits} from layer_step records.

    Row keys: ("layer", cell, T, B, I, H, pass), ("bidirectional", cell, T, B, I, H, pass),
    ("train step", T, B, I, H). Columns: "kernel" and "module" (single layers), "module"
    (bidirectional), "step" (training step). A missing or null speedup is skipped.
    """
    out = {}
    for rec in records:
        rows = out.setdefault(_machine(rec), {"rows": {}, "commits": []})
        rows["commits"].append((rec.get("machine") or {}).get("commit"))

        def add(key, column, value):
            if value is not None:
                rows["rows"].setdefault(key, {}).setdefault(column, []).append(float(value))

        for r in rec.get("layer", []):
            if r["pass"] in passes:
                key = ("layer", r["cell"], r["T"], r["B"], r["I"], r["H"], r["pass"])
                add(key, "kernel", r.get("speedup"))
                add(key, "module", r.get("module_speedup"))
        for r in rec.get("bidirectional", []):
            if r["pass"] in passes:
                add(("bidirectional", r["cell"], r["T"], r["B"], r["I"], r["H"], r["pass"]), "module",
                    r.get("speedup"))
        for r in rec.get("train_step", []):
            add(("train step", r["T"], r["B"], r["I"], r["H"]), "step", r.get("speedup"))
    return out


def _stats(values):
    return dict(runs=len(values), median=statistics.median(values), min=min(values), max=max(values))


def _cells(values):
    """[median, 'min-max'] formatted, or n/a for a column no run had."""
    if not values:
        return ["n/a", "n/a"]
    s = _stats(values)
    return [hz.fmt(s["median"], "x"), f"{s['min']:.2f}-{s['max']:.2f}x"]


def tables(summary):
    """Markdown tables: per machine, single layers, the bidirectional layer, the training step."""
    out = []
    for machine, data in summary.items():
        commits = [c for c in data["commits"] if c]
        note = (f"{len(data['commits'])} runs on {machine}"
                + (f", commits {', '.join(commits)}" if commits else "")
                + "; speedup = PyTorch time / rnncore time; median and range over the runs that had the row.")
        rows = data["rows"]
        layer = [[*map(str, k[1:]), str(len(v.get("kernel", v.get("module", [])))),
                  *_cells(v.get("kernel", [])), *_cells(v.get("module", []))]
                 for k, v in rows.items() if k[0] == "layer"]
        bidir = [[*map(str, k[1:]), str(len(v["module"])), *_cells(v["module"])]
                 for k, v in rows.items() if k[0] == "bidirectional"]
        step = [[*map(str, k[1:]), str(len(v["step"])), *_cells(v["step"])]
                for k, v in rows.items() if k[0] == "train step"]
        head = ["cell", "T", "B", "I", "H", "pass", "runs"]
        if layer:
            out.append((f"Single layer ({machine})", hz.markdown_table(
                head + ["kernel median", "kernel range", "module median", "module range"], layer), [note]))
        if bidir:
            out.append((f"Bidirectional, 2 layers, module API ({machine})", hz.markdown_table(
                head + ["median", "range"], bidir), []))
        if step:
            out.append((f"Training step ({machine})", hz.markdown_table(
                ["T", "B", "I", "H", "runs", "median", "range"], step), []))
    return out


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    records = []
    for path in args.files:
        rec, why = _load(path)
        if rec is None:
            print_fn(f"(left out: {path}: {why})")
        else:
            records.append(rec)
    if not records:
        raise SystemExit("spread: none of the files is a full layer_step record")
    summary = collect(records, args.passes)
    for title, md, notes in tables(summary):
        print_fn(f"\n### {title}\n")
        print_fn(md)
        for n in notes:
            print_fn(f"\n{n}")
    payload = {machine: dict(commits=data["commits"],
                             rows=[dict(key=list(k), **{c: _stats(v) for c, v in cols.items()})
                                   for k, cols in data["rows"].items()])
               for machine, data in summary.items()}
    if args.json:
        hz.write_json(args.json, dict(benchmark=NAME, files=args.files, passes=list(args.passes),
                                      machines=payload))
        print_fn(f"\n(JSON written to {args.json})")
    return payload


if __name__ == "__main__":
    main()
