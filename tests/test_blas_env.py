"""kernels/_blas_env.py: importing rnncore (or kernels) makes OpenBLAS's idle threads stop spinning
after ~2 ms, set before the kernels' OpenBLAS loads; a value the user set is kept."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_SETTING = r"""
import os, sys
import rnncore
maps = "/proc/self/maps"
loaded = os.path.exists(maps) and "libscipy_openblas-" in open(maps).read()
print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), loaded)
"""

# After a few multi-threaded products through the kernels' BLAS (Numba's np.dot: SciPy's
# OpenBLAS), the process sleeps 0.4 s; the CPU time it burns meanwhile is OpenBLAS's idle
# worker spinning (2^28 cycles, ~0.1 s, by OpenBLAS's default). Printed: that CPU time.
_PRODUCTS_THEN_SLEEP = r"""
from numba import njit
@njit
def product(a, b, c):
    np.dot(a, b, c)
a = np.ones((768, 768), np.float32)
c = np.empty_like(a)
for _ in range(5):
    product(a, a, c)
assert np.allclose(c, 768.0) and np.allclose(a @ a, 768.0)     # both libraries compute
t0 = time.process_time()
time.sleep(0.4)
print(time.process_time() - t0)
"""
_IDLE_CPU = "import time\nimport rnncore, numpy as np\n" + _PRODUCTS_THEN_SLEEP

# The same, with NumPy's and SciPy's OpenBLAS loaded BEFORE rnncore (scipy.linalg imported
# first): rnncore then has each library read the setting again and restart its workers. Also
# printed: each loaded library's setting.
_LOADED_FIRST = ("import time\nimport numpy as np, scipy.linalg\nimport rnncore\n"
                 + _PRODUCTS_THEN_SLEEP + "from kernels._blas_env import _libraries\n"
                 "print(*sorted(str(lib.openblas_thread_timeout()) for _, lib, _ in _libraries()))\n")


def _run(script, timeout):
    """``script`` in a fresh process with OPENBLAS_THREAD_TIMEOUT unset (None) or ``timeout``."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(OPENBLAS_NUM_THREADS="2", PYTHONPATH=str(REPO))
    if timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_sets_the_timeout_and_keeps_a_users_value():
    """SciPy's OpenBLAS loads during the import (``kernels._scipy_blas``), after the setting;
    that it read the setting is what test_idle_blas_threads_stop_spinning sees."""
    assert _run(_SETTING, None) == ["22", "True"]      # set; SciPy's OpenBLAS loaded after it
    assert _run(_SETTING, "28") == ["28", "True"]      # the user's value stays


def test_idle_blas_threads_stop_spinning():
    spun = float(_run(_IDLE_CPU, "28")[0])            # OpenBLAS's own default, set by the user
    if spun < 0.03:                                   # (one thread: nothing spins to stop)
        pytest.skip(f"OpenBLAS did not spin here even at its default ({spun:.3f} s of CPU)")
    idle = float(_run(_IDLE_CPU, None)[0])
    assert idle < 0.5 * spun, (idle, spun)


def test_libraries_loaded_before_get_the_setting_too():
    spun, *timeouts = _run(_LOADED_FIRST, None)
    assert timeouts and set(timeouts) == {"22"}              # NumPy's and SciPy's
    users = _run(_LOADED_FIRST, "28")
    assert set(users[1:]) == {"28"}                          # the user's value, everywhere
    if float(users[0]) < 0.03:                               # (one thread: nothing spins)
        pytest.skip(f"OpenBLAS did not spin here even at its default ({users[0]} s of CPU)")
    assert float(spun) < 0.5 * float(users[0]), (spun, users[0])


def test_libraries_loaded_before_are_left_alone_beside_another_thread():
    """Another Python thread might be inside OpenBLAS: its workers are not stopped then."""
    script = ("import threading, time\nimport numpy as np, scipy.linalg\n"
              "t = threading.Thread(target=time.sleep, args=(2,), daemon=True)\nt.start()\n"
              "import rnncore\nfrom kernels._blas_env import _libraries\n"
              "print(*sorted(str(lib.openblas_thread_timeout()) for _, lib, _ in _libraries()))\n")
    assert set(_run(script, None)) == {"0"}                  # unset: OpenBLAS's own default
