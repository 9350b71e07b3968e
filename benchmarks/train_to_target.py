"""Time to 95% test accuracy on the "functions" task (hard version), rnncore vs PyTorch.

    python -m benchmarks.train_to_target            # 5 alternating runs of each (under a minute)
    python -m benchmarks.train_to_target --quick    # tiny data, 2 epochs: checks the code paths

The task: a sequence of P = 8 points (x_j, y_j), 0 <= x_1 <= ... <= x_P <= 1 drawn uniformly,
is labelled by the function that made it:

    class 0  line      y = k x + b
    class 1  parabola  y = k x^2 + b
    class 2  sqrt      y = k sqrt(x) + b

with k and b drawn per sample (|k| ~ U(0.5, 2) with a random sign, b ~ U(-1, 1)), so the class
is in the *shape* of the curve, not its scale or offset. Each sequence is standardised per
feature over its own P points (zero mean, unit variance of x and of y), so the model cannot
read k or b from the values. Input (P, N, 2), time-major.

The model, identical in both frameworks, sequence-to-one:

    LSTM(2, H, return_sequences=False)  ->  Linear(H, 3)  ->  cross-entropy (mean over the batch)

trained with Adam (lr, betas (0.9, 0.999), eps 1e-8), mini-batches of ``--batch`` in an order
drawn once per epoch from a seeded generator (the same order for both), the gradient clipped to
norm ``--clip`` before every step. Test accuracy is measured after every epoch; a run stops at
the first epoch with accuracy >= ``--target`` (or after ``--max-epochs``).

Same initialisation: the PyTorch model gets rnncore's initial weights (rnncore's LSTM init is
U(-1/sqrt(H), 1/sqrt(H)) with the forget-gate bias at 1; PyTorch's second LSTM bias
``bias_hh_l0`` is held at zero and not trained, so both models have exactly the same
parameters). Both then compute the same training run up to float32 rounding, so they should
reach the target after the same number of epochs; the wall time is the thing compared.

Wall time counts the training loop and the per-epoch evaluation, not data generation or model
construction; before timing, each framework runs one throwaway step (Numba loads its compiled
kernels, PyTorch warms its thread pool); see ``benchmarks.startup`` for that first-call cost.
Runs alternate (rnncore, PyTorch, rnncore, ...) and the table reports medians.
"""
import argparse
import os
import statistics
import sys
import time

if __package__ in (None, ""):                       # python benchmarks/train_to_target.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402

NAME = "train_to_target"
POINTS, CLASSES = 8, 3
CLASS_NAMES = ("line", "parabola", "sqrt")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hz.add_common_args(ap, NAME)
    ap.add_argument("--train", type=hz.count, default=None, help="training sequences (default 2000, quick 256)")
    ap.add_argument("--test", type=hz.count, default=None, help="test sequences (default 1000, quick 128)")
    ap.add_argument("--hidden", type=hz.count, default=None, help="LSTM hidden size (default 32, quick 8)")
    ap.add_argument("--batch", type=hz.count, default=32, help="mini-batch size (default 32)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    ap.add_argument("--target", type=float, default=0.95, help="test accuracy to reach (default 0.95)")
    ap.add_argument("--max-epochs", type=hz.count, default=None, help="give up after this many (default 50, quick 2)")
    ap.add_argument("--runs", type=hz.count, default=None, help="runs of each framework, alternating (default 5, quick 1)")
    ap.add_argument("--seed", type=hz.count0, default=0)
    args = ap.parse_args(argv)
    if not 0 < args.lr < float("inf") or not 0 < args.clip < float("inf"):
        ap.error(f"--lr and --clip: expected finite numbers > 0, got {args.lr} and {args.clip}")
    if not 0 < args.target <= 1:
        ap.error(f"--target: expected an accuracy in (0, 1], got {args.target}")
    for name, full, quick in (("train", 2000, 256), ("test", 1000, 128), ("hidden", 32, 8),
                              ("max_epochs", 50, 2), ("runs", 5, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def make_functions(n, rng, points=POINTS):
    """n labelled sequences of the functions task: x (points, n, 2) float32, labels (n,) int64."""
    import numpy as np
    x = np.sort(rng.uniform(0.0, 1.0, (n, points)), axis=1)               # (n, P)
    k = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)              # (n,)
    b = rng.uniform(-1.0, 1.0, n)
    label = rng.integers(0, CLASSES, n)
    shape = np.where(label[:, None] == 0, x, np.where(label[:, None] == 1, x ** 2, np.sqrt(x)))
    y = k[:, None] * shape + b[:, None]                                    # (n, P)
    seq = np.stack([x, y], axis=-1)                                        # (n, P, 2)
    seq = (seq - seq.mean(axis=1, keepdims=True)) / (seq.std(axis=1, keepdims=True) + 1e-8)
    return np.ascontiguousarray(seq.transpose(1, 0, 2), dtype=np.float32), label


# ---------------------------------------------------------------------------------------------
# the two implementations: build(init) -> (step(xb, yb), predict(x)), same math
# ---------------------------------------------------------------------------------------------

def build_rnncore(args):
    """rnncore model, optimizer and step; returns (step, predict, initial weights)."""
    import numpy as np
    import rnncore
    from rnncore import LSTM, CrossEntropyCriterion, Linear, Sequential, optim
    rnncore.manual_seed(args.seed)
    model = Sequential(LSTM(2, args.hidden, return_sequences=False), Linear(args.hidden, CLASSES))
    crit = CrossEntropyCriterion()
    params = model.parameters()
    opt = optim.Adam(params, lr=args.lr)
    init = dict(lstm=model[0].state_dict(), linear=model[1].state_dict())

    def step(xb, yb):                                       # xb (P, b, 2), yb (b,)
        opt.zero_grad()
        out = model.forward(xb)                             # (b, 3) logits
        loss = crit.forward(out, yb)
        model.backward(xb, crit.backward(out, yb))
        optim.clip_grad_norm(params, args.clip)
        opt.step()
        return loss

    def predict(x):
        model.evaluate()
        pred = np.argmax(model.forward(x), axis=1)
        model.training()
        return pred

    return step, predict, init


def build_torch(args, init):
    """The same model in PyTorch, started from rnncore's initial weights ``init``."""
    import torch
    import torch.nn.functional as F
    H = args.hidden
    lstm, linear = torch.nn.LSTM(2, H), torch.nn.Linear(H, CLASSES)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(init["lstm"]["weight_ih_l0"]))
        lstm.weight_hh_l0.copy_(torch.from_numpy(init["lstm"]["weight_hh_l0"]))
        lstm.bias_ih_l0.copy_(torch.from_numpy(init["lstm"]["bias_l0"]))
        lstm.bias_hh_l0.zero_()
        linear.weight.copy_(torch.from_numpy(init["linear"]["weight"]))
        linear.bias.copy_(torch.from_numpy(init["linear"]["bias"]))
    lstm.bias_hh_l0.requires_grad_(False)                  # rnncore's LSTM has one bias
    params = [p for p in list(lstm.parameters()) + list(linear.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)

    def step(xb, yb):
        xb, yb = torch.from_numpy(xb), torch.from_numpy(yb)
        opt.zero_grad()
        _, (h_n, _) = lstm(xb)                              # h_n (1, b, H)
        loss = F.cross_entropy(linear(h_n[-1]), yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        return loss.item()

    def predict(x):
        with torch.inference_mode():                        # (PyTorch's fastest forward)
            _, (h_n, _) = lstm(torch.from_numpy(x))
            return linear(h_n[-1]).argmax(dim=1).numpy()

    return step, predict


def run(framework, args, data):
    """Build a fresh model of ``framework``, warm it up, train to target; return the record."""
    import numpy as np
    x_tr, y_tr, x_te, y_te = data
    # warm-up on a throwaway model: kernels loaded / thread pool awake, nothing timed
    step, _, init = build_rnncore(args)
    if framework == "torch":
        step, _ = build_torch(args, init)
    step(x_tr[:, :args.batch], y_tr[:args.batch])
    # the timed model, from the same seed
    step, predict, init = build_rnncore(args)
    if framework == "torch":
        step, predict = build_torch(args, init)
    order_rng = np.random.default_rng(args.seed + 1)        # same batch order in every run
    n, bs = len(y_tr), args.batch
    epochs, acc, reached, steps, losses = 0, 0.0, False, 0, []
    t0 = time.perf_counter()
    while epochs < args.max_epochs:
        perm = order_rng.permutation(n)
        total = 0.0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            total += step(np.ascontiguousarray(x_tr[:, idx]), y_tr[idx]) * len(idx)
            steps += 1
        epochs += 1
        losses.append(total / n)
        acc = float(np.mean(predict(x_te) == y_te))
        if acc >= args.target:
            reached = True
            break
    wall = time.perf_counter() - t0
    return dict(framework=framework, wall_s=wall, epochs=epochs, steps=steps, reached=reached,
                final_test_accuracy=acc, ms_per_step=1e3 * wall / steps, train_loss_per_epoch=losses)


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    hz.require_torch(NAME)
    env_in_time = hz.set_thread_env(args.threads)
    import numpy as np
    import torch  # noqa: F401
    import rnncore  # noqa: F401
    import scipy.linalg.blas  # noqa: F401

    rng = np.random.default_rng(args.seed)
    x_tr, y_tr = make_functions(args.train, rng)
    x_te, y_te = make_functions(args.test, rng)
    data = (x_tr, y_tr, x_te, y_te)
    runs = {"rnncore": [], "torch": []}
    with hz.limit_threads(args.threads) as threads:
        threads["env_set_before_import"] = env_in_time
        for _ in range(args.runs):
            for fw in runs:
                runs[fw].append(run(fw, args, data))

    median = statistics.median                 # (of an even count of runs: the middle two's mean)
    summary = {}
    for fw, rs in runs.items():
        summary[fw] = dict(wall_s=median([r["wall_s"] for r in rs]), epochs=median([r["epochs"] for r in rs]),
                           reached=all(r["reached"] for r in rs),
                           final_test_accuracy=median([r["final_test_accuracy"] for r in rs]),
                           ms_per_step=median([r["ms_per_step"] for r in rs]))
    for fw in summary:
        summary[fw]["speedup"] = summary["torch"]["wall_s"] / summary[fw]["wall_s"]
    label = dict(rnncore="rnncore", torch="PyTorch")
    rows = [[label[fw], hz.fmt(s["wall_s"]),
             hz.fmt(s["epochs"], "int" if s["epochs"] % 1 == 0 else "num"),
             "yes" if s["reached"] else "no",
             hz.fmt(s["final_test_accuracy"]), hz.fmt(s["ms_per_step"]), hz.fmt(s["speedup"], "x")]
            for fw, s in summary.items()]
    notes = [f"{args.train} train / {args.test} test sequences of {POINTS} points; LSTM(2, {args.hidden}) -> "
             f"Linear({args.hidden}, 3), Adam lr {args.lr}, batch {args.batch}, clip {args.clip}, target "
             f"{args.target:.0%} (max {args.max_epochs} epochs); median of {args.runs} alternating runs; "
             f"{hz.threads_summary(threads)}"
             + ("; --quick: the target is not expected to be reached" if args.quick else ""),
             "wall s: training loop + per-epoch test evaluation until the target (or the epoch limit); "
             "speedup = PyTorch wall / this row's wall."]
    tables = [(f"Time to {args.target:.0%} test accuracy, functions task (line / parabola / sqrt)",
               hz.markdown_table(["framework", "wall s", "epochs", "reached", "test acc", "ms/step", "speedup"], rows),
               notes)]
    payload = dict(quick=args.quick, argv=list(argv) if argv is not None else sys.argv[1:], threads=threads,
                   config={k: v for k, v in vars(args).items() if k not in ("json", "quick")}, summary=summary,
                   runs=runs)
    return hz.report(NAME, payload, tables, args.json, print_fn=print_fn)


if __name__ == "__main__":
    main()
