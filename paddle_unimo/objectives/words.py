"""Text units shared by the text objectives: special ids, whole-word boundaries and span sampling.

UNIMO paper section 2.3 (language learning): the smallest masked unit is a semantically complete word or
phrase. A text example therefore carries its token ids *and* its word starts (the index of each word's first
token), so that English WordPiece (``##`` continuation pieces), GPT-2 BPE (a piece without a leading space
continues the previous word) and Chinese (jieba words) all give the same input to the objectives.

Span sampling (``sample_spans``) chooses non-overlapping runs of whole maskable words until a token budget is
met; the objectives differ only in how they draw a span's length (SpanBERT's clipped geometric for the
bidirectional MLM, a uniform length for seq2seq).

A text of an image-text pair carries its image (``TextExample.image``): the text objectives then learn the
caption given the image, in the fine-tuning tasks' layout ``[regions; text]`` (``with_images``), as the
summary's visual learning on pairs recovers masked regions given the text (the original configs'
``vl_mask_ratio``, beside ``txt_mask_ratio``, masks the text of pairs).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from .. import masks
from ..data.regions import RegionRecord, collate_regions

Span = Tuple[int, int, int]  # (first word, number of words, drawn length in words)
PRETRAIN_IMG_LEN = 101  # the global row + 100 regions: the original fine-tuning scripts and the paper


@dataclass(frozen=True)
class TextSpecials:
    """Ids the text objectives need. ``special_ids`` are never masked, never chosen as random tokens."""
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: FrozenSet[int] = field(default_factory=frozenset)

    def __post_init__(self):
        ids = frozenset(self.special_ids) | {self.cls_id, self.sep_id, self.pad_id, self.mask_id}
        object.__setattr__(self, "special_ids", ids)

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int = 0) -> "TextSpecials":
        """From a ``paddle_unimo.tokenization.Tokenizer``; ``vocab_size`` defaults to the tokenizer's."""
        return cls(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id,
                   vocab_size or tokenizer.vocab_size, frozenset(tokenizer.special_ids))

    def random_candidates(self) -> np.ndarray:
        """Every id a "random token" replacement may take: the vocabulary minus the special ids."""
        ids = np.arange(self.vocab_size, dtype=np.int64)
        return ids[~np.isin(ids, np.fromiter(self.special_ids, np.int64))]


@dataclass
class TextExample:
    """One text: content token ids (no [CLS]/[SEP] around it) and the index of each word's first token; the
    image it describes when it comes from an image-text pair."""
    token_ids: List[int]
    word_starts: List[int]
    image: Optional[RegionRecord] = None

    def __post_init__(self):
        starts = sorted(set(int(s) for s in self.word_starts) | ({0} if self.token_ids else set()))
        if starts and (starts[0] < 0 or starts[-1] >= len(self.token_ids)):
            raise ValueError(f"word_starts {starts[:5]}... outside 0..{len(self.token_ids) - 1}")
        self.word_starts = starts


def wordpiece_word_starts(tokens: Sequence[str]) -> List[int]:
    """A ``##`` piece continues the previous word."""
    return [i for i, t in enumerate(tokens) if i == 0 or not t.startswith("##")]


def sentencepiece_word_starts(tokens: Sequence[str]) -> List[int]:
    """A SentencePiece piece starts a word when it begins with the ``\u2581`` space marker."""
    return [i for i, t in enumerate(tokens) if i == 0 or t.startswith("\u2581")]


def gpt2_word_starts(tokens: Sequence[str], tokenizer) -> List[int]:
    """GPT-2 pieces (``GptBpeTokenizer`` tokens, i.e. GPT-2 ids as strings): a piece starts a word when it
    begins with a space (or other whitespace) byte; otherwise it continues the previous word, as fairseq's
    whole-word masking does. Non-GPT-2 tokens (``[SEP]``, ...) start a word."""
    space = {tokenizer.byte_encoder[b] for b in b" \t\n\r"}
    starts = []
    for i, t in enumerate(tokens):
        piece = tokenizer.decoder[int(t)] if t.isdigit() else None
        if i == 0 or piece is None or piece[:1] in space:
            starts.append(i)
    return starts


def chinese_word_starts(text: str, tokenizer) -> List[int]:
    """Word starts of ``tokenizer.tokenize(text)`` from jieba's segmentation of ``text``.

    Each jieba word is tokenized on its own; when the pieces concatenate to the tokens of the whole text
    (the usual case) every jieba word start that is not a ``##`` piece is a word start. When they do not
    (jieba cut inside a tokenizer word), the text falls back to the WordPiece rule.
    """
    import jieba  # local: jieba loads its dictionary on first use
    jieba.setLogLevel(logging.WARNING)
    tokens = tokenizer.tokenize(text)
    starts, pieces = [], []
    for word in jieba.lcut(text):
        word_tokens = tokenizer.tokenize(word)
        if word_tokens:
            starts.append(len(pieces))
            pieces.extend(word_tokens)
    if pieces != tokens:
        return wordpiece_word_starts(tokens)
    return [s for s in starts if s == 0 or not tokens[s].startswith("##")]


def text_example(text: str, tokenizer, chinese: bool = False) -> TextExample:
    """A ``TextExample`` with word starts from jieba (``chinese``), GPT-2 spaces or WordPiece ``##``."""
    tokens = tokenizer.tokenize(text)
    if chinese:
        starts = chinese_word_starts(text, tokenizer)
    elif getattr(tokenizer, "family", "") == "gpt2_bpe":
        starts = gpt2_word_starts(tokens, tokenizer)
    elif getattr(tokenizer, "family", "") == "sentencepiece":
        starts = sentencepiece_word_starts(tokens)
    else:
        starts = wordpiece_word_starts(tokens)
    return TextExample(tokenizer.convert_tokens_to_ids(tokens), starts)


def word_table(ids: np.ndarray, word_starts: Sequence[int], special_ids) -> Tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """Words of a token sequence: (start, length, maskable) arrays, one entry per word.

    Every special token is a word of its own and is not maskable, so a span never touches one.
    """
    special = np.isin(ids, np.fromiter(special_ids, np.int64))
    is_start = np.zeros(len(ids) + 1, bool)
    is_start[list(word_starts)] = True
    is_start[:-1] |= special
    is_start[1:-1] |= special[:-1]  # the token after a special one starts a word
    is_start[0], is_start[-1] = True, True
    bounds = np.flatnonzero(is_start)
    starts, lengths = bounds[:-1], np.diff(bounds)
    return starts, lengths, ~special[starts]


def example_rngs(rng, count: int) -> list:
    """One generator per example: ``rng`` itself for every example, or ``rng`` when it already is a list of
    per-example generators. Per-example generators make an example's masking independent of which process
    and which batch it lands in, so N processes mask exactly as one process does."""
    if isinstance(rng, (list, tuple)):
        if len(rng) != count:
            raise ValueError(f"{len(rng)} generators for {count} examples")
        return list(rng)
    return [rng] * count


def stochastic_round(rng: np.random.Generator, x: float) -> int:
    """floor(x) or ceil(x) with E[result] = x, so token budgets are unbiased on short texts."""
    base = int(np.floor(x))
    return base + int(rng.random() < x - base)


def _fitting_starts(free: np.ndarray, length: int) -> np.ndarray:
    """Words where ``length`` consecutive free words begin."""
    if length > len(free):
        return np.zeros(0, np.int64)
    run = np.concatenate([[0], np.cumsum(free)])
    return np.flatnonzero(run[length:] - run[:-length] == length)


def sample_spans(rng: np.random.Generator, word_lengths: np.ndarray, maskable: np.ndarray, budget: int,
                 draw_length: Callable[[np.random.Generator], int], max_redraws: int = 100) -> List[Span]:
    """Non-overlapping spans of whole maskable words holding about ``budget`` tokens, in sampling order, as
    (first word, number of words, drawn length). Only the last span can be shorter than its drawn length.

    Each round draws a length (in words) and a start uniformly among the places where that many free words
    fit (a length that fits nowhere is redrawn). Sampling ends inside a span when the budget is reached, or
    before a word that would overshoot the budget by more than stopping undershoots it; the very first word is
    always kept, so a positive budget masks at least one word.
    """
    free = np.asarray(maskable, bool).copy()
    spans, chosen = [], 0
    while chosen < budget and free.any():
        length = draw_length(rng)
        starts = _fitting_starts(free, length)
        for _ in range(max_redraws):
            if starts.size:
                break
            length = draw_length(rng)
            starts = _fitting_starts(free, length)
        if not starts.size:
            length, starts = 1, np.flatnonzero(free)
        first, taken = int(rng.choice(starts)), 0
        for w in range(first, first + length):
            size = int(word_lengths[w])
            if chosen and chosen + size - budget > budget - chosen:
                budget = chosen  # stopping here is nearer the budget than taking the word: sampling ends
                break
            chosen, taken = chosen + size, taken + 1
            if chosen >= budget:
                break
        if taken:
            free[first:first + taken] = False
            spans.append((first, taken, length))
    return spans


def with_images(batch: Dict[str, np.ndarray], examples: Sequence[TextExample], text_valid: np.ndarray,
                text_rank: np.ndarray, max_img_len: int) -> Dict[str, np.ndarray]:
    """A text objective's batch (B, L) with each text's image before it, ``[regions; text]``, when the examples
    have images (the batch unchanged when none has; a mix is a ValueError). The regions (unmasked, up to
    ``max_img_len`` rows) are context of rank 0 (``masks``): every text token sees the valid regions, and they see
    the text's rank-0 tokens (all of an MLM text, a seq2seq source; never a seq2seq target). ``text_valid`` and
    ``text_rank`` (B, L) are the text's keys and ranks. ``masked_positions`` move to the rows of the joint
    sequence; ``region_feats``, ``region_locs``, ``region_valid`` are added as ``collate_regions`` gives them."""
    images = [e.image for e in examples]
    if all(i is None for i in images):
        return batch
    if any(i is None for i in images):
        raise ValueError("a text batch mixes texts with an image and texts without one")
    regions = collate_regions(images, max_img_len)
    region_valid = regions["region_valid"]
    num_regions, length = region_valid.shape[1], batch["input_ids"].shape[1]
    rows, columns = np.divmod(batch["masked_positions"], length)
    valid = np.concatenate([region_valid, text_valid], axis=1)
    rank = np.concatenate([np.full(region_valid.shape, masks.CONTEXT_RANK, np.int64), text_rank], axis=1)
    return {**batch, "region_feats": regions["region_feats"], "region_locs": regions["region_locs"],
            "region_valid": region_valid, "attention_mask": masks.may_attend(valid, rank),
            "masked_positions": (rows * (num_regions + length) + num_regions + columns).astype(np.int64)}


def predicted_token_count(batch) -> int:
    """The text objectives' loss is a mean over this many items: the predicted tokens."""
    return int(batch["labels"].shape[0])


def predicted_token_loss(model, batch) -> dict:
    """Cross-entropy of the LM head at ``masked_positions`` against ``labels`` (span MLM's masked tokens,
    seq2seq LM's next target tokens), given the images when the batch has regions (``with_images``); no label
    smoothing in pretraining."""
    import paddle
    from ..losses import label_smoothed_cross_entropy
    t = {k: paddle.to_tensor(v) for k, v in batch.items()}
    hidden = model.unimo(t["input_ids"], t["token_type_ids"], t["position_ids"], t["attention_mask"],
                         region_feats=t.get("region_feats"), region_locs=t.get("region_locs"),
                         region_valid=t.get("region_valid"))  # (B, [R +] L, H): the regions first, if any
    logits = model.lm_head(hidden, t["masked_positions"])  # (N, V)
    value = label_smoothed_cross_entropy(logits, t["labels"])
    accuracy = float((logits.argmax(axis=-1) == t["labels"]).astype("float32").mean())
    return {"loss": value, "accuracy": accuracy, "num_predicted": predicted_token_count(batch)}
