"""Small helpers shared by the fast CPU kernels (``lstm.py``, ``gru.py``, ``rnn.py``).

Shape key: T = time steps, B = batch, I = input features, H = hidden units, K = any width.

Two kinds of helpers live here:

* Numba-compiled scalar/array helpers used *inside* ``@njit`` cores:
  ``sigmoid`` (numerically stable logistic) and ``flip_valid`` (the time flip that turns a
  ``reverse=True`` run into a forward-in-time one).
* Plain-Python argument preparation used by the kernels' Python wrappers *before* a core is
  called: ``as_float_array``, ``as_lengths``, ``state_or_zeros``. They make every array
  C-contiguous in one dtype, so the ``@njit`` cores are compiled for exactly two signatures
  (float32, float64) and ``np.dot`` inside them never copies; and they turn bad input into a
  ``ValueError``/``TypeError`` that names the argument instead of a Numba typing error.

"Step order": a ``reverse=True`` layer runs sequence ``b`` from its last valid step
``lengths[b] - 1`` back to 0. Flipping each sequence's valid prefix in time,

    x_s[s, b] = x[lengths[b] - 1 - s, b]    for s < lengths[b]      (padding stays in place)

turns that into an ordinary forward-in-time run over ``x_s``; in step order, step ``s`` of
sequence ``b`` is valid exactly when ``s < lengths[b]``, for both directions. The flip is its
own inverse, so the same function gathers inputs into step order and scatters results back.
"""

import math

import numpy as np
from numba import njit

__all__ = ["sigmoid", "flip_valid", "as_float_array", "as_lengths", "state_or_zeros"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True)
def sigmoid(z):
    """Logistic ``1 / (1 + exp(-z))`` of a scalar, stable for any ``z``.

    Only ``exp(-|z|) <= 1`` is ever evaluated, so nothing overflows: for ``z >= 0`` it returns
    ``1 / (1 + e)``, for ``z < 0`` the equal ``e / (1 + e)``, which keeps full relative
    precision for very negative ``z`` (where ``1 - 1/(1 + e)`` would round to 0).
    Same dtype in and out: a bare literal ``1`` would promote float32 to float64 in Numba, so
    the constant is made in ``z``'s own type.
    """
    one = type(z)(1)
    e = math.exp(-abs(z))
    s = one / (one + e)
    return s if z >= 0 else e * s


@njit(cache=True)
def flip_valid(a, lengths, out):
    """Reverse each sequence's valid prefix in time: ``out[s, b] = a[lengths[b] - 1 - s, b]``.

    a, out: (T, B, K) C-contiguous, distinct arrays   lengths: (B,) int64, 1 <= lengths[b] <= T
    Padding steps ``s >= lengths[b]`` are copied unchanged. Applying it twice is the identity,
    so it both gathers into step order and scatters back. Returns ``out``.
    """
    T, B, K = a.shape
    for b in range(B):
        L = lengths[b]
        for s in range(T):
            t = L - 1 - s if s < L else s
            for k in range(K):
                out[s, b, k] = a[t, b, k]
    return out


# ---------------------------------------------------------------------------------------------
# Argument preparation (plain Python, called by the kernels' wrappers before any core runs)
# ---------------------------------------------------------------------------------------------

def as_float_array(a, name, dtype=None, shape=None):
    """``a`` as a C-contiguous float32/float64 array (no copy when it already is one).

    dtype None: keep ``a``'s own floating dtype (TypeError if it is not float32/float64);
    otherwise cast to ``dtype`` (the dtype of ``x``: one kernel call runs in one precision).
    shape: the expected shape, a tuple; ValueError naming ``name`` if it differs.
    """
    arr = np.asarray(a)
    if dtype is None:
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
        dtype = arr.dtype
    elif not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real array, got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def as_lengths(lengths, T, B):
    """Sequence lengths as a C-contiguous int64 array of shape (B,); None means all T.

    ValueError naming ``lengths`` unless every entry is an integer with 1 <= lengths[b] <= T.
    """
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    arr = np.asarray(lengths)
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if B and (arr.min() < 1 or arr.max() > T):
        raise ValueError(f"lengths: expected 1 <= lengths[b] <= T={T}, got min {arr.min()}, "
                         f"max {arr.max()}")
    return arr


def state_or_zeros(a, shape, dtype, name):
    """A FRESH C-contiguous array of ``shape`` and ``dtype``: a copy of ``a``, or zeros if None.

    Used for initial states and upstream gradients; the copy lets a core update it in place
    without touching the caller's array.
    """
    if a is None:
        return np.zeros(shape, dtype)
    return as_float_array(a, name, dtype, shape).copy()
