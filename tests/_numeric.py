"""Central differences, the check every backward in the suite is held to (float64)."""
import numpy as np


def numeric_grad(f, a, eps=1e-4):
    """d f() / d a by the fourth-order central difference
    ``(8 (f(a+h) - f(a-h)) - (f(a+2h) - f(a-2h))) / 12h`` with step ``h = eps``, for the scalar
    ``f()``; ``a`` is perturbed in place, entry by entry, and restored.

    Its error is ~h^4 |f'''''| from the truncation plus ~eps_machine |f| / h from rounding:
    ~1e-12 of |f| at h = 1e-4 in float64. The two-point difference at h = 1e-6 (rnncore.gradcheck's
    default) rounds ~100x worse, ~1e-10 of |f|: enough to read a gradient of 1e-5 (a saturated
    unit's, say) as 1e-5 relatively wrong when the backward is right."""
    g = np.zeros(a.shape)
    for i in np.ndindex(a.shape):
        keep = a[i]
        val = {}
        for k in (-2, -1, 1, 2):
            a[i] = keep + k * eps
            val[k] = f()
        a[i] = keep
        g[i] = (8 * (val[1] - val[-1]) - (val[2] - val[-2])) / (12 * eps)
    return g


def rel_err(a, n, floor=1e-8):
    """The worst entry's error, relative to the larger array's largest entry (at least ``floor``)."""
    return np.abs(a - n).max() / max(np.abs(a).max(), np.abs(n).max(), floor)
