"""The recurrent language model: embedding -> stacked RNN/LSTM/GRU -> dropout -> softmax.

``LanguageModel`` is a ``predtext.nn.Module`` with three ways to run it:

* training: ``begin_update(ids_tb, state)`` returns the logits and a ``backprop``;
  ``begin_update_loss(ids_tb, targets_tb, state)`` fuses the softmax cross-entropy in, so
  a training step is ``(loss, state), backprop = ...; backprop()``. The recurrent state
  returned by one chunk is the starting state of the next (truncated BPTT): gradients stop
  at the chunk border, the state does not.
* whole sequences: ``forward(ids_tb, state)`` -> ``(logits_tbv, state)``; ``feed(ids, state)``
  reads a prompt in one sequence call and keeps only the last step's distribution.
* incremental inference for the engine: ``initial_state(batch)`` then ``step(ids, state)``,
  one cell step per layer into buffers that live in the state, so a keystroke costs a few
  small GEMMs and no allocation beyond the returned log-probabilities.

A model file is the model's tensors plus JSON metadata (see ``save``), optionally with a
word n-gram model counted from the same training text, which the engine uses beside the
network. Loading never unpickles.

``quantize("int8")`` gives a copy for inference whose recurrent and decoder matrices are
8-bit integers with one float32 scale per row (``predtext.lm.quantize``), stored so in its
file.
"""

from __future__ import annotations

import math
import re

import numpy

from predtext.backend.cells import get_cell, model_cell, model_cells
from predtext.errors import ModelFileError
from predtext.lm import modelfile
from predtext.lm.quantize import SCHEMES, dequantize_rows, quantize_rows
from predtext.lm.tokenizers import tokenizer_from_json
from predtext.nn import Dropout, Embedding, Linear, Module, check_dtype, softmax_cross_entropy_
from predtext.nn.rnn import RNNBase

#: Names the model-specific metadata carries, inside the model file's metadata document.
MODEL_FORMAT = "predtext.lm"
MODEL_FORMAT_VERSION = 2
# Version 2 added 8-bit weights; a float model is still written as version 1, so that an
# older predtext reads it, and a quantised one as 2, which an older predtext refuses clearly.
_FLOAT_FORMAT_VERSION = 1
#: Metadata key of the optional n-gram description (the key ``NGramModel`` itself uses).
NGRAM_META_KEY = "predtext.ngram"
NGRAM_TENSOR_PREFIX = "ngram."

#: The parameters ``quantize`` makes 8-bit: every recurrent weight matrix (each layer and
#: direction) and the decoder's. The embedding stays float: a step reads one row of it, not
#: the whole matrix, so 8 bits would save no memory traffic; biases and peepholes are vectors.
_INT8_WEIGHTS = re.compile(r"rnn\.weight_(ih|hh)_l\d+(_reverse)?|decoder\.weight")

#: What the config's "cell" may be (the table in predtext.backend.cells).
CELLS = model_cells()

#: The packaged default model, in ``predtext/models/``.
DEFAULT_MODEL_FILE = "default.safetensors"

#: Every config key with its default; ``LanguageModel.config`` holds all of them.
DEFAULT_CONFIG = {
    "vocab_size": None,      # required
    "embed_size": 64,
    "hidden_size": 512,
    "num_layers": 2,
    "cell": "lstm",          # "lstm", "gru" or "rnn"
    "nonlinearity": "tanh",  # for cell="rnn": "tanh" or "relu"
    "bias": True,
    "peephole": False,       # LSTM only
    "dropout": 0.0,          # on the embedding output, between layers and before the decoder
    "recurrent_dropout": 0.0,  # on h_{t-1} inside the recurrence, one mask per sequence
    "tie_weights": False,    # decoder.weight is embedding.weight (needs embed_size == hidden_size)
    "forget_bias": 0.0,      # LSTM: initial forget-gate bias (added to bias_ih)
}


class LMState:
    """The recurrent state of a batch of texts, and what it predicts next.

    ``h`` (and ``c`` for an LSTM, else None) have shape ``(num_layers, B, hidden_size)``.
    ``log_probs`` is the ``(B, V)`` next-token distribution after the last token read,
    or None when unknown (a fresh state, or one carried between training chunks).

    ``LanguageModel.step`` advances a state in place, reusing the buffers kept here; call
    ``copy()`` first to keep the old state (the engine does so to undo a keystroke).
    """

    __slots__ = ("h", "c", "log_probs", "_buffers")

    def __init__(self, h, c=None, log_probs=None):
        self.h = h
        self.c = c
        self.log_probs = log_probs
        self._buffers = None

    @property
    def batch_size(self):
        return self.h.shape[1]

    def copy(self):
        """An independent copy (the step buffers are not shared, and made again on use)."""
        return LMState(self.h.copy(), None if self.c is None else self.c.copy(),
                       None if self.log_probs is None else self.log_probs.copy())

    def select(self, rows):
        """A new state made of the given batch rows (repeats allowed): beam search uses it."""
        rows = numpy.asarray(rows, dtype=numpy.intp)
        return LMState(self.h[:, rows], None if self.c is None else self.c[:, rows],
                       None if self.log_probs is None else self.log_probs[rows])

    def layer_state(self):
        """The state in the recurrent layer's own form: ``h`` or ``(h, c)``."""
        return self.h if self.c is None else (self.h, self.c)

    def __repr__(self):
        kind = "h, c" if self.c is not None else "h"
        return f"LMState({kind}: {tuple(self.h.shape)})"


class _StepBuffers:
    """A state's compiled whole-network step (it owns its scratch arrays) and the parameter
    arrays it was built on, to notice when one was replaced."""

    __slots__ = ("network", "params", "arrays", "array_ids")

    def __init__(self, model, batch):
        rnn, decoder = model.rnn, model.decoder
        layers = [rnn.layer_parameters(k) for k in range(model.num_layers)]

        def matrix(param):
            # An 8-bit model's step reads its int8 rows and scales where the backend can.
            pair = model._int8_pair(param) if model.ops.int8_step else None
            return pair or param.data

        self.network = model.ops.network_step(
            rnn.cell, model.embedding.weight.data,
            [[matrix(w_ih), matrix(w_hh)] + [_data(p) for p in rest]
             for w_ih, w_hh, *rest in layers],
            matrix(decoder.weight), _data(decoder.bias), batch)
        self.params = [model.embedding.weight] + [p for layer in layers for p in layer
                                                  if p is not None]
        self.params += [p for p in (decoder.weight, decoder.bias) if p is not None]
        # Held, so that no other array can take one of their ids while we compare.
        self.arrays = [param.data for param in self.params]
        self.array_ids = [id(array) for array in self.arrays]

    def current(self):
        # Once per model step: ids compared as one list (~1 us), not array by array.
        return [id(param.data) for param in self.params] == self.array_ids


def _data(param):
    return None if param is None else param.data


def check_config(config):
    """A complete, validated config dict: defaults filled in; ValueError names a bad key."""
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"config: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    full = dict(DEFAULT_CONFIG)
    full.update(config)
    for key in ("vocab_size", "embed_size", "hidden_size", "num_layers"):
        value = full[key]
        if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
            raise ValueError(f"{key}: expected a positive int, got {value!r}")
        full[key] = int(value)
    if full["cell"] not in CELLS:
        raise ValueError(f"cell: expected one of {CELLS}, got {full['cell']!r}")
    if full["nonlinearity"] not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {full['nonlinearity']!r}")
    if full["peephole"] and not model_cell(full["cell"], full["nonlinearity"]).extra_parameters:
        raise ValueError(f"peephole: only an LSTM has peephole weights (cell={full['cell']!r})")
    for key in ("dropout", "recurrent_dropout"):
        p = full[key]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"{key}: expected a probability in [0, 1), got {p!r}")
        full[key] = float(p)
    if full["tie_weights"] and full["embed_size"] != full["hidden_size"]:
        raise ValueError(
            f"tie_weights: needs embed_size == hidden_size, got {full['embed_size']} and "
            f"{full['hidden_size']}")
    for key in ("bias", "peephole", "tie_weights"):
        full[key] = bool(full[key])
    full["forget_bias"] = float(full["forget_bias"])
    return full


class LanguageModel(Module):
    """Embedding -> stacked recurrent layers -> dropout -> linear decoder over the vocabulary.

    ``LanguageModel(vocab_size, embed_size=64, hidden_size=512, num_layers=2, cell="lstm",
    ...)`` takes the keys of ``DEFAULT_CONFIG`` as keyword arguments, plus ``tokenizer``
    (kept with the model and stored in its file), ``dtype`` (float32, or float64 for
    gradient checks) and ``seed`` (initial weights and dropout masks; the generator is
    ``self.rng``, whose state a checkpoint saves).

    Parameters are named ``embedding.weight``, ``rnn.weight_ih_l0``... (the recurrent
    layer's own names, as in torch), ``decoder.weight`` and ``decoder.bias``. With
    ``tie_weights`` the decoder's weight is the embedding's Parameter object.
    """

    def __init__(self, vocab_size=None, *, tokenizer=None, dtype=numpy.float32, seed=None,
                 **config):
        super().__init__()
        if vocab_size is None and tokenizer is not None:
            vocab_size = tokenizer.vocab_size
        config = check_config(dict(config, vocab_size=vocab_size))
        if tokenizer is not None and tokenizer.vocab_size != config["vocab_size"]:
            raise ValueError(f"tokenizer: has {tokenizer.vocab_size} tokens, the model's "
                             f"vocab_size is {config['vocab_size']}")
        self.config = config
        self.tokenizer = tokenizer
        self.dtype = check_dtype(dtype)
        self.rng = numpy.random.default_rng(seed)
        self._ngram_parts = None      # (arrays, meta, path) of an n-gram model read from a file
        self._ngram = None
        self._int8 = {}               # name -> (Parameter, q, scale) of each 8-bit weight
        self.training_record = {}

        V, E, H, L = (config[k] for k in ("vocab_size", "embed_size", "hidden_size", "num_layers"))
        p = config["dropout"]
        self.embedding = Embedding(V, E, dtype=self.dtype, rng=self.rng)
        self.embedding_dropout = Dropout(p, rng=self.rng)
        layer_options = dict(bias=config["bias"], dropout=p if L > 1 else 0.0,
                             recurrent_dropout=config["recurrent_dropout"],
                             dtype=self.dtype, rng=self.rng)
        cell = model_cell(config["cell"], config["nonlinearity"])
        if config["peephole"]:
            layer_options["peephole"] = True
        self.rnn = RNNBase.for_cell(cell.name, E, H, L, **layer_options)
        self.output_dropout = Dropout(p, rng=self.rng)
        self.decoder = Linear(H, V, dtype=self.dtype, rng=self.rng)
        if config["tie_weights"]:
            # N(0, 1) rows would give logits of size sqrt(H) through the shared decoder;
            # the small uniform range usual for tied models keeps the first steps sane.
            bound = 0.1
            self.embedding.weight.data[...] = self.rng.uniform(-bound, bound, (V, E))
            self.decoder.weight = self.embedding.weight
        if cell.forget_gate is not None and config["bias"] and config["forget_bias"]:
            gate = slice(cell.forget_gate * H, (cell.forget_gate + 1) * H)
            for k in range(L):
                getattr(self.rnn, f"bias_ih_l{k}").data[gate] = config["forget_bias"]

    # -- sizes and text ----------------------------------------------------------------

    @property
    def vocab_size(self):
        return self.config["vocab_size"]

    @property
    def num_layers(self):
        return self.config["num_layers"]

    @property
    def hidden_size(self):
        return self.config["hidden_size"]

    def num_parameters(self):
        return sum(int(p.size) for p in self.parameters())

    def encode(self, text):
        """Token ids of ``text`` through the model's tokenizer."""
        return self._need_tokenizer().encode(text)

    def decode(self, ids):
        return self._need_tokenizer().decode(ids)

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass tokenizer= when creating it")
        return self.tokenizer

    @property
    def start_id(self):
        """The token read before a text with no context: a newline when the vocabulary has
        one (texts and documents start after line breaks), else the unknown token."""
        if self.tokenizer is not None:
            for token in ("\n", "\n\n"):
                token_id = self.tokenizer.token_to_id.get(token)
                if token_id is not None:
                    return token_id
        return 0

    # -- training and whole sequences ---------------------------------------------------

    def _check_ids(self, ids_tb):
        ids_tb = numpy.asarray(ids_tb)
        if ids_tb.ndim == 1:
            ids_tb = ids_tb[:, None]
        if ids_tb.ndim != 2 or ids_tb.shape[0] < 1 or ids_tb.shape[1] < 1:
            raise ValueError(f"ids_tb: expected a (T, B) array of token ids with T, B >= 1, "
                             f"got shape {ids_tb.shape}")
        return ids_tb

    def _layer_state(self, state, batch):
        if state is None:
            return None
        if not isinstance(state, LMState):
            raise TypeError(f"state: expected an LMState or None, got {type(state).__name__}")
        if state.batch_size != batch:
            raise ValueError(f"state: holds {state.batch_size} sequences, the input has {batch}")
        return state.layer_state()

    def _as_lm_state(self, layer_state):
        if isinstance(layer_state, tuple):
            return LMState(layer_state[0], layer_state[1])
        return LMState(layer_state)

    def forward(self, ids_tb, state=None):
        """Logits ``(T, B, V)`` for token ids ``(T, B)`` (or ``(T,)``) and the final state.

        ``state`` is an ``LMState`` (the zero state when None). Nothing is cached.
        """
        ids_tb = self._check_ids(ids_tb)
        T, B = ids_tb.shape
        x_tbe = self.embedding_dropout(self.embedding(ids_tb))
        out_tbh, layer_state = self.rnn(x_tbe, self._layer_state(state, B))
        out_nh = self.output_dropout(out_tbh).reshape(T * B, -1)
        logits = self.decoder(out_nh).reshape(T, B, -1)
        return logits, self._as_lm_state(layer_state)

    def begin_update(self, ids_tb, state=None):
        """Training forward: ``((logits_tbv, state), backprop)``.

        ``backprop(d_logits_tbv, d_state=None)`` adds every parameter's gradient into its
        ``.grad`` and returns the gradient of the initial state as ``(dh0, dc0 or None)``.
        """
        self._refuse_training()
        ids_tb = self._check_ids(ids_tb)
        T, B = ids_tb.shape
        emb_tbe, backprop_embedding = self.embedding.begin_update(ids_tb)
        emb_tbe, backprop_embedding_dropout = self.embedding_dropout.begin_update(emb_tbe)
        (out_tbh, layer_state), backprop_rnn = self.rnn.begin_update(
            emb_tbe, self._layer_state(state, B))
        out_tbh, backprop_output_dropout = self.output_dropout.begin_update(out_tbh)
        # The decoder sees (T*B, H): one plain GEMM instead of a batched matmul.
        logits_nv, backprop_decoder = self.decoder.begin_update(out_tbh.reshape(T * B, -1))
        new_state = self._as_lm_state(layer_state)

        def backprop(d_logits_tbv, d_state=None):
            d_out_nh = backprop_decoder(d_logits_tbv.reshape(T * B, -1))
            d_out_tbh = backprop_output_dropout(d_out_nh.reshape(T, B, -1))
            d_layer_state = None if d_state is None else d_state.layer_state()
            d_emb_tbe, d_state0 = backprop_rnn(d_out_tbh, d_layer_state)
            backprop_embedding(backprop_embedding_dropout(d_emb_tbe))
            return d_state0 if isinstance(d_state0, tuple) else (d_state0, None)

        return (logits_nv.reshape(T, B, -1), new_state), backprop

    def begin_update_loss(self, ids_tb, targets_tb, state=None, ignore_index=-100,
                          as_array=False):
        """Training forward with the loss: ``((mean_loss, state), backprop)``.

        The loss is the mean cross-entropy (nats per token) of ``targets_tb`` over the
        targets that are not ``ignore_index``; ``backprop(d_loss=1.0)`` adds the parameter
        gradients of ``d_loss * loss`` and returns the initial state's gradient.
        ``as_array``: the loss as a 0-d array on the model's device, not a float (nothing
        is read back from a GPU).
        """
        (logits_tbv, new_state), backprop_logits = self.begin_update(ids_tb, state)
        loss, d_logits = softmax_cross_entropy_(logits_tbv, numpy.asarray(targets_tb),
                                                ignore_index, as_array=as_array)

        def backprop(d_loss=1.0):
            if d_loss != 1.0:
                d_logits[...] *= d_logits.dtype.type(d_loss)
            return backprop_logits(d_logits)

        return (loss, new_state), backprop

    # -- incremental inference ------------------------------------------------------------

    def initial_state(self, batch=1):
        """The zero state for ``batch`` texts, with its step buffers ready.

        Its ``log_probs`` is None: the model has read nothing yet. ``feed`` the start of a
        text (or ``[model.start_id]``) to get a first distribution.
        """
        if isinstance(batch, bool) or not isinstance(batch, (int, numpy.integer)) or batch < 1:
            raise ValueError(f"batch: expected a positive int, got {batch!r}")
        xp = self.ops.xp
        shape = (self.num_layers, int(batch), self.hidden_size)
        h = xp.zeros(shape, dtype=self.dtype)
        c = xp.zeros(shape, dtype=self.dtype) if get_cell(self.rnn.cell).has_cell_state else None
        state = LMState(h, c)
        state._buffers = _StepBuffers(self, int(batch))
        return state

    def step(self, token_ids, state):
        """Read one token per text: ``(log_probs (B, V), state)``, the state advanced in place.

        ``token_ids`` has one id per text of the state's batch. The whole network (embedding,
        every layer, decoder, log-softmax) is one call of the compiled core into the state's
        own arrays; the only array made per step is the returned ``log_probs`` (also kept as
        ``state.log_probs``). Inference mode: no dropout, whatever ``self.training`` says.
        """
        if not isinstance(state, LMState):
            raise TypeError(f"state: expected an LMState, got {type(state).__name__}")
        B = state.batch_size
        if not (state.h.flags.c_contiguous and (state.c is None or state.c.flags.c_contiguous)):
            xp = self.ops.xp
            state.h = xp.ascontiguousarray(state.h)
            state.c = None if state.c is None else xp.ascontiguousarray(state.c)
        buffers = state._buffers
        if buffers is None or buffers.network.batch != B or not buffers.current():
            buffers = state._buffers = _StepBuffers(self, B)
        log_probs = self.ops.xp.empty((B, self.vocab_size), dtype=self.dtype)
        ids = token_ids if isinstance(token_ids, numpy.ndarray) else numpy.asarray(token_ids)
        buffers.network(ids.reshape(-1) if ids.ndim == 0 else ids, state.h, state.c, log_probs)
        state.log_probs = log_probs
        return log_probs, state

    def _log_softmax_into(self, h_bh, out_bv, scratch_bv):
        """``out = log_softmax(h @ W.T + b)``, computed in ``out`` with one scratch array."""
        xp = self.ops.xp
        # Through the backend's product, as Linear does: NumPy's would wake BLAS threads
        # that then compete with the next step's kernel team (a word model's 20k rows).
        self.ops.matmul(h_bh, self.decoder.weight.data, out=out_bv, trans_b=True)
        if self.decoder.bias is not None:
            out_bv += self.decoder.bias.data
        out_bv -= out_bv.max(axis=1, keepdims=True)
        xp.exp(out_bv, out=scratch_bv)
        out_bv -= xp.log(scratch_bv.sum(axis=1, keepdims=True))
        return out_bv

    def feed(self, ids, state=None):
        """Read a whole sequence of ids (one text, or ``(T, B)`` for B texts) at once.

        Returns ``(log_probs (B, V), state)``: the distribution of the token after the
        last one read. Uses the sequence kernel, so a long prompt costs one call per layer.
        ``state`` is continued (not modified); None starts from the zero state. With no
        ids, the state's own ``log_probs`` are returned (the start token is read into a
        fresh state first).
        """
        ids = numpy.asarray(ids)
        if ids.dtype.kind not in "iu" and ids.size:
            raise TypeError(f"ids: expected integer token ids, got dtype {ids.dtype}")
        if ids.size == 0:
            if state is not None and state.log_probs is not None:
                return state.log_probs, state
            ids = numpy.array([self.start_id])
        ids_tb = self._check_ids(ids.astype(numpy.int64, copy=False))
        T, B = ids_tb.shape
        if ids_tb.min() < 0 or ids_tb.max() >= self.vocab_size:
            raise ValueError(f"ids: must lie in [0, {self.vocab_size})")
        was_training = self.training
        self.eval()
        try:
            x_tbe = self.embedding(ids_tb)
            out_tbh, layer_state = self.rnn(x_tbe, self._layer_state(state, B))
        finally:
            self.train(was_training)
        new_state = self._as_lm_state(layer_state)
        log_probs = self.ops.xp.empty((B, self.vocab_size), dtype=self.dtype)
        scratch = self.ops.xp.empty_like(log_probs)
        self._log_softmax_into(self.ops.xp.ascontiguousarray(out_tbh[-1]), log_probs, scratch)
        new_state.log_probs = log_probs
        return log_probs, new_state

    def feed_text(self, text, state=None):
        """``feed`` the tokens of ``text``; an empty text with no state reads the start token."""
        return self.feed(self.encode(text), state)

    def next_token_distribution(self, text, state=None):
        """Probabilities ``(V,)`` of the next token after ``text`` (index = token id)."""
        log_probs, _ = self.feed_text(text, state)
        return numpy.exp(self.ops.to_numpy(log_probs[0]).astype(numpy.float64))

    def generate(self, prompt="", length=200, **options):
        """Sampled continuation of ``prompt``; see ``predtext.lm.generate.generate``.

        It runs on a thread of its own, so that the caller's thread is left without a
        compiled-core thread team (see ``predtext.backend.threads``).
        """
        from predtext.backend.threads import on_own_thread
        from predtext.lm.generate import generate

        return on_own_thread(generate, self, prompt, length, **options)

    def beam_search(self, state, **options):
        """Likeliest continuations from ``state``; see ``predtext.lm.generate.beam_search``."""
        from predtext.lm.generate import beam_search

        return beam_search(self, state, **options)

    # -- files --------------------------------------------------------------------------

    def tensors(self, dtype=None):
        """The parameters as a name -> NumPy array dict (a tied weight appears once), as the
        model file stores them: an 8-bit weight as its int8 array and ``NAME.scale``."""
        state = self.state_dict()
        if dtype is not None:
            state = {name: array.astype(dtype) for name, array in state.items()}
        return modelfile.pack_int8(state, self._int8_pairs())

    def file_meta(self, training=None):
        """The JSON metadata a model file carries (config, tokenizer, training record)."""
        meta = {
            "model_format": MODEL_FORMAT,
            "model_format_version": MODEL_FORMAT_VERSION if self._int8 else _FLOAT_FORMAT_VERSION,
            "config": dict(self.config),
            "tokenizer": None if self.tokenizer is None else self.tokenizer.to_json(),
            "training": dict(self.training_record if training is None else training),
        }
        if self._int8:
            meta[modelfile.QUANTIZATION_KEY] = modelfile.int8_meta(self._int8)
        return meta

    def save(self, path, ngram=None, training=None, weights_dtype=None):
        """Write the model file at ``path`` atomically (a temporary file, then a rename).

        ``ngram``: an ``NGramModel`` to store beside the network (its arrays under
        ``ngram.*``, its description under the ``predtext.ngram`` metadata key); by default
        the one this model was loaded with, if any. ``training``: the training record (by
        default ``self.training_record``). ``weights_dtype``: e.g. ``numpy.float16`` to
        halve the file; loading casts back to the model's dtype (8-bit weights and their
        scales are stored as they are).
        """
        tensors = self.tensors(weights_dtype)
        meta = self.file_meta(training)
        arrays, ngram_meta = self._ngram_arrays(ngram)
        if ngram_meta is not None:
            tensors.update(arrays)
            meta[NGRAM_META_KEY] = ngram_meta
        modelfile.save_model(path, tensors, meta)

    def _ngram_arrays(self, ngram):
        if ngram is not None:
            arrays, meta = ngram.to_arrays()
        elif self._ngram is not None:
            arrays, meta = self._ngram.to_arrays()
        elif self._ngram_parts is not None:
            arrays, meta, _ = self._ngram_parts
        else:
            return {}, None
        return {name: _narrowest_int(array) for name, array in arrays.items()}, meta

    @property
    def ngram(self):
        """The word n-gram model stored with this model (built on first use), or None."""
        if self._ngram is None and self._ngram_parts is not None:
            from predtext.lm.ngram import NGramModel

            arrays, meta, path = self._ngram_parts
            try:
                self._ngram = NGramModel.from_arrays(arrays, meta)
            except Exception as exc:     # any inconsistency in the stored arrays is a bad file
                raise ModelFileError(path, f"its n-gram model is not readable "
                                           f"({type(exc).__name__}: {exc})") from None
        return self._ngram

    @ngram.setter
    def ngram(self, model):
        self._ngram, self._ngram_parts = model, None

    @classmethod
    def load(cls, path, dtype=numpy.float32):
        """Read a model file (or the model part of a training checkpoint).

        Raises ``ModelFileError`` naming the file for a missing, truncated, corrupt,
        foreign or inconsistent file.
        """
        tensors, meta = modelfile.load_model(path)
        return cls.from_tensors(tensors, meta, path, dtype)

    @classmethod
    def from_tensors(cls, tensors, meta, path="<memory>", dtype=numpy.float32):
        """The model that ``tensors`` and ``meta`` (as ``save`` writes them) describe."""
        if meta.get("model_format") != MODEL_FORMAT:
            raise ModelFileError(path, "holds no language model (it may be another predtext file)")
        version = meta.get("model_format_version")
        if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
            raise ModelFileError(path, f"language-model format version {version!r} is not one "
                                       f"this predtext reads (up to {MODEL_FORMAT_VERSION})")
        try:
            config = check_config(meta.get("config"))
            tokenizer = None
            if meta.get("tokenizer") is not None:
                tokenizer = tokenizer_from_json(meta["tokenizer"])
            model = cls(tokenizer=tokenizer, dtype=dtype, seed=0, **config)
            weights = {k: v for k, v in tensors.items() if not k.startswith(NGRAM_TENSOR_PREFIX)}
            weights, pairs = modelfile.unpack_int8(path, weights,
                                                   meta.get(modelfile.QUANTIZATION_KEY))
            if pairs and sorted(pairs) != sorted(model._int8_names()):
                raise ValueError(f"its 8-bit weights {sorted(pairs)} are not the model's "
                                 f"recurrent and decoder weights {sorted(model._int8_names())}")
            # The int8 arrays stand in for their weights so that every shape is checked
            # here; _set_int8 then writes the values they stand for.
            model.load_state_dict(dict(weights, **{name: q for name, (q, _) in pairs.items()}))
            model._set_int8(pairs)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(path, f"inconsistent language model: {exc}") from None
        model.training_record = meta.get("training") or {}
        if meta.get(NGRAM_META_KEY) is not None:
            arrays = {k: v for k, v in tensors.items() if k.startswith(NGRAM_TENSOR_PREFIX)}
            model._ngram_parts = (arrays, meta[NGRAM_META_KEY], path)
        model.eval()
        return model

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c['vocab_size']}, cell={c['cell']!r}, layers={c['num_layers']}, "
                f"hidden={c['hidden_size']}, embed={c['embed_size']}, dropout={c['dropout']}, "
                + (f"recurrent_dropout={c['recurrent_dropout']}, "
                   if c['recurrent_dropout'] else "")
                + f"tie_weights={c['tie_weights']}" + (", int8" if self._int8 else ""))

    # -- 8-bit weights --------------------------------------------------------------------

    def quantize(self, scheme="int8"):
        """A copy of this model for inference with 8-bit recurrent and decoder weights.

        Each weight matrix of the recurrent layers (every layer and direction) and the
        decoder's becomes int8 with one float32 scale per output row (see
        ``predtext.lm.quantize``); the embedding and the biases stay float. Like
        ``torch.ao.quantization.quantize_dynamic``, it returns a new model and leaves this
        one as it was. The copy is in inference mode; ``save`` stores its 8-bit weights as
        they are, ``load`` gives it back. It cannot be trained (``begin_update`` raises
        ValueError): train the float model and quantise it again. With ``tie_weights`` the
        decoder's weight is the embedding's, which stays float.

        The 8-bit arrays are the model's weights; its float parameters hold what they stand
        for, ``scale * q``, which ``forward``, ``feed`` and ``step`` compute with.
        """
        if scheme not in SCHEMES:
            raise ValueError(f"scheme: expected one of {SCHEMES}, got {scheme!r}")
        model = self._float_copy()
        params = dict(model.named_parameters())
        model._set_int8({name: quantize_rows(model.ops.to_numpy(params[name].data))
                         for name in model._int8_names()})
        return model

    @property
    def quantized(self):
        """The quantisation scheme of the weights ("int8"), or None for a float model."""
        return SCHEMES[0] if self._int8 else None

    def _int8_names(self):
        """The names of the parameters ``quantize`` makes 8-bit, in parameter order."""
        return [name for name, _ in self.named_parameters() if _INT8_WEIGHTS.fullmatch(name)]

    def _int8_pairs(self):
        """name -> ``(q int8 (N, K), scale float32 (N,))`` of each 8-bit weight (NumPy
        arrays; empty for a float model): what an int8 step kernel takes in place of the
        float matrix."""
        return {name: (q, scale) for name, (_, q, scale) in self._int8.items()}

    def _int8_pair(self, param):
        """``(q, scale)`` of the Parameter ``param`` when it is an 8-bit weight, else None
        (a parameter replaced after quantising is a float one)."""
        for owner, q, scale in self._int8.values():
            if owner is param:
                return q, scale
        return None

    def _set_int8(self, pairs):
        """Make the weights named in ``pairs`` (name -> (q, scale)) 8-bit: each Parameter's
        float array, kept in place (a state's step buffers stay valid), gets ``scale * q``."""
        params = dict(self.named_parameters())
        for name, (q, scale) in pairs.items():
            param = params[name]
            param.data[...] = self.ops.asarray(dequantize_rows(q, scale, param.dtype))
            param.requires_grad = False
            self._int8[name] = (param, q, scale)
        if pairs:
            self.eval()

    def _float_copy(self):
        """A float model equal to this one (weights, tokenizer, n-gram, record, device)."""
        model = type(self)(tokenizer=self.tokenizer, dtype=self.dtype, seed=0, **self.config)
        model.load_state_dict(self.state_dict())
        model.rng.bit_generator.state = self.rng.bit_generator.state
        model.training_record = dict(self.training_record)
        model._ngram, model._ngram_parts = self._ngram, self._ngram_parts
        model.train(self.training)
        return model if self.ops is model.ops else model.to(self.ops)

    def _refuse_training(self):
        if self._int8:
            raise ValueError("this model has 8-bit weights, for inference only: train the "
                             "float model, then quantize() it")

    def load_state_dict(self, state_dict, strict=True):
        """As ``Module.load_state_dict``; refused on a model with 8-bit weights (whose float
        values must stay what the 8-bit ones stand for): load a float model and quantise it."""
        if self._int8:
            raise ValueError("load_state_dict: this model has 8-bit weights; load the values "
                             "into a float model and quantize() it")
        return super().load_state_dict(state_dict, strict)


def default_model_path():
    """Where the packaged default model lives (the file may be absent in a source tree)."""
    from pathlib import Path

    import predtext.models

    return Path(predtext.models.__file__).resolve().parent / DEFAULT_MODEL_FILE


def load_ngram(path):
    """The word n-gram model stored in a model file, or None when it has none."""
    model = LanguageModel.load(path)
    return model.ngram


def _narrowest_int(array):
    """Integer arrays in the smallest dtype that holds their values (lossless, smaller
    files; ``NGramModel.from_arrays`` casts them back)."""
    if array.dtype.kind not in "iu" or array.size == 0:
        return array
    low, high = int(array.min()), int(array.max())
    for dtype in (numpy.uint8, numpy.int8, numpy.uint16, numpy.int16, numpy.uint32, numpy.int32):
        info = numpy.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype)
    return array


def perplexity(loss):
    """``exp(loss)``, inf rather than an overflow error for a huge loss."""
    return math.exp(loss) if loss < 700 else math.inf
