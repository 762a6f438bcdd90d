"""Seq2seq LM on text: UNIMO paper section 2.3 ("sequence-to-sequence generation").

Spans are sampled again and again until 25% of the text's maskable tokens are chosen: each round draws a
length uniformly from 1..``max_span_words`` words (4 by default; the paper summary gives no maximum) and a
start uniformly among the places where that many whole, not yet chosen words fit, so spans never overlap.
The chosen spans are removed from the text (each replaced by nothing) and concatenated in their text order,
*without* separators, as the target -- the paper's "concatenated as the target". Where each span came from is
returned separately (``span_positions``), so ``reconstruct`` rebuilds the text exactly.

Layout, as the fine-tuning data (``paddle_unimo.data.seq2seq``; the original ``seq2seq_reader.py`` of
PaddlePaddle/Research NLP/UNIMO):
source ``[CLS] remaining text [SEP]``, target ``[CLS] spans [MASK]`` ([MASK] is the eos), UniLM attention
(source bidirectional, target causal) from ``masks.seq2seq_inputs`` and next-token labels from
``training_batch``. A caption of an image-text pair is generated given its image as well: the image is part of
the source, ``[regions; source; target]`` (``words.with_images``), as captioning's ``[regions; tags; caption]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .. import masks
from ..data.seq2seq import Encoded, training_batch
from ..typed import bounded
from .words import (PRETRAIN_IMG_LEN, TextExample, TextSpecials, example_rngs, predicted_token_count,
                    predicted_token_loss, sample_spans, stochastic_round, with_images, word_table)

__all__ = ["Seq2SeqLMConfig", "TextExample", "corrupt", "reconstruct", "make_batch", "loss", "count"]
TokenSpan = Tuple[int, int]  # (first token in the original content, number of tokens)


@dataclass(frozen=True)
class Seq2SeqLMConfig:
    specials: TextSpecials
    target_ratio: float = bounded(0.25, above=0.0, max=1.0)
    max_span_words: int = bounded(4, min=1)
    max_seq_len: int = bounded(512, min=5)  # source + target, i.e. content + 4 special tokens
    position_start: int = 0  # 0 for unimo-text, 2 for the English UNIMO
    max_img_len: int = bounded(PRETRAIN_IMG_LEN, min=2)  # rows of a pair's image, the global row included


def corrupt(example: TextExample, cfg: Seq2SeqLMConfig, rng: np.random.Generator
            ) -> Tuple[Encoded, List[TokenSpan]]:
    """Source and target of one text, and the spans moved to the target (content coordinates, in order)."""
    sp = cfg.specials
    content = np.asarray(list(example.token_ids)[:cfg.max_seq_len - 4], np.int64)
    starts = [s for s in example.word_starts if s < len(content)]
    w_start, w_len, w_maskable = word_table(content, starts, sp.special_ids)
    maskable_tokens = int(w_len[w_maskable].sum())
    budget = max(1, stochastic_round(rng, cfg.target_ratio * maskable_tokens)) if maskable_tokens else 0
    spans = sample_spans(rng, w_len, w_maskable, budget, lambda r: int(r.integers(1, cfg.max_span_words + 1)))
    token_spans, chosen = [], np.zeros(len(content), bool)
    for first, num_words, _ in sorted(spans):
        begin = int(w_start[first])
        end = int(w_start[first + num_words - 1] + w_len[first + num_words - 1])
        token_spans.append((begin, end - begin))
        chosen[begin:end] = True
    source = [sp.cls_id] + content[~chosen].tolist() + [sp.sep_id]
    target = [sp.cls_id] + content[chosen].tolist() + [sp.mask_id]
    return Encoded(source, target), token_spans


def reconstruct(source_ids: Sequence[int], target_ids: Sequence[int], span_positions: Sequence[TokenSpan]
                ) -> List[int]:
    """The original content ids from ``[CLS] source [SEP]``, ``[CLS] spans [MASK]`` and the span positions."""
    source, target = list(source_ids[1:-1]), list(target_ids[1:-1])
    out, s, t = [], 0, 0
    for begin, size in span_positions:
        take = begin - len(out)
        out += source[s:s + take] + target[t:t + size]
        s, t = s + take, t + size
    if t != len(target):
        raise ValueError(f"span_positions cover {t} target tokens, the target has {len(target)}")
    return out + source[s:]


def make_batch(examples: Sequence[TextExample], cfg: Seq2SeqLMConfig, rng: np.random.Generator
               ) -> Dict[str, np.ndarray]:
    """UniLM batch of corrupted texts (``paddle_unimo.data.seq2seq.training_batch``).

      input_ids, token_type_ids, position_ids (B, L) int64  source then target, 0/1 types, positions
                                                             restarting at position_start for the target
      attention_mask    (B, L, L) bool  source bidirectional, target causal (masks.seq2seq_inputs)
      masked_positions  (N,) int64  flat index into B * L of every position that predicts a target token
      labels            (N,) int64  the next target token (the final [MASK] = eos included)

    Texts of image-text pairs: the regions too, before the source (``words.with_images``).
    """
    items = [corrupt(e, cfg, r)[0] for e, r in zip(examples, example_rngs(rng, len(examples)))]
    batch = training_batch(items, cfg.specials.pad_id, cfg.position_start)
    valid = masks.pad_batch([np.ones(len(e.source_ids) + len(e.target_ids), bool) for e in items], False)
    rank = masks.pad_batch([masks.ranks(len(e.source_ids), len(e.target_ids)) for e in items], 0)
    return with_images(batch, examples, valid, rank, cfg.max_img_len)


count = predicted_token_count


def loss(model, batch: Dict[str, np.ndarray], heads=None) -> dict:
    """Next-token cross-entropy over the targets; ``heads`` unused."""
    return predicted_token_loss(model, batch)
