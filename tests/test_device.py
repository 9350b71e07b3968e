"""``Module.to("cuda")`` / ``to("cpu")``: a model on the GPU computes what it computes on the CPU.

Runs on numba's CUDA simulator without a GPU, like tests/test_cuda_kernels.py (whose docstring
explains the ``NUMBA_ENABLE_CUDASIM`` dance: it must be set before numba.cuda is first imported;
if numba.cuda was imported without it in this process, ``test_rerun_in_a_fresh_process`` runs
this file in a new interpreter). On a machine with a GPU, ``NUMBA_ENABLE_CUDASIM=0`` runs the
same tests on it. Sizes are tiny: the simulator runs every GPU thread as a Python thread.
"""
import copy
import os
import subprocess
import sys

from _cudasim import needs_cuda, only_when_not_ready, rerun_in_a_fresh_process  # first

import numpy as np
import pytest

import rnncore
from rnncore import device as rdevice
from rnncore.optim import Adam



def _model(seed):
    """Bidirectional LSTM -> GRU -> Linear, float64, tiny."""
    rnncore.manual_seed(seed)
    f64 = np.float64
    return rnncore.Sequential(rnncore.LSTM(2, 3, bidirectional=True, dtype=f64),
                              rnncore.GRU(6, 3, dtype=f64), rnncore.Linear(3, 2, dtype=f64))


def _twins(seed=0):
    cpu = _model(seed)
    gpu = _model(seed + 1)                      # other weights, then the CPU model's
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.to("cuda")


def _grads(m):
    return {k: p.grad.copy() for k, p in m.named_parameters()}


@needs_cuda
def test_model_on_cuda_matches_cpu_forward_backward_and_adam_steps():
    """Outputs, input grads, every parameter grad, final states, and the parameters after two
    Adam steps agree to float64 round-off; ragged lengths exercise the padding rules."""
    cpu, gpu = _twins()
    assert gpu.device == "cuda" and all(m.device == "cuda" for m in gpu.modules())
    assert cpu.device == "cpu"
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 2))
    lengths = np.array([2, 1])
    opts = [Adam(cpu.parameters(), lr=0.05), Adam(gpu.parameters(), lr=0.05)]
    for _ in range(2):
        for o in opts:
            o.zero_grad()
        y_c, y_g = cpu.forward(x, lengths=lengths), gpu.forward(x, lengths=lengths)
        assert isinstance(y_g, np.ndarray) and y_g.dtype == np.float64
        np.testing.assert_allclose(y_g, y_c, rtol=1e-10, atol=1e-12)
        gy = rng.standard_normal(y_c.shape)
        gx_c, gx_g = cpu.backward(x, gy), gpu.backward(x, gy)
        np.testing.assert_allclose(gx_g, gx_c, rtol=1e-10, atol=1e-12)
        g_c, g_g = _grads(cpu), _grads(gpu)
        for k in g_c:
            np.testing.assert_allclose(g_g[k], g_c[k], rtol=1e-10, atol=1e-12, err_msg=k)
        for o in opts:
            o.step()
    for (k, p_c), (_, p_g) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(p_g.data, p_c.data, rtol=1e-10, atol=1e-12, err_msg=k)
    lstm_c, lstm_g = list(cpu.modules())[1], list(gpu.modules())[1]
    np.testing.assert_allclose(lstm_g.h_n, lstm_c.h_n, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lstm_g.c_n, lstm_c.c_n, rtol=1e-10, atol=1e-12)


@needs_cuda
@pytest.mark.parametrize("cls", [rnncore.GRU, rnncore.RNN])
def test_stacked_bidirectional_layers_with_dropout_match_the_cpu(cls):
    """Two bidirectional float32 layers with dropout between them (training mode): the same
    seed draws the same masks on either device; outputs, final states, grads of the input, of
    the initial state and of every parameter, then an Adam step, agree."""
    x = np.random.default_rng(4).standard_normal((3, 2, 2)).astype(np.float32)
    h0 = np.random.default_rng(5).standard_normal((4, 2, 3)).astype(np.float32)
    lengths, gy = np.array([1, 3]), np.random.default_rng(6).standard_normal((3, 2, 6))
    got = {}
    for device in ("cpu", "cuda"):
        rnncore.manual_seed(7)
        m = cls(2, 3, num_layers=2, bidirectional=True, dropout=0.4).to(device)
        opt = Adam(m.parameters(), lr=0.05)
        rnncore.manual_seed(8)
        y = m.forward(x, lengths=lengths, h0=h0)
        gx = m.backward(x, gy.astype(np.float32))
        grads = _grads(m)
        opt.step()
        got[device] = [y, m.h_n, gx, m.grad_h0] + [grads[k] for k in sorted(grads)] + [
            p.data.copy() for p in m.parameters()]
    for k, (a, b) in enumerate(zip(got["cuda"], got["cpu"])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=f"#{k}")


@needs_cuda
def test_float32_last_state_and_device_array_input():
    """float32 RNN with return_sequences=False, fed a device array: NumPy out, same as the CPU."""
    from numba import cuda
    rnncore.manual_seed(5)
    cpu = rnncore.RNN(3, 4, return_sequences=False)
    gpu = rnncore.RNN(3, 4, return_sequences=False)
    gpu.load_state_dict(cpu.state_dict())
    assert gpu.to("cuda") is gpu
    x = np.random.default_rng(1).standard_normal((2, 2, 3)).astype(np.float32)
    y_c = cpu.forward(x)
    y_g = gpu.forward(cuda.to_device(x))
    assert isinstance(y_g, np.ndarray) and y_g.dtype == np.float32 and y_g.shape == (2, 4)
    np.testing.assert_allclose(y_g, y_c, rtol=1e-5, atol=1e-6)
    gy = np.ones_like(y_c)
    np.testing.assert_allclose(gpu.backward(cuda.to_device(x), gy), cpu.backward(x, gy),
                               rtol=1e-5, atol=1e-6)


@needs_cuda
def test_back_to_cpu_uses_cpu_kernels_and_drops_the_gpu_cache():
    rnncore.manual_seed(2)
    m = rnncore.LSTM(2, 3).astype(np.float64).to("cuda")
    x = np.random.default_rng(0).standard_normal((2, 1, 2))
    y_gpu = m.forward(x)
    assert m.to("cpu") is m and m.device == "cpu"
    with pytest.raises(RuntimeError, match="forward first"):
        m.backward(x, np.ones_like(y_gpu))              # the GPU forward's cache is gone
    np.testing.assert_allclose(m.forward(x), y_gpu, rtol=1e-10, atol=1e-12)
    assert m._kernel_pair()[0].__module__ == "kernels.lstm"


def test_unknown_device_is_refused_and_the_model_unchanged():
    m = rnncore.Sequential(rnncore.GRU(2, 3), rnncore.Linear(3, 1))
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda', got 'gpu'"):
        m.to("gpu")
    with pytest.raises(TypeError, match="device"):
        m.to(0)
    assert all(mod.device == "cpu" for mod in m.modules())


@pytest.mark.parametrize("failure", ["no_gpu", "no_numba_cuda"])
def test_cuda_unavailable_is_refused_by_name_and_the_model_unchanged(monkeypatch, failure):
    """Simulated: a machine without a GPU, and one without numba-cuda installed."""
    if failure == "no_gpu":
        class NoGPU:
            @staticmethod
            def is_available():
                return False
        monkeypatch.setattr(rdevice, "_import_cuda_kernels", lambda: NoGPU)
    else:
        def missing():
            raise ImportError("No module named 'numba.cuda'")
        monkeypatch.setattr(rdevice, "_import_cuda_kernels", missing)
    m = rnncore.Sequential(rnncore.LSTM(2, 3), rnncore.Linear(3, 1))
    with pytest.raises(RuntimeError, match=r"device='cuda'.*pip install -e \"\.\[cuda\]\""):
        m.to("cuda")
    assert all(mod.device == "cpu" for mod in m.modules())
    y = m.forward(np.zeros((2, 1, 2), np.float32))        # still a working CPU model
    assert y.shape == (2, 1, 1)


def test_cpu_use_never_imports_numba_cuda():
    """A fresh process: building, running and moving a model to "cpu" leaves numba.cuda alone."""
    code = ("import sys, numpy as np, rnncore\n"
            "m = rnncore.Sequential(rnncore.LSTM(2, 3), rnncore.Linear(3, 1)).to('cpu')\n"
            "m.backward(np.ones((2, 1, 2), np.float32),"
            " np.ones_like(m.forward(np.ones((2, 1, 2), np.float32))))\n"
            "assert 'numba.cuda' not in sys.modules\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=root, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@only_when_not_ready
def test_rerun_in_a_fresh_process():
    rerun_in_a_fresh_process(__file__)


@needs_cuda
def test_writes_that_no_version_counts_are_seen_too():
    """A view taken before the upload, and a tie (two Parameters, one array) written through
    the other Parameter, changed the weights without a ``version``: the GPU copy went stale."""
    H = 3
    x = np.random.default_rng(1).standard_normal((3, 2, 2))
    rnncore.manual_seed(0)
    cpu = rnncore.GRU(2, H, bidirectional=True, dtype=np.float64)
    gpu = copy.deepcopy(cpu).to("cuda")
    views = [m._params["bias_ih_l0"].data[H:2 * H] for m in (cpu, gpu)]   # before the upload
    for m in (cpu, gpu):                                                  # a tie
        m._params["weight_ih_l0_reverse"].data = m._params["weight_ih_l0"].data

    def same():
        np.testing.assert_allclose(gpu.forward(x), cpu.forward(x), rtol=1e-10, atol=1e-12)

    same()
    for v in views:
        v[:] = 3.0                   # through the old view: the base is read-only, the view not
    same()
    for m in (cpu, gpu):
        m._params["weight_ih_l0"].data[...] = 0.5    # the reverse direction's version stays
    same()


@needs_cuda
def test_weights_stay_on_the_device_until_the_parameters_change():
    """A layer on "cuda" uploads its weights once and again only after a change made through the
    API (optimizer step, update_parameters, load_state_dict, assignment, astype); its results
    match a CPU twin after each change; a write through an old reference to a weight array
    raises (the array is read-only while its GPU copy is in use) instead of going unseen; and
    ``to("cpu")`` drops the copies and makes the arrays writable again."""
    from rnncore.optim import SGD
    rnncore.manual_seed(5)
    cpu = rnncore.LSTM(2, 3, dtype=np.float64)
    gpu = rnncore.LSTM(2, 3, dtype=np.float64)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = np.random.default_rng(1).standard_normal((4, 2, 2))

    def same():
        np.testing.assert_allclose(gpu.forward(x), cpu.forward(x), rtol=1e-10, atol=1e-12)

    def copies():                                                # by local name
        names = {id(p): n for n, p in gpu._params.items()}
        return {names[k]: v[2] for k, v in gpu._device_weights.items()}

    keep = Adam(gpu.parameters())                # an optimizer alive holds no weight array
    same()
    first = copies()
    assert set(first) == {"weight_ih_l0", "weight_hh_l0", "bias_l0"}
    # nothing else refers to the arrays: no host copy kept, no values compared
    assert all(v[3] is None for v in gpu._device_weights.values())
    del keep
    same()
    assert all(copies()[k] is first[k] for k in first)          # nothing uploaded again
    old_ref = gpu._params["weight_hh_l0"]._data
    with pytest.raises(ValueError):                              # read-only: loud, not stale
        old_ref[0, 0] = 1.0
    for step in range(2):                                        # optimizer steps
        for m in (cpu, gpu):
            m.zero_grad_parameters()
            m.backward(x, np.ones((4, 2, 3)))
        SGD(cpu.parameters(), lr=0.1).step()
        SGD(gpu.parameters(), lr=0.1).step()
        before = copies()
        same()
        assert all(copies()[k] is not before[k] for k in before)
    for m in (cpu, gpu):                                         # update_parameters
        m.update_parameters(0.05)
    same()
    state = {k: v + 0.01 for k, v in cpu.state_dict().items()}  # load_state_dict
    cpu.load_state_dict(state)
    gpu.load_state_dict(state)
    same()
    for m in (cpu, gpu):                                         # in place through p.data
        m._params["bias_l0"].data[:3] = 0.25
    same()
    new = np.full_like(cpu._params["weight_ih_l0"]._data, 0.1)              # assignment of a new array
    cpu._params["weight_ih_l0"].data = new.copy()
    gpu._params["weight_ih_l0"].data = new.copy()
    same()
    twin = copy.deepcopy(gpu)                                    # copies start without them
    assert twin._device_weights == {} and twin._params["weight_hh_l0"]._data.flags.writeable
    assert twin._cache is None                                   # no GPU buffers copied
    np.testing.assert_allclose(twin.forward(x), cpu.forward(x), rtol=1e-10, atol=1e-12)
    gpu.to("cpu")
    assert gpu._device_weights == {}
    old_ref[0, 0] = old_ref[0, 0]                                # writable again
    assert all(p._data.flags.writeable for p in gpu.parameters())


@needs_cuda
@pytest.mark.parametrize("make", [lambda ps: Adam(ps, lr=1e-2),
                                  lambda ps: rnncore.optim.SGD(ps, lr=1e-2, momentum=0.9)])
def test_an_optimizer_steps_a_tied_weight_on_cuda_as_on_the_cpu(make):
    """A tie (two Parameters, one array) is updated once with the summed grad; on "cuda" the
    host array is locked while its GPU copy is current: the update goes through the Parameter
    (it had written the locked array: ValueError, after other weights had moved)."""
    x = np.random.default_rng(2).standard_normal((4, 2, 3))

    def trained(device):
        rnncore.manual_seed(0)
        f64 = np.float64
        a, b = rnncore.LSTM(3, 3, dtype=f64), rnncore.LSTM(3, 3, dtype=f64)
        b._params["weight_hh_l0"].data = a._params["weight_hh_l0"].data
        m = rnncore.Sequential(a, b, rnncore.Linear(3, 2, dtype=f64)).to(device)
        opt = make(m.parameters())
        for _ in range(2):
            opt.zero_grad()
            y = m.forward(x)
            m.backward(x, np.ones_like(y))
            opt.step()
        return m.forward(x), a._params["weight_hh_l0"].data

    (y_cpu, w_cpu), (y_gpu, w_gpu) = trained("cpu"), trained("cuda")
    np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=1e-10, atol=1e-12)


@needs_cuda
def test_a_write_through_a_view_dropped_before_the_next_forward_is_seen():
    """The host copy of the uploaded weights was compared only while another reference to the
    array lived at that forward: a view written and then dropped (a model sharing the arrays,
    trained and dropped) left the GPU copy stale, silently (outputs off by 0.1 and 1.1)."""
    x = np.random.default_rng(0).standard_normal((3, 2, 2))

    def run(device):
        rnncore.manual_seed(0)
        m = rnncore.GRU(2, 3, dtype=np.float64).to(device)
        view = m._params["weight_hh_l0"].data[...]
        m.forward(x)                                  # on "cuda": uploaded
        view *= 0.5
        del view
        return m.forward(x)

    np.testing.assert_allclose(run("cuda"), run("cpu"), rtol=1e-10, atol=1e-12)


@needs_cuda
def test_a_tie_through_a_view_steps_on_cuda_as_on_the_cpu():
    """With the Parameter holding the view before the one holding its base, ``p.data`` stayed
    read-only on "cuda" (NumPy refuses a writable view of a locked base): plain SGD raised a
    Numba typing error, update_parameters NumPy's "read-only"."""
    x = np.random.default_rng(0).standard_normal((3, 2, 2))

    def trained(device, step):
        rnncore.manual_seed(0)
        m = rnncore.RNN(2, 3, bidirectional=True, dtype=np.float64)
        P = m._params
        P["weight_hh_l0"].data = P["weight_hh_l0_reverse"].data.T
        m = m.to(device)
        opt = rnncore.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            m.zero_grad_parameters()
            y = m.forward(x)
            m.backward(x, np.ones_like(y))
            opt.step() if step else m.update_parameters(0.1)
        return m.forward(x)

    for step in (True, False):
        np.testing.assert_allclose(trained("cuda", step), trained("cpu", step), rtol=1e-10,
                                   atol=1e-12)


@needs_cuda
def test_backward_after_a_move_says_the_layer_moved():
    x = np.random.default_rng(0).standard_normal((3, 2, 2))
    m = rnncore.LSTM(2, 3, dtype=np.float64)
    y = m.forward(x)
    m.to("cuda")
    with pytest.raises(RuntimeError, match=r"call forward first \(the layer was moved with to"):
        m.backward(x, np.ones_like(y))
    y = m.forward(x)
    assert m.backward(x, np.ones_like(y)).shape == x.shape and "_moved" not in vars(m)
    with pytest.raises(RuntimeError, match="call forward first$"):     # (never moved)
        rnncore.LSTM(2, 3, dtype=np.float64).backward(x, np.ones_like(y))
