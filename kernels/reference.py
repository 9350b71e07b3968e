"""Plain NumPy RNN, LSTM and GRU: forward and backpropagation through time, one step at a time.

This file is the readable truth of the project. Every fast kernel (``kernels/lstm.py``,
``kernels/gru.py``, ``kernels/rnn.py``, ``kernels/cuda/``) takes the same arguments (the CPU
forwards and every CUDA kernel add an optional ``path=``) and is tested against these
functions. Nothing here is tuned for speed. The arguments are checked as the fast kernels check
them (``_common``'s helpers, the same errors): every array is used in x's dtype (float32 or
float64).

Shape key, used in every docstring and comment:

    T = time steps, B = batch, I = input features, H = hidden units

Layout and conventions (the same as PyTorch's ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``):

* sequences are time-major: ``x`` is ``(T, B, I)``, the output ``y`` is ``(T, B, H)``;
* the equations are written per sequence with column vectors (``W_ih x_t``); the code holds the
  batch as rows, so ``W x`` is ``x @ W.T``, and its gradients are ``da @ W`` (for x) and
  ``da.T @ x`` (for W);
* gates are stacked along the first axis of the weights, in PyTorch's order:
  LSTM ``i, f, g, o`` (``4H`` rows), GRU ``r, z, n`` (``3H`` rows);
* ``lengths`` (``(B,)`` ints, ``1 <= lengths[b] <= T``, or ``None`` for all ``T``): steps
  ``t >= lengths[b]`` are padding. They leave sequence ``b``'s state untouched, their output is 0,
  and they receive no gradient. Final states are each sequence's state after its own last step;
* ``reverse=True`` runs each sequence from its own last valid step ``lengths[b] - 1`` back to 0
  (the backward half of a bidirectional layer). Its output for time ``t`` is written at ``y[t]``
  (not in the order the steps ran), so ``y[0]`` holds its last step and ``h_n`` equals ``y[0]``;
* every ``*_forward`` returns ``(outputs..., cache)`` and the paired ``*_backward`` takes the
  upstream gradients and that cache and returns fresh gradient arrays (the caller accumulates).
  ``None`` for an initial state means zeros; ``None`` for an upstream gradient means zeros.

The one trick that keeps the step loops simple is the padding mask ``m`` (``(B, 1)``, 1 where
step ``t`` is valid for that sequence):

    h_t = m * h_new + (1 - m) * h_{t-1}        the state is frozen over padding
    y_t = m * h_new                             padding outputs are zero

computed as selections (``np.where(m, h_new, h_prev)``), not products, and with the padding
steps of ``x`` and ``dy`` read as zeros: a NaN or Inf on the side not taken (a padding value,
a state that is not carried) cannot reach a result through ``0 * NaN``.

The other is that ``reverse`` is done by flipping each sequence's valid prefix in time
(``flip_valid``), running the forward-in-time recurrence, and flipping the result back.

In the backward functions a name ``dv`` is dL/dv, the gradient of the loss L with respect to
``v``. The RNN's ``da`` and the LSTM's ``dz`` are grads of pre-activations (what goes into tanh
or sig); in the GRU, z is the update gate and ``dz`` the grad of its value.
"""

import numpy as np

from ._common import as_flag, as_float_array, as_lengths, bad_cache, state_or_zeros

__all__ = [
    "sigmoid", "flip_valid",
    "rnn_forward", "rnn_backward",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
]


def sigmoid(z):
    """Numerically stable logistic function: never evaluates exp of a large positive number."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def flip_valid(a, lengths):
    """Reverse each sequence's valid prefix in time: ``out[t, b] = a[lengths[b] - 1 - t, b]``.

    ``a`` is ``(T, B, ...)``. Padding steps stay where they are. Applying it twice is the identity.
    """
    out = a.copy()
    for b, L in enumerate(lengths):
        out[:L, b] = a[:L, b][::-1]
    return out


def _check(x, W_ih, W_hh, biases, gates, lengths, reverse):
    """A forward's arguments, checked and converted as the fast kernels do it: x a float32 or
    float64 (T, B, I) array; the weights and ``biases`` ({name: array}) in its dtype, shaped for
    ``gates`` gates; lengths as int64 (B,) (all T for None); reverse a bool."""
    x = as_float_array(x, "x")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x: expected a (T, B, I) array with T, B, I >= 1, got shape {x.shape}")
    T, B, I = x.shape
    W_hh = as_float_array(W_hh, "W_hh", x.dtype)
    if W_hh.ndim != 2 or W_hh.shape[0] != gates * W_hh.shape[1] or W_hh.size == 0:
        G = "" if gates == 1 else gates
        raise ValueError(f"W_hh: expected a ({G}H, H) array with H >= 1, got shape {W_hh.shape}")
    W_ih = as_float_array(W_ih, "W_ih", x.dtype, (W_hh.shape[0], I))
    biases = [as_float_array(b, name, x.dtype, (W_hh.shape[0],)) for name, b in biases.items()]
    return (x, W_ih, W_hh, *biases, as_lengths(lengths, T, B), as_flag(reverse, "reverse"))


def _check_cache(cache, forward, gates, size):
    """``cache`` if ``forward`` made it (its length, x, W_hh and mask), else the TypeError the
    fast kernels raise: (x, W_ih, W_hh, lengths, reverse, mask, ...) with mask (T, B, 1)."""
    ours = type(cache) is tuple and len(cache) == size
    x, W_hh, mask = (cache[0], cache[2], cache[5]) if ours else (None, None, None)
    if not (isinstance(x, np.ndarray) and isinstance(W_hh, np.ndarray) and x.ndim == 3
            and isinstance(mask, np.ndarray) and mask.shape == x.shape[:2] + (1,)
            and W_hh.ndim == 2 and W_hh.shape[0] == gates * W_hh.shape[1]):
        raise bad_cache(cache, forward)
    return cache


def _prepare(x, lengths, reverse):
    """Shared set-up: the per-step mask and the time flip."""
    T = x.shape[0]
    if reverse:
        x = flip_valid(x, lengths)
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(x.dtype)[:, :, None]  # (T, B, 1)
    return np.where(mask > 0, x, 0), mask                # padding steps read as zeros


# ---------------------------------------------------------------------------------------------
# RNN (Elman, tanh; one bias, b = PyTorch's bias_ih + bias_hh)
#
#   a_t = W_ih x_t + W_hh h_{t-1} + b           (1)
#   h_t = tanh(a_t)                             (2)
# ---------------------------------------------------------------------------------------------

def rnn_forward(x, W_ih, W_hh, b, h0=None, lengths=None, reverse=False):
    """Tanh RNN over a whole sequence.

    x: (T, B, I)   W_ih: (H, I)   W_hh: (H, H)   b: (H,)   h0: (B, H) or None
    returns y: (T, B, H), h_n: (B, H), cache
    """
    x, W_ih, W_hh, b, lengths, reverse = _check(x, W_ih, W_hh, {"b": b}, 1, lengths, reverse)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    x, mask = _prepare(x, lengths, reverse)
    h = state_or_zeros(h0, (B, H), x.dtype, "h0")
    hs = np.zeros((T + 1, B, H), x.dtype)        # hs[t] is the state *before* step t
    hs[0] = h
    y = np.zeros((T, B, H), x.dtype)
    for t in range(T):
        m = mask[t]
        h_new = np.tanh(x[t] @ W_ih.T + h @ W_hh.T + b)     # (1), (2)
        y[t] = np.where(m, h_new, 0)
        h = np.where(m, h_new, h)
        hs[t + 1] = h
    cache = (x, W_ih, W_hh, lengths, reverse, mask, hs, y)   # y before any flip: step order
    if reverse:
        y = flip_valid(y, lengths)
    return y, h, cache


def rnn_backward(dy, dh_n, cache):
    """Gradients of a tanh RNN. dy: (T, B, H) or None; dh_n: (B, H) or None.

    returns dx: (T, B, I), dW_ih: (H, I), dW_hh: (H, H), db: (H,), dh0: (B, H)
    """
    x, W_ih, W_hh, lengths, reverse, mask, hs, y_fwd = _check_cache(cache, "rnn_forward", 1, 8)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    dy = state_or_zeros(dy, (T, B, H), x.dtype, "dy")
    dy = flip_valid(dy, lengths) if reverse else dy
    # dh: the part of dL/dh_t that comes from step t+1 (the fast kernels' dh_next, the
    # docstrings' dh'_t); dh_new below is all of dL/dh_t at a valid step (the kernels' dh_s)
    dh = state_or_zeros(dh_n, (B, H), x.dtype, "dh_n")
    dx = np.zeros_like(x)
    dW_ih, dW_hh, db = np.zeros_like(W_ih), np.zeros_like(W_hh), np.zeros(H, x.dtype)
    for t in reversed(range(T)):
        m = mask[t]
        y_t = y_fwd[t]                                    # m tanh(a_t); where m = 0, dh_new is 0
        # forward's masking: y_t = m h_new and h_t = m h_new + (1 - m) h_{t-1}
        dh_new = np.where(m, dy[t] + dh, 0)
        da = dh_new * (1 - y_t * y_t)                     # (2): tanh' = 1 - tanh^2
        dx[t] = da @ W_ih                                 # (1)
        dW_ih += da.T @ x[t]                              # (1)
        dW_hh += da.T @ hs[t]                             # (1)
        db += da.sum(0)                                   # (1)
        dh = np.where(m, 0, dh) + da @ W_hh               # (1) and the frozen-state path
    if reverse:
        dx = flip_valid(dx, lengths)
    return dx, dW_ih, dW_hh, db, dh


# ---------------------------------------------------------------------------------------------
# LSTM (PyTorch gate order i, f, g, o; one bias, b = PyTorch's bias_ih + bias_hh)
#
#   z_t = W_ih x_t + W_hh h_{t-1} + b                 (1)   (4H), split into z_i z_f z_g z_o
#   i = sig(z_i)   f = sig(z_f)   g = tanh(z_g)   o = sig(z_o)   (2)
#   c_t = f * c_{t-1} + i * g                         (3)
#   h_t = o * tanh(c_t)                               (4)
# ---------------------------------------------------------------------------------------------

def lstm_forward(x, W_ih, W_hh, b, h0=None, c0=None, lengths=None, reverse=False):
    """LSTM over a whole sequence.

    x: (T, B, I)   W_ih: (4H, I)   W_hh: (4H, H)   b: (4H,)   h0, c0: (B, H) or None
    returns y: (T, B, H), h_n: (B, H), c_n: (B, H), cache
    """
    x, W_ih, W_hh, b, lengths, reverse = _check(x, W_ih, W_hh, {"b": b}, 4, lengths, reverse)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    x, mask = _prepare(x, lengths, reverse)
    h = state_or_zeros(h0, (B, H), x.dtype, "h0")
    c = state_or_zeros(c0, (B, H), x.dtype, "c0")
    hs = np.zeros((T + 1, B, H), x.dtype); hs[0] = h     # state before step t
    cs = np.zeros((T + 1, B, H), x.dtype); cs[0] = c
    gates = np.zeros((T, B, 4 * H), x.dtype)             # activated i, f, g, o
    y = np.zeros((T, B, H), x.dtype)
    for t in range(T):
        m = mask[t]
        z = x[t] @ W_ih.T + h @ W_hh.T + b                 # (1)
        i, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])   # (2)
        g, o = np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        c_new = f * c + i * g                              # (3)
        h_new = o * np.tanh(c_new)                         # (4)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        y[t] = np.where(m, h_new, 0)
        h = np.where(m, h_new, h)
        c = np.where(m, c_new, c)
        hs[t + 1], cs[t + 1] = h, c
    if reverse:
        y = flip_valid(y, lengths)
    cache = (x, W_ih, W_hh, lengths, reverse, mask, hs, cs, gates)
    return y, h, c, cache


def lstm_backward(dy, dh_n, dc_n, cache):
    """Gradients of an LSTM. dy: (T, B, H) or None; dh_n, dc_n: (B, H) or None.

    returns dx: (T, B, I), dW_ih: (4H, I), dW_hh: (4H, H), db: (4H,), dh0: (B, H), dc0: (B, H)
    """
    x, W_ih, W_hh, lengths, reverse, mask, hs, cs, gates = _check_cache(cache, "lstm_forward", 4, 9)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    dy = state_or_zeros(dy, (T, B, H), x.dtype, "dy")
    dy = flip_valid(dy, lengths) if reverse else dy
    # dh, dc: the parts of dL/dh_t, dL/dc_t that come from step t+1 (the docstrings' dh'_t,
    # dc'_t); dh_new, dc_new below: all of dL/dh_t, dL/dc_t at a valid step (the kernels' dh_s,
    # dc_s), the grads of the step's h_new and c_new
    dh = state_or_zeros(dh_n, (B, H), x.dtype, "dh_n")
    dc = state_or_zeros(dc_n, (B, H), x.dtype, "dc_n")
    dx = np.zeros_like(x)
    dW_ih, dW_hh, db = np.zeros_like(W_ih), np.zeros_like(W_hh), np.zeros(4 * H, x.dtype)
    for t in reversed(range(T)):
        m = mask[t]
        i, f, g, o = (gates[t][:, k * H:(k + 1) * H] for k in range(4))
        c_prev = cs[t]
        c_new = f * c_prev + i * g                         # recomputed from saved gates, (3)
        tanh_c = np.tanh(c_new)
        dh_new = np.where(m, dy[t] + dh, 0)                # masking, as in the RNN
        dc_new = np.where(m, dc, 0)
        do = dh_new * tanh_c                               # (4)
        dc_new = dc_new + dh_new * o * (1 - tanh_c ** 2)   # (4)
        di, dg, df = dc_new * g, dc_new * i, dc_new * c_prev   # (3)
        dz = np.concatenate([di * i * (1 - i),             # (2): sig' = s (1 - s)
                             df * f * (1 - f),
                             dg * (1 - g * g),              # (2): tanh' = 1 - tanh^2
                             do * o * (1 - o)], axis=1)
        dx[t] = dz @ W_ih                                  # (1)
        dW_ih += dz.T @ x[t]                               # (1)
        dW_hh += dz.T @ hs[t]                              # (1)
        db += dz.sum(0)                                    # (1)
        dh = np.where(m, 0, dh) + dz @ W_hh                # (1) and the frozen-state path
        dc = np.where(m, 0, dc) + dc_new * f               # (3)
    if reverse:
        dx = flip_valid(dx, lengths)
    return dx, dW_ih, dW_hh, db, dh, dc


# ---------------------------------------------------------------------------------------------
# GRU (PyTorch / cuDNN "reset_after" form: r multiplies W_hn h + b_hn after the product;
# gate order r, z, n; two biases)
#
#   r = sig(W_ir x + b_ir + W_hr h + b_hr)            (1)
#   z = sig(W_iz x + b_iz + W_hz h + b_hz)            (2)
#   q = W_hn h + b_hn                                 (3)   the recurrent part of the n gate
#   n = tanh(W_in x + b_in + r * q)                   (4)
#   h_t = (1 - z) * n + z * h_{t-1}                   (5)
# ---------------------------------------------------------------------------------------------

def gru_forward(x, W_ih, W_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False):
    """GRU over a whole sequence.

    x: (T, B, I)   W_ih: (3H, I)   W_hh: (3H, H)   b_ih, b_hh: (3H,)   h0: (B, H) or None
    returns y: (T, B, H), h_n: (B, H), cache
    """
    x, W_ih, W_hh, b_ih, b_hh, lengths, reverse = _check(
        x, W_ih, W_hh, {"b_ih": b_ih, "b_hh": b_hh}, 3, lengths, reverse)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    x, mask = _prepare(x, lengths, reverse)
    h = state_or_zeros(h0, (B, H), x.dtype, "h0")
    hs = np.zeros((T + 1, B, H), x.dtype); hs[0] = h
    gates = np.zeros((T, B, 4 * H), x.dtype)             # r, z, n and q = W_hn h + b_hn
    y = np.zeros((T, B, H), x.dtype)
    for t in range(T):
        m = mask[t]
        gi = x[t] @ W_ih.T + b_ih                          # input part of (1), (2), (4)
        gh = h @ W_hh.T + b_hh                             # hidden part of (1), (2), (3)
        r = sigmoid(gi[:, :H] + gh[:, :H])                 # (1)
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])       # (2)
        q = gh[:, 2 * H:]                                  # (3)
        n = np.tanh(gi[:, 2 * H:] + r * q)                 # (4)
        h_new = (1 - z) * n + z * h                        # (5)
        gates[t] = np.concatenate([r, z, n, q], axis=1)
        y[t] = np.where(m, h_new, 0)
        h = np.where(m, h_new, h)
        hs[t + 1] = h
    if reverse:
        y = flip_valid(y, lengths)
    cache = (x, W_ih, W_hh, lengths, reverse, mask, hs, gates)
    return y, h, cache


def gru_backward(dy, dh_n, cache):
    """Gradients of a GRU. dy: (T, B, H) or None; dh_n: (B, H) or None.

    returns dx: (T, B, I), dW_ih: (3H, I), dW_hh: (3H, H), db_ih: (3H,), db_hh: (3H,), dh0: (B, H)
    """
    x, W_ih, W_hh, lengths, reverse, mask, hs, gates = _check_cache(cache, "gru_forward", 3, 8)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    dy = state_or_zeros(dy, (T, B, H), x.dtype, "dy")
    dy = flip_valid(dy, lengths) if reverse else dy
    dh = state_or_zeros(dh_n, (B, H), x.dtype, "dh_n")
    dx = np.zeros_like(x)
    dW_ih, dW_hh = np.zeros_like(W_ih), np.zeros_like(W_hh)
    db_ih, db_hh = np.zeros(3 * H, x.dtype), np.zeros(3 * H, x.dtype)
    for t in reversed(range(T)):
        m = mask[t]
        r, z, n, q = (gates[t][:, k * H:(k + 1) * H] for k in range(4))
        h_prev = hs[t]
        dh_new = np.where(m, dy[t] + dh, 0)                # masking, as in the RNN
        dn = dh_new * (1 - z)                              # (5)
        # dz = dL/dz, z the update gate (a post-activation, unlike the LSTM's dz)
        dz = dh_new * (h_prev - n)                         # (5)
        dan = dn * (1 - n * n)                             # (4): tanh'
        dar = dan * q * r * (1 - r)                        # (4) then (1): sig'; dL/d(r's pre-act.)
        daz = dz * z * (1 - z)                             # (2): sig'; dL/d(z's pre-activation)
        dq = dan * r                                       # (4)
        dgi = np.concatenate([dar, daz, dan], axis=1)      # grads of the input pre-activations
        dgh = np.concatenate([dar, daz, dq], axis=1)       # grads of the hidden pre-activations
        dx[t] = dgi @ W_ih                                 # (1), (2), (4)
        dW_ih += dgi.T @ x[t]                              # (1), (2), (4)
        db_ih += dgi.sum(0)                                # (1), (2), (4)
        dW_hh += dgh.T @ h_prev                            # (1), (2), (3)
        db_hh += dgh.sum(0)                                # (1), (2), (3)
        dh = np.where(m, 0, dh) + dh_new * z + dgh @ W_hh  # frozen path, (5), (1)-(3)
    if reverse:
        dx = flip_valid(dx, lengths)
    return dx, dW_ih, dW_hh, db_ih, db_hh, dh
