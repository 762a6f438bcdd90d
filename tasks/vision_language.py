"""What the vision-language tasks share (UNIMO paper section 4.1): annotations joined to a region store, the
text encoding, the ``[regions; text]`` batches, and the task/runner skeleton every VL task fills in.

Data: the annotation files named by the task's YAML (``data.train``, ``data.dev``, read from ``--data DIR``) and
a region store (``make extract-regions`` / ``make convert-regions``; ``--regions DIR`` or ``data.regions``,
relative to the data folder) keyed by image file name (``COCO_val2014_000000391895.jpg``, ``2248275918.jpg``; see
``Regions.key`` for the names it also accepts).
Every annotated image must have regions: otherwise the run stops with the count and the first names, or with
``--skip-bad`` leaves those examples out, each listed in ``OUT/skipped.jsonl``.

Text is ``[CLS] text [SEP]`` cut to ``data.max_text_len`` tokens (the original readers' wrapping); positions
start at the model's ``position_start`` (2 for the English UNIMO, "pos start from 2") and restart for each
text block. Regions are ``[global, box_1 .. box_n]`` cut to ``data.max_img_len`` (``regions.collate_regions``).
Without ``--model`` the tiny preset is built with a vocabulary of the training text's words and characters
and with the store's feature size.
"""
from __future__ import annotations

import abc
import functools
import logging
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from paddle_unimo import masks
from paddle_unimo.config import check_positions
from paddle_unimo.data.object_tags import image_number
from paddle_unimo.data.seq2seq import ReadReport
from paddle_unimo.fileio import DataError
from paddle_unimo.typed import ConfigError, bounded

logger = logging.getLogger(__name__)


@dataclass
class VLExample:
    """One annotated example: ``text`` is the caption, hypothesis or question; ``target`` the caption (captioning,
    training) or the image's reference captions (captioning, evaluation), the caption's image (retrieval), the
    label name (SNLI-VE) or the annotators' answers (VQA), None when unknown; ``line`` its 1-based place in its
    file (an entry of a JSON list counts as a line)."""
    id: str
    image: str
    text: str
    target: Any = None
    line: int = 0


@dataclass
class VLData:
    default_dir: str = ""  # the bundled demo data, relative to the repository; --data replaces it
    regions: str = "regions"  # the region store folder, relative to the data folder; --regions replaces it
    train: str = ""
    dev: str = ""
    train_splits: List[str] = field(default_factory=lambda: ["train", "restval"])  # Karpathy split files
    dev_splits: List[str] = field(default_factory=lambda: ["val"])
    max_img_len: int = bounded(101, min=1)  # regions per image, the global feature included
    max_text_len: int = bounded(50, min=3)  # text tokens with [CLS] and [SEP]
    skip_bad: bool = False

    PATHS = ("regions",)  # keys naming a file or folder, resolved against the data folder


# ---- regions ---------------------------------------------------------------------------------------------

class Regions:
    """The region store of a run, with a bounded cache of records (an epoch revisits every image)."""

    def __init__(self, path: str, cache_size: int = 4096):
        from paddle_unimo.data.regions import open_store
        self.path, self.store, self.cache_size = path, open_store(path), cache_size
        self.cache: "OrderedDict[str, object]" = OrderedDict()
        self.by_number: Optional[Dict[str, str]] = None
        self.matched_by_number = False

    def key(self, image: str, by_number: bool = True) -> Optional[str]:
        """The store's key for an annotated image: the file name itself, else the same name without its
        extension, else (``by_number``) the one key with the same image number (``COCO_val2014_000000391895.jpg``
        finds ``391895.jpg``; the first such match is logged, as any name ending in that number matches); None
        when there is none."""
        if image in self.store:
            return image
        stem = os.path.splitext(image)[0]
        if stem in self.store:
            return stem
        if not by_number:
            return None
        if self.by_number is None:
            numbers = Counter(image_number(k) for k in self.store.ids())
            self.by_number = {image_number(k): k for k in self.store.ids() if numbers[image_number(k)] == 1}
        key = self.by_number.get(image_number(image)) if image_number(image) else None
        if key is not None and not self.matched_by_number:
            self.matched_by_number = True
            logger.info("%s: images found by their number (first: %s -> %s)", self.path, image, key)
        return key

    def __contains__(self, image: str) -> bool:
        return self.key(image) is not None

    def get(self, image: str):
        record = self.cache.pop(image, None) or self.store.get(self.key(image))
        self.cache[image] = record
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return record

    def keep_present(self, examples: Sequence[VLExample], report: ReadReport, skip_bad: bool) -> List[VLExample]:
        """The examples whose image has regions; the others are an error, or skipped into ``report``."""
        missing = sorted({e.image for e in examples if e.image not in self})
        if not missing:
            return list(examples)
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        if not skip_bad:
            raise DataError(f"{report.path}: {len(missing)} of {len({e.image for e in examples})} annotated images "
                            f"have no regions in {self.path} ({shown}); extract them (make extract-regions) or "
                            f"run with --skip-bad to leave those examples out")
        absent = set(missing)
        for e in examples:
            if e.image in absent:
                report.skipped.append({"file": report.path, "line": e.line, "reason": f"no regions for {e.image}"})
        logger.warning("%s: %d images have no regions in %s (%s); their examples are skipped", report.path,
                       len(missing), self.path, shown)
        kept = [e for e in examples if e.image not in absent]
        report.read = len(kept)
        return kept

    def batch(self, images: Sequence[str], max_img_len: int) -> Dict[str, np.ndarray]:
        from paddle_unimo.data.regions import collate_regions
        return collate_regions([self.get(i) for i in images], max_img_len)


class GivenRegions(Regions):
    """A run's region store with the records of images given in code before it (``tasks.pipeline``'s image files,
    through its detector): ``given`` maps an image name to its ``RegionRecord``."""

    def __init__(self, regions: Regions):  # shares the store, its cache and its key table
        self.__dict__.update(regions.__dict__)
        self.given: Dict[str, object] = {}

    def key(self, image: str, by_number: bool = True) -> Optional[str]:
        return image if image in self.given else super().key(image, by_number)

    def get(self, image: str):
        return self.given[image] if image in self.given else super().get(image)


@functools.lru_cache(maxsize=4)
def open_regions(path: str, version: int) -> Regions:
    """One ``Regions`` per store folder and index version (a store that grew is opened again)."""
    return Regions(path)


def report_for(path: str, examples: Sequence[VLExample]) -> ReadReport:
    return ReadReport(path, read=len(examples), lines=max([e.line for e in examples], default=0))


# ---- text --------------------------------------------------------------------------------------------------

class TextEncoder:
    """``[CLS] text [SEP]`` token ids cut to ``max_len`` (the [SEP] kept); counts the distinct texts it had to cut
    (a dev caption encoded again at every evaluation counts once)."""

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len
        self.truncated: Counter = Counter()
        self._cut = set()

    def __call__(self, text: str, what: str = "text") -> List[int]:
        ids = self.tokenizer.encode(text)
        if len(ids) > self.max_len - 2:
            if (what, text) not in self._cut:
                self._cut.add((what, text))
                self.truncated[what] += 1
            ids = ids[:self.max_len - 2]
        return [self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id]


def pair_batch(text_ids: Sequence[Sequence[int]], regions: Dict[str, np.ndarray], pad_id: int,
               position_start: int) -> Dict[str, np.ndarray]:
    """Model inputs of ``[regions; text]`` with full bidirectional attention among valid regions and real tokens:
    the captioning rule (``masks.captioning_inputs``) with the text as context and no caption.

      input_ids, token_type_ids, position_ids (B, L) int64; attention_mask (B, R + L, R + L) bool
      region_feats (B, R, D) float32, region_locs (B, R, 5) float32, region_valid (B, R) bool
    """
    batch = masks.captioning_inputs(text_ids, [[] for _ in text_ids], regions["region_valid"], pad_id,
                                    position_start)
    batch.pop("valid")
    batch.update({k: regions[k] for k in ("region_feats", "region_locs", "region_valid")})
    return batch


def model_inputs(batch: Dict[str, Any]) -> Dict[str, Any]:
    """The keyword arguments of the understanding models' ``forward`` in a batch (tensors or arrays)."""
    keys = ("input_ids", "position_ids", "attention_mask", "region_feats", "region_locs", "region_valid",
            "token_type_ids")
    return {k: batch[k] for k in keys}


def to_tensors(batch: Dict[str, Any]) -> Dict[str, Any]:
    import paddle
    return {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


# ---- the task skeleton -------------------------------------------------------------------------------------

class VLTask(abc.ABC):
    """A registered vision-language task: subclasses set ``name``, ``config_class`` (the typed YAML schema),
    ``model_class_name``, ``metric``, ``description`` and implement ``read_file``, ``bind`` and ``score``."""

    name = ""
    description = ""
    metric = "accuracy"
    config_class: type = type(None)
    model_class_name = "UNIMOLMHeadModel"
    vocabulary = "words"  # the tiny preset's vocabulary: the training text's words and characters

    @property
    def model_class(self):
        from paddle_unimo.modeling import ARCHITECTURES
        return ARCHITECTURES[self.model_class_name]

    def read(self, path: str, cfg, need_target: bool = True, role: str = "dev"):
        """``(examples, report)`` of an annotation file whose images all have regions (or, with
        ``data.skip_bad``, those examples left out and listed in the report). ``role`` "train" or "dev" picks the
        splits of a Karpathy split file."""
        examples, report = self.read_lines(path, cfg, need_target, role)
        if not examples:
            raise DataError(f"{path}: no examples"
                            + (f" of the splits {self.splits(cfg, role)}" if path.endswith(".json") else ""))
        return self.regions(cfg).keep_present(examples, report, cfg.data.skip_bad), report

    def read_lines(self, path: str, cfg, need_target: bool, role: str):
        """``(examples, ReadReport)`` of an annotation file (a JSON-lines reader skips bad lines with
        ``data.skip_bad``; a whole JSON file is read or refused as one)."""
        examples = self.read_file(path, cfg, need_target, role)
        return examples, report_for(path, examples)

    @abc.abstractmethod
    def read_file(self, path: str, cfg, need_target: bool, role: str) -> List[VLExample]:
        """The examples of an annotation file (before the region check)."""

    @staticmethod
    def splits(cfg, role: str) -> List[str]:
        """The Karpathy splits a role reads."""
        return cfg.data.train_splits if role == "train" else cfg.data.dev_splits

    @staticmethod
    def regions(cfg) -> Regions:
        from paddle_unimo.data.regions import INDEX
        index = os.path.join(cfg.data.regions, INDEX)
        return open_regions(cfg.data.regions, os.stat(index).st_mtime_ns if os.path.exists(index) else 0)

    @staticmethod
    def texts(examples: Sequence[VLExample], cfg=None) -> List[str]:
        return [e.text for e in examples if e.text]

    pipeline_text: Optional[str] = None  # the pipeline record's text field (a question...); None: the image alone

    def pipeline_example(self, record, index: int, cfg) -> VLExample:
        """The example of ``tasks.pipeline``'s input ``index``: an image (a name in the region store, or an image
        file when the pipeline has a detector), or for a task that reads a text too ``{"image": ..., <text>: ...}``
        or a pair ``(image, text)`` (a tuple, or inside a batch a list); a bad one is a ``DataError`` naming it."""
        text = self.pipeline_text
        if text and isinstance(record, (tuple, list)) and len(record) == 2:
            record = {"image": record[0], text: record[1]}
        elif not text and isinstance(record, str):
            record = {"image": record}
        if not isinstance(record, dict):
            shape = f"{{'image': ..., '{text}': ...}} or a pair (image, {text})" if text else "an image name or path"
            raise DataError(f"input {index}: {self.name} reads {shape}, got {type(record).__name__}")
        for name in ("image", text) if text else ("image",):
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise DataError(f"input {index}: field '{name}' must be a non-empty string (the record has "
                                f"{sorted(record)})")
        return VLExample(str(index), record["image"], record[text] if text else "", line=index)

    @staticmethod
    def pipeline_images(example) -> List[str]:
        """The images of a pipeline example, for which the pipeline finds regions."""
        return [example.image]

    def model_settings(self, cfg, train: Sequence[VLExample], from_folder: bool) -> Dict[str, Any]:
        """UNIMOConfig values the task needs (e.g. ``num_labels``); without a model folder also the store's
        region feature size."""
        return {} if from_folder else {"image_embedding_size": self.regions(cfg).store.feature_dim}

    def load_model(self, folder: str, runtime: str | None = None):
        from tasks.cli import load_model_or_export
        return load_model_or_export(folder, self.model_class, runtime)

    def check(self, cfg, model_config, where: str) -> None:
        if not model_config.has_regions:
            raise ConfigError(f"{where}: the model has no region embeddings (image_embedding_size 0); "
                              f"{self.name} needs an image-text model")
        dim = self.regions(cfg).store.feature_dim
        if dim is not None and dim != model_config.image_embedding_size:
            raise ConfigError(f"{where}: the region store {cfg.data.regions} holds {dim}-d features but the model "
                              f"takes {model_config.image_embedding_size}-d ones")
        check_positions(model_config, where, {"data.max_text_len": (cfg.data.max_text_len, cfg.data.max_text_len)})

    @staticmethod
    def prediction_row(example: VLExample, prediction) -> dict:
        return {"id": example.id, "line": example.line, "image": example.image, "text": example.text,
                "target": example.target, "prediction": prediction}

    def save_extra(self, runner, folder: str) -> None:
        runner.tokenizer.save_pretrained(folder)

    def evaluate(self, path: str, references_path: str, cfg) -> dict:
        """The metrics of ``predict``'s predictions.jsonl against an annotation file, matched by id."""
        from tasks.evaluation import match_predictions, read_predictions
        references = self.read_file(references_path, cfg, True, "dev")
        examples, predictions = match_predictions(read_predictions(path), references, path, references_path)
        return self.score(examples, predictions)

    @staticmethod
    def write_outputs(out_dir: str, examples, predictions) -> None:
        """Files besides predictions.jsonl in the benchmark's own format (captioning, VQA); none by default."""


class VLRunner:
    """A VL task bound to a model, its tokenizer and config; subclasses add the batches, loss and prediction."""

    def __init__(self, task: VLTask, model, tokenizer, cfg):
        self.task, self.model, self.tokenizer, self.cfg = task, model, tokenizer, cfg
        self.regions = task.regions(cfg)
        self.encode = TextEncoder(tokenizer, cfg.data.max_text_len)

    def report(self) -> dict:
        return {"truncated": dict(self.encode.truncated)}

    def pair_batch(self, texts: Sequence[Sequence[int]], images: Sequence[str]) -> Dict[str, np.ndarray]:
        config = self.model.config
        return pair_batch(texts, self.regions.batch(images, self.cfg.data.max_img_len), config.pad_token_id,
                          config.position_start)

    def make_trainer(self, encoded, make_batch, loss_fn, out_dir: str, evaluate, fingerprint: Optional[dict],
                     count=lambda batch: len(batch["input_ids"]), unit: str = "ex"):
        from paddle_unimo.training import Trainer
        return Trainer(self.model, self.cfg.train, encoded, make_batch, loss_fn, out_dir, evaluate=evaluate,
                       metric=self.task.metric, greater_is_better=True,
                       save_extra=lambda folder: self.task.save_extra(self, folder), count=count,
                       fingerprint=fingerprint, unit=unit)

    def dev_subset(self, dev: Sequence[VLExample]) -> Sequence[VLExample]:
        limit = self.cfg.eval.max_examples
        return dev[:limit] if limit else dev


class PairRunner(VLRunner, abc.ABC):
    """An understanding task over ``[regions; text]`` with a head giving logits: batches, the loss (with the
    optional adversarial perturbation of ``train_adv``), prediction by the arg-max label. Subclasses give
    ``target(example)`` (a label id, or a soft target row), ``target_loss(logits, targets)`` and ``labels``
    (label id -> prediction)."""

    labels: Sequence[str] = ()

    @abc.abstractmethod
    def target(self, example: VLExample):
        """A training target: a label id, or a soft target row."""

    @abc.abstractmethod
    def target_loss(self, logits, targets):
        """The loss of a batch's logits against its stacked targets."""

    def make_batch(self, items) -> Dict[str, np.ndarray]:
        """``pair_batch`` of the items' texts and images plus ``targets`` (B,) int64 or (B, A) float32."""
        batch = self.pair_batch([i[1] for i in items], [i[0] for i in items])
        batch["targets"] = np.stack([i[2] for i in items])
        return batch

    def encoded(self, examples: Sequence[VLExample]):
        return [(e.image, self.encode(e.text), self.target(e)) for e in examples]

    def loss(self, model, batch):
        from paddle_unimo.training.adversarial import adversarial_loss
        inputs = model_inputs(batch)

        def forward(text_delta, region_feats):
            return model(**{**inputs, "region_feats": region_feats}, text_delta=text_delta)
        adv = getattr(self.cfg, "train_adv", None)
        if adv is None:
            return {"loss": self.target_loss(forward(None, batch["region_feats"]), batch["targets"])}
        loss, _ = adversarial_loss(adv, forward, lambda logits: self.target_loss(logits, batch["targets"]),
                                   batch["input_ids"] != self.model.config.pad_token_id, batch["region_feats"],
                                   batch["region_valid"], self.model.config.hidden_size)
        return {"loss": loss}

    def logits(self, examples: Sequence[VLExample], model=None) -> np.ndarray:
        import paddle
        model = model or self.model
        model.eval()
        size, out = self.cfg.eval.batch_size, []
        with paddle.no_grad():
            for start in range(0, len(examples), size):
                chunk = examples[start:start + size]
                batch = to_tensors(self.pair_batch([self.encode(e.text) for e in chunk], [e.image for e in chunk]))
                out.append(model(**model_inputs(batch)).numpy())
        return np.concatenate(out)

    def predict(self, examples: Sequence[VLExample], model=None) -> List[str]:
        return [self.labels[i] for i in self.logits(examples, model).argmax(axis=-1)]

    def trainer(self, train_examples, dev_examples, out_dir: str, fingerprint=None):
        dev = self.dev_subset(dev_examples)

        def evaluate(model):
            return {self.task.metric: self.task.score(dev, self.predict(dev, model))[self.task.metric]}
        return self.make_trainer(self.encoded(train_examples), self.make_batch, self.loss, out_dir,
                                 evaluate if dev else None, fingerprint)
