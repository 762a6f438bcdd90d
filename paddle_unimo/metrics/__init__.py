"""Evaluation metrics for text generation (DuReaderQG, AdvertiseGen, LCSTS).

``generation``: reference-based BLEU-4, ROUGE-1/2/L and distinct-n on PaddleNLP BasicTokenizer tokens
(character-level for Chinese). ``consistency``: reference-free checks of the output against its source
(AdvertiseGen attribute coverage / contradictions, unsupported numbers and quoted spans).
See each module's docstring for the exact definitions.
"""
from paddle_unimo.metrics.consistency import (attribute_report, build_value_vocabulary, consistency_report,
                                              parse_attributes, unsupported_spans)
from paddle_unimo.metrics.generation import bleu4, distinct_n, rouge, tokenize_for_metric

__all__ = ["tokenize_for_metric", "bleu4", "rouge", "distinct_n", "parse_attributes", "build_value_vocabulary",
           "attribute_report", "unsupported_spans", "consistency_report"]
