"""Benchmarks: rnncore against PyTorch (and the NumPy reference), each script printing a
markdown table and writing JSON.

    python -m benchmarks.layer_step        # one layer, fwd and fwd+bwd; training step at the seed shapes
    python -m benchmarks.train_to_target   # the "functions" task to 95% test accuracy
    python -m benchmarks.startup           # fresh process to first training step, cold and warm Numba cache
    python -m benchmarks.memory            # peak memory of a large LSTM training step
    python -m benchmarks.gpu               # kernels.cuda against cuDNN (needs a GPU)

Every script takes ``--quick`` (tiny sizes, few repeats: proves the code paths, not speed),
``--threads N`` and ``--json PATH`` (default ``bench_out/<name>.json``). See benchmarks/README.md.

This package imports only the standard library at import time, so that a script can set the
BLAS thread environment variables before NumPy loads.
"""
