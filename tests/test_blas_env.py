"""kernels/_blas_env.py: importing rnncore (or kernels) makes OpenBLAS's idle threads stop spinning
after ~2 ms, before the kernels' OpenBLAS loads; a value the user set is kept."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# After a few multi-threaded products through the kernels' BLAS (Numba's np.dot: SciPy's
# OpenBLAS), the process sleeps 0.4 s; the CPU time it burns meanwhile is OpenBLAS's idle
# worker spinning (2^28 cycles, ~0.1 s, by OpenBLAS's default).
_IDLE_CPU = r"""
import os, re, time
import rnncore, numpy as np
from numba import njit
assert "libscipy_openblas-" not in open("/proc/self/maps").read()   # not loaded yet by the import
@njit
def product(a, b, c):
    np.dot(a, b, c)
a = np.ones((768, 768), np.float32)
c = np.empty_like(a)
for _ in range(5):
    product(a, a, c)
t0 = time.process_time()
time.sleep(0.4)
print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), time.process_time() - t0)
"""


def _idle_cpu(timeout):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(OPENBLAS_NUM_THREADS="2", PYTHONPATH=str(REPO))
    if timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    out = subprocess.run([sys.executable, "-c", _IDLE_CPU], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    value, cpu = out.stdout.split()
    return value, float(cpu)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_idle_blas_threads_stop_spinning_and_a_user_setting_is_kept():
    kept, spun = _idle_cpu("28")                   # OpenBLAS's own default, set by the user
    assert kept == "28"
    if spun < 0.03:
        pytest.skip(f"OpenBLAS did not spin here even at its default ({spun:.3f} s of CPU)")
    value, idle = _idle_cpu(None)
    assert value == "22"
    assert idle < 0.5 * spun, (idle, spun)
