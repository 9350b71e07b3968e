"""rnncore.save / rnncore.load: bit-identical round trips, atomic writes, refused files."""

import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncore
from rnncore import (GRU, LSTM, RNN, Dropout, Embedding, LastStep, LeakyReLU, Linear, LogSoftMax,
                     ReLU, Sequencer, Sequential, Sigmoid, SoftMax, Tanh, load, save)
from rnncore.io import CLASSES, META_KEY

R = np.random.default_rng(0)
X3 = R.standard_normal((5, 3, 3))                               # (T, B, F=3)
IDS = R.integers(0, 6, size=(5, 3))                              # (T, B) token ids
LENGTHS = np.array([5, 2, 4])


def models():
    """(name, model builder, input, lengths): every module class at least once."""
    return [
        ("lstm", lambda d: LSTM(3, 4, dtype=d), X3, None),
        ("lstm-stack-bi", lambda d: LSTM(3, 4, num_layers=2, bidirectional=True, dropout=0.3,
                                         dtype=d), X3, LENGTHS),
        ("gru-stack-bi-last", lambda d: GRU(3, 4, num_layers=2, bidirectional=True,
                                            return_sequences=False, dtype=d), X3, LENGTHS),
        ("rnn-stack-bi", lambda d: RNN(3, 2, num_layers=3, bidirectional=True, dtype=d),
         X3, LENGTHS),
        ("embedding-lstm-laststep", lambda d: Sequential(
            Embedding(6, 3, dtype=d), LSTM(3, 4, dtype=d), LastStep(dtype=d), Linear(4, 2, dtype=d),
            LogSoftMax(dtype=d)), IDS, LENGTHS),
        ("pretrained-frozen", lambda d: Sequential(
            Embedding.from_pretrained(R.standard_normal((6, 3)), freeze=True, dtype=d),
            GRU(3, 2, dtype=d)), IDS, None),
        ("sequencer", lambda d: Sequencer(Sequential(
            LSTM(3, 5, dtype=d), Dropout(0.5, dtype=d), Linear(5, 4, dtype=d), ReLU(dtype=d),
            Linear(4, 3, dtype=d), LeakyReLU(0.2, dtype=d), Tanh(dtype=d), Sigmoid(dtype=d),
            SoftMax(dtype=d)), dtype=d), X3, LENGTHS),
    ]


def same_model(a, b):
    assert repr(a) == repr(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]
    assert [m.dtype for m in a.modules()] == [m.dtype for m in b.modules()]
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]


def test_every_module_class_is_covered():
    used = {type(m).__name__ for _, build, _, _ in models() for m in build(np.float32).modules()}
    assert used == set(CLASSES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, build, x, lengths", models(), ids=[m[0] for m in models()])
def test_round_trip_is_bit_identical(tmp_path, name, build, x, lengths, dtype):
    rnncore.manual_seed(1)
    m = build(dtype)
    path = save(m, tmp_path / "model.npz")
    assert path == str(tmp_path / "model.npz") and os.listdir(tmp_path) == ["model.npz"]
    m2 = load(path)
    same_model(m, m2)
    assert m2.dtype == np.dtype(dtype)
    y1 = np.asarray(m.evaluate().forward(x, lengths=lengths))
    y2 = np.asarray(m2.evaluate().forward(x, lengths=lengths))
    assert y1.dtype == y2.dtype == np.dtype(dtype) and np.array_equal(y1, y2)
    # The loaded model trains: one backward (evaluate mode: no dropout masks), same grads.
    for mod in (m, m2):
        mod.zero_grad_parameters()
        y = mod.forward(x, lengths=lengths)
        mod.backward(x, np.ones_like(np.asarray(y)))
    for p, q in zip(m.parameters(), m2.parameters()):
        assert np.array_equal(p.grad, q.grad)


@settings(max_examples=12)
@given(cell=st.sampled_from([RNN, LSTM, GRU]), layers=st.integers(1, 2), bi=st.booleans(),
       seqs=st.booleans(), f64=st.booleans(), H=st.integers(1, 4))
def test_round_trip_recurrent_configurations(cell, layers, bi, seqs, f64, H):
    dtype = np.float64 if f64 else np.float32
    m = cell(3, H, num_layers=layers, bidirectional=bi, return_sequences=seqs, dtype=dtype)
    with tempfile.TemporaryDirectory() as d:
        m2 = load(save(m, os.path.join(d, "m.npz")))
    same_model(m, m2)
    assert m2.config() == m.config()
    assert np.array_equal(m.forward(X3, lengths=LENGTHS), m2.forward(X3, lengths=LENGTHS))


def test_frozen_parameters_survive(tmp_path):
    emb = Embedding.from_pretrained(np.arange(12.0).reshape(4, 3), freeze=True,
                                    dtype=np.float32)
    lstm = LSTM(3, 2)
    lstm.parameters()[1].requires_grad = False                   # frozen by hand
    m2 = load(save(Sequential(emb, lstm), tmp_path / "f.npz"))
    assert m2[0].freeze and not m2[0].weight.requires_grad
    assert [p.requires_grad for p in m2[1].parameters()] == [True, False, True]
    assert np.array_equal(m2[0].weight.data, np.arange(12.0).reshape(4, 3))
    unfrozen = load(save(Embedding.from_pretrained(np.ones((2, 2)), freeze=False), tmp_path / "u"))
    assert unfrozen.weight.requires_grad and not unfrozen.freeze


def test_a_module_used_twice_loads_as_one(tmp_path):
    """Sequential(lin, Tanh(), lin): the weights are stored once and the loaded model shares
    one Linear again (a step changes both uses)."""
    lin = Linear(3, 3, dtype=np.float64)
    m = Sequential(lin, Tanh(dtype=np.float64), lin)
    m2 = load(save(m, tmp_path / "tied.npz"))
    assert m2[0] is m2[2] and list(m2.state_dict()) == ["0.weight", "0.bias"]
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    with pytest.raises(ValueError, match=r"model\.1: 'same_as': expected the key prefix"):
        _rewrite(save(m, tmp_path / "bad.npz"),
                 lambda a, meta: meta["model"]["children"].__setitem__(1, {"same_as": "2."}))
        load(tmp_path / "bad.npz")


def test_path_without_suffix_is_used_as_given(tmp_path):
    target = tmp_path / "weights"
    assert save(LSTM(3, 2), target) == str(target)
    assert os.listdir(tmp_path) == ["weights"]
    assert isinstance(load(target), LSTM)


def test_load_leaves_the_random_stream_alone(tmp_path):
    path = save(Sequential(Embedding(50, 8), LSTM(8, 16)), tmp_path / "m.npz")
    rnncore.manual_seed(3)
    expected = rnncore.random.generator().random(4)
    rnncore.manual_seed(3)
    load(path)
    assert np.array_equal(rnncore.random.generator().random(4), expected)


# -- atomic writes ---------------------------------------------------------------------------
def _fail_during(monkeypatch, what):
    """Make one step of the write raise: np.savez half-way, os.fsync, or os.replace."""
    if what == "savez":
        def savez(f, **arrays):
            f.write(b"PK\x03\x04 half an archive")
            raise OSError("disk full")
        monkeypatch.setattr(np, "savez", savez)
    elif what == "interrupt":
        def savez(f, **arrays):
            f.write(b"PK\x03\x04")
            raise KeyboardInterrupt
        monkeypatch.setattr(np, "savez", savez)
    else:
        def boom(*a, **k):
            raise OSError(f"{what} failed")
        monkeypatch.setattr(os, what, boom)


@pytest.mark.parametrize("what", ["savez", "interrupt", "fsync", "replace"])
def test_failed_save_leaves_no_file(tmp_path, monkeypatch, what):
    _fail_during(monkeypatch, what)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save(LSTM(3, 2), tmp_path / "m.npz")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("what", ["savez", "interrupt", "fsync", "replace"])
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch, what):
    old = LSTM(3, 2)
    path = save(old, tmp_path / "m.npz")
    before = open(path, "rb").read()
    _fail_during(monkeypatch, what)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save(GRU(3, 5), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.npz"] and open(path, "rb").read() == before
    same_model(old, load(path))


def test_save_overwrites_atomically_and_keeps_permissions(tmp_path):
    path = save(LSTM(3, 2), tmp_path / "m.npz")
    mode = os.stat(path).st_mode & 0o777
    save(GRU(3, 2), path)
    assert isinstance(load(path), GRU) and os.listdir(tmp_path) == ["m.npz"]
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert mode == 0o666 & ~umask                          # like a file from open()


def _no_write_access(monkeypatch, path):
    """``os.access`` as for a user without write permission to ``path`` (root may write any
    file, so chmod alone shows nothing there)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        False if mode & os.W_OK and os.path.abspath(p) == str(path) else real(p, mode, **kw)))


def test_a_read_only_file_is_refused_and_left_as_it_is(tmp_path, monkeypatch):
    """save replaced a file that ``open(path, "wb")`` may not write (the rename needs only the
    folder's permission): a model protected by chmod 444 was overwritten."""
    old = LSTM(3, 2)
    path = save(old, tmp_path / "m.npz")
    os.chmod(path, 0o444)
    before = open(path, "rb").read()
    _no_write_access(monkeypatch, path)
    with pytest.raises(PermissionError, match=r"^path: .*m\.npz' is a file that cannot be "
                                              r"written \(read-only\)"):
        save(GRU(3, 5), path)
    assert os.listdir(tmp_path) == ["m.npz"] and open(path, "rb").read() == before
    same_model(old, load(path))


def test_save_refuses_what_it_cannot_describe(tmp_path):
    class MyLSTM(LSTM):
        pass

    with pytest.raises(TypeError, match="model: cannot save MyLSTM at 1"):
        save(Sequential(Linear(2, 3), MyLSTM(3, 2)), tmp_path / "x.npz")
    with pytest.raises(TypeError, match="model: expected a rnncore Module"):
        save({"weight": np.ones(2)}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="path"):
        save(LSTM(2, 2), 3.5)
    assert os.listdir(tmp_path) == []


# -- refused files ---------------------------------------------------------------------------
def _rewrite(path, change):
    """Re-pack the archive at ``path`` after ``change(arrays, meta)`` edits it in place."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop(META_KEY)))
    change(arrays, meta)
    if meta is not None:
        arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.fixture
def saved(tmp_path):
    rnncore.manual_seed(0)
    return save(Sequential(LSTM(2, 4), Linear(4, 3)), tmp_path / "m.npz")


def _set(d, k, v):
    d[k] = v


@pytest.mark.parametrize("change, match", [
    (lambda a, m: _set(m, "format", 99), "unknown format version 99"),
    (lambda a, m: _set(m["model"]["children"][0], "class", "__import__('os')"),
     r"model\.0: unknown module class \"__import__\('os'\)\""),
    (lambda a, m: _set(m["model"], "class", "Module"), "model: unknown module class 'Module'"),
    (lambda a, m: _set(m["model"]["children"][0]["config"], "hidden_size", 5),
     r"model\.0 \(LSTM\): config .*'hidden_size': 5.* gives 160 parameter values, the file "
     r"holds 112 under '0\.'"),
    (lambda a, m: m["model"]["children"][1]["config"].update(in_features=2, out_features=5),
     r"array '1\.weight' has shape \(3, 4\).*expects \(5, 2\)"),   # 15 values, other shapes
    (lambda a, m: _set(m["model"]["children"][0]["config"], "cells", 5),
     r"model\.0 \(LSTM\): cannot rebuild.*cells"),
    (lambda a, m: _set(m["model"]["children"][1], "dtype", "int8"), r"model\.1 \(Linear\).*int8"),
    (lambda a, m: m["model"].pop("children"), "lacks \\['children'\\]"),
    (lambda a, m: _set(m, "frozen", ["nope"]), "'frozen'"),
    (lambda a, m: _set(m, "frozen", [[1]]), r"'frozen' must list parameter keys .*\[\[1\]\]"),
    (lambda a, m: _set(m, "frozen", [{"a": 1}]), "'frozen' must list parameter keys"),
    (lambda a, m: _set(m, "frozen", "0.weight_ih_l0"), "'frozen' must list parameter keys"),
    (lambda a, m: _set(m, "format", True), r"'format': expected the int 1, got True \(bool\)"),
    (lambda a, m: _set(m, "format", 1.0), r"'format': expected the int 1, got 1\.0 \(float\)"),
    (lambda a, m: _set(m, "format", "1"), r"'format': expected the int 1, got '1' \(str\)"),
    (lambda a, m: _set(a, "1.weight", np.zeros((4, 3), np.float32)),
     r"array '1\.weight' has shape \(4, 3\).*expects \(3, 4\)"),
    (lambda a, m: _set(a, "1.weight", a["1.weight"].astype(np.float64)),
     r"array '1\.weight'.*float64.*float32"),
    (lambda a, m: a.pop("0.bias_l0"), r"model\.0 \(LSTM\): .*gives 112 parameter values, "
                                      r"the file holds 96 under '0\.' \(\['0\.weight_hh_l0', "
                                      r"'0\.weight_ih_l0'\]\)"),
    (lambda a, m: _set(a, "0.bias_x", a.pop("0.bias_l0")),
     r"missing \['0\.bias_l0'\], unexpected \['0\.bias_x'\]"),
    (lambda a, m: _set(a, "2.weight", np.ones(3)), r"unexpected \['2\.weight'\]"),
    (lambda a, m: _set(a, "1.bias", np.array([1.0, np.nan, 0], np.float32)),
     r"state\['1\.bias'\]: expected finite"),
])
def test_tampered_files_are_refused(saved, change, match):
    _rewrite(saved, change)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_bad_json_and_bad_meta_are_refused(saved):
    with np.load(saved) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[META_KEY] = np.array("{not json")
    np.savez(saved, **arrays)
    with pytest.raises(ValueError, match="not valid JSON"):
        load(saved)
    arrays[META_KEY] = np.array([1, 2, 3])
    np.savez(saved, **arrays)
    with pytest.raises(ValueError, match="must be a JSON string"):
        load(saved)
    arrays[META_KEY] = np.array('{"format": 1}')
    np.savez(saved, **arrays)
    with pytest.raises(ValueError, match="expected JSON with 'format' and 'model'"):
        load(saved)


def test_truncated_and_corrupt_files_are_refused(saved, tmp_path):
    data = open(saved, "rb").read()
    for cut in (len(data) // 2, len(data) - 10, 3, 0):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not an rnncore model file|corrupt or truncated"):
            load(bad)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF                              # inside an array's bytes
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        load(tmp_path / "flip.npz")


def test_foreign_files_are_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", weight=np.ones(3))
    with pytest.raises(ValueError, match="no '__rnncore__' entry"):
        load(tmp_path / "plain.npz")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(ValueError, match="single .npy array"):
        load(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not an .npz archive"):
        load(tmp_path / "text.npz")
    np.savez(tmp_path / "pickled.npz", __rnncore__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="corrupt"):                 # never unpickled
        load(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.npz")


# -- sizes: the config must agree with the stored weights, checked before building -----------
@pytest.mark.parametrize("child, key, value, match", [
    (0, "hidden_size", 10 ** 7, r"model\.0 \(LSTM\): .* gives 400,000,120,000,000 parameter"),
    (0, "num_layers", 10 ** 9, r"model\.0 \(LSTM\): .*'num_layers': 1000000000"),
    (0, "input_size", 10 ** 12, r"model\.0 \(LSTM\): .* the file holds 112 under '0\.'"),
    (1, "out_features", 10 ** 10, r"model\.1 \(Linear\): .* gives 50,000,000,000 parameter"),
    (0, "hidden_size", 5, r"model\.0 \(LSTM\): .* gives 160 parameter values"),
])
def test_sizes_that_disagree_with_the_weights_are_refused_before_building(
        saved, monkeypatch, child, key, value, match):
    """A config edited to a huge size used to raise MemoryError (2.84 PiB for hidden_size
    10**7) while building the layer; the file holds the weights, so the sizes are compared
    with them first and no layer is built at all."""
    _rewrite(saved, lambda a, m: _set(m["model"]["children"][child]["config"], key, value))

    def no_building(*args, **kwargs):
        raise AssertionError("a layer was built")

    monkeypatch.setattr(rnncore.recurrent if child == 0 else rnncore.layers, "uniform",
                        no_building)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_a_huge_embedding_config_is_refused(tmp_path):
    path = save(Sequential(Embedding(6, 3), LSTM(3, 2)), tmp_path / "e.npz")
    _rewrite(path, lambda a, m: _set(m["model"]["children"][0]["config"], "num_embeddings",
                                     10 ** 12))
    with pytest.raises(ValueError, match=r"model\.0 \(Embedding\): .* gives "
                                         r"3,000,000,000,000 parameter values, the file holds 18"):
        load(path)


@pytest.mark.parametrize("name, build, x, lengths", models(), ids=[m[0] for m in models()])
def test_parameter_count_from_the_config_matches_the_built_module(name, build, x, lengths):
    from rnncore.io import _param_count
    for m in build(np.float64).modules():
        own = sum(p.data.size for p in m._params.values())
        assert _param_count(type(m).__name__, m.config()) == own, type(m).__name__


# -- mixed dtypes, bytes paths, bad paths, non-finite weights -------------------------------
def mixed_dtype_models():
    """Models whose modules do not share one dtype, made through the public API only (a
    container's constructor refuses mixed children; ``astype`` on a child afterwards does not)."""
    def child():                                     # one child's dtype changed afterwards
        m = Sequential(LSTM(3, 3), Linear(3, 2))
        m[1].astype(np.float64)
        return m

    def nested():
        m = Sequential(Sequencer(Sequential(Linear(3, 4), Tanh())),
                       Sequential(GRU(4, 2), Linear(2, 2))).astype(np.float64)
        m[0].module[0].astype(np.float32)                        # deep inside a float64 tree
        m[1][0].astype(np.float32)
        return m

    def shared():                                                # one Linear, used twice
        lin = Linear(3, 3)
        m = Sequential(lin, Tanh(), lin)
        m[0].astype(np.float64)
        return m

    def shared_nested():             # the second use sits in a float32 container of its own
        lin = Linear(3, 3)
        m = Sequential(lin, Sequential(lin))
        lin.astype(np.float64)
        return m

    return [("child", child), ("nested", nested), ("shared", shared),
            ("shared-nested", shared_nested)]


@pytest.mark.parametrize("name, build", mixed_dtype_models(),
                         ids=[m[0] for m in mixed_dtype_models()])
def test_a_model_that_mixes_dtypes_round_trips(tmp_path, name, build):
    """D1: save wrote such a model and load refused it ("array '1.weight' has shape (2, 3) and
    dtype float64, the architecture expects (2, 3) float32"): each module keeps its own."""
    rnncore.manual_seed(4)
    m = build()
    assert len({mod.dtype for mod in m.modules()}) == 2          # really mixed
    m2 = load(save(m, tmp_path / "mixed.npz"))
    same_model(m, m2)                                            # dtypes of every module too
    x = R.standard_normal((5, 2, 3)).astype(np.float32)
    y1, y2 = np.asarray(m.evaluate().forward(x)), np.asarray(m2.evaluate().forward(x))
    assert y1.dtype == y2.dtype and np.array_equal(y1, y2)
    if name.startswith("shared"):
        assert m2[0] is (m2[2] if name == "shared" else m2[1][0])


def test_bytes_paths_load_as_they_save(tmp_path):
    """D3: save accepted bytes (os.fsdecode), load crashed with AttributeError."""
    m = GRU(2, 3)
    path = os.fsencode(str(tmp_path / "b.npz"))
    assert save(m, path) == str(tmp_path / "b.npz")
    same_model(m, load(path))
    with pytest.raises(TypeError, match="path: expected a str or os.PathLike"):
        load(3)


@pytest.mark.parametrize("target, error, match", [
    (lambda d: d, IsADirectoryError,
     r"^path: expected a file path, got '.*', which is a directory"),
    (lambda d: os.path.join(d, "m.npz") + os.sep, ValueError,
     r"^path: .*m\.npz/', which ends with a path separator"),
    (lambda d: "", ValueError, r"^path: expected a file path, got an empty string"),
])
def test_bad_load_paths_are_named_as_save_names_them(tmp_path, target, error, match):
    """A directory, a path ending in a separator and an empty path gave bare OSErrors from
    open() that did not name the argument; a missing file still raises FileNotFoundError."""
    save(Linear(2, 2), str(tmp_path / "m.npz"))
    with pytest.raises(error, match=match):
        load(target(str(tmp_path)))
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "missing.npz"))


@pytest.mark.parametrize("target, error, match", [
    (lambda d: os.path.join(d, "missing", "x.npz"), FileNotFoundError,
     r"path: '.*missing.x\.npz': the folder .*missing does not exist"),
    (lambda d: d, IsADirectoryError, r"path: expected a file path, got '.*', which is a directory"),
    (lambda d: os.path.join(d, "new") + os.sep, ValueError, r"path: .*ends with a path separator"),
    (lambda d: os.path.join(d, "file.txt") + os.sep, ValueError, "ends with a path separator"),
    (lambda d: os.path.join(d, "file.txt", "x.npz"), NotADirectoryError,
     r"path: '.*x\.npz': .*file\.txt is not a directory"),
    (lambda d: "", ValueError, "path: expected a file path, got an empty string"),
])
def test_bad_save_paths_are_refused_before_any_file_is_made(tmp_path, monkeypatch, target, error,
                                                          match):
    """D4: the error named the internal '.x.npz.<hex>.tmp' file, made before the check."""
    (tmp_path / "file.txt").write_text("not a folder")
    path = target(str(tmp_path))
    real_open = os.open

    def no_temporary_file(name, *args, **kwargs):
        assert not str(name).endswith(".tmp"), f"a temporary file was made: {name}"
        return real_open(name, *args, **kwargs)
    monkeypatch.setattr(os, "open", no_temporary_file)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=match) as info:
        save(Linear(2, 2), path)
    assert ".tmp" not in str(info.value)
    assert os.listdir(tmp_path) == ["file.txt"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_save_refuses_weights_that_load_would_refuse(tmp_path, bad):
    """Q1: save wrote NaN / Inf weights, which load then refused: a checkpoint that could not
    be loaded back. Now nothing is written and the parameter is named."""
    m = Sequential(LSTM(2, 3), Linear(3, 2))
    m[1].bias.requires_grad = False                              # frozen ones count as well
    m[1].bias.data[1] = bad
    with pytest.raises(ValueError, match=r"model: parameter '1\.bias' holds 1 NaN/Inf values; "
                                         r"rnncore\.load refuses .*could not be loaded back"):
        save(m, tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_loads_refusal_of_an_array_names_the_file(saved):
    """Q1: load said "state['1.bias']: expected finite values" without naming the file."""
    _rewrite(saved, lambda a, m: _set(a, "1.bias", np.array([1.0, np.nan, 0], np.float32)))
    with pytest.raises(ValueError, match=rf"path: '{saved}': state\['1\.bias'\]: expected finite"):
        load(saved)


def test_a_save_that_cannot_write_names_the_users_path(tmp_path, monkeypatch):
    """A folder that cannot be written, a full disk: the OSError names ``path`` (it had named
    the internal temporary file, or no file at all), and a file already there is unchanged."""
    path = save(LSTM(3, 2), tmp_path / "m.npz")
    before = open(path, "rb").read()

    for owner, name, error, message in [
            (os, "open", PermissionError(13, "Permission denied"),
             r"path: cannot write a file in .* for '.*m\.npz' \(Permission denied\)"),
            (np, "savez", OSError(28, "No space left on device"),
             r"path: writing '.*m\.npz' failed \(No space left on device\); a file that was "
             r"there is unchanged")]:
        def fail(*a, _error=error, **k):
            raise _error
        with monkeypatch.context() as mp:
            mp.setattr(owner, name, fail)
            with pytest.raises(type(error), match=message):
                save(GRU(3, 2), path)
    assert os.listdir(tmp_path) == ["m.npz"] and open(path, "rb").read() == before


def test_save_takes_any_valid_file_name_and_keeps_what_the_file_was(tmp_path):
    """A 250-byte name (the temporary file's name had added 18 bytes: over the 255 limit); a
    replaced file keeps its permissions; a symbolic link stays one, its target replaced."""
    long = tmp_path / ("m" * 246 + ".npz")
    assert isinstance(load(save(GRU(3, 2), long)), GRU)
    path = save(LSTM(3, 2), tmp_path / "m.npz")
    if os.name != "posix":
        return
    os.chmod(path, 0o600)
    save(GRU(3, 2), path)
    assert os.stat(path).st_mode & 0o777 == 0o600 and isinstance(load(path), GRU)
    link = tmp_path / "latest.npz"
    os.symlink(path, link)
    save(RNN(3, 2), link)
    assert os.path.islink(link) and isinstance(load(path), RNN)
    assert sorted(os.listdir(tmp_path)) == sorted([long.name, "m.npz", "latest.npz"])


def test_pytorch_bias_errors_inside_a_container_name_the_callers_key():
    m = Sequential(LSTM(3, 4), Linear(4, 2))
    state = m.state_dict()
    del state["0.bias_l0"]
    state["0.bias_ih_l0"], state["0.bias_hh_l0"] = np.ones(16), np.ones(15)
    before = m.state_dict()
    with pytest.raises(ValueError, match=r"state\['0\.bias_hh_l0'\]: expected shape \(16,\), "
                                         r"got \(15,\)"):
        m.load_state_dict(state)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_a_replaced_private_file_is_never_readable_by_others_while_written(tmp_path, monkeypatch):
    if os.name != "posix":
        return
    path = save(LSTM(3, 2), tmp_path / "m.npz")
    os.chmod(path, 0o600)
    real, modes = np.savez, []

    def savez(f, **arrays):
        modes.append(os.fstat(f.fileno()).st_mode & 0o777)
        real(f, **arrays)
    monkeypatch.setattr(np, "savez", savez)
    save(GRU(3, 2), path)
    assert modes == [0o600] and os.stat(path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("how", ["stored", "deflated", "bzip2"])
def test_a_crafted_entry_size_is_refused_before_anything_is_built(tmp_path, how):
    # the zip directory's sizes are the file author's word: a claim of 256 GiB in a file of a
    # kilobyte must not size the architecture (it raised MemoryError, or allocated what fit)
    import io as _io
    import zipfile
    N = 2 ** 36                                           # Linear(1, N)

    def header(shape):
        b = _io.BytesIO()
        np.lib.format.write_array_header_1_0(b, {"descr": "<f4", "fortran_order": False,
                                                 "shape": shape})
        return b.getvalue()

    meta = {"format": 1, "model": {"class": "Linear", "dtype": "float32",
                                   "config": {"in_features": 1, "out_features": N},
                                   "children": []}}
    mb = _io.BytesIO()
    np.save(mb, np.array(json.dumps(meta)))
    method = dict(stored=zipfile.ZIP_STORED, deflated=zipfile.ZIP_DEFLATED,
                  bzip2=zipfile.ZIP_BZIP2)[how]
    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr(META_KEY + ".npy", mb.getvalue())
        for name, shape in (("weight.npy", (N, 1)), ("bias.npy", (N,))):
            z.writestr(name, header(shape) + b"\0" * 16)
            if how != "bzip2":
                z.filelist[-1].file_size = 4 * N + 128        # the claim
    with pytest.raises(ValueError, match="crafted"):
        load(path)


def test_a_compressed_file_of_numpys_still_loads(tmp_path):
    m = Sequential(LSTM(2, 4), Linear(4, 3))
    path = save(m, tmp_path / "m.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    m2 = load(tmp_path / "c.npz")
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and np.array_equal(a, b)
