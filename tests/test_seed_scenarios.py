"""The questions this project grew from, as tests: each scenario runs through the public API.

1. A Lua ``rnn`` user's Sequencer LSTM that should tell line / parabola / sqrt apart from 8 (x, y)
   points (fixed k and b, a class target at every step), ported line for line.
2. "My LSTM regressor returns one value per token": a sequence-to-one regressor (Embedding ->
   LSTM -> Linear, MSE, Adam) that fits two sentences' scores; the prediction is the output at
   each sentence's last real token, where the LSTM's output is its final hidden state h_n.
3. "Why 17152?": the Keras parameter counts of two stacked LSTMs.
4. "How do bidirectional outputs combine?": [forward | backward] at every step, h_n as
   [forward, backward], the backward direction ending at step 0, all as PyTorch has them.
"""

import numpy as np

import rnncore
from rnncore import (LSTM, ClassNLLCriterion, Embedding, Linear, LogSoftMax, MSECriterion,
                     Sequencer, SequencerCriterion, Sequential, optim)
from rnncore.demos import regression

from _torch import torch  # noqa: E402

K, B0 = 2.0, 0.5                                   # the Lua script's fixed slope and offset
CURVES = [lambda x: K * x + B0, lambda x: K * x ** 2 + B0, lambda x: K * np.sqrt(x) + B0]


def functions_data(n, rng, T=8):
    """n sequences of T points (x, y) on one of the three curves; class ids at every step."""
    cls = rng.integers(0, 3, n)
    x = np.sort(rng.uniform(0, 2, (n, T)), axis=1)
    y = np.stack([CURVES[c](xi) for c, xi in zip(cls, x)])
    seq = np.stack([x, y], axis=-1).transpose(1, 0, 2).astype(np.float32)    # (T, n, 2)
    return seq, np.repeat(cls[None, :], T, axis=0)                            # targets (T, n)


def test_the_lua_sequencer_port_learns_line_parabola_sqrt():
    # Plain SGD at lr 0.1 without clipping (the Lua recipe) learns the task but has occasional
    # one-epoch spikes (test accuracy 0.3-0.7 for an epoch, then back to ~0.99; over seeds 0-3,
    # both LSTM kernel paths, and float32 round-off changes as small as the order of two
    # subtractions in LogSoftMax, which seed has the most of them moves), so one final epoch of
    # one seed is not a stable measure: with two seeds, each run must reach > 95 % and their
    # last 10 epochs together sit above 90 % in the median.
    accuracies = []
    for seed in (0, 1):
        run = _lua_recipe_accuracies(seed)
        assert max(run) > 0.95, (seed, run)
        accuracies += run
    assert np.median(accuracies) > 0.9, accuracies


def _lua_recipe_accuracies(seed):
    """Test accuracy at the last step after each of the last 10 of 40 epochs of the Lua recipe."""
    rnncore.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, t = functions_data(512, rng)
    x_test, t_test = functions_data(300, rng)
    # The Lua model, line for line: nn.Sequencer(nn.Sequential():add(nn.LSTM(2, 100))
    #   :add(nn.Linear(100, 3)):add(nn.LogSoftMax())), nn.SequencerCriterion(nn.ClassNLLCriterion())
    model = Sequencer(Sequential(LSTM(2, 100), Linear(100, 3), LogSoftMax()))
    criterion = SequencerCriterion(ClassNLLCriterion())
    accuracies = []
    for epoch in range(40):
        model.training()
        for i in range(0, x.shape[1], 32):
            xb, tb = x[:, i:i + 32], t[:, i:i + 32]
            out = model.forward(xb)
            criterion.forward(out, tb)
            model.zero_grad_parameters()
            model.backward(xb, criterion.backward(out, tb))
            model.update_parameters(0.1)                         # :updateParameters(lr)
        if epoch >= 30:
            model.evaluate()
            pred = model.forward(x_test)[-1].argmax(axis=1)      # the last step has seen all 8
            accuracies.append((pred == t_test[-1]).mean())
    return accuracies


def test_sequence_to_one_regressor_fits_two_sentences():
    rnncore.manual_seed(0)
    sentences = [[3, 7, 1, 4, 2], [5, 2, 6]]                     # token ids, different lengths
    scores = np.array([[0.2], [0.9]])
    ids, lengths = rnncore.pad_sequences([np.array(s) for s in sentences])   # (T, B), (B,)
    model = Sequential(Embedding(8, 6), LSTM(6, 16, return_sequences=False), Linear(16, 1))
    criterion = MSECriterion()
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        pred = model.forward(ids, lengths=lengths)               # (B, 1): one value per sentence
        criterion.forward(pred, scores)
        opt.zero_grad()
        model.backward(ids, criterion.backward(pred, scores))
        opt.step()
    pred = model.forward(ids, lengths=lengths)
    np.testing.assert_allclose(pred, scores, atol=0.02)
    # The same prediction read off the per-step outputs: each sentence's LAST REAL token, not the
    # last row of the padded batch.
    per_step = Sequential(model[0], LSTM(6, 16), model[2])
    per_step[1].load_state_dict(model[1].state_dict())
    y = per_step.forward(ids, lengths=lengths)                   # (T, B, 1)
    last = y[lengths - 1, np.arange(len(sentences))]
    np.testing.assert_allclose(last, pred, rtol=1e-5, atol=1e-6)
    assert abs(y[-1, 1, 0] - pred[1, 0]) > 0.1       # row T-1 of the short one is padding
    # "the last output or the last hidden state?": at the last real token they are one vector
    h = per_step[1].forward(per_step[0].forward(ids), lengths=lengths)          # (T, B, 16)
    np.testing.assert_array_equal(h[lengths - 1, np.arange(len(sentences))], per_step[1].h_n[-1])
    assert not np.array_equal(h[-1], per_step[1].h_n[-1])       # row T-1 is not (padding: 0)


def test_regression_demo_prints_that_the_last_valid_output_is_h_n():
    lines = []
    r = regression.run(seed=0, quick=True, epochs=1, progress=False, print_fn=lines.append)
    assert r["diff_lstm_last_valid_vs_h_n"] == 0.0
    assert any("h[lengths-1] - h_n[-1]|    = 0.0e+00  <- the LSTM's last valid output IS h_n"
               in line for line in lines)


def test_keras_parameter_counts_of_two_stacked_lstms(capsys):
    model = Sequential(LSTM(2, 64), LSTM(64, 32, return_sequences=False))
    assert model.summary((5, None, 2)) == 17152 + 12416
    table = capsys.readouterr().out
    assert "17152" in table and "12416" in table
    assert sum(p.data.size for p in model[0].parameters()) == 4 * 64 * (2 + 64) + 4 * 64 == 17152
    assert sum(p.data.size for p in model[1].parameters()) == 4 * 32 * (64 + 32) + 4 * 32 == 12416


def test_bidirectional_outputs_combine_forward_first_as_in_pytorch():
    rnncore.manual_seed(0)
    rng = np.random.default_rng(0)
    T, B, I, H = 6, 3, 4, 5
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    theirs = torch.nn.LSTM(I, H, bidirectional=True).double()
    ours = LSTM(I, H, bidirectional=True, dtype=np.float64).load_state_dict(
        {k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    y = ours.forward(x.astype(np.float64), lengths=lengths)                      # (T, B, 2H)
    h_n, rows = ours.h_n, np.arange(B)
    np.testing.assert_array_equal(y[lengths - 1, rows, :H], h_n[0])   # forward ends at L - 1
    np.testing.assert_array_equal(y[0, :, H:], h_n[1])                # backward ends at step 0
    assert np.abs(y[lengths - 1, rows, H:] - h_n[1]).max() > 1e-3     # its first step: not h_n
    assert not y[2:, 1].any()                                         # padding outputs are 0
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x.astype(np.float64)), torch.from_numpy(lengths), enforce_sorted=False)
    t_out, (t_h, _) = theirs(packed)
    t_out = torch.nn.utils.rnn.pad_packed_sequence(t_out, total_length=T)[0]
    np.testing.assert_allclose(y, t_out.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, t_h.detach().numpy(), rtol=0, atol=1e-12)
