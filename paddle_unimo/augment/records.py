"""The CMCL data file: captions in, one JSON line per caption out, and back into ``CMCLExample``.

Input (``read_captions``): JSON lines ``{"image_id", "caption_id", "caption"}``; ids may be strings or
integers (COCO's are integers) and are kept as strings, the key type of ``RegionStore``.

Output row (``build_rows``; one per caption, in input order)::

    {"image_id": "139", "caption_id": "c1", "caption": "a man riding a red bike",
     "positive_texts":  [{"text": ..., "source": "paraphrase"}, {"text": ..., "source": "corpus", "score": 0.3}],
     "positive_images": [{"image_id": ..., "score": 0.5}],
     "negative_texts":  [{"text": ..., "kind": "attribute", "type": "colour", "old": "red", "new": "blue"},
                         {"text": ..., "kind": "retrieved", "caption_id": ..., "image_id": ..., "score": 0.41}]}

The three lists are exactly ``objectives.cmcl.CMCLExample``'s ``positive_texts`` (X+ sentence rewrites and X^T
texts retrieved from a text corpus), ``positive_images`` (X^I) and ``negative_texts`` (X-: the phrase- and
word-level rewrites, then the captions of other images retrieved by TF-IDF, which the paper takes as sentence-level
hard negatives: similar to the caption, but not a description of its image). A text is in a row once, never the
caption's own words, and a positive is no negative. Texts are stored as text, not token
ids, so one file serves any tokenizer; ``to_example`` tokenizes them and reads the images from a ``RegionStore``
when a batch is built.
"""
from __future__ import annotations

import random
from typing import Dict, Iterator, List, Optional, Sequence

from ..fileio import DataError, read_jsonl
from .retrieval import nearest_corpus_texts, nearest_images, nearest_texts, region_labels
from .rewrite import KINDS, make_negatives
from .scene_graph import parse

__all__ = ["read_captions", "store_image_neighbours", "build_rows", "summarize", "read_rows",
           "to_example"]
_FIELDS = ("image_id", "caption_id", "caption")


def _as_id(value, name: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise DataError(f"{where}: {name} must be a non-empty string or an integer, got {value!r}")
    return str(value)


def read_captions(path) -> List[Dict[str, str]]:
    """The captions file; ``DataError`` naming ``file:line`` on bad JSON, a missing or empty field, a
    duplicate caption_id, and naming the file when it holds no caption. Blank lines are skipped, a UTF-8 byte
    order mark is accepted."""
    rows, first_seen = [], {}
    for where, obj in read_jsonl(path):
        missing = [k for k in _FIELDS if k not in obj]
        if missing:
            raise DataError(f"{where}: expected an object with {list(_FIELDS)}; missing {missing}")
        caption = obj["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: caption must be a non-empty string, got {caption!r}")
        row = {"image_id": _as_id(obj["image_id"], "image_id", where),
               "caption_id": _as_id(obj["caption_id"], "caption_id", where), "caption": caption.strip()}
        line_no = where.rpartition(":")[2]
        seen = first_seen.setdefault(row["caption_id"], line_no)
        if seen != line_no:
            raise DataError(f"{where}: caption_id {row['caption_id']!r} repeats line {seen}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no captions (expected JSON lines {{{', '.join(map(repr, _FIELDS))}}})")
    return rows


def store_image_neighbours(store, k: int, background: Optional[int]) -> Dict[str, List[dict]]:
    """Image id -> its ``k`` nearest images of ``store`` by region-label Jaccard (``retrieval.nearest_images``).
    Reads every record of the store once."""
    ids, labels = [], []
    for record in store:
        ids.append(record.image_id)
        labels.append(region_labels(record, background))
    near = nearest_images(labels, k)
    return {ids[i]: [{"image_id": ids[j], "score": round(score, 6)} for j, score in row] for i, row in enumerate(near)}


def _negatives(caption: Dict[str, str], n: int, seed: int) -> List[dict]:
    """``n`` rewrites from an rng seeded by (seed, caption_id): a caption's negatives do not depend on the
    other captions of the file."""
    rng = random.Random(f"{seed}:{caption['caption_id']}")
    return [{"text": r.text, "kind": r.kind, "type": r.type, "old": r.old, "new": r.new}
            for r in make_negatives(parse(caption["caption"]), n, rng)]


def build_rows(captions: Sequence[Dict[str, str]], negatives: int, retrieved_texts: int, seed: int,
               paraphrases: Optional[Dict[str, List[str]]] = None,
               image_neighbours: Optional[Dict[str, List[dict]]] = None,
               corpus: Sequence[str] = (), corpus_texts: int = 0) -> List[dict]:
    """One output row per caption (see the module docstring): ``negatives`` rewrites and ``retrieved_texts``
    TF-IDF-similar captions of other images as negatives; ``corpus_texts`` texts of ``corpus`` as positives.
    ``image_neighbours`` maps an image id to its retrieved images ``[{"image_id", "score"}]``."""
    paraphrases, image_neighbours = paraphrases or {}, image_neighbours or {}
    texts = [c["caption"] for c in captions]
    similar = nearest_texts(texts, [c["image_id"] for c in captions], retrieved_texts)
    related = nearest_corpus_texts(texts, corpus, corpus_texts)
    rows = []
    for c, near, found in zip(captions, similar, related):
        positives = [{"text": p, "source": "paraphrase"} for p in paraphrases.get(c["caption_id"], [])]
        positives += [{"text": corpus[j], "source": "corpus", "score": round(score, 6)} for j, score in found]
        positives = _distinct(positives, {c["caption"]})
        hard = [{"text": captions[j]["caption"], "kind": "retrieved", "caption_id": captions[j]["caption_id"],
                 "image_id": captions[j]["image_id"], "score": round(score, 6)} for j, score in near]
        rows.append({**c, "positive_texts": positives,
                     "positive_images": list(image_neighbours.get(c["image_id"], [])),
                     "negative_texts": _distinct(_negatives(c, negatives, seed) + hard,
                                                 {c["caption"], *(p["text"] for p in positives)})})
    return rows


def _distinct(items: List[dict], taken: set) -> List[dict]:
    """``items`` whose text is not in ``taken`` and not that of an earlier item: a positive or negative the
    caption itself is no contrast (the same words for another image are no negative), and a text twice would
    weigh double in the loss; a text that is both a positive and a negative stays a positive."""
    out, taken = [], set(taken)
    for item in items:
        if item["text"] not in taken:
            taken.add(item["text"])
            out.append(item)
    return out


def summarize(rows: Sequence[dict]) -> dict:
    """Counts for the tool's summary line."""
    graphs = [parse(r["caption"]) for r in rows]
    kinds = {k: sum(n["kind"] == k for r in rows for n in r["negative_texts"]) for k in (*KINDS, "retrieved")}
    return {"captions": len(rows), "images": len({r["image_id"] for r in rows}),
            "parsed_with_object": sum(bool(g.objects) for g in graphs),
            "parsed_with_relation": sum(bool(g.objects) and bool(g.relations) for g in graphs),
            "negatives": kinds,
            "captions_without_rewrites": sum(not any(n["kind"] in KINDS for n in r["negative_texts"]) for r in rows),
            "paraphrases": sum(p["source"] == "paraphrase" for r in rows for p in r["positive_texts"]),
            "corpus_texts": sum(p["source"] == "corpus" for r in rows for p in r["positive_texts"]),
            "retrieved_images": sum(len(r["positive_images"]) for r in rows)}


def read_rows(path) -> Iterator[dict]:
    """The rows of a file written by ``build_rows`` + ``fileio.write_jsonl`` (``DataError`` naming
    ``file:line`` on bad JSON)."""
    for _, row in read_jsonl(path):
        yield row


def to_example(row: dict, tokenizer, store):
    """A ``CMCLExample``: texts through ``tokenizer.encode`` (content ids, no [CLS]/[SEP]), images from
    ``store`` (a ``RegionStore`` or any mapping-like object with ``get(image_id)``)."""
    from ..objectives.cmcl import CMCLExample  # here: the objectives import paddle, building the file does not
    return CMCLExample(image=store.get(row["image_id"]), text_ids=tokenizer.encode(row["caption"]),
                       positive_texts=[tokenizer.encode(p["text"]) for p in row["positive_texts"]],
                       positive_images=[store.get(p["image_id"]) for p in row["positive_images"]],
                       negative_texts=[tokenizer.encode(n["text"]) for n in row["negative_texts"]])
