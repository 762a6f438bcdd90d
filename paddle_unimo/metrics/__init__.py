"""Evaluation metrics for text generation (DuReaderQG, AdvertiseGen, LCSTS).

``generation``: reference-based BLEU-4, ROUGE-1/2/L and distinct-n on PaddleNLP BasicTokenizer tokens
(character-level for Chinese). ``consistency``: reference-free checks of the output against its source
(AdvertiseGen attribute coverage / contradictions, unsupported numbers and quoted spans).
``caption``: COCO caption BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when its jars are installed) exactly as
pycocoevalcap computes them, and readers of COCO result and caption annotation files.
See each module's docstring for the exact definitions.
"""
from paddle_unimo.metrics.caption import (caption_scores, read_coco_references, read_coco_results,
                                          spice_available)
from paddle_unimo.metrics.consistency import (attribute_report, build_value_vocabulary, consistency_report,
                                              parse_attributes, unsupported_spans)
from paddle_unimo.metrics.generation import bleu4, distinct_n, rouge, tokenize_for_metric
from paddle_unimo.metrics.retrieval import recall_at_k, retrieval_ranks
from paddle_unimo.metrics.vqa import (answer_targets, build_answer_vocabulary, load_annotations,
                                      load_answer_vocabulary, normalize_answer, normalize_label, soft_score,
                                      vqa_accuracy, write_submission)

__all__ = ["tokenize_for_metric", "bleu4", "rouge", "distinct_n", "parse_attributes", "build_value_vocabulary",
           "attribute_report", "unsupported_spans", "consistency_report", "recall_at_k", "retrieval_ranks",
           "normalize_answer", "normalize_label", "vqa_accuracy", "soft_score", "answer_targets",
           "build_answer_vocabulary", "load_answer_vocabulary", "load_annotations", "write_submission",
           "caption_scores", "spice_available", "read_coco_results", "read_coco_references"]
