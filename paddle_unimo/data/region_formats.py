"""Readers of the region-feature files users already hold, a bottom-up TSV writer, and store conversion.

Every reader yields ``RegionRecord`` (``regions.py``); where a line also carries text, the reader yields
``(RegionRecord, text)`` pairs so that the captions are not lost. Bad input raises ``DataError`` naming
``file:line``. Files are read with ``paddle_unimo.fileio.read_text_lines`` (UTF-8, a byte order mark
accepted); ``.gz`` files are read transparently, by the same rules. Lines are split on their separator
directly (these files never quote), so ``csv.field_size_limit`` does not apply.

Formats (the readers of PaddlePaddle/Research NLP/UNIMO and bottom-up-attention; arrays are base64 of float32 bytes, row-major):

- ``bottom_up_tsv``: ``peteanderson80/bottom-up-attention`` ``tools/generate_tsv.py``; tab-separated, no header,
  ``image_id, image_w, image_h, num_boxes, boxes (n,4), features (n,D)`` and optionally ``cls_prob (n,C)``.
- ``unimo_caption``: original ``src/reader/img2txt_reader.py``; ``;``-separated, 16 fields ``image_id;
  caption_id;token_ids;sent_ids;pos_ids;seg_labels;node_attr_b;node_attr_e;image_h;image_w;number_box;boxes;
  probs;attr_probs;image_embeddings;label``. Height comes before width. ``image_id`` loses its first 9
  characters (the original's ``image_id[9:]``, which is also the key of its object-tag file). ``probs`` and
  ``attr_probs`` are ignored, as the original ignores them.
- ``unimo_retrieval``: original ``src/reader/retrieval_reader.py`` image files; tab-separated, 7 fields
  ``img_filename, image_w, image_h, number_box, boxes, image_embeddings, probs``; probs become class_probs.
  The original train reader unpacks ``image_w, image_h`` but its test reader ``image_h, image_w``; we follow
  the train reader (``wh_order="wh"``) and warn when the boxes fit the other order only.
- ``unimo_ve``: original ``src/reader/visual_entailment_reader.py``; ``;``-separated, 14 fields ``image_id;
  data_id;label;token_ids;sent_ids;pos_ids;_;image_w;image_h;number_box;boxes;image_embeddings;_;_``.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import logging
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ..fileio import DataError, atomic_save, read_text_lines
from .regions import RegionRecord, RegionStore

logger = logging.getLogger(__name__)


@dataclass
class CaptionText:
    """The text of one original captioning line (ids are GPT-2 BPE vocabulary ids; lists empty at test)."""
    image_id: str
    caption_id: str
    token_ids: List[int]
    sent_ids: List[int]
    pos_ids: List[int]
    seg_labels: List[int]
    label: str


@dataclass
class VEText:
    """The text and label of one original SNLI-VE line."""
    image_id: str
    data_id: str
    label: int
    token_ids: List[int]
    sent_ids: List[int]
    pos_ids: List[int]


def _gzip_text_lines(path: str) -> Iterator[Tuple[str, str]]:
    """``fileio.read_text_lines`` for a ``.gz`` file: the same lines, byte order mark and errors."""
    try:
        with gzip.open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                where = f"{path}:{line_no}"
                try:
                    text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
                if text.strip():
                    yield where, text
    except (gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"{path}: broken gzip file ({e})") from None


def _lines(path: str, sep: str) -> Iterator[Tuple[str, List[str]]]:
    """(``file:line``, fields) of every non-blank line."""
    lines = _gzip_text_lines(path) if str(path).endswith(".gz") else read_text_lines(path)
    for where, line in lines:
        yield where, line.split(sep)


def _int(value: str, name: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{where}: {name} must be an integer, got {value[:40]!r}") from None


def _int_list(value: str, name: str, where: str) -> List[int]:
    try:
        return [int(t) for t in value.split()]
    except ValueError:
        raise DataError(f"{where}: {name} must be space-separated integers, got {value[:40]!r}") from None


def _decode(value: str, n: int, name: str, where: str, width: Optional[int] = None) -> np.ndarray:
    """(n, width) float32 array of a base64 field; width is inferred when None."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise DataError(f"{where}: {name} is not valid base64 ({e})") from None
    if len(raw) % 4:
        raise DataError(f"{where}: {name} has {len(raw)} bytes, not a whole number of float32")
    flat = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    width = width or (flat.size // n if flat.size % n == 0 else 0)
    if not width or flat.size != n * width:
        raise DataError(f"{where}: {name} holds {flat.size} floats, not {n} rows"
                        f"{f' of {width}' if width else ''} (num_boxes {n})")
    return flat.reshape(n, width)


def _encode(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype="<f4").tobytes()).decode("ascii")


def _record(where: str, image_id: str, w: str, h: str, n: str, boxes: str, feats: str,
            probs: Optional[str] = None) -> RegionRecord:
    n = _int(n, "num_boxes", where)
    if n <= 0:
        raise DataError(f"{where}: num_boxes must be positive, got {n}")
    try:
        return RegionRecord(image_id.strip(), _int(w, "image_w", where), _int(h, "image_h", where),
                            _decode(boxes, n, "boxes", where, 4), _decode(feats, n, "features", where),
                            None if probs is None else _decode(probs, n, "class probs", where))
    except (TypeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{where}: {e}") from None


def _expect(fields: List[str], counts: Tuple[int, ...], where: str, layout: str) -> None:
    if len(fields) not in counts:
        raise DataError(f"{where}: expected {' or '.join(map(str, counts))} fields ({layout}), got {len(fields)}")


def read_bottom_up_tsv(path: str) -> Iterator[RegionRecord]:
    """Records of a bottom-up-attention TSV (a header line ``image_id<TAB>...`` is skipped)."""
    layout = "image_id, image_w, image_h, num_boxes, boxes, features[, cls_prob]"
    for where, f in _lines(path, "\t"):
        if f[0] == "image_id" and where.endswith(":1"):
            continue
        _expect(f, (6, 7), where, layout)
        yield _record(where, *f[:6], probs=f[6] if len(f) == 7 else None)


def write_bottom_up_tsv(path: str, records: Iterable[RegionRecord]) -> int:
    """Writes records in the bottom-up TSV layout (cls_prob as a 7th field when present), gzip-compressed when
    ``path`` ends in ``.gz``, to a temporary file renamed over ``path``; returns the count."""
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8", newline="") as f:
            for r in records:
                fields = [r.image_id, str(r.image_w), str(r.image_h), str(r.num_boxes), _encode(r.boxes),
                          _encode(r.features)] + ([_encode(r.class_probs)] if r.class_probs is not None else [])
                f.write("\t".join(fields) + "\n")
                count += 1

    atomic_save(path, write)
    return count


def read_unimo_caption(path: str) -> Iterator[Tuple[RegionRecord, CaptionText]]:
    """(record, text) of each line of an original UNIMO captioning file (16 ``;``-separated fields)."""
    for where, f in _lines(path, ";"):
        _expect(f, (16,), where, "original img2txt layout")
        (image_id, caption_id, token_ids, sent_ids, pos_ids, seg_labels, _attr_b, _attr_e,
         image_h, image_w, number_box, boxes, _probs, _attr_probs, feats, label) = f
        image_id = image_id[9:]  # as the original reader: the first 9 characters are a prefix
        if not image_id:
            raise DataError(f"{where}: image_id {f[0]!r} is empty after dropping its 9-character prefix")
        record = _record(where, image_id, image_w, image_h, number_box, boxes, feats)
        lists = [_int_list(v, k, where) for v, k in ((token_ids, "token_ids"), (sent_ids, "sent_ids"),
                                                      (pos_ids, "pos_ids"), (seg_labels, "seg_labels"))]
        if len({len(x) for x in lists}) > 1:
            raise DataError(f"{where}: token_ids, sent_ids, pos_ids, seg_labels differ in length "
                            f"{[len(x) for x in lists]}")
        yield record, CaptionText(image_id, caption_id, *lists, label)


def read_unimo_retrieval(path: str, wh_order: str = "wh") -> Iterator[RegionRecord]:
    """Records of an original UNIMO retrieval image-feature TSV (7 tab-separated fields)."""
    if wh_order not in ("wh", "hw"):
        raise ValueError(f"wh_order must be 'wh' or 'hw', got {wh_order!r}")
    warned = False
    for where, f in _lines(path, "\t"):
        _expect(f, (7,), where, "img_filename, image_w, image_h, number_box, boxes, image_embeddings, probs")
        name, w, h, number_box, boxes, feats, probs = f
        if wh_order == "hw":
            w, h = h, w
        record = _record(where, name, w, h, number_box, boxes, feats, probs)
        if not warned and _fits_swapped_only(record):
            warned = True
            logger.warning("%s: boxes exceed image_w x image_h = %d x %d but fit %d x %d; is the file's order "
                           "height, width? (pass wh_order='hw')", where, record.image_w, record.image_h,
                           record.image_h, record.image_w)
        yield record


def _fits_swapped_only(r: RegionRecord) -> bool:
    xmax, ymax = float(r.boxes[:, 2].max()), float(r.boxes[:, 3].max())
    fits = xmax <= r.image_w + 1 and ymax <= r.image_h + 1
    return not fits and xmax <= r.image_h + 1 and ymax <= r.image_w + 1


def read_unimo_ve(path: str) -> Iterator[Tuple[RegionRecord, VEText]]:
    """(record, text) of each line of an original UNIMO SNLI-VE file (14 ``;``-separated fields)."""
    for where, f in _lines(path, ";"):
        _expect(f, (14,), where, "original visual-entailment layout")
        (image_id, data_id, label, token_ids, sent_ids, pos_ids, _, image_w, image_h,
         number_box, boxes, feats, _, _) = f
        record = _record(where, image_id, image_w, image_h, number_box, boxes, feats)
        lists = [_int_list(v, k, where) for v, k in ((token_ids, "token_ids"), (sent_ids, "sent_ids"),
                                                      (pos_ids, "pos_ids"))]
        if len({len(x) for x in lists}) > 1:
            raise DataError(f"{where}: token_ids, sent_ids, pos_ids differ in length {[len(x) for x in lists]}")
        yield record, VEText(record.image_id, data_id, _int(label, "label", where), *lists)


READERS = {"bottom_up_tsv": read_bottom_up_tsv, "unimo_caption": read_unimo_caption,
           "unimo_retrieval": read_unimo_retrieval, "unimo_ve": read_unimo_ve}


def convert_to_store(reader_iterable: Iterable, store: RegionStore, batch_size: int = 256,
                     skip_existing: bool = True) -> Dict[str, int]:
    """Appends what a reader yields (records or ``(record, text)`` pairs) in shards of ``batch_size`` images.

    Returns ``{"read": lines, "added": new images, "skipped": lines whose image was already stored or seen}``.
    Without ``skip_existing`` a repeated image id raises ValueError (the store is left as of the last shard).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    counts = {"read": 0, "added": 0, "skipped": 0}
    batch, pending = [], set()

    def flush():
        before = len(store)
        store.append(batch, skip_existing=skip_existing)
        counts["added"] += len(store) - before
        counts["skipped"] += len(batch) - (len(store) - before)
        batch.clear()
        pending.clear()

    for item in reader_iterable:
        record = item[0] if isinstance(item, tuple) else item
        counts["read"] += 1
        if skip_existing and (record.image_id in store or record.image_id in pending):
            counts["skipped"] += 1
            continue
        batch.append(record)
        pending.add(record.image_id)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return counts
