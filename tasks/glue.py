"""The nine GLUE tasks (UNIMO paper section 4.2, Table 2; PaddlePaddle/Research NLP/UNIMO
``src/finetune/classifier.py``, ``regression.py``, ``src/reader/classification_reader.py``).

Registered as ``glue_cola``, ``glue_sst2``, ``glue_mrpc``, ``glue_stsb``, ``glue_qqp``, ``glue_mnli``,
``glue_qnli``, ``glue_rte``, ``glue_wnli``. Files: an official GLUE task folder (``DATA=dir`` holding
``train.tsv``, ``dev.tsv`` -- MNLI ``dev_matched.tsv`` / ``dev_mismatched.tsv`` -- and ``test.tsv``) or the original
UNIMO TSV (``text_a``, ``text_b``, ``label`` header, class indices); ``paddle_unimo.data.glue`` reads both.

Input ``[CLS] a [SEP] (b [SEP])``, the longer side cut first, bidirectional. Head (``UNIMOForSequenceClassification``):
the text pooler (ReLU) -> dropout 0.1 -> fc(num_labels), cross-entropy; STS-B is a regression (one output, mean
squared error) and the original starts it from an MNLI-fine-tuned model (``--model`` such a folder: its 3-way
head is replaced, logged). Metrics as GLUE defines them (``paddle_unimo.metrics.glue``): accuracy; F1 and
accuracy for MRPC / QQP; Matthews correlation for CoLA; Pearson and Spearman for STS-B; MNLI reports the
mismatched dev set too (``dev_mismatched``). ``predict`` on a test file writes the GLUE submission file (``SST-2.tsv``,
``MNLI-m.tsv``, ... with ``index<TAB>prediction``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from paddle_unimo.config import check_positions
from paddle_unimo.data import PassCounts
from paddle_unimo.data import glue as glue_data
from paddle_unimo.fileio import DataError
from paddle_unimo.training import TrainConfig
from paddle_unimo.typed import ConfigError, bounded

from tasks.cli import EvalSection, ModelSection


@dataclass
class GlueData:
    default_dir: str = ""
    train: str = "train.tsv"
    dev: str = "dev.tsv"
    extra_dev: List[str] = field(default_factory=list)  # more labelled dev files scored at the end (MNLI-mm)
    max_seq_len: int = bounded(128, min=4)  # [CLS] a [SEP] b [SEP]
    skip_bad: bool = False


@dataclass
class GlueConfig:
    task: str
    model: ModelSection = field(default_factory=ModelSection)
    data: GlueData = field(default_factory=GlueData)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSection = field(default_factory=EvalSection)


@dataclass
class GlueItem:
    """A GLUE example with the split of the file it came from (a submission names its split)."""
    id: str
    text_a: Any
    text_b: Any
    target: Any  # label name, STS-B score, or None (test)
    line: int
    split: str


class GlueRunner:
    def __init__(self, task: "GlueTask", model, tokenizer, cfg: GlueConfig):
        self.task, self.model, self.tokenizer, self.cfg = task, model, tokenizer, cfg
        self.passes = PassCounts()

    def report(self) -> dict:
        """The pairs cut to ``data.max_seq_len``: of the training data and of the items predicted last."""
        return {"truncated": self.passes.totals(["pair"])}

    def encode_all(self, items: Sequence[GlueItem], where: str):
        rows = [glue_data.encode_example(glue_data.GlueExample(i.id, i.text_a, i.text_b, i.target), self.task.spec,
                                         self.tokenizer, self.cfg.data.max_seq_len) for i in items]
        self.passes.record(where, {"pair": sum(bool(r.truncated) for r in rows)})
        return rows

    def make_batch(self, rows) -> Dict[str, np.ndarray]:
        return glue_data.glue_batch(rows, self.model.config.pad_token_id, self.model.config.position_start)

    def loss(self, model, batch):
        import paddle.nn.functional as F
        logits = model(batch["input_ids"], batch["position_ids"], batch["attention_mask"], batch["token_type_ids"])
        if self.task.spec.is_regression:
            return {"loss": F.mse_loss(logits.squeeze(-1), batch["labels"])}
        return {"loss": F.cross_entropy(logits, batch["labels"])}

    def predict(self, items: Sequence[GlueItem], model=None) -> List[str]:
        """Label names, or STS-B scores written with 4 decimals."""
        import paddle
        model = model or self.model
        model.eval()
        size, out = self.cfg.eval.batch_size, []
        rows = self.encode_all(items, "inputs")
        with paddle.no_grad():
            for start in range(0, len(rows), size):
                batch = self.make_batch(rows[start:start + size])
                logits = model(**{k: paddle.to_tensor(batch[k]) for k in ("input_ids", "position_ids",
                                                                          "attention_mask", "token_type_ids")}).numpy()
                if self.task.spec.is_regression:
                    out.extend(f"{v:.4f}" for v in logits[:, 0])
                else:
                    out.extend(self.task.spec.labels[i] for i in logits.argmax(axis=-1))
        return out

    def trainer(self, train_items, dev_items, out_dir: str, fingerprint=None):
        from paddle_unimo.training import Trainer
        limit = self.cfg.eval.max_examples
        dev = dev_items[:limit] if limit else dev_items
        metric = self.task.metric

        def evaluate(model):
            return {metric: self.task.score(dev, self.predict(dev, model))[metric]}
        return Trainer(self.model, self.cfg.train, self.encode_all(train_items, "training data"), self.make_batch,
                       self.loss, out_dir, evaluate=evaluate if dev else None, metric=metric, greater_is_better=True,
                       save_extra=self.tokenizer.save_pretrained, count=lambda batch: len(batch["input_ids"]),
                       unit="ex", fingerprint=fingerprint)


class GlueTask:
    """One registered GLUE task (see the module docstring)."""

    config_class = GlueConfig
    model_class_name = "UNIMOForSequenceClassification"
    vocabulary = "words"

    def __init__(self, glue_name: str):
        from paddle_unimo.metrics.glue import main_metric
        self.spec = glue_data.get_task(glue_name)
        self.name = f"glue_{self.spec.name}"
        self.metric = main_metric(self.spec)
        self.description = f"GLUE {self.spec.folder}"

    @property
    def model_class(self):
        from paddle_unimo.modeling import ARCHITECTURES
        return ARCHITECTURES[self.model_class_name]

    def split_of(self, path: str, role: str) -> str:
        """The split a file is read as: by its official name (``test.tsv`` ...), else by its role."""
        by_name = {name: split for split, name in self.spec.files.items()}
        if os.path.basename(path) in by_name:
            return by_name[os.path.basename(path)]
        return "train" if role == "train" else ("dev_matched" if "dev_matched" in self.spec.files else "dev")

    def read(self, path: str, cfg: GlueConfig, need_target: bool = True, role: str = "dev"):
        split = self.split_of(path, role)
        try:
            examples, report = glue_data.read_glue_file(path, self.spec, split, cfg.data.skip_bad)
        except glue_data.LayoutError as error:  # a file to predict for in a test layout, not named test.tsv
            if need_target or split.startswith("test") or os.path.basename(path) in self.spec.files.values():
                raise
            split, (examples, report) = self.read_as_test(path, cfg, error)
        if need_target and split.startswith("test"):
            raise ConfigError(f"{path}: a test file has no labels; fine-tuning and evaluation need train/dev files")
        return [GlueItem(e.id, e.text_a, e.text_b, e.label, e.line, split) for e in examples], report

    def read_as_test(self, path: str, cfg: GlueConfig, error: DataError):
        """(split, read) of a file whose first line is the layout of a test split alone; else ``error``, or (MNLI's
        matched and mismatched test files share theirs) an error asking for the file's official name."""
        fits = []
        for test in (s for s in self.spec.files if s.startswith("test")):
            try:
                fits.append((test, glue_data.read_glue_file(path, self.spec, test, cfg.data.skip_bad)))
            except glue_data.LayoutError:
                continue
        if not fits:
            raise error
        width = {t: len((self.spec.layouts.get(t) or self.spec.test).header or ()) for t, _ in fits}
        fits = [f for f in fits if width[f[0]] == max(width.values())]  # a header may hold more columns than used
        if len(fits) > 1:
            raise DataError(f"{path}: the layout of {self.spec.folder}'s test files "
                            f"{', '.join(self.spec.files[t] for t, _ in fits)}; its submission depends on which: "
                            "name it so")
        return fits[0]

    def pipeline_example(self, record, index: int, cfg: GlueConfig) -> GlueItem:
        """The item of ``tasks.pipeline``'s input ``index``: a text (a one-sentence task: CoLA, SST-2), a pair of
        texts (the others: a 2-item list or tuple), or a mapping of ``text_a`` (and ``text_b``) -- the original
        UNIMO TSV's names -- or of the GLUE file's own columns (``sentence``; ``question1``/``question2`` for QQP,
        ``#1 String``/``#2 String`` for MRPC); a bad one is a ``DataError`` naming the input."""
        where, layout = f"input {index}", self.spec.test
        count = 1 if layout.text_b is None else 2
        if isinstance(record, dict):
            names = ("text_a", "text_b") if "text_a" in record else (layout.text_a, layout.text_b)
            missing = [n for n in names[:count] if n not in record]
            if missing:
                raise DataError(f"{where}: missing field {missing[0]!r} (has {sorted(record)})")
            texts = [record[n] for n in names[:count]]
        else:
            texts = [record] if isinstance(record, str) else record
            if not isinstance(texts, (list, tuple)) or len(texts) != count:
                shape = "a text" if count == 1 else \
                    "a pair of texts (text_a, text_b): in Python a tuple (a list is a batch of records)"
                got = f"a {type(record).__name__} of {len(record)}" if isinstance(record, (list, tuple)) else \
                    type(record).__name__
                raise DataError(f"{where}: {self.name} reads {shape} or a mapping of text_a"
                                f"{'' if count == 1 else ' and text_b'}, got {got}")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: expected a non-empty text, got {text!r}")
        return GlueItem(str(index), texts[0], texts[1] if count == 2 else None, None, index, "input")

    @staticmethod
    def texts(items: Sequence[GlueItem], cfg=None) -> List[str]:
        return [t for i in items for t in (i.text_a, i.text_b) if t is not None]

    def model_settings(self, cfg: GlueConfig, train, from_folder: bool) -> dict:
        return {"num_labels": self.spec.num_labels}

    def bind(self, model, tokenizer, cfg: GlueConfig) -> GlueRunner:
        return GlueRunner(self, model, tokenizer, cfg)

    def load_model(self, folder: str, runtime: str | None = None):
        from tasks.cli import load_model_or_export
        return load_model_or_export(folder, self.model_class, runtime)

    def check(self, cfg: GlueConfig, model_config, where: str) -> None:
        if not model_config.has_regions:
            raise ConfigError(f"{where}: the GLUE head reads the English UNIMO's text pooler, which this model "
                              "lacks (image_embedding_size 0)")
        check_positions(model_config, where, {"data.max_seq_len": (cfg.data.max_seq_len, cfg.data.max_seq_len)})

    @staticmethod
    def prediction_row(item: GlueItem, prediction: str) -> dict:
        return {"id": item.id, "line": item.line, "text_a": item.text_a, "text_b": item.text_b,
                "target": item.target, "prediction": prediction}

    def score(self, items: Sequence[GlueItem], predictions: Sequence[str], train_examples=()) -> dict:
        from paddle_unimo.metrics.glue import glue_metrics
        values = [float(p) for p in predictions] if self.spec.is_regression else list(predictions)
        return {**glue_metrics(self.spec, values, [i.target for i in items]), "examples": len(items)}

    def extra_dev_files(self, cfg: GlueConfig) -> List[str]:
        return list(cfg.data.extra_dev)

    def evaluate(self, path: str, references_path: str, cfg: GlueConfig) -> dict:
        from tasks.evaluation import match_predictions, read_predictions
        references, _ = self.read(references_path, cfg)
        rows = read_predictions(path)
        for where, _, prediction, _ in rows:
            self.check_prediction(prediction, where)
        items, predictions = match_predictions(rows, references, path, references_path)
        return self.score(items, predictions)

    def check_prediction(self, prediction: str, where: str) -> None:
        """A label of the task (or its index), or for STS-B a finite number; else a DataError at ``where``."""
        try:
            value = glue_data.label_id(self.spec, prediction)
        except ValueError:
            value = None
        if value is None or not np.isfinite(value):
            expected = "a finite number" if self.spec.is_regression else f"one of {list(self.spec.labels)}"
            raise DataError(f"{where}: prediction {prediction!r} is not {expected}")

    def write_outputs(self, out_dir: str, items: Sequence[GlueItem], predictions: Sequence[str]) -> Optional[str]:
        """The GLUE submission file when the items come from a test file."""
        if not items or not items[0].split.startswith("test"):
            return None
        return glue_data.write_submission(out_dir, self.spec, [i.id for i in items], list(predictions), items[0].split)


TASKS = [GlueTask(name) for name in glue_data.GLUE_TASKS]
