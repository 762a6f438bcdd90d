"""UNIMO pretraining (paper section 2): corpora, the objective mixture, and the model the trainer drives.

Three kinds of corpus, each listing its objectives and a mixing ratio:
  text   plain text lines (``.txt``) or string fields of JSON lines       -> span_mlm, seq2seq_lm
  image  a region feature store (``paddle_unimo.data.regions``)           -> region
  pair   captions (JSON lines ``{"image_id", "caption", ...}``) + a store -> region (image+text), cmcl

A corpus entry of the config (``CorpusSpec``) is checked before anything is read: a missing or unknown key,
an unknown kind or a ratio that is not a positive number is an error naming the corpus and the key.

Every micro-batch uses one (corpus, objective) pair, drawn with probability ``ratio / len(objectives)`` from a
generator seeded by the run's seed and the micro-batch index, so every process draws the same pair; the
examples are drawn the same way and each process takes its slice of the global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import paddle
import paddle.nn as nn

from . import fileio
from .augment.records import to_example
from .data.regions import RegionStore, open_store
from .objectives import TextExample, TextSpecials, get_objective, text_example
from .objectives.cmcl import CMCLExample
from .objectives.region import RegionExample
from .config import check_positions
from .typed import ConfigError, bounded, from_dict, join

HEADS_FILE = "pretraining_heads.pdparams"
KIND_OBJECTIVES = {"text": {"span_mlm", "seq2seq_lm"}, "image": {"region"},
                   "pair": {"region", "cmcl", "span_mlm", "seq2seq_lm"}}


@dataclass
class Corpus:
    name: str
    kind: str  # text | image | pair
    objectives: List[str]
    ratio: float
    items: list = field(default_factory=list)  # TextExample | RegionRecord | CMCLExample

    def __post_init__(self):
        allowed = KIND_OBJECTIVES.get(self.kind)
        if allowed is None:
            raise ValueError(f"corpus {self.name!r}: unknown kind {self.kind!r}; known: text, image, pair")
        wrong = sorted(set(self.objectives) - allowed)
        if wrong:
            raise ValueError(f"corpus {self.name!r} ({self.kind}) cannot train {wrong}; it can: {sorted(allowed)}")
        if not self.items:
            raise ValueError(f"corpus {self.name!r} is empty")


@dataclass
class CorpusSpec:
    """One entry of the config's ``corpora`` list; paths are relative to the ``root`` given to load_corpus."""
    name: str
    kind: str = bounded(choices=("text", "image", "pair"))
    objectives: List[str]
    ratio: float = bounded(above=0.0)
    paths: List[str] = field(default_factory=list)  # text: .txt files or JSON lines
    fields: List[str] = field(default_factory=list)  # text: the string fields of JSON lines (none: plain text)
    regions: str = ""  # image, pair: a region feature store
    captions: str = ""  # pair: JSON lines of captions (tools/build_cmcl_data.py)

    def validate(self, where: str) -> None:
        corpus = where.rstrip(":")
        needed = {"text": ("paths",), "image": ("regions",), "pair": ("captions", "regions")}[self.kind]
        for key in needed:
            if not getattr(self, key):
                raise ConfigError(f"{corpus}: missing key {key} (a {self.kind} corpus needs {', '.join(needed)})")
        if not self.objectives:
            raise ConfigError(f"{join(where, 'objectives')}: empty; give at least one objective")
        wrong = sorted(set(self.objectives) - KIND_OBJECTIVES[self.kind])
        if wrong:
            raise ConfigError(f"{join(where, 'objectives')}: a {self.kind} corpus cannot train {wrong}; it can: "
                              f"{sorted(KIND_OBJECTIVES[self.kind])}")


def corpus_spec(spec) -> CorpusSpec:
    """The checked ``CorpusSpec`` of a config entry; errors read ``corpus 'name': key: what``."""
    name = spec.get("name") if isinstance(spec, dict) else None
    where = f"corpus {name!r}:" if isinstance(name, str) else f"corpus {spec!r}:"
    return from_dict(CorpusSpec, spec, where)


def read_text_lines(path: str, fields: Sequence[str] = ()) -> List[str]:
    """The non-blank lines (stripped) of a text file, or the non-blank string ``fields`` of each object of a
    JSON-lines file. A malformed line is a ``fileio.DataError`` naming ``file:line``."""
    if not fields:
        return [text.strip() for _, text in fileio.read_text_lines(path)]
    return [record[k] for _, record in fileio.read_jsonl(path) for k in fields
            if isinstance(record.get(k), str) and record[k].strip()]


CAPTION_LISTS = {"positive_texts": "text", "negative_texts": "text", "positive_images": "image_id"}


def _caption_row(where: str, row: dict) -> dict:
    """A captions row with its optional lists filled in; a missing key or a malformed list is a DataError."""
    for key in ("image_id", "caption"):
        if key not in row:
            raise fileio.DataError(f"{where}: missing key {key!r}")
    row = {**{key: [] for key in CAPTION_LISTS}, **row}
    for key, inner in CAPTION_LISTS.items():
        if not isinstance(row[key], list) or not all(isinstance(x, dict) and inner in x for x in row[key]):
            raise fileio.DataError(f"{where}: {key} must be a list of {{{inner!r}: ...}} objects")
    if any(p.get("source") == "retrieved" for p in row["positive_texts"]):
        raise fileio.DataError(f"{where}: positive_texts holds captions of other images retrieved by TF-IDF, which "
                               "an older tools/build_cmcl_data.py made positives; they are hard negatives: rebuild "
                               "the file with the tool")
    return row


def read_captions(path: str, store: RegionStore, tokenizer, chinese: bool = False) -> List[CMCLExample]:
    """CMCL examples of a captions file in ``tools/build_cmcl_data.py``'s format (``image_id``, ``caption``,
    ``positive_texts``/``negative_texts`` as ``{"text": ...}``, ``positive_images`` as ``{"image_id": ...}``),
    with the caption's word starts (``text_example``) for the text objectives. A malformed line, a missing key
    or an image not in ``store`` is a ``fileio.DataError`` naming ``file:line``."""
    items = []
    for where, row in fileio.read_jsonl(path):
        row = _caption_row(where, row)
        try:
            example = to_example(row, tokenizer, store)
            caption = text_example(row["caption"], tokenizer, chinese=chinese)
            if not caption.token_ids:
                raise fileio.DataError(f"{where}: caption {row['caption']!r} has no token")
            example.text_ids, example.word_starts = caption.token_ids, caption.word_starts
            items.append(example)
        except KeyError as e:  # an image id the store does not hold
            raise fileio.DataError(f"{where}: {e.args[0] if e.args else e}") from None
        except (TypeError, ValueError) as e:
            raise fileio.DataError(f"{where}: {type(e).__name__}: {e}") from None
    return items


def load_corpus(spec: dict, tokenizer, root: str = "", chinese: bool = False) -> Corpus:
    """A corpus from its config entry (``CorpusSpec``), checked before any file is read."""
    spec = corpus_spec(spec)
    path = lambda p: os.path.join(root, p)  # noqa: E731
    if spec.kind == "text":
        lines = [t for p in spec.paths for t in read_text_lines(path(p), spec.fields)]
        items = [text_example(t, tokenizer, chinese=chinese) for t in lines]
        items = [e for e in items if e.token_ids]
    elif spec.kind == "image":
        store = open_store(path(spec.regions))
        items = [store.get(i) for i in store.ids()]
    else:
        items = read_captions(path(spec.captions), open_store(path(spec.regions)), tokenizer, chinese)
    if not items:
        sources = ", ".join(path(p) for p in spec.paths) if spec.kind == "text" else path(spec.regions)
        raise fileio.DataError(f"{sources}: corpus {spec.name!r} has no usable item"
                               + (f" (no non-blank text in the fields {list(spec.fields)})" if spec.fields else ""))
    return Corpus(spec.name, spec.kind, list(spec.objectives), spec.ratio, items)


def objective_example(corpus: Corpus, objective: str, item):
    """The example type each objective takes, from a corpus item (a pair's: a ``CMCLExample``)."""
    if corpus.kind == "text":
        return item
    if corpus.kind == "image":
        return RegionExample(item)
    if objective == "region":
        return RegionExample(item.image, item.text_ids)
    if objective == "cmcl":
        return item
    if item.word_starts is None:
        raise ValueError("a pair's text objective needs the caption's word starts (read_captions gives them)")
    return TextExample(item.text_ids, item.word_starts, image=item.image)


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
        so that N processes see exactly the batches one process would (CMCL gathers its in-batch negatives
        from every process)."""
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
        return get_objective(name).loss(self.model, tensors, self.heads[name] if name in self.heads else None)

    def set_recompute(self, flag: bool) -> None:
        """Recompute the encoder layers in the backward pass (``UNIMOPretrainedModel.set_recompute``); the
        heads are small and keep their activations."""
        self.model.set_recompute(flag)

    def save_pretrained(self, path: str) -> None:
        """The UNIMO model folder (loadable by ``UNIMOLMHeadModel.from_pretrained``) and the heads beside it."""
        self.model.save_pretrained(path)
        paddle.save(self.heads.state_dict(), os.path.join(path, HEADS_FILE))


def objective_configs(names: Sequence[str], overrides: Dict[str, dict], tokenizer, model_config,
                      where: str = "") -> Dict[str, object]:
    """Each objective's config: the specials of the tokenizer, the model's position start and region
    ``overlap_ratio``, then the YAML ``objectives.<name>`` values, checked (``typed.from_dict``). Region rows
    (``max_img_len``) keep the objectives' pretraining default of 101 unless the YAML sets them: the model
    preset's ``max_img_len`` is its fine-tuning length (37 for unimo-base-en). ``objectives.<name>`` of a name
    that is no objective, or the specials or position start (the tokenizer's and model's), is an error (``where``:
    the config file)."""
    from .objectives import OBJECTIVES
    unknown = sorted(set(overrides) - set(OBJECTIVES))
    if unknown:
        raise ConfigError(f"{where}objectives: unknown objective {unknown[0]!r}; "
                          f"known: {', '.join(sorted(OBJECTIVES))}")
    specials = TextSpecials(cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                            pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id,
                            vocab_size=model_config.vocab_size, special_ids=frozenset(tokenizer.special_ids))
    model_values = {"specials": specials, "position_start": model_config.position_start,
                    "overlap_ratio": model_config.overlap_ratio}
    configs = {}
    for name in names:
        cls = get_objective(name).config
        values = {k: v for k, v in model_values.items() if k in cls.__dataclass_fields__}
        fixed = sorted({"specials", "position_start"} & set(overrides.get(name, {})))
        if fixed:
            raise ConfigError(f"{where}objectives.{name}.{fixed[0]}: set from the model and tokenizer, not the config")
        configs[name] = from_dict(cls, {**values, **overrides.get(name, {})}, f"{where}objectives.{name}")
        length = getattr(configs[name], "max_seq_len", 0)
        check_positions(model_config, where.rstrip(": "), {f"objectives.{name}.max_seq_len": (length, length)})
    return configs
