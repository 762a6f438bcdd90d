"""Flickr30k image-text retrieval (UNIMO paper section 4.1; PaddlePaddle/Research NLP/UNIMO
``src/finetune/retrieval.py``, ``src/reader/retrieval_reader.py``, ``src/eval/img_eval.py``).

Input ``[regions; [CLS] caption [SEP]]``, bidirectional; score (``UNIMOForRetrieval``) = match_fc(dropout(pooled
text * pooled image)). Training, as the original: for each caption, its image, ``data.negatives`` other images
with the caption and as many captions of other images with its image (drawn uniformly, never the caption's own
image); loss = the mean of two circle losses (positive vs caption negatives, positive vs image negatives),
margin 0.2, scale 1. With ``data.hard_negatives`` the negatives are the best-scoring of ``data.hard_pool`` random
candidates under the current model (the model scores them without gradients first).

Evaluation scores every caption against every image (batched, with a progress bar) and reports R@1/5/10 in both
directions and their mean (``paddle_unimo.metrics.retrieval``; ``txt_r*``: image -> text, ``img_r*``: text ->
image). ``eval.two_stage_k`` > 0 ranks first by the cosine of the separately pooled text and image (what CMCL
trains) and scores with the cross-encoder only each caption's top k images and each image's top k captions,
the other pairs ranked below them; with k >= the number of images and captions it equals full scoring.

The pipeline (``tasks.pipeline``, ``make serve``) ranks for one record: a caption against images
(``{"text": ..., "images": [...]}``; a caption alone against every image of the region store) or an image against
captions (``{"image": ..., "texts": [...]}``), and answers the ``top`` (default 10) best, best first, with their
scores: ``[{"image": ..., "score": ...}, ...]`` (``{"text": ..., "score": ...}``).

Files: captions in the Karpathy split file (``dataset_flickr30k.json``), COCO caption annotations, a reference
file or a folder of Flickr30k Entities sentences. ``predict`` writes ``scores.npy`` (captions x images) and
``scores_index.json`` (their ids), which ``evaluate --predictions .../scores.npy`` scores.
"""
from __future__ import annotations

import logging
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from paddle_unimo.fileio import DataError, atomic_save, read_json, write_json
from paddle_unimo.training import TrainConfig
from paddle_unimo.typed import ConfigError, bounded

from tasks.cli import ModelSection
from tasks.vision_language import VLData, VLExample, VLRunner, VLTask, model_inputs, to_tensors

logger = logging.getLogger(__name__)
SCORES, SCORES_INDEX = "scores.npy", "scores_index.json"


@dataclass
class RetrievalData(VLData):
    negatives: int = bounded(10, min=1)  # per direction: the original's samples_num 20 = 10 + 10
    hard_negatives: bool = False
    hard_pool: int = bounded(40, min=1)  # random candidates the hard negatives are chosen from
    margin: float = bounded(0.2, min=0.0)
    scale: float = bounded(1.0, above=0.0)

    def validate(self, where: str) -> None:
        if self.hard_negatives and self.hard_pool < self.negatives:
            raise ConfigError(f"{where}.hard_pool: {self.hard_pool} candidates cannot give data.negatives "
                              f"{self.negatives} hard negatives (allowed: >= {self.negatives})")


@dataclass
class RetrievalEval:
    max_examples: int = bounded(0, min=0)  # dev captions scored at each evaluation during training; 0: all
    batch_size: int = bounded(96, min=1)  # caption-image pairs scored together (the original's test batch)
    two_stage_k: int = bounded(0, min=0)  # 0: score every pair with the cross-encoder


@dataclass
class RetrievalConfig:
    task: str
    model: ModelSection = field(default_factory=ModelSection)
    data: RetrievalData = field(default_factory=RetrievalData)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: RetrievalEval = field(default_factory=RetrievalEval)


@dataclass
class RankQuery:
    """A pipeline record: ``text`` ranked against the images ``candidates`` (None: every image of the region
    store), or ``image`` against the captions ``candidates``; its ``top`` best are answered."""
    line: int
    text: Optional[str]
    image: Optional[str]
    candidates: Optional[List[str]]
    top: int = 10


def rank_query(record, index: int) -> RankQuery:
    """The ``RankQuery`` of pipeline input ``index``: a caption (a text, or ``{"text", "images"?, "top"?}``) or an
    image (``{"image", "texts", "top"?}``); a bad one is a ``DataError`` naming it and the record's keys."""
    if isinstance(record, str):
        record = {"text": record}
    if not isinstance(record, dict):
        raise DataError(f"input {index}: flickr30k_retrieval reads a caption or {{'text': ..., 'images': [...]}} "
                        f"or {{'image': ..., 'texts': [...]}}, got {type(record).__name__}")
    query, others = ("text", "images") if "text" in record else ("image", "texts")
    unknown = sorted(set(record) - {query, others, "top"})
    if unknown or query not in record:
        raise DataError(f"input {index}: the record has {sorted(record)}; a retrieval record is {{'text': ..., "
                        "'images': [...] (default: every image of the region store), 'top': n}} or {'image': ..., "
                        "'texts': [...], 'top': n}")
    candidates = record.get(others)
    if query == "image" and candidates is None:
        raise DataError(f"input {index}: an image is ranked against the captions of 'texts', which it lacks")
    if candidates is not None and (not isinstance(candidates, list) or not candidates):
        raise DataError(f"input {index}: '{others}' must be a non-empty list, got {candidates!r}")
    for where, value in [(query, record[query])] + [(f"{others}[{i}]", c) for i, c in enumerate(candidates or [])]:
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"input {index}: '{where}' must be a non-empty string, got {value!r}")
    top = record.get("top", 10)
    if not isinstance(top, numbers.Integral) or isinstance(top, bool) or top < 1:
        raise DataError(f"input {index}: 'top' must be an integer >= 1, got {top!r}")
    return RankQuery(index, record.get("text"), record.get("image"), candidates, top)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)


def ranked(scores) -> np.ndarray:
    """The score matrix for ``recall_at_k`` (which takes finite scores only): the pairs two-stage scoring left
    out (-inf) get one value below every scored pair."""
    scores = np.asarray(scores, np.float64)
    unscored = np.isneginf(scores)
    if unscored.any() and not unscored.all():
        low = scores[~unscored].min()
        scores = np.where(unscored, low - max(1.0, abs(low)), scores)
    return scores


def images_of(examples: Sequence[VLExample]) -> List[str]:
    """The examples' images, each once, in order of first mention: the columns of a score matrix."""
    return list(dict.fromkeys(e.image for e in examples))


class RetrievalRunner(VLRunner):
    def __init__(self, task, model, tokenizer, cfg: RetrievalConfig):
        super().__init__(task, model, tokenizer, cfg)
        if cfg.eval.two_stage_k > 0:
            self.pooling(model)  # an export cannot: refused now, not at the first scoring
        self.trainer_ref = None
        self.store_cache = None  # the pipeline's store images and their pooled vectors (store_images)

    # ---- training ---------------------------------------------------------------------------------------
    def negatives(self, index: int, rng, pool_size: int, excluded_image: str):
        """``pool_size`` random example indices whose image is not ``excluded_image``."""
        out = []
        while len(out) < pool_size:
            j = int(rng.integers(len(self.train)))
            if self.train[j][2] != excluded_image:
                out.append(j)
        return out

    def hardest(self, caption: List[int], image: str, candidates: List[tuple], count: int) -> List[tuple]:
        """The ``count`` (image, caption) pairs among ``candidates`` the current model scores highest."""
        import paddle
        self.model.eval()
        with paddle.no_grad():
            batch = to_tensors(self.pair_batch([c for _, c in candidates], [i for i, _ in candidates]))
            scores = self.model(**model_inputs(batch)).numpy()
        self.model.train()
        return [candidates[i] for i in np.argsort(-scores, kind="stable")[:count]]

    def make_batch(self, items) -> Dict[str, np.ndarray]:
        """Per caption 1 + 2 * negatives rows: the positive pair, the caption with other images, the image with
        other captions. Negatives are seeded by the run's seed, the step and the caption: exact resume."""
        data = self.cfg.data
        micro = self.trainer_ref.state["micro"] if self.trainer_ref else 0
        pool = data.hard_pool if data.hard_negatives else data.negatives
        texts, images = [], []
        for index, caption, image in items:
            rng = np.random.default_rng([self.cfg.train.seed, micro, index])
            other_images = [(self.train[j][2], caption) for j in self.negatives(index, rng, pool, image)]
            other_captions = [(image, self.train[j][1]) for j in self.negatives(index, rng, pool, image)]
            if data.hard_negatives:
                other_images = self.hardest(caption, image, other_images, data.negatives)
                other_captions = self.hardest(caption, image, other_captions, data.negatives)
            rows = [(image, caption)] + other_images + other_captions
            images.extend(i for i, _ in rows)
            texts.extend(c for _, c in rows)
        return self.pair_batch(texts, images)

    def loss(self, model, batch):
        from paddle_unimo.losses import circle_loss
        data = self.cfg.data
        scores = model(**model_inputs(batch)).reshape([-1, 1 + 2 * data.negatives])
        positive, image_negatives, caption_negatives = (scores[:, 0], scores[:, 1:1 + data.negatives],
                                                        scores[:, 1 + data.negatives:])
        loss = (circle_loss(positive, caption_negatives, data.margin, data.scale)
                + circle_loss(positive, image_negatives, data.margin, data.scale)) / 2
        return {"loss": loss}

    # ---- scoring ----------------------------------------------------------------------------------------
    def cross_scores(self, captions: List[List[int]], images: List[str], pairs, model, desc: str) -> np.ndarray:
        """(T, I) cross-encoder scores of the (text, image) index ``pairs``; -inf elsewhere."""
        import paddle
        from tqdm import tqdm
        scores = np.full((len(captions), len(images)), -np.inf, np.float32)
        size = self.cfg.eval.batch_size
        started = time.perf_counter()
        with paddle.no_grad():
            for start in tqdm(range(0, len(pairs), size), desc=desc, disable=None, mininterval=1.0):
                chunk = pairs[start:start + size]
                batch = to_tensors(self.pair_batch([captions[t] for t, _ in chunk], [images[i] for _, i in chunk]))
                values = model(**model_inputs(batch)).numpy()
                for (t, i), v in zip(chunk, values):
                    scores[t, i] = v
        seconds = time.perf_counter() - started
        self.throughput = {"pairs": len(pairs), "seconds": round(seconds, 3),
                           "pairs_per_s": round(len(pairs) / max(seconds, 1e-9), 1)}
        return scores

    def pooled_cosine(self, captions: List[List[int]], images: List[str], model) -> np.ndarray:
        """(T, I) cosine of the text pooled alone and the image pooled alone."""
        return self.text_vectors(captions, model) @ self.image_vectors(images, model).T

    def pooling(self, model):
        """``model``, for two-stage scoring, which pools text and image apart: an export's program does not."""
        if not hasattr(model, "pooled"):
            raise ConfigError(f"eval.two_stage_k {self.cfg.eval.two_stage_k}: the first stage pools text and image "
                              "apart, which an export's forward program does not: score with the checkpoint "
                              "(OUT/best), or k 0")
        return model

    def text_vectors(self, captions: List[List[int]], model) -> np.ndarray:
        """(T, H) unit vectors of the captions pooled alone."""
        import paddle
        from paddle_unimo import masks
        model = self.pooling(model)
        size, pad = self.cfg.eval.batch_size, model.config.pad_token_id
        with paddle.no_grad():
            vectors = [model.pooled(paddle.to_tensor(masks.pad_batch(
                [np.asarray(c, "int64") for c in captions[start:start + size]], pad)))[0].numpy()
                for start in range(0, len(captions), size)]
        return unit(np.concatenate(vectors))

    def image_vectors(self, images: List[str], model) -> np.ndarray:
        """(I, H) unit vectors of the images pooled alone."""
        import paddle
        model, vectors = self.pooling(model), []
        with paddle.no_grad():
            for start in range(0, len(images), self.cfg.eval.batch_size):
                regions = to_tensors(self.regions.batch(images[start:start + self.cfg.eval.batch_size],
                                                        self.cfg.data.max_img_len))
                vectors.append(model.pooled(region_feats=regions["region_feats"], region_locs=regions["region_locs"],
                                            region_valid=regions["region_valid"])[1].numpy())
        return unit(np.concatenate(vectors))

    def score_matrix(self, examples: Sequence[VLExample], model=None) -> np.ndarray:
        """(captions, images) scores; with ``eval.two_stage_k`` only the first stage's candidates are cross-scored
        (the rest keep -inf, below every scored pair)."""
        return self.scores([self.encode(e.text) for e in examples], images_of(examples), model)

    def scores(self, captions: List[List[int]], images: List[str], model=None, rows: bool = True,
               columns: bool = True, image_vectors: Optional[np.ndarray] = None) -> np.ndarray:
        """(T, I) scores of the encoded ``captions`` against ``images``; with ``eval.two_stage_k`` = k only the
        pairs among each caption's (``rows``) and each image's (``columns``) k best by pooled cosine (the images'
        pooled ``image_vectors`` when given)."""
        model = model or self.model
        model.eval()
        k = self.cfg.eval.two_stage_k
        if k <= 0:
            pairs = [(t, i) for t in range(len(captions)) for i in range(len(images))]
        else:
            if image_vectors is None:
                image_vectors = self.image_vectors(images, model)
            cosine = self.text_vectors(captions, model) @ image_vectors.T
            chosen = np.zeros(cosine.shape, bool)
            if rows:
                np.put_along_axis(chosen, np.argsort(-cosine, axis=1, kind="stable")[:, :k], True, axis=1)
            if columns:
                np.put_along_axis(chosen, np.argsort(-cosine, axis=0, kind="stable")[:k, :], True, axis=0)
            pairs = [(int(t), int(i)) for t, i in zip(*np.nonzero(chosen))]
        scores = self.cross_scores(captions, images, pairs, model, "score pairs")
        logger.info("scored %d caption-image pairs in %.1f s (%.1f pairs/s)%s", self.throughput["pairs"],
                    self.throughput["seconds"], self.throughput["pairs_per_s"], f", two-stage k={k}" if k else "")
        return scores

    def predict(self, examples: Sequence[VLExample], model=None) -> List[np.ndarray]:
        """Each caption's row of scores over ``images_of(examples)``."""
        return list(self.score_matrix(examples, model))

    def pipeline_predict(self, queries: Sequence[RankQuery]) -> List[List[dict]]:
        """Each query's ``top`` best candidates, best first (each candidate as given, a repeated one as often):
        ``{"image" or "text": candidate, "score": s}``, ``s`` the cross-encoder's score of the pair, as in
        ``scores.npy`` (with ``eval.two_stage_k`` = k, of the query's k best candidates by pooled cosine only; the
        store's images are pooled once, at the first search of the whole store)."""
        answers = []
        for q in queries:
            candidates, vectors = q.candidates, None
            if candidates is None:
                candidates, vectors = self.store_images()
            if q.text is not None:
                scores = self.scores([self.encode(q.text)], candidates, columns=False, image_vectors=vectors)[0]
            else:
                scores = self.scores([self.encode(c) for c in candidates], [q.image], rows=False)[:, 0]
            best = [i for i in np.argsort(-scores, kind="stable")[:q.top] if np.isfinite(scores[i])]
            kind = "image" if q.text is not None else "text"
            answers.append([{kind: candidates[i], "score": float(scores[i])} for i in best])
        return answers

    def pipeline_cost(self, record) -> int:
        """The caption-image pairs a pipeline record scores (serve counts them toward ``--max-inputs``): one per
        candidate, or for a caption alone one per store image (with ``eval.two_stage_k`` = k, k)."""
        candidates = record.get("images", record.get("texts")) if isinstance(record, dict) else None
        if isinstance(candidates, list):
            return max(1, len(candidates))
        k, images = self.cfg.eval.two_stage_k, len(self.regions.store)
        return min(k, images) if k > 0 else images

    def store_images(self):
        """The region store's images and, with two-stage scoring, their pooled vectors (computed once: the
        pipeline's model does not change)."""
        if self.store_cache is None:
            images = self.regions.store.ids()
            if not images:
                raise DataError(f"{self.regions.path}: the region store has no images to search")
            self.model.eval()
            vectors = self.image_vectors(images, self.model) if self.cfg.eval.two_stage_k > 0 else None
            self.store_cache = images, vectors
        return self.store_cache

    def report(self) -> dict:
        return {**super().report(), "scoring": getattr(self, "throughput", None)}

    def trainer(self, train_examples, dev_examples, out_dir: str, fingerprint=None):
        if len(images_of(train_examples)) < 2:
            raise DataError("retrieval training needs captions of at least 2 images (the negatives are other images)")
        self.train = [(n, self.encode(e.text), e.image) for n, e in enumerate(train_examples)]
        dev = self.dev_subset(dev_examples)

        def evaluate(model):
            return {"mean_recall": self.task.score(dev, self.predict(dev, model))["mean_recall"]}
        trainer = self.make_trainer(self.train, self.make_batch, self.loss, out_dir, evaluate if dev else None,
                                    fingerprint, count=lambda batch: len(batch["input_ids"]) // (
                                        1 + 2 * self.cfg.data.negatives))
        self.trainer_ref = trainer
        return trainer


class RetrievalTask(VLTask):
    name = "flickr30k_retrieval"
    description = "image-text retrieval: score(caption, image) by the cross-encoder, R@1/5/10 both ways"
    metric = "mean_recall"
    config_class = RetrievalConfig
    model_class_name = "UNIMOForRetrieval"

    @staticmethod
    def pipeline_example(record, index: int, cfg: RetrievalConfig) -> RankQuery:
        return rank_query(record, index)

    @staticmethod
    def pipeline_images(query: RankQuery) -> List[str]:
        """The images of a query the pipeline finds regions for (a caption against the store's: none to find)."""
        return [query.image] if query.image is not None else list(query.candidates or [])

    def read_file(self, path: str, cfg: RetrievalConfig, need_target: bool, role: str) -> List[VLExample]:
        from paddle_unimo.data.vl_annotations import read_caption_file
        return [VLExample(c.id, c.image, c.text, c.image, line=n)
                for n, c in enumerate(read_caption_file(path, self.splits(cfg, role)), 1)]

    def bind(self, model, tokenizer, cfg: RetrievalConfig) -> RetrievalRunner:
        return RetrievalRunner(self, model, tokenizer, cfg)

    @staticmethod
    def prediction_row(example: VLExample, prediction) -> dict:
        """The caption's ten best images, as columns of ``scores_index.json``'s image list."""
        top = np.argsort(-np.asarray(prediction), kind="stable")[:10]
        return {"id": example.id, "line": example.line, "image": example.image, "text": example.text,
                "prediction": [int(i) for i in top]}

    def score(self, examples: Sequence[VLExample], predictions, train_examples=()) -> dict:
        from paddle_unimo.metrics.retrieval import recall_at_k
        images = images_of(examples)
        column = {image: i for i, image in enumerate(images)}
        result = recall_at_k(ranked(np.stack(predictions)), text_to_image=[column[e.image] for e in examples])
        return {**result, "captions": len(examples), "images": len(images)}

    @staticmethod
    def write_outputs(out_dir: str, examples, predictions) -> None:
        def save(tmp):
            with open(tmp, "wb") as f:
                np.save(f, np.stack(predictions))
        atomic_save(os.path.join(out_dir, SCORES), save)
        write_json(os.path.join(out_dir, SCORES_INDEX), {"captions": [e.id for e in examples],
                                                         "images": images_of(examples)})

    def evaluate(self, path: str, references_path: str, cfg: RetrievalConfig) -> dict:
        """``scores.npy`` with its ``scores_index.json`` against the caption file (ids and images must match)."""
        if not path.endswith(".npy"):
            raise DataError(f"{path}: retrieval is evaluated from the score matrix predict writes ({SCORES})")
        index = read_json(os.path.join(os.path.dirname(path), SCORES_INDEX), "score index")
        scores = np.load(path)
        references = self.read_file(references_path, cfg, True, "dev")
        by_id = {e.id: e for e in references}
        if sorted(by_id) != sorted(index["captions"]) or set(index["images"]) != set(images_of(references)):
            raise DataError(f"{path}: its captions/images are not those of {references_path}")
        if scores.shape != (len(index["captions"]), len(index["images"])):
            raise DataError(f"{path}: shape {scores.shape} does not match {SCORES_INDEX}")
        column = {image: i for i, image in enumerate(index["images"])}
        from paddle_unimo.metrics.retrieval import recall_at_k
        result = recall_at_k(ranked(scores), text_to_image=[column[by_id[c].image] for c in index["captions"]])
        return {**result, "captions": len(references), "images": len(index["images"])}


TASK = RetrievalTask()
