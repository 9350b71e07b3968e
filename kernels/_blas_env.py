"""How long an idle OpenBLAS worker thread keeps spinning: 2^22 CPU cycles (~2 ms) unless the
user says otherwise. Imported first by ``kernels`` (and so by ``rnncore``), before NumPy or
SciPy load an OpenBLAS; no imports of its own beyond ``os``.

Why. After each multi-threaded call, OpenBLAS's worker threads keep spinning for 2^28 cycles by
default (~0.1 s) in case another call comes. The kernels' team of threads (``_team``: the tiled
LSTM and GRU) then shares the cores with them, and on a 2-core machine that halves its speed:
an LSTM at (64, 32, 128, 256) with a ``Linear`` layer after it (fwd + bwd, both through SciPy's
OpenBLAS, which Numba's ``np.dot`` calls) took 114-128 ms per step against 50-63 ms without
the layer; with this setting 56-59 ms, and the serial kernels, which call OpenBLAS step after
step, kept their speed (a step's calls come well within 2 ms of each other).

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` (n: 2^n cycles, 4 <= n <= 30) once, when the library
loads. SciPy's, which the kernels use, loads right after this, when ``kernels`` loads the
module Numba reaches it through (``_scipy_blas``; unless the program imported ``scipy.linalg``
before ``kernels``); NumPy's loads with NumPy, so it is covered only where ``rnncore`` or
``kernels`` is imported before NumPy. A value already in the environment is left as it is.
"""

import os

THREAD_TIMEOUT = "22"

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)
