"""UNIMO pretraining (paper section 2): corpora, the objective mixture, and the model the trainer drives.

Three kinds of corpus, each listing its objectives and a mixing ratio:
  text   plain text lines (``.txt``) or string fields of JSON lines       -> span_mlm, seq2seq_lm
  image  a region feature store (``paddle_unimo.data.regions``)           -> region
  pair   captions (JSON lines ``{"image_id", "caption", ...}``) + a store -> region (image+text), cmcl

Every micro-batch uses one (corpus, objective) pair, drawn with probability ``ratio / len(objectives)`` from a
generator seeded by the run's seed and the micro-batch index, so every process draws the same pair; the
examples are drawn the same way and each process takes its slice of the global batch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import paddle
import paddle.nn as nn

from .augment.records import to_example
from .data.regions import RegionStore
from .objectives import TextSpecials, get_objective, text_example
from .objectives.cmcl import CMCLExample
from .objectives.region import RegionExample

HEADS_FILE = "pretraining_heads.pdparams"
TEXT_OBJECTIVES, IMAGE_OBJECTIVES, PAIR_OBJECTIVES = {"span_mlm", "seq2seq_lm"}, {"region"}, {"region", "cmcl"}


@dataclass
class Corpus:
    name: str
    kind: str  # text | image | pair
    objectives: List[str]
    ratio: float
    items: list = field(default_factory=list)  # TextExample | RegionRecord | CMCLExample

    def __post_init__(self):
        allowed = {"text": TEXT_OBJECTIVES, "image": IMAGE_OBJECTIVES, "pair": PAIR_OBJECTIVES}.get(self.kind)
        if allowed is None:
            raise ValueError(f"corpus {self.name!r}: unknown kind {self.kind!r}; known: text, image, pair")
        wrong = sorted(set(self.objectives) - allowed)
        if wrong:
            raise ValueError(f"corpus {self.name!r} ({self.kind}) cannot train {wrong}; it can: {sorted(allowed)}")
        if not self.items:
            raise ValueError(f"corpus {self.name!r} is empty")


def read_text_lines(path: str, fields: Sequence[str] = ()) -> List[str]:
    """Non-empty lines of a text file, or the named string fields of a JSON-lines file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if not fields:
                out.append(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: malformed JSON ({e.msg})") from None
            out.extend(record[k] for k in fields if isinstance(record.get(k), str) and record[k].strip())
    return out


def read_captions(path: str, store: RegionStore, tokenizer) -> List[CMCLExample]:
    """CMCL examples of a captions file in ``tools/build_cmcl_data.py``'s format (``image_id``, ``caption``,
    ``positive_texts``/``negative_texts`` as ``{"text": ...}``, ``positive_images`` as ``{"image_id": ...}``)."""
    items = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                items.append(to_example({"positive_texts": [], "positive_images": [], "negative_texts": [], **row},
                                        tokenizer, store))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{line_no}: {type(e).__name__}: {e}") from None
    return items


def load_corpus(spec: dict, tokenizer, root: str = "", chinese: bool = False) -> Corpus:
    """A corpus from its config entry: name, kind, path(s), objectives, ratio (+ fields, regions)."""
    path = lambda p: os.path.join(root, p)  # noqa: E731
    kind = spec["kind"]
    if kind == "text":
        lines = [t for p in spec["paths"] for t in read_text_lines(path(p), spec.get("fields", ()))]
        items = [text_example(t, tokenizer, chinese=chinese) for t in lines]
        items = [e for e in items if e.token_ids]
    elif kind == "image":
        store = RegionStore(path(spec["regions"]))
        items = [store.get(i) for i in store.ids()]
    else:
        items = read_captions(path(spec["captions"]), RegionStore(path(spec["regions"])), tokenizer)
    return Corpus(spec["name"], kind, list(spec["objectives"]), float(spec["ratio"]), items)


def objective_example(corpus: Corpus, objective: str, item):
    """The example type each objective takes, from a corpus item."""
    if corpus.kind == "text":
        return item
    if corpus.kind == "image":
        return RegionExample(item)
    return RegionExample(item.image, item.text_ids) if objective == "region" else item  # item: a CMCLExample


class Mixture:
    """Draws micro-batches: one (corpus, objective) pair and its examples per micro-batch, seeded."""

    def __init__(self, corpora: Sequence[Corpus], configs: Dict[str, object], batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.pairs = [(c, o) for c in corpora for o in c.objectives]
        weights = np.asarray([c.ratio / len(c.objectives) for c, _ in self.pairs], np.float64)
        if not len(weights) or weights.sum() <= 0:
            raise ValueError("the corpora give no objective a positive ratio")
        self.weights = weights / weights.sum()
        self.configs, self.batch_size, self.seed, self.rank, self.world = configs, batch_size, seed, rank, world

    def __call__(self, micro: int) -> dict:
        rng = np.random.default_rng([self.seed, micro])
        corpus, objective = self.pairs[rng.choice(len(self.pairs), p=self.weights)]
        size = self.batch_size * self.world
        chosen = rng.choice(len(corpus.items), size=size, replace=len(corpus.items) < size)
        slots = range(self.rank, size, self.world)  # this process's places in the global batch
        return {"objective": objective, "micro": micro, "slots": list(slots),
                "examples": [objective_example(corpus, objective, corpus.items[chosen[s]]) for s in slots]}

    def make_batch(self, drawn: dict) -> dict:
        """The objective's batch; each example masked by a generator seeded by its place in the global batch,
        so that N processes see exactly the batches one process would (CMCL's in-batch negatives excepted:
        they are the other pairs of the same process)."""
        name = drawn["objective"]
        rngs = [np.random.default_rng([self.seed, drawn["micro"], slot, 1]) for slot in drawn["slots"]]
        batch = get_objective(name).make_batch(drawn["examples"], self.configs[name], rngs)
        return {**batch, "objective": name}


class PretrainModel(nn.Layer):
    """The UNIMO model plus the pretraining-only heads; ``forward(batch)`` is the batch's objective loss, so
    that data parallelism (which hooks ``forward``) sees every objective."""

    def __init__(self, model, objectives: Sequence[str]):
        super().__init__()
        self.model = model
        self.config = model.config
        heads = {}
        for name in objectives:
            make = get_objective(name).make_heads
            if make is not None:
                heads[name] = make(model.config)
        self.heads = nn.LayerDict(heads)

    def forward(self, batch: dict) -> dict:
        name = batch["objective"]
        tensors = {k: v for k, v in batch.items() if k != "objective"}
        out = get_objective(name).loss(self.model, tensors, self.heads[name] if name in self.heads else None)
        return {**out, "name": name}

    def save_pretrained(self, path: str) -> None:
        """The UNIMO model folder (loadable by ``UNIMOLMHeadModel.from_pretrained``) and the heads beside it."""
        self.model.save_pretrained(path)
        paddle.save(self.heads.state_dict(), os.path.join(path, HEADS_FILE))


def objective_configs(names: Sequence[str], overrides: Dict[str, dict], tokenizer, model_config) -> Dict[str, object]:
    """Each objective's config: the specials of the tokenizer, lengths of the model, then the YAML values."""
    specials = TextSpecials(cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                            pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id,
                            vocab_size=model_config.vocab_size, special_ids=frozenset(tokenizer.special_ids))
    configs = {}
    for name in names:
        cls = get_objective(name).config
        fields = set(cls.__dataclass_fields__)
        values = {"specials": specials, "position_start": model_config.position_start,
                  "max_img_len": model_config.max_img_len}
        values = {k: v for k, v in values.items() if k in fields}
        extra = dict(overrides.get(name, {}))
        unknown = sorted(set(extra) - fields)
        if unknown:
            raise KeyError(f"objective {name!r}: unknown keys {unknown}; known: {sorted(fields)}")
        configs[name] = cls(**{**values, **extra})
    return configs
