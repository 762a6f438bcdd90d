"""千言 generation tasks: DuReaderQG question generation, AdvertiseGen ad copy, LCSTS_new summarization.

One adapter serves the three: a task names its fields and its defaults live in ``tasks/configs``. It owns
the batch (``paddle_unimo.data.seq2seq``) and the loss (label-smoothed next-token cross-entropy on the
target positions), decodes with ``paddle_unimo.generation`` and scores with ``paddle_unimo.metrics``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle

from paddle_unimo import UNIMOLMHeadModel, WordPieceTokenizer, get_preset, load_tokenizer
from paddle_unimo.data.seq2seq import (Example, Fields, Seq2SeqEncoder, decoding_batch, postprocess, read_examples,
                                       training_batch)
from paddle_unimo.fileio import atomic_write
from paddle_unimo.generation import generate
from paddle_unimo.metrics import bleu4, consistency_report, distinct_n, rouge
from paddle_unimo.training import TrainConfig, Trainer, label_smoothed_cross_entropy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fields: Fields
    description: str


TASKS: Dict[str, TaskSpec] = {
    "dureader_qg": TaskSpec("dureader_qg", Fields(source="context", title="answer", target="question", id="id"),
                            "question generation: the answer is the title, the context the source"),
    "advertisegen": TaskSpec("advertisegen", Fields(source="content", target="summary"),
                             "ad copy from product attributes (类型#上衣*颜色#白色...)"),
    "lcsts_new": TaskSpec("lcsts_new", Fields(source="content", target="summary", id="id"),
                          "summarization of short news texts (JSONL, or the LCSTS TSV summary<TAB>content)"),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


def build_model(model_dir: Optional[str], model_cfg: dict, texts: Sequence[str]):
    """From a checkpoint folder, or the preset with a character vocabulary built from ``texts``."""
    if model_dir:
        return UNIMOLMHeadModel.from_pretrained(model_dir), load_tokenizer(model_dir)
    vocab_dir = model_cfg.get("vocab_dir")  # a trained tokenizer (tools/train_tokenizer.py)
    tokenizer = load_tokenizer(vocab_dir) if vocab_dir else WordPieceTokenizer.build_char_vocab(texts)
    config = get_preset(model_cfg["preset"], **model_cfg.get("overrides", {})).replace(
        vocab_size=tokenizer.vocab_size, unk_token_id=tokenizer.unk_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.eos_token_id,
        mask_token_id=tokenizer.mask_token_id)
    logger.info("no MODEL given: preset %s with a %d-token %s", model_cfg["preset"], tokenizer.vocab_size,
                f"vocabulary from {vocab_dir}" if vocab_dir else "character vocabulary from the training data")
    paddle.seed(0)
    return UNIMOLMHeadModel(config), tokenizer


def example_texts(examples: Sequence[Example]) -> List[str]:
    return [t for e in examples for t in (e.source, e.title, e.target) if t]


def seq2seq_loss(model, batch, label_smoothing: float):
    logits = model(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                   masked_positions=batch["masked_positions"])
    loss = label_smoothed_cross_entropy(logits, batch["labels"], label_smoothing)
    return {"loss": loss}


class GenerationTask:
    """Binds a task, a model with its tokenizer and the config's data/decode sections."""

    def __init__(self, spec: TaskSpec, model, tokenizer, data_cfg: dict, decode_cfg: dict):
        self.spec, self.model, self.tokenizer = spec, model, tokenizer
        self.data_cfg, self.decode_cfg = data_cfg, dict(decode_cfg)
        self.encoder = Seq2SeqEncoder(tokenizer, data_cfg["max_seq_len"], data_cfg["max_target_len"],
                                      data_cfg.get("max_title_len", 0) if spec.fields.title else 0)

    def read(self, path: str, need_target: bool = True):
        return self.read_file(path, self.spec, self.data_cfg, need_target)

    @staticmethod
    def read_file(path: str, spec: TaskSpec, data_cfg: dict, need_target: bool = True):
        return read_examples(path, spec.fields, need_target, data_cfg.get("skip_bad", False))

    def make_batch(self, encoded):
        return training_batch(encoded, self.model.config.pad_token_id, self.model.config.position_start)

    def predict(self, examples: Sequence[Example], model=None) -> List[str]:
        model = model or self.model
        cfg = dict(self.decode_cfg)
        batch_size = cfg.pop("batch_size", 16)
        encoded = self.encoder.encode_all(examples, with_target=False, where="decoding inputs")
        outputs = []
        for start in range(0, len(encoded), batch_size):
            batch = decoding_batch(encoded[start:start + batch_size], model.config.pad_token_id,
                                   model.config.position_start)
            ids, _ = generate(model, **{k: paddle.to_tensor(v) for k, v in batch.items()}, **cfg)
            outputs.extend(postprocess(self.tokenizer, row) for row in ids.numpy())
        return outputs

    def trainer(self, train_examples, dev_examples, train_cfg: TrainConfig, out_dir: str, eval_examples: int = 0):
        encoded = self.encoder.encode_all(train_examples, where="training data")
        dev = dev_examples[:eval_examples] if eval_examples else dev_examples

        def evaluate(model):
            model.eval()
            return {"bleu4": bleu4(self.predict(dev, model), [e.target for e in dev])}

        return Trainer(self.model, train_cfg, encoded, self.make_batch,
                       lambda model, batch: seq2seq_loss(model, batch, train_cfg.label_smoothing), out_dir,
                       evaluate=evaluate if dev else None, metric="bleu4", greater_is_better=True,
                       save_extra=self.tokenizer.save_pretrained, count=lambda batch: len(batch["labels"]))


def score(task: str, examples: Sequence[Example], predictions: Sequence[str], value_vocabulary=None) -> dict:
    """BLEU-4, ROUGE, distinct-n against the examples' targets, and the consistency report."""
    refs = [e.target for e in examples]
    metrics = {"bleu4": bleu4(predictions, refs), **rouge(predictions, refs),
               "distinct1": distinct_n(predictions, 1), "distinct2": distinct_n(predictions, 2),
               "examples": len(predictions)}
    metrics["consistency"] = consistency_report([e.source for e in examples], predictions, task, value_vocabulary)
    return metrics


def write_predictions(out_dir: str, examples: Sequence[Example], predictions: Sequence[str]) -> str:
    """``predictions.jsonl`` (id, source, title, target, prediction) and ``predictions.txt`` (one a line)."""
    rows = [json.dumps({"id": e.id, "source": e.source, "title": e.title, "target": e.target, "prediction": p},
                       ensure_ascii=False) for e, p in zip(examples, predictions)]
    path = os.path.join(out_dir, "predictions.jsonl")
    atomic_write(path, "\n".join(rows) + "\n")
    atomic_write(os.path.join(out_dir, "predictions.txt"), "\n".join(predictions) + "\n")
    return path


def mean_loss_curve(history: Sequence[dict]) -> List[List[float]]:
    return [[h["step"], round(h["loss"], 5)] for h in history if "loss" in h]


def describe(metrics: dict) -> str:
    keys = ("bleu4", "rouge1", "rouge2", "rougeL", "distinct1", "distinct2")
    return " ".join(f"{k} {metrics[k]:.2f}" for k in keys if isinstance(metrics.get(k), (int, float, np.floating)))
