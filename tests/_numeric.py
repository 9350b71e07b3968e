"""Central differences, the check every backward in the suite is held to (float64)."""
import numpy as np


def numeric_grad(f, a, eps=1e-6):
    """d f() / d a by central differences, for the scalar ``f()``; ``a`` is perturbed in place,
    entry by entry, and restored."""
    g = np.zeros(a.shape)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + eps
        up = f()
        a[i] = keep - eps
        down = f()
        a[i] = keep
        g[i] = (up - down) / (2 * eps)
    return g


def rel_err(a, n, floor=1e-8):
    """The worst entry's error, relative to the larger array's largest entry (at least ``floor``)."""
    return np.abs(a - n).max() / max(np.abs(a).max(), np.abs(n).max(), floor)
