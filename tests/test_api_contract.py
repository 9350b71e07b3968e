"""/work/shared/API.md as a checklist: one test per section, each asserting its statements as
written there (the literal calls and examples included), with PyTorch where it claims parity.

The details behind each statement are tested at length elsewhere (test_recurrent*,
test_containers, test_criteria, test_optim, test_errors, ...); this file reads as the contract.
"""
import inspect
import pathlib
import re

import numpy as np
import pytest

import rnncore
from rnncore import optim
from tests._torch import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# -- Packages ------------------------------------------------------------------------------------
def test_packages():
    import kernels
    # kernels: pure functions over NumPy arrays, no classes, no imports from rnncore
    kdir = pathlib.Path(kernels.__file__).parent
    assert (kdir / "cuda").exists() or (kdir / "cuda.py").exists()      # kernels.cuda
    for f in kdir.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"^\s*(from|import)\s+rnncore", text, re.M), f
    # the math is plain functions over NumPy arrays
    import types
    from kernels import gru, lstm, reference, rnn
    for mod in (lstm, gru, rnn):
        for fn in ("forward", "backward"):
            assert isinstance(getattr(mod, f"{mod.__name__.split('.')[-1]}_{fn}"),
                              (types.FunctionType, type(lstm.lstm_forward)))
    assert not [n for n, v in vars(reference).items() if isinstance(v, type)
                and v.__module__ == reference.__name__]
    # rnncore: the Torch7-style object API
    for name in ["Module", "Parameter", "Linear", "Embedding", "ReLU", "LeakyReLU", "Tanh",
                 "Sigmoid", "Dropout", "LogSoftMax", "SoftMax", "Sequential", "Sequencer",
                 "LastStep", "RNN", "LSTM", "GRU", "MSECriterion", "ClassNLLCriterion",
                 "CrossEntropyCriterion", "BCECriterion", "SequencerCriterion", "manual_seed",
                 "gradcheck", "pad_sequences", "optim"]:
        assert hasattr(rnncore, name), name
    for name in ["SGD", "Adam", "RMSprop", "clip_grad_norm"]:
        assert hasattr(optim, name), name
    # Install: pip install -e . (or ".[dev]")
    assert (ROOT / "pyproject.toml").exists() or (ROOT / "setup.py").exists()


# -- Arrays and layout ---------------------------------------------------------------------------
def _sequence_models(dtype=np.float32):
    """Sequence-aware models over (T, B, 3) inputs, seeded."""
    rnncore.manual_seed(0)
    R = rnncore
    return {
        "LSTM": R.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=dtype),
        "GRU": R.GRU(3, 4, num_layers=2, bidirectional=True, dtype=dtype),
        "RNN": R.RNN(3, 4, num_layers=2, bidirectional=True, dtype=dtype),
        "LSTM last": R.LSTM(3, 4, bidirectional=True, return_sequences=False, dtype=dtype),
        "Sequencer": R.Sequencer(R.Sequential(R.LSTM(3, 4, dtype=dtype),
                                              R.Linear(4, 2, dtype=dtype),
                                              R.LogSoftMax(dtype=dtype))),
        "Sequential": R.Sequential(R.GRU(3, 4, dtype=dtype), R.Linear(4, 2, dtype=dtype),
                                   R.Tanh(dtype=dtype)),
        "Sequential LastStep": R.Sequential(R.RNN(3, 4, dtype=dtype), R.LastStep(dtype=dtype),
                                            R.Linear(4, 2, dtype=dtype)),
        "LastStep": R.LastStep(dtype=dtype),
        "Linear": R.Linear(3, 2, dtype=dtype),
    }


def test_arrays_and_layout_time_major_and_tables():
    T, B, F = 5, 3, 3
    x = _rng().standard_normal((T, B, F)).astype(np.float32)
    for name, m in _sequence_models().items():
        y = m.forward(x)
        gy = _rng(1).standard_normal(np.shape(y)).astype(np.float32)
        m.zero_grad_parameters()
        gx = m.backward(x, gy)
        grads = [p.grad.copy() for p in m.parameters()]
        # a Python list of T arrays (B, F) is accepted wherever a sequence is: the same result
        table = [x[t] for t in range(T)]
        yl = m.forward(table)
        np.testing.assert_array_equal(np.stack(yl) if isinstance(yl, list) else yl, y, name)
        m.zero_grad_parameters()
        gyl = list(gy) if isinstance(yl, list) else gy
        gxl = m.backward(table, gyl)
        np.testing.assert_array_equal(np.stack(gxl) if isinstance(gxl, list) else gxl, gx, name)
        for p, g in zip(m.parameters(), grads):
            np.testing.assert_array_equal(p.grad, g, name)
    # the criterion of a sequence takes tables too
    c = rnncore.SequencerCriterion(rnncore.MSECriterion())
    t = _rng(2).standard_normal((T, B, F))
    assert c.forward(list(x), list(t)) == c.forward(x, t)
    np.testing.assert_array_equal(np.stack(c.backward(list(x), list(t))), c.backward(x, t))


def test_arrays_and_layout_lengths():
    T, B, F = 6, 3, 3
    lengths = np.array([6, 2, 4])
    valid = np.arange(T)[:, None] < lengths[None, :]                       # (T, B)
    x = _rng().standard_normal((T, B, F)).astype(np.float32)
    x2 = x.copy()
    x2[~valid] = _rng(5).standard_normal(x2[~valid].shape) * 10            # other padding
    for name, m in _sequence_models().items():
        # every sequence-aware call takes an optional lengths=
        assert inspect.signature(m.forward).parameters["lengths"].default is None, name
        outs = []
        for seed, xi in ((1, x), (2, x2)):
            y = m.forward(xi, lengths=lengths)
            gy = _rng(1).standard_normal(np.shape(y)).astype(np.float32)
            if np.shape(y)[:2] == (T, B):              # and other gradients at padding steps
                gy[~valid] = _rng(seed).standard_normal(gy[~valid].shape)
            m.zero_grad_parameters()
            gx = m.backward(xi, gy)
            outs.append((y, gx, [p.grad.copy() for p in m.parameters()],
                         [getattr(m, s, None) for s in ("h_n", "c_n")]))
        (y, gx, grads, states), (y2, gx2, grads2, states2) = outs
        # padding changes no output at valid steps, no final state, no gradient
        np.testing.assert_array_equal(y, y2, name)
        np.testing.assert_array_equal(gx, gx2, name)
        for g, g2 in zip(grads, grads2):
            np.testing.assert_array_equal(g, g2, name)
        for s, s2 in zip(states, states2):
            np.testing.assert_array_equal(s, s2, name)
        if np.shape(y)[:2] == (T, B):                  # outputs at padding steps are zero
            assert not np.any(np.asarray(y)[~valid]), name
        assert not np.any(np.asarray(gx)[~valid]), name   # no gradient reaches padding inputs
    # ids (T, B) through an Embedding
    ids = _rng().integers(0, 5, (T, B))
    emb = rnncore.Embedding(5, 2)
    assert not np.any(emb.forward(ids, lengths=lengths)[~valid])
    # SequencerCriterion honours lengths (checked in test_criteria below); the range is enforced
    m = rnncore.LSTM(3, 4)
    for bad in ([0, 2, 4], [7, 2, 4], [1, 2]):
        with pytest.raises(ValueError, match=r"^lengths"):
            m.forward(x, lengths=np.array(bad))
    # rnncore.pad_sequences(list_of_(T_i, F)_arrays) -> (x, lengths)
    seqs = [np.full((3, 2), 1.0), np.full((5, 2), 2.0), np.full((1, 2), 3.0)]
    xp, lp = rnncore.pad_sequences(seqs)
    assert xp.shape == (5, 3, 2)
    np.testing.assert_array_equal(lp, [3, 5, 1])
    assert lp.shape == (3,) and lp.dtype.kind == "i"
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(xp[:len(s), b], s)
        assert not np.any(xp[len(s):, b])
    rnncore.LSTM(2, 3).forward(xp, lengths=lp)


def _all_module_classes():
    return [c for c in vars(rnncore).values()
            if isinstance(c, type) and issubclass(c, rnncore.Module) and c is not rnncore.Module]


def _build(cls, dtype=None):
    kw = {} if dtype is None else {"dtype": dtype}
    R = rnncore
    if cls in (R.RNN, R.LSTM, R.GRU):
        return cls(3, 4, **kw)
    if cls is R.Linear:
        return cls(3, 4, **kw)
    if cls is R.Embedding:
        return cls(5, 3, **kw)
    if cls is R.LeakyReLU:
        return cls(0.1, **kw)
    if cls is R.Dropout:
        return cls(0.5, **kw)
    if cls in (R.Sequential, R.Sequencer):
        return cls(R.Linear(3, 4), **kw)
    return cls(**kw)


def test_arrays_and_layout_dtypes():
    classes = _all_module_classes()
    assert len(classes) >= 15
    for cls in classes:
        # every module constructor takes dtype= (default np.float32)
        assert "dtype" in inspect.signature(cls).parameters, cls
        m = _build(cls)
        assert m.dtype == np.float32, cls
        assert all(p.data.dtype == np.float32 for p in m.parameters()), cls
        m64 = _build(cls, np.float64)
        assert m64.dtype == np.float64 and all(p.data.dtype == np.float64 for p in m64.parameters())
        # m.astype(dtype) converts in place and returns m
        assert m.astype(np.float64) is m
        assert m.dtype == np.float64 and all(p.data.dtype == p.grad.dtype == np.float64
                                             for p in m.parameters()), cls
    # default float32: a float64 input to a default model is computed (and answered) in float32
    assert rnncore.GRU(3, 4).forward(_rng().standard_normal((4, 2, 3))).dtype == np.float32
    # float64 works everywhere: a float64 model runs forward and backward in float64
    x = _rng().standard_normal((4, 2, 3))
    for name, m in _sequence_models(np.float64).items():
        y = m.forward(x)
        assert np.asarray(y).dtype == np.float64, name
        assert np.asarray(m.backward(x, np.ones_like(y))).dtype == np.float64, name
    # load_state_dict casts to the module's dtype
    m32, m64 = rnncore.LSTM(3, 4), rnncore.LSTM(3, 4, dtype=np.float64)
    m32.load_state_dict(m64.state_dict())
    assert all(v.dtype == np.float32 for v in m32.state_dict().values())
    m64.load_state_dict(m32.state_dict())
    assert all(v.dtype == np.float64 for v in m64.state_dict().values())


# -- Modules (Torch7 style) ----------------------------------------------------------------------
def test_modules_every_module():
    x = _rng().standard_normal((4, 2, 3)).astype(np.float32)
    for cls in _all_module_classes():
        m = _build(cls)
        xi = _rng().integers(0, 5, (4, 2)) if cls is rnncore.Embedding else x
        # y = m.forward(x, lengths=None) (also m(x, ...))
        y = m.forward(xi, lengths=None)
        if cls is not rnncore.Dropout:
            np.testing.assert_array_equal(m(xi), y)
        # m.parameters(): the same Parameter objects on every call
        ps = m.parameters()
        assert [id(p) for p in ps] == [id(p) for p in m.parameters()], cls
        sd = m.state_dict()
        assert isinstance(sd, dict) and list(sd) == [p.name for p in ps], cls
        for p in ps:
            assert isinstance(p, rnncore.Parameter)
            assert isinstance(p.data, np.ndarray) and isinstance(p.grad, np.ndarray)
            assert p.grad.shape == p.data.shape and p.requires_grad is True
            np.testing.assert_array_equal(sd[p.name], p.data)
        # gx = m.backward(x, gy): dL/dx, and accumulate into parameter grads
        m.zero_grad_parameters()
        gy = np.ones(np.shape(y), np.float32)
        y = m.forward(xi)
        gx = m.backward(xi, gy)
        if cls is not rnncore.Embedding:
            assert np.shape(gx) == np.shape(xi), cls
        once = [p.grad.copy() for p in ps]
        m.backward(xi, gy)
        for p, g in zip(ps, once):
            np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-6, atol=1e-7)
        # m.update_parameters(lr): data -= lr * grad, in place
        before = [(p.data, p.data.copy()) for p in ps]
        m.update_parameters(0.1)
        for p, (arr, old) in zip(ps, before):
            assert p.data is arr
            np.testing.assert_allclose(p.data, old - np.float32(0.1) * p.grad, rtol=1e-6)
        # m.zero_grad_parameters(): all grads zero
        m.zero_grad_parameters()
        assert all(not p.grad.any() for p in ps)
        # m.state_dict() / m.load_state_dict(d)
        sd = m.state_dict()
        assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in sd.items())
        twin = _build(cls)
        twin.load_state_dict(sd)
        for k, v in twin.state_dict().items():
            np.testing.assert_array_equal(v, sd[k])


def test_modules_training_evaluate_summary():
    rnncore.manual_seed(0)
    d = rnncore.Dropout(0.5)
    x = np.ones((50, 40), np.float32)
    d.training()
    y = d.forward(x)
    assert np.any(y == 0) and np.allclose(y[y != 0], 2.0)        # training: dropout on
    d.evaluate()
    np.testing.assert_array_equal(d.forward(x), x)               # evaluate: identity
    m = rnncore.LSTM(3, 4, num_layers=2, dropout=0.5)
    m.evaluate()
    xs = _rng().standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(m.forward(xs), m.forward(xs))
    m.training()
    assert not np.array_equal(m.forward(xs), m.forward(xs))
    # m.summary(input_shape): a table of layer, output shape, parameter count; returns the total
    lines = []
    model = rnncore.Sequential(rnncore.Linear(3, 5), rnncore.Tanh(), rnncore.Linear(5, 2))
    total = model.summary((None, 3), print_fn=lines.append)
    assert total == 3 * 5 + 5 + 5 * 2 + 2
    text = "\n".join(lines)
    for piece in ("Linear", "Tanh", "20", "12", "(None, 5)", "(None, 2)"):
        assert piece in text, piece


def test_modules_constructors():
    R = rnncore
    y = R.Linear(3, 4).forward(np.ones((2, 3), np.float32))
    assert y.shape == (2, 4)
    assert R.Linear(3, 4).state_dict()["weight"].shape == (4, 3)         # PyTorch's layout
    assert R.Embedding(10, 3).forward(np.array([[1, 2]])).shape == (1, 2, 3)
    arr = _rng().standard_normal((6, 3))
    e = R.Embedding.from_pretrained(arr)
    assert e.weight.requires_grad is False                               # freeze=True
    np.testing.assert_allclose(e.forward(np.array([4])), arr[[4]].astype(np.float32))
    assert R.Embedding.from_pretrained(arr, freeze=False).weight.requires_grad is True
    e.weight.grad[...] = 1
    e.update_parameters(0.5)                                             # frozen: left alone
    np.testing.assert_array_equal(e.weight.data, arr.astype(np.float32))
    assert inspect.signature(R.Embedding.from_pretrained).parameters["freeze"].default is True
    x = np.array([[-2.0, 0.5]], np.float32)
    np.testing.assert_allclose(R.ReLU().forward(x), [[0, 0.5]])
    np.testing.assert_allclose(R.LeakyReLU(0.1).forward(x), [[-0.2, 0.5]])
    np.testing.assert_allclose(R.Tanh().forward(x), np.tanh(x), rtol=1e-6)
    np.testing.assert_allclose(R.Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-6)
    assert R.Dropout(0.3).p == 0.3
    z = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(R.LogSoftMax().forward(z),
                               torch.log_softmax(_t(z), -1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(R.SoftMax().forward(z), torch.softmax(_t(z), -1).numpy(),
                               rtol=1e-6)
    # Sequential(*mods), Sequencer(module), LastStep() (output at each sequence's last valid step)
    s = R.Sequential(R.Linear(3, 4), R.Tanh())
    assert len(list(s.modules())) == 3
    xs = _rng().standard_normal((5, 2, 3)).astype(np.float32)
    lengths = np.array([2, 5])
    last = R.LastStep().forward(xs, lengths=lengths)
    np.testing.assert_array_equal(last, xs[[1, 4], [0, 1]])
    np.testing.assert_array_equal(R.LastStep().forward(xs), xs[-1])


# -- Recurrent layers ----------------------------------------------------------------------------
def _torch_twin(ours, seed=0):
    """A PyTorch layer of ``ours``' configuration with random weights, loaded into ``ours``
    from its state dict converted to NumPy (the API's way)."""
    torch.manual_seed(seed)
    net = getattr(torch.nn, type(ours).__name__)(
        ours.input_size, ours.hidden_size, num_layers=ours.num_layers,
        bidirectional=ours.bidirectional).double()
    ours.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    return net


def test_recurrent_signatures():
    for cls in (rnncore.RNN, rnncore.LSTM, rnncore.GRU):
        params = list(inspect.signature(cls).parameters.values())
        assert [p.name for p in params[:6]] == ["input_size", "hidden_size", "num_layers",
                                                "bidirectional", "dropout", "return_sequences"]
        assert [p.default for p in params[2:6]] == [1, False, 0.0, True]
        for p in params[:2]:
            assert p.default is inspect.Parameter.empty


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_recurrent_outputs_states_and_pytorch_parity(cell):
    T, B, I, H, L = 5, 3, 3, 4, 2
    lengths = np.array([5, 2, 4])
    x = _rng().standard_normal((T, B, I))
    for bidirectional in (False, True):
        D = 2 if bidirectional else 1
        for dtype, tol in ((np.float32, 2e-5), (np.float64, 1e-10)):
            m = getattr(rnncore, cell)(I, H, num_layers=L, bidirectional=bidirectional,
                                       dtype=dtype)
            net = _torch_twin(m)
            # every parameter was loaded; PyTorch's layout, LSTM/RNN's two biases summed
            for k, v in m.state_dict().items():
                assert v.dtype == dtype
            for lens in (None, lengths):
                y = m.forward(x.astype(dtype), lengths=lens)
                assert y.shape == (T, B, D * H) and y.dtype == dtype
                if lens is None:
                    ty, ts = net(_t(x))
                else:
                    packed = torch.nn.utils.rnn.pack_padded_sequence(
                        _t(x), torch.from_numpy(lens), enforce_sorted=False)
                    ty, ts = net(packed)
                    ty, _ = torch.nn.utils.rnn.pad_packed_sequence(ty, total_length=T)
                th, tc = ts if cell == "LSTM" else (ts, None)
                _close(y, ty.detach().numpy(), tol)          # forward half first, PyTorch's
                assert m.h_n.shape == (L * D, B, H)
                _close(m.h_n, th.detach().numpy(), tol)      # ordered as PyTorch orders them
                if cell == "LSTM":
                    assert m.c_n.shape == (L * D, B, H)
                    _close(m.c_n, tc.detach().numpy(), tol)
                # return_sequences=False: (B, D*H), the top layer's final hidden state:
                # forward direction at the last valid step, backward direction at step 0
                m.return_sequences = False
                last = m.forward(x.astype(dtype), lengths=lens)
                m.return_sequences = True
                assert last.shape == (B, D * H)
                ends = np.full(B, T) if lens is None else lens
                np.testing.assert_array_equal(last[:, :H], y[ends - 1, np.arange(B), :H])
                if bidirectional:
                    np.testing.assert_array_equal(last[:, H:], y[0, :, H:])
                np.testing.assert_array_equal(last, np.concatenate(list(m.h_n[-D:]), axis=1))


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_recurrent_gradients_match_pytorch(cell):
    T, B, I, H = 4, 3, 3, 4
    lengths = np.array([4, 1, 3])
    x = _rng().standard_normal((T, B, I))
    m = getattr(rnncore, cell)(I, H, num_layers=2, bidirectional=True, dtype=np.float64)
    net = _torch_twin(m)
    gy = _rng(1).standard_normal((T, B, 2 * H))
    m.forward(x, lengths=lengths)
    m.zero_grad_parameters()
    gx = m.backward(x, gy)
    xt = _t(x).requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths),
                                                     enforce_sorted=False)
    ty, _ = torch.nn.utils.rnn.pad_packed_sequence(net(packed)[0], total_length=T)
    (ty * _t(gy)).sum().backward()
    _close(gx, xt.grad.numpy(), 1e-10)
    grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
    for p in m.parameters():
        if p.name.startswith("bias_l"):                        # one bias: the sum's gradient
            want = grads[p.name.replace("bias_", "bias_ih_")]
        else:
            want = grads[p.name]
        _close(p.grad, want, 1e-10)


def test_recurrent_state_dict_keys_and_counts():
    keys = list(rnncore.LSTM(2, 3, num_layers=2, bidirectional=True).state_dict())
    assert keys == [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                    for w in ("weight_ih", "weight_hh", "bias")]
    assert list(rnncore.RNN(2, 3).state_dict()) == ["weight_ih_l0", "weight_hh_l0", "bias_l0"]
    assert list(rnncore.GRU(2, 3, bidirectional=True).state_dict()) == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
        "bias_hh_l0_reverse"]
    # containers prefix their children's keys with the child's index: 0.weight_ih_l0
    s = rnncore.Sequential(rnncore.LSTM(2, 3), rnncore.Linear(3, 1))
    assert list(s.state_dict()) == ["0.weight_ih_l0", "0.weight_hh_l0", "0.bias_l0",
                                    "1.weight", "1.bias"]
    assert [p.name for p in s.parameters()] == list(s.state_dict())
    nested = rnncore.Sequencer(rnncore.Sequential(rnncore.GRU(2, 3), rnncore.Linear(3, 1)))
    assert list(nested.state_dict())[:4] == ["0.0.weight_ih_l0", "0.0.weight_hh_l0",
                                             "0.0.bias_ih_l0", "0.0.bias_hh_l0"]
    assert [p.name for p in nested.parameters()] == list(nested.state_dict())
    # Keras' parameter counts, per direction and layer
    I, H = 5, 7

    def count(m):
        return sum(p.data.size for p in m.parameters())

    assert count(rnncore.LSTM(I, H)) == 4 * H * (I + H) + 4 * H
    assert count(rnncore.GRU(I, H)) == 3 * H * (I + H) + 6 * H
    assert count(rnncore.RNN(I, H)) == H * (I + H) + H
    assert count(rnncore.LSTM(I, H, bidirectional=True)) == 2 * (4 * H * (I + H) + 4 * H)
    assert count(rnncore.GRU(I, H, num_layers=2)) == (3 * H * (I + H) + 6 * H
                                                      + 3 * H * (H + H) + 6 * H)
    # the literal example: reports 17152 and 12416
    R = rnncore
    lines = []
    total = R.Sequential(R.LSTM(2, 64), R.LSTM(64, 32, return_sequences=False)).summary(
        (5, None, 2), print_fn=lines.append)
    text = "\n".join(lines)
    assert "17152" in text and "12416" in text                # (literally: no separators)
    assert total == 17152 + 12416


def test_recurrent_summary_prints():
    R = rnncore
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        total = R.Sequential(R.LSTM(2, 64), R.LSTM(64, 32, return_sequences=False)).summary(
            (5, None, 2))
    assert total == 29568
    assert "17152" in out.getvalue()


def test_recurrent_remember_forget():
    rnncore.manual_seed(0)
    m = rnncore.LSTM(3, 4, dtype=np.float64)
    x = _rng().standard_normal((6, 2, 3))
    whole = m.forward(x).copy()
    h_whole = m.h_n.copy()
    m.remember()
    a = m.forward(x[:3]).copy()
    h_a, c_a = m.h_n.copy(), m.c_n.copy()
    b = m.forward(x[3:])
    np.testing.assert_allclose(np.concatenate([a, b]), whole, rtol=1e-12)   # a long stream
    np.testing.assert_allclose(m.h_n, h_whole, rtol=1e-12)
    # no gradient crosses the call boundary: the second chunk's gradients are those of a
    # call that starts from the carried state as a constant
    gy = _rng(1).standard_normal(b.shape)
    m.zero_grad_parameters()
    m.backward(x[3:], gy)
    grads = [p.grad.copy() for p in m.parameters()]
    twin = rnncore.LSTM(3, 4, dtype=np.float64)
    twin.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(twin.forward(x[3:], h0=h_a, c0=c_a), b)
    twin.zero_grad_parameters()
    twin.backward(x[3:], gy)
    for p, g in zip(twin.parameters(), grads):
        np.testing.assert_allclose(p.grad, g, rtol=1e-12)
    # forget(): reset it
    m.forget()
    np.testing.assert_array_equal(m.forward(x[:3]), a)


def test_recurrent_load_pytorch_state_dict():
    # gate orders i,f,g,o (LSTM) and r,z,n (GRU) as PyTorch has them; LSTM and RNN sum the
    # two biases; outputs then match PyTorch's to float32 round-off
    x = _rng().standard_normal((5, 2, 3)).astype(np.float32)
    for cell in ("LSTM", "GRU", "RNN"):
        torch.manual_seed(0)
        net = getattr(torch.nn, cell)(3, 4, bidirectional=True)          # float32
        sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        assert "bias_ih_l0_reverse" in sd
        m = getattr(rnncore, cell)(3, 4, bidirectional=True)
        m.load_state_dict(sd)
        if cell != "GRU":
            np.testing.assert_array_equal(
                m.state_dict()["bias_l0"], (sd["bias_ih_l0"].astype(np.float64)
                                            + sd["bias_hh_l0"]).astype(np.float32))
        else:
            assert set(m.state_dict()) == set(sd)
        # (equal outputs with PyTorch's weights as they are: the same gate order)
        np.testing.assert_allclose(m.forward(x), net(_t(x))[0].detach().numpy(),
                                   rtol=1e-5, atol=2e-6)


def test_recurrent_sequencer_lua_port():
    R = rnncore
    model = R.Sequencer(R.Sequential(R.LSTM(2, 100), R.Linear(100, 3), R.LogSoftMax()))
    x = [np.ones((4, 2), np.float32) * t for t in range(6)]                 # a Torch7 table
    y = model.forward(x)
    assert isinstance(y, list) and len(y) == 6 and y[0].shape == (4, 3)
    np.testing.assert_allclose(np.exp(np.stack(y)).sum(-1), 1, rtol=1e-5)
    # recurrent layers inside run over the whole sequence: step t depends on steps before it
    inner = model.module
    np.testing.assert_array_equal(np.stack(y), inner.forward(np.stack(x)))
    y = model.forward(x)
    c = R.SequencerCriterion(R.ClassNLLCriterion())
    target = [np.zeros(4, np.int64)] * 6
    loss = c.forward(y, target)
    gx = model.backward(x, c.backward(y, target))
    assert isinstance(gx, list) and gx[0].shape == (4, 2) and np.isfinite(loss)


# -- Criteria ------------------------------------------------------------------------------------
def _torch_loss_and_grad(fn, y, *args):
    yt = _t(y).requires_grad_()
    loss = fn(yt, *args)
    loss.backward()
    return loss.item(), yt.grad.numpy()


def test_criteria_match_pytorch():
    R, Fn = rnncore, torch.nn.functional
    r = _rng()
    y = r.standard_normal((6, 4))
    t = r.standard_normal((6, 4))
    ids = r.integers(0, 4, 6)
    logp = torch.log_softmax(_t(y), -1).numpy()
    p = 1 / (1 + np.exp(-y))
    b = r.random((6, 4))
    cases = [(R.MSECriterion(), y, t, Fn.mse_loss, _t(t)),
             (R.ClassNLLCriterion(), logp, ids, Fn.nll_loss, torch.from_numpy(ids)),
             (R.CrossEntropyCriterion(), y, ids, Fn.cross_entropy, torch.from_numpy(ids)),
             (R.BCECriterion(), p, b, Fn.binary_cross_entropy, _t(b))]
    for c, inp, target, fn, ttarget in cases:
        # loss = c.forward(y, target), gy = c.backward(y, target)
        loss = c.forward(inp, target)
        gy = c.backward(inp, target)
        want, want_g = _torch_loss_and_grad(fn, inp, ttarget)
        assert isinstance(loss, float)
        np.testing.assert_allclose(loss, want, rtol=1e-12)
        _close(gy, want_g, 1e-12)
    # ClassNLLCriterion: targets are 0-based int class ids
    assert R.ClassNLLCriterion().forward(np.log([[0.25, 0.75]]), np.array([1])) == \
        pytest.approx(-np.log(0.75))
    with pytest.raises(ValueError, match=r"^target"):
        R.ClassNLLCriterion().forward(np.log([[0.25, 0.75]]), np.array([2]))


def test_criteria_sequencer_criterion():
    R = rnncore
    T, B, C = 5, 3, 4
    r = _rng()
    y = torch.log_softmax(_t(r.standard_normal((T, B, C))), -1).numpy()
    target = r.integers(0, C, (T, B))
    inner = R.ClassNLLCriterion()
    c = R.SequencerCriterion(R.ClassNLLCriterion())
    # sums over steps
    want = sum(inner.forward(y[s], target[s]) for s in range(T))
    np.testing.assert_allclose(c.forward(y, target), want, rtol=1e-12)
    g = c.backward(y, target)
    np.testing.assert_allclose(g, np.stack([inner.backward(y[s], target[s]) for s in range(T)]))
    # honours lengths=: padding steps add nothing, take no gradient, their targets unread
    lengths = np.array([5, 2, 3])
    padded = target.copy()
    padded[3:, 1] = 99
    want = sum(inner.forward(y[s, lengths > s], target[s, lengths > s]) for s in range(T))
    np.testing.assert_allclose(c.forward(y, padded, lengths=lengths), want, rtol=1e-12)
    g = c.backward(y, padded, lengths=lengths)
    valid = np.arange(T)[:, None] < lengths
    assert not g[~valid].any()
    for s in range(T):
        np.testing.assert_allclose(g[s, lengths > s],
                                   inner.backward(y[s, lengths > s], target[s, lengths > s]))
    # the same as PyTorch's NLL summed over steps, each step's mean over its valid rows
    yt = _t(y).requires_grad_()
    total = sum(torch.nn.functional.nll_loss(yt[s, _t(lengths > s)],
                                             torch.from_numpy(target[s, lengths > s]))
                for s in range(T))
    total.backward()
    np.testing.assert_allclose(c.forward(y, padded, lengths=lengths), total.item(), rtol=1e-12)
    _close(c.backward(y, padded, lengths=lengths), yt.grad.numpy(), 1e-12)
    # with MSE over (T, B, F) too
    m = R.SequencerCriterion(R.MSECriterion())
    x, t = r.standard_normal((T, B, 2)), r.standard_normal((T, B, 2))
    np.testing.assert_allclose(m.forward(x, t, lengths=lengths),
                               sum(np.mean((x[s, lengths > s] - t[s, lengths > s]) ** 2)
                                   for s in range(T)), rtol=1e-12)


# -- Optimizers ----------------------------------------------------------------------------------
def _run_both(make_ours, make_theirs, steps=4, dtype=np.float64):
    """The same parameters and gradients through ours and torch's optimizer, step by step."""
    r = _rng(3)
    m = rnncore.Linear(3, 2, dtype=dtype)
    ps = m.parameters()
    tps = [torch.nn.Parameter(_t(p.data.copy())) for p in ps]
    opt, topt = make_ours(ps), make_theirs(tps)
    for _ in range(steps):
        opt.zero_grad()
        topt.zero_grad()
        assert all(not p.grad.any() for p in ps)
        for p, tp in zip(ps, tps):
            g = r.standard_normal(p.data.shape).astype(dtype)
            p.grad += g
            tp.grad = _t(g.copy())
        arrays = [p.data for p in ps]
        opt.step()
        topt.step()
        for p, tp, a in zip(ps, tps, arrays):
            assert p.data is a                                  # updated in place
            _close(p.data, tp.detach().numpy(), 1e-12 if dtype == np.float64 else 1e-6)


def test_optimizers_signatures():
    sig = inspect.signature
    assert str(sig(optim.SGD)) == "(params, lr, momentum=0.0, weight_decay=0.0)"
    assert str(sig(optim.Adam)).startswith("(params, lr=0.001, betas=(0.9, 0.999), eps=1e-08")
    p = list(sig(optim.RMSprop).parameters.values())
    assert [q.name for q in p[:2]] == ["params", "lr"] and p[1].default is p[1].empty
    assert [q.name for q in sig(optim.clip_grad_norm).parameters.values()] == ["params",
                                                                                "max_norm"]


def test_optimizers_match_pytorch():
    T = torch.optim
    _run_both(lambda ps: optim.SGD(ps, 0.1), lambda ps: T.SGD(ps, 0.1))
    _run_both(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
              lambda ps: T.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01))
    _run_both(lambda ps: optim.Adam(ps), lambda ps: T.Adam(ps))               # the defaults
    _run_both(lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
              lambda ps: T.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6))
    _run_both(lambda ps: optim.RMSprop(ps, 0.01), lambda ps: T.RMSprop(ps, lr=0.01))
    _run_both(lambda ps: optim.RMSprop(ps, lr=0.01), lambda ps: T.RMSprop(ps, lr=0.01),
              dtype=np.float32)
    _run_both(lambda ps: optim.Adam(ps), lambda ps: T.Adam(ps), dtype=np.float32)
    # a model's parameters() as params, and the methods
    m = rnncore.LSTM(2, 3)
    for opt in (optim.SGD(m.parameters(), 0.1), optim.Adam(m.parameters()),
                optim.RMSprop(m.parameters(), 0.1)):
        assert callable(opt.step) and callable(opt.zero_grad)


def test_optimizers_clip_grad_norm():
    r = _rng()
    m = rnncore.Linear(3, 2, dtype=np.float64)
    grads = [r.standard_normal(p.data.shape) * 5 for p in m.parameters()]
    tps = [torch.nn.Parameter(_t(p.data.copy())) for p in m.parameters()]
    for p, tp, g in zip(m.parameters(), tps, grads):
        p.grad[...] = g
        tp.grad = _t(g.copy())
    norm = optim.clip_grad_norm(m.parameters(), 1.0)          # returns the norm (before)
    want = torch.nn.utils.clip_grad_norm_(tps, 1.0)
    assert isinstance(norm, float)
    np.testing.assert_allclose(norm, want.item(), rtol=1e-12)
    np.testing.assert_allclose(norm, np.sqrt(sum((g ** 2).sum() for g in grads)), rtol=1e-12)
    for p, tp in zip(m.parameters(), tps):
        _close(p.grad, tp.grad.numpy(), 1e-12)


# -- Randomness ----------------------------------------------------------------------------------
def _training_run(seed):
    R = rnncore
    R.manual_seed(seed)
    model = R.Sequential(R.Embedding(7, 3), R.LSTM(3, 5, num_layers=2, dropout=0.3),
                         R.Dropout(0.2), R.Linear(5, 7), R.LogSoftMax())
    crit = R.SequencerCriterion(R.ClassNLLCriterion())
    opt = optim.Adam(model.parameters(), lr=0.01)
    r = np.random.default_rng(0)
    ids, target = r.integers(0, 7, (6, 4)), r.integers(0, 7, (6, 4))
    lengths = np.array([6, 3, 5, 1])
    losses = []
    for _ in range(3):
        opt.zero_grad()
        y = model.forward(ids, lengths=lengths)
        losses.append(crit.forward(y, target, lengths=lengths))
        model.backward(ids, crit.backward(y, target, lengths=lengths))
        opt.step()
    return losses, model.state_dict()


def test_randomness_manual_seed():
    a, b, c = _training_run(1), _training_run(1), _training_run(2)
    assert a[0] == b[0]                                       # bit-identical
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])
    assert a[0] != c[0]
    rnncore.manual_seed(5)
    w1 = rnncore.LSTM(2, 3).state_dict()
    rnncore.manual_seed(5)
    w2 = rnncore.LSTM(2, 3).state_dict()
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])


# -- Checks --------------------------------------------------------------------------------------
class _WrongGrad(rnncore.Module):
    """y = 2x, but backward claims 3 gy."""

    def _forward(self, x, lengths):
        return 2 * np.asarray(x, np.float64)

    def _backward(self, x, gy):
        return 3 * np.asarray(gy)


def test_checks_gradcheck():
    sig = inspect.signature(rnncore.gradcheck)
    assert list(sig.parameters)[:4] == ["module", "x", "lengths", "eps"]
    assert sig.parameters["lengths"].default is None and sig.parameters["eps"].default == 1e-6
    x = _rng().standard_normal((4, 2, 2))
    m = rnncore.GRU(2, 3, bidirectional=True)                 # float32: checked in float64
    err = rnncore.gradcheck(m, x, lengths=np.array([4, 2]))
    assert isinstance(err, float) and err < 1e-6
    assert m.dtype == np.float32 and all(p.data.dtype == np.float32 for p in m.parameters())
    assert rnncore.gradcheck(rnncore.Linear(2, 3), x) < 1e-6
    assert rnncore.gradcheck(_WrongGrad(), x) > 0.1           # the input's gradient is checked

    class NoParamGrad(rnncore.Linear):                        # every parameter is checked
        def _backward(self, x, gy):
            gx = super()._backward(x, gy)
            self.bias.grad[...] = 0
            return gx

    assert rnncore.gradcheck(NoParamGrad(2, 3), x) > 0.1


# -- Errors --------------------------------------------------------------------------------------
def _error_cases():
    """(label, model or None, call, exception, argument named first)."""
    R = rnncore
    x = _rng().standard_normal((4, 2, 3)).astype(np.float32)
    nan, inf = x.copy(), x.copy()
    nan[1, 0, 0], inf[0, 1, 2] = np.nan, np.inf
    lstm = R.LSTM(3, 4, bidirectional=True)
    seq = R.Sequencer(R.Sequential(R.GRU(3, 4), R.Linear(4, 2), R.LogSoftMax()))
    logp = np.log(np.full((4, 3), 1 / 3))
    sc = R.SequencerCriterion(R.ClassNLLCriterion())
    ids = np.zeros((4, 2), np.int64)
    cases = []
    for name, m in (("LSTM", lstm), ("Sequencer", seq)):
        cases += [
            (f"{name} wrong shape", m, lambda m=m: m.forward(x[..., :2]), ValueError, "x"),
            (f"{name} 2-D", m, lambda m=m: m.forward(x[0]), ValueError, "x"),
            (f"{name} dtype", m, lambda m=m: m.forward(x.astype(np.complex64)), TypeError, "x"),
            (f"{name} strings", m, lambda m=m: m.forward(np.full((4, 2, 3), "a")), TypeError, "x"),
            (f"{name} NaN", m, lambda m=m: m.forward(nan), ValueError, "x"),
            (f"{name} Inf", m, lambda m=m: m.forward(inf), ValueError, "x"),
            (f"{name} lengths 0", m, lambda m=m: m.forward(x, lengths=np.array([0, 2])),
             ValueError, "lengths"),
            (f"{name} lengths > T", m, lambda m=m: m.forward(x, lengths=np.array([5, 2])),
             ValueError, "lengths"),
            (f"{name} lengths shape", m, lambda m=m: m.forward(x, lengths=np.array([4])),
             ValueError, "lengths"),
            (f"{name} lengths dtype", m, lambda m=m: m.forward(x, lengths=np.array([4.0, 2.0])),
             TypeError, "lengths"),
            (f"{name} gy shape", m,
             lambda m=m: (m.forward(x), m.backward(x, np.ones((4, 2, 1))))[1], ValueError, "gy"),
            (f"{name} unknown key", m, lambda m=m: m.load_state_dict({**m.state_dict(), "w": x}),
             ValueError, "state"),
            (f"{name} state shape", m,
             lambda m=m: m.load_state_dict({k: v[:1] for k, v in m.state_dict().items()}),
             ValueError, "state"),
        ]
    cases += [
        ("MSE NaN input", None, lambda: R.MSECriterion().forward(nan, x), ValueError, "input"),
        ("MSE Inf target", None, lambda: R.MSECriterion().forward(x, inf), ValueError, "target"),
        ("MSE shape", None, lambda: R.MSECriterion().forward(x, x[0]), ValueError, "target"),
        ("NLL class id", None, lambda: R.ClassNLLCriterion().forward(logp, np.array([0, 1, 2, 3])),
         ValueError, "target"),
        ("NLL float ids", None, lambda: R.ClassNLLCriterion().forward(logp, np.zeros(4)),
         TypeError, "target"),
        ("BCE probabilities", None, lambda: R.BCECriterion().forward(x, np.zeros_like(x)),
         ValueError, "input"),
        ("SequencerCriterion lengths", None,
         lambda: sc.forward(np.log(np.full((4, 2, 3), 1 / 3)), ids, lengths=np.array([4, 9])),
         ValueError, "lengths"),
        ("SequencerCriterion NaN", None,
         lambda: sc.forward(np.full((4, 2, 3), np.nan), ids), ValueError, "input"),
        ("Embedding id", None, lambda: R.Embedding(3, 2).forward(np.array([3])), ValueError, "x"),
        ("LSTM input_size", None, lambda: R.LSTM(0, 3), ValueError, "input_size"),
        ("LSTM dropout", None, lambda: R.LSTM(2, 3, dropout=1.0), ValueError, "dropout"),
        ("dtype", None, lambda: R.Linear(2, 3, dtype=np.int32), TypeError, "dtype"),
        ("SGD lr", None, lambda: optim.SGD(R.Linear(2, 3).parameters(), -1.0), ValueError, "lr"),
        ("clip", None, lambda: optim.clip_grad_norm(R.Linear(2, 3).parameters(), 0),
         ValueError, "max_norm"),
        ("pad_sequences", None, lambda: R.pad_sequences([]), ValueError, "sequences"),
    ]
    return cases


def test_errors():
    for label, m, call, exc, name in _error_cases():
        before = None
        if m is not None:
            m.forward(_rng().standard_normal((4, 2, 3)).astype(np.float32))
            before = ({k: v.copy() for k, v in m.state_dict().items()},
                      [p.grad.copy() for p in m.parameters()])
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        e = info.value
        # a ValueError (or TypeError) whose message names the argument, the expected and the
        # actual value; never a Numba typing error
        assert type(e) is exc, (label, type(e), e)
        text = str(e)
        assert text.startswith(name), (label, text)
        assert "expected" in text and ("got" in text or "unknown" in text), (label, text)
        if before is not None:                                  # the model is left as it was
            for k, v in m.state_dict().items():
                np.testing.assert_array_equal(v, before[0][k], label)
            for p, g in zip(m.parameters(), before[1]):
                np.testing.assert_array_equal(p.grad, g, label)


# -- README against API.md -----------------------------------------------------------------------
def test_readme_agrees_with_the_contract():
    text = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    api_facts = ["time-major, `x.shape == (T, B, F)`", "`4*H*(I+H) + 4*H`", "`3*H*(I+H) + 6*H`",
                 "`H*(I+H) + H`", "(forward half first)", "17152", "12416",
                 "`load_state_dict` sums the two biases",
                 "A Python list of T `(B, F)` arrays (the Torch7 `Sequencer` table) is accepted "
                 "wherever a sequence is",
                 "They change no output at valid steps, no final state and no gradient, and "
                 "their own outputs are zero"]
    for fact in api_facts:
        assert fact in text, fact
    # the README's names are the contract's
    for call in ("Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False))",
                 "optim.Adam(model.parameters(), lr=", "optim.clip_grad_norm(model.parameters(), ",
                 "rnncore.gradcheck(lstm, x, lengths=lengths)", "pad_sequences(sentences)",
                 "model.update_parameters(lr)", "rnn.zero_grad_parameters()",
                 "nn.SequencerCriterion(nn.ClassNLLCriterion())"):
        assert call in text, call
