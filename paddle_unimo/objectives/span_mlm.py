"""Bidirectional span masked-LM on text: UNIMO paper section 2.3 ("bidirectional prediction"), which masks
spans as SpanBERT does (Joshi et al. 2020, section 3.1).

* 15% of a text's maskable tokens are masked (``txt_mask_ratio`` 0.15 of the original config); the budget is
  rounded stochastically so that short texts are not biased, and is at least one word.
* Spans are runs of whole words; a span's length in words follows SpanBERT's clipped geometric distribution:
  P(l) proportional to p (1 - p)^(l - 1) for l = 1..10, p = 0.2 (renormalised, mean 3.8 words).
* A span is replaced as a whole, as in SpanBERT: with probability 0.8 every token becomes [MASK], with 0.1
  every token becomes a random non-special token, with 0.1 it is kept. Labels are the original tokens.
* Special tokens ([CLS], [SEP], [PAD], ...) and padding are never masked.

The attention is bidirectional over the text (every rank 0 in ``masks``). A caption of an image-text pair is
masked the same way and predicted given its image as well: ``[regions; text]``, all bidirectional
(``words.with_images``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import masks
from ..typed import bounded
from .words import (PRETRAIN_IMG_LEN, TextExample, TextSpecials, chinese_word_starts, example_rngs,
                    predicted_token_count, predicted_token_loss, sample_spans, stochastic_round, with_images,
                    word_table)

__all__ = ["SpanMLMConfig", "TextExample", "chinese_word_starts", "span_length_probs", "mask_text",
           "make_batch", "loss", "count"]


@dataclass(frozen=True)
class SpanMLMConfig:
    specials: TextSpecials
    mask_ratio: float = bounded(0.15, above=0.0, max=1.0)
    geometric_p: float = bounded(0.2, above=0.0, max=1.0)
    max_span_words: int = bounded(10, min=1)
    mask_prob: float = bounded(0.8, min=0.0, max=1.0)  # span -> [MASK]
    random_prob: float = bounded(0.1, min=0.0, max=1.0)  # span -> random tokens; the rest is kept unchanged
    max_seq_len: int = bounded(512, min=3)  # including [CLS] and [SEP]
    position_start: int = 0  # 0 for unimo-text, 2 for the English UNIMO
    max_img_len: int = bounded(PRETRAIN_IMG_LEN, min=2)  # rows of a pair's image, the global row included


@lru_cache(maxsize=16)
def span_length_probs(p: float, max_len: int) -> np.ndarray:
    """P(length = 1..max_len) of the clipped geometric distribution (truncated and renormalised)."""
    probs = p * (1 - p) ** np.arange(max_len)
    return probs / probs.sum()


@dataclass
class MaskedText:
    input_ids: np.ndarray  # (L,) [CLS] content [SEP] after replacement
    positions: np.ndarray  # (n,) indices of the masked tokens
    labels: np.ndarray  # (n,) their original ids
    spans: List[tuple]  # in sampling order: (first token, tokens, words, drawn words, "mask"|"random"|"keep")


def mask_text(example: TextExample, cfg: SpanMLMConfig, rng: np.random.Generator,
              candidates: Optional[np.ndarray] = None) -> MaskedText:
    """Wraps one text in [CLS] .. [SEP] (truncated to ``max_seq_len``) and masks spans of whole words."""
    sp = cfg.specials
    content = list(example.token_ids)[:cfg.max_seq_len - 2]
    ids = np.asarray([sp.cls_id] + content + [sp.sep_id], np.int64)
    starts = [s + 1 for s in example.word_starts if s < len(content)]
    w_start, w_len, w_maskable = word_table(ids, starts, sp.special_ids)
    maskable_tokens = int(w_len[w_maskable].sum())
    budget = max(1, stochastic_round(rng, cfg.mask_ratio * maskable_tokens)) if maskable_tokens else 0
    probs = span_length_probs(cfg.geometric_p, cfg.max_span_words)
    lengths = np.arange(1, cfg.max_span_words + 1)
    spans = sample_spans(rng, w_len, w_maskable, budget, lambda r: int(r.choice(lengths, p=probs)))
    candidates = sp.random_candidates() if candidates is None else candidates
    out, positions, described = ids.copy(), [], []
    for first, num_words, drawn in spans:
        begin, end = w_start[first], w_start[first + num_words - 1] + w_len[first + num_words - 1]
        u = rng.random()
        if u < cfg.mask_prob:
            out[begin:end], kind = sp.mask_id, "mask"
        elif u < cfg.mask_prob + cfg.random_prob:
            out[begin:end], kind = rng.choice(candidates, size=end - begin), "random"
        else:
            kind = "keep"
        positions.extend(range(begin, end))
        described.append((int(begin), int(end - begin), num_words, drawn, kind))
    positions = np.asarray(positions, np.int64)
    return MaskedText(out, positions, ids[positions], described)


def make_batch(examples: Sequence[TextExample], cfg: SpanMLMConfig, rng: np.random.Generator
               ) -> Dict[str, np.ndarray]:
    """Masks every text and pads the batch (B texts, L = longest [CLS] text [SEP]).

      input_ids         (B, L) int64  masked text, pad_id where padded
      token_type_ids    (B, L) int64  all 0
      position_ids      (B, L) int64  position_start + index, 0 where padded
      attention_mask    (B, L, L) bool  bidirectional over the non-pad tokens (masks.may_attend, all ranks 0)
      masked_positions  (N,) int64    flat index into B * L of every masked token
      labels            (N,) int64    its original id

    Texts of image-text pairs: ``region_feats``, ``region_locs``, ``region_valid`` (B, R, ...) too, the mask
    (B, R + L, R + L) over ``[regions; text]`` and ``masked_positions`` into B * (R + L) (``words.with_images``).
    """
    candidates = cfg.specials.random_candidates()
    texts = [mask_text(e, cfg, r, candidates) for e, r in zip(examples, example_rngs(rng, len(examples)))]
    lengths = [len(t.input_ids) for t in texts]
    valid = masks.pad_batch([np.ones(n, bool) for n in lengths], False)
    length = valid.shape[1]
    labels = np.concatenate([t.labels for t in texts])
    if not labels.size:
        raise ValueError("span_mlm.make_batch: no maskable token in the batch")
    rank = np.zeros(valid.shape, np.int64)
    batch = {
        "input_ids": masks.pad_batch([t.input_ids for t in texts], cfg.specials.pad_id),
        "token_type_ids": np.zeros(valid.shape, np.int64),
        "position_ids": masks.pad_batch([masks.block_positions([n], cfg.position_start) for n in lengths], 0),
        "attention_mask": masks.may_attend(valid, rank),
        "masked_positions": np.concatenate([b * length + t.positions for b, t in enumerate(texts)]),
        "labels": labels,
    }
    return with_images(batch, examples, valid, rank, cfg.max_img_len)


count = predicted_token_count


def loss(model, batch: Dict[str, np.ndarray], heads=None) -> dict:
    """Cross-entropy of the LM head at the masked positions; ``heads`` unused."""
    return predicted_token_loss(model, batch)
