"""kernels/_scipy_blas.py: importing rnncore loads the extension through which Numba reaches
SciPy's BLAS, without the rest of scipy.linalg; Numba's np.dot works with it, and scipy.linalg
imports and behaves as usual afterwards, ``cython_blas`` attribute included. Each case runs in
a fresh interpreter (what was imported before is the point)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(script):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout.split()


def test_import_loads_the_blas_extension_alone_and_numba_uses_it():
    got = _run(r"""
import sys
import numpy as np
import rnncore
from numba import njit
print("scipy.linalg.cython_blas" in sys.modules, "scipy.linalg" in sys.modules)
@njit
def product(a, b):
    return np.dot(a, b)
a = np.arange(12, dtype=np.float32).reshape(3, 4)
print(bool(np.allclose(product(a, a.T), a @ a.T)), "scipy.linalg" in sys.modules)
""")
    assert got == ["True", "False", "True", "False"]


@pytest.mark.parametrize("use", [
    "import scipy.linalg.cython_blas\nok = scipy.linalg.cython_blas is blas",
    "import scipy.linalg\nok = scipy.linalg.cython_blas is blas",
    "from scipy.linalg import cython_blas\nok = cython_blas is blas",
    "import scipy\nok = scipy.linalg.cython_blas is blas",                 # SciPy's lazy submodules
    "import scipy.linalg as sl, numpy as np\nok = bool(np.allclose(sl.inv(2 * np.eye(3)), np.eye(3) / 2))",
    "import importlib.util\nimportlib.util.find_spec('scipy.linalg')\nimport scipy.linalg\n"
    "ok = scipy.linalg.cython_blas is blas",                                # a look before the import
])
def test_scipy_linalg_imports_as_usual_afterwards(use):
    got = _run(r"""
import sys
import rnncore
blas = sys.modules["scipy.linalg.cython_blas"]
""" + use + r"""
hooks = [f for f in sys.meta_path if type(f).__name__ == "_AttachToPackage"]
print(ok, len(hooks) if "scipy.linalg" in sys.modules else 0)
""")
    assert got == ["True", "0"]                     # the finder removed itself once it acted


def test_nothing_is_done_when_scipy_linalg_came_first():
    got = _run(r"""
import sys
import scipy.linalg
before = sys.modules["scipy.linalg.cython_blas"]
import rnncore
from kernels import _scipy_blas
print(sys.modules["scipy.linalg.cython_blas"] is before, _scipy_blas.load(),
      any(type(f).__name__ == "_AttachToPackage" for f in sys.meta_path))
""")
    assert got == ["True", "False", "False"]
