"""The math of rnncore: pure functions over NumPy arrays, compiled with Numba.

``kernels.reference`` holds the plain NumPy oracle; ``kernels.rnn``, ``kernels.lstm`` and
``kernels.gru`` the fast CPU versions with the same signatures; ``kernels.cuda`` the GPU ones.
Nothing in this package imports ``rnncore``.

The fast kernels take their large arrays from buffers that they reuse from call to call, whose
memory pages are already mapped (``_workspace``); an array they return is never handed out
again while it or a view of it lives. ``kernels.release_workspace()`` gives the free ones back.
"""

from ._workspace import release as release_workspace   # noqa: F401
