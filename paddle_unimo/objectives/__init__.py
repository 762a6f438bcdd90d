"""Pretraining objectives of UNIMO (paper section 2), one module each, behind an explicit registry.

Every objective gives ``make_batch(examples, cfg, rng) -> dict`` of numpy arrays (pure numpy, seeded by an
explicit ``np.random.Generator``), ``loss(model, batch, heads) -> dict`` with a ``"loss"`` tensor (a mean
over ``count(batch)`` items) plus metrics, and ``make_heads(model_config)`` for pretraining-only layers the
loss needs (``None`` when it needs none). ``get_objective(name)`` fails loudly on an unknown name.

  span_mlm    bidirectional span MLM on text, and on a caption given its image (section 2.3)
  seq2seq_lm  seq2seq generation of removed text spans, also of a caption's given its image (section 2.3)
  region      masked region feature regression + classification, image and image+text (section 2.2)
  cmcl        cross-modal contrastive learning (section 2.1)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from . import cmcl, region, seq2seq_lm, span_mlm
from .words import TextExample, TextSpecials, chinese_word_starts, text_example


@dataclass(frozen=True)
class Objective:
    name: str
    config: type  # the objective's config dataclass
    example: type  # the objective's example type
    make_batch: Callable  # (examples, cfg, rng) -> dict of numpy arrays
    loss: Callable  # (model, batch, heads) -> {"loss": tensor, metric: value, ...}
    count: Callable  # (batch) -> number of items the loss is a mean over
    make_heads: Optional[Callable] = None  # (UNIMOConfig) -> paddle.nn.Layer of pretraining-only heads


OBJECTIVES: Dict[str, Objective] = {
    "span_mlm": Objective("span_mlm", span_mlm.SpanMLMConfig, TextExample, span_mlm.make_batch, span_mlm.loss,
                          span_mlm.count),
    "seq2seq_lm": Objective("seq2seq_lm", seq2seq_lm.Seq2SeqLMConfig, TextExample, seq2seq_lm.make_batch,
                            seq2seq_lm.loss, seq2seq_lm.count),
    "region": Objective("region", region.RegionConfig, region.RegionExample, region.make_batch, region.loss,
                        region.count, region.RegionHeads),
    "cmcl": Objective("cmcl", cmcl.CMCLConfig, cmcl.CMCLExample, cmcl.make_batch, cmcl.loss, cmcl.count),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


__all__ = ["OBJECTIVES", "Objective", "get_objective", "TextExample", "TextSpecials", "chinese_word_starts",
           "text_example"]
