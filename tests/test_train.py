"""rnncore.fit / rnncore.score / History: learning, bookkeeping, determinism, refusals."""

import re

import numpy as np
import pytest

import rnncore
from rnncore import (LSTM, ClassNLLCriterion, CrossEntropyCriterion, Dropout, Embedding,
                     History, Linear, LogSoftMax, MSECriterion, Sequencer, SequencerCriterion,
                     Sequential, fit, score)
from rnncore.optim import SGD, Adam


def sign_task(n, seed, T=6):
    """Sequence-to-one: is the mean of feature 0 over the sequence positive? (T, n, 2), (n,)."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((T, n, 2)).astype(np.float32)
    return x, (x[:, :, 0].mean(0) > 0).astype(np.int64)


def classifier(seed=0, H=8):
    rnncore.manual_seed(seed)
    return Sequential(LSTM(2, H, return_sequences=False), Linear(H, 2), LogSoftMax())


def weights(m):
    return [p.data.copy() for p in m.parameters()]


def test_fit_learns_the_sign_task():
    # Measured: 8 epochs of Adam(0.05) give train accuracy 0.98 and validation accuracy 0.93
    # (loss 0.61 -> 0.065). The thresholds leave room for other machines' round-off.
    x, y = sign_task(256, 0)
    xv, yv = sign_task(128, 1)
    m = classifier()
    h = fit(m, ClassNLLCriterion(), Adam(m.parameters(), lr=0.05), x, y, epochs=8,
            batch_size=32, validation=(xv, yv), seed=0, progress=False)
    assert h.loss[-1] < 0.3 * h.loss[0]
    assert h.accuracy[-1] >= 0.93
    assert h.val_accuracy[-1] >= 0.88
    s = score(m, ClassNLLCriterion(), xv, yv)
    assert s["accuracy"] == pytest.approx(h.val_accuracy[-1])
    # and both against what the model says, computed here (score and fit's validation share
    # their code: a fault there would fail neither comparison above)
    m.evaluate()
    logp = m.forward(xv)
    m.training()
    assert s["accuracy"] == pytest.approx(np.mean(logp.argmax(axis=1) == yv))
    assert s["loss"] == pytest.approx(-logp[np.arange(len(yv)), yv].mean(), rel=1e-6)
    # fit evaluates in batches of 32, score in one of 128: the same float32 sums grouped
    # differently (BLAS kernels differ by row count), so equal to float32 round-off
    assert s["loss"] == pytest.approx(h.val_loss[-1], rel=1e-6)


def test_fit_and_score_with_bce_on_zero_one_labels():
    """Binary labels 0 and 1 with Sigmoid + BCECriterion, sequence-to-one and per step through
    SequencerCriterion with lengths (only refusals of BCE targets were run: fit refusing every
    0/1 label passed the suite)."""
    from rnncore import BCECriterion, Sigmoid
    x, labels = sign_task(128, 3)
    y = labels.astype(np.float32)[:, None]                       # (N, 1) of 0.0 and 1.0
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 8, return_sequences=False), Linear(8, 1), Sigmoid())
    h = fit(m, BCECriterion(), Adam(m.parameters(), lr=0.05), x, y, epochs=6, batch_size=32,
            seed=0, progress=False)
    assert h.loss[-1] < 0.6 * h.loss[0]
    s = score(m, BCECriterion(), x, y)
    p = m.evaluate().forward(x).astype(np.float64)
    m.training()
    assert s["loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-5)
    # per step, ragged: the sign of feature 0's running mean, padding targets never read
    T, N = x.shape[:2]
    lengths = np.random.default_rng(4).integers(2, T + 1, N)
    steps = (np.cumsum(x[:, :, 0], axis=0) > 0).astype(np.float32)[:, :, None]   # (T, N, 1)
    steps[np.arange(T)[:, None] >= lengths[None, :]] = np.nan
    rnncore.manual_seed(0)
    per_step = Sequential(LSTM(2, 8), Linear(8, 1), Sigmoid())
    crit = SequencerCriterion(BCECriterion())
    h = fit(per_step, crit, Adam(per_step.parameters(), lr=0.05), x, steps, lengths, epochs=4,
            batch_size=32, seed=0, progress=False)
    assert h.loss[-1] < 0.7 * h.loss[0]
    s = score(per_step, crit, x, steps, lengths)
    p = per_step.evaluate().forward(x, lengths=lengths).astype(np.float64)[..., 0]   # (T, N)
    t = steps[..., 0].astype(np.float64)
    expected = 0.0
    for step in range(T):                                        # sum over steps of the mean
        ok = lengths > step                                      # over the rows still running
        pv, tv = p[step, ok], t[step, ok]
        expected += -np.mean(tv * np.log(pv) + (1 - tv) * np.log(1 - pv))
    assert s["loss"] == pytest.approx(expected, rel=1e-5)


def test_history_contents():
    x, y = sign_task(40, 2)
    m = classifier()
    h = fit(m, CrossEntropyCriterion(), Adam(m.parameters()), x, y, epochs=3, batch_size=16,
            validation=(x, y), progress=False)
    assert isinstance(h, History) and h.epochs == 3
    for k in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
        assert len(h[k]) == 3 and h[k] is getattr(h, k)
    assert all(0 <= a <= 1 for a in h.accuracy + h.val_accuracy)
    assert all(s > 0 for s in h.seconds)
    d = h.as_dict()
    assert d["epochs"] == 3 and d["loss"] == h.loss and d["loss"] is not h.loss
    assert h["epochs"] == 3
    assert repr(h).startswith("History(epochs=3, loss=")
    with pytest.raises(KeyError, match="nope"):
        h["nope"]
    # a name test and a loop over the names (Python's fallback asked h[0]: a KeyError)
    assert "val_loss" in h and "epochs" in h and "nope" not in h and 0 not in h
    assert list(h) == ["loss", "accuracy", "val_loss", "val_accuracy", "seconds", "epochs"]
    assert dict(h) == d


def test_epoch_loss_weights_a_partial_last_batch_by_its_size():
    """history.loss is the mean of the batch losses weighted by batch size: N = 10 in batches
    of 4 ends with a batch of 2, against the Torch7 recipe written out by hand."""
    x, y = sign_task(10, 7)
    make = lambda: classifier(seed=3).astype(np.float64)
    crit, fitted, by_hand = ClassNLLCriterion(), make(), make()
    h = fit(fitted, crit, 0.1, x, y, epochs=1, batch_size=4, shuffle=False, progress=False)
    total = 0.0
    for idx in (np.arange(0, 4), np.arange(4, 8), np.arange(8, 10)):
        xb, yb = x[:, idx].astype(np.float64), y[idx]
        by_hand.zero_grad_parameters()
        out = by_hand.forward(xb)
        loss = crit.forward(out, yb)
        by_hand.backward(xb, crit.backward(out, yb))
        by_hand.update_parameters(0.1)
        total += loss * len(idx)
    assert h.loss[0] == pytest.approx(total / 10, rel=1e-12)
    for p, q in zip(fitted.parameters(), by_hand.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("task", ["classes", "regression"])
def test_score_and_validation_are_the_evaluate_mode_loss_of_the_whole_set(task):
    """A model left in training() with Dropout: score and fit's validation run in evaluate mode,
    and weight a partial last batch by its size, so any batch_size gives the whole set's loss."""
    x, y = sign_task(10, 8)
    rnncore.manual_seed(2)
    if task == "classes":
        crit, top = ClassNLLCriterion(), [Linear(6, 2), LogSoftMax()]
    else:
        crit, top, y = MSECriterion(), [Linear(6, 1)], x.sum(axis=(0, 2))[:, None]
    m = Sequential(LSTM(2, 6, return_sequences=False), Dropout(0.5), *top).astype(np.float64)
    want = crit.forward(m.evaluate().forward(x.astype(np.float64)), y)
    for bs in (3, 4, 10, 256):
        m.training()
        assert score(m, crit, x, y, batch_size=bs)["loss"] == pytest.approx(want, rel=1e-12)
    h = fit(m, crit, 1e-300, x, y, epochs=1, batch_size=4, validation=(x, y), progress=False)
    assert h.val_loss[0] == pytest.approx(want, rel=1e-12)     # (lr 1e-300: weights as they were)


def test_every_epoch_draws_a_new_batch_order():
    """shuffle=True: the batches differ from epoch to epoch (and repeat with the same seed).
    Each sample's target is its index, so the criterion sees which samples each batch holds."""
    seen = []

    class Recording(MSECriterion):
        def forward(self, input, target):
            seen.append(tuple(np.asarray(target).ravel().astype(int)))
            return super().forward(input, target)

    x, _ = sign_task(12, 9)
    y = np.arange(12, dtype=np.float32)[:, None]
    runs = []
    for _ in range(2):
        seen.clear()
        rnncore.manual_seed(0)
        m = Sequential(LSTM(2, 4, return_sequences=False), Linear(4, 1))
        fit(m, Recording(), 1e-6, x, y, epochs=3, batch_size=4, seed=5, progress=False)
        runs.append(list(seen))
    assert runs[0] == runs[1] and len(runs[0]) == 9
    epochs = [runs[0][3 * e:3 * e + 3] for e in range(3)]
    for batches in epochs:                                      # each epoch: every sample once
        assert sorted(i for b in batches for i in b) == list(range(12))
    assert len({tuple(e) for e in epochs}) == 3, epochs


def test_regression_has_no_accuracy_and_validation_matches_score():
    r = np.random.default_rng(3)
    x = r.standard_normal((4, 30, 2)).astype(np.float32)
    y = x.sum(axis=(0, 2))[:, None]                              # (N, 1)
    rnncore.manual_seed(1)
    m = Sequential(LSTM(2, 6, return_sequences=False), Linear(6, 1))
    h = fit(m, MSECriterion(), Adam(m.parameters(), lr=0.02), x, y, epochs=4, batch_size=8,
            validation=(x[:, :10], y[:10]), progress=False)
    assert h.accuracy == [] and h.val_accuracy == [] and len(h.val_loss) == 4
    assert h.loss[-1] < h.loss[0]
    s = score(m, MSECriterion(), x[:, :10], y[:10], batch_size=8)
    assert s["accuracy"] is None and s["loss"] == pytest.approx(h.val_loss[-1], rel=1e-9)


def test_sequencer_criterion_accuracy_counts_valid_steps_only():
    r = np.random.default_rng(4)
    T, N = 5, 12
    x = r.standard_normal((T, N, 2)).astype(np.float32)
    y = (x[:, :, 0] > 0).astype(np.int64)                        # (T, N) per-step classes
    lengths = r.integers(1, T + 1, size=N)
    y_pad = np.where(np.arange(T)[:, None] < lengths[None, :], y, 0)
    rnncore.manual_seed(2)
    m = Sequencer(Sequential(LSTM(2, 5), Linear(5, 2), LogSoftMax()))
    crit = SequencerCriterion(ClassNLLCriterion())
    h = fit(m, crit, Adam(m.parameters(), lr=0.05), x, y_pad, lengths, epochs=5,
            batch_size=4, progress=False)
    assert h.loss[-1] < h.loss[0]
    s = score(m, crit, x, y_pad, lengths)
    out = m.evaluate().forward(x, lengths=lengths)
    valid = np.arange(T)[:, None] < lengths[None, :]
    expected = (out.argmax(-1) == y)[valid].mean()               # padding steps not counted
    assert s["accuracy"] == pytest.approx(expected)
    assert s["loss"] == pytest.approx(crit.forward(out, y_pad, lengths=lengths), rel=1e-6)
    # fit's own training accuracy: an update too small to move a weight (lr 1e-40, subnormal
    # in float32), one batch, so the epoch's accuracy is that of the outputs computed here
    out = m.training().forward(x, lengths=lengths)
    expected = (out.argmax(-1) == y)[valid].mean()
    assert expected != pytest.approx((out.argmax(-1) == y_pad).mean())   # (padding would show)
    h = fit(m, crit, SGD(m.parameters(), lr=1e-40), x, y_pad, lengths, epochs=1, batch_size=N,
            shuffle=False, progress=False)
    assert h.accuracy[0] == pytest.approx(expected)


class _HalfMSE(MSECriterion):                  # a user's criterion: no _rows, a batch mean
    def _loss(self, x, t):
        return 0.5 * super()._loss(x, t)

    def _grad(self, x, t):
        return 0.5 * super()._grad(x, t)


@pytest.mark.parametrize("inner", ["nll", "user"])
def test_score_with_ragged_lengths_is_the_whole_sets_loss_at_any_batch_size(inner):
    """Batch means of ragged steps average over other row counts: the batch-size-weighted mean
    of batch losses had given 3.28 (batch_size 1) to 5.90 (256) for a set whose loss is 5.89.
    score and fit's val_loss add up each step's sums and counts: criterion.forward on the set."""
    r = np.random.default_rng(5)
    T, N = 6, 40
    x = r.standard_normal((T, N, 2)).astype(np.float32)
    lengths = r.integers(1, T + 1, size=N)
    rnncore.manual_seed(3)
    if inner == "nll":
        y = r.integers(0, 3, size=(T, N))
        m = Sequencer(Sequential(LSTM(2, 5), Linear(5, 3), LogSoftMax()))
        crit = SequencerCriterion(ClassNLLCriterion())
    else:
        y = r.standard_normal((T, N, 2)).astype(np.float32)
        m = Sequencer(Sequential(LSTM(2, 5), Linear(5, 2)))
        crit = SequencerCriterion(_HalfMSE())
    whole = crit.forward(m.evaluate().forward(x, lengths=lengths), y, lengths=lengths)
    kept = crit.output
    for bs in (1, 7, 16, N, 256):
        assert score(m, crit, x, y, lengths, batch_size=bs)["loss"] == pytest.approx(whole,
                                                                                     rel=1e-6)
    assert crit.output == kept                                  # the criterion as it was
    h = fit(m, crit, 1e-3, x, y, lengths, epochs=1, batch_size=7, progress=False,
            validation=(x, y, lengths))
    after = crit.forward(m.evaluate().forward(x, lengths=lengths), y, lengths=lengths)
    assert h.val_loss[0] == pytest.approx(after, rel=1e-6)


def test_fit_takes_targets_with_nan_padding_as_a_list_of_steps_too():
    r = np.random.default_rng(6)
    T, N = 4, 10
    x = r.standard_normal((T, N, 2)).astype(np.float32)
    lengths = r.integers(1, T + 1, size=N)
    y = r.standard_normal((T, N, 1)).astype(np.float32)
    y[np.arange(T)[:, None] >= lengths[None, :]] = np.nan        # padding targets: never read
    runs = []
    for target in (y, list(y)):
        rnncore.manual_seed(1)
        m = Sequencer(Sequential(LSTM(2, 3), Linear(3, 1)))
        h = fit(m, SequencerCriterion(MSECriterion()), 0.05, x, target, lengths, epochs=2,
                batch_size=4, seed=0, progress=False)
        runs.append((h.loss, weights(m)))
    assert np.all(np.isfinite(runs[0][0])) and runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_an_optimizer_that_no_longer_fits_the_models_dtype_is_refused_up_front():
    """Adam(eps=1e-50) built for a float64 model, the model then made float32: eps is 0 there.
    fit refuses before it touches anything (it had zeroed the grads and run a batch first)."""
    x, y = sign_task(16, 4)
    m = classifier().astype(np.float64)
    opt = Adam(m.parameters(), lr=0.01, eps=1e-50)
    m.astype(np.float32)
    for p in m.parameters():
        p.grad[...] = 1.0
    w = weights(m)
    with pytest.raises(ValueError, match="eps: expected a number that is not 0 in"):
        fit(m, ClassNLLCriterion(), opt, x, y, epochs=1, progress=False)
    assert all(np.all(p.grad == 1.0) for p in m.parameters())
    for a, b in zip(w, weights(m)):
        np.testing.assert_array_equal(a, b)


def test_a_diverging_run_says_where_it_stopped():
    r = np.random.default_rng(0)
    x = (r.standard_normal((4, 32, 2)) * 1e3).astype(np.float32)
    y = (r.standard_normal((4, 32, 1)) * 1e3).astype(np.float32)
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(LSTM(2, 8), Linear(8, 1)))
    with pytest.raises(ValueError, match=r"fit, epoch \d+, batch \d+ of 4 \(the parameters are "
                                         r"as the batch before left them\): .*finite.*"
                                         r"the run diverged\?"):
        fit(m, SequencerCriterion(MSECriterion()), 1e3, x, y, epochs=20, batch_size=8,
            progress=False)
    assert m.train                                              # its mode given back


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("use_optimizer", [False, True])
def test_a_last_update_that_diverges_is_not_returned_as_a_result(use_optimizer):
    """The next batch's forward finds NaN weights; after the last batch there is none, and fit
    had returned a History (loss 7.7e11) for a model of NaN/Inf weights."""
    r = np.random.default_rng(0)
    x = r.standard_normal((5, 16, 2)).astype(np.float32)
    y = (r.standard_normal((16, 1)) * 1e6).astype(np.float32)
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 4, return_sequences=False), Linear(4, 1))
    opt = SGD(m.parameters(), lr=1e38) if use_optimizer else 1e38
    seen = []
    with pytest.raises(ValueError, match=r"fit, epoch 1, batch 1 of 1: its update made "
                                         r"parameter '.*' non-finite \(the run diverged\?"):
        fit(m, MSECriterion(), opt, x, y, epochs=1, batch_size=16, progress=False,
            callback=lambda e, h: seen.append(e))
    assert seen == [] and m.train


def test_a_parameter_non_finite_before_fit_is_not_blamed_on_an_update():
    """A frozen table's unused row held NaN before fit: the check of the last update had named
    it as made non-finite by "its update", after a whole epoch of training."""
    rnncore.manual_seed(0)
    r = np.random.default_rng(0)
    x, y = r.integers(0, 4, size=(5, 8)), r.standard_normal((8, 1)).astype(np.float32)
    m = Sequential(Embedding(5, 3), LSTM(3, 4, return_sequences=False), Linear(4, 1))
    table = m[0].parameters()[0]
    table.requires_grad = False
    table.data[4] = np.nan                                     # row 4: never looked up
    h = fit(m, MSECriterion(), 0.01, x, y, epochs=2, batch_size=4, progress=False)
    assert h.epochs == 2 and np.isnan(table.data[4]).all()


def test_callback_stops_training():
    x, y = sign_task(32, 5)
    m = classifier()
    seen = []

    def cb(epoch, history):
        seen.append((epoch, history.epochs, len(history.loss)))
        return epoch == 3

    h = fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=10, progress=False, callback=cb)
    assert h.epochs == 3 and len(h.loss) == 3
    assert seen == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]
    h = fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=10, progress=False,
            callback=lambda e, h: np.array([e == 2]))                  # one value: its truth
    assert h.epochs == 2
    with pytest.raises(TypeError, match=r"^callback: expected it to return True, False or None, "
                                        r"got ndarray \(The truth value"):
        fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=2, progress=False,
            callback=lambda e, h: np.array([True, False]))


@pytest.mark.parametrize("rule", ["adam", "sgd"])
def test_ctrl_c_amid_an_update_waits_for_its_end(rule, monkeypatch):
    """fit's docstring: after Ctrl-C the parameters (and the optimizer's state) are as the last
    finished batch left them. An update is a loop over the parameters: a SIGINT after the
    first one's update left it updated and the others not (Adam's step counts [3, 2, 2, 2, 2]).
    The interrupt now comes when the update has ended; fit puts Ctrl-C's handler back."""
    import os
    import signal
    from rnncore import optim
    rnncore.manual_seed(0)
    model = Sequential(LSTM(3, 8, return_sequences=False), Linear(8, 2))
    x = np.random.default_rng(0).standard_normal((5, 64, 3)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((64, 2)).astype(np.float32)
    opt = Adam(model.parameters(), lr=0.01) if rule == "adam" else SGD(model.parameters(), lr=0.01)
    n, updates, finished = len(model.parameters()), [0], []

    def then_interrupt(update):                  # one parameter's update, then (batch 3's
        def one(*args):                          # first) a Ctrl-C
            update(*args)
            updates[0] += 1
            if updates[0] == 2 * n + 1:
                os.kill(os.getpid(), signal.SIGINT)
        return one

    if rule == "adam":
        monkeypatch.setattr(opt, "_update", then_interrupt(opt._update))
    else:
        monkeypatch.setattr(optim, "_descend", then_interrupt(optim._descend))
    step = opt.step

    def recorded():
        step()
        finished.append({k: v.copy() for k, v in model.state_dict().items()})
    monkeypatch.setattr(opt, "step", recorded)
    # Python's own Ctrl-C handler (a process started in the background by a shell without job
    # control ignores SIGINT, and a fit then has nothing to defer)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(model, MSECriterion(), opt, x, y, epochs=1, batch_size=16, shuffle=False,
                progress=False)
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert updates[0] == 3 * n and len(finished) == 3           # batch 3's update ended
    assert all(np.array_equal(v, finished[-1][k]) for k, v in model.state_dict().items())
    if rule == "adam":
        assert [st["step"] for st in opt.state] == [3] * n


def test_same_seed_gives_bit_identical_runs():
    x, y = sign_task(48, 6)

    def run(seed, init=0):
        rnncore.manual_seed(init)
        m = Sequential(LSTM(2, 6, return_sequences=False), Dropout(0.3), Linear(6, 2),
                       LogSoftMax())
        h = fit(m, ClassNLLCriterion(), Adam(m.parameters(), lr=0.02), x, y, epochs=3,
                batch_size=10, seed=seed, progress=False)
        return h, weights(m)

    h1, w1 = run(7)
    h2, w2 = run(7)
    h3, w3 = run(8)
    assert h1.loss == h2.loss and all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w3))
    h4, w4 = run(None)                                           # order from rnncore.random
    h5, w5 = run(None)
    assert h4.loss == h5.loss and all(np.array_equal(a, b) for a, b in zip(w4, w5))


def test_float_optimizer_is_plain_sgd():
    x, y = sign_task(30, 7)
    m1, m2 = classifier(3), classifier(3)
    fit(m1, ClassNLLCriterion(), 0.3, x, y, epochs=2, batch_size=7, seed=1, progress=False)
    fit(m2, ClassNLLCriterion(), SGD(m2.parameters(), lr=0.3), x, y, epochs=2, batch_size=7,
        seed=1, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(weights(m1), weights(m2)))
    assert not all(np.array_equal(a, b) for a, b in zip(weights(m1), weights(classifier(3))))


def test_clip_bounds_the_step():
    x, y = sign_task(20, 8)
    m = classifier(4)
    before = weights(m)
    fit(m, ClassNLLCriterion(), 1.0, x, y, epochs=1, batch_size=20, clip=1e-3, progress=False)
    step = np.sqrt(sum(np.sum((a - b).astype(np.float64) ** 2)
                       for a, b in zip(weights(m), before)))
    assert 0 < step <= 1e-3 * (1 + 1e-4)


def test_clip_inf_clips_nothing():
    """``clip=inf`` is a bound no norm exceeds (as ``clip_grad_norm(params, inf)``): the run
    is the one without clip, bit for bit."""
    x, y = sign_task(20, 8)
    runs = []
    for clip in (None, float("inf"), np.float32("inf")):
        m = classifier(4)
        fit(m, ClassNLLCriterion(), 1.0, x, y, epochs=2, batch_size=5, clip=clip, seed=3,
            progress=False)
        runs.append(weights(m))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], weights(classifier(4))))
    for run in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(run, runs[0]))


def test_modes_are_restored():
    x, y = sign_task(16, 9)
    m = Sequential(LSTM(2, 4, return_sequences=False), Dropout(0.5), Linear(4, 2), LogSoftMax())
    m.evaluate()
    m[1].training()                                              # a mixed state survives too
    fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=1, validation=(x, y), progress=False)
    assert [mod.train for mod in m.modules()] == [False, False, True, False, False]
    m.training()
    score(m, ClassNLLCriterion(), x, y)
    assert all(mod.train for mod in m.modules())


def test_token_ids_and_lists_of_steps():
    r = np.random.default_rng(10)
    ids = r.integers(0, 5, size=(4, 24))                        # (T, N) token ids
    y = (ids == 3).any(axis=0).astype(np.int64)
    rnncore.manual_seed(5)
    m = Sequential(Embedding(5, 3), LSTM(3, 6, return_sequences=False), Linear(6, 2),
                   LogSoftMax())
    h = fit(m, ClassNLLCriterion(), Adam(m.parameters(), lr=0.05), ids, y, epochs=3,
            batch_size=8, progress=False)
    assert h.loss[-1] < h.loss[0]
    x, y = sign_task(20, 11)
    m1, m2 = classifier(6), classifier(6)
    h1 = fit(m1, ClassNLLCriterion(), 0.2, x, y, epochs=2, batch_size=6, seed=0, progress=False)
    h2 = fit(m2, ClassNLLCriterion(), 0.2, list(x), y, epochs=2, batch_size=6, seed=0,
             progress=False)
    assert h1.loss == h2.loss


def test_ids_padded_from_signed_and_unsigned_arrays_stay_ids():
    """pad_sequences of int64 and uint64 id arrays gave float64 (NumPy's common type of the
    two), which the Embedding then refused: ids stay int64."""
    seqs = [np.array([1, 2, 3]), np.array([4, 0], np.uint64), np.array([3], np.uint8)]
    ids, lengths = rnncore.pad_sequences(seqs)
    assert ids.dtype == np.int64 and ids[:, 1].tolist() == [4, 0, 0]
    rnncore.manual_seed(0)
    m = Sequential(Embedding(5, 2), LSTM(2, 3, return_sequences=False), Linear(3, 2),
                   LogSoftMax())
    h = fit(m, ClassNLLCriterion(), 0.1, ids, np.array([0, 1, 0]), lengths, epochs=1,
            progress=False)
    assert h.epochs == 1 and np.isfinite(h.loss[0])
    with pytest.raises(ValueError, match=r"^sequences\[1\]: expected values in .* int64"):
        rnncore.pad_sequences([np.array([1]), np.array([2 ** 63], np.uint64)])


def test_progress_bar_shows_epoch_summary(capsys):
    x, y = sign_task(16, 12)
    m = classifier()
    fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=2, batch_size=8, validation=(x, y))
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "val_acc=" in err and "loss=" in err


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(y=np.zeros(7, np.int64)), ValueError, "y: .*N = 8"),
    (dict(lengths=np.ones(7, np.int64)), ValueError, "lengths"),
    (dict(lengths=np.full(8, 9)), ValueError, "lengths"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs=2.0), TypeError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(optimizer="adam"), TypeError, "optimizer"),
    (dict(optimizer=-0.1), ValueError, "optimizer"),
    (dict(optimizer=True), TypeError, "optimizer"),
    (dict(optimizer=1e39), ValueError, "optimizer: .*finite in the parameters' dtype float32"),
    (dict(clip=0), ValueError, "clip"),
    (dict(clip=-float("inf")), ValueError, r"clip: expected a number > 0 \(or inf\), got -inf"),
    (dict(clip=float("nan")), ValueError, r"clip: expected a number > 0 \(or inf\), got nan"),
    (dict(clip="1"), TypeError, "clip"),
    (dict(shuffle=1), TypeError, "shuffle"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(callback=3), TypeError, "callback"),
    (dict(validation=(1,)), TypeError, "validation"),
    (dict(validation=(np.zeros((6, 4, 2)), np.zeros(5, np.int64))), ValueError,
     r"validation\[1\]"),
    (dict(x=np.zeros((6, 8, 2), dtype=object)), TypeError, "x"),
    (dict(x=np.zeros(8)), ValueError, "x"),
    (dict(criterion=MSECriterion), TypeError, "criterion"),
    (dict(model=Linear), TypeError, "model"),
])
def test_bad_arguments_are_refused_and_leave_the_model_alone(kwargs, exc, match):
    x, y = sign_task(8, 13)
    m = classifier()
    before = weights(m)
    args = dict(model=m, criterion=ClassNLLCriterion(), optimizer=0.1, x=x, y=y, lengths=None)
    args.update(kwargs)
    pos = [args.pop(k) for k in ("model", "criterion", "optimizer", "x", "y", "lengths")]
    with pytest.raises(exc, match=match):
        fit(*pos, progress=False, **args)
    assert all(np.array_equal(a, b) for a, b in zip(weights(m), before))
    assert all(mod.train for mod in m.modules())


def test_optimizer_of_another_model_is_refused():
    x, y = sign_task(8, 14)
    m, other = classifier(), classifier(1)
    with pytest.raises(ValueError, match="optimizer: .*another model"):
        fit(m, ClassNLLCriterion(), Adam(other.parameters()), x, y, progress=False)


def test_sequencer_targets_must_be_time_major():
    x, y = sign_task(8, 15)
    m = Sequencer(Sequential(LSTM(2, 3), Linear(3, 2), LogSoftMax()))
    with pytest.raises(ValueError, match=r"y: expected time-major targets"):
        fit(m, SequencerCriterion(ClassNLLCriterion()), 0.1, x, y, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        score(m, SequencerCriterion(ClassNLLCriterion()), x, np.zeros((6, 8), np.int64),
              batch_size=-1)


def test_bad_values_and_remember_mode_are_refused_before_any_update():
    """NaN in a late batch, or a layer carrying state, is refused up front: no weight moves."""
    rnncore.manual_seed(0)
    model = Sequential(LSTM(2, 4, return_sequences=False), Linear(4, 2), LogSoftMax())
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((3, 64, 2)).astype(np.float32)
    y = np.zeros(64, np.int64)
    x_bad = x.copy()
    x_bad[1, 60, 0] = np.nan                                      # sample 60: the last batch
    with pytest.raises(ValueError, match="x: expected finite"):
        fit(model, ClassNLLCriterion(), 0.1, x_bad, y, batch_size=16, progress=False)
    model[0].remember()
    with pytest.raises(ValueError, match=r"model: .*remember\(\)"):
        fit(model, ClassNLLCriterion(), 0.1, x, y, batch_size=16, progress=False)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


# -- targets are checked up front: a refused call changes nothing ----------------------------
def snapshot(model, opt=None):
    """Everything a refused call must leave alone: weights, grads, the optimizer's state, each
    module's attributes (a forward rebinds its caches), the rnncore.random stream."""
    return dict(data=weights(model), grads=[p.grad.copy() for p in model.parameters()],
                state=None if opt is None else [dict(s) for s in opt.state],
                attrs=[{k: id(v) for k, v in m.__dict__.items()} for m in model.modules()],
                stream=rnncore.random.generator().bit_generator.state)


def assert_untouched(model, before, opt=None):
    after = snapshot(model, opt)
    assert all(np.array_equal(a, b) for a, b in zip(after["data"], before["data"]))
    assert all(np.array_equal(a, b) for a, b in zip(after["grads"], before["grads"]))
    assert after["state"] == before["state"]
    assert after["attrs"] == before["attrs"]
    assert after["stream"] == before["stream"]


def three_classes(seed=0):
    rnncore.manual_seed(seed)
    m = Sequential(LSTM(2, 4, return_sequences=False), Dropout(0.3), Linear(4, 3), LogSoftMax())
    x = np.random.default_rng(seed).standard_normal((3, 9, 2)).astype(np.float32)
    m.forward(x[:, :2])                                          # caches of an earlier forward
    for p in m.parameters():
        p.grad[...] = 0.5                                        # grads of an earlier backward
    return m, x, np.arange(9) % 3


@pytest.mark.parametrize("case, exc, match", [
    ("last_label", ValueError, r"y: expected class ids in \[0, 2\] .*max 7"),
    ("negative_label", ValueError, r"y: expected class ids in \[0, 2\] .*min -1"),
    ("float_labels", TypeError, r"y: expected an integer array, got dtype float64"),
    ("validation_label", ValueError, r"validation\[1\]: expected class ids in \[0, 2\]"),
    ("validation_x", ValueError, r"validation\[0\]: .*x: expected \(T, B, 2\)"),
    ("y_shape", ValueError, r"y: expected shape \(9,\) .*got \(9, 1\)"),
])
def test_bad_targets_are_refused_before_the_first_update(case, exc, match):
    """Every target is checked before the first batch: a bad label in the LAST batch (or in the
    validation data, scored only after an epoch) used to be found after several updates."""
    m, x, y = three_classes()
    opt = Adam(m.parameters(), lr=0.1)
    val = None
    if case == "last_label":
        y[-1] = 7
    elif case == "negative_label":
        y[-1] = -1
    elif case == "float_labels":
        y = y.astype(float)
    elif case == "validation_label":
        val = (x, np.where(np.arange(9) == 8, 3, y))
    elif case == "validation_x":
        val = (np.zeros((3, 9, 5), np.float32), y)
    elif case == "y_shape":
        y = y[:, None]
    before = snapshot(m, opt)
    with pytest.raises(exc, match=match):
        fit(m, ClassNLLCriterion(), opt, x, y, epochs=1, batch_size=3, shuffle=False,
            validation=val, progress=False)
    assert_untouched(m, before, opt)
    assert all(s == {} for s in opt.state)                       # Adam never stepped


@pytest.mark.parametrize("where", ["x", "validation[0]"])
def test_ids_beyond_the_embedding_are_refused_before_the_first_update(where):
    """An id out of range in the last batch (or in the validation data) used to be found when
    its batch came, after updates."""
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(Embedding(5, 3), LSTM(3, 4), Linear(4, 2), LogSoftMax()))
    ids = np.random.default_rng(0).integers(0, 5, size=(4, 9))   # (T, N)
    y = np.zeros((4, 9), np.int64)
    bad = ids.copy()
    bad[-1, -1] = 5
    x, val = (bad, None) if where == "x" else (ids, (bad, y))
    opt = Adam(m.parameters(), lr=0.1)
    before = snapshot(m, opt)
    with pytest.raises(ValueError, match=rf"^{re.escape(where)}: .*ids in \[0, 4\]"):
        fit(m, SequencerCriterion(ClassNLLCriterion()), opt, x, y, epochs=1, batch_size=3,
            shuffle=False, validation=val, progress=False)
    assert_untouched(m, before, opt)


def test_score_refuses_bad_labels_before_any_forward():
    m, x, y = three_classes(1)
    y[4] = 3
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"y: expected class ids in \[0, 2\]"):
        score(m, CrossEntropyCriterion(), x, y, batch_size=2)
    assert_untouched(m, before)
    with pytest.raises(TypeError, match="y: expected an integer array"):
        score(m, ClassNLLCriterion(), x, y.astype(np.float32))
    assert_untouched(m, before)


def test_per_step_labels_are_checked_at_valid_steps_only():
    """SequencerCriterion never reads the targets at padding steps: anything goes there, but
    a bad id at a valid step of the last sample is refused before the first update."""
    r = np.random.default_rng(5)
    T, N = 4, 6
    x = r.standard_normal((T, N, 2)).astype(np.float32)
    lengths = np.array([4, 2, 3, 1, 4, 2])
    y = r.integers(0, 3, size=(T, N))
    y[np.arange(T)[:, None] >= lengths[None, :]] = 99            # padding
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(LSTM(2, 4), Linear(4, 3), LogSoftMax()))
    crit = SequencerCriterion(ClassNLLCriterion())
    h = fit(m, crit, 0.1, x, y, lengths, epochs=1, batch_size=2, progress=False)
    assert np.isfinite(h.loss[0])
    assert score(m, crit, x, y, lengths)["accuracy"] is not None
    y[1, 5] = 3                                                  # sample 5, a valid step
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"y: expected class ids in \[0, 2\].*max 3"):
        fit(m, crit, 0.1, x, y, lengths, epochs=1, batch_size=2, progress=False)
    assert_untouched(m, before)
    with pytest.raises(ValueError, match=r"model: expected an output \(N, C\)"):
        fit(m, ClassNLLCriterion(), 0.1, x, y[0], progress=False)   # (T, N, C) output
    assert_untouched(m, before)


def test_regression_targets_are_checked_against_the_output():
    from rnncore import BCECriterion, Sigmoid
    r = np.random.default_rng(6)
    x = r.standard_normal((3, 10, 2)).astype(np.float32)
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 4, return_sequences=False), Linear(4, 2), Sigmoid())
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"y: expected shape \(10, 2\) for MSECriterion"):
        fit(m, MSECriterion(), 0.1, x, np.zeros(10), progress=False)
    t = r.uniform(size=(10, 2))
    t[9, 1] = 1.5                                                # the last batch
    with pytest.raises(ValueError, match=r"y: expected values in \[0, 1\] for BCECriterion"):
        fit(m, BCECriterion(), 0.1, x, t, batch_size=3, progress=False)
    with pytest.raises(TypeError, match="y: expected a real-valued array"):
        fit(m, MSECriterion(), 0.1, x, np.zeros((10, 2), bool), progress=False)
    assert_untouched(m, before)


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e38), (np.float64, 1e300)])
def test_mse_targets_too_large_for_a_finite_loss_are_refused_up_front(dtype, big):
    """A finite but huge target made the criterion refuse only when its batch came, after the
    earlier batches had trained the model (and stepped the optimizer)."""
    x = np.ones((3, 8, 2), np.float32)
    y = np.ones((8, 1))
    y[-1] = big
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 3, return_sequences=False), Linear(3, 1)).astype(dtype)
    opt = Adam(m.parameters())
    before = snapshot(m, opt)
    with pytest.raises(ValueError, match=r"y: expected \|values\| <= .* for MSECriterion .*got "):
        fit(m, MSECriterion(), opt, x, y, epochs=1, batch_size=4, shuffle=False, progress=False)
    assert_untouched(m, before, opt)
    y[-1] = 1e15                                                 # large, but the loss fits
    assert np.isfinite(fit(m, MSECriterion(), opt, x, y, epochs=1, batch_size=4,
                           shuffle=False, progress=False).loss[0])


def test_per_step_regression_targets_may_be_nan_at_padding_steps():
    """SequencerCriterion(MSECriterion()) accepts anything at padding steps; fit and score
    refused NaN there."""
    r = np.random.default_rng(7)
    x = r.standard_normal((4, 5, 2)).astype(np.float32)
    lengths = np.array([4, 1, 3, 2, 4])
    y = r.standard_normal((4, 5, 1))
    y[np.arange(4)[:, None] >= lengths[None, :]] = np.nan
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(LSTM(2, 3), Linear(3, 1)))
    crit = SequencerCriterion(MSECriterion())
    assert np.isfinite(fit(m, crit, 0.1, x, y, lengths, epochs=1, batch_size=2,
                           progress=False).loss[0])
    assert np.isfinite(score(m, crit, x, y, lengths)["loss"])
    y[2, 0, 0] = np.nan                                          # a valid step
    before = snapshot(m)
    with pytest.raises(ValueError, match="y: expected finite values"):
        fit(m, crit, 0.1, x, y, lengths, progress=False)
    assert_untouched(m, before)


def test_score_between_a_forward_and_its_backward_changes_neither():
    m, x, y = three_classes(3)
    m.evaluate()                                                 # (no dropout draws)
    crit = ClassNLLCriterion()
    out = m.forward(x)
    g = crit.backward(out, y)
    twin, _, _ = three_classes(3)
    twin.evaluate()
    twin.forward(x)
    def kept():                                      # what a forward keeps (not memos of structure)
        names = ("train", "_inputs", "_valid", "_lengths", "_cache", "h_n", "c_n", "_mask")
        return [{k: id(v) for k, v in mod.__dict__.items() if k in names} for mod in m.modules()]
    before = kept()
    score(m, crit, x[:, ::-1] * 2, y[::-1], batch_size=4)       # other data, other batches
    assert kept() == before
    assert not m.train                                           # (its mode, too)
    m.backward(x, g)
    twin.backward(x, g)
    for a, b in zip(m.parameters(), twin.parameters()):
        np.testing.assert_array_equal(a.grad, b.grad)


def test_score_leaves_the_criterion_as_its_last_forward_left_it():
    """A SequencerCriterion's backward without lengths reuses its last forward's: a score in
    between had left its own last batch's lengths (and output) there."""
    r = np.random.default_rng(8)
    x = r.standard_normal((4, 6, 2)).astype(np.float32)
    lengths = np.array([4, 1, 3, 2, 4, 2])
    y = r.integers(0, 3, size=(4, 6))
    rnncore.manual_seed(0)
    m = Sequencer(Sequential(LSTM(2, 3), Linear(3, 3), LogSoftMax()))
    crit = SequencerCriterion(ClassNLLCriterion())
    out = m.forward(x, lengths=lengths)
    loss = crit.forward(out, y, lengths=lengths)
    expected = crit.backward(out.copy(), y)                     # (not the kept gradient)
    score(m, crit, x[:, :4], y[:, :4], np.array([1, 1, 2, 1]), batch_size=3)
    assert crit.output == loss
    np.testing.assert_array_equal(crit.backward(out.copy(), y), expected)


def test_mse_target_bound_counts_the_summed_squares():
    """float64: targets each within sqrt(max)/2 could still overflow a batch's summed loss."""
    x = np.ones((2, 16, 1), np.float32)
    y = np.ones((16, 1))
    y[8:] = 6e153                        # each square ~3.6e307: eight of them overflow
    rnncore.manual_seed(0)
    m = Sequential(LSTM(1, 2, return_sequences=False), Linear(2, 1)).astype(np.float64)
    before = snapshot(m)
    with pytest.raises(ValueError, match=r"y: expected \|values\| <= .* for MSECriterion"):
        fit(m, MSECriterion(), 0.1, x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    assert_untouched(m, before)


class Head(rnncore.Module):
    """A module of the user's own: (N, 4) -> (N, 3) log-probabilities. It keeps the base
    class's ``output_shape`` (the input's shape, wrong here), so `fit` learns the width from a
    forward that must leave no trace."""

    def __init__(self):
        super().__init__()
        self.w = self._param("w", np.random.default_rng(0).standard_normal((4, 3)))

    def _forward(self, x, lengths):
        self.last = x
        z = x @ self.w.data
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def _backward(self, x, gy):
        p = np.exp(self._forward(x, None))                       # softmax, (N, 3)
        gz = gy - p * gy.sum(axis=1, keepdims=True)              # through the log-softmax
        self.w.grad += x.T @ gz
        return (gz @ self.w.data.T).astype(x.dtype)


def test_a_model_of_ones_own_modules_is_probed_without_a_trace():
    m, x, y = three_classes(2)
    m = Sequential(m[0], Dropout(0.5), Head())
    m.forward(x[:, :2])
    before = snapshot(m)
    bad = y.copy()
    bad[-1] = 3                                                  # C = 3, not 4 (Head's input)
    with pytest.raises(ValueError, match=r"y: expected class ids in \[0, 2\]"):
        fit(m, ClassNLLCriterion(), 0.1, x, bad, batch_size=3, progress=False)
    assert_untouched(m, before)
    with pytest.raises(ValueError, match=r"validation\[0\]: the model refuses it: x: expected"):
        fit(m, ClassNLLCriterion(), 0.1, x, y, validation=(x[..., :1], y), progress=False)
    assert_untouched(m, before)
    h = fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=2, batch_size=3, progress=False)
    assert h.epochs == 2 and all(np.isfinite(h.loss))


def test_fit_refuses_a_repeated_module_before_touching_the_model():
    """A Tanh used twice in a chain (its backward would be wrong) is refused up front, the
    model as it was; a Dropout used twice counts as in training mode, where fit runs it."""
    rnncore.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 8, 2)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 8)
    t, d = rnncore.Tanh(), rnncore.Dropout(0.5)
    with_tanh = rnncore.Sequential(rnncore.LSTM(2, 3, return_sequences=False), t, rnncore.Linear(3, 3), t,
                                   rnncore.LogSoftMax())
    with_dropout = rnncore.Sequential(rnncore.LSTM(2, 3, return_sequences=False), d, rnncore.Linear(3, 3), d,
                                      rnncore.LogSoftMax()).evaluate()
    for model, mode in ((with_tanh, True), (with_dropout, False)):
        before = {k: v.copy() for k, v in model.state_dict().items()}
        caches = [m.__dict__.get("_cache") for m in model.modules()]
        with pytest.raises(ValueError, match="is the same"):
            rnncore.fit(model, rnncore.ClassNLLCriterion(), rnncore.optim.SGD(model.parameters(), lr=0.1),
                        x, y, epochs=1, progress=False)
        assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())
        assert caches == [m.__dict__.get("_cache") for m in model.modules()]
        assert all(m.train == mode for m in model.modules())     # every mode as it was


def test_fit_save_and_friends_are_imported_on_first_use():
    """``import rnncore`` leaves out what a training step written by hand does not need
    (start-up time); the names still resolve, to the same objects as their modules'."""
    import subprocess
    import sys
    code = ("import sys, rnncore\n"
            "assert 'rnncore.train' not in sys.modules and 'tqdm' not in sys.modules\n"
            "from rnncore import fit, score, History, save, load, pad_sequences\n"
            "import rnncore.train, rnncore.io, rnncore.data\n"
            "assert (fit, score, History) == (rnncore.train.fit, rnncore.train.score, rnncore.train.History)\n"
            "assert (save, load, pad_sequences) == (rnncore.io.save, rnncore.io.load, rnncore.data.pad_sequences)\n"
            "assert rnncore.fit is fit and 'fit' in dir(rnncore)\n"
            "assert rnncore.io is sys.modules['rnncore.io'] and rnncore.data.pad_sequences is pad_sequences\n"
            "ns = {}\n"
            "exec('from rnncore import *', ns)\n"
            "assert ns['fit'] is fit and ns['LSTM'] is rnncore.LSTM and 'importlib' not in ns\n"
            "try:\n    rnncore.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
            "else:\n    raise AssertionError('no AttributeError')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_fit_names_the_layer_that_does_not_fit_the_one_before():
    model = Sequential(LSTM(3, 4, return_sequences=False), Linear(5, 2))
    with pytest.raises(ValueError, match=re.escape("x: modules[1] (Linear), given the output of "
                                                   "modules[0] (LSTM): expected (..., 5), got (6, 4)")):
        rnncore.fit(model, rnncore.MSECriterion(), 0.1, np.ones((2, 6, 3), np.float32),
                    np.ones((6, 2)), progress=False)


class _L1(rnncore.Criterion):                  # a criterion of one's own (no built-in base)
    def _check(self, input, target):
        return np.asarray(input, np.float64), np.asarray(target, np.float64)

    def _loss(self, x, t):
        return np.abs(x - t).mean()

    def _grad(self, x, t):
        return np.sign(x - t) / x.size


@pytest.mark.parametrize("bad", ["x", "validation[0]"])
def test_fit_with_a_criterion_of_ones_own_checks_the_inputs_before_any_update(bad):
    """Its targets are its own business, but x and validation[0] are the model's: a wrong
    feature count in validation[0] had let a whole epoch of updates run (parameters, grads
    and Adam's state changed) before a refusal that named x; one in x was refused inside batch
    1, after the caller's accumulated gradients were zeroed."""
    rnncore.manual_seed(0)
    r = np.random.default_rng(0)
    x = r.standard_normal((5, 16, 2)).astype(np.float32)
    y = np.zeros((16, 3))
    wrong = np.ones((5, 16, 3), np.float32)
    model = Sequential(LSTM(2, 4, return_sequences=False), Linear(4, 3))
    opt = Adam(model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad[...] = 0.5
    kept = {k: v.copy() for k, v in model.state_dict().items()}
    args = (wrong, y, None) if bad == "x" else (x, y, dict(validation=(wrong, y)))
    with pytest.raises(ValueError, match=re.escape(bad) + r".*expected \(T, B, 2\)"):
        fit(model, _L1(), opt, args[0], args[1], epochs=1, batch_size=8, progress=False,
            **(args[2] or {}))
    assert all(np.array_equal(v, kept[k]) for k, v in model.state_dict().items())
    assert all((p.grad == 0.5).all() for p in model.parameters())
    assert not any(opt.state)


def test_fit_keeps_the_callers_gradients_when_the_first_batch_is_refused():
    """A criterion of one's own refusing the first batch's targets: the gradients the caller
    had accumulated are as they were (fit zeroes them only once a batch's loss is computed)."""
    class Picky(_L1):
        def _check(self, input, target):
            raise ValueError("target: refused by the criterion")

    rnncore.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((5, 16, 2)).astype(np.float32)
    model = Sequential(LSTM(2, 4, return_sequences=False), Linear(4, 3))
    for p in model.parameters():
        p.grad[...] = 0.5
    with pytest.raises(ValueError, match="refused by the criterion"):
        fit(model, Picky(), 0.1, x, np.zeros((16, 3)), epochs=1, batch_size=8, progress=False)
    assert all((p.grad == 0.5).all() for p in model.parameters())


@pytest.mark.parametrize("where", ["x", "validation", "score"])
def test_floats_beyond_the_models_dtype_are_refused_before_any_update(where):
    """float64 data holding 1e39 for a float32 model: its forward refuses that batch, so fit
    refused it only when the batch came up, after the updates of the batches before (and
    named the validation data x)."""
    x, y = sign_task(8, 3)
    x = x.astype(np.float64)
    bad = x.copy()
    bad[0, -1, 0] = 1e39                                 # in the last sample: the last batch
    rnncore.manual_seed(0)
    m = Sequential(LSTM(2, 4, return_sequences=False), Linear(4, 2), LogSoftMax())
    before = {k: v.copy() for k, v in m.state_dict().items()}
    name = "validation[0]" if where == "validation" else "x"
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}: expected values within "
                                         rf"\+-3\.403e\+38 \(the range of float32\)"):
        if where == "x":
            fit(m, ClassNLLCriterion(), 0.1, bad, y, epochs=1, batch_size=2, shuffle=False,
                progress=False)
        elif where == "validation":
            fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=1, progress=False,
                validation=(bad, y))
        else:
            score(m, ClassNLLCriterion(), bad, y)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    fit(m, ClassNLLCriterion(), 0.1, x, y, epochs=1, progress=False)   # in range: trains


@pytest.mark.parametrize("optimizer, clip", [("adam", None), ("momentum", None),
                                             ("plain", 1.0)])
def test_parameters_tied_through_a_view_are_refused_before_the_first_batch(optimizer, clip):
    """The step of a rule with state (and clip_grad_norm) refuses two Parameters holding
    different views of one array; inside fit that came after the first batch's backward had
    overwritten every grad and the layers' caches. Plain SGD takes such a tie (its updates in
    turn): fit trains it."""
    rng = np.random.default_rng(1)
    m = Sequencer(Sequential(Linear(2, 3), rnncore.Tanh(), Linear(3, 2)))
    m.module[2].weight.data = m.module[0].weight.data.T
    for p in m.parameters():
        p.grad[...] = 7.0
    opt = {"adam": lambda: Adam(m.parameters()),
           "momentum": lambda: SGD(m.parameters(), 0.1, momentum=0.9),
           "plain": lambda: SGD(m.parameters(), 0.1)}[optimizer]()
    x, y = rng.standard_normal((3, 4, 2)), np.zeros((3, 4, 2))
    with pytest.raises(ValueError, match=r"^model: '0\.0\.weight' at \[0\] and '0\.2\.weight' at "
                                         r"\[2\] hold different views of the same memory"):
        fit(m, SequencerCriterion(MSECriterion()), opt, x, y, epochs=1, progress=False, clip=clip)
    assert all((p.grad == 7.0).all() for p in m.parameters())
    fit(m, SequencerCriterion(MSECriterion()), SGD(m.parameters(), 0.1), x, y, epochs=1,
        progress=False)
