"""A Lua Torch ``rnn`` script, ported line for line to rnncore.

The script (torch/rnn, the ``Sequencer`` idiom) reads a sequence of 8 points (x, y), one point
per time step, and learns at every step which function drew them: a line, a parabola or a
square root. Left: Lua; right: this module::

    require 'rnn'                                         import rnncore as nn
    rnn = nn.Sequential()                                 rnn = (nn.Sequential()
       :add(nn.LSTM(2, 100))                                     .add(nn.LSTM(2, 100))
       :add(nn.Linear(100, 3))                                   .add(nn.Linear(100, 3))
       :add(nn.LogSoftMax())                                     .add(nn.LogSoftMax()))
    rnn = nn.Sequencer(rnn)                               rnn = nn.Sequencer(rnn)
    criterion = nn.SequencerCriterion(                    criterion = nn.SequencerCriterion(
                    nn.ClassNLLCriterion())                           nn.ClassNLLCriterion())
    for i = 1, iterations do                              for i in range(1, iterations + 1):
       local inputs, targets = nextBatch()                    inputs, targets = next_batch()
       local outputs = rnn:forward(inputs)                    outputs = rnn.forward(inputs)
       local err = criterion:forward(outputs, targets)        err = criterion.forward(outputs,
                                                                                   targets)
       rnn:zeroGradParameters()                               rnn.zero_grad_parameters()
       local gradOutputs =                                    grad_outputs = criterion.backward(
             criterion:backward(outputs, targets)                                outputs, targets)
       rnn:backward(inputs, gradOutputs)                      rnn.backward(inputs, grad_outputs)
       rnn:updateParameters(lr)                               rnn.update_parameters(lr)
    end

``inputs`` is a table (a Python list) of 8 arrays ``(B, 2)``, one per time step, and ``targets``
a list of 8 arrays ``(B,)`` of class ids: the same class at every step. The differences: class
ids are 0-based in rnncore (0 line, 1 parabola, 2 sqrt), 1-based in Lua; and the cell is
PyTorch's LSTM (as the rnn package's ``nn.FastLSTM``: no peephole connections; here its
forget-gate bias starts at 1), where the package's ``nn.LSTM`` also feeds the cell state into
each gate (peephole connections, ``nn.CMul``) and initialises differently.

Run it: ``python -m rnncore.demos.lua_port`` (fixed k and b, as in `rnncore.demos.functions`
Part 1; 5-20 s on 2 cores). It takes no options: ``--help`` says what it does, and anything
else is refused (exit status 2) before it trains.
"""

import argparse
import sys

import numpy as np
from tqdm import tqdm

import rnncore as nn
from rnncore import _checks           # (train checks its counts as rnncore does)

__all__ = ["build", "train", "per_step_accuracy"]


def build(hidden=100, classes=3):
    """The Lua model and criterion: ``Sequencer(LSTM(2, hidden) -> Linear -> LogSoftMax)``."""
    rnn = (nn.Sequential()
           .add(nn.LSTM(2, hidden))
           .add(nn.Linear(hidden, classes))
           .add(nn.LogSoftMax()))
    rnn = nn.Sequencer(rnn)
    criterion = nn.SequencerCriterion(nn.ClassNLLCriterion())
    return rnn, criterion


def train(rnn, criterion, next_batch, iterations, lr=0.01, progress=True, checkpoints=5):
    """The Lua training loop: plain SGD through ``update_parameters(lr)``.

    next_batch: ``next_batch() -> (inputs, targets)``, lists of T arrays (B, 2) and (B,)
    returns ``[(iteration, loss), ...]`` at ``checkpoints`` evenly spaced iterations (the loss is
    the SequencerCriterion's: a sum over the T steps of each step's batch-mean NLL).
    """
    iterations = _checks.positive_int(iterations, "iterations")
    checkpoints = _checks.positive_int(checkpoints, "checkpoints")
    marks = set(np.linspace(1, iterations, checkpoints).round().astype(int).tolist())
    log = []
    for i in tqdm(range(1, iterations + 1), desc="SGD", unit="it", disable=not progress,
                  mininterval=0.5, leave=False):
        inputs, targets = next_batch()
        outputs = rnn.forward(inputs)
        err = criterion.forward(outputs, targets)
        rnn.zero_grad_parameters()
        grad_outputs = criterion.backward(outputs, targets)
        rnn.backward(inputs, grad_outputs)
        rnn.update_parameters(lr)
        if i in marks:
            log.append((i, err))
    return log


def per_step_accuracy(rnn, x, labels):
    """Accuracy at each time step of a Sequencer classifier: (T,) floats.

    x: (T, N, 2); labels: (N,) class ids. Step t's prediction (t from 0) has seen points 0..t only.
    Runs in evaluate mode (no dropout), then gives every module back the mode it had.
    """
    modes = [(m, m.train) for m in rnn.modules()]
    rnn.evaluate()
    try:
        out = rnn.forward(x)                               # (T, N, C) log-probabilities
    finally:
        for m, mode in modes:
            m.train = mode
    return (out.argmax(axis=2) == labels[None, :]).mean(axis=1)


def main(argv=()):
    """``python -m rnncore.demos.lua_port``: train the Lua model for 3000 iterations, print the
    loss and the per-step test accuracy. ``argv``, the command line's arguments (none when
    called from Python: a notebook's own ``sys.argv`` is not this script's), may only be
    ``--help``: the script has no options, and a typo must not start a run."""
    argparse.ArgumentParser(
        prog="python -m rnncore.demos.lua_port",
        description="The Lua Torch rnn script (Sequencer(LSTM(2, 100) -> Linear -> LogSoftMax), "
                    "plain SGD) ported line for line: 3000 iterations on the fixed-k line / "
                    "parabola / sqrt task, then the test accuracy at each of the 8 steps. "
                    "No options; `python -m rnncore demo functions` runs it as its Part 1.",
    ).parse_args(argv)
    from .functions import make_functions

    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    rnn, criterion = build(100)

    def next_batch():
        x, labels, _ = make_functions(32, rng, fixed=True, standardised=False)
        return list(x), [labels] * len(x)                  # Lua tables: one entry per step

    print("loss: the SequencerCriterion's, each step's batch-mean NLL summed over the 8 steps")
    for i, err in train(rnn, criterion, next_batch, iterations=3000):
        print(f"iteration {i:5d}   loss {err:.4f}")
    x, labels, _ = make_functions(1000, rng, fixed=True, standardised=False)
    acc = per_step_accuracy(rnn, x, labels)                # (8,): after 1, 2, ..., 8 points
    print("test accuracy after 1..8 points:", " ".join(f"{a:.1%}" for a in acc))


if __name__ == "__main__":
    main(sys.argv[1:])
