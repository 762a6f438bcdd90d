"""UNIMO pretraining (paper section 2): corpora, the objective mixture, and the model the trainer drives.

Three kinds of corpus, each listing its objectives and a mixing ratio:
  text   plain text lines (``.txt``) or string fields of JSON lines       -> span_mlm, seq2seq_lm
  image  a region feature store (``paddle_unimo.data.regions``)           -> region
  pair   captions (JSON lines ``{"image_id", "caption", ...}``) + a store -> region (image+text), cmcl

A corpus entry of the config (``CorpusSpec``) is checked before anything is read: a missing or unknown key,
an unknown kind or a ratio that is not a positive number is an error naming the corpus and the key.

A corpus's items are made when drawn (``LazyItems``): in memory it holds only where each item is -- the byte
offset of a text line or caption row, an image id -- so corpora larger than the memory train (the paper's
BookWiki and OpenWebText, OpenImages, 4 M image-text pairs with 100 regions each). Files are checked whole when a
corpus loads (a malformed row is an error naming ``file:line`` before training starts); the offsets of a file can
be kept in a cache folder and memory-mapped, shared by the processes of a node.

Every micro-batch uses one (corpus, objective) pair, drawn with probability ``ratio / len(objectives)`` from a
generator seeded by the run's seed and the micro-batch index, so every process draws the same pair; the
examples are drawn the same way and each process takes its slice of the global batch.
"""
from __future__ import annotations

import array
import contextlib
import hashlib
import logging
import operator
import os
import tempfile
import uuid
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn

from . import fileio
from .augment.records import to_example
from .data.regions import RegionStore, open_store
from .objectives import TextExample, TextSpecials, get_objective, text_example
from .objectives.region import RegionExample
from .config import check_positions
from .typed import ConfigError, bounded, from_dict, join

logger = logging.getLogger(__name__)
HEADS_FILE = "pretraining_heads.pdparams"
INDEX_VERSION = 1  # the layout of the saved line indexes (part of their cache key)
KIND_OBJECTIVES = {"text": {"span_mlm", "seq2seq_lm"}, "image": {"region"},
                   "pair": {"region", "cmcl", "span_mlm", "seq2seq_lm"}}


@dataclass
class Corpus:
    name: str
    kind: str  # text | image | pair
    objectives: List[str]
    ratio: float
    items: Sequence = field(default_factory=list)  # TextExample | RegionRecord | CMCLExample (a LazyItems)

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


class LazyItems(SequenceABC):
    """A corpus's items made when drawn: ``places[i]`` says where item i is (a row of offsets, an image id) and
    ``make(place)`` reads it -- or says, as a string, why that item cannot be used (a text whose tokens the
    tokenizer all drops): the next usable item then stands in, and a warning names the unusable one once."""

    def __init__(self, name: str, places: Sequence, make: Callable):
        self.name, self.places, self.make, self.unusable = name, places, make, set()

    def __len__(self) -> int:
        return len(self.places)

    def __getitem__(self, i):
        i, n = operator.index(i), len(self.places)
        if not -n <= i < n:
            raise IndexError(f"corpus {self.name!r}: item {i} of {n}")
        for k in range(n):
            j = (i + k) % n
            item = self.make(self.places[j])
            if not isinstance(item, str):
                return item
            if j not in self.unusable:
                self.unusable.add(j)
                logger.warning("corpus %r: %s; the next item stands in", self.name, item)
        raise fileio.DataError(f"corpus {self.name!r}: no item is usable (no text has a token)")


class IndexedFile:
    """A text file read at the byte offsets of its index (``line_index``). A file that changed since it was
    indexed (another size or time) is an error: its offsets would read other lines."""

    def __init__(self, path: str):
        self.path = path
        info = os.stat(path)
        self.stamp = (info.st_size, info.st_mtime_ns)

    def line(self, offset: int, line_no: int) -> str:
        info = os.stat(self.path)
        if (info.st_size, info.st_mtime_ns) != self.stamp:
            raise fileio.DataError(f"{self.path}: changed since this run indexed it; a corpus must not change "
                                   "during a run (restart it: a changed file is indexed anew)")
        return fileio.read_line_at(self.path, offset, line_no)


def usable_fields(record: dict, fields: Sequence[str]) -> List[int]:
    """The indices of the ``fields`` of a JSON-lines object that hold a non-blank string."""
    return [j for j, k in enumerate(fields) if isinstance(record.get(k), str) and record[k].strip()]


def line_index(path: str, fields: Sequence[str] = (), cache: Optional[str] = None,
               check: Optional[Callable[[str, dict], None]] = None) -> np.ndarray:
    """``(offset, line, field)`` int64 rows of a text file's usable items: its non-blank lines (field -1), or of a
    JSON-lines file (``fields`` or ``check``: each line an object) each non-blank string ``fields[field]`` of each
    object, checked as ``read_text_lines`` checks them; ``check(file:line, object)`` checks each object further
    (its rows: field -1). With ``cache`` a folder and no ``check``, the rows are saved there, keyed by the file's
    path, size and time and the fields, and memory-mapped: a process that finds them there reads no text. The
    processes of a node that start together take turns through a lock file of the folder in the system's temporary
    folder: one indexes, the others then read its rows (``flock``; without it, each indexes the file itself)."""
    if not cache or check is not None:
        return _index_lines(path, fields, check)
    info = os.stat(path)
    key = repr((INDEX_VERSION, os.path.abspath(path), info.st_size, info.st_mtime_ns, list(fields)))
    saved = os.path.join(cache, f"lines-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:20]}.npy")
    lock = hashlib.sha1(os.path.abspath(cache).encode("utf-8")).hexdigest()[:20]
    with _locked(os.path.join(tempfile.gettempdir(), f"paddle_unimo-index-{lock}.lock")):
        if os.path.exists(saved):
            try:
                return np.load(saved, mmap_mode="r")
            except (OSError, ValueError, EOFError) as e:  # a file cut short by a crash: index anew
                logger.warning("%s: unreadable index of %s (%s); indexing it anew", saved, path, e)
        rows = _index_lines(path, fields, None)
        if not len(rows):  # an empty file: nothing to keep (the corpus check names it)
            return rows
        os.makedirs(cache, exist_ok=True)
        tmp = f"{saved}.{uuid.uuid4().hex}.tmp"  # nodes sharing the folder may write it at once
        with open(tmp, "wb") as f:
            np.save(f, rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, saved)
        return np.load(saved, mmap_mode="r")


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive ``flock`` on ``path`` (created if needed) while the block runs; none where locks are missing
    (not POSIX, or a file system without them)."""
    try:
        import fcntl
        handle = open(path, "a+b")
    except (ImportError, OSError):
        handle = None
    if handle is None:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as e:
            logger.info("%s: no lock (%s); indexing without one", path, e)
        yield  # closing the file releases the lock


def _index_lines(path: str, fields: Sequence[str], check) -> np.ndarray:
    flat = array.array("q")  # 24 bytes a row while indexing
    for line_no, offset, text in fileio.text_lines_at(path):
        if not fields and check is None:
            flat.extend((offset, line_no, -1))
            continue
        where = f"{path}:{line_no}"
        record = fileio.parse_json_line(where, text)
        if check is not None:
            check(where, record)
            flat.extend((offset, line_no, -1))
        for j in usable_fields(record, fields):
            flat.extend((offset, line_no, j))
    return np.frombuffer(flat, np.int64).reshape(-1, 3)


def read_text_lines(path: str, fields: Sequence[str] = ()) -> List[str]:
    """The non-blank lines (stripped) of a text file, or the non-blank string ``fields`` of each object of a
    JSON-lines file (the texts ``text_items`` draws). A malformed line is a ``fileio.DataError`` naming
    ``file:line``."""
    if not fields:
        return [text.strip() for _, text in fileio.read_text_lines(path)]
    return [record[fields[j]] for _, record in fileio.read_jsonl(path) for j in usable_fields(record, fields)]


def text_items(name: str, paths: Sequence[str], fields: Sequence[str], tokenizer, chinese: bool = False,
               cache: Optional[str] = None) -> LazyItems:
    """The ``TextExample``s of text files (``line_index``), tokenized when drawn."""
    files = [IndexedFile(p) for p in paths]  # stamped before indexing: a change while indexing is seen too
    indexes = [line_index(p, fields, cache) for p in paths]
    ends = np.cumsum([len(x) for x in indexes])

    def make(i):
        f = int(np.searchsorted(ends, i, side="right"))
        offset, line_no, j = (int(v) for v in indexes[f][i - (ends[f - 1] if f else 0)])
        text = files[f].line(offset, line_no)
        if j >= 0:
            text = fileio.parse_json_line(f"{files[f].path}:{line_no}", text)[fields[j]]
        example = text_example(text.strip() if j < 0 else text, tokenizer, chinese=chinese)
        return example if example.token_ids else f"{files[f].path}:{line_no}: no token in this text"
    return LazyItems(name, range(int(ends[-1]) if len(ends) else 0), make)


def read_captions(path: str, store: RegionStore, tokenizer, chinese: bool = False, name: str = "pairs") -> LazyItems:
    """CMCL examples of a captions file in ``tools/build_cmcl_data.py``'s format (``image_id``, ``caption``,
    ``positive_texts``/``negative_texts`` as ``{"text": ...}``, ``positive_images`` as ``{"image_id": ...}``),
    with the caption's word starts (``text_example``) for the text objectives, made when drawn. Every row is
    checked first: a malformed line, a missing key, a text that is no string or an image not in ``store`` is a
    ``fileio.DataError`` naming ``file:line``."""
    source = IndexedFile(path)
    rows = line_index(path, check=lambda where, row: check_caption_row(where, row, store))

    def make(row):
        offset, line_no, _ = (int(v) for v in row)
        where = f"{path}:{line_no}"
        record = _caption_row(where, fileio.parse_json_line(where, source.line(offset, line_no)))
        example = to_example(record, tokenizer, store)
        caption = text_example(record["caption"], tokenizer, chinese=chinese)
        if not caption.token_ids:
            return f"{where}: no token in caption {record['caption']!r}"
        example.text_ids, example.word_starts = caption.token_ids, caption.word_starts
        return example
    return LazyItems(name, rows, make)


def check_caption_row(where: str, row: dict, store: RegionStore) -> None:
    """A captions row ``read_captions`` can make an example of: keys, lists, texts and images; else a DataError."""
    row = _caption_row(where, row)
    texts = [row["caption"]] + [t["text"] for k in ("positive_texts", "negative_texts") for t in row[k]]
    for text in texts:
        if not isinstance(text, str):
            raise fileio.DataError(f"{where}: text {text!r} is not a string")
    if not row["caption"].strip():
        raise fileio.DataError(f"{where}: caption {row['caption']!r} has no token")
    for image_id in [row["image_id"]] + [p["image_id"] for p in row["positive_images"]]:
        if not isinstance(image_id, str):
            raise fileio.DataError(f"{where}: image id {image_id!r} is not a string")
        if image_id not in store:
            try:
                store.get(image_id)
            except KeyError as e:  # the store's message: which images it holds
                raise fileio.DataError(f"{where}: {e.args[0] if e.args else e}") from None


def store_items(name: str, store: RegionStore) -> LazyItems:
    """The ``RegionRecord``s of a region store, read when drawn."""
    return LazyItems(name, store.ids(), store.get)


def load_corpus(spec: dict, tokenizer, root: str = "", chinese: bool = False, cache: Optional[str] = None) -> Corpus:
    """A corpus from its config entry (``CorpusSpec``), checked before any file is read; its files are checked
    whole and indexed (``cache``: a folder keeping the indexes, see ``line_index``), its items made when drawn."""
    spec = corpus_spec(spec)
    path = lambda p: os.path.join(root, p)  # noqa: E731
    if spec.kind == "text":
        items = text_items(spec.name, [path(p) for p in spec.paths], spec.fields, tokenizer, chinese, cache)
    elif spec.kind == "image":
        items = store_items(spec.name, open_store(path(spec.regions)))
    else:
        items = read_captions(path(spec.captions), open_store(path(spec.regions)), tokenizer, chinese, spec.name)
    if not len(items):
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
