"""rnncore.trace: per-layer shapes of a real forward, and a model left exactly as it was."""

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnncore
from rnncore import (GRU, LSTM, RNN, Dropout, Embedding, LastStep, Linear, LogSoftMax,
                     Sequencer, Sequential, Tanh, trace)
from rnncore.summary import _rows as summary_rows
from rnncore.trace import TraceRow


def test_stacked_lstm_rows_and_table():
    x = np.zeros((5, 3, 2), np.float32)
    lines = []
    rows = trace(Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False)), x,
                 print_fn=lines.append)
    assert rows == [("0", "LSTM", (5, 3, 2), (5, 3, 64), 17152),
                    ("1", "LSTM", (5, 3, 64), (3, 32), 12416)]
    assert all(isinstance(r, TraceRow) for r in rows)
    assert rows[0].states == {"h_n": (1, 3, 64), "c_n": (1, 3, 64)}
    assert rows[1].states == {"h_n": (1, 3, 32), "c_n": (1, 3, 32)}
    path, kind, shape_in, shape_out, params = rows[1]             # unpacks as 5 fields
    assert (path, params) == ("1", 12416)
    assert lines[0].split() == ["Layer", "(type)", "Input", "shape", "Output", "shape", "Params",
                                "Final", "states"]
    assert lines[2].split() == ["0", "(LSTM)", "(5,", "3,", "2)", "(5,", "3,", "64)", "17152",
                                "h_n", "(1,", "3,", "64),", "c_n", "(1,", "3,", "64)"]
    assert lines[3].split()[5:8] == ["(3,", "32)", "12416"]
    assert lines[-1] == "Total params: 29568"


def test_states_column_shows_when_any_row_has_states():
    """A recurrent layer beside a Linear keeps its Final states column (the Linear's cell is
    empty); a layer given a list of steps reports the sequence's shape (T, B, F)."""
    x = np.zeros((5, 3, 2), np.float32)
    lines = []
    trace(Sequential(LSTM(2, 4), Linear(4, 3)), x, print_fn=lines.append)
    assert lines[0].split()[-2:] == ["Final", "states"]
    assert lines[2].endswith("h_n (1, 3, 4), c_n (1, 3, 4)")
    rows = trace(LSTM(2, 4), list(x), print_fn=None)
    assert rows[0].input_shape == (5, 3, 2) and rows[0].output_shape == (5, 3, 4)


def test_one_dimensional_shapes_print_as_tuples():
    lines = []
    assert Linear(3, 2).summary((3,), print_fn=lines.append) == 8
    assert any("(2,)" in line.split("Linear")[-1] for line in lines), lines


def test_module_docstring_example_is_the_real_output():
    lines = []
    trace(Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False)),
          np.zeros((5, 3, 2), np.float32), print_fn=lines.append)
    text = sys.modules["rnncore.trace"].__doc__       # rnncore.trace is the function
    for line in lines:
        assert "    " + line + "\n" in text, line


def test_containers_are_opened_and_states_shown():
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    m = Sequencer(Sequential(GRU(3, 5, num_layers=2, bidirectional=True), Linear(10, 4),
                             LogSoftMax()))
    rows = trace(m, list(x), lengths=np.array([4, 2]), print_fn=None)
    assert [(r.path, r.kind) for r in rows] == [("0.0", "GRU"), ("0.1", "Linear"),
                                                ("0.2", "LogSoftMax")]
    assert rows[0].input_shape == (4, 2, 3) and rows[0].output_shape == (4, 2, 10)
    assert rows[0].states == {"h_n": (4, 2, 5)}                     # (L*D, B, H)
    assert rows[1].states == {} and rows[1].params == 44
    one = trace(RNN(3, 2), x, print_fn=None)
    assert one == [("-", "RNN", (4, 2, 3), (4, 2, 2), 2 * 3 + 2 * 2 + 2)]


def test_token_ids_and_shared_modules():
    lin = Linear(4, 4)
    m = Sequential(Embedding(9, 4), lin, Tanh(), lin, LSTM(4, 2, return_sequences=False))
    rows = trace(m, np.zeros((6, 5), np.int64), print_fn=None)
    assert [r.path for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0][2:4] == ((6, 5), (6, 5, 4)) and rows[4].output_shape == (5, 2)
    assert [r.params for r in rows] == [36, 20, 0, 0, 56]      # the shared Linear counted once
    assert sum(r.params for r in rows) == sum(v.size for v in m.state_dict().values())
    lines = []
    assert m.summary((6, 5), print_fn=lines.append) == 112
    assert lines[5].split()[-4:] == ["0", "(shared", "with", "1)"]
    emb, out = Embedding(5, 4), Linear(4, 5)
    emb._params["weight"] = out.weight                         # tied: one weight, two layers
    tied = Sequential(emb, LSTM(4, 4), out)
    lines = []
    assert tied.summary((3, None), print_fn=lines.append) == sum(
        v.size for v in tied.state_dict().values()) == 169
    assert lines[4].split()[-4:] == ["5", "(shared", "with", "0)"]


class _Wrap(rnncore.Module):
    """A leaf of one's own that calls a module it holds."""

    def __init__(self, inner):
        super().__init__()
        self.inner = self._child(inner)

    def _forward(self, x, lengths):
        return self.inner.forward(x)

    def output_shape(self, input_shape):
        return self.inner.output_shape(input_shape)


def test_a_call_inside_a_recorded_one_is_part_of_its_row():
    lin = Linear(3, 3)
    m = Sequential(_Wrap(lin), Tanh(), lin)
    rows = trace(m, np.ones((2, 3), np.float32), print_fn=None)
    assert [(r.path, r.kind, r.params) for r in rows] == [("0", "_Wrap", 12), ("1", "Tanh", 0),
                                                          ("2", "Linear", 0)]
    assert [(r.path, r.kind, r.params) for r in rows] == \
        [(name, kind, n) for name, kind, _, n, _ in summary_rows(m, (2, 3))]


@given(cell=st.sampled_from([RNN, LSTM, GRU]), layers=st.integers(1, 3), bi=st.booleans(),
       seqs=st.booleans(), T=st.integers(1, 4), B=st.integers(1, 3), H=st.integers(1, 5))
def test_rows_agree_with_summary(cell, layers, bi, seqs, T, B, H):
    m = Sequential(cell(3, H, num_layers=layers, bidirectional=bi, return_sequences=seqs),
                   LastStep() if seqs else Tanh(), Linear((2 if bi else 1) * H, 2))
    rows = trace(m, np.ones((T, B, 3)), print_fn=None)
    expected = summary_rows(m, (T, B, 3))
    assert [(r.path, r.kind, r.output_shape, r.params) for r in rows] == \
        [(name, kind, out, n) for name, kind, out, n, _ in expected]
    assert rows[0].states["h_n"] == (layers * (2 if bi else 1), B, H)


def test_model_is_left_as_it_was():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 2)).astype(np.float32)
    gy = rng.standard_normal((3, 2)).astype(np.float32)

    def build():
        rnncore.manual_seed(0)
        return Sequential(LSTM(2, 4, num_layers=2, dropout=0.5), Dropout(0.5),
                          LSTM(4, 2, return_sequences=False))

    def step(m, with_trace):
        m.zero_grad_parameters()
        y = m.forward(x)                                         # training mode: dropout masks
        h_n = m[0].h_n
        if with_trace:
            state = rnncore.random.generator().bit_generator.state
            trace(m, np.ones((7, 1, 2)), print_fn=None)          # other T and B
            assert rnncore.random.generator().bit_generator.state == state
            assert m[0].h_n is h_n
            assert all(mod.train for mod in m.modules())
            assert all("forward" not in vars(mod) for mod in m.modules())
        m.backward(x, gy)                                        # pairs with the forward above
        return y, [p.grad.copy() for p in m.parameters()]

    y1, g1 = step(build(), False)
    y2, g2 = step(build(), True)
    assert np.array_equal(y1, y2) and all(np.array_equal(a, b) for a, b in zip(g1, g2))


def test_remembered_state_is_untouched():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 2, 2))

    def run(with_trace):
        rnncore.manual_seed(0)
        m = LSTM(2, 3).remember()
        m.forward(a)
        if with_trace:
            trace(m, np.ones((4, 2, 2)), print_fn=None)
        return m.forward(b)

    assert np.array_equal(run(False), run(True))


def test_errors_propagate_and_the_model_is_restored():
    m = Sequential(LSTM(2, 3), Dropout(0.3), Linear(3, 1))
    m[1].evaluate()
    with pytest.raises(ValueError, match="x: expected"):
        trace(m, np.ones((4, 2, 5)), print_fn=None)
    assert [mod.train for mod in m.modules()] == [True, True, False, True]
    assert all("forward" not in vars(mod) for mod in m.modules())
    with pytest.raises(TypeError, match="model"):
        trace(np.ones(3), np.ones((4, 2, 5)))
    with pytest.raises(TypeError, match="print_fn"):
        trace(m, np.ones((4, 2, 2)), print_fn="stdout")
