"""The one attention-mask rule of UNIMO, and its position ids. Pure numpy/paddle functions, no layers.

Every position gets a *rank*: 0 for bidirectional context (image regions, object tags, a source text,
a text being masked-LM'ed) and 1..T for the tokens of a causal target. Then

    may_attend[b, i, j] = valid[b, j] & (rank[b, j] <= rank[b, i])

* bidirectional (MLM, classification, retrieval, image-only): all ranks 0;
* seq2seq (UniLM, UNIMO_FACTS.md section 1): source 0, target 1..T -- every token sees the source, the
  target is causal and the source never sees the target;
* captioning: regions and object tags 0, caption 1..T;
* padding: ``valid`` is False for padded keys;
* incremental decoding: a new token has a rank above every key, so its row is ``valid`` of the keys.

The data layer carries the bool "may attend" mask; the model turns it into an additive bias once.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

CONTEXT_RANK = 0


def ranks(num_context: int, num_causal: int = 0) -> np.ndarray:
    """Ranks of one sequence: ``num_context`` bidirectional positions, then ``num_causal`` causal ones."""
    return np.concatenate([np.zeros(num_context, np.int64), np.arange(1, num_causal + 1, dtype=np.int64)])


def may_attend(valid, rank, query_rank=None):
    """The rule. ``valid`` (B, Lk) bool, ``rank`` (B, Lk) int; ``query_rank`` (B, Lq), default ``rank``.

    Returns (B, Lq, Lk) bool. Works on numpy arrays and on paddle tensors alike.
    """
    if query_rank is None:
        query_rank = rank
    return valid[:, None, :] & (rank[:, None, :] <= query_rank[:, :, None])


def decoding_row(valid_keys):
    """Mask for one newly generated token over all keys so far: (B, Lk) bool -> (B, 1, Lk) bool.

    The new token's rank is above every key's, so by the rule it sees exactly the valid keys.
    """
    return valid_keys[:, None, :]


def default_position_ids(valid, start: int, past: int = 0):
    """PaddleNLP's default positions on paddle tensors: ``start + index``, not counting left padding.

    ``valid`` (B, L) bool marks non-pad tokens; ``past`` is the number of tokens already in the KV cache.
    """
    import paddle  # local: the rest of this module is numpy-only
    num_pad = (~valid).astype("int64").sum(axis=-1, keepdim=True)
    steps = paddle.arange(past, past + valid.shape[1], dtype="int64").unsqueeze(0)
    return start + paddle.clip(steps - num_pad, min=0)


def block_positions(block_lengths: Sequence[int], start: int) -> np.ndarray:
    """Position ids that restart at ``start`` at each block (source, target, ...).

    unimo-text numbers source and target each from 0; the original English UNIMO from 2 (RoBERTa).
    """
    return np.concatenate([start + np.arange(n, dtype=np.int64) for n in block_lengths] or
                          [np.zeros(0, np.int64)])


def pad_batch(rows: Sequence[np.ndarray], pad_value, length: int | None = None, left: bool = False):
    """Stacks 1-D arrays into (B, L), padding each on the right (or left) with ``pad_value``."""
    length = max(len(r) for r in rows) if length is None else length
    out = np.full((len(rows), length), pad_value, dtype=np.asarray(rows[0]).dtype)
    for i, r in enumerate(rows):
        r = np.asarray(r)[:length]
        if left:
            out[i, length - len(r):] = r
        else:
            out[i, :len(r)] = r
    return out


def seq2seq_inputs(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int,
                   position_start: int, left_pad: bool = False) -> dict:
    """Batch of UniLM seq2seq inputs from token id lists (each already wrapped in its special tokens).

    Keys (B = batch, L = longest source + target):
      input_ids       (B, L) int64, pad_id where padded
      token_type_ids  (B, L) int64, 0 source / 1 target
      position_ids    (B, L) int64, restarting at position_start for the target
      attention_mask  (B, L, L) bool, may_attend of the rule
      valid           (B, L) bool
    """
    ids, types, pos, rank, valid = [], [], [], [], []
    for src, tgt in zip(sources, targets):
        ids.append(np.asarray(list(src) + list(tgt), np.int64))
        types.append(np.asarray([0] * len(src) + [1] * len(tgt), np.int64))
        pos.append(block_positions([len(src), len(tgt)], position_start))
        rank.append(ranks(len(src), len(tgt)))
        valid.append(np.ones(len(src) + len(tgt), bool))
    batch = {
        "input_ids": pad_batch(ids, pad_id, left=left_pad),
        "token_type_ids": pad_batch(types, 0, left=left_pad),
        "position_ids": pad_batch(pos, 0, left=left_pad),
        "valid": pad_batch(valid, False, left=left_pad),
    }
    batch["attention_mask"] = may_attend(batch["valid"], pad_batch(rank, 0, left=left_pad))
    return batch
