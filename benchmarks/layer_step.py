"""One recurrent layer, forward and forward+backward: rnncore's kernels and modules vs PyTorch
(vs the NumPy reference at small sizes); and a whole training step at the two seed shapes.

    python -m benchmarks.layer_step                 # full grid (a few minutes on 2 cores)
    python -m benchmarks.layer_step --quick         # tiny sizes, 3 repeats: checks the code paths
    python benchmarks/layer_step.py --threads 1 --cells lstm --json bench_out/lstm_1t.json

Three tables, float32, time-major, all timings in this one process, interleaved (see
``_harness.time_interleaved``), median per call:

1. Single layer, for each cell (lstm, gru, rnn) and (T, B, I, H) of the grid, pass ``fwd``
   (one forward over the sequence) and ``fwd+bwd`` (forward, then backward of a fixed random
   upstream gradient dy: input, weight and bias grads):
     kernel ms     ``kernels.<cell>.<cell>_forward`` / ``_backward`` called directly
     module ms     ``rnncore.<CELL>(I, H)``: ``forward(x)``, ``backward(x, dy)`` (validation,
                   parameter-grad accumulation)
     PyTorch ms    ``torch.nn.<CELL>(I, H)`` with the same weights: fwd under
                   ``torch.inference_mode()`` (its fastest forward: ``torch.no_grad()`` took
                   2-13 % longer at the seed shapes); fwd+bwd ``y.backward(dy)`` with
                   ``x.requires_grad``
     reference ms  ``kernels.reference`` (plain NumPy, one step at a time); skipped above
                   ``REFERENCE_MAX_WORK`` (the table says so)
     speedup       PyTorch ms / kernel ms (> 1: rnncore faster)
     GF/s          GEMM FLOPs / kernel time (``_harness.layer_flops``: fwd 2*T*B*G*H*(I+H),
                   fwd+bwd 3x that, G = 4 LSTM, 3 GRU, 1 RNN)
     % peak        GF/s / this machine's sgemm peak, measured at the start of the run (and
                   again at its end: a change of more than ``PHASE_DRIFT`` is reported under
                   the tables, as the machine's speed having moved during the run)
2. Bidirectional, 2 layers, through the module API: ``rnncore.<CELL>(I, H, num_layers=2,
   bidirectional=True)`` vs ``torch.nn.<CELL>(..., num_layers=2, bidirectional=True)``.
3. Training step at the seed shapes: ``Sequencer(Sequential(LSTM(I, H), Linear(H, 3),
   LogSoftMax()))`` + ``SequencerCriterion(ClassNLLCriterion())`` + ``optim.SGD``; zero grads,
   forward, criterion forward and backward, backward, optimizer step — vs the same model, loss
   (sum over steps of the batch-mean NLL) and optimizer in PyTorch (its second LSTM bias held
   at zero and not trained: rnncore's LSTM has one). rnncore's backward also returns dL/dx,
   which PyTorch is not asked for (its input needs no gradient): a small extra at I = 2 or 6.
   The rnncore step is also split into its phases (cumulative timings, differenced).

Before timing, every rnncore output is compared with PyTorch's (same weights); a mismatch
stops the benchmark.
"""
import argparse
import os
import sys

if __package__ in (None, ""):                       # python benchmarks/layer_step.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as hz  # noqa: E402

NAME = "layer_step"
GRID = [(5, 1, 6, 6), (8, 8, 2, 100), (32, 16, 64, 128), (64, 32, 128, 256), (100, 64, 512, 512)]
QUICK_GRID = [(5, 1, 6, 6), (6, 3, 4, 8)]
BIDIR_SHAPE, QUICK_BIDIR_SHAPE = (64, 32, 128, 256), (4, 2, 3, 5)
SEED_SHAPES = [(5, 1, 6, 6), (8, 8, 2, 100)]
CLASSES = 3
CELLS = ("lstm", "gru", "rnn")
#: The NumPy reference runs where T*B*H*(I+H) is at most this (the (64, 32, 128, 256) shape).
REFERENCE_MAX_WORK = 64 * 32 * 256 * (128 + 256)
#: A change of the sgemm peak between the run's start and end beyond this fraction is reported: on
#: a virtual machine whose speed moves by phases (benchmarks/results/cpu.md) a slower phase
#: lengthened PyTorch's times more than rnncore's, so a run across two phases mixes two sets of
#: ratios. (Within one phase the best-of-5 peak moved by a few per cent.)
PHASE_DRIFT = 0.10
#: Largest |rnncore - PyTorch| accepted (float32), on outputs and input gradients (O(1) values)
#: and, relative to their largest entry where that exceeds 1, on parameter gradients (``_check``).
TOLERANCE = 1e-3


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hz.add_common_args(ap, NAME)
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated subset of lstm,gru,rnn")
    ap.add_argument("--repeat", type=hz.count, default=None, help="timed rounds (median reported; default 7, quick 3)")
    ap.add_argument("--no-module", action="store_true", help="skip the module column of table 1")
    args = ap.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in args.cells if c not in CELLS]
    if bad or not args.cells:
        ap.error(f"--cells: expected a non-empty subset of {CELLS}, got {bad or args.cells}")
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    return args


# ---------------------------------------------------------------------------------------------
# problems: the same weights for the kernel, the rnncore module, PyTorch and the reference
# ---------------------------------------------------------------------------------------------

def _torch_layer(cell, I, H, **kw):
    import torch
    cls = dict(lstm=torch.nn.LSTM, gru=torch.nn.GRU, rnn=torch.nn.RNN)[cell]
    return cls(I, H, **kw)


def _kernel_weights(cell, tl):
    """Kernel weight arguments (W_ih, W_hh, *biases) from a 1-layer PyTorch layer's state:
    LSTM and RNN take one bias (bias_ih + bias_hh), GRU both."""
    import numpy as np
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in tl.state_dict().items()}
    biases = [sd["bias_ih_l0"], sd["bias_hh_l0"]] if cell == "gru" else [sd["bias_ih_l0"] + sd["bias_hh_l0"]]
    return [sd["weight_ih_l0"], sd["weight_hh_l0"]] + biases


def _module_from_torch(cell, tl, I, H, **kw):
    """An rnncore layer loaded from a PyTorch layer's state dict (the documented import path)."""
    import rnncore
    cls = dict(lstm=rnncore.LSTM, gru=rnncore.GRU, rnn=rnncore.RNN)[cell]
    m = cls(I, H, **kw)
    m.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    return m


def _check(name, ours, theirs):
    """Largest difference between rnncore's and PyTorch's result, relative to the size of
    PyTorch's where that exceeds 1 (a weight gradient sums T*B rows: its float32 rounding
    grows with it); RuntimeError above TOLERANCE, so that nothing wrong is timed."""
    import numpy as np
    theirs = np.asarray(theirs, np.float64)
    err = float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)))
    err /= max(1.0, float(np.max(np.abs(theirs))))
    if not err <= TOLERANCE:
        raise RuntimeError(f"{name}: rnncore and PyTorch disagree by {err:.3g} (> {TOLERANCE}); "
                           f"not timing a wrong result")
    return err


def _torch_grads(cell, tl):
    """PyTorch's parameter gradients in the order the kernels return theirs (after dx):
    dW_ih, dW_hh, then db (LSTM, RNN: one bias, whose gradient is bias_ih's) or db_ih, db_hh."""
    g = {k: p.grad.numpy() for k, p in tl.named_parameters()}
    biases = ["bias_ih_l0", "bias_hh_l0"] if cell == "gru" else ["bias_ih_l0"]
    return [g[k] for k in ["weight_ih_l0", "weight_hh_l0"] + biases]


def _check_module_grads(label, m, tl):
    """Every parameter gradient of the rnncore layer ``m`` against the PyTorch layer's, by
    name (rnncore's one bias ``bias_l{k}`` of an LSTM / RNN against ``bias_ih_l{k}``'s)."""
    theirs = {k: p.grad.numpy() for k, p in tl.named_parameters()}
    return {f"module_d{k}": _check(f"{label} d{k}", p.grad,
                                   theirs[k if k in theirs else k.replace("bias_l", "bias_ih_l")])
            for k, p in m.named_parameters()}


def _check_grads(label, cell, ours, tl):
    """dW_ih, dW_hh and the bias gradients of ``ours`` (kernel order) against PyTorch's."""
    names = ["dW_ih", "dW_hh"] + (["db_ih", "db_hh"] if cell == "gru" else ["db"])
    return {n: _check(f"{label} {n}", a, b) for n, a, b in zip(names, ours, _torch_grads(cell, tl))}


def bench_layer(cell, shape, repeat, min_sample_s, settle_s, module=True):
    """Table 1 rows for one cell and shape: {pass: {impl: timing}} plus the correctness check."""
    import numpy as np
    import torch
    import kernels.reference as ref
    kmod = __import__(f"kernels.{cell}", fromlist=["_"])
    kf, kb = getattr(kmod, f"{cell}_forward"), getattr(kmod, f"{cell}_backward")
    rf, rb = getattr(ref, f"{cell}_forward"), getattr(ref, f"{cell}_backward")
    T, B, I, H = shape
    nstate = 2 if cell == "lstm" else 1

    torch.manual_seed(0)
    tl = _torch_layer(cell, I, H)
    w = _kernel_weights(cell, tl)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)        # (T, B, I)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)       # (T, B, H)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    xg = xt.clone().requires_grad_(True)
    tparams = list(tl.parameters())
    m = _module_from_torch(cell, tl, I, H) if module else None

    # correctness first: kernel (and module) output, input gradient and every parameter
    # gradient against PyTorch's
    y_k, *_, cache = kf(x, *w)
    dx_k, *grads_k = kb(dy, *([None] * nstate), cache)[:-nstate]
    y_t, _ = tl(xg)
    y_t.backward(dyt)
    label = f"{cell} {shape}"
    checks = dict(y=_check(f"{label} kernel y", y_k, y_t.detach().numpy()),
                  dx=_check(f"{label} kernel dx", dx_k, xg.grad.numpy()),
                  **_check_grads(f"{label} kernel", cell, grads_k, tl))
    if m is not None:
        checks["module_y"] = _check(f"{label} module y", m.forward(x), y_t.detach().numpy())
        m.zero_grad_parameters()
        checks["module_dx"] = _check(f"{label} module dx", m.backward(x, dy), xg.grad.numpy())
        checks.update(_check_module_grads(f"{label} module", m, tl))

    def kernel_fb():
        out = kf(x, *w)
        kb(dy, *([None] * nstate), out[-1])

    def reference_fb():
        out = rf(x, *w)
        rb(dy, *([None] * nstate), out[-1])

    def torch_fwd():
        with torch.inference_mode():
            tl(xt)

    def torch_fb():
        xg.grad = None
        for p in tparams:
            p.grad = None
        y, _ = tl(xg)
        y.backward(dyt)

    def module_fb():
        m.forward(x)
        m.backward(x, dy)

    with_ref = T * B * H * (I + H) <= REFERENCE_MAX_WORK
    passes = {
        "fwd": dict(kernel=lambda: kf(x, *w), module=(lambda: m.forward(x)) if m else None,
                    torch=torch_fwd, reference=(lambda: rf(x, *w)) if with_ref else None),
        "fwd+bwd": dict(kernel=kernel_fb, module=module_fb if m else None,
                        torch=torch_fb, reference=reference_fb if with_ref else None),
    }
    out = {}
    for p, fns in passes.items():
        fns = {k: f for k, f in fns.items() if f is not None}
        out[p] = hz.time_interleaved(fns, repeat, min_sample_s, settle_s=settle_s)
    return out, checks, with_ref


def bench_bidir(cell, shape, repeat, min_sample_s, settle_s):
    """Table 2: 2-layer bidirectional layer through the module API vs PyTorch."""
    import numpy as np
    import torch
    T, B, I, H = shape
    torch.manual_seed(0)
    tl = _torch_layer(cell, I, H, num_layers=2, bidirectional=True)
    m = _module_from_torch(cell, tl, I, H, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    xg = xt.clone().requires_grad_(True)
    tparams = list(tl.parameters())

    y_t, _ = tl(xg)
    y_t.backward(dyt)
    y_m = m.forward(x)
    m.zero_grad_parameters()
    checks = dict(y=_check(f"{cell} bidir y", y_m, y_t.detach().numpy()),
                  dx=_check(f"{cell} bidir dx", m.backward(x, dy), xg.grad.numpy()),
                  **_check_module_grads(f"{cell} bidir", m, tl))

    def torch_fwd():
        with torch.inference_mode():
            tl(xt)

    def torch_fb():
        xg.grad = None
        for p in tparams:
            p.grad = None
        y, _ = tl(xg)
        y.backward(dyt)

    def module_fb():
        m.forward(x)
        m.backward(x, dy)

    out = {"fwd": hz.time_interleaved(dict(module=lambda: m.forward(x), torch=torch_fwd), repeat, min_sample_s,
                                      settle_s=settle_s),
           "fwd+bwd": hz.time_interleaved(dict(module=module_fb, torch=torch_fb), repeat, min_sample_s, settle_s=settle_s)}
    return out, checks


def bench_train_step(shape, repeat, min_sample_s, settle_s, lr=0.1):
    """Table 3: one SGD training step of the seed model, rnncore vs PyTorch, plus rnncore's phases."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import rnncore
    from rnncore import (LSTM, ClassNLLCriterion, Linear, LogSoftMax, Sequencer, SequencerCriterion,
                         Sequential, optim)
    T, B, I, H = shape
    C = CLASSES
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)        # (T, B, I)
    y = rng.integers(0, C, size=(T, B))                          # (T, B) class ids

    rnncore.manual_seed(0)
    model = Sequencer(Sequential(LSTM(I, H), Linear(H, C), LogSoftMax()))
    crit = SequencerCriterion(ClassNLLCriterion())
    opt = optim.SGD(model.parameters(), lr=lr)

    class TorchSeq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.linear = torch.nn.LSTM(I, H), torch.nn.Linear(H, C)

        def forward(self, x):
            return F.log_softmax(self.linear(self.lstm(x)[0]), dim=-1)   # (T, B, C)

    tmodel = TorchSeq()
    lstm_sd, lin_sd = model.module[0].state_dict(), model.module[1].state_dict()
    with torch.no_grad():                                        # same weights: rnncore's init
        tmodel.lstm.weight_ih_l0.copy_(torch.from_numpy(lstm_sd["weight_ih_l0"]))
        tmodel.lstm.weight_hh_l0.copy_(torch.from_numpy(lstm_sd["weight_hh_l0"]))
        tmodel.lstm.bias_ih_l0.copy_(torch.from_numpy(lstm_sd["bias_l0"]))
        tmodel.lstm.bias_hh_l0.zero_()
        tmodel.linear.weight.copy_(torch.from_numpy(lin_sd["weight"]))
        tmodel.linear.bias.copy_(torch.from_numpy(lin_sd["bias"]))
    tmodel.lstm.bias_hh_l0.requires_grad_(False)           # rnncore's LSTM has one bias
    topt = torch.optim.SGD(tmodel.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).reshape(-1)

    def torch_loss():
        # sum over steps of the batch-mean NLL = SequencerCriterion(ClassNLLCriterion())
        return F.nll_loss(tmodel(xt).reshape(T * B, C), yt, reduction="sum") / B

    checks = dict(loss=_check("train step loss", crit.forward(model.forward(x), y), torch_loss().item()))

    def torch_step():
        topt.zero_grad()
        loss = torch_loss()
        loss.backward()
        topt.step()

    # rnncore, cumulatively: forward | + criterion | + backward | + zero_grad and optimizer step
    def r_fwd():
        return model.forward(x)

    def r_crit():
        out = model.forward(x)
        crit.forward(out, y)
        return out, crit.backward(out, y)

    def r_bwd():
        out, g = r_crit()
        model.backward(x, g)

    def r_step():
        opt.zero_grad()
        r_bwd()
        opt.step()

    t = hz.time_interleaved(dict(rnncore=r_step, torch=torch_step, fwd=r_fwd, crit=r_crit, bwd=r_bwd),
                            repeat, min_sample_s, settle_s=settle_s)
    ms = {k: v["median_s"] * 1e3 for k, v in t.items()}
    phases = dict(forward_ms=ms["fwd"], criterion_ms=max(ms["crit"] - ms["fwd"], 0.0),
                  backward_ms=max(ms["bwd"] - ms["crit"], 0.0), optimizer_ms=max(ms["rnncore"] - ms["bwd"], 0.0))
    return t, phases, checks


def phase_drift_note(start_gflops, end_gflops):
    """The line printed under the tables when the sgemm peak measured at the run's end differs
    from the one at its start by more than ``PHASE_DRIFT`` (as a list: empty when it does not)."""
    drift = end_gflops / start_gflops - 1
    if abs(drift) <= PHASE_DRIFT:
        return []
    return [f"The sgemm peak moved by {100 * drift:+.0f} % during the run ({start_gflops:.1f} -> "
            f"{end_gflops:.1f} GF/s): the machine's speed changed while it ran, so its ratios may "
            f"mix two phases (benchmarks/README.md, \"sgemm peak\")."]


# ---------------------------------------------------------------------------------------------

def main(argv=None, print_fn=print):
    args = parse_args(argv)
    hz.require_torch(NAME)
    env_in_time = hz.set_thread_env(args.threads)
    import numpy as np  # noqa: F401
    import scipy.linalg.blas  # noqa: F401  (load SciPy's OpenBLAS: the one Numba's np.dot uses)
    import torch  # noqa: F401
    import rnncore  # noqa: F401
    import kernels.lstm  # noqa: F401

    grid = QUICK_GRID if args.quick else GRID
    bidir_shape = QUICK_BIDIR_SHAPE if args.quick else BIDIR_SHAPE
    min_sample = 0.001 if args.quick else 0.05
    settle = 0.01 if args.quick else 0.12           # untimed calls before a sample: _harness.time_interleaved
    with hz.limit_threads(args.threads) as threads:
        threads["env_set_before_import"] = env_in_time
        peak = hz.sgemm_peak(256 if args.quick else 2048, 2 if args.quick else 5)
        P = peak["peak_gflops"]

        layer_rows, layer_json = [], []
        for cell in args.cells:
            for shape in grid:
                res, checks, with_ref = bench_layer(cell, shape, args.repeat, min_sample, settle,
                                                       module=not args.no_module)
                for p, r in res.items():
                    ms = {k: v["median_s"] * 1e3 for k, v in r.items()}
                    flops = hz.layer_flops(cell, *shape, backward=(p == "fwd+bwd"))
                    gf = flops / (ms["kernel"] * 1e-3) / 1e9
                    row = dict(cell=cell, T=shape[0], B=shape[1], I=shape[2], H=shape[3], **{"pass": p},
                               kernel_ms=ms["kernel"], module_ms=ms.get("module"), torch_ms=ms["torch"],
                               reference_ms=ms.get("reference"), speedup=ms["torch"] / ms["kernel"],
                               module_speedup=ms["torch"] / ms["module"] if "module" in ms else None,
                               gflop=flops / 1e9, gflops=gf, pct_peak=100 * gf / P, check_max_abs_err=checks,
                               timings=r)
                    layer_json.append(row)
                    layer_rows.append([cell, *map(str, shape), p, hz.fmt(row["kernel_ms"]),
                                       hz.fmt(row["module_ms"]), hz.fmt(row["torch_ms"]),
                                       hz.fmt(row["reference_ms"]) if with_ref else "skipped (large)",
                                       hz.fmt(row["speedup"], "x"), hz.fmt(gf), hz.fmt(row["pct_peak"], "pct")])

        bidir_rows, bidir_json = [], []
        for cell in args.cells:
            res, checks = bench_bidir(cell, bidir_shape, args.repeat, min_sample, settle)
            for p, r in res.items():
                ms = {k: v["median_s"] * 1e3 for k, v in r.items()}
                flops = hz.layer_flops(cell, *bidir_shape, backward=(p == "fwd+bwd"), num_layers=2, directions=2)
                gf = flops / (ms["module"] * 1e-3) / 1e9
                row = dict(cell=cell, T=bidir_shape[0], B=bidir_shape[1], I=bidir_shape[2], H=bidir_shape[3],
                           **{"pass": p}, module_ms=ms["module"], torch_ms=ms["torch"],
                           speedup=ms["torch"] / ms["module"],
                           gflop=flops / 1e9, gflops=gf, pct_peak=100 * gf / P, check_max_abs_err=checks, timings=r)
                bidir_json.append(row)
                bidir_rows.append([cell, *map(str, bidir_shape), p, hz.fmt(row["module_ms"]), hz.fmt(row["torch_ms"]),
                                   hz.fmt(row["speedup"], "x"), hz.fmt(gf), hz.fmt(row["pct_peak"], "pct")])

        step_rows, step_json = [], []
        for shape in SEED_SHAPES:                         # already tiny: the same in --quick
            t, phases, checks = bench_train_step(shape, args.repeat, min_sample, settle)
            r_ms, t_ms = t["rnncore"]["median_s"] * 1e3, t["torch"]["median_s"] * 1e3
            row = dict(T=shape[0], B=shape[1], I=shape[2], H=shape[3], rnncore_ms=r_ms, torch_ms=t_ms,
                       speedup=t_ms / r_ms, **phases, check_max_abs_err=checks, timings=t)
            step_json.append(row)
            step_rows.append([*map(str, shape), hz.fmt(r_ms), hz.fmt(t_ms), hz.fmt(row["speedup"], "x"),
                              hz.fmt(phases["forward_ms"]), hz.fmt(phases["criterion_ms"]),
                              hz.fmt(phases["backward_ms"]), hz.fmt(phases["optimizer_ms"])])
        peak_end = hz.sgemm_peak(256 if args.quick else 2048, 2 if args.quick else 5)

    caption = (f"float32; {hz.threads_summary(threads)}; median of {args.repeat} interleaved rounds; "
               f"sgemm peak {P:.1f} GF/s (best of numpy {peak['numpy_gflops']:.1f}, scipy "
               f"{peak['scipy_gflops']:.1f}, torch.mm {peak['torch_gflops']:.1f}) at n={peak['n']}"
               + f"; {peak_end['peak_gflops']:.1f} at the end"
               + ("; --quick: sizes too small to mean anything" if args.quick else ""))
    phase_note = [] if args.quick else phase_drift_note(P, peak_end["peak_gflops"])
    tables = [
        ("Single layer: kernels vs module vs PyTorch vs NumPy reference",
         hz.markdown_table(["cell", "T", "B", "I", "H", "pass", "kernel ms", "module ms", "PyTorch ms",
                            "reference ms", "speedup", "GF/s", "% peak"], layer_rows),
         [caption, "speedup = PyTorch ms / kernel ms; GF/s = GEMM FLOPs / kernel time "
                   "(fwd 2*T*B*G*H*(I+H), fwd+bwd 3x; G = 4 LSTM, 3 GRU, 1 RNN); % peak = GF/s / sgemm peak; "
                   "reference skipped where T*B*H*(I+H) > " + str(REFERENCE_MAX_WORK) + ".",
                   *phase_note]),
        ("Bidirectional, 2 layers, module API vs PyTorch",
         hz.markdown_table(["cell", "T", "B", "I", "H", "pass", "module ms", "PyTorch ms", "speedup", "GF/s",
                            "% peak"], bidir_rows),
         ["GF/s over both layers and directions (layer 2 input width 2H)."]),
        ("Training step through the module API (seed model, SGD)",
         hz.markdown_table(["T", "B", "I", "H", "rnncore ms", "PyTorch ms", "speedup", "fwd ms", "criterion ms",
                            "bwd ms", "optim ms"], step_rows),
         [f"Sequencer(Sequential(LSTM(I, H), Linear(H, {CLASSES}), LogSoftMax())) + "
          "SequencerCriterion(ClassNLLCriterion()) + SGD: zero_grad, forward, loss, backward, step. "
          "fwd/criterion/bwd/optim: rnncore's step split by differencing cumulative timings."]),
    ]
    payload = dict(quick=args.quick, argv=list(argv) if argv is not None else sys.argv[1:], threads=threads,
                   sgemm=peak, sgemm_end=peak_end, repeat=args.repeat, min_sample_s=min_sample, settle_s=settle, idle_s=0.0, layer=layer_json,
                   bidirectional=bidir_json, train_step=step_json)
    return hz.report(NAME, payload, tables, args.json, print_fn=print_fn)


if __name__ == "__main__":
    main()
