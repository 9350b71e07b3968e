"""The math of rnncore: pure functions over NumPy arrays, compiled with Numba.

``kernels.reference`` holds the plain NumPy oracle; ``kernels.rnn``, ``kernels.lstm`` and
``kernels.gru`` the fast CPU versions with the same arguments (their forwards add an optional
``path=``: the serial steps or the tiled organization, ``*_tiled.py``); ``kernels.cuda`` the GPU
ones (each with ``path=``).
Nothing in this package imports ``rnncore``. The kernels check their arguments' types and
shapes, never their values: NaN and Inf go through as given (the ``rnncore`` modules check
values before they call a kernel), and may reach further than IEEE arithmetic on the
unpadded problem would take them: in the fast kernels a NaN in a padding step of ``x``
reaches ``dW_ih`` (its row is multiplied by a zero gradient; the reference reads padding as
zeros); on the tiled path an Inf in ``x`` or an initial state reaches every unit through the
units that pad H to whole tiles (Inf times their zero weights). Give the kernels finite values
where the results matter. Each of those public functions has an ``*_unchecked`` twin
(``lstm_forward_unchecked``, ...) that skips the checks, for a caller whose arguments are
already what they would make of them (C-contiguous writable arrays of one float dtype in the
documented shapes): rnncore's layers, which check their own inputs (the checks twice had cost
~5 % of a training step at the seed shapes).

The fast kernels take their large arrays from buffers that they reuse from call to call, whose
memory pages are already mapped (``_workspace``); an array they return is never handed out
again while it or a view of it lives. ``kernels.release_workspace()`` gives the free ones back.
A forward's cache may hold the caller's ``x`` itself (the serial kernels) or a copy (the
reference; the tiled ones, when they pad it), and holds ``W_ih`` and ``W_hh`` as given: refill ``x``
or change the weights in place between a forward and its backward and the gradients are
undefined (the rnncore modules hand the kernels their own copy of ``x``).

Importing the package sets ``OPENBLAS_THREAD_TIMEOUT`` (unless it is set) so that OpenBLAS's
idle threads stop spinning after ~2 ms instead of ~0.1 s (``_blas_env`` says why), then loads
the module through which Numba reaches SciPy's BLAS without the rest of ``scipy.linalg``
(``_scipy_blas``: ~0.3 s off the first kernel call), then gives the same setting to the
OpenBLAS libraries that had loaded before (NumPy's; SciPy's if ``scipy.linalg`` came first).

With an empty Numba cache, the first forward call of a recurrent kernel starts a second Python
process that compiles the matching backward core into the cache meanwhile (``_ahead``; off
with ``RNNCORE_COMPILE_AHEAD=0``); ``kernels.cache_is_empty()`` says whether an LSTM would
compile first (the demo tells its user so). Every cached kernel is stamped with a digest of all
the package's files, so that an edit of one recompiles the kernels that carry a copy of its code
(``_cache_stamp``), and loads without setting up Numba's compiler, which loading does not need
(``_cache_stamp.light_load``: 0.07-0.1 s less to a warm process's first step).
"""

from . import _blas_env                                  # first: before SciPy's OpenBLAS loads
from . import _cache_stamp
from . import _scipy_blas                                # second: Numba's BLAS, alone (0.3 s less)
from ._workspace import release as release_workspace   # noqa: F401
from ._ahead import cache_is_empty                      # noqa: F401

_cache_stamp.install()                                   # before any kernel is decorated
_cache_stamp.light_load(_cache_stamp._HERE)              # cached kernels load without typing
_scipy_blas.load()
_blas_env.apply_to_loaded()
