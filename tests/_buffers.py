"""A caller may refill its own input array between forward and backward: the backward must
give what it gives without the refill (the module keeps what it needs, not the caller's array)."""
import numpy as np


def assert_backward_ignores_a_refilled_input(m, x, gy):
    """``m.backward`` after ``m.forward(buf)`` and a refill of ``buf`` gives the same dx and
    parameter grads as after ``m.forward(x)``, for ``buf`` a copy of ``x``."""
    m.zero_grad_parameters()
    m.forward(x)
    gx = m.backward(x, gy)
    grads = [p.grad.copy() for p in m.parameters()]
    m.zero_grad_parameters()
    buf = x.copy()
    m.forward(buf)
    buf[...] = 0.0
    np.testing.assert_array_equal(m.backward(x, gy), gx)
    for p, g in zip(m.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)
