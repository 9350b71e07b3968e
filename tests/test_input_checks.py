"""Bad input gets a ValueError or TypeError that names the argument, says what was expected and
what came, and leaves the state as it was: damaged model files, values a dtype cannot hold,
losses and gradients that overflow, CLI paths, the NumPy reference kernels, and messages that
named the wrong thing."""

import io
import re
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

import rnncore
from kernels import gru, lstm, reference as ref, rnn
from rnncore import (BCECriterion, ClassNLLCriterion, CrossEntropyCriterion, LSTM, Linear,
                     LogSoftMax, MSECriterion, SequencerCriterion, Sequential, cli, optim)
from rnncore.demos import regression
from rnncore.summary import summary


# -- rnncore.load: damaged or crafted archives ---------------------------------------------
KEY = "0.weight_ih_l0.npy"


@pytest.fixture
def saved(tmp_path):
    rnncore.manual_seed(0)
    return rnncore.save(Sequential(LSTM(3, 4), Linear(4, 2)), tmp_path / "m.npz")


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _patch_entry(path, out, flags=0, method=None):
    """Copy the archive at ``path`` to ``out`` with KEY's general-purpose ``flags`` or-ed in
    and its compression ``method`` set, in both its local and its central header."""
    raw = bytearray(open(path, "rb").read())
    local = zipfile.ZipFile(path).getinfo(KEY).header_offset
    central = raw.find(b"PK\x01\x02")
    while central != -1:                                 # the central record that names KEY
        n = struct.unpack("<H", raw[central + 28:central + 30])[0]
        if bytes(raw[central + 46:central + 46 + n]) == KEY.encode():
            break
        central = raw.find(b"PK\x01\x02", central + 1)
    for at in (local + 6, central + 8):                  # flags, then the method, in each
        raw[at:at + 2] = struct.pack("<H", struct.unpack("<H", raw[at:at + 2])[0] | flags)
        if method is not None:
            raw[at + 2:at + 4] = struct.pack("<H", method)
    out.write_bytes(bytes(raw))
    return out


def test_load_refuses_damaged_compressed_bytes(saved, tmp_path):
    """Was zlib.error."""
    np.savez_compressed(tmp_path / "c.npz", **_arrays(saved))
    raw = bytearray((tmp_path / "c.npz").read_bytes())
    info = zipfile.ZipFile(tmp_path / "c.npz").getinfo(KEY)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 40):
        raw[i] ^= 0x5A
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"^path: .*bad\.npz' is corrupt \(entry "
                                         r"'0\.weight_ih_l0\.npy' cannot be read"):
        rnncore.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("flags, method, says", [
    (0, 99, r"or crafted: entry '0\.weight_ih_l0\.npy' is compressed with method 99"),  # was
    (1, None, r"\(entry '0\.weight_ih_l0\.npy' cannot be read: .*encrypted"),  # NotImplemented-,
])                                                                             # RuntimeError
def test_load_refuses_entries_zipfile_cannot_open(saved, tmp_path, flags, method, says):
    bad = _patch_entry(saved, tmp_path / "bad.npz", flags, method)
    with pytest.raises(ValueError, match=rf"^path: .* is corrupt {says}"):
        rnncore.load(bad)


def _with_header(saved, out, shape, descr="<f4"):
    """``saved`` rewritten with KEY's .npy header announcing ``shape`` (its data unchanged)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(out, "w") as z:
        for k, v in _arrays(saved).items():
            b = io.BytesIO()
            np.save(b, v)
            z.writestr(k + ".npy", header.getvalue() + v.tobytes() if k + ".npy" == KEY
                       else b.getvalue())
    return out


def _reads(monkeypatch):
    """The dtype kinds of the arrays np.lib.format.read_array reads from now on."""
    read, kinds = np.lib.format.read_array, []

    def recording(*args, **kwargs):
        a = read(*args, **kwargs)
        kinds.append(a.dtype.kind)
        return a

    monkeypatch.setattr(np.lib.format, "read_array", recording)
    return kinds


def test_load_refuses_a_huge_header_shape_before_allocating(saved, tmp_path, monkeypatch):
    """A header announcing shape (10**15,) used to reach np.empty: MemoryError (3.55 PiB)."""
    bad = _with_header(saved, tmp_path / "huge.npz", (10 ** 15,))
    reads = _reads(monkeypatch)
    with pytest.raises(ValueError, match=r"'0\.weight_ih_l0\.npy' cannot be read: its header "
                                         r"announces shape \(1000000000000000,\) of float32, "
                                         r"which its 320 bytes cannot hold"):
        rnncore.load(bad)
    assert reads == []


def test_load_checks_header_shapes_against_the_config_before_reading(saved, tmp_path,
                                                                     monkeypatch):
    """A header that fits its entry but not the architecture: only the JSON is read."""
    bad = _with_header(saved, tmp_path / "small.npz", (4, 3))   # 12 values of the 48 stored
    reads = _reads(monkeypatch)
    with pytest.raises(ValueError, match=r"model\.0 \(LSTM\): config .* gives 128 parameter "
                                         r"values, the file holds 92 under '0\.'"):
        rnncore.load(bad)
    assert reads == ["U"]


# -- pad_sequences: values the dtype cannot hold -------------------------------------------
@pytest.mark.parametrize("seq, dtype, match", [
    (np.array([300, 2]), np.int8, r"\[-128, 127\] \(the range of dtype int8\), got min 2, max 300"),
    (np.array([-1, 2]), np.uint8, r"\[0, 255\] \(the range of dtype uint8\), got min -1, max 2"),
    (np.array([2 ** 40, 2]), np.int32, r"dtype int32\), got min 2, max 1099511627776"),
    (np.array([[1e39]]), np.float32, r"\[-3.4028235e\+38, 3.4028235e\+38\] \(the range of "
                                     r"dtype float32\), got min 1e\+39"),
    (np.array([2 ** 63 + 2], np.uint64), np.int64, r"max 9223372036854775810"),
])
def test_pad_sequences_refuses_values_beyond_the_dtype(seq, dtype, match):
    """They were wrapped (300 -> 44 in int8, -1 -> 255 in uint8) or overflowed (1e39 -> inf)."""
    with pytest.raises(ValueError, match=r"^sequences\[1\]: expected values in .*" + match):
        rnncore.pad_sequences([np.ones_like(seq), seq], dtype=dtype)


def test_pad_sequences_keeps_values_at_the_dtypes_limits():
    x, _ = rnncore.pad_sequences([np.array([127, -128])], dtype=np.int8)
    assert x.ravel().tolist() == [127, -128]
    x, _ = rnncore.pad_sequences([np.array([[3.4e38]])], dtype=np.float32)
    assert np.isfinite(x).all()


# -- the finiteness test every module runs on its inputs ----------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f4"])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 6400, 100_003])
def test_the_finiteness_check_finds_nan_and_inf_at_any_place(dtype, size):
    """``_checks._all_finite`` (one compiled loop over a contiguous array) against NumPy's
    elementwise test: NaN, +Inf and -Inf first, last, in the middle, in layouts C, F and
    strided, and large finite values whose sum overflows (3.4e38 + 3.4e38 is Inf in float32)."""
    from rnncore._checks import _all_finite
    rng = np.random.default_rng(size)
    base = rng.uniform(1e38, 3.4e38, size).astype(dtype)            # finite; sums overflow
    layouts = [lambda a: a, lambda a: a.reshape(-1, 1).T.copy().T, lambda a: a[::-1],
               lambda a: np.asfortranarray(np.repeat(a[None], 3, 0)),
               lambda a: a.reshape(1, -1)[:, ::2]]
    cases = [base] + [_with(base, i, v) for i in {0, size // 2, size - 1} if size
                      for v in (np.nan, np.inf, -np.inf)]
    for a in cases:
        for view in layouts:
            v = view(a)
            assert _all_finite(v) == bool(np.isfinite(v).all()), (v.shape, v.strides)
    assert _all_finite(np.float32(np.nan).reshape(())) is False


def _with(a, i, v):
    a = a.copy()
    a[i] = v
    return a


def _outcome(f, x, dtype):
    """What ``f(x, "x", dtype=dtype)`` gives: its error, or the facts of the array returned."""
    try:
        out = f(x, "x", dtype=dtype)
    except (TypeError, ValueError) as e:
        return type(e), str(e)
    return (out is x, out.dtype, out.shape, out.flags.c_contiguous, out.flags.writeable,
            out.tobytes())


def _locked(a):
    a.flags.writeable = False
    return a


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # (1e39 cast to float32)
@pytest.mark.parametrize("check", ["finite_array", "as_float_array"])
def test_the_checks_fast_path_decides_as_the_full_path(check, monkeypatch):
    """``_checks.finite_array`` and ``kernels._common.as_float_array`` answer an array that is
    already right (C order, the dtype asked for, finite) early, comparing dtypes by identity;
    every other input must get exactly what the full path gives it: the same array, copy, cast
    or error. The full path is forced here with the dtype given as a type (np.float32, not
    its dtype object) and, without one, by taking away the singletons the fast path compares
    with."""
    from kernels import _common
    from rnncore import _checks
    f = getattr(_checks if check == "finite_array" else _common, check)
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    inputs = [a, a.astype(np.float64), np.asfortranarray(a), a[:, ::2], a.astype(">f4"),
              _locked(a.copy()), np.float32(2.5).reshape(()), a.astype(np.float16),
              a.astype(np.int64), _with(a.ravel(), 5, np.nan), _with(a.ravel(), 0, -np.inf),
              np.full(3, 1e39), np.zeros((0, 3), np.float32), a.tolist(), a.view(np.matrix)]
    for dtype in (np.float32, np.float64, None):
        fast = [_outcome(f, x, None if dtype is None else np.dtype(dtype)) for x in inputs]
        with monkeypatch.context() as m:
            m.setattr(_checks if check == "finite_array" else _common, "_F32", None)
            m.setattr(_checks if check == "finite_array" else _common, "_F64", None)
            full = [_outcome(f, x, dtype) for x in inputs]
        for x, got, want in zip(inputs, fast, full):
            assert got == want, (dtype, type(x).__name__, getattr(x, "dtype", None))
    assert f(a, "x", dtype=np.dtype(np.float32)) is a           # the early answer: no copy


# -- criteria: finite input, overflowing loss or gradient ----------------------------------
# (NumPy warns about the overflow before the ValueError; the warnings are not the point here)
pytestmark_overflow = pytest.mark.filterwarnings("ignore::RuntimeWarning")
BIG = np.array([3e38], np.float32), np.array([-3e38], np.float32)


@pytestmark_overflow
def test_mse_backward_refuses_a_gradient_that_overflows_float32():
    """2 (x - t) / numel = 1.2e39 was returned as inf with a RuntimeWarning only."""
    c = MSECriterion()
    assert np.isfinite(c.forward(*BIG))                     # the loss is float64: 3.6e77
    with pytest.raises(ValueError, match=r"^input, target: expected values for which the "
                                         r"gradient is finite in float32, got \|input\| up to "
                                         r"3e\+38, \|target\| up to 3e\+38: the gradient "
                                         r"overflows"):
        c.backward(*BIG)


@pytestmark_overflow
@pytest.mark.parametrize("forward_first", [False, True])
def test_sequencer_mse_backward_refuses_it_too(forward_first):
    c = SequencerCriterion(MSECriterion())
    x, t = (a.reshape(1, 1, 1) for a in BIG)
    if forward_first:                                       # backward then reuses its gradient
        c.forward(x, t)
    with pytest.raises(ValueError, match="^input, target: .*the gradient overflows"):
        c.backward(x, t)


@pytestmark_overflow
@pytest.mark.parametrize("criterion, good, bad, t", [
    (MSECriterion(), np.array([-1e200, 1e200]), np.array([1e200, -1e200]),
     np.array([-1e200, 1e200])),
    (ClassNLLCriterion(), np.full((2, 2), -0.7), np.full((2, 2), -1.7e308), np.array([0, 1])),
    (CrossEntropyCriterion(), np.zeros((1, 2)), np.array([[1e308, -1e308]]), np.array([1])),
], ids=["mse", "class_nll", "cross_entropy"])
def test_a_loss_that_overflows_float64_is_refused(criterion, good, bad, t):
    """Each returned inf (with a RuntimeWarning only); ``output`` stays as it was."""
    before = criterion.forward(good, t)
    with pytest.raises(ValueError, match=r"^input, target: expected values for which the loss "
                                         r"is finite in float64, got \|input\| up to .*: the "
                                         r"loss overflows"):
        criterion.forward(bad, t)
    assert criterion.output == before


@pytestmark_overflow
@pytest.mark.parametrize("criterion, t", [(MSECriterion(), np.zeros((2, 1, 1))),
                                          (ClassNLLCriterion(), np.zeros((2, 1), int))],
                         ids=["mse", "class_nll"])
def test_sequencer_refuses_an_overflowing_loss_and_keeps_its_state(criterion, t):
    c = SequencerCriterion(criterion)
    c.forward(np.full((2, 1, 1), -0.5), t)
    kept, output = c._kept, c.output
    with pytest.raises(ValueError, match="^input, target: .*the loss overflows"):
        c.forward(np.full((2, 1, 1), -1.7e308), t)         # two steps of 1.7e308 each
    assert c._kept is kept and c.output == output


@pytestmark_overflow
def test_bounded_gradients_stay_finite():
    g = BCECriterion().backward(np.array([0.0, 1.0], np.float32), np.array([1.0, 0.0]))
    assert np.isfinite(g).all()
    g = CrossEntropyCriterion().backward(np.array([[1e308, -1e308]]), np.array([0]))
    assert np.isfinite(g).all()


# -- the command line: --plot checked before the demo runs ---------------------------------
@pytest.fixture
def no_demo(monkeypatch):
    """matplotlib present (a stand-in), and the regression demo recording whether it ran."""
    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))
    called = []
    monkeypatch.setattr(regression, "run", lambda **kw: called.append(kw))
    return called


@pytest.mark.parametrize("under", ["", "sub/plots"])
def test_plot_at_or_under_a_file_is_a_usage_error(tmp_path, no_demo, capsys, under):
    """Was a FileExistsError / NotADirectoryError traceback, exit 1, after the whole demo."""
    (tmp_path / "a_file").write_text("")
    plot = str(tmp_path / "a_file" / under) if under else str(tmp_path / "a_file")
    assert cli.main(["demo", "regression", "--quick", "--no-progress", "--plot", plot]) == 2
    err = capsys.readouterr().err
    assert f"--plot: expected a directory, existing or to be created, got {plot!r}" in err
    assert f"({tmp_path / 'a_file'} is not a directory)" in err
    assert no_demo == []


def test_plot_in_a_new_directory_is_accepted(tmp_path, no_demo):
    plot = str(tmp_path / "new" / "plots")
    assert cli.main(["demo", "regression", "--plot", plot]) == 0
    assert no_demo and no_demo[0]["plot"] == plot


def test_plot_hint_installs_from_the_repository(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    assert cli.main(["demo", "regression", "--plot", "plots"]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[plot]"' in err and "rnncore[plot]" not in err


def test_hidden_help_covers_the_stacked_demo():
    text = " ".join(cli._build()[1].format_help().split())
    assert "hidden size of the LSTMs" not in text
    assert "LSTM, GRU and RNN" in text and "N//2" in text


# -- kernels.reference: the fast kernels' argument checks ----------------------------------
T, B, I, H = 3, 2, 4, 5
FAST = {"rnn": (rnn.rnn_forward, rnn.rnn_backward, 1), "lstm": (lstm.lstm_forward,
        lstm.lstm_backward, 4), "gru": (gru.gru_forward, gru.gru_backward, 3)}


def _weights(cell):
    G = FAST[cell][2]
    r = np.random.default_rng(1)
    ws = [r.standard_normal(s) for s in [(G * H, I), (G * H, H), (G * H,)]]
    return ws + [ws[2].copy()] if cell == "gru" else ws


def _message(f, *args, **kwargs):
    with pytest.raises((TypeError, ValueError)) as e:
        f(*args, **kwargs)
    return e.type, str(e.value)


X = np.random.default_rng(2).standard_normal((T, B, I))
BAD_FORWARD = {
    "int x": dict(x=X.round().astype(np.int64)),             # was an all-zero int64 output
    "lengths 9, 0": dict(lengths=np.array([9, 0])),           # was accepted
    "float lengths": dict(lengths=np.array([1.0, 2.0])),
    "2-D x": dict(x=X[0]),
    "W_ih shape": dict(W_ih=np.ones((2, 2))),
    "h0 shape": dict(h0=np.ones((B, H + 1))),
    "reverse": dict(reverse="False"),
    "ragged x": dict(x=[[[1.0, 2.0]], [[1.0]]]),
}


@pytest.mark.parametrize("cell", sorted(FAST))
@pytest.mark.parametrize("bad", sorted(BAD_FORWARD))
def test_reference_forward_refuses_as_the_fast_kernel_does(cell, bad):
    args = dict(zip(["x", "W_ih", "W_hh"], [X] + _weights(cell)[:2]))
    args.update(BAD_FORWARD[bad])
    rest = _weights(cell)[2:]
    got = _message(getattr(ref, f"{cell}_forward"), args["x"], args["W_ih"], args["W_hh"], *rest,
                   **{k: v for k, v in args.items() if k not in ("x", "W_ih", "W_hh")})
    assert got == _message(FAST[cell][0], args["x"], args["W_ih"], args["W_hh"], *rest,
                           **{k: v for k, v in args.items() if k not in ("x", "W_ih", "W_hh")})


@pytest.mark.parametrize("cell", sorted(FAST))
def test_reference_backward_checks_its_cache_and_gradients(cell):
    forward, backward = getattr(ref, f"{cell}_forward"), getattr(ref, f"{cell}_backward")
    cache = forward(X, *_weights(cell))[-1]
    states = 2 if cell == "lstm" else 1
    fast_cache = FAST[cell][0](X, *_weights(cell))[-1]
    with pytest.raises(TypeError, match=f"^cache: expected the cache returned by {cell}_forward, "
                                        f"got a tuple of {len(fast_cache)} items"):
        backward(None, *[None] * states, fast_cache)
    with pytest.raises(ValueError, match=r"^dy: expected shape \(3, 2, 5\), got \(3, 2, 4\)"):
        backward(np.ones((T, B, H - 1)), *[None] * states, cache)
    with pytest.raises(ValueError, match=r"^dh_n: expected shape \(2, 5\), got \(5,\)"):
        backward(None, np.ones(H), *[None] * (states - 1), cache)
    assert all(np.isfinite(g).all() for g in backward(None, *[None] * states, cache))


def test_kernel_docstrings_say_same_arguments_not_signatures():
    import kernels
    def flat(doc):
        return " ".join(doc.split())
    import inspect

    from kernels import gru, rnn
    assert "exactly these signatures" not in ref.__doc__
    assert ("same arguments (the CPU forwards and every CUDA kernel add an optional "
            "``path=``)") in flat(ref.__doc__)
    assert "same arguments (their forwards add an optional ``path=``:" in flat(kernels.__doc__)
    takes_path = {f.__name__: "path" in inspect.signature(f).parameters
                  for f in (lstm.lstm_forward, lstm.lstm_backward, gru.gru_forward,
                            gru.gru_backward, rnn.rnn_forward, rnn.rnn_backward)}
    assert takes_path == {"lstm_forward": True, "lstm_backward": False, "gru_forward": True,
                          "gru_backward": False, "rnn_forward": True, "rnn_backward": False}


# -- messages that named the wrong thing ---------------------------------------------------
def test_fast_kernel_names_a_ragged_x():
    """Was NumPy's 'setting an array element with a sequence'."""
    Wi, Wh, b = (np.ones(s, np.float32) for s in [(4 * H, 2), (4 * H, H), (4 * H,)])
    with pytest.raises(ValueError, match=r"^x: expected an array or nested lists of one shape, "
                                         r"got a list that NumPy cannot make one array of"):
        lstm.lstm_forward([[[1, 2]], [[1]]], Wi, Wh, b)


def test_lengths_in_uint64_are_reported_as_they_are():
    """2**63 + 2 was reported as min -9223372036854775806 (wrapped into int64)."""
    Wi, Wh, b = (np.ones(s, np.float32) for s in [(4 * H, I), (4 * H, H), (4 * H,)])
    with pytest.raises(ValueError, match=r"^lengths: expected 1 <= lengths\[b\] <= T=3, got min "
                                         r"1, max 9223372036854775810$"):
        lstm.lstm_forward(X.astype(np.float32), Wi, Wh, b,
                          lengths=np.array([2 ** 63 + 2, 1], np.uint64))


def test_gradcheck_names_x_for_steps_of_different_shapes():
    """Was NumPy's 'all input arrays must have the same shape'."""
    with pytest.raises(ValueError, match=r"^x: expected a list of step arrays of one shape, got "
                                         r"shapes \[\(1, 3\), \(2, 3\)\]"):
        rnncore.gradcheck(Linear(3, 2), [np.ones((2, 3)), np.ones((1, 3))])


def test_summary_checks_print_fn():
    """Was "'int' object is not callable"; None prints nothing, as in rnncore.trace."""
    with pytest.raises(TypeError, match="^print_fn: expected a function or None, got int"):
        Linear(3, 2).summary((5, None, 3), print_fn=3)
    assert summary(Linear(3, 2), (5, None, 3), print_fn=None) == 8


def test_fit_reports_the_shape_of_x_not_of_its_one_sample_probe():
    rnncore.manual_seed(0)
    m = Sequential(LSTM(3, 4, return_sequences=False), Linear(4, 2), LogSoftMax())
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError) as e:
        rnncore.fit(m, ClassNLLCriterion(), optim.SGD(m.parameters(), 0.1),
                    np.ones((4, 6, 2), np.float32), np.zeros(6, int), progress=False)
    assert str(e.value) == "x: expected (T, B, 3) (input_size=3), got (4, 6, 2)"
    assert all(np.array_equal(v, before[k]) for k, v in m.state_dict().items())


def test_a_torch_tensor_that_needs_grad_is_a_type_error_naming_the_argument():
    from _torch import torch
    t = torch.zeros(3, 2, 2, requires_grad=True)
    m = LSTM(2, 3)
    with pytest.raises(TypeError, match=r"^x: expected a numeric array, got Tensor"):
        m.forward(t)
    lin = Linear(2, 2)
    state = {k: torch.nn.Parameter(torch.from_numpy(v)) for k, v in lin.state_dict().items()}
    before = lin.state_dict()
    with pytest.raises(TypeError, match=r"^state\['weight'\]: expected a numeric array"):
        lin.load_state_dict({k: v * 2 for k, v in state.items()})
    assert all(np.array_equal(v, lin.state_dict()[k]) for k, v in before.items())
    m.forward(t.detach())                                # a plain tensor is read as an array
    with pytest.raises(TypeError, match=r"^x\[0\]: expected a numeric array, got Tensor"):
        rnncore.Sequencer(Linear(2, 2)).forward([t[0], t[1]])
    for model in (Linear(2, 2), Sequential(Linear(2, 2))):
        with pytest.raises(TypeError, match=r"^x: expected a numeric array, got list"):
            model.forward([t[0], t[1]])
    with pytest.raises(TypeError, match=r"^x\[0\]: expected a real-valued array, got dtype complex"):
        rnncore.Sequencer(Linear(2, 2)).forward(list(np.ones((3, 2, 2), complex)))

    class Unreadable:                                    # anything else's RuntimeError: as it came
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("disk read failed")
    with pytest.raises(RuntimeError, match="^disk read failed"):
        Linear(2, 2).forward(Unreadable())


# -- empty inputs, self-holding containers, np.matrix, out-of-range numbers --------------------
@pytest.mark.parametrize("make", [rnncore.Tanh, rnncore.ReLU, rnncore.Sigmoid, rnncore.LeakyReLU,
                                  lambda: rnncore.Dropout(0.5), rnncore.LastStep])
@pytest.mark.parametrize("shape", [(0, 2, 4), (3, 0, 4), (3, 2, 0)])
def test_empty_inputs_are_refused_by_every_module_and_nothing_changes(make, shape):
    """The activations, Dropout and LastStep answered an empty array (the layers with weights
    refused it); LastStep with T = 0 raised IndexError after replacing its cache."""
    m = make()
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    y = m.forward(x)
    gy = np.ones_like(y)
    expected = m.backward(x, gy)
    with pytest.raises(ValueError, match=rf"^x: expected non-empty dimensions, got shape "
                                         rf"{re.escape(str(shape))}"):
        m.forward(np.zeros(shape, np.float32))
    np.testing.assert_array_equal(m.backward(x, gy), expected)      # the last good forward's


def test_a_container_cannot_hold_itself():
    """``s.add(s)`` raised RecursionError, and left s holding itself for good."""
    s = rnncore.Sequential(Linear(2, 2))
    with pytest.raises(ValueError, match="^module: expected a module that does not hold this "
                                         "Sequential, got itself"):
        s.add(s)
    outer = rnncore.Sequential(s)
    with pytest.raises(ValueError, match="got one that holds it"):
        s.add(outer)
    assert len(s) == 1 and len(outer) == 1
    assert s.forward(np.ones((1, 2), np.float32)).shape == (1, 2)


def test_an_empty_chain_is_the_identity_both_ways():
    """Torch7's ``nn.Sequential()`` before any ``:add``: forward ran, backward raised IndexError."""
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    for m in (rnncore.Sequential(), rnncore.Sequencer(rnncore.Sequential())):
        np.testing.assert_array_equal(m.forward(x), x)
        np.testing.assert_array_equal(m.backward(x, 2 * x), 2 * x)
        with pytest.raises(ValueError, match="gy: expected shape"):
            m.backward(x, x[:1])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")     # (np.matrix itself)
def test_np_matrix_is_taken_as_a_plain_array_and_refused_as_a_grad():
    """A matrix reached the compiled checks (a Numba TypingError), and as ``p.grad`` it made
    Adam square its gradient by a matrix product."""
    lin = Linear(3, 2)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(lin.forward(np.asmatrix(x)), lin.forward(x))
    assert rnncore.MSECriterion().forward(np.asmatrix(x), np.asmatrix(x)) == 0.0
    with pytest.raises(TypeError, match=r"^weight\.grad: expected a NumPy array, got matrix "
                                        r"\(np\.asarray\(a\) makes a plain array of it\)"):
        lin.weight.grad = np.asmatrix(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("call, name", [
    (lambda: Linear(2, 2).update_parameters(10 ** 400), "lr"),
    (lambda: rnncore.optim.Adam(Linear(2, 2).parameters(), betas=(10 ** 400, 0.9)), r"betas\[0\]"),
    (lambda: rnncore.optim.clip_grad_norm(Linear(2, 2).parameters(), 10 ** 400), "max_norm"),
    (lambda: rnncore.Dropout(10 ** 400), "p"),
    (lambda: Linear(10 ** 400, 2), "in_features"),
])
def test_integers_beyond_a_float_are_refused_by_name(call, name):
    """float(10**400) raised OverflowError, which names nothing."""
    with pytest.raises(ValueError, match=rf"^{name}: expected .*401 digits"):
        call()


def test_a_long_double_beyond_a_float_is_refused_as_such():
    with pytest.raises(ValueError, match=r"^lr: expected .*longdouble \(1e\+400\), beyond a "
                                         r"float's range"):
        Linear(2, 2).update_parameters(np.longdouble("1e400"))


def test_a_float64_child_of_a_float32_container_gets_its_gradient_in_float64():
    """Sequencer, and Sequential with lengths=, rounded gy to the container's float32 first."""
    import copy
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 2, 2))
    s = rnncore.Sequencer(Linear(3, 2))
    s.module.astype(np.float64)
    alone = copy.deepcopy(s.module)
    s.forward(x)
    alone.forward(x)
    np.testing.assert_array_equal(s.backward(x, gy), alone.backward(x, gy))
    q = rnncore.Sequential(LSTM(3, 2), Linear(2, 2))
    q[1].astype(np.float64)
    q2 = copy.deepcopy(q)
    q.forward(x, lengths=np.array([3, 3]))
    q2.forward(x)
    q.backward(x, gy)
    q2.backward(x, gy)
    np.testing.assert_array_equal(q[1].weight.grad, q2[1].weight.grad)


def test_recurrent_output_shape_checks_its_dimensions():
    for bad in [("a", 2, 3), (-1, 2, 3), (0, 2, 3), (2.0, 2, 3)]:
        with pytest.raises(ValueError, match="^input_shape: expected positive ints or None"):
            LSTM(3, 2).output_shape(bad)
    assert LSTM(3, 2).output_shape((None, None, 3)) == (None, None, 2)
    # the array itself instead of its shape: the whole array was printed (54,849 characters for
    # (200, 64, 128)); long shapes are shortened, the bad entry named
    with pytest.raises(TypeError, match=r"^input_shape: expected a tuple of ints or None, got an "
                                        r"array of shape \(200, 64, 128\) \(pass its .shape\)$"):
        LSTM(128, 2).summary(np.zeros((200, 64, 128)), print_fn=None)
    with pytest.raises(ValueError, match=r"\.\.\.\) \(0 at \[50\]\)$") as info:
        LSTM(3, 2).output_shape((1,) * 50 + (0,))
    assert len(str(info.value)) < 120


def test_a_big_endian_float32_input_keeps_float32_in_a_criterion():
    """``>f4`` counted as "another dtype" and came back as a float64 gradient."""
    x = np.array([[0.2, 0.7], [0.1, 0.4]], np.float32)
    t = np.zeros((2, 2), np.float32)
    g = rnncore.MSECriterion().backward(x.astype(">f4"), t)
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, rnncore.MSECriterion().backward(x, t))


def test_a_seed_may_be_any_int_and_a_huge_fraction_is_named_as_such():
    """The bound for sizes (below 2**63) had reached fit's seed, which NumPy takes at any size."""
    import fractions
    m = rnncore.Sequential(LSTM(2, 2, return_sequences=False))
    x, y = np.ones((3, 4, 2), np.float32), np.zeros((4, 2), np.float32)
    rnncore.fit(m, rnncore.MSECriterion(), 0.1, x, y, epochs=1, progress=False, seed=2 ** 100)
    with pytest.raises(ValueError, match=r"^p: expected a number in \[0, 1\), got a Fraction, "
                                         r"beyond a float's range"):
        rnncore.Dropout(fractions.Fraction(10 ** 400, 3))


@pytest.mark.parametrize("value, shown", [(None, "None"), ("abc", "str 'abc'"), ({1: 2}, "dict")])
def test_an_input_that_is_no_array_is_named_as_given(value, shown):
    """None was reported as "got dtype object" (NumPy makes a 0-d object array of it)."""
    with pytest.raises(TypeError, match=f"x: expected a numeric array, got {shown}$"):
        rnncore.LSTM(2, 3).forward(value)


# -- settings assigned after construction; sizes beyond the machine ---------------------------
@pytest.mark.parametrize("value, exc", [("False", TypeError), (np.array([True, False]), TypeError),
                                        (None, TypeError), (0, TypeError), (1.0, TypeError)])
def test_requires_grad_takes_a_bool_only(value, exc):
    """"False" is truthy (the weight went on training), an array failed deep inside backward
    and the optimizers' step halfway through an update, None and 0 froze it silently."""
    lin = Linear(3, 2)
    with pytest.raises(exc, match=r"weight\.requires_grad: expected True or False"):
        lin.weight.requires_grad = value
    assert lin.weight.requires_grad is True
    lin.weight.requires_grad = np.bool_(False)
    assert lin.weight.requires_grad is False


def test_a_parameter_pickled_with_requires_grad_under_its_own_name_loads():
    from rnncore.module import Parameter
    p = Parameter.__new__(Parameter)
    p.__setstate__((None, {"_data": np.zeros(2, np.float32), "_grad": np.zeros(2, np.float32),
                           "name": "w", "requires_grad": False, "version": 0}))
    assert p.requires_grad is False
    import pickle
    q = pickle.loads(pickle.dumps(p))
    assert q.requires_grad is False and q.name == "w"


@pytest.mark.parametrize("make, attr, value, exc, match", [
    (lambda: rnncore.Dropout(0.5), "p", 1.0, ValueError, r"p: expected a number in \[0, 1\)"),
    (lambda: rnncore.Dropout(0.5), "p", -1, ValueError, r"p: expected a number in \[0, 1\)"),
    (lambda: rnncore.Dropout(0.5), "p", "0.5", TypeError, r"p: expected a number in \[0, 1\)"),
    (lambda: LSTM(4, 3, num_layers=2), "dropout", 1.0, ValueError,
     r"dropout: expected a number in \[0, 1\)"),
    (lambda: rnncore.GRU(4, 3, num_layers=2), "dropout", "0.5", TypeError, "dropout: expected"),
    (lambda: rnncore.LeakyReLU(), "slope", "a", TypeError, "slope: expected a number"),
    (lambda: rnncore.LeakyReLU(), "slope", 1e39, ValueError, "slope: expected a number that is "
                                                             "finite in the module's dtype"),
])
def test_settings_assigned_after_construction_are_checked_as_its_arguments(make, attr, value,
                                                                           exc, match):
    """Dropout.p = 1.0 or LSTM.dropout = 1.0 gave all-NaN training outputs (a 0/0 mask), a str
    failed inside the forward naming nothing, p = -1 did nothing: refused where set, the old
    value kept; a good value is taken and used."""
    m = make()
    before = getattr(m, attr)
    with pytest.raises(exc, match=match):
        setattr(m, attr, value)
    assert getattr(m, attr) == before
    setattr(m, attr, 0.25)
    assert getattr(m, attr) == 0.25 and m.config()[attr] == 0.25


def test_modules_pickled_with_a_plain_dropout_attribute_still_read_it():
    d = rnncore.Dropout(0.3)
    state = dict(d.__dict__)
    state["p"] = state.pop("_p")                  # as pickled before p was checked
    old = rnncore.Dropout.__new__(rnncore.Dropout)
    old.__dict__.update(state)
    assert old.p == 0.3
    old.p = 0.2
    assert old.p == 0.2 and "p" not in old.__dict__


_HUGE = [("LSTM(2, 5, num_layers=2 ** 62)", "LSTM(input_size=2, hidden_size=5, num_layers="),
         ("GRU(2, 2 ** 31)", "GRU(input_size=2, hidden_size=2147483648"),
         ("RNN(2 ** 62, 4)", "RNN(input_size=4611686018427387904"),
         ("Linear(2 ** 40, 2 ** 40)", "Linear(in_features=1099511627776"),
         ("Embedding(2 ** 62, 2)", "Embedding(num_embeddings=4611686018427387904"),
         ("pad_sequences([np.zeros(3)], maxlen=2 ** 62)", "maxlen=4611686018427387904")]


def test_sizes_beyond_the_machines_memory_are_refused_by_name():
    """num_layers=2**62 had allocated layer after layer until the system killed the process;
    the others ended in NumPy's MemoryError or "array is too big", naming no argument. (Run in
    a child process whose address space is capped at 3 GiB: a regression then fails this test
    with a MemoryError instead of taking the machine's memory.)"""
    import json
    import subprocess
    script = ("import json, resource, numpy as np\n"
              "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
              "from rnncore import *\n"
              "out = []\n"
              "for call in %r:\n"
              "    try:\n"
              "        eval(call)\n"
              "        out.append('built')\n"
              "    except BaseException as e:\n"
              "        out.append(type(e).__name__ + ': ' + str(e))\n"
              "print(json.dumps(out))\n") % [call for call, _ in _HUGE]
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for (call, says), got in zip(_HUGE, json.loads(r.stdout.splitlines()[-1])):
        assert re.fullmatch("ValueError: " + re.escape(says) + r".* GiB, more than this "
                            r"machine's memory \(.* GiB\)", got), (call, got)


@pytest.mark.parametrize("make", [lambda: LSTM(3, 4, num_layers=2, bidirectional=True),
                                  lambda: rnncore.GRU(3, 4, num_layers=3),
                                  lambda: rnncore.RNN(5, 2, bidirectional=True),
                                  lambda: Linear(7, 3), lambda: rnncore.Embedding(9, 4)])
def test_the_memory_bound_counts_exactly_the_parameters_and_gradients(make, monkeypatch):
    """The count the bound uses is the layer's own: with the machine's memory set to exactly
    its parameters and their gradients the layer builds, one byte less and it is refused."""
    from rnncore import _checks
    need = 2 * sum(p._data.nbytes for p in make().parameters())
    monkeypatch.setattr(_checks, "_memory_bytes", lambda: need)
    make()
    monkeypatch.setattr(_checks, "_memory_bytes", lambda: need - 1)
    with pytest.raises(ValueError, match="more than this machine's memory"):
        make()


@pytest.mark.parametrize("make", [MSECriterion, BCECriterion])
def test_a_criterion_names_a_0d_input_as_such(make):
    """A 0-d array holds one number: the refusal says what is missing (a dimension), not that
    the array is empty."""
    with pytest.raises(ValueError, match=r"^input: expected an array of at least 1 dimension, "
                                         r"got a 0-d one"):
        make().forward(np.float32(0.5), np.float32(1.0))
    with pytest.raises(ValueError, match=r"^input: expected a non-empty array, got shape \(0,\)"):
        make().forward(np.zeros(0, np.float32), np.zeros(0, np.float32))
