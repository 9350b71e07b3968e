"""benchmarks/gpu.py and gpu_choices.py end to end on numba's CUDA simulator (``--check``), in a
fresh process (the simulator must be chosen before numba.cuda is first imported): every column
of the GPU benchmark is produced, both paths agree with each other and with the float64
reference; every layout variant gives the default plan's outputs. Their times mean nothing; on
a GPU the same scripts are the benchmarks."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_benchmark_check_mode_runs_every_column(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--check", "--cells", "gru",
                          "--limit", "1", "--json", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["check_mode"] and res["device"]["simulator"] and res["gemm_backend"] == "numba"
    assert res["machine"]["commit"] and res["machine"]["time"]   # (as every benchmark's record)
    assert [(r["cell"], r["pass"]) for r in res["rows"]] == [("gru", "fwd"), ("gru", "fwd+bwd")]
    for r in res["rows"]:
        assert (r["T"], r["B"], r["I"], r["H"]) == (3, 1, 2, 3)
        for key in ("steps_ms", "persistent_ms", "best_gflops"):
            assert np.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert r["cudnn_ms"] is None                      # no cuDNN on the simulator
        assert r["check"]["steps_vs_persistent_f32"] < 1e-4
        assert r["check"]["steps_vs_reference_f64"] < 1e-10
        assert r["check"]["persistent_vs_reference_f64"] < 1e-10
        assert r["plan"]["forward"]["staged"] is True     # batch 1: rows staged
    assert "| gru | 3 | 1 | 2 | 3 | fwd+bwd |" in run.stdout
    assert "| 3 / 1, staged / staged, NB 1 / 1, unroll 1 / 1 |" in run.stdout  # the plans


def test_gpu_benchmark_refuses_a_bad_limit():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--check", "--limit", "0"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--limit: expected an integer >= 1, got 0" in run.stderr


def test_gpu_choices_check_mode_times_every_variant(tmp_path):
    out = tmp_path / "gpu_choices.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_choices", "--check", "--cells", "gru",
                          "--json", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["check_mode"] and res["simulator"] and res["machine"]["commit"]
    rows = res["rows"]
    assert {(r["B"], r["direction"]) for r in rows} == {(2, "forward"), (2, "backward")}
    layout = lambda r: (r["plan"]["batch_tile"], r["plan"]["unroll"], r["plan"]["unit_tile"])  # noqa: E731
    for direction in ("forward", "backward"):
        mine = [r for r in rows if r["direction"] == direction]
        assert mine[0]["default"] and sum(r["default"] for r in mine) == 1
        assert len({layout(r) for r in mine}) == len(mine) >= 2   # the default and variants
        tiles = {r["plan"]["unit_tile"] for r in mine}
        assert tiles == ({1} if direction == "forward" else {1, 2, 4})
    for r in rows:
        assert r["max_abs_diff"] == 0.0 and r["ms"] > 0   # same sums in the same order
    assert [(s["cell"], s["B"]) for s in res["summary"]] == [("gru", 2)]
    assert all(s["cudnn_fwd_ms"] is None for s in res["summary"])
    assert "| gru | 2 | backward | 1 / 1 / staged / 4 |" in run.stdout


def test_gpu_choices_refuses_bad_batches():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_choices", "--check", "--batches", "0,4"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--batches: expected integers >= 1, got [0, 4]" in run.stderr


def test_gpu_scripts_refuse_timing_the_simulator():
    """NUMBA_ENABLE_CUDASIM set without --check: its times would mean nothing."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    for name in ("gpu", "gpu_choices"):
        run = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 1, (name, run.returncode, run.stderr[-2000:])
        assert f"benchmarks/{name}.py: NUMBA_ENABLE_CUDASIM is set" in run.stderr, run.stderr[-2000:]


def test_compile_only_reads_registers_and_spills_from_ptxas(tmp_path):
    """``--compile-only`` reports each kernel's registers and spilled bytes from ``ptxas -v``
    (here a stand-in printing what ptxas prints), and None where ptxas fails."""
    sys.path.insert(0, ROOT)
    from benchmarks import gpu
    fake = tmp_path / "ptxas"
    fake.write_text("#!/bin/sh\n"
                    "echo \"ptxas info    : Function properties for k\" >&2\n"
                    "echo \"    0 bytes stack frame, 24 bytes spill stores, 16 bytes spill loads\" >&2\n"
                    "echo \"ptxas info    : Used 93 registers, used 1 barriers\" >&2\n")
    fake.chmod(0o755)
    assert gpu._machine_code_facts(str(fake), ".version 8.0", (9, 0)) == (93, 40, None)
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'ptxas fatal : no' >&2\nexit 255\n")
    broken.chmod(0o755)
    assert gpu._machine_code_facts(str(broken), ".version 8.0", (9, 0)) == (None, None, None)


def test_compile_only_finds_the_sums_loop_in_the_machine_code():
    """Instructions per FFMA of the block with the most FFMAs, leaving out the cells' blocks
    (FMUL, MUFU); None without FFMAs."""
    sys.path.insert(0, ROOT)
    from benchmarks import gpu
    line = "        /*{:04x}*/                   {} R1, R2, R3 ;"
    code = ["entry:"] + [line.format(16 * i, op) for i, op in enumerate(["MOV", "FFMA"])]
    code += [".L_x_1:"] + [line.format(64 + 16 * i, op) for i, op in enumerate(
        ["FFMA", "FFMA", "FMUL", "MUFU.EX2", "FFMA"])]            # a cell's block: not the sums
    code += [".L_x_2:"] + [line.format(256 + 16 * i, op) for i, op in enumerate(
        ["LDG.E", "IMAD", "FFMA", "FFMA", "@P0 BRA"])]
    assert gpu._loop_density("\n".join(code)) == 2.5
    assert gpu._loop_density(line.format(0, "IMAD")) is None
