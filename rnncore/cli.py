"""The command line: ``python -m rnncore`` (or the ``rnncore`` console script).

    python -m rnncore demo                     # = demo functions
    python -m rnncore demo regression --seed 3
    python -m rnncore demo stacked --hidden 128
    python -m rnncore demo functions --save model.npz --plot plots/

``main(argv)`` returns the exit status instead of exiting, so tests can call it: 0 when the demo
ran, 2 for a usage error (argparse's convention: unknown demo, bad option value, ``--plot``
without matplotlib, empty or at a path that is (or lies under) a file, ``--save`` empty, ending
with a separator, at a directory, into a missing directory or one that cannot be written, onto a
file that cannot be written, or a file name too long; the
training options --epochs, --save and --plot given to the stacked demo, which trains nothing),
130 when interrupted, 141 when the output pipe closes early (``| head``). The
demos themselves live in `rnncore.demos`.
"""

import argparse
import os
import sys

__all__ = ["main", "build_parser"]

_DESCRIPTION = """\
rnncore: LSTM, GRU and RNN layers with hand-written forward and BPTT kernels in Numba,
under a Torch7-style API. The demos show what the library does, with real numbers."""

_DEMO_HELP = """\
demos:
  functions   (default) tell a line, a parabola and a sqrt curve apart from 8 (x, y) points:
              a Lua Torch script ported line for line, why it did not learn the real task,
              and the recipe that does (>= 95 % test accuracy); 12-30 s
  regression  which of an LSTM regressor's per-step outputs is the prediction; h_n, and why
              a bidirectional output[-1] is not the final state; a few seconds
  stacked     shapes through stacked / bidirectional / GRU / RNN layers and every parameter
              count from its formula (17152 = 4*64*(2+64) + 4*64); instant; it trains
              nothing: --epochs, --save and --plot are refused, --seed and --quick change
              nothing"""


def _int_at_least(lowest, what, highest=None):
    """An argparse type: an int in [lowest, highest], refused with ``expected <what>`` otherwise."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lowest or (highest is not None and v > highest):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v
    return parse


_positive_int = _int_at_least(1, "a positive integer below 2**63", 2 ** 63 - 1)   # (a count)
_seed = _int_at_least(0, "an integer >= 0")
MAX_HIDDEN = 4096     # (an LSTM(N, N) then has 134M weights; 10^6 asked for TiBs, a MemoryError)
_hidden = _int_at_least(1, f"an integer from 1 to {MAX_HIDDEN}", MAX_HIDDEN)


def build_parser():
    """The argparse parser (``rnncore --help``)."""
    return _build()[0]


def _build():
    """(the top-level parser, the ``demo`` sub-parser)."""
    from . import __version__
    from .demos import DEMOS

    parser = argparse.ArgumentParser(prog="rnncore", description=_DESCRIPTION,
                                     epilog="start with:  python -m rnncore demo\n"
                                            "options:     python -m rnncore demo --help",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rnncore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a demo (default: functions)",
                          description="Run one of rnncore's demos.", epilog=_DEMO_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("name", nargs="?", default="functions", choices=list(DEMOS),
                      metavar="NAME", help="functions (default), regression or stacked")
    demo.add_argument("--seed", type=_seed, default=None,      # None: not given (stacked)
                      help="seed for data, initial weights and batch order (default 0)")
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help="training epochs (functions: of Part 2; default: the demo's own)")
    demo.add_argument("--hidden", type=_hidden, default=None,
                      help="hidden size N of the demo's recurrent layers (default: the demo's "
                           "own); stacked builds LSTM, GRU and RNN stacks whose second layer "
                           "gets max(N//2, 1)")
    demo.add_argument("--save", metavar="PATH", default=None,
                      help="save the trained model to PATH (one .npz, rnncore.save); "
                           "functions and regression")
    demo.add_argument("--plot", metavar="DIR", default=None,
                      help="write PNG figures into the directory DIR (created if missing): "
                           "training curves, and for functions the LSTM's gate heat map; "
                           "needs matplotlib (pip install -e \".[plot]\")")
    demo.add_argument("--quick", action="store_true",
                      help="small sizes: a fast run that still learns (used by the tests)")
    demo.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bars (plain output, e.g. for logs)")
    demo.add_argument("--ablation", action="store_true",
                      help="functions only: also train the 12 combinations of input scaling, "
                           "loss placement and optimizer on the hard task (1-3 minutes)")
    return parser, demo


# Options about training, which the stacked demo does not do: refused rather than silently
# ignored, so that ``demo stacked --epochs 50`` does not look as if it did something. (flag,
# args attribute, its default.) ``--seed``, ``--quick`` and ``--no-progress`` pass: they are
# every demo's, a loop over the demos may give them to each, and stacked prints the same
# either way (nothing it prints depends on the seed; it is quick; it shows no progress bar).
_NOT_FOR_STACKED = (("--epochs", "epochs", None), ("--save", "save", None),
                    ("--plot", "plot", None))


def _check_demo_args(parser, args):
    """Usage errors that argparse cannot see alone; ``parser.error`` exits with status 2.

    Paths are checked here, before any training (minutes with ``--ablation``), with the same
    test ``rnncore.save`` makes: a bad ``--save`` would otherwise fail only after the demo ran.
    """
    if args.name == "stacked":
        given = [flag for flag, key, default in _NOT_FOR_STACKED
                 if getattr(args, key) != default]
        if given:
            parser.error(f"{' / '.join(given)}: the stacked demo trains nothing (it only traces "
                         f"shapes and counts parameters, with --hidden); "
                         f"use {', '.join(f for f, _, _ in _NOT_FOR_STACKED)} with functions "
                         f"or regression")
    if args.ablation and args.name != "functions":
        parser.error(f"--ablation: only the functions demo has one, not {args.name}")
    from .demos import _outputs

    if args.save is not None:
        problem = _outputs.save_problem(args.save)
        if problem is not None:
            parser.error(f"--save: {problem[1]}")
    if args.plot is not None:
        from .demos import DEMOS

        files = getattr(DEMOS[args.name], "PLOT_FILES", ())
        problem = _outputs.plot_problem(args.plot, files, args.name)
        if problem is not None:
            parser.error(f"--plot{'' if problem[0] is ImportError else ':'} {problem[1]}")
        why = args.save is not None and _outputs.clash(args.save, args.plot, files, args.name)
        if why:
            parser.error(f"--save / --plot: {why}")


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser, demo_parser = _build()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        _check_demo_args(demo_parser, args)
    except SystemExit as e:                       # --help, --version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)

    from kernels import cache_is_empty

    from .demos import DEMOS

    seed = 0 if args.seed is None else args.seed
    kwargs = dict(seed=seed, epochs=args.epochs, hidden=args.hidden, quick=args.quick,
                  progress=args.progress, save=args.save, plot=args.plot)
    if args.ablation:
        kwargs["ablation"] = True
    try:
        if args.name == "stacked":                # no seed, nothing random in what it prints
            print(f"rnncore demo {args.name}\n")
        else:
            print(f"rnncore demo {args.name} (seed {seed}{', quick' if args.quick else ''})\n")
        if cache_is_empty():                      # (stderr: the demo's own output unchanged)
            print("First run here: Numba compiles the kernels into its cache first (once; "
                  "5-15 s more on 2 cores).\n", file=sys.stderr, flush=True)
        DEMOS[args.name].run(**kwargs)
        sys.stdout.flush()                        # (a closed pipe is found here, not at exit)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                       # output piped into `head` and the like
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())     # so that the exit flush does not fail too
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
