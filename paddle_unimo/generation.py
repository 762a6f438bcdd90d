"""Batched decoding with the KV cache: greedy, beam search and sampling, under two conventions.

``convention="paddlenlp"`` (the default) reproduces PaddleNLP's ``generate``; ``convention="original"`` the
original UNIMO's decoding (PaddlePaddle/Research NLP/UNIMO ``src/finetune/seq2seq.py`` ``fast_decode`` and
``src/finetune/trigram_blocking.py``). Side by side:

=====================  ===========================================  ============================================
                       "paddlenlp"                                  "original"
=====================  ===========================================  ============================================
banned tokens          [UNK], [PAD], [CLS] always (-1e9 on the       none
                       logits, before the log-softmax)
eos before min_length  -1e9 added *after* the log-softmax (the      -1e18 added to its logit *before* the
                       other tokens keep their full-softmax          log-softmax, so the others' log-probs are
                       log-probs)                                    those of a softmax without the eos
candidates per beam    top 2 x num_beams over all beams; an eos in   top num_beams of each beam; an eos candidate
                       the top num_beams finishes a hypothesis,      takes a beam slot like any other token
                       the open beams are refilled without eos
finished hypotheses    a separate heap of num_beams, scored          stay in the beam with the score they had
                       sum / lp(len without the eos)                 when they ended, sum / lp(len with the eos);
                                                                     an open candidate that scores better pushes
                                                                     them out
stop                   early_stopping, or no open beam can beat      when every slot of the beam holds a finished
                       the worst finished one                        hypothesis (or at max_length)
result                 best of the heap (+ open beams at the end)    best of the final beam by normalised score
repeats                no_repeat_ngram_size (token n-grams),         trigram_blocking: word trigrams, -65000 on a
                       repetition_penalty                            blocked candidate's score (see below)
greedy score           mean log-probability                          sum of log-probabilities (no length penalty)
=====================  ===========================================  ============================================

``lp(n) = ((5 + n) / 6) ** length_penalty`` (GNMT) in both; a hypothesis' sum is of the log-probabilities of its
tokens (under "original" plus -65000 for each blocked token it took, as the original adds the penalty to the
accumulated score).

Word-trigram blocking ("original", ``trigram_blocking=True``, ``word_starts`` (V,) bool, see
``decoding_original.word_start_table``): the words of a candidate sequence are built from [start token] + hypothesis + candidate;
the first token always starts a word, a token with ``word_starts[id]`` starts a new one and any other token
extends the last word. A candidate is blocked when the sequence has more than 3 words and its last three words
(the last one as built so far, possibly incomplete) equal three consecutive words ending before the last word.
The check runs for every candidate, at every piece: a multi-piece word is matched when its last piece makes it
equal to the earlier (complete) word; a token trigram repeated inside one word is never blocked. In beam search
only the num_beams top candidates of each beam are checked, and a blocked one is penalised, not removed (so with
num_beams 1 it is still taken, as in the original). Greedy search under "original" (which the original does not
have) takes the most probable token that is not blocked.

Each source is encoded once (``prefill``) and its keys/values are never copied: its beams and return sequences
(consecutive rows) all read them (``StepCache``, ``modeling.DecodingCache``). Only the generated tokens' keys/values
are per row, in buffers of ``max_length`` slots written in place; reordering beams moves only those buffers. Every
step feeds one token per row. Conventions of both UNIMO families: generation starts after the
target's [CLS] and stops at the eos ([MASK]); ``max_length``/``min_length`` count new tokens, the eos included,
in both conventions. Under the PaddleNLP convention, as in PaddleNLP's ``generate``:
* [UNK], [PAD] and [CLS] are never generated;
* beam search keeps ``num_beams`` finished hypotheses per source, scored
  ``sum_logprob / ((length + 5) / 6) ** length_penalty`` (GNMT); with ``early_stopping`` a source is done as
  soon as it has ``num_beams`` of them, otherwise when no open beam can beat the worst one;
* a finished row is followed by the eos (when it fits) and then pad ids.

PaddleNLP-convention constraints over the *generated* tokens: ``no_repeat_ngram_size`` (token n-grams; the
original UNIMO's trigram blocking is on words, see above) and ``repetition_penalty`` (a generated token's logit is
divided by it when positive and multiplied when negative). Sampling: ``temperature``, then ``top_k``, then
``top_p``, drawn from a numpy generator seeded with ``seed`` (None: fresh randomness every call), so a seeded run
is reproducible. The "original" convention refuses these (ConfigError), and ``early_stopping``: the original has
none of them.

Image-conditioned decoding (captioning): ``region_feats`` (B, R, D), ``region_locs`` (B, R, 5) and ``region_valid``
(B, R) go to the prefill with the full (B, R + L, R + L) mask of ``masks.captioning_inputs`` over ``[regions;
text]``. Each image is encoded once per source, so the KV cache holds its region keys and the source's beams and
return sequences share those rows (``StepCache``); every step's token sees the valid regions through the cache's
``source_bias``.
The original img2txt task (PaddlePaddle/Research NLP/UNIMO, ``finetune/img2txt.py``) ends a caption at [SEP]:
pass its id as ``eos_token_id``.

Dialog models (CoQA: ``role_type_size``/``turn_type_size`` > 0) take the source's ``role_ids``/``turn_ids`` (B, L)
in the prefill; generated tokens get role 0 and turn 0, as in the original's dialog decoding.

Returns ``(ids (B * num_return_sequences, T), scores (B * num_return_sequences, 1))``. Scores: see the table
above for greedy; the length-penalised hypothesis score for beam search; mean log-probability for sampling. A
finished row ends with the eos and then pads in both conventions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import paddle

from . import cpu_kernels as kernels
from . import masks
from .config import REGION_LOCATION_SIZE
from .typed import ConfigError, bounded, check
from .modeling import DecodingCache, add_bias, log_softmax, packed_layer_weights

NEVER = -1e9  # logit of tokens that are never generated
STRATEGIES = ("greedy_search", "beam_search", "sampling")
CONVENTIONS = ("paddlenlp", "original")


@dataclass
class DecodeConfig:
    """The decoding settings of ``generate`` as one checked config (a task's ``decode`` section)."""
    decode_strategy: str = bounded("greedy_search", choices=STRATEGIES)
    num_beams: int = bounded(1, min=1)
    length_penalty: float = 1.0
    early_stopping: bool = False
    min_length: int = bounded(0, min=0)
    max_length: int = bounded(20, min=1)
    no_repeat_ngram_size: int = bounded(0, min=0)
    repetition_penalty: float = bounded(1.0, above=0.0)
    top_k: int = bounded(0, min=0)
    top_p: float = bounded(1.0, above=0.0, max=1.0)
    temperature: float = bounded(1.0, above=0.0)
    seed: Optional[int] = None
    num_return_sequences: int = bounded(1, min=1)
    convention: str = bounded("paddlenlp", choices=CONVENTIONS)  # see the module docstring
    trigram_blocking: bool = False  # "original" only: word-trigram blocking; generate() then needs word_starts

    def validate(self, where: str) -> None:
        self._validate_convention(where)
        if self.min_length > self.max_length:
            raise ConfigError(f"{where}.min_length: {self.min_length} is above max_length {self.max_length}")
        if self.decode_strategy == "beam_search" and self.num_return_sequences > self.num_beams:
            raise ConfigError(f"{where}.num_return_sequences: {self.num_return_sequences} is above num_beams "
                              f"{self.num_beams} (beam search returns at most num_beams sequences)")

    def _validate_convention(self, where: str) -> None:
        """The original UNIMO has no sampling, repetition penalty, token n-gram blocking or early stopping; the
        PaddleNLP convention has no word-trigram blocking (its token trigrams: no_repeat_ngram_size 3)."""
        if self.convention == "paddlenlp":
            if self.trigram_blocking:
                raise ConfigError(f"{where}.trigram_blocking: word-trigram blocking is the original UNIMO's; set "
                                  "convention 'original', or use no_repeat_ngram_size: 3 (token trigrams)")
            return
        refused = {"decode_strategy": self.decode_strategy == "sampling",
                   "repetition_penalty": self.repetition_penalty != 1.0,
                   "no_repeat_ngram_size": self.no_repeat_ngram_size > 0, "early_stopping": self.early_stopping}
        for key, bad in refused.items():
            if bad:
                raise ConfigError(f"{where}.{key}: {getattr(self, key)!r} is not part of the original UNIMO's "
                                  "decoding (convention 'original': greedy_search or beam_search, "
                                  "repetition_penalty 1, no_repeat_ngram_size 0, early_stopping false; "
                                  "trigram_blocking blocks repeated word trigrams)")


@dataclass
class DecodeState:
    """What one more step needs, one row per hypothesis."""
    cache: object  # the stepper's KV cache (a StepCache for the model and export steppers)
    position: paddle.Tensor  # (N, 1) int64: position id of the last token
    token_type: paddle.Tensor  # (N, 1) int64: token type of the last token


class StepCache:
    """The keys/values decoding reads: the prefill's once per source, the generated tokens' per row.

    ``source_k``/``source_v``: per layer (B, nh, S, hd) over ``[regions; text]`` as the prefill encoded them, with
    ``source_bias`` (B, 1, 1, S) the additive bias of the keys the source's next token may see (all layers).
    ``generated_k``/``generated_v``: per layer an (N, nh, T, hd) buffer with ``length`` slots written, the N rows
    being the B sources' hypotheses, N / B consecutive rows per source. A step writes one slot (``write``); the
    buffers double when full. One tensor per layer, not one stacked tensor: reordering rows gathers along the
    first axis, 4x faster on CPU than along the second axis of a stacked buffer (8 against 36 ms per beam-6 step
    at 12 layers). Where the CPU kernels step (``model_cache(in_place=True)``) rows are reordered without moving
    the buffers: ``parents`` (N, T) names the row whose buffers hold each written slot of a row's hypothesis (a
    slot, once written, is never written again), and reordering gathers that table only."""

    def __init__(self, source_k, source_v, source_valid, slots: int):
        self.source_k, self.source_v = list(source_k), list(source_v)
        first = self.source_k[0]
        self.source_bias = masks.additive_bias(source_valid[:, None, :], first.dtype)  # (B, 1, 1, S)
        self.sources = first.shape[0]
        shape = [first.shape[0], first.shape[1], slots, first.shape[3]]
        self.generated_k = [paddle.zeros(shape, first.dtype) for _ in self.source_k]
        self.generated_v = [paddle.zeros(shape, first.dtype) for _ in self.source_k]
        self.length = 0
        self.parents = kernels.own_rows(shape[0], slots)
        self.in_place = False  # set by the first step that writes its own slot (the kernels)

    @property
    def rows(self) -> int:
        return self.generated_k[0].shape[0]

    def model_cache(self, in_place: bool = False):
        """The ``modeling.DecodingCache`` of the next step: every source key, the ``length`` written slots.
        ``in_place``: the step writes its keys/values itself (``DecodingCache.slot``), then ``length`` counts
        them."""
        self._make_room()
        bias = None  # the kernel that writes the slot counts the written ones itself
        if not in_place:
            slots = self.generated_k[0].shape[2]
            bias = masks.additive_bias(paddle.to_tensor(np.arange(slots)[None] < self.length), self.source_bias.dtype)
        self.in_place |= in_place
        if in_place:
            self.parents[:, self.length] = np.arange(self.rows)  # the step writes each row's slot in its own row
        cache = DecodingCache(self.source_k, self.source_v, self.source_bias, self.generated_k, self.generated_v,
                              bias, slot=self.length if in_place else None,
                              parents=paddle.to_tensor(self.parents) if in_place else None)
        self.length += in_place
        return cache

    def _make_room(self) -> None:
        """Doubles the generated buffers when every slot is written."""
        if self.length == self.generated_k[0].shape[2]:
            self.generated_k = [paddle.concat([b, paddle.zeros_like(b)], axis=2) for b in self.generated_k]
            self.generated_v = [paddle.concat([b, paddle.zeros_like(b)], axis=2) for b in self.generated_v]
            self.parents = np.concatenate([self.parents, kernels.own_rows(*self.parents.shape)], axis=1)

    def write(self, k, v) -> None:
        """Stores one step's keys/values, per layer (N, nh, 1, hd) (a list, or stacked on a first axis), in the
        next slot."""
        self._make_room()
        at = slice(self.length, self.length + 1)
        for i, (buffer_k, buffer_v) in enumerate(zip(self.generated_k, self.generated_v)):
            buffer_k[:, :, at] = k[i]
            buffer_v[:, :, at] = v[i]
        self.length += 1

    def select(self, index) -> "StepCache":
        """Keeps rows ``index`` (N',): expands sources into N' / B rows each, or reorders a source's rows among
        themselves. Only the generated part moves; a row never moves to another source (ValueError)."""
        picked = to_numpy(index).reshape(-1)
        old, new = self.rows // self.sources, picked.size // self.sources
        if picked.size % self.sources or (picked // old != np.arange(picked.size) // new).any():
            raise ValueError(f"rows {picked.tolist()} mix the hypotheses of {self.sources} sources")
        if self.in_place and picked.size == self.rows:
            self.parents = self.parents[picked]  # the kernels read the slots where the table says
        elif self.in_place and self.length:  # new rows: the buffers as the table reads them, then own rows
            rows = self.parents[picked][:, None, :self.length]
            heads, slots = np.arange(self.generated_k[0].shape[1])[None, :, None], np.arange(self.length)

            def resolve(buffer):
                data = buffer.numpy()
                resolved = np.zeros((picked.size, *data.shape[1:]), data.dtype)
                resolved[:, :, :self.length] = data[rows, heads, slots]
                return paddle.to_tensor(resolved)
            self.generated_k = [resolve(b) for b in self.generated_k]
            self.generated_v = [resolve(b) for b in self.generated_v]
            self.parents = kernels.own_rows(picked.size, self.parents.shape[1])
        elif picked.size != self.rows or (self.length and (picked != np.arange(picked.size)).any()):
            # a gather of whole buffers (sized to the decoding's max_length): 2.6x faster than gathering the
            # written slots and writing them back in place
            index = paddle.to_tensor(picked)
            self.generated_k = [paddle.gather(b, index) for b in self.generated_k]
            self.generated_v = [paddle.gather(b, index) for b in self.generated_v]
            self.parents = kernels.own_rows(picked.size, self.parents.shape[1])
        return self


def to_numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


def to_tensor(x) -> paddle.Tensor:
    return x if isinstance(x, paddle.Tensor) else paddle.to_tensor(x)


def last_row_keys(attention_mask, input_ids, pad_id) -> paddle.Tensor:
    """Keys the last input token sees, as bool (B, Lk); the next token sees these and itself."""
    if attention_mask is None:
        return input_ids != pad_id
    return masks.may_attend_bool(attention_mask)[:, -1]


def check_inputs(input_ids, attention_mask, pad_id: int, where: str = "generate()", num_regions: int = 0) -> None:
    """Refuses, with a ValueError, what no kernel should see: no rows, no tokens, a row that holds only pads
    or ends with one (decoding continues after the last position, so sources are padded on the left), a
    mask that does not fit ``input_ids`` (after ``num_regions`` regions its keys are Lk = R + L, and a region
    input needs a mask), or a last token that may attend to no key."""
    ids = to_tensor(input_ids)
    shape = list(ids.shape)
    if len(shape) != 2:
        raise ValueError(f"{where}: input_ids must be (B, L), got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{where}: input_ids has no rows (batch size 0); give at least one source")
    if shape[1] == 0:
        raise ValueError(f"{where}: input_ids has length 0; every row needs a source (and the target's start "
                         "token)")
    real = (ids != pad_id).numpy()
    for rows, what in ((~real.any(axis=1), f"hold only pad tokens (pad id {pad_id})"),
                       (~real[:, -1], f"end with the pad id {pad_id}; pad sources on the left")):
        if rows.any():
            raise ValueError(f"{where}: rows {np.flatnonzero(rows)[:10].tolist()} of input_ids {what}")
    if attention_mask is None:
        if num_regions:
            raise ValueError(f"{where}: an input with {num_regions} image regions needs its attention_mask, the "
                             "(B, R + L, R + L) one of masks.captioning_inputs")
        return
    mask = masks.may_attend_bool(to_tensor(attention_mask))
    keys = num_regions + shape[1]
    if mask.shape[0] != shape[0] or mask.shape[2] != keys or mask.shape[1] not in (1, keys):
        raise ValueError(f"{where}: attention_mask of shape {list(attention_mask.shape)} does not fit "
                         f"input_ids of shape {shape}" + (f" after {num_regions} regions (Lk must be R + L = "
                                                          f"{keys})" if num_regions else ""))
    blind = ~mask[:, -1].any(axis=-1).numpy()
    if blind.any():
        raise ValueError(f"{where}: in rows {np.flatnonzero(blind)[:10].tolist()} the attention_mask lets the "
                         "last token attend to no key")


def check_dialog(config, input_ids, role_ids, turn_ids, where: str = "generate()") -> dict:
    """The dialog inputs to pass on (role_ids/turn_ids of the shape of ``input_ids``), refusing ids for embeddings
    the model lacks (they would be silently ignored)."""
    given = {k: v for k, v in (("role_ids", role_ids), ("turn_ids", turn_ids)) if v is not None}
    for key, ids in given.items():
        size = getattr(config, key.replace("_ids", "_type_size"))
        if not size:
            raise ValueError(f"{where}: {key} given, but the model has no {key[:4]} embeddings "
                             f"({key.replace('_ids', '_type_size')} 0)")
        if list(ids.shape) != list(input_ids.shape):
            raise ValueError(f"{where}: {key} shape {list(ids.shape)} differs from input_ids {list(input_ids.shape)}")
    return given


def check_regions(stepper, batch: int, region_feats, region_locs, region_valid, where: str = "generate()") -> int:
    """The number of regions R of an image-conditioned input (0 without regions). Refuses, with a ValueError,
    regions for a stepper that decodes text only (an export of a model without regions) or a model without
    region embeddings, and region tensors that are not (B, R, D), (B, R, 5) and (B, R)."""
    if region_feats is None:
        if region_locs is not None or region_valid is not None:
            raise ValueError(f"{where}: region_locs/region_valid given without region_feats")
        return 0
    if not getattr(stepper, "supports_regions", False):
        raise ValueError(f"{where}: {type(stepper).__name__} decodes text only (no image regions); decode an "
                         "image-conditioned input with the dynamic model of a config with image_embedding_size > 0")
    feats = list(region_feats.shape)
    wanted = {"region_feats": feats[:2] + [stepper.config.image_embedding_size],
              "region_locs": feats[:2] + [REGION_LOCATION_SIZE], "region_valid": feats[:2]}
    got = {"region_feats": feats, "region_locs": None if region_locs is None else list(region_locs.shape),
           "region_valid": wanted["region_valid"] if region_valid is None else list(region_valid.shape)}
    if len(feats) != 3 or feats[0] != batch or got != wanted:
        raise ValueError(f"{where}: region shapes {got} do not fit {batch} sources: want (B, R, D), (B, R, 5), (B, R)"
                         f" = {wanted}")
    return feats[1]


class ModelStepper:
    """Runs a dynamic-mode ``UNIMOLMHeadModel``; the cache is its list of per-layer (k, v).

    ``cpu_kernels`` (a float32 model on CPU, where the CPU kernels are built): the prefill and the steps multiply
    by copies of the layers' weights and the LM head's in panels (``modeling.packed_layer_weights``; a step's
    matmuls of a few rows stream them at the memory's speed), a second copy of those weights in memory; each
    step's layer is then one kernel (``cpu_kernels.step_layer``), and the prefill's attention weights one pass
    (``cpu_kernels.softmax``). Without the copies the steps still run ``cpu_kernels.step_attention``, which also
    writes the cache. The copies are made here, once, so the model's weights must not change while this
    stepper is used: every prefill compares a sample of each weight's values with the ones copied and raises if
    they differ (make a new stepper after training). The ids are the same as without, the scores within float
    rounding (tested). ``panel_dtype="bfloat16"``: the copies hold the weights rounded to bfloat16 (half the memory;
    a greedy step's products ~2x faster, a beam of 6's ~1.3x), computed in float32 as the float32 copies of the
    rounded weights would be -- the scores move by the rounding, and ids may differ. ``panel_dtype="int8"``: the
    weights and every product's inputs quantized to int8 (``cpu_kernels.pack_weight``; a quarter of the memory,
    prefill and steps ~2x faster with AVX-512 VNNI), the scores moved by the quantization (~1-2% of their spread),
    and ids may differ; ``"int8_w7"``: with 7-bit weights, which CPUs without VNNI multiply faster (a decoding
    x1.1-1.5 faster than in ``"int8"`` with AVX2 alone, as fast elsewhere), the scores moved ~1.5 times as far."""

    PROBES = 64  # sampled values per weight for that check

    def __init__(self, model, cpu_kernels: bool = False, panel_dtype: str = "float32"):
        self.model = model
        self.config = model.config
        self.supports_regions = model.config.has_regions
        embedding = model.unimo.embeddings.word_embeddings.weight
        self.kernels = cpu_kernels and kernels.ops_for(embedding) is not None
        self.weights = self.head = None
        if self.kernels:
            self.weights = packed_layer_weights(model.unimo.encoder, panel_dtype)
        if self.weights is not None:
            self.head = kernels.pack_weight(model.lm_head.decoder_weight, transposed=True, dtype=panel_dtype)
            self._watched = [lin.weight for layer in model.unimo.encoder.layers for lin in layer.step_linears()] + \
                [model.lm_head.decoder_weight]
            rng = np.random.default_rng(0)
            self._probes = [paddle.to_tensor(rng.integers(0, int(w.numel()), self.PROBES)) for w in self._watched]
            self._copied = self._sample()

    def _sample(self) -> np.ndarray:
        with paddle.no_grad():
            return paddle.concat([paddle.gather(w.reshape([-1]), i) for w, i in zip(self._watched, self._probes)
                                  ]).numpy()

    def _check_weights(self) -> None:
        if self.weights is not None and not np.array_equal(self._sample(), self._copied, equal_nan=True):
            raise ValueError("the model's weights changed after its ModelStepper(cpu_kernels=True) copied "
                             "them: make a new ModelStepper for the new weights")

    def prefill(self, input_ids, token_type_ids, position_ids, attention_mask, region_feats=None, region_locs=None,
                region_valid=None, role_ids=None, turn_ids=None, max_new_tokens: int = 32):
        """Encodes ``[regions; text]`` once; with regions ``attention_mask`` is the (B, R + L, R + L) one, so the
        last row's keys, and the cache, cover the regions first. ``max_new_tokens`` sizes the generated buffers."""
        self._check_weights()
        hidden, cache = self.model.unimo(input_ids, token_type_ids, position_ids, attention_mask, use_cache=True,
                                         region_feats=region_feats, region_locs=region_locs,
                                         region_valid=region_valid, role_ids=role_ids, turn_ids=turn_ids,
                                         last_only=True, packed_weights=self.weights)
        keys = StepCache([k for k, _ in cache], [v for _, v in cache],
                         last_row_keys(attention_mask, input_ids, self.config.pad_token_id), max_new_tokens)
        state = DecodeState(keys, position_ids[:, -1:], token_type_ids[:, -1:])
        # the LM head only where the next token is predicted
        return self.model.lm_head(hidden[:, -1], packed_decoder=self.head), state

    def step(self, tokens, state: DecodeState):
        in_place = self.kernels and not self.model.training  # the kernel's attention has no dropout
        hidden, new = self.model.unimo(tokens, state.token_type, state.position, use_cache=True,
                                       cache=state.cache.model_cache(in_place), packed_weights=self.weights)
        if not in_place:
            state.cache.write([k for k, _ in new], [v for _, v in new])
        return self.model.lm_head(hidden[:, -1], packed_decoder=self.head)

    @staticmethod
    def select_cache(cache: StepCache, index):
        return cache.select(index)


def batch_stepper(model) -> ModelStepper:
    """The stepper for decoding many batches with ``model`` as its weights are now (``generate(..., stepper=)``):
    with the CPU kernels where they run (see ``ModelStepper``)."""
    return ModelStepper(model, cpu_kernels=True)


def select_rows(stepper, state: DecodeState, index) -> DecodeState:
    """Keeps rows ``index`` (N',) of the state: expands sources into beams, or reorders beams."""
    return DecodeState(stepper.select_cache(state.cache, index), paddle.index_select(state.position, index),
                       paddle.index_select(state.token_type, index))


def advance(stepper, tokens, state: DecodeState):
    """Feeds one token per row (N, 1) at the next position; returns its logits (N, V)."""
    state.position = state.position + 1
    if int(state.position.max()) >= stepper.config.max_position_embeddings:
        raise ValueError(f"position {int(state.position.max())} exceeds max_position_embeddings "
                         f"{stepper.config.max_position_embeddings}; lower max_length")
    return stepper.step(tokens, state)


@dataclass
class Constraints:
    """The PaddleNLP convention's logit constraints (the "original" one uses ``original_logprobs``)."""
    min_length: int
    eos: int
    banned: tuple  # ids never generated: [UNK], [PAD], [CLS]
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    _columns: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # _column's, by key

    def _column(self, vocab_size: int, ids) -> paddle.Tensor:
        """(V,) bias: NEVER at ``ids``, 0 elsewhere; built once per decoding, not at every step."""
        key = (vocab_size, tuple(ids))
        if key not in self._columns:
            column = np.zeros(vocab_size, "float32")
            column[list(ids)] = NEVER
            self._columns[key] = paddle.to_tensor(column)
        return self._columns[key]

    def never(self, logits):
        """Bans [UNK]/[PAD]/[CLS] from the raw logits, so they are out of the softmax too (PaddleNLP's
        ``adjust_logits_during_generation``)."""
        return logits.astype("float32") + self._column(logits.shape[-1], self.banned)

    def apply(self, scores, generated: np.ndarray, step: int):
        """Constrains ``scores`` (N, V) given ``generated`` (N, step): bans the eos before ``min_length`` and
        whatever repeats an n-gram, and applies the repetition penalty."""
        if step < self.min_length:
            scores = scores + self._column(scores.shape[-1], (self.eos,))
        return self._penalize(scores, generated, step)

    def log_probs(self, logits, generated: Optional[np.ndarray] = None, step: int = 0):
        """``log_softmax(never(logits))``, constrained as by ``apply`` given ``generated`` (N, step): the
        log-softmax with the banned and eos columns in one pass where the CPU kernels run
        (``cpu_kernels.log_softmax``), the same values up to the rounding of the softmax's sum."""
        vocab = logits.shape[-1]
        if kernels.ops_for(logits) is None:
            scores = log_softmax(self.never(logits))
            return scores if generated is None else self.apply(scores, generated, step)
        eos = (self.eos,) if generated is not None and step < self.min_length else ()
        scores = kernels.log_softmax(logits, self._column(vocab, self.banned), self._column(vocab, eos))
        return scores if generated is None else self._penalize(scores, generated, step)

    def _penalize(self, scores, generated: np.ndarray, step: int):
        """The repetition penalty and the n-gram ban of ``apply``."""
        if self.repetition_penalty != 1.0 and step:
            seen = paddle.to_tensor(generated)
            picked = paddle.take_along_axis(scores, seen, axis=-1)
            picked = paddle.where(picked < 0, picked * self.repetition_penalty, picked / self.repetition_penalty)
            scores = paddle.put_along_axis(scores, seen, picked, axis=-1)
        n = self.no_repeat_ngram_size
        if n and step >= n - 1:
            ban = np.zeros(scores.shape, "float32")
            for row, tokens in enumerate(generated.tolist()):
                prefix = tuple(tokens[step - n + 1:]) if n > 1 else ()
                for i in range(step - n + 1):
                    if tuple(tokens[i:i + n - 1]) == prefix:
                        ban[row, tokens[i + n - 1]] = NEVER
            scores = scores + paddle.to_tensor(ban)
        return scores


class BeamHypotheses:
    """Finished hypotheses of one source, the best ``num_beams`` kept (PaddleNLP's rule, see module doc)."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool):
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.beams = []  # (score, tokens)
        self.worst = 1e9

    def add(self, tokens, sum_logprob: float):
        score = sum_logprob / ((len(tokens) + 5) / 6) ** self.length_penalty
        if len(self.beams) < self.num_beams or score > self.worst:
            self.beams.append((score, list(tokens)))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprob: float, length: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return self.worst >= best_sum_logprob / ((length + 5) / 6) ** self.length_penalty

    def best(self, n: int):
        return sorted(self.beams, key=lambda b: b[0])[::-1][:n]


def _pad_rows(rows, pad: int, eos: int, max_length: int, close_with_eos: bool) -> np.ndarray:
    """Stacks token lists; a finished row gets the eos when it fits, then pads."""
    rows = [list(r) + ([eos] if close_with_eos and len(r) < max_length else []) for r in rows]
    return masks.pad_batch([np.asarray(r, "int64") for r in rows], pad) if rows else np.zeros((0, 0), "int64")


def best_candidates(scores, beam_scores: np.ndarray, sources: int, k: int):
    """The ``k`` best of ``scores + beam_scores[:, None]`` over each source's rows (its hypotheses, consecutive)
    laid end to end, as numpy (values, flat indices) (sources, k), best first: in one pass where the CPU kernels run
    (``cpu_kernels.group_top_k``, equal values the smaller index first), else paddle's add and ``topk``."""
    bias = paddle.to_tensor(beam_scores)
    if kernels.ops_for(scores) is not None:
        values, ids = kernels.group_top_k(scores, bias, sources, k)
    else:
        values, ids = paddle.topk(add_bias(scores, bias[:, None]).reshape([sources, -1]), k, axis=1)
    return values.numpy(), ids.numpy()


def beam_search(stepper, logits, state, cons: Constraints, dc: DecodeConfig, pad: int):
    num_beams, max_length = dc.num_beams, dc.max_length
    batch, vocab = logits.shape
    rows = paddle.arange(batch).repeat_interleave(num_beams)
    state, logits = select_rows(stepper, state, rows), paddle.index_select(logits, rows)
    beam_scores = np.zeros((batch, num_beams), "float32")
    beam_scores[:, 1:] = NEVER  # only the first copy of each source starts a beam
    beam_scores = beam_scores.reshape(-1)
    generated = np.zeros((batch * num_beams, 0), "int64")
    hyps = [BeamHypotheses(num_beams, dc.length_penalty, dc.early_stopping) for _ in range(batch)]
    done = np.zeros(batch, bool)
    for t in range(max_length):
        top_scores, top_ids = best_candidates(cons.log_probs(logits, generated, t), beam_scores, batch,
                                              2 * num_beams)
        next_scores = np.zeros((batch, num_beams), "float32")
        next_tokens = np.full((batch, num_beams), pad, "int64")
        sources = np.tile(np.arange(batch)[:, None] * num_beams, (1, num_beams))
        for b in np.flatnonzero(~done):
            kept = 0
            for rank, (score, flat) in enumerate(zip(top_scores[b], top_ids[b])):
                source, token = b * num_beams + flat // vocab, flat % vocab
                if token == cons.eos:
                    if rank < num_beams:
                        hyps[b].add(generated[source], float(score))
                    continue
                next_scores[b, kept], next_tokens[b, kept], sources[b, kept] = score, token, source
                kept += 1
                if kept == num_beams:
                    break
            done[b] = hyps[b].is_done(float(top_scores[b].max()), t)
        sources = sources.reshape(-1)
        generated = np.concatenate([generated[sources], next_tokens.reshape(-1, 1)], axis=1)
        beam_scores = next_scores.reshape(-1)
        if done.all() or t == max_length - 1:
            break
        state = select_rows(stepper, state, paddle.to_tensor(sources))
        logits = advance(stepper, paddle.to_tensor(next_tokens.reshape(-1, 1)), state)
    for b in np.flatnonzero(~done):
        for k in range(num_beams):
            hyps[b].add(generated[b * num_beams + k], float(beam_scores[b * num_beams + k]))
    best = [hyp for h in hyps for hyp in h.best(dc.num_return_sequences)]
    ids = _pad_rows([tokens for _, tokens in best], pad, cons.eos, max_length, close_with_eos=True)
    return ids, np.asarray([[score] for score, _ in best], "float32")


def sample_or_greedy(stepper, logits, state, cons: Constraints, dc: DecodeConfig, pad: int):
    rng = np.random.default_rng(dc.seed) if dc.decode_strategy == "sampling" else None
    max_length = dc.max_length
    n = logits.shape[0]
    finished = np.zeros(n, bool)
    total, length = np.zeros(n, "float32"), np.zeros(n, "float32")
    generated = np.zeros((n, 0), "int64")
    for t in range(max_length):
        logp = cons.log_probs(logits)
        scores = cons.apply(cons.never(logits), generated, t)
        token = _sample(scores, rng, dc.temperature, dc.top_k, dc.top_p) if rng is not None \
            else paddle.argmax(scores, axis=-1).numpy()
        token_logp = paddle.take_along_axis(logp, paddle.to_tensor(token[:, None]), axis=-1).numpy()[:, 0]
        token = np.where(finished, pad, token)
        total += np.where(finished, 0.0, token_logp)
        length += ~finished
        generated = np.concatenate([generated, token[:, None]], axis=1)
        finished |= token == cons.eos
        if finished.all() or t == max_length - 1:
            break
        logits = advance(stepper, paddle.to_tensor(token[:, None]), state)
    return generated, (total / np.maximum(length, 1.0))[:, None]


def _sample(scores, rng, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    logits = scores.numpy().astype("float64") / max(temperature, 1e-6)
    if top_k and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        drop = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= top_p  # keep the smallest set reaching top_p
        np.put_along_axis(probs, order, np.where(drop, 0.0, sorted_probs), axis=-1)
        probs /= probs.sum(-1, keepdims=True)
    u = rng.random(probs.shape[0])[:, None]
    return np.minimum((np.cumsum(probs, axis=-1) < u).sum(-1), probs.shape[-1] - 1)


def _decode(stepper, logits, state, dc: DecodeConfig, eos: int, pad: int, start: np.ndarray, word_starts):
    """Runs the configured search from the prefill's ``logits`` (B, V) and ``state``; ``start`` (B,) the start
    tokens (the last input tokens)."""
    batch = logits.shape[0]
    if dc.decode_strategy != "beam_search" and dc.num_return_sequences > 1:
        rows = paddle.arange(batch).repeat_interleave(dc.num_return_sequences)
        state, logits = select_rows(stepper, state, rows), paddle.index_select(logits, rows)
        start = np.repeat(start, dc.num_return_sequences)
    if dc.convention == "original":
        from .decoding_original import original_beam_search, original_greedy
        opts = dict(num_beams=dc.num_beams, length_penalty=dc.length_penalty, eos=eos, min_length=dc.min_length,
                    blocking=dc.trigram_blocking, word_starts=word_starts)
        if dc.decode_strategy == "beam_search":
            return original_beam_search(stepper, logits, state, start, opts, dc.max_length, dc.num_return_sequences,
                                        pad)
        return original_greedy(stepper, logits, state, start, opts, dc.max_length, pad)
    cfg = stepper.config
    cons = Constraints(dc.min_length, eos, (cfg.unk_token_id, cfg.pad_token_id, cfg.bos_token_id),
                       dc.no_repeat_ngram_size, dc.repetition_penalty)
    if dc.decode_strategy == "beam_search":
        return beam_search(stepper, logits, state, cons, dc, pad)
    return sample_or_greedy(stepper, logits, state, cons, dc, pad)


@paddle.no_grad()
def generate(model, input_ids, token_type_ids=None, position_ids=None, attention_mask=None, max_length: int = 20,
             min_length: int = 0, decode_strategy: str = "greedy_search", num_beams: int = 1,
             length_penalty: float = 1.0, early_stopping: bool = False, top_k: int = 0, top_p: float = 1.0,
             temperature: float = 1.0, seed: int | None = None, no_repeat_ngram_size: int = 0,
             repetition_penalty: float = 1.0, num_return_sequences: int = 1, eos_token_id: int | None = None,
             pad_token_id: int | None = None, stepper=None, use_fast: bool = False, region_feats=None,
             region_locs=None, region_valid=None, convention: str = "paddlenlp", trigram_blocking: bool = False,
             word_starts=None, role_ids=None, turn_ids=None, **unsupported):
    """Generates continuations of ``input_ids`` (B, L); see the module docstring. ``model`` may be None
    when a ``stepper`` (e.g. the exported Paddle Inference one) is given. With ``region_feats``
    (B, R, D), ``region_locs`` (B, R, 5) and ``region_valid`` (B, R) (None: all valid) the input is ``[regions;
    text]`` and ``attention_mask`` is the (B, R + L, R + L) one of ``masks.captioning_inputs``.

    ``convention``: "paddlenlp" (PaddleNLP's generate) or "original" (the original UNIMO's fast_decode);
    ``trigram_blocking`` ("original" only) blocks repeated word trigrams and needs ``word_starts``, a (vocab_size,)
    bool array (``decoding_original.word_start_table``); without ``trigram_blocking`` ``word_starts`` is not used.
    ``role_ids``/``turn_ids`` (B, L): the source's dialog roles and turns (dialog models only). ``use_fast``: accepted
    for PaddleNLP compatibility and ignored."""
    if unsupported:
        raise TypeError(f"generate() got unsupported arguments {sorted(unsupported)}")
    dc = check(DecodeConfig(decode_strategy=decode_strategy, num_beams=num_beams, length_penalty=length_penalty,
                            early_stopping=early_stopping, min_length=min_length, max_length=max_length,
                            no_repeat_ngram_size=no_repeat_ngram_size, repetition_penalty=repetition_penalty,
                            top_k=top_k, top_p=top_p, temperature=temperature, seed=seed,
                            num_return_sequences=num_return_sequences, convention=convention,
                            trigram_blocking=trigram_blocking), "generate()")
    stepper = stepper or ModelStepper(model)
    cfg = stepper.config
    if trigram_blocking:
        from .decoding_original import check_word_starts
        word_starts = check_word_starts(word_starts, cfg.vocab_size)
    num_regions = check_regions(stepper, input_ids.shape[0], region_feats, region_locs, region_valid)
    check_inputs(input_ids, attention_mask, cfg.pad_token_id, num_regions=num_regions)
    extra = {} if region_feats is None else dict(region_feats=region_feats, region_locs=region_locs,
                                                 region_valid=region_valid)
    extra.update(check_dialog(cfg, input_ids, role_ids, turn_ids))
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    pad = cfg.pad_token_id if pad_token_id is None else pad_token_id
    if position_ids is None:
        position_ids = masks.default_position_ids(input_ids != cfg.pad_token_id, cfg.position_start)
    if token_type_ids is None:
        token_type_ids = paddle.zeros_like(input_ids)
    start = to_numpy(input_ids)[:, -1]  # (B,)
    was_training = model is not None and model.training
    if model is not None:
        model.eval()
    try:
        logits, state = stepper.prefill(input_ids, token_type_ids, position_ids, attention_mask, **extra,
                                        max_new_tokens=dc.max_length)
        ids, scores = _decode(stepper, logits, state, dc, eos, pad, start, word_starts)
    finally:
        if was_training:
            model.train()
    return paddle.to_tensor(ids), paddle.to_tensor(scores)
