"""``clear_state()``: what a forward kept for backward goes, nothing else does.

The memory check walks everything a model's attributes reach and adds up the NumPy bytes, so
a cache left behind anywhere (a child's input in a container, a layer's gates) shows.
"""

import numpy as np
import pytest

import kernels
from rnncore import (GRU, LSTM, RNN, Dropout, LastStep, Linear, LogSoftMax, Module, Sequencer,
                     Sequential, Tanh, manual_seed)


def reachable_bytes(root):
    """NumPy bytes reachable from ``root``'s attributes (each memory block once)."""
    seen, blocks, todo = set(), {}, [root]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            base = o
            while isinstance(base.base, np.ndarray):
                base = base.base
            blocks[id(base)] = base.nbytes
        elif isinstance(o, dict):
            todo.extend(o.values())
        elif isinstance(o, (list, tuple)):
            todo.extend(o)
        elif hasattr(o, "__dict__"):
            todo.extend(vars(o).values())
        elif hasattr(o, "__slots__"):
            todo.extend(getattr(o, s) for s in o.__slots__ if hasattr(o, s))
    return sum(blocks.values())


def model(seed=0):
    manual_seed(seed)
    return Sequential(
        Sequencer(Sequential(LSTM(3, 8, num_layers=2, bidirectional=True), Dropout(0.2),
                             GRU(16, 6), RNN(6, 5), Tanh(), Linear(5, 4), LogSoftMax())),
        LastStep())


def owned_bytes(m):
    """Parameters and their grads: what a model holds before any forward."""
    return sum(p.data.nbytes + p.grad.nbytes for p in m.parameters())


X = np.random.default_rng(1).standard_normal((40, 16, 3)).astype(np.float32)
LENGTHS = np.array([40, 7] * 8)


@pytest.mark.parametrize("mode", ["training", "evaluate"])
def test_clear_state_drops_what_forward_kept(mode):
    m = getattr(model(), mode)()
    m.forward(X, lengths=LENGTHS)
    after_forward = reachable_bytes(m)
    assert m.clear_state() is m
    cleared = reachable_bytes(m)
    # What stays: parameters, grads and the small per-layer leftovers (final states, masks).
    assert cleared - owned_bytes(m) < 8_000, (after_forward, cleared, owned_bytes(m))
    assert after_forward - cleared > 200_000          # the caches were most of it
    with pytest.raises(RuntimeError, match="call forward first"):
        m.backward(X, np.ones((16, 4), np.float32))


def test_every_module_with_a_backward_cache_clears_it():
    """Each module that refuses a backward without a forward also refuses it after clear_state."""
    x = np.random.default_rng(2).standard_normal((4, 3, 5))
    for m in [LSTM(5, 4), GRU(5, 4, bidirectional=True), RNN(5, 4, num_layers=2), Tanh(),
              LogSoftMax(), Dropout(0.5), Sequencer(Linear(5, 2)), LastStep(),
              Sequential(Linear(5, 5), Tanh())]:
        m.forward(x)
        gy = np.ones_like(np.asarray(m.forward(x)))
        m.backward(x, gy)                             # works after a forward
        m.clear_state()
        with pytest.raises(RuntimeError, match="call forward first"):
            m.backward(x, gy)
        m.forward(x)
        m.backward(x, gy)                             # and again after the next one


def test_gradients_after_clear_state_are_a_fresh_models():
    """Nothing a training step needs is lost: clear, forward again, and the grads are those of
    a model that never cleared."""
    a, b = model(), model()
    for m in (a, b):
        m.forward(X, lengths=LENGTHS)
    a.clear_state()
    gy = np.random.default_rng(3).standard_normal((16, 4)).astype(np.float32)
    outs = []
    for m in (a, b):
        m.zero_grad_parameters()
        manual_seed(5)                                # the same dropout masks in both
        y = m.forward(X, lengths=LENGTHS)
        m.backward(X, gy)
        outs.append((y, [p.grad.copy() for p in m.parameters()]))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    for ga, gb in zip(outs[0][1], outs[1][1]):
        np.testing.assert_array_equal(ga, gb)


def test_final_and_remembered_states_stay():
    a, b = LSTM(3, 6).remember(), LSTM(3, 6).remember()
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.forward(X[:10])
    h_n, c_n = a.h_n.copy(), a.c_n.copy()
    a.clear_state()
    np.testing.assert_array_equal(a.h_n, h_n)
    np.testing.assert_array_equal(a.c_n, c_n)
    # the next chunk of the stream starts from the remembered state, as without clearing
    np.testing.assert_array_equal(a.forward(X[10:20]), b.forward(X[10:20]))


def test_cleared_buffers_go_back_to_the_pool():
    """The kernels' buffers a cache held are free again: release_workspace() can drop them."""
    from kernels import _workspace
    kernels.release_workspace()
    m = LSTM(3, 64).evaluate()
    m.forward(np.ones((200, 32, 3), np.float32))
    kept = kernels.release_workspace()            # the cache's buffers are in use: kept
    assert kept > 200 * 32 * 4 * 64 * 4           # (at least the gates, 6.5 MB)
    m.clear_state()
    assert kernels.release_workspace() == 0
    assert _workspace.pooled_bytes() == (0, 0)


def test_a_module_of_ones_own_names_its_own_cache():
    class Square(Module):
        _kept_for_backward = ("_x",)

        def __init__(self):
            super().__init__()
            self._x = None

        def _forward(self, x, lengths):
            self._x = x
            return x * x

        def _backward(self, x, gy):
            if self._x is None:
                raise RuntimeError("Square.backward: call forward first")
            return 2 * self._x * gy

    s = Sequential(Linear(2, 2), Square())
    x = np.ones((3, 2), np.float32)
    s.forward(x)
    s.clear_state()
    assert s[1]._x is None
