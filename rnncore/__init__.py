"""rnncore: LSTM, GRU and RNN layers with hand-written BPTT kernels, under a Torch7-style API.

See README.md for a tour; ``kernels/`` holds the math.
"""

import importlib as _importlib
import os as _os
import types as _types

import kernels                 # noqa: F401  first: its OpenBLAS setting precedes NumPy's load
kernels._cache_stamp.light_load(_os.path.dirname(_os.path.abspath(__file__)))  # (_checks, criteria)
from .module import Module, Parameter
from .random import manual_seed
from .layers import *          # noqa: F401,F403  Linear, Embedding, activations, Dropout, ...
from .containers import *      # noqa: F401,F403  Sequential, Sequencer, LastStep
from .recurrent import *       # noqa: F401,F403  RNN, LSTM, GRU
from .criteria import *        # noqa: F401,F403  MSECriterion, ClassNLLCriterion, ...
from .gradcheck import *       # noqa: F401,F403  gradcheck
from .summary import *         # noqa: F401,F403  summary (also the method m.summary)
from .trace import *           # noqa: F401,F403  trace
from . import optim            # noqa: F401

__version__ = "0.1.0"

# Imported on first use (PEP 562): helpers that a training step written by hand does not
# need, about 20 ms of a fresh process's start-up (tqdm among them); their modules too.
_ON_FIRST_USE = {"fit": "train", "score": "train", "History": "train",     # rnncore.train
                 "save": "io", "load": "io",                               # rnncore.io
                 "pad_sequences": "data",                                  # rnncore.data
                 "train": None, "io": None, "data": None,                  # the modules
                 "plots": None}              # matplotlib itself only when a plot is drawn

__all__ = sorted([name for name, value in globals().items()                # the public API
                  if not name.startswith("_") and name != "kernels"
                  and (name == "optim" or not isinstance(value, _types.ModuleType))]
                 + [name for name, module in _ON_FIRST_USE.items() if module is not None])


def __getattr__(name):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'rnncore' has no attribute {name!r}")
    module = _importlib.import_module(f".{_ON_FIRST_USE[name] or name}", __name__)
    value = module if _ON_FIRST_USE[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))
