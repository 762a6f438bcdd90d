"""Decoding with the KV cache: the source is encoded once, then one token per step.

Conventions of both UNIMO families: generation starts after the target's [CLS] and stops at the eos
([MASK]). Like PaddleNLP's ``generate``, ``max_length``/``min_length`` count new tokens, the logits of
[UNK], [PAD] and [CLS] are never chosen, and finished rows are filled with the pad id.
Returns ``(ids (B, T), scores (B, 1))``; a score is the mean log-probability of the generated tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import paddle

from . import masks
from .modeling import MASKED_BIAS

NEVER = -1e9  # logit of tokens that are never generated


@dataclass
class DecodeState:
    """What one more step needs: the cache and where the next token stands."""
    cache: list
    valid_keys: paddle.Tensor  # (B, Lk) bool: keys the next token may attend to
    position: paddle.Tensor  # (B, 1) int64: position id of the last token
    token_type: paddle.Tensor  # (B, 1) int64: token type of the last token


def _last_row_keys(attention_mask, input_ids, pad_id) -> paddle.Tensor:
    """Keys the last input token sees, as bool (B, Lk); the next token sees these and itself."""
    if attention_mask is None:
        return input_ids != pad_id
    if attention_mask.ndim == 4:
        attention_mask = attention_mask[:, 0]
    row = attention_mask if attention_mask.ndim == 2 else attention_mask[:, -1]
    if row.dtype == paddle.bool or "int" in str(row.dtype):
        return row.astype("bool")
    return row > MASKED_BIAS / 2


def prefill(model, input_ids, token_type_ids=None, position_ids=None, attention_mask=None):
    """Encodes the whole input once; returns the last position's logits and the decode state."""
    cfg = model.config
    if position_ids is None:
        position_ids = masks.default_position_ids(input_ids != cfg.pad_token_id, cfg.position_start)
    if token_type_ids is None:
        token_type_ids = paddle.zeros_like(input_ids)
    hidden, cache = model.unimo(input_ids, token_type_ids, position_ids, attention_mask, use_cache=True)
    state = DecodeState(cache, _last_row_keys(attention_mask, input_ids, cfg.pad_token_id),
                        position_ids[:, -1:], token_type_ids[:, -1:])
    return model.lm_head(hidden[:, -1]), state  # the LM head only where the next token is predicted


def step(model, tokens, state: DecodeState):
    """Feeds one new token per row (B, 1); returns its logits (B, V) and updates ``state``."""
    state.position = state.position + 1
    if int(state.position.max()) >= model.config.max_position_embeddings:
        raise ValueError(f"position {int(state.position.max())} exceeds max_position_embeddings "
                         f"{model.config.max_position_embeddings}; lower max_length")
    state.valid_keys = paddle.concat([state.valid_keys, paddle.ones([tokens.shape[0], 1], "bool")], axis=1)
    logits, state.cache = model(tokens, state.token_type, state.position, masks.decoding_row(state.valid_keys),
                                use_cache=True, cache=state.cache)
    return logits[:, -1]


def log_softmax(logits):
    """log-softmax over the last axis. paddle 3.3.1's CPU ``F.log_softmax`` kernel is ~900x slower than
    this form on a (4, 18000) input (80 ms against 0.4 ms), which made it the cost of a decoding step."""
    return logits - paddle.logsumexp(logits, axis=-1, keepdim=True)


def never_generated(logits, cfg, step_index: int, min_length: int, eos_id: int):
    """Masks [UNK]/[PAD]/[CLS] always, and the eos until ``min_length`` tokens exist."""
    banned = [cfg.unk_token_id, cfg.pad_token_id, cfg.bos_token_id] + ([eos_id] if step_index < min_length else [])
    column = paddle.zeros([logits.shape[-1]], logits.dtype)
    column[banned] = NEVER
    return logits + column


@paddle.no_grad()
def generate(model, input_ids, token_type_ids=None, position_ids=None, attention_mask=None, max_length: int = 20,
             min_length: int = 0, decode_strategy: str = "greedy_search", eos_token_id: int | None = None,
             pad_token_id: int | None = None, **unsupported):
    if unsupported:
        raise TypeError(f"generate() got unsupported arguments {sorted(unsupported)}")
    if decode_strategy != "greedy_search":
        raise ValueError(f"decode_strategy {decode_strategy!r} is not available; known: ['greedy_search']")
    cfg = model.config
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    pad = cfg.pad_token_id if pad_token_id is None else pad_token_id
    was_training = model.training
    model.eval()
    logits, state = prefill(model, input_ids, token_type_ids, position_ids, attention_mask)
    batch = input_ids.shape[0]
    finished = paddle.zeros([batch, 1], "bool")
    total = paddle.zeros([batch, 1], "float32")
    length = paddle.zeros([batch, 1], "float32")
    out = []
    for t in range(max_length):
        logp = log_softmax(never_generated(logits, cfg, t, min_length, eos).astype("float32"))
        token = paddle.argmax(logp, axis=-1, keepdim=True)
        token_logp = paddle.take_along_axis(logp, token, axis=-1)
        token = paddle.where(finished, paddle.full_like(token, pad), token)
        total += paddle.where(finished, paddle.zeros_like(token_logp), token_logp)
        length += (~finished).astype("float32")
        out.append(token)
        finished = finished | (token == eos)
        if bool(finished.all()) or t == max_length - 1:
            break
        logits = step(model, token, state)
    if was_training:
        model.train()
    ids = paddle.concat(out, axis=1) if out else paddle.zeros([batch, 0], "int64")
    return ids, total / paddle.clip(length, min=1.0)
