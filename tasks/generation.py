"""The generation task adapter: one class serving every seq2seq task (the 千言 tasks today).

A task module (``tasks/dureader_qg.py`` ...) makes one ``GenerationTask``: which JSON fields are the source,
the optional title and the target, and which extra metrics apply. The adapter declares the rest:

* config: ``GenerationConfig`` (typed sections ``model``, ``data``, ``train``, ``decode``, ``eval``);
* reader: ``paddle_unimo.data.seq2seq.read_examples`` (JSON lines, or the LCSTS TSV ``summary<TAB>content``);
* head and loss: the tied LM head, label-smoothed next-token cross-entropy on the target positions;
* metric: BLEU-4 (0-100, the 千言 baselines' metric; chooses the best checkpoint), ROUGE, distinct-n and the
  consistency report of ``paddle_unimo.metrics``;
* decoding: ``paddle_unimo.generation.generate`` with the ``decode`` section; ``predict --model`` takes a
  checkpoint folder (``OUT/best``) or an export folder (``make export``'s ``OUT/inference``, decoded by its
  programs as a deployment would: ``tasks.cli.load_generator``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from paddle_unimo.config import check_positions
from paddle_unimo.data.seq2seq import (Example, Fields, Seq2SeqEncoder, decoding_batch, postprocess, prompted,
                                       read_examples, record_example, template_fields, training_batch)
from paddle_unimo.fileio import DataError
from paddle_unimo.generation import DecodeConfig
from paddle_unimo.training import TrainConfig
from paddle_unimo.typed import ConfigError, bounded

from tasks.cli import EvalSection, ModelSection, load_generator

logger = logging.getLogger(__name__)


@dataclass
class Seq2SeqData:
    default_dir: str = ""  # the bundled demo data, relative to the repository; --data replaces it
    train: str = "train.json"
    dev: str = "dev.json"
    max_seq_len: int = bounded(360, min=4)  # source + title + target tokens with their special tokens
    max_target_len: int = bounded(30, min=2)  # target tokens with its [CLS] and [MASK]
    max_title_len: int = bounded(0, min=0)  # title tokens with its [SEP]
    skip_bad: bool = False
    # a prompt (paddle_unimo.data.seq2seq): the source as "答案：{title}[SEP]上下文：{source}", "" for none; a prefix of
    # every target, taken off the predictions (its tokens count in max_target_len and decode.max_length)
    source_template: str = ""
    target_prefix: str = ""

    def validate(self, where: str) -> None:
        if self.max_seq_len <= self.max_target_len + self.max_title_len + 2:
            raise ConfigError(f"{where}.max_seq_len: {self.max_seq_len} leaves no room for the source after "
                              f"max_target_len {self.max_target_len} and max_title_len {self.max_title_len}")
        if self.source_template:
            try:
                template_fields(self.source_template)
            except ValueError as e:
                raise ConfigError(f"{where}.source_template: {self.source_template!r}: {e}") from None


@dataclass
class GenerationDecode(DecodeConfig):
    batch_size: int = bounded(16, min=1)  # sources decoded together

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.num_return_sequences != 1:
            raise ConfigError(f"{where}.num_return_sequences: {self.num_return_sequences}; a task writes one "
                              "prediction per example (allowed: 1; n candidates per record: "
                              "Pipeline(num_return_sequences=n), make serve CANDIDATES=n)")


@dataclass
class GenerationConfig:
    task: str
    model: ModelSection = field(default_factory=ModelSection)
    data: Seq2SeqData = field(default_factory=Seq2SeqData)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: GenerationDecode = field(default_factory=GenerationDecode)
    eval: EvalSection = field(default_factory=EvalSection)


def check_lengths(cfg: GenerationConfig, model_config, where: str) -> None:
    """The configured lengths must fit the model's position table (source and target positions each restart
    at ``position_start``)."""
    check_positions(model_config, where, {"data.max_seq_len": (cfg.data.max_seq_len, cfg.data.max_seq_len),
                                          "decode.max_length": (cfg.decode.max_length, cfg.decode.max_length + 1)})


def seq2seq_loss(model, batch, label_smoothing: float):
    from paddle_unimo.losses import label_smoothed_cross_entropy
    logits = model(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                   masked_positions=batch["masked_positions"])
    return {"loss": label_smoothed_cross_entropy(logits, batch["labels"], label_smoothing)}


@dataclass(frozen=True)
class GenerationTask:
    """A registered generation task: its fields and description; ``extra_metrics(examples, predictions,
    train_examples) -> dict`` adds task-specific scores (e.g. AdvertiseGen's attribute consistency)."""
    name: str
    fields: Fields
    description: str
    consistency_vocabulary: Optional[Callable[[Sequence[Example]], object]] = None
    config_class: type = GenerationConfig
    metric: str = "bleu4"

    model_class = None  # the LM head model (tasks.cli.build_model's default)
    vocabulary = "characters"  # the tiny preset's vocabulary from the training text

    def read(self, path: str, cfg: GenerationConfig, need_target: bool = True, role: str = "dev"):
        return read_examples(path, self.fields, need_target, cfg.data.skip_bad)

    def pipeline_example(self, record, index: int, cfg: GenerationConfig) -> Example:
        """The example of ``tasks.pipeline``'s input ``index``: a mapping of the task's fields, or for a task without
        a title the source text; a bad one is a ``DataError`` naming the input."""
        if isinstance(record, str):
            if self.fields.title:
                raise DataError(f"input {index}: {self.name} reads a title as well: give "
                                f"{{'{self.fields.source}': ..., '{self.fields.title}': ...}}")
            record = {self.fields.source: record}
        if not isinstance(record, dict):
            raise DataError(f"input {index}: expected a text or a mapping, got {type(record).__name__}")
        return record_example(f"input {index}", record, self.fields, need_target=False, line_no=index)

    @staticmethod
    def model_settings(cfg: GenerationConfig, train, from_folder: bool) -> dict:
        return {}

    @staticmethod
    def write_outputs(out_dir: str, examples, predictions) -> None:
        """Nothing besides predictions.jsonl/.txt (the vision-language tasks add their benchmark's files)."""

    def evaluate(self, path: str, references_path: str, cfg: GenerationConfig) -> dict:
        """The metrics of a predictions file (``predict``'s predictions.jsonl) against a reference file."""
        from tasks.evaluation import match_predictions, read_predictions
        references, _ = self.read(references_path, cfg)
        examples, predictions = match_predictions(read_predictions(path), references, path, references_path)
        return self.score(examples, predictions)

    @staticmethod
    def texts(examples: Sequence[Example], cfg: Optional[GenerationConfig] = None) -> List[str]:
        """The texts a character vocabulary is built from: what is encoded, with ``cfg``'s prompt."""
        prompt = (cfg.data.source_template, cfg.data.target_prefix) if cfg else ()
        return [t for e in examples for t in prompted(e, *prompt) if t]

    def bind(self, model, tokenizer, cfg: GenerationConfig) -> "GenerationRunner":
        return GenerationRunner(self, model, tokenizer, cfg)

    @staticmethod
    def load_model(folder: str, runtime: str | None = None):
        return load_generator(folder, runtime)

    def check(self, cfg: GenerationConfig, model_config, where: str) -> None:
        check_lengths(cfg, model_config, where)
        template = cfg.data.source_template
        if template and "title" in template_fields(template) and not self.fields.title:
            raise ConfigError(f"{where}: data.source_template: {template!r} names {{title}}, which {self.name} has "
                              f"none of (its fields: {self.fields.source} -> {self.fields.target})")

    @staticmethod
    def prediction_row(example: Example, prediction: str) -> dict:
        """The row of ``predictions.jsonl`` for one example."""
        return {"id": example.id, "line": example.line, "source": example.source, "title": example.title,
                "target": example.target, "prediction": prediction}

    def score(self, examples: Sequence[Example], predictions: Sequence[str], train_examples=()) -> dict:
        """BLEU-4, ROUGE, distinct-n against the examples' targets, and the consistency report."""
        from paddle_unimo.metrics import bleu4, consistency_report, distinct_n, rouge
        refs = [e.target for e in examples]
        metrics = {"bleu4": bleu4(predictions, refs), **rouge(predictions, refs),
                   "distinct1": distinct_n(predictions, 1), "distinct2": distinct_n(predictions, 2),
                   "examples": len(predictions)}
        vocabulary = self.consistency_vocabulary(train_examples) if self.consistency_vocabulary and train_examples \
            else None
        metrics["consistency"] = consistency_report([e.source for e in examples], predictions, self.name, vocabulary)
        return metrics


def decoder(model):
    """(the model ``generate`` switches to eval mode, None for an export; the stepper that decodes) for
    ``tasks.cli.load_generator``'s model or stepper."""
    from paddle_unimo.export import InferenceStepper
    from paddle_unimo.generation import batch_stepper
    if isinstance(model, InferenceStepper):  # OnnxStepper too
        return None, model
    return model, batch_stepper(model)


class GenerationRunner:
    """A task bound to a model, its tokenizer and the typed config: batches, loss, decoding, the trainer."""

    def __init__(self, task: GenerationTask, model, tokenizer, cfg: GenerationConfig):
        self.task, self.model, self.tokenizer, self.cfg = task, model, tokenizer, cfg
        data = cfg.data
        self.encoder = Seq2SeqEncoder(tokenizer, data.max_seq_len, data.max_target_len,
                                      data.max_title_len if task.fields.title else 0, data.source_template,
                                      data.target_prefix)
        prefix = len(self.encoder.prefix_ids)
        limits = {"data.max_target_len": (data.max_target_len, data.max_target_len - 2),  # with [CLS] and [MASK]
                  "decode.max_length": (cfg.decode.max_length, cfg.decode.max_length)}
        for key, (value, room) in limits.items():
            if prefix and prefix >= room:
                raise ConfigError(f"data.target_prefix: {data.target_prefix!r} is {prefix} tokens, which leave no room "
                                  f"for the target in {key} {value}")
        self._decoding = None  # decoder(self.model), made once for predictions with the bound model

    def report(self) -> dict:
        """What metrics.json reports of the run's inputs: the truncations of the training data and of the inputs
        decoded last (``Seq2SeqEncoder.counted``)."""
        return {"truncated": self.encoder.counted()}

    def make_batch(self, encoded):
        return training_batch(encoded, self.model.config.pad_token_id, self.model.config.position_start)

    def predict(self, examples: Sequence[Example], model=None) -> List[str]:
        import paddle
        from paddle_unimo.generation import generate
        if model is None:  # the bound model: one stepper for every call (its weights are packed once)
            self._decoding = self._decoding or decoder(self.model)
        model, stepper = self._decoding if model is None else decoder(model)
        settings = {k: v for k, v in vars(self.cfg.decode).items() if k != "batch_size"}
        size = self.cfg.decode.batch_size
        encoded = self.encoder.encode_all(examples, with_target=False, where="decoding inputs")
        outputs = []
        for start in range(0, len(encoded), size):
            batch = decoding_batch(encoded[start:start + size], stepper.config.pad_token_id,
                                   stepper.config.position_start)
            ids, _ = generate(model, **{k: paddle.to_tensor(v) for k, v in batch.items()}, stepper=stepper, **settings)
            outputs.extend(postprocess(self.tokenizer, row, self.encoder.prefix_ids) for row in ids.numpy())
        return outputs

    def trainer(self, train_examples, dev_examples, out_dir: str, fingerprint: Optional[dict] = None):
        from paddle_unimo.metrics import bleu4
        from paddle_unimo.training import Trainer
        encoded = self.encoder.encode_all(train_examples, where="training data")
        limit = self.cfg.eval.max_examples
        dev = dev_examples[:limit] if limit else dev_examples
        smoothing = self.cfg.train.label_smoothing

        def evaluate(model):
            model.eval()
            return {"bleu4": bleu4(self.predict(dev, model), [e.target for e in dev])}

        return Trainer(self.model, self.cfg.train, encoded, self.make_batch,
                       lambda model, batch: seq2seq_loss(model, batch, smoothing), out_dir,
                       evaluate=evaluate if dev else None, metric=self.task.metric, greater_is_better=True,
                       save_extra=self.tokenizer.save_pretrained, count=lambda batch: len(batch["labels"]),
                       fingerprint=fingerprint)
