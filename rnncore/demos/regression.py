"""Demo ``regression``: "my LSTM regressor returns one value per token - which is the prediction?"

    python -m rnncore demo regression           # a few seconds

Sentences of made-up words, each word with a score in [-1, 1] ("awful" -1 ... "superb" +1);
a sentence's target is the mean score of its words. Sentences have 3 to 10 words, so a batch is
ragged: ``x`` is (T, B) word ids, zero-padded, with ``lengths`` (B,).

The model is ``Embedding -> LSTM -> Linear(H, 1)``. Built with ``return_sequences=True`` it
returns one value per word, ``(T, B, 1)``: value t (counting from 0) is the model's estimate
after reading words 0..t, the first t+1. The prediction for the sentence is the value at its
LAST VALID word, ``t = lengths[b]-1``. So "the last output or the last hidden state?" has one
answer: the LSTM's output at a step is its hidden state h_t, so its output at the last valid
word is its final state ``h_n[-1]``, and the prediction is ``Linear(h_n[-1])``, exactly what
``return_sequences=False`` (or `LastStep`) returns. ``output[-1]``, the last row of the padded
batch, is that only for the longest sentences: for a shorter one it is the output at a padding
step, 0 (given ``lengths=``, a `Sequential` sets its outputs at padding steps to 0, as the LSTM
does its own; the three layers called one by one would give ``Linear(0)``, the bias, there).

Bidirectional: the output at step t is ``[forward h_t, backward h_t]``. The forward direction
ends at the last valid word, so the forward half of ``output[lengths-1]`` is ``h_n[-2]``; the
backward direction reads the sentence from its last word to its first and ends at step 0, so
``h_n[-1]`` is the backward half of ``output[0]``. The backward half of ``output[-1]`` has read
a single word (or, in a shorter sentence, nothing: it is padding). The demo prints the max
absolute differences that show each of these.
"""

import time

import numpy as np

import rnncore
from rnncore import LSTM, Embedding, Linear, MSECriterion, Sequential, optim

from .. import _checks
from . import _outputs
from .functions import as_generator

__all__ = ["WORDS", "SCORES", "make_sentences", "run"]

WORDS = ("awful", "bad", "poor", "dull", "meh", "okay", "fine", "good", "great", "superb")
SCORES = np.linspace(-1.0, 1.0, len(WORDS))       # word i's score; ids are 1..10, 0 pads

#: The file ``plot=`` writes in its folder (checked before any training: _outputs.plot_problem).
PLOT_FILES = ("regression_history.png",)
_SIZES = {"hidden": (32, 16), "train": (3000, 1000), "epochs": (15, 8), "test": (500, 200)}


def make_sentences(n, rng, min_words=3, max_words=10):
    """n random sentences: ids (T, n) int64 (1-based word ids, 0 = padding), targets (n, 1)
    float32 (mean word score), lengths (n,).

    rng: a numpy Generator, or a seed for one; each sentence has min_words to max_words words
    (1 <= min_words <= max_words).
    """
    n = _checks.positive_int(n, "n")
    rng = as_generator(rng)
    min_words = _checks.positive_int(min_words, "min_words")
    max_words = _checks.positive_int(max_words, "max_words")
    if min_words > max_words:
        raise ValueError(f"min_words: expected at most max_words = {max_words}, got {min_words}")
    lengths = rng.integers(min_words, max_words + 1, n)
    sentences = [rng.integers(1, len(WORDS) + 1, L) for L in lengths]
    ids, lengths = rnncore.pad_sequences(sentences)                  # (T, n), (n,)
    targets = np.array([SCORES[s - 1].mean() for s in sentences], dtype=np.float32)[:, None]
    return ids.astype(np.int64), targets, lengths


def _words(ids, length):
    return " ".join(WORDS[i - 1] for i in ids[:length])


def run(seed=0, epochs=None, hidden=None, quick=False, progress=True, save=None, plot=None,
        print_fn=print):
    """Train the regressor, then print the numbers that say which output is the prediction.

    returns a dict: test_rmse, baseline_rmse (always predicting the mean), history, model (the
    trained sequence-to-one regressor), and for the
    batch shown: lengths, targets, last_valid (output at t = lengths-1), from_h_n
    (Linear(h_n[-1])), seq_to_one (the return_sequences=False model), output_last_row
    (output[-1]), no_lengths_last_row (output[-1] when lengths= is forgotten), the max abs
    differences diff_lstm_last_valid_vs_h_n (the LSTM's own output at t = lengths-1 against
    its h_n[-1]), diff_last_valid_vs_seq_to_one, diff_h_n_vs_seq_to_one,
    diff_last_row_vs_seq_to_one (short sentences only), bias (the Linear's, which a padding
    step would show without the Sequential's zeroing), and the bidirectional checks
    bi_forward_last_valid_vs_h_n, bi_backward_last_row_vs_h_n (the whole batch),
    bi_backward_last_row_vs_h_n_full (full-length sentences only), bi_backward_step0_vs_h_n,
    bi_seq_to_one_vs_h_n; with ``save`` the path written (saved), with ``plot`` the figures
    (plots); and seconds, the wall time of the run.
    """
    q = 1 if quick else 0
    size = {k: v[q] for k, v in _SIZES.items()}
    if hidden is not None:
        size["hidden"] = _checks.positive_int(hidden, "hidden")
    if epochs is not None:
        size["epochs"] = _checks.positive_int(epochs, "epochs")
    save, plot = _outputs.check(save, plot, PLOT_FILES, __name__.rsplit(".", 1)[1])   # (first)
    H, E, V = size["hidden"], 8, len(WORDS) + 1
    out = {}
    t_start = time.perf_counter()
    rnncore.manual_seed(seed)
    rng = np.random.default_rng(seed)

    # 1. Train a sequence-to-one regressor: the prediction is one number per sentence.
    x, y, lengths = make_sentences(size["train"], rng)
    xt, yt, lt = make_sentences(size["test"], rng)
    model = Sequential(Embedding(V, E), LSTM(E, H, return_sequences=False), Linear(H, 1))
    epochs = f"{size['epochs']} epoch" + "s" * (size["epochs"] != 1)
    print_fn(f"Sentences of 3-10 words, target = mean word score in [-1, 1]; "
             f"{size['train']} sentences, {epochs}:\n"
             f"  Embedding({V}, {E}) -> LSTM({E}, {H}, return_sequences=False) -> Linear({H}, 1), "
             f"MSE, Adam lr 1e-2")
    history = rnncore.fit(model, MSECriterion(), optim.Adam(model.parameters(), lr=1e-2),
                          x, y, lengths, epochs=size["epochs"], batch_size=32, clip=1.0,
                          validation=(xt, yt, lt), progress=progress, seed=seed)
    rmse = float(np.sqrt(rnncore.score(model, MSECriterion(), xt, yt, lt)["loss"]))
    base = float(np.sqrt(np.mean((yt - y.mean()) ** 2)))
    out.update(test_rmse=rmse, baseline_rmse=base, history=history.as_dict(), model=model)
    print_fn(f"  test RMSE {rmse:.3f} (always predicting the mean: {base:.3f})")

    # 2. The same weights with return_sequences=True: one value per word.
    per_word = Sequential(Embedding(V, E), LSTM(E, H), Linear(H, 1))
    per_word.load_state_dict(model.state_dict())              # same keys: 0.weight, ...
    per_word.evaluate()
    model.evaluate()
    pick = np.array([int(np.argmax(lt == 10))] +
                    [int(np.argmax(lt == L)) for L in (7, 5, 3)])   # one 10-word, then shorter
    xb, yb, lb = np.ascontiguousarray(xt[:, pick]), yt[pick], lt[pick]
    T, B = xb.shape
    seq = per_word.forward(xb, lengths=lb)                       # (T, B, 1)
    lstm, linear = per_word[1], per_word[2]
    last_valid = seq[lb - 1, np.arange(B)]                       # (B, 1): output at t = lengths-1
    from_h = linear.forward(lstm.h_n[-1])                        # (B, 1): Linear(h_n[-1])
    hid = lstm.forward(per_word[0].forward(xb), lengths=lb)      # (T, B, H): the LSTM's h_t
    d0 = float(np.abs(hid[lb - 1, np.arange(B)] - lstm.h_n[-1]).max())
    s2o = model.forward(xb, lengths=lb)                          # (B, 1)
    last_row = seq[-1]                                           # (B, 1): output[-1]
    no_len = per_word.forward(xb)[-1]                            # lengths= forgotten
    short = lb < T
    print_fn(f"\nOne batch, x {xb.shape} word ids, lengths {lb.tolist()}; "
             f"per-word model output {seq.shape}:")
    print_fn(f"  sentence 0: \"{_words(xb[:, 0], lb[0])}\" (target {yb[0, 0]:+.3f})")
    print_fn("  output after each word: " + " ".join(f"{v:+.2f}" for v in seq[:lb[0], 0, 0]))
    print_fn(f"\n  {'b':>2} {'len':>4} {'target':>8} {'out[len-1]':>11} {'Linear(h_n[-1])':>16} "
             f"{'seq-to-one':>11} {'out[-1]':>9} {'out[-1], no lengths':>20}")
    for b in range(B):
        print_fn(f"  {b:>2} {lb[b]:>4} {yb[b, 0]:>+8.3f} {last_valid[b, 0]:>+11.4f} "
                 f"{from_h[b, 0]:>+16.4f} {s2o[b, 0]:>+11.4f} {last_row[b, 0]:>+9.4f} "
                 f"{no_len[b, 0]:>+20.4f}")
    d1 = float(np.abs(last_valid - s2o).max())
    d2 = float(np.abs(from_h - s2o).max())
    d3 = float(np.abs(last_row - s2o)[short].max())
    print_fn(f"\n  max |LSTM's h[lengths-1] - h_n[-1]|    = {d0:.1e}  <- the LSTM's last "
             f"valid output IS h_n[-1]")
    print_fn(f"  max |out[lengths-1] - seq-to-one|      = {d1:.1e}  <- the prediction")
    print_fn(f"  max |Linear(h_n[-1]) - seq-to-one|     = {d2:.1e}  <- the same number")
    print_fn(f"  max |out[-1] - seq-to-one|, short ones = {d3:.3f}    <- output[-1] is not it:")
    print_fn("      for a short sentence it is a padding step's output, 0 (not the bias "
             f"{linear.bias.data[0]:+.4f} that\n      Linear(0) would give: the Sequential "
             f"zeroes it), whatever the prediction")
    print_fn("  Without lengths= the LSTM reads the padding ids as words: every short "
             "sentence's\n  number changes (last column).")
    out.update(lengths=lb.tolist(), targets=yb[:, 0].tolist(), last_valid=last_valid[:, 0].tolist(),
               from_h_n=from_h[:, 0].tolist(), seq_to_one=s2o[:, 0].tolist(),
               output_last_row=last_row[:, 0].tolist(), no_lengths_last_row=no_len[:, 0].tolist(),
               diff_lstm_last_valid_vs_h_n=d0, diff_last_valid_vs_seq_to_one=d1,
               diff_h_n_vs_seq_to_one=d2, diff_last_row_vs_seq_to_one=d3,
               bias=float(linear.bias.data[0]))

    # 3. Bidirectional: which row holds which final state.
    Hb = max(H // 2, 1)
    bi = LSTM(E, Hb, bidirectional=True)
    emb = per_word[0].forward(xb)                                # (T, B, E)
    o = bi.forward(emb, lengths=lb)                              # (T, B, 2*Hb)
    h_n = bi.h_n                                                 # (2, B, Hb): [forward, backward]
    fwd_last = o[lb - 1, np.arange(B), :Hb]
    bf = float(np.abs(fwd_last - h_n[-2]).max())
    bb_last = float(np.abs(o[-1, :, Hb:] - h_n[-1]).max())
    bb_last_full = float(np.abs(o[-1, ~short, Hb:] - h_n[-1][~short]).max())
    bb0 = float(np.abs(o[0, :, Hb:] - h_n[-1]).max())
    bi_last = LSTM(E, Hb, bidirectional=True, return_sequences=False)
    cat = bi_last.load_state_dict(bi.state_dict()).forward(emb, lengths=lb)   # (B, 2*Hb)
    bs = float(np.abs(cat - np.concatenate([h_n[-2], h_n[-1]], axis=1)).max())
    print_fn(f"\nBidirectional LSTM({E}, {Hb}, bidirectional=True) on the same batch, untrained "
             f"(the identities\nhold for any weights): output {o.shape}, h_n {h_n.shape} "
             f"= [forward, backward]")
    print_fn(f"  max |output[lengths-1, :, :{Hb}] - h_n[-2]| = {bf:.1e}  "
             f"forward half at the last valid word")
    print_fn(f"  max |output[0, :, {Hb}:] - h_n[-1]|         = {bb0:.1e}  "
             f"the backward direction ends at step 0")
    print_fn(f"  max |output[-1, :, {Hb}:] - h_n[-1]|        = {bb_last:.3f}    "
             f"output[-1] is NOT the final state")
    print_fn(f"      (full-length sentence only: {bb_last_full:.3f}; its backward half has read "
             f"one word)")
    print_fn(f"  max |return_sequences=False - [h_n[-2], h_n[-1]]| = {bs:.1e}  "
             f"both final states, side by side")
    out.update(bi_forward_last_valid_vs_h_n=bf, bi_backward_last_row_vs_h_n=bb_last,
               bi_backward_last_row_vs_h_n_full=bb_last_full, bi_backward_step0_vs_h_n=bb0,
               bi_seq_to_one_vs_h_n=bs)

    if save is not None:
        path = rnncore.save(model, save)
        out["saved"] = str(path)
        print_fn(f"\nSaved the regressor to {path}; load it with rnncore.load({str(path)!r})")
    if plot is not None:
        import os

        from rnncore import plots
        os.makedirs(plot, exist_ok=True)
        path = plots.plot_history(history, os.path.join(plot, PLOT_FILES[0]))
        out["plots"] = [path]
        print_fn(f"\nWrote {path}")
    out["seconds"] = time.perf_counter() - t_start
    print_fn(f"\nTotal {out['seconds']:.1f} s")
    return out
