"""The one attention-mask rule of UNIMO, the meaning of every mask form, and default position ids.
Pure numpy/paddle functions, no layers; paddle is imported inside the functions that need it, so the data
layer can use this module without paddle.

Every position gets a *rank*: 0 for bidirectional context (image regions, object tags, a source text,
a text being masked-LM'ed) and 1..T for the tokens of a causal target. Then

    may_attend[b, i, j] = valid[b, j] & (rank[b, j] <= rank[b, i])

* bidirectional (MLM, classification, retrieval, image-only): all ranks 0;
* seq2seq (UniLM; the original ``seq2seq_reader.py`` of PaddlePaddle/Research NLP/UNIMO): source 0,
  target 1..T -- every token sees the source, the target is causal and the source never sees the target;
* captioning: regions and object tags 0, caption 1..T (``captioning_inputs``);
* padding: ``valid`` is False for padded keys;
* incremental decoding: a new token has a rank above every key, so its row is ``valid`` of the keys.

Accepted mask forms (``may_attend_bool`` and ``additive_bias`` read all of them): shape (B, Lk) key validity,
(B, Lq, Lk), or (B, 1, Lq, Lk) with a single head axis (Lq may be 1: the row is shared by every query). The
dtype gives the meaning: bool or int is "may attend" (the data layer's form); float is an additive bias as in
PaddleNLP and paddle.nn (0 where attending, ``MASKED_BIAS`` or below where not). The model turns a mask into
an additive bias exactly once, at its boundary.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

CONTEXT_RANK = 0
MASKED_BIAS = -1e4  # the original's (mask - 1) * 1e4 and PaddleNLP's -1e4; finite, so fp16-safe


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


def _is_float(mask) -> bool:
    import paddle  # local: the rest of this module is numpy-only
    return not (mask.dtype == paddle.bool or "int" in str(mask.dtype))


def _with_head_axis(mask):
    """Any accepted form -> (B, 1, Lq, Lk), Lq possibly 1; a head axis other than 1 is refused."""
    if mask.ndim == 2:  # (B, Lk): key validity, shared by every query
        return mask.unsqueeze([1, 2])
    if mask.ndim == 3:  # (B, Lq, Lk)
        return mask.unsqueeze(1)
    if mask.ndim == 4 and mask.shape[1] in (1, -1):  # -1: a dynamic axis while exporting
        return mask
    raise ValueError(f"attention_mask must be (B, Lk), (B, Lq, Lk) or (B, 1, Lq, Lk), got shape {mask.shape}")


def additive_bias(attention_mask, dtype):
    """Any accepted mask form (see the module docstring) -> the additive bias (B, 1, Lq, Lk) of ``dtype``:
    exactly 0 or ``MASKED_BIAS`` for a bool/int mask, the float mask itself otherwise. None stays None."""
    if attention_mask is None:
        return None
    mask = _with_head_axis(attention_mask)
    if _is_float(mask):
        return mask.astype(dtype)
    return (mask.astype("bool").astype(dtype) - 1.0) * -MASKED_BIAS  # a product, not a select: exports cleanly


def may_attend_bool(attention_mask, num_queries: int | None = None):
    """Any accepted mask form -> bool "may attend" (B, Lq, Lk). A float mask attends where it is above
    ``MASKED_BIAS / 2`` (PaddleNLP pads with -1e4 or -1e9). A row shared by every query ((B, Lk), or Lq = 1)
    is repeated to ``num_queries`` rows when that is given, else kept as one row."""
    mask = _with_head_axis(attention_mask)[:, 0]
    mask = mask > MASKED_BIAS / 2 if _is_float(mask) else mask.astype("bool")
    if num_queries is not None and mask.shape[1] == 1 and num_queries != 1:
        mask = mask.expand([mask.shape[0], num_queries, mask.shape[2]])
    return mask


def default_position_ids(valid, start: int, past=0):
    """Default positions on paddle tensors: ``start + past + i`` for the i-th real token of a row, whether
    the row is padded on the left, on the right or both; a pad takes its preceding real token's position
    (``start + past`` before the first).

    ``valid`` (B, L) bool marks the real (non-pad) tokens; ``past`` is the number of real tokens already in
    the KV cache, an int or an int tensor (B,). For a left-padded row this is exactly PaddleNLP's default
    ``relu(arange(L) - num_pad)``.
    """
    import paddle  # local: the rest of this module is numpy-only
    index = paddle.cumsum(valid.astype("int64"), axis=-1) - 1  # (B, L): index among the row's real tokens
    if isinstance(past, paddle.Tensor):
        past = past.astype("int64").reshape([-1, 1])
    return start + past + paddle.clip(index, min=0)


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


def _seq2seq_text(sources, targets, pad_id: int, position_start: int, left_pad: bool, source_positions=None):
    """The text keys of a seq2seq batch (without the mask) and the (B, L) rank of every position.
    ``source_positions``: per row, the sources' own position ids (None: numbered from ``position_start``)."""
    ids, types, pos, rank, valid = [], [], [], [], []
    for i, (src, tgt) in enumerate(zip(sources, targets)):
        ids.append(np.asarray(list(src) + list(tgt), np.int64))
        types.append(np.asarray([0] * len(src) + [1] * len(tgt), np.int64))
        pos.append(block_positions([len(src), len(tgt)], position_start))
        if source_positions is not None and source_positions[i] is not None:
            pos[-1][:len(src)] = source_positions[i]
        rank.append(ranks(len(src), len(tgt)))
        valid.append(np.ones(len(src) + len(tgt), bool))
    batch = {
        "input_ids": pad_batch(ids, pad_id, left=left_pad),
        "token_type_ids": pad_batch(types, 0, left=left_pad),
        "position_ids": pad_batch(pos, 0, left=left_pad),
        "valid": pad_batch(valid, False, left=left_pad),
    }
    return batch, pad_batch(rank, 0, left=left_pad)


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
    batch, rank = _seq2seq_text(sources, targets, pad_id, position_start, left_pad)
    batch["attention_mask"] = may_attend(batch["valid"], rank)
    return batch


def captioning_inputs(tag_ids: Sequence[Sequence[int]], caption_ids: Sequence[Sequence[int]], region_valid,
                      pad_id: int, position_start: int, left_pad: bool = False, tag_positions=None) -> dict:
    """Batch of image-captioning inputs in the original layout ``[regions; object tags; caption]``
    (``img2txt_reader.py`` of PaddlePaddle/Research NLP/UNIMO, input type ``'vol'``).

    The mask is the one rule with region ranks 0: regions and object tags are rank 0 and see each other
    (valid regions, real tags) but never the caption; the caption is causal (ranks 1..T) and sees every valid
    region and tag. Padded regions (``region_valid`` False) and pad tokens are never attended -- the original's
    ``input_mask`` built from ``image_mask``, ``obj_token_mask`` and the caption's ``tril``.
    Rows of padded positions are left as the rule gives them (their outputs are never used).
    Positions: tags and caption each restart at ``position_start``. What the original fixes: it decodes the caption
    from ``[CLS]`` at position 2, its ``position_start`` ("pos start from 2"), and feeds its tags' ``obj_pos_ids``
    as the object file gives them: ``tag_positions`` (per row, a list as long as its tags, or None) replaces the
    tags' numbering. Numbering tags without such positions as a block of their own from ``position_start``, as
    the reader numbers each text block, is our choice. Token types: 0 tags / 1 caption (the reader's
    ``tgt_type_id`` 1); the English model has no token-type embedding, so they change nothing there.
    The tag and caption lists are given with their special tokens (the caption starts with ``[CLS]``).

    ``region_valid`` (B, R) bool: the real regions of each image (R may be 0). Keys (L = longest tags + caption):
      input_ids       (B, L) int64, tags then caption, pad_id where padded
      token_type_ids  (B, L) int64, 0 tags / 1 caption
      position_ids    (B, L) int64, restarting at position_start for the tags and for the caption
      valid           (B, R + L) bool, the keys of [regions; text]: region_valid, then the non-pad tokens
      attention_mask  (B, R + L, R + L) bool, may_attend of the rule over [regions; text]
    """
    region_valid = np.asarray(region_valid, bool)
    if region_valid.ndim != 2 or len(region_valid) != len(tag_ids) or len(tag_ids) != len(caption_ids):
        raise ValueError(f"captioning_inputs: region_valid of shape {region_valid.shape} must be (B, R) with B = "
                         f"{len(tag_ids)} tag lists = {len(caption_ids)} captions")
    batch, rank = _seq2seq_text(tag_ids, caption_ids, pad_id, position_start, left_pad, tag_positions)  # tags first
    batch["valid"] = np.concatenate([region_valid, batch["valid"]], axis=1)
    rank = np.concatenate([np.full(region_valid.shape, CONTEXT_RANK, np.int64), rank], axis=1)
    batch["attention_mask"] = may_attend(batch["valid"], rank)
    return batch
