"""The math of rnncore: pure functions over NumPy arrays, compiled with Numba.

``kernels.reference`` holds the plain NumPy oracle; ``kernels.rnn``, ``kernels.lstm`` and
``kernels.gru`` the fast CPU versions with the same signatures; ``kernels.cuda`` the GPU ones.
Nothing in this package imports ``rnncore``.
"""
