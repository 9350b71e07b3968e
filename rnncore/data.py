"""`pad_sequences`: a list of variable-length sequences -> one time-major batch and its lengths.

    >>> x, lengths = pad_sequences([np.ones((3, 2)), np.ones((5, 2))])
    >>> x.shape, lengths
    ((5, 2, 2), array([3, 5]))

Feed both to any sequence-aware call: ``model.forward(x, lengths=lengths)``.
"""

import math

import numpy as np

from . import _checks

__all__ = ["pad_sequences"]


def pad_sequences(sequences, dtype=None, maxlen=None, truncating="post"):
    """Stack ``B`` sequences of lengths ``T_i`` into a zero-padded time-major array.

    sequences: a non-empty list of arrays, all (T_i, F) (features) or all (T_i,) (integer ids
        for an `Embedding`), each with T_i >= 1
    dtype: the result's dtype; None keeps the sequences' common dtype (np.result_type, float16
        and longdouble read as float64, as every layer reads them; integers stay integers:
        signed and unsigned 64-bit ones give int64). Every value must lie in its range
        (ValueError otherwise: a cast would wrap or overflow it)
    maxlen: None (T = the longest T_i), or an int >= 1: T = maxlen, and a longer sequence is
        cut to its first maxlen steps (``truncating="post"``) or its last (``"pre"``)
    returns (x, lengths): x (T, B, F) or (T, B), zero at t >= lengths[b]; lengths (B,) int64,
        min(T_i, maxlen)

    Padding always follows each sequence's steps (Keras's ``padding="post"``): ``lengths``
    say where each one's valid prefix ends, and the padding's values change no output at a valid
    step, no final state and no gradient (zeros, for a readable array; they must still be
    finite: every layer checks its whole input).
    """
    if maxlen is not None:
        maxlen = _checks.positive_int(maxlen, "maxlen")
    if not isinstance(truncating, str) or truncating not in ("post", "pre"):
        raise ValueError(f"truncating: expected 'post' (keep the first maxlen steps) or 'pre' "
                         f"(the last), got {truncating!r}")
    if isinstance(sequences, np.ndarray) or not hasattr(sequences, "__len__"):
        raise TypeError(f"sequences: expected a list of (T_i, F) or (T_i,) arrays, "
                        f"got {type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("sequences: expected a non-empty list of arrays, got an empty list")
    seqs = [_checks.finite_array(s, f"sequences[{b}]") for b, s in enumerate(sequences)]
    for b, s in enumerate(seqs):
        if s.ndim not in (1, 2) or s.shape[0] == 0 or (s.ndim == 2 and s.shape[1] == 0):
            raise ValueError(f"sequences[{b}]: expected a non-empty (T_i, F) or (T_i,) array, "
                             f"got shape {s.shape}")
    tails = sorted({s.shape[1:] for s in seqs})
    if len(tails) != 1:
        raise ValueError(f"sequences: expected every sequence to have the same trailing shape, "
                         f"got {[s.shape for s in seqs]}")
    if dtype is None:
        dtype = np.result_type(*seqs)
        if dtype.kind == "f" and all(s.dtype.kind in "iu" for s in seqs):
            dtype = np.dtype(np.int64)       # (NumPy's int64 with uint64 is float64: ids stay ids)
    else:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype: expected a NumPy dtype, got {dtype!r}") from None
    if dtype.kind not in "fiu":
        raise TypeError(f"dtype: expected a float or integer dtype, got {dtype}")
    if dtype.kind in "iu":
        for b, s in enumerate(seqs):
            if s.dtype.kind == "f":
                raise TypeError(f"sequences[{b}]: expected integers for an integer dtype {dtype}, "
                                f"got dtype {s.dtype}")
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    low, high = (float(info.min), float(info.max)) if dtype.kind == "f" else (info.min, info.max)
    for b, s in enumerate(seqs):                 # (the copy into x would wrap or overflow them)
        lo, hi = s.min().item(), s.max().item()
        if lo < low or hi > high:
            raise ValueError(f"sequences[{b}]: expected values in [{info.min!s}, {info.max!s}] "
                             f"(the range of dtype {dtype}), got min {lo}, max {hi}")
    if maxlen is not None:
        seqs = [s[:maxlen] if truncating == "post" else s[-maxlen:] for s in seqs]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)    # (B,)
    T = int(lengths.max()) if maxlen is None else maxlen
    _checks.fits_in_memory(T * len(seqs) * math.prod(tails[0]), dtype,
                           f"{f'maxlen={maxlen}' if maxlen else 'sequences'} (pad_sequences: "
                           f"{len(seqs)} sequences padded to T={T})")
    x = np.zeros((T, len(seqs)) + tails[0], dtype=dtype)           # (T, B, F) or (T, B)
    for b, s in enumerate(seqs):
        x[:len(s), b] = s
    return x, lengths
