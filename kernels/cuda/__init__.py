"""RNN, LSTM and GRU kernels for NVIDIA GPUs, written in numba.cuda.

Same arguments (plus a keyword-only ``path=``) and semantics as ``kernels.reference`` (and
``kernels.lstm`` / ``gru`` / ``rnn``):

    lstm_forward(x, W_ih, W_hh, b, h0=None, c0=None, lengths=None, reverse=False) -> (y, h_n, c_n, cache)
    lstm_backward(dy, dh_n, dc_n, cache) -> (dx, dW_ih, dW_hh, db, dh0, dc0)
    gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False) -> (y, h_n, cache)
    gru_backward(dy, dh_n, cache) -> (dx, dW_ih, dW_hh, db_ih, db_hh, dh0)
    rnn_forward(x, W_ih, W_hh, b, h0=None, lengths=None, reverse=False) -> (y, h_n, cache)
    rnn_backward(dy, dh_n, cache) -> (dx, dW_ih, dW_hh, db, dh0)

plus one keyword, ``path="auto" | "steps" | "persistent"`` (or a ``PersistentPlan``), on each:
``"steps"`` runs one recurrent GEMM and one fused pointwise kernel per step; ``"persistent"`` one
cooperative kernel for all steps with ``W_hh`` held in shared memory (``persistent.py``);
``"auto"`` takes the persistent kernel when the weights fit (the size rule in ``persistent.py``).

**Where results live.** NumPy ``x`` (forward) gives NumPy results: inputs are copied to the
device and results back. A device ``x`` (a numba device array; on a real GPU also CuPy arrays,
PyTorch CUDA tensors, anything with ``__cuda_array_interface__``) gives numba device arrays that
stay on the device; the paired backward returns device arrays too. Other arguments may be NumPy
or device arrays either way. The cache is opaque and always holds device arrays.
Everything runs on numba's current device and default stream, in order: NumPy results are
complete when a call returns; device results may still be being computed (any later work on
that stream, or a copy to the host, waits for them).

**Host cost.** Results and work buffers come from a caching pool (``_common.DevicePool``; its
blocks return when the arrays using them are gone), and after numba's first launch of a kernel
the driver is called directly (``_common.launch``): a call allocates nothing and spends ~0.3 ms
on the host at a fixed shape, instead of ~1.5-4.5 ms.

**Matrix products.** The big ones (input projection, weight and input gradients, and per-step
products of at least 2^24 multiply-adds) run on cuBLAS when CuPy is installed, else on
numba kernels (``gemm.py``); ``RNNCORE_CUDA_GEMM=numba`` or ``gemm.set_backend("numba")``
keeps them on numba's.

**dtype.** ``x`` decides: float32 or float64; NumPy arguments are cast to it.

**Availability.** Importing this package imports numba.cuda (nothing else in ``kernels`` or
``rnncore`` does) but needs no GPU; ``is_available()`` says whether kernels can run, and every
kernel raises RuntimeError naming what is missing when they cannot. With
``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported (so before rnncore or kernels are),
everything runs on numba's CPU simulator (slowly: that is how the tests run without a GPU).
"""
from ._common import SIMULATOR, is_available, require_cuda
from .gemm import matmul
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .persistent import PersistentPlan
from .rnn import rnn_backward, rnn_forward

__all__ = [
    "is_available", "require_cuda", "SIMULATOR", "matmul", "PersistentPlan",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
    "rnn_forward", "rnn_backward",
]
