"""The kernels run with the CPU's flush-to-zero and denormals-are-zero modes (``kernels/_common``,
``flush_subnormals``): subnormal inputs read as 0, subnormal results are 0, and the caller's
thread (and Numba's worker threads) get their own setting back after every call."""

import numpy as np
import pytest
from numba import njit, prange

from kernels import _common, gru, lstm, rnn

x86_only = pytest.mark.skipif(not _common._X86, reason="FTZ/DAZ are x86-64 MXCSR bits")
TINY = np.float32(2.0 ** -140)                    # subnormal in float32
CELLS = {"lstm": (lstm.lstm_forward, lstm.lstm_backward, 4, 2),
         "gru": (gru.gru_forward, gru.gru_backward, 3, 1),
         "rnn": (rnn.rnn_forward, rnn.rnn_backward, 1, 1)}


def _weights(cell, I, H, rng):
    G = CELLS[cell][2]
    W = [(rng.standard_normal((G * H, K)) / np.sqrt(H)).astype(np.float32) for K in (I, H)]
    return W + [np.zeros(G * H, np.float32)] * (2 if cell == "gru" else 1)


@njit(parallel=True)
def _workers_flushing(n):
    """MXCSR's FTZ/DAZ bits in each of n prange iterations (Numba's worker threads)."""
    out = np.zeros(n, np.int64)
    for i in prange(n):
        out[i] = _common._mxcsr() & _common._MXCSR_FTZ_DAZ
    return out


@x86_only
@pytest.mark.parametrize("path", ["steps", "tiled"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_subnormal_inputs_read_as_zero_and_the_threads_get_their_mode_back(cell, path):
    forward, backward, _, n_states = CELLS[cell]
    rng = np.random.default_rng(0)
    T, B, I, H = 4, 8, 5, 64
    W = _weights(cell, I, H, rng)
    x = np.full((T, B, I), TINY)
    *_, cache = forward(x, *W, path=path)
    y = forward(x, *W, path=path)[0]
    assert not y.any()                            # x read as 0, biases 0: every output is 0
    dx = backward(np.full((T, B, H), TINY), *[None] * n_states, cache)[0]
    assert not dx.any()                           # dy read as 0
    # the caller's thread and Numba's workers compute subnormals again
    assert TINY * np.float32(0.5) != 0
    assert not _workers_flushing(64).any()


@x86_only
def test_a_gradient_vanishing_into_subnormals_is_flushed():
    """The case that costs in practice: the loss at the last step of a long sequence, its
    gradient shrinking step by step back in time. Float32 values below 2^-126 do not appear
    in dx (they are 0), and the rest agrees with the float64 run to float32 precision."""
    rng = np.random.default_rng(1)
    T, B, I, H = 300, 4, 3, 16
    W = [(rng.standard_normal((4 * H, K)) * 0.3).astype(np.float32) for K in (I, H)]
    b = np.zeros(4 * H, np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dh_n = np.ones((B, H), np.float32)
    dx = lstm.lstm_backward(None, dh_n, None, lstm.lstm_forward(x, *W, b, path="steps")[-1])[0]
    dx64 = lstm.lstm_backward(None, dh_n.astype(np.float64), None, lstm.lstm_forward(
        x.astype(np.float64), *(w.astype(np.float64) for w in W), b.astype(np.float64))[-1])[0]
    tiny = np.finfo(np.float32).tiny
    assert (np.abs(dx64) < tiny).any()            # the float64 gradient does vanish that far
    assert not ((dx != 0) & (np.abs(dx) < tiny)).any()
    np.testing.assert_allclose(dx, dx64, atol=1e-6 * np.abs(dx64).max(), rtol=1e-3)
