"""The demos behind ``python -m rnncore demo NAME``.

Each demo is a module with ``run(seed=0, epochs=None, hidden=None, quick=False, progress=True,
save=None, plot=None, print_fn=print) -> dict`` (``functions`` adds ``ablation=False``): it
prints what it does and returns the numbers it printed, so that tests (and curious users) can
check them.

* `functions` - the line / parabola / sqrt classifier: a Lua Torch script ported line for
  line, why it did not learn the real task, and the recipe that does (>= 95 % accuracy).
* `regression` - which of an LSTM's per-step outputs is the prediction, and what ``h_n`` and
  a bidirectional layer's ``output[-1]`` hold.
* `stacked` - shapes through stacked / bidirectional / GRU / RNN layers, and each parameter
  count from its formula (17152 = 4*64*(2+64) + 4*64).

`lua_port` holds the Lua script's rnncore port on its own.
"""

import importlib
from collections.abc import Mapping

__all__ = ["DEMOS"]

_NAMES = ("functions", "regression", "stacked")


class _Demos(Mapping):
    """``{name: demo module}``, each imported when first looked up (so that ``python -m
    rnncore.demos.lua_port`` does not import itself through `functions` first)."""

    def __getitem__(self, name):
        if name not in _NAMES:
            raise KeyError(name)
        return importlib.import_module(f"{__name__}.{name}")

    def __iter__(self):
        return iter(_NAMES)

    def __len__(self):
        return len(_NAMES)


DEMOS = _Demos()
