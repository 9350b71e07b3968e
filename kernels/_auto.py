"""Which organization ``path="auto"`` gives a float32 LSTM, GRU or RNN call: ``lstm_tiled`` /
``gru_tiled`` / ``rnn_tiled`` (unit tiles run by one team of threads) or the serial steps of
``lstm.py`` / ``gru.py`` / ``rnn.py``. Plain Python (no compiled code), so that choosing costs
nothing and a process that never runs a tiled shape never imports those modules.

The bounds were measured on the 2-core machine of benchmarks/results/cpu.md, on the per-step
product's multiply-adds ``B * g H * H`` (g = gates per unit: 4 LSTM, 3 GRU): below MIN_WORK the
team's start and its barrier per step cost more than they save; above MAX_WORK the serial kernels'
backward (OpenBLAS on both cores for the weight gradients) was faster. The tiles are 64 units wide,
so H is rounded up to a multiple of 64 (``tiled_width``); padded units cost as much as real ones, so
at most 1/8 of them may be padding (H = 100 computes 128 units: the serial kernels won).
Rechecked on a 2-core AMD EPYC (AVX2) after the register tile was rewritten for it: the same
choices held for the LSTM (tiled fwd+bwd 7.3 vs 8.6 ms at (32, 16, 64, 128), 88 vs 97 ms at
(64, 32, 128, 256); serial 937 vs 1433 ms at (100, 64, 512, 512)); for the GRU the two were
within that machine's run-to-run noise at the mid shapes (tiled 5.9 vs 5.5 ms and 76 vs 72 ms
in one run, the other way round in another), and the serial kernel won at the large shape.

Wide inputs. The tiled kernels compute the input product X W_ih^T and the input-side gradients
(dW_ih, dx) with their own register tile, the serial kernels with OpenBLAS, which runs a big
product faster; so when I is large next to H the serial kernels win (the second layer of a
bidirectional layer has I = 2H). Measured on the AMD EPYC, fwd+bwd, tiled / serial ms, medians
of 7-11 alternated rounds: at (T, B, H) = (64, 32, 256), LSTM I = 2H 84 / 88, 3H 153 / 137,
4H 186 / 154; GRU I = 1.5H 67 / 59 (fastest rounds level), 2H 78-84 / 74-75, 4H 118 / 102.
At H = 128 the tiled kernels' lead in the steps is larger and the choice was unclear even at
I = 4H ((32, 16) and (100, 64); GRU (32, 16) at 2H: tiled 7.2 / 8.3), so the rule applies
from H = 256 (WIDE_MIN_H): the serial kernels from I >= WIDE_INPUT[G] * H. On AVX-512, since
the packings transpose in registers (f96b753), on a 2-core AMD EPYC Zen 4 on 2026-12-04
(``benchmarks/choices --only tiled``, 9 rounds, serial / tiled time;
``results/cpu_zen4_choices_wide_a1ce6a1.json`` and ``_2``), at H = 256 the GRU ran tiled
faster at I = 2H ((64, 32) 1.20, (32, 64) 1.09, (100, 16) 1.26) and 3H (1.10), level at 4H
(0.95, 0.96) and 6H (1.01); the LSTM tiled faster at 3H (1.12), and by 4-7 % at 4H (1.04, 1.07)
and 6H (1.06). So there both take the serial kernels from 4H; the Xeon and AVX2 CPUs are not
re-measured.

Large LSTMs on AVX-512. On the 2-core Xeon again (2026-12-01), after the tiled kernels had been
reworked on the AMD machine, the tiled LSTM beat the serial one above MAX_WORK while W_hh stays
small enough to be shared out between the cores' caches; fwd+bwd, serial / tiled ms, in-process
alternated rounds: (100, 64, 512, 512) medians 341 / 317 (11 rounds; forward 123 / 102), 476 /
345 and 596 / 624 (slower minutes; fastest rounds 358 / 314 and 360 / 297); (50, 128, 512, 512)
371 / 335; (25, 256, 512, 512) 431 / 391; level at H = 768 ((40, 64, 512, 768) 282 / 269, fastest
262 / 267); serial faster at H = 1024 ((30, 64, 512, 1024) 313 / 339). So with AVX-512 the LSTM
kept the tiled kernel above MAX_WORK up to H = 512 (W_hh of 4 MB; now 1024, below). The GRU did
not then: (100, 64, 512, 512) serial 308 / tiled 336 ms, fwd 108 / 122. It does since its tiled
forward lost its gathers (60b05b9) and BLAS does its backward's weight gradients from H = 512
(``gru_tiled.BLAS_GRADS_MIN_H``): on a 2-core AMD EPYC Zen 4 on 2026-12-04, fwd+bwd, serial /
tiled medians of 9 alternated rounds in one process, (100, 64, 512, 512) 387 / 359 and 370 /
345 ms, (50, 128, 512, 512) 391 / 364, (30, 64, 512, 1024) 359 / 321, level at (32, 64, 512,
512) 135 / 132 and (40, 64, 512, 768) 288 / 285; below H = 512 with the team's gradients,
(50, 256, 256, 256) 223 / 205, (64, 128, 512, 384) 306 / 311; (10, 64, 512, 1536) 283 / 269
(5 rounds). On the same machine, the same day, the LSTM's tiled kernel was faster beyond
H = 512 too (serial / tiled, 7-9 rounds): (40, 64, 512, 768) 376 / 341, (30, 64, 512, 1024)
485 / 409, (20, 128, 512, 1024) 635 / 548, (16, 64, 1024, 1024) 354 / 314. So on AVX-512 both
keep the tiled kernel above MAX_WORK up to H = 1024 (LARGE_TILED_MAX_H), a W_hh of 16 MB for
the LSTM. The Xeon's level 768 and slower 1024 above were measured before the two changes that
made the tiled kernels faster (f96b753, 60b05b9); it is not re-measured.

Sequence length. A tiled call pays a fixed cost before its first step (the team's start, the
weights packed into tiles: W_ih and W_hh for each pass) that the serial kernels do not, and wins it
back step by step; the bounds above, measured at T = 32 to 100, leave T out. On the AMD EPYC (Zen
3) on 2026-12-02, kernels fwd+bwd, serial / tiled time, medians of 11 alternated rounds
(``benchmarks/choices`` with these shapes), LSTM and GRU: short sequences were faster serial where
the bounds had said tiled ((4, 16, 16, 128) 0.83 / 0.60, (8, 16, 2, 128) 0.94 / 0.80, (4, 32, 64,
256) 0.95 / 0.93, (8, 16, 64, 256) 1.05 / 0.89), and long ones tiled below MIN_WORK ((32, 8, 64,
128) 1.14-1.24 / 1.07-1.31 in three runs, (64, 8, 32, 128) 1.25 / 1.38, (100, 8, 64, 128) 1.43 /
1.13, (32, 12, 64, 128) 1.34 / 1.37; at T <= 16 not: (8, 8, 2, 128) 0.78 / 0.74, (16, 8, 16, 128)
0.95 / 0.83, (16, 8, 64, 128) 0.94 / 0.86). The fixed cost grows with the weights, G H (H + I), the
saving per step with B G H H, so the length that pays is measured by T B H / (H + I): 57-126 in the
serial cases above, from 128 on ((24, 8, 64, 128) 1.06 / 1.23, (12, 16, 64, 128) 1.09 / 0.96, (16,
16, 16, 128) 1.40 / 1.12, (8, 32, 2, 128) 1.08 / 1.19) the tiled kernels paid, except at H = 256
with I = 128, where the serial ones were faster than 171 and 341 say ((8, 32) 0.88 / 0.84; (16, 32)
the GRU 0.91, the LSTM 1.10: tiled before as now). So on AVX2 a call is tiled from MIN_STEPS_FOR =
128 (on AVX-512 see below), and then already from LOW_WORK multiply-adds per step where H fills two
backward tiles (Hp >= 128: with one, one worker does all of the backward's steps; at H = 64, below
MIN_WORK as before, the GRU was mixed: 0.86-1.22). On AVX-512 the same shapes, measured on a 2-core
Xeon on 2026-12-02 (``benchmarks/choices``, 9 rounds, LSTM / GRU B / A;
``results/cpu_xeon480_choices_len_5b6fbc6.json``), said the same: below 128 serial faster where
MIN_WORK had said tiled ((4, 16, 16, 128) 0.70 / 0.63, (8, 16, 2, 128) 0.82 / 0.75, (4, 32, 64,
256) 0.90 / 0.83, (8, 16, 64, 256) 0.88 / 0.79), long ones below it tiled faster or level ((100, 8,
64, 128) 1.24 / 1.06, (64, 8, 32, 128) 1.15 / 0.96, (32, 8, 64, 128) 1.02 / 0.91); where both rules
say tiled, 1.05-1.23 / 0.89-1.05. Of the 26 rows the old rule took the slower side at 13 (by up to
1.6x), this one at 5, by 5-12 % (the GRU at (32, 8, 64, 128), (24, 8, 64, 128), (12, 16, 64, 128),
(8, 32, 128, 256), and the LSTM at (24, 8, 64, 128)), so it holds on both.

The RNN (G = 1, ``rnn_tiled``), on AVX-512 CPUs only (measured on the 2-core Xeon on
2026-12-03, not yet on AVX2 ones: the serial kernel there). Kernels fwd+bwd, serial / tiled
time, medians of 9 alternated rounds: tiled faster at every shape with B H H >= 2^17 and
T B H / (H + I) >= 256 tried, by 1.05-1.42x ((24, 16, 64, 128) 1.11, (48, 8, 64, 128) 1.12,
(32, 16, 64, 128) 1.28, (12, 64, 64, 128) 1.27, (100, 8, 64, 256) 1.27, (8, 64, 64, 256) 1.37,
(64, 32, 128, 256) 1.42, (32, 64, 512, 512) 1.19, (100, 64, 512, 512) 1.15, and at H = 1024,
W_hh 4 MB as the LSTM's at 512: (20, 64, 256, 1024) 1.23); wide inputs too (at H = 256, I = 2H
1.22, 4H 1.06, 6H 1.05). Shorter ones were level or slower ((16, 16, 16, 128), length 227,
0.97; (8, 32, 2, 128), 252, 0.95; (8, 16, 2, 128) 0.79; (8, 8, 2, 100) 0.38), and one RNN step
is a quarter of an LSTM's work, so the RNN needs twice the LSTM's length (MIN_STEPS_FOR[1]),
though (32, 8, 64, 128) and (32, 16, 256, 128), length 170, were 1.04 and 1.14. (Those rounds
had a pause before each sample; ``benchmarks/choices --only tiled --cells rnn``, calls back to
back, at 13 of these shapes: the rule took the faster side at 9 and was level at 4,
``benchmarks/results/cpu_xeon480_choices_tiled_rnn_7ad25b4.json``.)

Shorter sequences since the packings transpose in registers (f96b753, ``_gemm.transpose8``): the
fixed cost of a tiled call fell, and on a 2-core AMD EPYC Zen 4 (AVX-512) on 2026-12-04 the
tiled kernels paid from shorter lengths (``benchmarks/choices --only tiled``, 11 rounds,
fwd+bwd, serial / tiled time; two runs, the first begun at load 1.1 after another benchmark,
``results/cpu_zen4_choices_len_0a214da.json``, the second idle,
``cpu_zen4_choices_len_cf7022a.json``; the RNN once, ``cpu_zen4_choices_len_rnn_0a214da.json``).
The LSTM, first / second run: (16, 8, 64, 128), length 85, 1.22 / 1.21 (at 7d24398, before the
change, 0.82); (8, 16, 2, 128), 126, 1.10 / 1.13 (0.77); (16, 8, 16, 128), 114, 1.14 / 1.18;
(4, 32, 64, 256) and (8, 16, 64, 256), 102, 1.30 / 1.34 and 1.35 / 1.33; (12, 8, 64, 128), 64,
1.06 / 1.14; below 64 level or serial ((4, 16, 16, 128) 0.97 / 1.03, (8, 8, 2, 128) 0.92 /
0.95, (8, 8, 64, 128), 43, 1.06 / 1.07). The GRU less so: at H = 256, length 102, 1.22 / 1.27
and 1.26 / 1.27; at H = 128 level from 64 to 126 ((16, 8, 64, 128) 1.06 / 0.99, (8, 16, 2, 128)
0.97 / 1.00 (0.65 before), (12, 8, 64, 128) 1.00 / 0.98, (16, 8, 16, 128) 0.96 / 0.88), serial
below. The RNN: from 128 tiled faster ((24, 8, 64, 128) and (12, 16, 64, 128), 128, 1.19 and
1.15; (32, 8, 64, 128) 1.22; (16, 16, 16, 128) 1.10; (8, 32, 2, 128) 1.08), below it serial
((16, 8, 16, 128), 114, 0.94), though (16, 8, 64, 256) and (8, 16, 64, 256), 102, were 1.16 and
1.21. So on AVX-512 MIN_STEPS_FOR is 64 for the LSTM, 96 for the GRU (its H = 256 rows in, its
H = 128 ones at 85 and 64 out) and 128 for the RNN. (Not yet re-measured on the Xeon, whose
numbers above predate the change, nor on AVX2 CPUs, which keep 128 and 256.)
"""

import numpy as np

from ._gemm import VECTOR
from ._team import teams_usable

MIN_B = 8                 # batch
MIN_H = 64                # hidden units
MIN_WORK = {4: 1 << 20, 3: 1 << 19}    # per gate count G; the GRU paid off from (32, 16, 64, 128)
if VECTOR == 16:
    MIN_WORK[1] = 1 << 17  # the RNN: AVX-512 only (above); a G missing here is never tiled
MAX_WORK = 1 << 25
LARGE_TILED_MAX_H = {4: 1024, 3: 1024, 1: 1024} if VECTOR == 16 else {}  # per G: tiled above
                                                                         # MAX_WORK up to this H
WIDE_MIN_H = 256          # hidden units from which a wide input sends a call to the serial kernels
WIDE_INPUT = ({4: 4, 3: 4, 1: 8} if VECTOR == 16     # per gate count G: how many times H the
              else {4: 3, 3: 2, 1: 8})              # input width I must reach (the RNN: tiled
                                                    # still faster at 6H; AVX-512: see above)
TILE_UNITS = 64           # lstm_tiled.V / gru_tiled's backward tile
# The length T B H / (H + I) a tiled call needs, and the smaller per-step work from which one
# that long is tiled where Hp >= 2 tiles ("Sequence length" above; shorter on AVX-512 since
# the packings transpose in registers)
MIN_STEPS_FOR = ({4: 64, 3: 96, 1: 128} if VECTOR == 16     # per gate count G
                 else {4: 128, 3: 128, 1: 256})
LOW_WORK = 3 << 17        # B G H H of (., 8, ., 128) for the GRU (the LSTM's is 2^19)


def tiled_width(H):
    """H rounded up to whole 64-unit tiles (Hp in the tiled kernels)."""
    return -(-H // TILE_UNITS) * TILE_UNITS


def takes_tiled(path, gates, dtype, T, B, I, H):
    """Whether a call with ``path`` ("auto", "steps" or "tiled") runs the tiled kernel; the
    argument checks the three cells' wrappers share (ValueError, TypeError naming ``path``)."""
    if not isinstance(path, str) or path not in ("auto", "steps", "tiled"):
        raise ValueError(f"path: expected 'auto', 'steps' or 'tiled', got {path!r}")
    if path == "tiled" and np.dtype(dtype) != np.float32:
        raise TypeError(f"path='tiled': x must be float32, got dtype {np.dtype(dtype)}")
    return path == "tiled" or (path == "auto" and uses_tiled(gates, dtype, T, B, I, H))


def uses_tiled(gates, dtype, T, B, I, H):
    """Whether auto runs the tiled kernel of a cell with ``gates`` gates (4 LSTM, 3 GRU, 1 RNN)
    on a batch of B sequences of T steps, I features, H hidden units."""
    if B < MIN_B or H < MIN_H or gates not in MIN_WORK:   # (the common small case, first)
        return False
    if not teams_usable():                             # a child forked after OpenMP started
        return False
    if H >= WIDE_MIN_H and I >= WIDE_INPUT[gates] * H:
        return False
    work = B * gates * H * H
    Hp = tiled_width(H)
    big_enough = MIN_WORK[gates] <= work
    if T * B * H < MIN_STEPS_FOR[gates] * (H + I):     # long enough to pay, see above
        return False
    big_enough = big_enough or (Hp >= 2 * TILE_UNITS and LOW_WORK <= work)
    small_enough = work <= MAX_WORK or H <= LARGE_TILED_MAX_H.get(gates, 0)
    return (np.dtype(dtype) == np.float32 and big_enough and small_enough
            and 8 * (Hp - H) <= Hp)
