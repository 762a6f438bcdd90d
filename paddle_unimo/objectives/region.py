"""Visual learning: masked region feature regression and region classification on image-only and image+text
inputs (UNIMO paper section 2.2, "Visual learning"; the summary's L_V = f(v_m | v_\\m) and f(v_m | v_\\m, W)).

Masking: 15% of an image's real regions (``vl_mask_ratio``; the global mean-feature row 0 is never a
candidate) are drawn as *anchors*; every valid region whose IoU with an anchor exceeds ``overlap_ratio`` is
masked too, because highly overlapping regions would leak the masked content. ``overlap_ratio`` is the
model's (``UNIMOConfig.overlap_ratio``, passed by ``pretraining.objective_configs``): the original base
config's 0.4, the large config's 0.3. A masked region's feature is zeroed, its location kept. An image keeps
up to ``max_img_len`` = 101 rows (the global row and 100 regions), as the original fine-tuning scripts and
the paper, whatever the model preset's fine-tuning length. For image+text inputs the text stays visible and
the attention is bidirectional over regions and text.

Losses, on the masked regions only:
* feature regression: mean squared error between ``r(h_v)`` (linear, hidden -> D) and the original feature,
  averaged over regions and feature dimensions;
* region classification: cross-entropy of ``softmax(s(h_v))`` (linear, hidden -> C) against the detector's
  class distribution as a soft label (``image_use_soft_label`` of the original config), averaged over regions.

``RegionHeads`` holds ``r`` and ``s``: pretraining-only layers that are not part of any released checkpoint
(neither PaddleNLP's nor the original UNIMO release has them) and that ``save_pretrained`` does not write.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn

from .. import masks
from ..data.regions import RegionRecord, collate_regions
from ..modeling import log_softmax
from ..typed import bounded
from .words import PRETRAIN_IMG_LEN, TextSpecials, example_rngs, stochastic_round

__all__ = ["RegionConfig", "RegionExample", "RegionHeads", "iou", "overlap_mask", "make_batch", "loss", "count"]


@dataclass(frozen=True)
class RegionConfig:
    max_img_len: int = bounded(PRETRAIN_IMG_LEN, min=2)  # rows per image including the global row
    mask_ratio: float = bounded(0.15, above=0.0, max=1.0)
    overlap_ratio: float = bounded(0.4, min=0.0, max=1.0)  # objective_configs passes the model's
    specials: Optional[TextSpecials] = None  # needed when examples carry text
    max_seq_len: int = 512  # text length including [CLS] and [SEP]
    position_start: int = 0


@dataclass
class RegionExample:
    record: RegionRecord
    text_ids: Optional[List[int]] = None  # content ids of the paired text (no [CLS]/[SEP]); None: image only


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(n, m) intersection over union of ``x1, y1, x2, y2`` boxes (n, 4) and (m, 4); 0 when both are empty."""
    a, b = np.asarray(boxes_a, np.float64)[:, None, :], np.asarray(boxes_b, np.float64)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def overlap_mask(boxes: np.ndarray, anchors: np.ndarray, valid: np.ndarray, ratio: float) -> np.ndarray:
    """(n,) bool: the valid anchors and every valid box whose IoU with some valid anchor exceeds ``ratio``."""
    anchors, valid = np.asarray(anchors, bool) & np.asarray(valid, bool), np.asarray(valid, bool)
    if not anchors.any():
        return np.zeros(len(valid), bool)
    return valid & (anchors | (iou(boxes, np.asarray(boxes)[anchors]) > ratio).any(axis=1))


def _choose_masked(locs: np.ndarray, valid: np.ndarray, cfg: RegionConfig, rng: np.random.Generator):
    """Masked rows of one image: anchors among the real regions (never row 0), then their overlaps."""
    candidates = valid.copy()
    candidates[0] = False
    pool = np.flatnonzero(candidates)
    if not pool.size:
        return candidates
    k = min(pool.size, max(1, stochastic_round(rng, cfg.mask_ratio * pool.size)))
    anchors = np.zeros(len(valid), bool)
    anchors[rng.choice(pool, size=k, replace=False)] = True
    return overlap_mask(locs[:, :4], anchors, candidates, cfg.overlap_ratio)


def _text_part(examples: Sequence[RegionExample], cfg: RegionConfig) -> Dict[str, np.ndarray]:
    sp = cfg.specials
    if sp is None:
        raise ValueError("region.make_batch: examples carry text, so RegionConfig.specials must be set")
    rows = [np.asarray([] if e.text_ids is None else [sp.cls_id] + list(e.text_ids)[:cfg.max_seq_len - 2]
                       + [sp.sep_id], np.int64) for e in examples]
    return {
        "input_ids": masks.pad_batch(rows, sp.pad_id),
        "token_type_ids": masks.pad_batch([np.zeros(len(r), np.int64) for r in rows], 0),
        "position_ids": masks.pad_batch([masks.block_positions([len(r)], cfg.position_start) for r in rows], 0),
        "text_valid": masks.pad_batch([np.ones(len(r), bool) for r in rows], False),
    }


def make_batch(examples: Sequence[RegionExample], cfg: RegionConfig, rng: np.random.Generator
               ) -> Dict[str, np.ndarray]:
    """Regions (and texts, when any example has one) with masked regions. B images, R regions, L text.

      region_feats             (B, R, D) float32  masked rows zeroed; row 0 the global feature (the mean
                                                  of the visible regions), never masked
      region_locs              (B, R, 5) float32  unchanged (masked regions keep their location)
      region_valid             (B, R) bool
      region_masked            (B, R) bool        True on masked regions (never row 0, never padding)
      region_masked_positions  (M,) int64         flat index into B * R of every masked region, row-major
      region_targets           (M, D) float32     the original features of the masked regions
      region_target_probs      (M, C) float32     their detector class distributions (only when every record
                                                  has class_probs)
      input_ids, token_type_ids, position_ids  (B, L) int64  [CLS] text [SEP] (only with text); an image
                                                  without text has an all-pad row
      attention_mask           (B, R + L, R + L) bool  bidirectional over valid regions and non-pad text
    """
    regions = collate_regions([e.record for e in examples], cfg.max_img_len)
    feats, valid = regions["region_feats"], regions["region_valid"]
    rngs = example_rngs(rng, len(examples))
    masked = np.stack([_choose_masked(regions["region_locs"][b], valid[b], cfg, rngs[b])
                       for b in range(len(examples))])
    if not masked.any():
        raise ValueError("region.make_batch: no image in the batch has a region to mask")
    batch = {"region_targets": feats[masked].copy()}
    if "region_class_probs" in regions:
        batch["region_target_probs"] = regions["region_class_probs"][masked]
    feats[masked] = 0.0
    # the global row is the mean of the regions: recompute it over the visible ones, or it leaks the masked
    visible = valid & ~masked
    visible[:, 0] = False
    count = np.maximum(visible.sum(axis=1, keepdims=True), 1)
    feats[:, 0] = (feats * visible[..., None]).sum(axis=1) / count
    batch.update(region_feats=feats, region_locs=regions["region_locs"], region_valid=valid, region_masked=masked,
                 region_masked_positions=np.flatnonzero(masked.reshape(-1)).astype(np.int64))
    keys = valid
    if any(e.text_ids is not None for e in examples):
        text = _text_part(examples, cfg)
        keys = np.concatenate([valid, text.pop("text_valid")], axis=1)
        batch.update(text)
    batch["attention_mask"] = masks.may_attend(keys, np.zeros(keys.shape, np.int64))
    return batch


class RegionHeads(nn.Layer):
    """Pretraining-only heads: ``feature`` hidden -> D (regression), ``classifier`` hidden -> C (classes).

    Not part of released checkpoints; train them alongside the model and keep or drop them with the run.
    """

    def __init__(self, config):
        super().__init__()
        if not config.has_regions:
            raise ValueError("RegionHeads needs a config with image_embedding_size > 0")
        self.feature = nn.Linear(config.hidden_size, config.image_embedding_size)
        self.classifier = nn.Linear(config.hidden_size, config.image_class_size) if config.image_class_size else None

    def forward(self, hidden):  # (M, H) -> (M, D), (M, C) or None
        return self.feature(hidden), None if self.classifier is None else self.classifier(hidden)


def count(batch: Dict[str, np.ndarray]) -> int:
    """The loss is a mean over this many items: the masked regions."""
    return int(batch["region_masked_positions"].shape[0])


def loss(model, batch: Dict[str, np.ndarray], heads: RegionHeads) -> dict:
    """Feature regression (+ soft-label region classification when the batch has class distributions)."""
    t = {k: paddle.to_tensor(v) for k, v in batch.items()}
    hidden = model.unimo(t.get("input_ids"), t.get("token_type_ids"), t.get("position_ids"), t["attention_mask"],
                         region_feats=t["region_feats"], region_locs=t["region_locs"],
                         region_valid=t["region_valid"])
    num_regions = batch["region_feats"].shape[1]
    region_hidden = hidden[:, :num_regions].reshape([-1, hidden.shape[-1]])  # (B * R, H)
    predicted, class_logits = heads(paddle.gather(region_hidden, t["region_masked_positions"]))  # (M, D), (M, C)
    feature_loss = ((predicted - t["region_targets"]) ** 2).mean()
    out = {"feature_loss": float(feature_loss), "num_masked": count(batch)}
    total = feature_loss
    if "region_target_probs" in batch and class_logits is not None:
        class_loss = -(t["region_target_probs"] * log_softmax(class_logits)).sum(axis=-1).mean()
        total = total + class_loss
        out["class_loss"] = float(class_loss)
    out["loss"] = total
    return out
