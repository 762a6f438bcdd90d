"""Cross-modal contrastive learning (CMCL): UNIMO paper section 2.1.

    L_CMCL = -E_{V,W} log( sum_{(V+,W+) in X+ u XI u XT} exp(d(V+, W+) / tau)
                           / sum_{(V',W') in X- u X+ u XI u XT} exp(d(V', W') / tau) )

* ``d(V, W)`` is the cosine similarity of the pooled image representation (``image_pooler`` over the global
  row of an image-only forward) and the pooled text representation (``text_pooler`` over [CLS] of a
  text-only forward). Images and texts are encoded *separately*, as the paper does for the retrieved images
  and texts, so every pair below costs no extra forward.
* ``tau`` defaults to 0.1. The paper summary gives no value; 0.1 (SimCLR's choice for cosine similarity)
  keeps exp(d / tau) within e^(+-10).

Batch layout: for each anchor pair i (image V_i, text W_i) the candidate pairs are
    positives: (V_i, W_i); (V_i, W) for each positive text of i (sentence-level rewrites such as
               back-translations: X+; related texts retrieved from a text corpus: XT); (V, W_i) for each
               retrieved similar image V of i (XI);
    negatives: (V_i, W) for each hard negative W of i (scene-graph object/attribute/relation replacement, and
               the TF-IDF-similar captions of other images: X-); (V_i, W_j) for every other anchor j of the
               *global* batch (in-batch negatives) -- except an anchor of the same image (another of its
               captions, or the same pair drawn twice) or with the same text: those describe V_i too.
Rows have different numbers of candidates; the (B, K) candidate matrices are padded, ``pair_valid`` False.
The in-batch negatives are not in those matrices: ``loss`` scores every anchor image against the anchor
texts of all processes, gathered with their gradients, so N processes compute exactly the loss (and the
gradients) of one process holding the whole batch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F

from .. import masks
from ..data.regions import RegionRecord, collate_regions
from ..typed import bounded
from .words import PRETRAIN_IMG_LEN, TextSpecials

__all__ = ["CMCLConfig", "CMCLExample", "cmcl_loss", "make_batch", "loss", "count"]
_EXCLUDED = -1e9  # logit of a padded candidate: exp() underflows to exactly 0


@dataclass(frozen=True)
class CMCLConfig:
    specials: TextSpecials
    max_img_len: int = bounded(PRETRAIN_IMG_LEN, min=2)  # rows per image including the global row
    tau: float = bounded(0.1, above=0.0)
    max_seq_len: int = 512  # text length including [CLS] and [SEP]
    position_start: int = 0


@dataclass
class CMCLExample:
    image: RegionRecord
    text_ids: List[int]  # content ids of the aligned text (no [CLS]/[SEP])
    positive_texts: List[List[int]] = field(default_factory=list)  # sentence rewrites, corpus texts
    positive_images: List[RegionRecord] = field(default_factory=list)  # retrieved similar images
    negative_texts: List[List[int]] = field(default_factory=list)  # rewrites, similar captions of other images
    word_starts: Optional[List[int]] = None  # of text_ids, for the text objectives on the pair (pretraining)


def cmcl_loss(sim, positive_mask, tau: float, valid=None):
    """Mean over rows of -log(sum_pos exp(sim / tau) / sum_valid exp(sim / tau)).

    sim (B, K) float, positive_mask (B, K) bool (every row needs one valid positive), valid (B, K) bool or
    None (all valid). Numpy inputs are converted; the result is a paddle scalar.
    """
    sim = paddle.to_tensor(sim) if isinstance(sim, np.ndarray) else sim
    positive = paddle.to_tensor(np.asarray(positive_mask, bool)) if not isinstance(positive_mask, paddle.Tensor) \
        else positive_mask
    if valid is None:
        valid = paddle.ones(sim.shape, "bool")
    elif not isinstance(valid, paddle.Tensor):
        valid = paddle.to_tensor(np.asarray(valid, bool))
    logits = sim.astype("float32") / tau
    excluded = paddle.full_like(logits, _EXCLUDED)
    all_pairs = paddle.logsumexp(paddle.where(valid, logits, excluded), axis=1)
    positives = paddle.logsumexp(paddle.where(valid & positive, logits, excluded), axis=1)
    return (all_pairs - positives).mean()


def _text_inputs(texts: Sequence[Sequence[int]], cfg: CMCLConfig) -> Dict[str, np.ndarray]:
    sp = cfg.specials
    rows = [np.asarray([sp.cls_id] + list(t)[:cfg.max_seq_len - 2] + [sp.sep_id], np.int64) for t in texts]
    valid = masks.pad_batch([np.ones(len(r), bool) for r in rows], False)
    return {
        "text_input_ids": masks.pad_batch(rows, sp.pad_id),
        "text_token_type_ids": np.zeros(valid.shape, np.int64),
        "text_position_ids": masks.pad_batch([masks.block_positions([len(r)], cfg.position_start) for r in rows], 0),
        "text_attention_mask": masks.may_attend(valid, np.zeros(valid.shape, np.int64)),
    }


def _candidates(examples: Sequence[CMCLExample]):
    """Per anchor: (image index, text index, positive) triples into the image and text lists."""
    images = [e.image for e in examples]
    texts = [e.text_ids for e in examples]
    rows = []
    for i, e in enumerate(examples):
        row = [(i, i, True)]
        for ids in e.positive_texts:
            row.append((i, len(texts), True))
            texts.append(ids)
        for record in e.positive_images:
            row.append((len(images), i, True))
            images.append(record)
        for ids in e.negative_texts:
            row.append((i, len(texts), False))
            texts.append(ids)
        rows.append(row)
    return images, texts, rows


def _key(data: bytes) -> int:
    """A 56-bit digest (an int64) identifying an anchor's image or text across processes."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=7).digest(), "little")


def make_batch(examples: Sequence[CMCLExample], cfg: CMCLConfig, rng: np.random.Generator = None
               ) -> Dict[str, np.ndarray]:
    """Images and texts to encode separately, and the candidate pairs (see the module docstring).
    Deterministic: ``rng`` is accepted for the common signature. I images, T texts, B anchors, K candidates.

      region_feats, region_locs, region_valid  (I, R, D) / (I, R, 5) / (I, R)  anchor images first
      image_attention_mask                     (I, R, R) bool  bidirectional over the valid regions
      text_input_ids, text_token_type_ids, text_position_ids  (T, L) int64  [CLS] text [SEP], anchor texts first
      text_attention_mask                      (T, L, L) bool  bidirectional over the non-pad tokens
      pair_image, pair_text                    (B, K) int64  image / text index of each candidate, 0 if padded
                                               (in-batch negatives excluded: see the module docstring)
      pair_positive                            (B, K) bool   True for positives (column 0 is the aligned pair)
      pair_valid                               (B, K) bool   False on padding
      anchor_image_key, anchor_text_key        (B,) int64    digests of the anchors' image ids and texts: no
                                               in-batch negative shares either with its anchor
      tau                                      () float32    the temperature, so that ``loss`` needs no config
    """
    images, texts, rows = _candidates(examples)
    regions = collate_regions(images, cfg.max_img_len)
    batch = {k: regions[k] for k in ("region_feats", "region_locs", "region_valid")}
    batch["image_attention_mask"] = masks.may_attend(regions["region_valid"],
                                                     np.zeros(regions["region_valid"].shape, np.int64))
    batch.update(_text_inputs(texts, cfg))
    for key, column, dtype in (("pair_image", 0, np.int64), ("pair_text", 1, np.int64),
                               ("pair_positive", 2, bool)):
        batch[key] = masks.pad_batch([np.asarray([c[column] for c in row], dtype) for row in rows], dtype(0))
    batch["pair_valid"] = masks.pad_batch([np.ones(len(row), bool) for row in rows], False)
    batch["anchor_image_key"] = np.asarray([_key(str(e.image.image_id).encode()) for e in examples], np.int64)
    batch["anchor_text_key"] = np.asarray([_key(np.asarray(e.text_ids, np.int64).tobytes()) for e in examples],
                                          np.int64)
    batch["tau"] = np.asarray(cfg.tau, np.float32)
    return batch


def count(batch: Dict[str, np.ndarray]) -> int:
    """The loss is a mean over this many items: the anchor pairs."""
    return int(batch["pair_valid"].shape[0])


class _GatherWithGrad(paddle.autograd.PyLayer):
    """All processes' rows, concatenated in rank order; the backward pass returns to each process the summed
    gradient of its own rows, so that the loss of every process trains every process's anchors."""

    @staticmethod
    def forward(ctx, x):
        import paddle.distributed as dist
        parts = []
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return paddle.concat(parts, axis=0)

    @staticmethod
    def backward(ctx, grad):
        import paddle.distributed as dist
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_anchors(x):
    """(B, H) -> (world * B, H): the anchors of every process (each process holds the same B)."""
    import paddle.distributed as dist
    return _GatherWithGrad.apply(x) if dist.get_world_size() > 1 else x


def gather_keys(x):
    """(B,) int64 -> (world * B,): every process's anchor keys, in rank order (no gradient)."""
    import paddle.distributed as dist
    if dist.get_world_size() == 1:
        return x
    parts = []
    dist.all_gather(parts, x)
    return paddle.concat(parts, axis=0)


def similarity(model, batch: Dict[str, np.ndarray]):
    """Cosine similarities from separate image and text forwards: the candidate pairs (B, K), and every
    anchor image against the anchor texts of all processes (B, world * B) with whether each of those may be a
    negative (another image and another text than the anchor's own)."""
    t = {k: paddle.to_tensor(v) for k, v in batch.items() if k != "tau"}
    num_regions = batch["region_feats"].shape[1]
    image_hidden = model.unimo(None, None, None, t["image_attention_mask"], region_feats=t["region_feats"],
                               region_locs=t["region_locs"], region_valid=t["region_valid"])
    _, image = model.unimo.pooled_outputs(image_hidden, num_regions, has_text=False)  # (I, H)
    text_hidden = model.unimo(t["text_input_ids"], t["text_token_type_ids"], t["text_position_ids"],
                              t["text_attention_mask"])
    text, _ = model.unimo.pooled_outputs(text_hidden, 0)  # (T, H)
    image, text = F.normalize(image, axis=-1), F.normalize(text, axis=-1)
    pair_image = paddle.gather(image, t["pair_image"].reshape([-1]))  # (B * K, H)
    pair_text = paddle.gather(text, t["pair_text"].reshape([-1]))
    pairs = (pair_image * pair_text).sum(axis=-1).reshape(batch["pair_image"].shape)
    anchors = batch["pair_image"].shape[0]  # anchor images and texts come first
    in_batch = paddle.matmul(image[:anchors], gather_anchors(text[:anchors]), transpose_y=True)  # (B, world * B)
    negative = None
    for key in ("anchor_image_key", "anchor_text_key"):  # the own column shares both: never a negative
        differs = gather_keys(t[key]).unsqueeze(0) != t[key].unsqueeze(1)
        negative = differs if negative is None else negative & differs
    return pairs, in_batch, negative


def loss(model, batch: Dict[str, np.ndarray], heads=None) -> dict:
    """CMCL loss at the batch's ``tau``; ``accuracy``: anchors whose best-scoring candidate is a positive.
    ``heads`` is unused (the poolers belong to the model)."""
    pairs, in_batch, negative = similarity(model, batch)  # the aligned pair is in ``pairs``, not a negative
    sim = paddle.concat([pairs, in_batch], axis=1)
    positive = paddle.concat([paddle.to_tensor(batch["pair_positive"]), paddle.zeros(in_batch.shape, "bool")], 1)
    valid = paddle.concat([paddle.to_tensor(batch["pair_valid"]), negative], axis=1)
    value = cmcl_loss(sim, positive, float(batch["tau"]), valid)
    best = paddle.where(valid, sim, paddle.full_like(sim, -2.0)).argmax(axis=1)
    accuracy = float(paddle.take_along_axis(positive.astype("float32"), best.unsqueeze(1), axis=1).mean())
    return {"loss": value, "accuracy": accuracy, "num_pairs": count(batch)}
