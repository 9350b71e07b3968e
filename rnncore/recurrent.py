"""Recurrent layers: `RNN`, `LSTM` and `GRU`, stacked and optionally bidirectional.

Shape key: T = time steps, B = batch, I = input features, H = hidden units,
L = num_layers, D = 2 if bidirectional else 1, G = gates (RNN 1, GRU 3, LSTM 4).

The three layers share one thin base class, ``_Recurrent``. It validates, loops over layers
and directions, calls one kernel per (layer, direction) and keeps the kernels' caches. The math
lives in ``kernels/``; the kernel used for each cell is chosen in ``_KERNELS`` just below.

All three kernels share one positional calling convention, which is what keeps the base thin::

    y, *state_n, cache   = forward(x, W_ih, W_hh, *biases, *state_0, lengths, reverse)
    dx, *dparams, *dstate_0 = backward(dy, *dstate_n, cache)

with ``state = (h,)`` for RNN and GRU and ``(h, c)`` for LSTM, ``biases = (b,)`` for RNN and
LSTM and ``(b_ih, b_hh)`` for GRU.

Stacking: layer ``k`` reads layer ``k-1``'s output, both directions concatenated
(``(T, B, D*H)``, forward half first). With ``dropout > 0`` and in ``training()`` mode, an
inverted-dropout mask (drawn from ``rnncore.random.generator()``) multiplies that input of every
layer but the first; ``backward`` reuses the same mask.

Bidirectional layers on the CPU: where it pays (``kernels/_pair.py``), the two directions of
each layer run at once on two threads, each on the cell's serial kernel with BLAS on one thread,
for every layer of the call or for none; ``backward`` does as its forward did. One-directional
RNN layers likewise split a large batch into two halves run at once (``RNN._halves_from``), and
so do large GRU layers (``GRU._halves_from``: from 2^27 multiply-adds on AVX-512 CPUs, 2^31 on
AVX2 ones), but not an RNN whose kernels are tiled (``kernels/rnn_tiled.py``, which runs both
cores on every call: ``RNN._tiled_first``), nor, on AVX-512 CPUs, a GRU whose kernels are
tiled (``GRU._tiled_first``).

Forward, then backward: ``backward(x, gy)`` differentiates the last forward, from what that
forward kept; an ``x`` with other values than that forward's input is refused (ValueError: a
layer shared by two models, run by the other in between, say), the forward's own input (array
or list) is taken as it is. (On "cuda" and where a batch runs in two halves, the forward keeps a
copy of its input for that comparison; elsewhere the copy the kernels keep anyway.) The
weights are read where the products need them: change them in place between forward and
backward (an optimizer step) and backward uses the new ones on "cpu", the ones its forward
uploaded on "cuda" (Torch7's order is forward, backward, then the update, where the two agree).

Inputs (and upstream gradients) are cast to the module's dtype (``float32`` unless built with
``dtype=np.float64`` or converted with ``astype``), so a float64 array fed to a float32 layer is
rounded; the kernels always get C-contiguous arrays of that one dtype.

Initial state, in order of precedence (for h and c separately): the ``h0=`` / ``c0=``
arguments of ``forward`` (``(L*D, B, H)``, PyTorch's layout, index ``layer*D + direction``);
else, after ``remember()``, the previous call's final state; else zeros. ``remember()`` is
truncated BPTT over a long stream: the carried state is a constant for the next call, so no
gradient crosses the call boundary. A remembered state fixes the batch size: a call with
another batch size raises ``ValueError`` (naming ``x``) until ``forget()``. In a bidirectional
layer the backward direction's carried state is its state after step 0 of the previous chunk
(what PyTorch's ``h_n`` fed back as ``h0`` gives); only the forward direction reads a chunked
stream as one.
"""

import sys
import warnings
from functools import partial

import numpy as np

from . import _checks
from .device import cuda_kernels, lock, to_host, unlock, upload
from .layers import _check_input_shape
from .module import Module, _adoptions, checked
from .random import generator, uniform
from kernels import _ahead
from kernels._auto import uses_tiled as _uses_tiled
from kernels._gemm import VECTOR as _VECTOR
from kernels._pair import (backward_in_halves, forward_in_halves, pays as _pair_pays, ran_on,
                           run_pair)
from kernels.gru import gru_backward_unchecked, gru_forward_unchecked
from kernels.lstm import lstm_backward_unchecked, lstm_forward_unchecked
from kernels.rnn import rnn_backward_unchecked, rnn_forward_unchecked

_AHEAD_TRIED = set()      # (cell, dtype) whose first forward has tried ``_compile_ahead``

__all__ = ["RNN", "LSTM", "GRU"]

# The one place that picks the kernels: cell -> (forward, backward), reference signatures.
# Their unchecked versions: the layers check what they are given themselves (``_run``,
# ``_backward``), and hand the kernels C-contiguous writable arrays of the layer's dtype
# (``_checks.for_kernel``).
_KERNELS = {
    "rnn": (rnn_forward_unchecked, rnn_backward_unchecked),
    "lstm": (lstm_forward_unchecked, lstm_backward_unchecked),
    "gru": (gru_forward_unchecked, gru_backward_unchecked),
}


class _DeviceCopies(dict):
    """[device] A layer's GPU weight copies: id(Parameter) -> (host array, version, GPU copy,
    host copy of what was uploaded).

    A deep copy or a pickle of the layer starts without them (GPU memory is neither copied nor
    pickled): the copy uploads its own weights at its first forward on "cuda".
    """

    def __deepcopy__(self, memo):
        return _DeviceCopies()

    def __reduce__(self):
        return _DeviceCopies, ()


# References to a Parameter's array that ``_weights_for_kernel`` counts as its own: the
# Parameter's slot, its local ``host``, ``_shared``'s argument and ``sys.getrefcount``'s.
_OWN_REFERENCES = 4


def _shared(host, held):
    """[device] Whether something else may write ``host`` without a ``version``: it is a view
    of another array, or more references to it exist than its Parameter's, the ``held`` of
    the layer's cache and this call's own (a view's ``base``, another Parameter's slot)."""
    return host.base is not None or sys.getrefcount(host) > _OWN_REFERENCES + held


class _DeviceCache(dict):
    """[device] What a forward on "cuda" keeps for backward (the kernels' GPU buffers).

    GPU memory is neither deep-copied nor pickled: a copy of the layer has no saved forward (its
    backward asks for a forward first), as after ``to()``.
    """

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return type(None), ()


def _stack(arrays):
    """np.stack(arrays), without the copy for one array (one layer, one direction)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


class _Recurrent(Module):
    """Shared machinery of `RNN`, `LSTM` and `GRU` (see the module docstring).

    Subclasses set four class attributes:
      _cell    key into ``_KERNELS``
      _gates   G, the number of stacked gate blocks in the weights
      _states  names of the recurrent states: ("h",) or ("h", "c")
      _biases  bias names per layer: ("bias",) or ("bias_ih", "bias_hh")
    """

    _cell = _gates = _states = _biases = None
    _keeps_forward = True     # (its kernels' caches)
    _kept_for_backward = ("_cache",)
    _serial_kernel = {}       # keyword arguments that pick the cell's serial CPU kernel (``_pair``)
    _halves_from = None       # multiply-adds from which one direction's batch runs in two halves
    _tiled_first = False      # True: where a layer's kernel would be tiled, run it so, not
                              # in batch halves (``_runs_tiled``)
    dropout = checked(lambda m, v: _checks.probability(v, "dropout"),
                      "The dropout rate between stacked layers (training mode), in [0, 1).")

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 return_sequences=True, dtype=np.float32):
        input_size = _checks.positive_int(input_size, "input_size")
        hidden_size = _checks.positive_int(hidden_size, "hidden_size")
        num_layers = _checks.positive_int(num_layers, "num_layers")
        bidirectional = _checks.flag(bidirectional, "bidirectional")
        dropout = _checks.probability(dropout, "dropout")
        if dropout > 0 and num_layers == 1:                  # (as PyTorch warns)
            warnings.warn(f"dropout={dropout} does nothing with num_layers=1: it applies "
                          f"between stacked layers only", UserWarning, stacklevel=2)
        return_sequences = _checks.flag(return_sequences, "return_sequences")
        super().__init__(dtype)
        count = self._parameter_count(input_size, hidden_size, num_layers, bidirectional)
        _checks.fits_in_memory(2 * count, self.dtype,
                               f"{type(self).__name__}(input_size={input_size}, hidden_size="
                               f"{hidden_size}, num_layers={num_layers}, bidirectional="
                               f"{bidirectional})", "parameter and gradient values")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.dropout = bidirectional, dropout
        self.return_sequences = return_sequences
        self.num_directions = 2 if bidirectional else 1

        # Parameters in PyTorch's order: per layer, forward direction then "_reverse".
        # Init U(-1/sqrt(H), 1/sqrt(H)) for every array, as PyTorch does.
        H, G = hidden_size, self._gates
        bound = 1.0 / np.sqrt(H)
        for k in range(num_layers):
            fan_in = input_size if k == 0 else self.num_directions * H
            for sfx in self._suffixes():
                self._param(f"weight_ih_l{k}{sfx}", uniform((G * H, fan_in), bound, self.dtype))
                self._param(f"weight_hh_l{k}{sfx}", uniform((G * H, H), bound, self.dtype))
                for b in self._biases:
                    self._param(f"{b}_l{k}{sfx}", self._init_bias(uniform((G * H,), bound, self.dtype)))

        for s in self._states:                    # final states, and grads of the initial states
            setattr(self, f"{s}_n", None)         # (L*D, B, H) after forward
            setattr(self, f"grad_{s}0", None)     # (L*D, B, H) after backward
        self._remember = False
        self._carry = None                        # remembered states: tuple of (L*D, B, H)
        self._cache = None                        # what backward needs, set by forward

    def _init_bias(self, b):
        return b

    def _suffixes(self):
        return ("", "_reverse")[:self.num_directions]

    def _directions_at_once(self, work):
        """Whether a layer's two directions run at once, one per core: bidirectional, on the
        CPU, with ``work`` multiply-adds per direction where ``kernels._pair`` says it pays."""
        return self.num_directions == 2 and self.device != "cuda" and _pair_pays(work)

    def _batch_in_halves(self, T, B, work):
        """Whether each layer (one direction) runs its batch as two halves at once, one per core:
        for a cell with ``_halves_from`` set, from that much ``work`` (the whole batch's), and
        for one with ``_tiled_first`` only where no layer's kernel would be tiled."""
        return (self.num_directions == 1 and self._halves_from is not None and B >= 2
                and work >= self._halves_from and self.device != "cuda" and _pair_pays(work)
                and not self._runs_tiled(T, B))

    def _on_two_cores(self, T, B):
        """(paired, halves) for a (T, B, .) input: whether each layer's two directions run at
        once (``_directions_at_once``), and whether one direction's batch runs as two halves
        (``_batch_in_halves``), both judged by the multiply-adds of the smallest layer."""
        H = self.hidden_size
        widths = [self.input_size] + [self.num_directions * H] * (self.num_layers - 1)
        work = T * B * self._gates * H * (min(widths) + H)
        return self._directions_at_once(work), self._batch_in_halves(T, B, work)

    def _runs_tiled(self, T, B):
        """For a cell with ``_tiled_first``: whether ``path="auto"`` gives any layer's kernel
        the tiled organization (False for the others)."""
        if not self._tiled_first:
            return False
        H = self.hidden_size
        widths = {self.input_size} | ({self.num_directions * H} if self.num_layers > 1 else set())
        return any(_uses_tiled(self._gates, self.dtype, T, B, w, H) for w in widths)

    def _kernel_pair(self):
        """(forward, backward) kernels of this cell on ``self.device`` ([device]: kernels.cuda on
        "cuda", imported lazily; same signatures as the CPU kernels, NumPy in and out)."""
        if self.device == "cuda":
            kc = cuda_kernels()
            return getattr(kc, f"{self._cell}_forward"), getattr(kc, f"{self._cell}_backward")
        return _KERNELS[self._cell]

    def _on_to(self, device):
        self._cache = None          # [device] a CPU kernel's cache cannot feed a GPU backward
        self._moved = True          # (backward's message says why there is no forward)
        self._drop_device_weights()

    def _drop_device_weights(self):
        """[device] Forget the GPU copies of the weights and make the host arrays writable."""
        for host, *_ in getattr(self, "_device_weights", {}).values():
            unlock(host)
        self._device_weights = _DeviceCopies()

    def _weights_for_kernel(self, k, d):
        """The kernel's weight arguments for layer k, direction d: host arrays on "cpu"; on
        "cuda" [device] GPU copies, uploaded again when a Parameter's array or its ``version``
        has changed since the last upload (see ``Parameter``). While a copy exists its host
        array is read-only, so a write through a reference taken since raises at once. Two
        kinds of write go unseen by both: through a view taken before the upload, and through
        a second Parameter given the same array (a tie). Where either may exist (``_shared``:
        more references to the array than its Parameter's at the upload), a host copy of the
        uploaded values is kept and compared at every forward, until one finds no other
        reference left (a view written and then dropped is still seen); elsewhere nothing is
        read. (Optimizers keep no reference
        to a weight array, except `SGD`'s plain rule, whose flat views of the arrays count:
        with one alive, each forward compares, ~1 ms per 8 MB of weights on the host.)"""
        params = self._layer_param_lists()[k * self.num_directions + d]
        if self.device != "cuda":                   # (a Parameter's array: any memory layout)
            return [_checks.for_kernel(q.data) for q in params]
        cached = self.__dict__.setdefault("_device_weights", _DeviceCopies())
        out = []
        for q in params:
            host, entry = q._data, cached.get(id(q))
            fresh = entry is not None and entry[0] is host and entry[1] == q.version
            if fresh and (entry[3] is not None or _shared(host, held=1)):
                # compared while a host copy is kept, not only while the other reference
                # lives: a view written and then dropped before this forward left no trace
                fresh = entry[3] is not None and np.array_equal(entry[3], host)
                if fresh and not _shared(host, held=1):          # none left to write unseen:
                    entry = cached[id(q)] = entry[:3] + (None,)   # no compare from now on
            if not fresh:
                if entry is not None:
                    unlock(entry[0])
                    entry = cached[id(q)] = None                 # (its reference to host)
                kept = host.copy() if _shared(host, held=0) else None
                entry = cached[id(q)] = (host, q.version, upload(host), kept)
                lock(host)
            out.append(entry[2])
        return out

    def _layer_params(self, k, d):
        """The kernel's weight arguments for layer k, direction d: (W_ih, W_hh, *biases)."""
        sfx = self._suffixes()[d]
        names = [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"] + [f"{b}_l{k}{sfx}" for b in self._biases]
        return [self._params[n] for n in names]

    def _layer_param_lists(self):
        """``_layer_params(k, d)`` for every ``i = k * D + d``, built once per layer object (the
        Parameter objects never change, only their arrays)."""
        lists = self.__dict__.get("_param_lists")
        if lists is None:
            D = self.num_directions
            lists = self._param_lists = [self._layer_params(i // D, i % D)
                                         for i in range(self.num_layers * D)]
        return lists

    # -- remember / forget (Torch7) ----------------------------------------------------------
    def remember(self, mode=True):
        """From now on each forward starts from the previous call's final state. A state is
        carried from forwards made in this mode only: switched on after forwards without it,
        the first forward starts from zeros (or ``h0``/``c0``), so that a model trained or
        scored on other batches (another batch size, say) starts a stream afresh; called
        again while on, it changes nothing (``forget()`` resets the state).

        ``remember(False)`` switches that off again (and forgets the state).
        """
        self._remember = _checks.flag(mode, "mode")
        if not self._remember:
            self._carry = None
        return self

    def forget(self):
        """Reset the remembered state to zeros (the mode set by ``remember`` is kept)."""
        self._carry = None
        return self

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x, lengths=None, h0=None, c0=None):
        """Run the layer over ``x``.

        x: (T, B, I) array, or a list of T arrays (B, I) (cast to the module's dtype)
        lengths: None or ints (B,), 1 <= lengths[b] <= T
        h0: None or (L*D, B, H), PyTorch's layout
        c0: an LSTM's initial cell state (`LSTM.forward`); refused here (no cell state)
        returns (T, B, D*H) (a list of T (B, D*H) arrays if x was a list) when
        return_sequences, else (B, D*H): the top layer's final hidden states.
        """
        if c0 is not None:
            raise TypeError(f"c0: a {type(self).__name__} has no cell state (only an LSTM "
                            f"takes c0); its initial state is h0")
        return self._run(x, lengths, (h0,))

    def _forward(self, x, lengths):
        return self._run(x, lengths, (None,) * len(self._states))

    def _check_input(self, x):
        """x -> (C-contiguous (T, B, I) array of the module dtype, was_list)."""
        a, was_list = _checks.sequence(x, "x", dtype=self.dtype)
        if a.shape[-1] != self.input_size:
            raise ValueError(f"x: expected (T, B, {self.input_size}) (input_size={self.input_size}), "
                             f"got shape {a.shape}")
        return np.ascontiguousarray(a), was_list

    def _compile_ahead(self, x):
        """With an empty Numba cache, start compiling layer 0's backward core in a second
        process now (``kernels._ahead``), before this forward's checks and first compiles, not
        when its kernel is called: in the seed model's first step ~0.2 s sooner. Tried once per
        cell and dtype in a process; a guess from x's shape before x is checked (a wrong guess
        costs the second core's time, and the core the kernel does need then compiles here, as
        without a child, since one child runs at a time). Nothing where the cache is warm."""
        key = (self._cell, self.dtype)
        if key in _AHEAD_TRIED:
            return
        _AHEAD_TRIED.add(key)
        if self.device == "cuda" or type(x) is not np.ndarray or x.ndim != 3 or 0 in x.shape:
            return
        T, B, I = x.shape
        serial = any(self._on_two_cores(T, B))             # (the serial kernels: _run)
        tiled = not serial and _uses_tiled(self._gates, self.dtype, T, B, I, self.hidden_size)
        _ahead.start(self._cell, "tiled" if tiled else "steps", self.dtype)

    def _run(self, x, lengths, initial):
        self._compile_ahead(x)                                # (cheap after the first call)
        # 1. Validate everything before anything changes.
        x_arg = x
        x_in = x = to_host(x)                                 # [device] device arrays -> NumPy
        if [s for s in initial if s is not None]:
            initial = to_host(initial)
        x, was_list = self._check_input(x)
        T, B, _ = x.shape
        lengths = _checks.lengths(lengths, T, B)
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        states0 = []
        for s, given in zip(self._states, initial):
            if given is not None:
                a = _checks.finite_array(given, f"{s}0", dtype=self.dtype)
                _checks.same_shape(a, (LD, B, H), f"{s}0")
                states0.append(_checks.for_kernel(a))
            else:
                states0.append(None)
        if self._remember and self._carry is not None:
            carried_B = self._carry[0].shape[1]
            if carried_B != B:
                raise ValueError(f"x: expected batch size {carried_B} (the remembered state's), got "
                                 f"shape {x.shape}; call forget() before changing the batch size")
            states0 = [c if s is None else s for s, c in zip(states0, self._carry)]

        # 2. Layers bottom-up, directions forward then reverse: one kernel call each.
        #    The two directions of a layer run at once, one per core, where that pays
        #    (``_directions_at_once``), for every layer or none (pairing some layers only was
        #    slower: ``kernels/_pair.py``); a one-directional RNN's batch likewise runs
        #    as two halves (``_batch_in_halves``). Backward then does as its forward did.
        fwd = self._kernel_pair()[0]
        D, p = self.num_directions, self.dropout
        paired, halves = self._on_two_cores(T, B)
        if halves:
            fwd = forward_in_halves(fwd, len(self._biases), len(self._states))
        kw = self._serial_kernel if paired or halves else {}
        # The kernels' caches keep their input for the backward: a copy unless x is an array
        # made here (from a list, or cast), since the caller may refill its own (an array, or
        # anything NumPy wraps without a copy) before calling backward. The halves copy theirs
        # anyway (and backward compares x with those: ``_pair.ran_on``); [device] the GPU
        # kernels keep theirs on the device.
        private = x is not x_arg and x.flags.owndata
        if not private and not halves and self.device != "cuda":
            x, private = x.copy(), True
        x_kept = x if private else (None if halves else x.copy())   # backward compares x with it
        inp = x                                               # (T, B, I) then (T, B, D*H)
        caches, masks, finals = [], [], []                    # finals[k*D+d] = kernel states
        for k in range(self.num_layers):
            mask = None
            if k > 0 and p > 0 and self.train:                # inverted dropout between layers
                mask = (generator().random(inp.shape) >= p).astype(self.dtype) / self.dtype.type(1 - p)
                inp = inp * mask
            masks.append(mask)
            calls = []
            for d in range(D):
                i = k * D + d
                s0 = [None if s is None else s[i] for s in states0]
                calls.append(partial(fwd, inp, *self._weights_for_kernel(k, d), *s0, lengths,
                                     d == 1, **kw))
            outs = []
            for y, *s_n, cache in (run_pair(*calls) if paired else [f() for f in calls]):
                outs.append(y)
                finals.append(s_n)
                caches.append(cache)
            inp = outs[0] if D == 1 else np.concatenate(outs, axis=2)   # (T, B, D*H)

        # 3. Commit: final states, caches, remembered state.
        state_n = ([a[None] for a in finals[0]] if len(finals) == 1 else          # (L*D, B, H)
                   [np.stack([f[j] for f in finals]) for j in range(len(self._states))])
        self.h_n = state_n[0]
        if len(state_n) == 2:
            self.c_n = state_n[1]
        if self._remember:
            self._carry = tuple(a.copy() for a in state_n)
        state = _DeviceCache if self.device == "cuda" else dict       # [device] see _DeviceCache
        self._serial = self.__dict__.get("_serial", 0) + 1   # (as Module.forward counts)
        self.__dict__.pop("_moved", None)
        self._cache = state(caches=caches, masks=masks, paired=paired, halves=halves,
                            shape=x.shape, was_list=was_list, x_in=x_in, x_kept=x_kept,
                            return_sequences=self.return_sequences)
        self._lengths = lengths

        if not self.return_sequences:                         # top layer's h_n, directions side by side
            top = state_n[0][(self.num_layers - 1) * D:]      # (D, B, H)
            return np.concatenate(list(top), axis=1)          # (B, D*H)
        return list(inp) if was_list else inp

    # -- backward ----------------------------------------------------------------------------
    def _backward(self, x, gy):
        """dL/dx for the last forward's input; adds dL/dparam into every ``Parameter.grad``.

        gy: like the output of forward ((T, B, D*H) or a list of those steps, or (B, D*H)).
        Also sets ``grad_h0`` (and ``grad_c0``): dL/d(initial state), (L*D, B, H), for this call.
        """
        if self._cache is None:
            moved = (" (the layer was moved with to() since its last forward: a forward's "
                     "saved state stays on its device)" if self.__dict__.get("_moved") else "")
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first{moved}")
        c = self._cache
        T, B, _ = c["shape"]
        # The forward kept what backward needs, so x's values are not read: the forward's own
        # input (an array or a list, refilled since or not) needs no second check; anything
        # else must hold the forward's values, or the gradients would silently be those of the
        # forward's input (a layer shared by two models: A.forward(xa), B.forward(xb),
        # A.backward(xa, ...))
        if x is c["x_in"]:                                    # (an array, or a list of steps)
            was_list = c["was_list"]
        else:
            x, was_list = self._check_input(x)
            if x.shape != c["shape"]:
                raise ValueError(f"x: expected the forward's input shape {c['shape']}, got {x.shape}")
            kept = c["x_kept"]
            if not (ran_on(x, c["caches"][0]) if kept is None     # (layer 0's pair of halves)
                    else np.array_equal(x, kept)):
                raise ValueError("x: expected the input of the last forward (backward "
                                 "differentiates that forward), got other values of its shape; "
                                 "call forward(x) first")
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        sequences = c.get("return_sequences", self.return_sequences)   # (the forward's)
        if sequences:
            g, _ = _checks.sequence(gy, "gy", dtype=self.dtype)
            _checks.same_shape(g, (T, B, D * H), "gy")
            g = _checks.for_kernel(g)                         # (C order, writable: kernels)
        else:
            g = _checks.finite_array(gy, "gy", dtype=self.dtype)
            _checks.same_shape(g, (B, D * H), "gy")

        bwd = self._kernel_pair()[1]
        n_s, n_p = len(self._states), 2 + len(self._biases)
        if c["halves"]:
            bwd = backward_in_halves(bwd, n_p, n_s)
        dstate0 = [[None] * (L * D) for _ in self._states]
        # Upstream grads of the top layer: its outputs (return_sequences) or its final h.
        dy_layer = g if sequences else None                   # (T, B, D*H) or None
        for k in reversed(range(L)):
            calls = []
            for d in range(D):
                i = k * D + d
                dy = dy_layer
                if D == 2 and dy is not None:                 # this direction's half
                    dy = _checks.for_kernel(dy_layer[..., d * H:(d + 1) * H])
                dstate_n = [None] * n_s
                if k == L - 1 and not sequences:
                    dstate_n[0] = _checks.for_kernel(g[:, d * H:(d + 1) * H])   # dL/dh_n
                calls.append(partial(bwd, dy, *dstate_n, c["caches"][i]))
            dinp = None
            results = run_pair(*calls) if c["paired"] else [f() for f in calls]
            for d, (dx, *rest) in enumerate(results):
                i = k * D + d
                for q, dq in zip(self._layer_param_lists()[i], rest[:n_p]):
                    if q.requires_grad:                       # (a frozen one: nothing added)
                        q.grad += dq
                for j in range(n_s):
                    dstate0[j][i] = rest[n_p + j]
                dinp = dx if dinp is None else dinp + dx
            if c["masks"][k] is not None:
                dinp = dinp * c["masks"][k]                   # inp = prev * mask
            dy_layer = dinp
        self.grad_h0 = _stack(dstate0[0])
        if len(dstate0) == 2:
            self.grad_c0 = _stack(dstate0[1])
        return list(dy_layer) if was_list else dy_layer

    # -- state, shapes, description ----------------------------------------------------------
    def _convert_state(self, state):
        return state

    def _check_astype(self, dtype):
        """The states ``_on_astype`` converts must fit ``dtype``, as parameters must: a carried
        c of 1e60 became inf in float32 (a c0=inf given is refused), and the next backward NaN."""
        big = np.finfo(dtype).max
        held = [(f"the remembered {s} (the next forward's {s}0)", a)
                for s, a in zip(self._states, self._carry or ())]
        held += [(f"{s}_n", getattr(self, f"{s}_n")) for s in self._states]
        held += [(f"grad_{s}0", getattr(self, f"grad_{s}0")) for s in self._states]
        for name, a in held:
            if a is not None:
                top = np.abs(a[np.isfinite(a)]).max(initial=0)
                if top > big:
                    raise ValueError(f"dtype: {name} holds finite values beyond {dtype}'s range "
                                     f"(largest magnitude {top:.3g})"
                                     + ("; call forget() first" if "remembered" in name else ""))

    def _on_astype(self, dtype):
        for s in self._states:
            for attr in (f"{s}_n", f"grad_{s}0"):
                a = getattr(self, attr)
                if a is not None:
                    setattr(self, attr, a.astype(dtype))
        if self._carry is not None:
            self._carry = tuple(a.astype(dtype) for a in self._carry)
        self._cache = None                                    # backward needs a fresh forward
        self._drop_device_weights()                           # [device] new arrays: upload again

    @property
    def return_sequences(self):
        """Whether forward returns every step's output, (T, B, D*H), or the top layer's final
        hidden states, (B, D*H). It may be set (to a bool) between calls; the containers above
        count that as a change of the model's structure and judge its output again (a
        `Sequencer` around a layer switched to ``False`` refuses it at the next forward)."""
        d = self.__dict__
        if "_return_sequences" in d:
            return d["_return_sequences"]
        if "return_sequences" in d:                           # (one pickled before this)
            return d["return_sequences"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute "
                             f"'return_sequences' (not built yet)")

    @return_sequences.setter
    def return_sequences(self, value):
        self.__dict__["_return_sequences"] = _checks.flag(value, "return_sequences")
        self.__dict__.pop("return_sequences", None)
        _adoptions[0] += 1

    def __init_subclass__(cls, **kwargs):
        """A subclass that defines ``return_sequences`` itself (a class attribute, a property of
        its own) gets it checked and counted as a change of structure at every assignment all
        the same, by ``_setattr_counting`` (the others keep plain, faster assignments)."""
        super().__init_subclass__(**kwargs)
        if "return_sequences" in vars(cls):
            cls.__setattr__ = _setattr_counting

    @classmethod
    def _parameter_count(cls, I, H, L, bidirectional):
        """The number of parameter values of ``cls(I, H, L, bidirectional)`` (checked sizes)."""
        D, G, nb = 2 if bidirectional else 1, cls._gates, len(cls._biases)

        def layer(fan_in):        # one direction: W_ih (G*H, fan_in), W_hh (G*H, H), nb biases
            return G * H * (fan_in + H) + nb * G * H

        return D * (layer(I) + (L - 1) * layer(D * H))           # layer 0 reads I, the rest D*H

    def output_shape(self, input_shape):
        """(T, B, I) -> (T, B, D*H), or (B, D*H) without return_sequences; None = unknown."""
        shape = _check_input_shape(input_shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape: expected (T, B, {self.input_size}), got {shape}")
        if shape[2] is not None and shape[2] != self.input_size:
            raise ValueError(f"input_shape: expected (T, B, {self.input_size}) "
                             f"(input_size={self.input_size}), got {shape}")
        DH = self.num_directions * self.hidden_size
        return (shape[0], shape[1], DH) if self.return_sequences else (shape[1], DH)

    def config(self):
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bidirectional=self.bidirectional,
                    dropout=self.dropout, return_sequences=self.return_sequences)

    def extra_repr(self):
        defaults = dict(num_layers=1, bidirectional=False, dropout=0.0, return_sequences=True)
        parts = [str(self.input_size), str(self.hidden_size)]
        parts += [f"{k}={v!r}" for k, v in self.config().items() if k in defaults and v != defaults[k]]
        return ", ".join(parts)


def _sum_torch_biases(module, state):
    """PyTorch keeps two biases per layer; a cell with one bias (RNN, LSTM) uses their sum.

    Replaces every ``bias_ih_l{k}{sfx}`` + ``bias_hh_l{k}{sfx}`` pair by ``bias_l{k}{sfx}``.
    An incomplete pair is left alone, and load_state_dict then names it as an unknown key.
    """
    for k in range(module.num_layers):
        for sfx in module._suffixes():
            ih, hh, b = f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}", f"bias_l{k}{sfx}"
            if ih in state and hh in state and b not in state:
                a1 = _checks.finite_array(state[ih], f"state[{ih!r}]")
                a2 = _checks.finite_array(state[hh], f"state[{hh!r}]")
                want = (module._gates * module.hidden_size,)       # the layer's one bias
                for key, a in ((ih, a1), (hh, a2)):
                    if a.shape != want:
                        raise ValueError(f"state[{key!r}]: expected shape {want}, got {a.shape}")
                total = a1.astype(np.float64) + a2.astype(np.float64)
                top = float(np.abs(total).max()) if total.size else 0.0
                if top > float(np.finfo(module.dtype).max):   # (b is not the caller's key)
                    raise ValueError(f"state[{ih!r}] + state[{hh!r}]: expected a sum within "
                                     f"{np.dtype(module.dtype)}'s range (the layer's one bias "
                                     f"{b!r}), got magnitudes up to {top:.4g}")
                state[b] = total
                del state[ih], state[hh]
    return state


def _setattr_counting(self, name, value):
    """``__setattr__`` of a subclass with a ``return_sequences`` of its own: as the base
    class's property does, a bool only, and a change of structure for the containers above."""
    if name == "return_sequences":
        value = _checks.flag(value, "return_sequences")
        _adoptions[0] += 1
    object.__setattr__(self, name, value)


class RNN(_Recurrent):
    """Elman RNN with tanh, ``h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)``.

    Parameters per layer k and direction: ``weight_ih_l{k}`` (H, I or D*H), ``weight_hh_l{k}``
    (H, H), ``bias_l{k}`` (H,), with ``_reverse`` for the backward direction. Loads PyTorch
    ``nn.RNN`` state dicts (``bias_ih + bias_hh`` summed). tanh only: an ``nn.RNN`` built with
    ``nonlinearity="relu"`` has the same keys, so its weights load, but compute another function.
    """

    _cell, _gates, _states, _biases = "rnn", 1, ("h",), ("bias",)
    # One direction's batch in two halves at once (``kernels._pair``), from 2^25 multiply-adds
    # (T B H (I + H)). First set at 2^24 from this module's forward + backward, halves / whole
    # batch, alternated medians on a 2-core AMD EPYC: (T, B, I, H) = (64, 32, 128, 256) 0.77x
    # the time (two layers 0.83x), (32, 16, 64, 256) 0.83x, (32, 32, 64, 128) 0.94x,
    # (100, 64, 512, 512) level; slower below: (32, 16, 64, 128) (2^23.6) 1.10-1.40x. (The LSTM and GRU kernels
    # in halves: 0.95-0.98x at (100, 64, 512, 512), within the noise; their tiled kernels
    # already share the mid-sized steps between the cores; the GRU's re-measured later, see
    # ``GRU._halves_from``.) On a 2-core Xeon (AVX-512), 21
    # rounds each unless said: (64, 32, 128, 256) 0.85x, (100, 64, 512, 512) 0.95x (9),
    # (32, 16, 64, 256) (2^25.3) 0.95x, (16, 32, 64, 256) 0.95x, (32, 32, 128, 128) (2^25)
    # 1.01x; slower below 2^25 there: (32, 32, 64, 128) (2^24.6) 1.08x and 1.19x, (64, 16, 64,
    # 128) 1.09x. Hence from 2^25 with AVX-512. Re-measured on the AMD EPYC on 2026-12-02
    # (``benchmarks/choices``, 11 rounds; whole / halves time; why it moved was not looked
    # into): (32, 32, 64, 128) (2^24.6) 0.66, 0.84 and 0.92 in three runs,
    # (64, 16, 64, 128) 0.99; from 2^25.3 1.13-1.16 ((32, 16, 64, 256), (64, 32, 64, 128),
    # (32, 32, 128, 256), (64, 32, 128, 256)) but (16, 32, 128, 256) 0.97. So 2^25 there too.
    _halves_from = 1 << 25
    # Since ``kernels/rnn_tiled.py`` (2026-12-03; AVX-512 CPUs only so far, ``kernels/_auto.py``)
    # a shape whose kernels are tiled runs its whole batch so, not in halves. One layer fwd+bwd
    # on the 2-core Xeon, tiled / halves (``benchmarks/choices --only halves``, calls back to
    # back, 9 rounds): (32, 32, 128, 128) 1.47 / 2.06 ms, (16, 32, 64, 256) 1.67 / 2.24,
    # (32, 16, 64, 256) 1.70 / 2.12, (64, 32, 128, 256) 6.24 / 6.86, (100, 64, 512, 512) 101 /
    # 98.6 (level). A bidirectional RNN's directions still pair (``kernels/_pair.py``): back to
    # back, 2 layers, paired / one tiled direction after the other, (32, 16, 64, 128) 3.9 / 8.0
    # ms (its second layer's kernels serial there, whose BLAS threads and the team's then take
    # turns), (64, 32, 128, 256) 39-41 / 42-43 (with a pause before each call the other way
    # round, 44.8 / 40.8: the pair's worker thread wakes anew).
    _tiled_first = True
    _serial_kernel = {"path": "steps"}      # (a pair's calls: each on one core)

    def _convert_state(self, state):
        return _sum_torch_biases(self, state)


class LSTM(_Recurrent):
    """LSTM, PyTorch's gate order i, f, g, o and one bias per layer (Keras' parameter count).

    Parameters per layer k and direction: ``weight_ih_l{k}`` (4H, I or D*H), ``weight_hh_l{k}``
    (4H, H), ``bias_l{k}`` (4H,), with ``_reverse`` for the backward direction. Loads PyTorch
    ``nn.LSTM`` state dicts (``bias_ih + bias_hh`` summed).

    Init: everything U(-1/sqrt(H), 1/sqrt(H)) like PyTorch, except the forget-gate block of the
    bias, set to 1.0 (Gers et al. 2000; Jozefowicz et al. 2015; Keras' ``unit_forget_bias``) so
    that the cell starts out remembering and gradients survive long sequences.

    ``forward(x, lengths=None, h0=None, c0=None)``; after it ``h_n`` and ``c_n`` (L*D, B, H);
    after backward ``grad_h0`` and ``grad_c0``.
    """

    _cell, _gates, _states, _biases = "lstm", 4, ("h", "c"), ("bias",)
    _serial_kernel = {"path": "steps"}

    def _init_bias(self, b):
        H = self.hidden_size
        b[H:2 * H] = 1.0                                     # forget gate
        return b

    def forward(self, x, lengths=None, h0=None, c0=None):
        """As `_Recurrent.forward`, plus ``c0``: None or (L*D, B, H), the initial cell state."""
        return self._run(x, lengths, (h0, c0))

    def _convert_state(self, state):
        return _sum_torch_biases(self, state)


class GRU(_Recurrent):
    """GRU in the ``reset_after`` form (PyTorch, cuDNN), gate order r, z, n, two biases.

    Parameters per layer k and direction: ``weight_ih_l{k}`` (3H, I or D*H), ``weight_hh_l{k}``
    (3H, H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (3H,), with ``_reverse`` for the backward
    direction: exactly PyTorch ``nn.GRU``'s state dict.
    """

    _cell, _gates, _states, _biases = "gru", 3, ("h",), ("bias_ih", "bias_hh")
    _serial_kernel = {"path": "steps"}
    # Batch halves (as the RNN's, above) on AVX-512 CPUs, from 2^27 multiply-adds: module fwd+bwd,
    # halves / whole batch (whole = the tiled kernel where ``kernels._auto`` picks it), medians of
    # 7-21 alternated rounds on a 2-core Xeon: (T, B, I, H) = (64, 32, 128, 256) 0.85-0.93x,
    # (100, 64, 512, 512) 0.92-0.95x, (128, 32, 64, 128) 0.91x, (100, 8, 64, 256) 0.86x,
    # (64, 64, 64, 128) 0.95x; below, mixed: (32, 16, 64, 256) (2^26.9) 0.90x, (32, 32, 64, 128)
    # (2^26.2) 1.01x, (64, 16, 64, 128) (2^26.2) 1.13x, (32, 16, 64, 128) 1.07x. On AVX2 (the
    # 2-core AMD EPYC, 2026-12-02, ``benchmarks/choices --only halves``, 9-11 rounds; here whole
    # / halves time, > 1: halves faster) from 2^31: above it 1.02-1.14 at (50, 128, 256, 256),
    # (200, 32, 256, 256), (64, 128, 128, 256), (50, 64, 256, 512), (100, 128, 256, 384) and
    # 0.97-1.12 in two runs at (100, 64, 512, 512) (direct alternated runs: 1.10 and 1.24);
    # below it the tiled or serial whole batch faster or level: 0.81-0.86 at H = 128 ((32, 16,
    # 64, 128), (32, 32, 64, 128), (128, 32, 64, 128), (256, 32, 64, 128), (128, 64, 64, 128)),
    # 0.90 at (64, 64, 128, 256) (2^30.2), 0.96-1.04 at seven shapes from 2^26.2 to 2^30.8, and
    # (64, 32, 128, 256) (2^29.2) 0.99 and 1.10 in two runs. (Before that day: 0.95-0.98x at the
    # large shape, off.) Re-measured on a second Xeon (480 MB L3) on 2026-12-03, after the tiled
    # backward's steps went by rows, with ``benchmarks/choices --only halves`` (9-15 rounds; whole
    # / halves time): (64, 32, 128, 256) 1.08-1.11, (64, 64, 128, 256) 1.09-1.10, (128, 32, 64,
    # 128) 1.01-1.02, (32, 16, 64, 128) and (32, 32, 64, 128) (below 2^27) 0.80 and 0.86, level
    # from 2^31.6 ((32, 64, 512, 512), (100, 64, 256, 512), (50, 128, 512, 512), (100, 64, 512,
    # 512): 0.98-1.04) but (100, 32, 256, 512) 0.85: the bound stays. (Timed back to back in
    # one process without the harness's idle gaps, the halves had read 1.02-1.23x slower: one
    # thread pool's workers still spinning from the other side's call.) At the large shape the
    # halves' copies of x, dy and dx cost memory: the module's step peaks at 225 MB (216 since
    # 886b097, which keeps no third copy of x), the whole batch's at ~180 (PyTorch 184-188).
    _halves_from = (1 << 27) if _VECTOR == 16 else (1 << 31)
    # On AVX-512 CPUs, where ``kernels._auto`` gives a layer the tiled kernel, the module runs its
    # whole batch so, not in halves (as the RNN's, ``_tiled_first``): since the tiled GRU's
    # forward lost its gathers (60b05b9) and, for large layers, hands its weight gradients to
    # BLAS (``kernels/gru_tiled.py``), it is as fast or faster, for less memory. On a 2-core AMD
    # EPYC Zen 4 on 2026-12-04 (``benchmarks/choices --only halves --cells gru``, 9 rounds,
    # halves / whole ms; ``benchmarks/results/cpu_zen4_choices_halves_gru_*.json``): (64, 32,
    # 128, 256) 23.7 / 21.0 and 25.7 / 23.1, (64, 64, 128, 256) 45.6 / 43.2, (128, 32, 64, 128)
    # 13.2 / 11.4, (32, 32, 64, 128) 3.35 / 2.85, (100, 8, 64, 256) 8.51 / 7.18, (32, 16, 64, 256)
    # 5.28 / 4.68, (100, 32, 256, 384) 90.5 / 92.1; (100, 64, 512, 512) 367 / 357, (50, 128,
    # 512, 512) 372 / 340, (100, 32, 256, 512) 156 / 145, (32, 64, 512, 512) 117 / 123. The
    # module's step peak at (100, 64, 512, 512) (``benchmarks/memory``): 222 MB in halves, 166
    # whole (PyTorch's 163-176). (The Xeon's halves were faster at the mid shapes before those
    # changes, and it is not re-measured; on AVX2 CPUs the halves stay where measured faster.)
    _tiled_first = _VECTOR == 16
