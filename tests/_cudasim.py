"""Shared by the CUDA test files: bring up numba's CUDA simulator when there is no GPU.

``NUMBA_ENABLE_CUDASIM`` must be set before numba.cuda is first imported, so the test files
import this module before anything that could import numba.cuda. If numba.cuda was already
imported without it in this process, the tests marked ``needs_cuda`` skip and each file's
``rerun_in_a_fresh_process`` runs that file again in a new interpreter.
``NUMBA_ENABLE_CUDASIM=0`` on a machine with a GPU runs the same tests on the GPU.
"""
import os
import subprocess
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def _cuda_ready():
    if "numba" in sys.modules and "numba.cuda" not in sys.modules:
        from numba.core import config        # numba read its environment at import: read it again
        config.reload_config()
    from numba import cuda
    return bool(cuda.is_available())


READY = _cuda_ready()

import pytest                                       # noqa: E402

needs_cuda = pytest.mark.skipif(not READY, reason="numba.cuda was imported without the simulator "
                                "before this module; test_rerun_in_a_fresh_process runs these")
only_when_not_ready = pytest.mark.skipif(
    READY, reason="CUDA (the simulator) is up in this process: the tests ran here")


def rerun_in_a_fresh_process(path):
    """Run the test file ``path`` in a new interpreter with the simulator on; assert it passes."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
