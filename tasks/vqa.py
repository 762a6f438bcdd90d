"""VQA v2 (UNIMO paper section 4.1; the original release lists VQA as to do, so this follows UNITER's
``model/vqa.py`` and ``data/vqa.py``): answer classification over an answer vocabulary.

Input ``[regions; [CLS] question [SEP]]``, bidirectional. Head (``UNIMOForVQA``): Linear(H, 2H) -> GELU ->
LayerNorm -> Linear(2H, A) over pooled text + pooled image; loss: binary cross-entropy against soft scores
(0 / 0.3 / 0.6 / 0.9 / 1 for 0 / 1 / 2 / 3 / >= 4 matching annotators), averaged and multiplied by A as UNITER
does. The answer vocabulary is ``data.answer_vocabulary`` (UNITER's ``ans2label.json``: 3,129 answers) or, when
empty, the training annotations' answers given at least ``data.min_answer_count`` times; it is saved with the
model (``ans2label.json``). Metric: the official VQA accuracy (``paddle_unimo.metrics.vqa``), 0-100.

Files: the official ``v2_OpenEnded_mscoco_<subtype>_questions.json`` (``data.train`` / ``data.dev``) and
``v2_mscoco_<subtype>_annotations.json`` (``data.train_annotations`` / ``data.dev_annotations``); images are
named as COCO names them. ``predict`` also writes ``vqa_submission.json``, the official results format
``[{"question_id", "answer"}]``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from paddle_unimo.fileio import DataError, write_json
from paddle_unimo.training import TrainConfig
from paddle_unimo.typed import bounded

from tasks.cli import EvalSection, ModelSection
from tasks.vision_language import PairRunner, VLData, VLExample, VLTask

VOCABULARY = "ans2label.json"
SUBMISSION = "vqa_submission.json"


@dataclass
class VqaData(VLData):
    train_annotations: str = ""
    dev_annotations: str = ""
    answer_vocabulary: str = ""  # ans2label.json; empty: built from the training annotations
    min_answer_count: int = bounded(9, min=1)
    max_text_len: int = bounded(60, min=3)  # UNITER's question length

    PATHS = ("regions", "train_annotations", "dev_annotations", "answer_vocabulary")


@dataclass
class VqaConfig:
    task: str
    model: ModelSection = field(default_factory=ModelSection)
    data: VqaData = field(default_factory=VqaData)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSection = field(default_factory=EvalSection)


def answer_vocabulary(cfg: VqaConfig) -> Dict[str, int]:
    """The configured vocabulary file, or the one built from the training annotations."""
    from paddle_unimo.metrics.vqa import build_answer_vocabulary, load_annotations, load_answer_vocabulary
    if cfg.data.answer_vocabulary:
        return load_answer_vocabulary(cfg.data.answer_vocabulary)
    vocabulary = build_answer_vocabulary(load_annotations(cfg.data.train_annotations).values(),
                                         cfg.data.min_answer_count)
    if not vocabulary:
        raise DataError(f"{cfg.data.train_annotations}: no answer is given {cfg.data.min_answer_count} times "
                        "(lower data.min_answer_count or name data.answer_vocabulary)")
    return vocabulary


def read_submission(path: str):
    """``(where, question id, answer, {})`` of a results file ``[{"question_id", "answer"}, ...]``."""
    from paddle_unimo.fileio import read_json
    data = read_json(path, "VQA results file")
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of {{question_id, answer}}")
    rows = []
    for i, row in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(row, dict) or not isinstance(row.get("answer"), str) or "question_id" not in row:
            raise DataError(f"{where}: expected {{\"question_id\": int, \"answer\": str}}, got {row!r}"[:300])
        rows.append((where, str(row["question_id"]), row["answer"], {}))
    return rows


class VqaRunner(PairRunner):
    def __init__(self, task, model, tokenizer, cfg: VqaConfig):
        super().__init__(task, model, tokenizer, cfg)
        self.ans2label = getattr(model, "answer_vocabulary", None) or answer_vocabulary(cfg)
        if len(self.ans2label) != model.config.num_labels:
            raise DataError(f"the answer vocabulary has {len(self.ans2label)} answers but the model's VQA head "
                            f"{model.config.num_labels}")
        model.answer_vocabulary = self.ans2label
        self.labels = sorted(self.ans2label, key=self.ans2label.get)

    def target(self, example: VLExample):
        from paddle_unimo.metrics.vqa import answer_targets
        row = np.zeros(len(self.labels), np.float32)
        for label, score in answer_targets(example.target, self.ans2label).items():
            row[label] = score
        return row

    def target_loss(self, logits, targets):
        import paddle.nn.functional as F
        return F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]


class VqaTask(VLTask):
    name = "vqa"
    description = "VQA v2: [regions; question] -> one of the answer vocabulary"
    metric = "accuracy"
    config_class = VqaConfig
    model_class_name = "UNIMOForVQA"
    pipeline_text = "question"

    def read_file(self, path: str, cfg: VqaConfig, need_target: bool, role: str) -> List[VLExample]:
        from paddle_unimo.data.vl_annotations import read_vqa
        annotations = cfg.data.train_annotations if role == "train" else cfg.data.dev_annotations
        if not need_target and os.path.basename(path) != os.path.basename(cfg.data.dev):
            annotations = None  # questions of another split (e.g. test-dev) have no annotations here
        questions = read_vqa(path, annotations or None, scored=role != "train")  # training: any answer count
        return [VLExample(str(q.question_id), q.image, q.question, q.answers, line=n)
                for n, q in enumerate(questions, 1)]

    def model_settings(self, cfg: VqaConfig, train, from_folder: bool) -> dict:
        return {**super().model_settings(cfg, train, from_folder), "num_labels": len(answer_vocabulary(cfg))}

    def load_model(self, folder: str, runtime: str | None = None):
        from paddle_unimo.metrics.vqa import load_answer_vocabulary
        model = super().load_model(folder, runtime)
        path = os.path.join(folder, VOCABULARY)
        if os.path.exists(path):
            model.answer_vocabulary = load_answer_vocabulary(path)
        return model

    def bind(self, model, tokenizer, cfg: VqaConfig) -> VqaRunner:
        return VqaRunner(self, model, tokenizer, cfg)

    def save_extra(self, runner: VqaRunner, folder: str) -> None:
        super().save_extra(runner, folder)
        write_json(os.path.join(folder, VOCABULARY), runner.ans2label)

    def score(self, examples: Sequence[VLExample], predictions: Sequence[str], train_examples=()) -> dict:
        from paddle_unimo.metrics.vqa import vqa_accuracy
        result = vqa_accuracy({e.id: p for e, p in zip(examples, predictions)}, {e.id: e.target for e in examples})
        return {"accuracy": result["overall"], "examples": len(examples)}

    def evaluate(self, path: str, references_path: str, cfg: VqaConfig) -> dict:
        """predictions.jsonl, or a submission file in the official results format, against the annotations."""
        from tasks.evaluation import match_predictions, read_predictions
        references = self.read_file(references_path, cfg, True, "dev")
        rows = read_submission(path) if path.endswith(".json") else read_predictions(path)
        examples, predictions = match_predictions(rows, references, path, references_path)
        return self.score(examples, predictions)

    @staticmethod
    def write_outputs(out_dir: str, examples, predictions) -> None:
        from paddle_unimo.metrics.vqa import write_submission
        write_submission(os.path.join(out_dir, SUBMISSION), {e.id: p for e, p in zip(examples, predictions)})


TASK = VqaTask()
