"""rnncore: LSTM, GRU and RNN layers with hand-written BPTT kernels, under a Torch7-style API.

See README.md for a tour; ``kernels/`` holds the math.
"""

import importlib

import kernels                 # noqa: F401  first: its OpenBLAS setting precedes NumPy's load
from .module import Module, Parameter
from .random import manual_seed
from .layers import *          # noqa: F401,F403  Linear, Embedding, activations, Dropout, ...
from .containers import *      # noqa: F401,F403  Sequential, Sequencer, LastStep
from .recurrent import *       # noqa: F401,F403  RNN, LSTM, GRU
from .criteria import *        # noqa: F401,F403  MSECriterion, ClassNLLCriterion, ...
from .gradcheck import *       # noqa: F401,F403  gradcheck
from .trace import *           # noqa: F401,F403  trace
from . import optim            # noqa: F401

__version__ = "0.1.0"

# Imported on first use (PEP 562): helpers that a training step written by hand does not
# need, about 20 ms of a fresh process's start-up (tqdm among them).
_ON_FIRST_USE = {"fit": "train", "score": "train", "History": "train",     # rnncore.train
                 "save": "io", "load": "io",                               # rnncore.io
                 "pad_sequences": "data"}                                  # rnncore.data


def __getattr__(name):
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'rnncore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))
