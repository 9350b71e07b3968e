"""The demos behind ``python -m rnncore demo NAME``.

Each demo is a module with ``run(seed=0, epochs=None, hidden=None, quick=False, progress=True,
save=None, plot=None, print_fn=print) -> dict``: it prints what it does and returns the numbers
it printed, so that tests (and curious users) can check them.

* `functions` - the line / parabola / sqrt classifier: a Lua Torch script ported line for
  line, why it did not learn the real task, and the recipe that does (>= 95 % accuracy).
* `regression` - which of an LSTM's per-step outputs is the prediction, and what ``h_n`` and
  a bidirectional layer's ``output[-1]`` hold.
* `stacked` - shapes through stacked / bidirectional / GRU / RNN layers, and each parameter
  count from its formula (17152 = 4*64*(2+64) + 4*64).

`lua_port` holds the Lua script's rnncore port on its own.
"""

from . import functions, regression, stacked

DEMOS = {"functions": functions, "regression": regression, "stacked": stacked}

__all__ = ["DEMOS", "functions", "regression", "stacked"]
