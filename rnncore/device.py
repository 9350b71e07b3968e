"""Where a model computes: ``model.to("cuda")`` / ``model.to("cpu")``.

    model = rnncore.Sequential(rnncore.LSTM(32, 256), rnncore.Linear(256, 10)).to("cuda")
    y = model.forward(x)            # x: NumPy, or a device array; y: NumPy
    model.device                    # "cuda"

**What moves.** The recurrent layers (``RNN``, ``LSTM``, ``GRU``) are where the time goes, and on
``"cuda"`` they run their forward and backward through ``kernels.cuda`` (the same signatures as
the CPU kernels: per-step or persistent GPU kernels, see ``kernels/cuda/__init__.py``). Every other
module (``Linear``, activations, criteria, containers) keeps computing on the host with NumPy: they
are cheap next to a recurrence, and the Torch7-style chain between modules stays NumPy arrays.

**Where the numbers live.** The authoritative parameters stay host NumPy arrays:
``Parameter.data`` / ``.grad`` keep their meaning, so optimizers, their state (momentum, Adam
moments), ``update_parameters``, ``clip_grad_norm``, ``state_dict`` and ``rnncore.save`` all work
unchanged on a model on ``"cuda"``. Each recurrent layer keeps a GPU copy of its weights and
uploads a weight again when it has changed: when its ``Parameter.version`` moved (every
``p.data`` access counts, so optimizer steps, ``update_parameters``, ``load_state_dict`` and
``p.data[...] = v`` are all seen), when ``p.data`` is another array (``astype``, assignment), or
when its values differ from those uploaded: where something else refers to the array (a view
taken before the move, or a second Parameter given the same array, which write without a
``version``; also a plain `SGD`'s flat views), each forward compares them on the host;
elsewhere nothing is read. While a GPU
copy is in use its host array is read-only: a write through a reference kept from before
(``w = p.data; ...; w[0] = 1``) raises ``ValueError`` at once; take ``p.data`` again to write. ``to("cpu")`` drops the copies and makes the arrays writable again.
Each forward copies its input to the GPU and its outputs back; each backward runs on the GPU with
what that forward kept there (its weights too, should they change in between) and copies the
gradients back, where they are *added* to
``Parameter.grad`` as on the CPU.

What stays on the host, and why: gradients, optimizer state and the update itself. The optimizers
are NumPy code shared with the CPU path; moving them would need a GPU version of each update (and
of ``clip_grad_norm``) and device-resident ``Parameter.grad``. So in training, where every step
changes every weight, each forward still uploads the weights once and each backward downloads the
gradients once; the copies are saved when weights do not change between calls (inference,
evaluation, several forwards per update). Non-recurrent modules (``Linear``, activations,
criteria, containers) compute on the host.

**Inputs.** NumPy arrays (or lists of them, the ``Sequencer`` table) as on the CPU. Device arrays
are accepted too: anything with ``__cuda_array_interface__`` (a numba device array, a CuPy array,
a PyTorch CUDA tensor). They are copied to the host first, because inputs are validated there
(shapes, NaN/Inf) and the host modules need them; the recurrent kernels then upload them again.
Outputs are always NumPy.

**Availability.** ``numba.cuda`` is imported only when ``"cuda"`` is asked for: CPU users never load
it and need no GPU packages. ``to("cuda")`` checks first that kernels can run (the numba-cuda
package installed, a GPU and driver that answer, or numba's CPU simulator enabled with
``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported, so before rnncore is) and otherwise
raises a ``RuntimeError`` naming ``device`` and the fix (``pip install -e ".[cuda]"``), leaving
the model as it was. An unknown device string is a ``ValueError``; a non-string a ``TypeError``.
"""

import numpy as np

__all__ = ["DEVICES", "check_device", "cuda_kernels", "to_host", "upload", "lock", "unlock"]

#: The devices a module can be moved to.
DEVICES = ("cpu", "cuda")

_INSTALL = 'install the GPU extra with pip install -e ".[cuda]" (numba-cuda)'


def check_device(device):
    """``device`` as ``"cpu"`` or ``"cuda"``; for ``"cuda"``, proof that kernels can run.

    Raises TypeError (not a string), ValueError (unknown name) or RuntimeError (CUDA asked for and
    not available), each naming ``device``.
    """
    if not isinstance(device, str):
        raise TypeError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    name = device.strip().lower()
    if name not in DEVICES:
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    if name == "cuda":
        cuda_kernels()
    return name


def _import_cuda_kernels():
    import kernels.cuda as kc          # imports numba.cuda: only ever reached for "cuda"
    return kc


def cuda_kernels():
    """The ``kernels.cuda`` module, imported on first use; RuntimeError if it cannot run here."""
    try:
        kc = _import_cuda_kernels()
    except ImportError as e:
        raise RuntimeError(f"device='cuda': numba.cuda could not be imported ({e}); "
                           f"{_INSTALL}") from e
    if not kc.is_available():
        raise RuntimeError(
            "device='cuda': no usable CUDA device (numba.cuda.is_available() is False). Needs an "
            f"NVIDIA GPU with its driver; {_INSTALL}. For tests without a GPU, set "
            "NUMBA_ENABLE_CUDASIM=1 before numba is imported, so before rnncore is (numba's CPU "
            "simulator, slow). Use device='cpu' otherwise")
    return kc


def _is_device_array(a):
    if a is None or isinstance(a, (np.ndarray, np.generic, list, tuple, int, float)):
        return False
    if hasattr(a, "__cuda_array_interface__"):
        return True
    # numba's simulated device arrays have no __cuda_array_interface__, only copy_to_host
    return hasattr(a, "copy_to_host") and hasattr(a, "shape") and hasattr(a, "dtype")


def to_host(x):
    """``x`` with any device array (also inside a list or tuple) copied to a NumPy array.

    NumPy arrays and everything else are returned as they are, without importing numba.cuda.
    """
    if type(x) is np.ndarray:                      # the common case, first and cheap
        return x
    if isinstance(x, (list, tuple)):
        if any(_is_device_array(s) for s in x):
            return type(x)(to_host(s) for s in x)
        return x
    if not _is_device_array(x):
        return x
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    from numba import cuda
    return cuda.as_cuda_array(x).copy_to_host()


def upload(a):
    """A GPU copy (numba device array) of the host array ``a``."""
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a))


def lock(a):
    """Make the host array ``a`` read-only while a GPU copy of it is in use (see ``Parameter``)."""
    try:
        a.flags.writeable = False
    except ValueError:
        pass


def unlock(a):
    """Undo ``lock``: the host array is writable again (when it can be). A view whose base is
    locked too (a weight tied to another one's view, both uploaded) needs its base unlocked
    first: NumPy refuses a writable view of a read-only array."""
    try:
        a.flags.writeable = True
    except ValueError:
        base = a.base
        if isinstance(base, np.ndarray) and not base.flags.writeable:
            unlock(base)
            try:
                a.flags.writeable = True
            except ValueError:
                pass
