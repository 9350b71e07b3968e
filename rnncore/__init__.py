"""rnncore: LSTM, GRU and RNN layers with hand-written BPTT kernels, under a Torch7-style API.

See README.md for a tour; ``kernels/`` holds the math.
"""

import kernels                 # noqa: F401  first: its OpenBLAS setting precedes NumPy's load
from .module import Module, Parameter
from .random import manual_seed
from .layers import *          # noqa: F401,F403  Linear, Embedding, activations, Dropout, ...
from .containers import *      # noqa: F401,F403  Sequential, Sequencer, LastStep
from .recurrent import *       # noqa: F401,F403  RNN, LSTM, GRU
from .criteria import *        # noqa: F401,F403  MSECriterion, ClassNLLCriterion, ...
from .gradcheck import *       # noqa: F401,F403  gradcheck
from .data import *            # noqa: F401,F403  pad_sequences
from .io import *              # noqa: F401,F403  save, load
from .train import *           # noqa: F401,F403  fit
from .trace import *           # noqa: F401,F403  trace
from . import optim            # noqa: F401

__version__ = "0.1.0"
