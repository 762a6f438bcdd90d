"""Reference-based generation metrics: BLEU-4, ROUGE-1/2/L and distinct-n.

All three measures work on the tokens of ``tokenize_for_metric``: PaddleNLP's BasicTokenizer
(``paddle_unimo.tokenization.basic_tokenize``: lower-cased, accents stripped, every CJK character a token,
punctuation and symbols split off, other text split on whitespace). Chinese scores are therefore
character-level, as in the PaddleNLP 千言 baselines (DuReaderQG, AdvertiseGen, LCSTS).

* **BLEU-4** (0-100): corpus BLEU computed exactly as ``paddlenlp.metrics.BLEU(n_size=4)``. Clipped n-gram
  matches and candidate n-gram counts (n = 1..4) are summed over the corpus, p_n = matches / candidates;
  a p_n of 0 (or with no candidate n-grams) is replaced by ``sys.float_info.min`` (no other smoothing).
  BLEU = BP * exp(sum_n 1/4 * log p_n), BP = exp(min(1 - r/c, 0)) where c is the total prediction length
  and r the summed length of, per example, the reference closest in length (ties: the shorter one).
  The result is multiplied by 100; a corpus whose predictions are all empty scores 0.
* **ROUGE-1/2/L** (0-100): per-example F-measure from Google's ``rouge-score`` package (unigram, bigram
  and longest-common-subsequence overlap, no stemming), averaged over examples. rouge-score's default
  tokenizer drops every non-ASCII character, so it is given ``tokenize_for_metric`` as its tokenizer.
  With several references per example the best-scoring reference counts (``score_multi``).
* **distinct-n** (0-1): number of distinct n-grams / total number of n-grams over all predictions
  (n-grams never cross a prediction boundary); 0 when there are no n-grams.
"""
from __future__ import annotations

import math
import sys
from collections import Counter
from typing import Dict, List, Sequence, Union

from rouge_score import rouge_scorer

from paddle_unimo.tokenization import basic_tokenize

References = Sequence[Union[str, Sequence[str]]]
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def tokenize_for_metric(text: str) -> List[str]:
    """Metric tokens: PaddleNLP BasicTokenizer (CJK characters split, lower-cased, punctuation split)."""
    return basic_tokenize(text)


def _reference_lists(predictions: Sequence[str], references: References) -> List[List[str]]:
    """Each reference item is one string or a list of strings; returns one list of strings per example."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    out = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    for i, refs in enumerate(out):
        if not refs:
            raise ValueError(f"example {i} has no reference")
    return out


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu4(predictions: Sequence[str], references: References) -> float:
    """Corpus BLEU-4 in 0-100, identical to 100 * paddlenlp.metrics.BLEU(n_size=4) (see module docstring)."""
    n_size = 4
    matches, totals = [0] * n_size, [0] * n_size
    pred_len = ref_len = 0
    for pred, refs in zip(predictions, _reference_lists(predictions, references)):
        cand = tokenize_for_metric(pred)
        ref_tokens = [tokenize_for_metric(r) for r in refs]
        for n in range(1, n_size + 1):
            cand_counts = _ngrams(cand, n)
            max_ref = Counter()
            for ref in ref_tokens:
                max_ref |= _ngrams(ref, n)  # element-wise max over the references
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in cand_counts.items())
            totals[n - 1] += sum(cand_counts.values())
        pred_len += len(cand)
        ref_len += min((abs(len(cand) - len(r)), len(r)) for r in ref_tokens)[1]
    if pred_len == 0:
        return 0.0  # paddlenlp divides by zero here
    precisions = [m / float(t) if t else 0.0 for m, t in zip(matches, totals)]
    precisions = [p if p != 0 else sys.float_info.min for p in precisions]
    log_mean = math.fsum(1 / n_size * math.log(p) for p in precisions)
    brevity_penalty = math.exp(min(1 - ref_len / float(pred_len), 0))
    return 100.0 * (brevity_penalty * math.exp(log_mean))


class _MetricTokenizer:
    """rouge-score tokenizer interface (``tokenize(text) -> list[str]``) over ``tokenize_for_metric``."""

    def tokenize(self, text: str) -> List[str]:
        return tokenize_for_metric(text)


def rouge(predictions: Sequence[str], references: References) -> Dict[str, float]:
    """Mean ROUGE-1/2/L F-measure in 0-100 (keys ``rouge1``, ``rouge2``, ``rougeL``)."""
    ref_lists = _reference_lists(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=_MetricTokenizer())
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, ref_lists):
        scores = scorer.score(refs[0], pred) if len(refs) == 1 else scorer.score_multi(refs, pred)
        for key in ROUGE_TYPES:
            sums[key] += scores[key].fmeasure
    count = max(len(predictions), 1)
    return {key: 100.0 * total / count for key, total in sums.items()}


def distinct_n(predictions: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the predictions' metric tokens, in 0-1 (0 without n-grams)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts = Counter()
    for pred in predictions:
        counts.update(_ngrams(tokenize_for_metric(pred), n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0
