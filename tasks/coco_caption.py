"""COCO image captioning (UNIMO paper section 4.1; PaddlePaddle/Research NLP/UNIMO ``src/finetune/img2txt.py``).

Input ``[regions; object tags; caption]``: regions and tags see each other and never the caption, the caption is
causal (``masks.captioning_inputs``); the caption is ``[CLS] caption [SEP]`` and decoding ends at ``[SEP]`` (the
original's ``eos_id = sep_id``). Training: label-smoothed next-token cross-entropy on the caption, optionally
with VILLA adversarial perturbation (``train_adv``). Decoding: beam 5, length penalty 0.6, 5-50 tokens in the
base config.

Files: captions in the Karpathy split file (``dataset_coco.json``; ``data.train_splits`` / ``dev_splits``), COCO
caption annotations (``captions_val2014.json``) or ``{image_id: [captions]}``; training reads one example per
caption, evaluation one per image with all its captions as references. Object tags (``data.tags``): ``none``,
``store`` (the region store's class distributions with ``data.class_names``) or ``file`` (``data.tag_file``).

Metrics: the COCO caption evaluation (pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr; SPICE when its jars
are installed) x100. ``predict`` also writes ``captions_results.json`` in the COCO result format
``[{"image_id", "caption"}]``; ``evaluate`` scores such a file (or predictions.jsonl) against COCO caption
annotations (``--references``) or the dev captions.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from paddle_unimo.config import check_positions
from paddle_unimo.data.object_tags import lookup_tags, read_class_names, read_tag_file, tags_from_regions
from paddle_unimo.fileio import DataError, write_json
from paddle_unimo.training import TrainConfig
from paddle_unimo.training.adversarial import AdversarialConfig
from paddle_unimo.typed import ConfigError, bounded

from tasks.cli import EvalSection, ModelSection
from tasks.generation import GenerationDecode
from tasks.vision_language import VLData, VLExample, VLRunner, VLTask

logger = logging.getLogger(__name__)
RESULTS = "captions_results.json"


@dataclass
class CaptionData(VLData):
    tags: str = bounded("none", choices=("none", "store", "file"))
    tag_file: str = ""  # data.tags file: JSON {image: tags} or the original object file; relative to the data folder
    class_names: str = ""  # data.tags store: the detector's class names, one a line
    tag_threshold: float = bounded(0.35, min=0.0, max=1.0)  # class probability a box needs to give a tag
    max_tag_len: int = bounded(100, min=0)  # tag tokens (the original's max_obj_len)

    PATHS = ("regions", "tag_file", "class_names")

    def validate(self, where: str) -> None:
        if self.tags == "file" and not self.tag_file:
            raise ConfigError(f"{where}.tag_file: data.tags is 'file' but no tag_file is named")
        if self.tags == "store" and not self.class_names:
            raise ConfigError(f"{where}.class_names: data.tags is 'store' but no class_names file is named")


@dataclass
class CaptionConfig:
    task: str
    model: ModelSection = field(default_factory=ModelSection)
    data: CaptionData = field(default_factory=CaptionData)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_adv: AdversarialConfig = field(default_factory=AdversarialConfig)
    decode: GenerationDecode = field(default_factory=GenerationDecode)
    eval: EvalSection = field(default_factory=EvalSection)


class CaptionTask(VLTask):
    name = "coco_caption"
    description = "image captioning: [regions; object tags; caption], eos [SEP]"
    metric = "bleu4"
    config_class = CaptionConfig
    model_class_name = "UNIMOLMHeadModel"

    def read_file(self, path: str, cfg: CaptionConfig, need_target: bool, role: str) -> List[VLExample]:
        """Training: one example per caption. Otherwise one per image (id = the image), its captions the target."""
        from paddle_unimo.data.vl_annotations import read_caption_file
        captions = read_caption_file(path, self.splits(cfg, role))
        if role == "train":
            return [VLExample(c.id, c.image, c.text, c.text, line=n) for n, c in enumerate(captions, 1)]
        by_image: Dict[str, List[str]] = OrderedDict()
        for c in captions:
            by_image.setdefault(c.image, []).append(c.text)
        return [VLExample(image, image, "", refs, line=n) for n, (image, refs) in enumerate(by_image.items(), 1)]

    @staticmethod
    def texts(examples: Sequence[VLExample], cfg=None) -> List[str]:
        return [e.text for e in examples]

    def bind(self, model, tokenizer, cfg: CaptionConfig) -> "CaptionRunner":
        return CaptionRunner(self, model, tokenizer, cfg)

    @staticmethod
    def load_model(folder: str, runtime: str | None = None):
        """The captioning model of a ``best/`` folder, or the stepper of its export (``cli.load_generator``)."""
        from tasks.cli import load_generator
        return load_generator(folder, runtime)

    def check(self, cfg: CaptionConfig, model_config, where: str) -> None:
        super().check(cfg, model_config, where)
        check_positions(model_config, where, {"data.max_tag_len": (cfg.data.max_tag_len, cfg.data.max_tag_len),
                                              "decode.max_length": (cfg.decode.max_length, cfg.decode.max_length + 1)})

    def score(self, examples: Sequence[VLExample], predictions: Sequence[str], train_examples=()) -> dict:
        """The COCO caption metrics (x100) of one caption per image against its references."""
        return coco_scores({e.image: p for e, p in zip(examples, predictions)},
                           {e.image: list(e.target) for e in examples})

    @staticmethod
    def write_outputs(out_dir: str, examples: Sequence[VLExample], predictions: Sequence[str]) -> None:
        """``captions_results.json``: the COCO result format, image_id the COCO id where the name has one."""
        from paddle_unimo.data.object_tags import image_number
        rows = [{"image_id": int(image_number(e.image)) if image_number(e.image) else e.image, "caption": p}
                for e, p in zip(examples, predictions)]
        write_json(os.path.join(out_dir, RESULTS), rows)

    def evaluate(self, path: str, references_path: str, cfg: CaptionConfig) -> dict:
        """A COCO result file (or predictions.jsonl) against COCO caption annotations (or the dev captions).
        Images are matched by their COCO number where they have one (``COCO_val2014_000000391895.jpg`` is
        image_id 391895), else by name."""
        from paddle_unimo.metrics.caption import read_coco_references, read_coco_results
        from tasks.evaluation import read_predictions
        if path.endswith(".jsonl"):
            predictions = {ident: text for _, ident, text, _ in read_predictions(path)}
        else:
            predictions = read_coco_results(path)
        try:
            references = read_coco_references(references_path)
        except DataError:
            references = {e.image: list(e.target) for e in self.read_file(references_path, cfg, True, "dev")}
        predictions, references = canonical_ids(predictions, path), canonical_ids(references, references_path)
        missing = [k for k in references if k not in predictions]
        extra = [k for k in predictions if k not in references]
        if missing or extra:
            raise DataError(f"{path}: {len(missing)} reference images have no caption ({missing[:5]}) and "
                            f"{len(extra)} captions are for images not in {references_path} ({extra[:5]})")
        return coco_scores(predictions, references)


def canonical_ids(table: Dict, path: str) -> Dict[str, object]:
    """``table`` keyed by each image's COCO number (as a string) where its id has one, else by the id itself."""
    from paddle_unimo.data.object_tags import image_number
    out: Dict[str, object] = {}
    for key, value in table.items():
        canon = image_number(str(key)) or str(key)
        if canon in out:
            raise DataError(f"{path}: two entries name image {canon}")
        out[canon] = value
    return out


def coco_scores(predictions: Dict, references: Dict) -> dict:
    """``caption_scores`` (pycocoevalcap, x100); without Java, none of them (each needs the PTB tokenizer) and
    the reason under ``skipped``."""
    import shutil
    from paddle_unimo.metrics.caption import caption_scores
    if shutil.which("java") is None:
        reason = "Java is not installed: the COCO caption metrics tokenize with the Stanford PTB tokenizer (Java)"
        logger.warning("%s; they are not computed", reason)
        return {"skipped": {"coco_metrics": reason}, "examples": len(references)}
    return {**caption_scores(predictions, references), "examples": len(references)}


class CaptionRunner(VLRunner):
    def __init__(self, task: CaptionTask, model, tokenizer, cfg: CaptionConfig):
        super().__init__(task, model, tokenizer, cfg)
        data = cfg.data
        for key, needed in (("tag_file", data.tags == "file"), ("class_names", data.tags == "store")):
            if needed and not os.path.isfile(getattr(data, key)):
                raise DataError(f"{getattr(data, key)}: file not found (data.{key}, which data.tags: {data.tags} "
                                "reads; -o data.tags=none captions without object tags)")
        self.tag_table = read_tag_file(data.tag_file) if data.tags == "file" else None
        self.class_names = read_class_names(data.class_names) if data.tags == "store" else None

    def check_tags(self, examples: Sequence[VLExample]) -> None:
        """With ``data.tags: file`` every image needs an entry (the original reads ``obj_dict[image_id]`` and
        fails without one): a file of other ids would otherwise caption every image without tags, silently."""
        if self.tag_table is None:
            return
        images = sorted({e.image for e in examples})
        missing = [i for i in images if lookup_tags(self.tag_table, i, None) is None]
        if missing:
            shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise DataError(f"{self.cfg.data.tag_file}: {len(missing)} of {len(images)} images have no object tags "
                            f"({shown}): a tag file of other images or ids? (data.tags: none captions without tags)")

    def tag_ids(self, image: str) -> Tuple[List[int], Optional[List[int]]]:
        """The object tag tokens of an image, cut to ``data.max_tag_len`` (no special tokens, as the original's),
        and their position ids when the original object file gives them (else None)."""
        data = self.cfg.data
        if data.tags == "none":
            return [], None
        if data.tags == "file":
            tags = lookup_tags(self.tag_table, image)
        else:
            record = self.regions.get(image)
            if record.class_probs is None:
                raise DataError(f"{self.regions.path}: image {image} has no class distributions for data.tags store")
            tags = tags_from_regions(record.class_probs, self.class_names, data.tag_threshold, data.max_img_len - 1)
        if isinstance(tags, str):
            return list(self.tokenizer.encode(tags)[:data.max_tag_len]), None
        positions, limit = list(tags.positions[:data.max_tag_len]), self.model.config.max_position_embeddings
        if max(positions, default=0) >= limit:
            raise DataError(f"{data.tag_file}: image {image}: obj_pos_ids up to {max(positions)}, beyond the "
                            f"model's {limit} position embeddings")
        return list(tags.ids[:data.max_tag_len]), positions

    def inputs(self, images: Sequence[str], captions: Sequence[List[int]], left_pad: bool) -> Dict[str, np.ndarray]:
        from paddle_unimo import masks
        regions = self.regions.batch(images, self.cfg.data.max_img_len)
        config = self.model.config
        tags = [self.tag_ids(i) for i in images]
        batch = masks.captioning_inputs([ids for ids, _ in tags], captions, regions["region_valid"],
                                        config.pad_token_id, config.position_start, left_pad=left_pad,
                                        tag_positions=[positions for _, positions in tags])
        batch["tag_lengths"] = np.asarray([len(ids) for ids, _ in tags], "int64")
        batch.update({k: regions[k] for k in ("region_feats", "region_locs", "region_valid")})
        return batch

    def make_batch(self, items) -> Dict[str, np.ndarray]:
        """The captioning inputs plus ``masked_positions`` (N,) (flat index into B * (R + L) of every position
        that predicts a caption token), ``labels`` (N,) and ``caption_mask`` (B, L) (the caption's tokens)."""
        images, captions = [i[0] for i in items], [i[1] for i in items]
        batch = self.inputs(images, captions, left_pad=False)
        regions, length = batch["region_feats"].shape[1], batch["input_ids"].shape[1]
        positions, labels = [], []
        caption_mask = np.zeros(batch["input_ids"].shape, bool)
        for b, (caption, tags) in enumerate(zip(captions, batch.pop("tag_lengths"))):
            start = regions + tags
            positions.extend(b * (regions + length) + start + j for j in range(len(caption) - 1))
            labels.extend(caption[1:])
            caption_mask[b, tags:tags + len(caption)] = True
        batch.pop("valid")
        batch.update(masked_positions=np.asarray(positions, "int64"), labels=np.asarray(labels, "int64"),
                     caption_mask=caption_mask)
        return batch

    def loss(self, model, batch):
        from paddle_unimo.losses import label_smoothed_cross_entropy
        from paddle_unimo.training.adversarial import adversarial_loss
        smoothing = self.cfg.train.label_smoothing

        def forward(text_delta, region_feats):
            return model(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], batch["attention_mask"],
                         masked_positions=batch["masked_positions"], region_feats=region_feats,
                         region_locs=batch["region_locs"], region_valid=batch["region_valid"], text_delta=text_delta)
        loss, _ = adversarial_loss(self.cfg.train_adv, forward,
                                   lambda logits: label_smoothed_cross_entropy(logits, batch["labels"], smoothing),
                                   batch["caption_mask"], batch["region_feats"], batch["region_valid"],
                                   self.model.config.hidden_size)
        return {"loss": loss}

    def predict(self, examples: Sequence[VLExample], model=None) -> List[str]:
        import paddle
        from paddle_unimo.generation import generate
        from tasks.generation import decoder
        model, stepper = decoder(model or self.model)
        settings = {k: v for k, v in vars(self.cfg.decode).items() if k != "batch_size"}
        if settings.get("trigram_blocking"):  # the original img2txt's block_trigram, with convention original
            from paddle_unimo.decoding_original import word_start_table
            settings["word_starts"] = word_start_table(self.tokenizer, stepper.config.vocab_size)
        sep, size = self.tokenizer.sep_token_id, self.cfg.decode.batch_size
        self.check_tags(examples)
        outputs = []
        for start in range(0, len(examples), size):
            images = [e.image for e in examples[start:start + size]]
            batch = self.inputs(images, [[self.tokenizer.cls_token_id]] * len(images), left_pad=True)
            keys = ("input_ids", "token_type_ids", "position_ids", "attention_mask", "region_feats", "region_locs",
                    "region_valid")
            ids, _ = generate(model, **{k: paddle.to_tensor(batch[k]) for k in keys}, eos_token_id=sep,
                              stepper=stepper, **settings)
            for row in ids.numpy().tolist():
                row = row[:row.index(sep)] if sep in row else row
                outputs.append(self.tokenizer.decode(row))
        return outputs

    def trainer(self, train_examples, dev_examples, out_dir: str, fingerprint=None):
        from paddle_unimo.metrics import bleu4
        self.check_tags([*train_examples, *dev_examples])
        encoded = [(e.image, self.encode(e.text, "caption")) for e in train_examples]
        dev = self.dev_subset(dev_examples)

        def evaluate(model):  # BLEU-4 of our tokenizer-free scorer during training; COCO metrics at the end
            model.eval()
            return {"bleu4": bleu4(self.predict(dev, model), [list(e.target) for e in dev])}
        return self.make_trainer(encoded, self.make_batch, self.loss, out_dir, evaluate if dev else None,
                                 fingerprint, count=lambda batch: len(batch["labels"]), unit="tok")


TASK = CaptionTask()
