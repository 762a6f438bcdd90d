"""SNLI-VE visual entailment (UNIMO paper section 4.1; PaddlePaddle/Research NLP/UNIMO
``src/finetune/visual_entailment.py``): does the image (the premise) entail, contradict or leave open the text?

Input ``[regions; [CLS] hypothesis [SEP]]``, bidirectional. Head (``UNIMOForVisualEntailment``): (pooled text +
pooled image) -> fc 2048 -> dropout -> fc 3, cross-entropy; the original trains it with adversarial
perturbation (``train_adv``: 4 steps, lr 0.05, max norm 0.4, init 0.4, KL weight 1). Labels are numbered
entailment 0, neutral 1, contradiction 2. Metric: accuracy (0-100).

Files: SNLI-VE JSON lines (``snli_ve_{train,dev,test}.jsonl``: ``Flickr30K_ID``, ``sentence2``, ``gold_label``,
``pairID``); images are ``<Flickr30K_ID>.jpg`` in the region store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np

from paddle_unimo.data.vl_annotations import SNLI_VE_LABELS, read_snli_ve
from paddle_unimo.training import TrainConfig
from paddle_unimo.training.adversarial import AdversarialConfig

from tasks.cli import EvalSection, ModelSection
from tasks.vision_language import PairRunner, VLData, VLExample, VLTask


@dataclass
class VEConfig:
    task: str
    model: ModelSection = field(default_factory=ModelSection)
    data: VLData = field(default_factory=VLData)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_adv: AdversarialConfig = field(default_factory=AdversarialConfig)
    eval: EvalSection = field(default_factory=EvalSection)


class VERunner(PairRunner):
    labels = SNLI_VE_LABELS

    def target(self, example: VLExample):
        return np.int64(SNLI_VE_LABELS.index(example.target))

    def target_loss(self, logits, targets):
        import paddle.nn.functional as F
        return F.cross_entropy(logits, targets)


class VETask(VLTask):
    name = "snli_ve"
    description = "visual entailment: [regions; hypothesis] -> entailment / neutral / contradiction"
    metric = "accuracy"
    config_class = VEConfig
    model_class_name = "UNIMOForVisualEntailment"
    pipeline_text = "hypothesis"

    def read_file(self, path: str, cfg: VEConfig, need_target: bool, role: str) -> List[VLExample]:
        return self.read_lines(path, cfg, need_target, role)[0]

    def read_lines(self, path: str, cfg: VEConfig, need_target: bool, role: str):
        """A JSON-lines file: its bad lines skipped with ``data.skip_bad`` (listed in the report)."""
        pairs, report = read_snli_ve(path, cfg.data.skip_bad)
        return [VLExample(p.id, p.image, p.hypothesis, p.label, line=p.line) for p in pairs], report

    def model_settings(self, cfg, train, from_folder: bool) -> dict:
        return {**super().model_settings(cfg, train, from_folder), "num_labels": len(SNLI_VE_LABELS)}

    def bind(self, model, tokenizer, cfg: VEConfig) -> VERunner:
        return VERunner(self, model, tokenizer, cfg)

    def score(self, examples: Sequence[VLExample], predictions: Sequence[str], train_examples=()) -> dict:
        correct = sum(p == e.target for e, p in zip(examples, predictions))
        return {"accuracy": 100.0 * correct / len(examples), "examples": len(examples)}


TASK = VETask()
