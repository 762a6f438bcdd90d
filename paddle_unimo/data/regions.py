"""Image regions: the record type, a sharded on-disk store, the 5-d location and the batch collate.

UNIMO sees an image as up to 100 bottom-up-attention regions (UNIMO paper section 2.1; the image
readers of PaddlePaddle/Research NLP/UNIMO): a 2048-d feature, a location ``[x1/W, y1/H, x2/W, y2/H, (x2-x1)(y2-y1)/(W*H)]`` and
the detector's class distribution. The visual sequence is ``[global, box_1 .. box_n]``; the global row is the
mean region feature with location ``[0, 0, 1, 1, 1]``.

Store layout (one folder, single writer, any number of readers)::

    index.json          the single source of truth: format, version, dtype, feature_dim, num_classes, shards
    shard-000001.bin    records back to back: boxes (n,4), features (n,D), class_probs (n,C) if present,
                        little-endian float32, no padding
    shard-000001.json   the shard's row table: ids, num_boxes, image_w, image_h, has_probs (in write order)

A shard and its table are written under temporary names, renamed, and only then made live by rewriting
``index.json`` (temp file + ``os.replace``). Files that the index does not name are ignored, and removed by
the next ``append``. ``get`` reads one record's byte range (seek + read), never a whole shard.

Parts: a sub-folder that is itself a store (``worker-00/index.json``, ``worker-00/shard-000001.*``), written by
its own single writer, e.g. one process of ``tools/extract_regions.py --nproc``. ``add_parts`` lists the
parts' shards in this index as ``worker-00/shard-000001``, in one index rewrite and without copying data, so
readers see one store; the part folders then belong to the store.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from ..fileio import DataError, atomic_write, read_json, write_json

FORMAT = "paddle_unimo.region_store"
VERSION = 1
INDEX = "index.json"
GLOBAL_LOC = (0.0, 0.0, 1.0, 1.0, 1.0)
_DTYPE = np.dtype("<f4")
_OURS = re.compile(r"^(shard-\d{6,})\.(bin|json)(\.tmp)?$")


@dataclass
class RegionRecord:
    """One image's regions. ``boxes`` are pixel ``x1, y1, x2, y2``; every array is float32."""
    image_id: str
    image_w: int
    image_h: int
    boxes: np.ndarray  # (n, 4)
    features: np.ndarray  # (n, D)
    class_probs: Optional[np.ndarray] = None  # (n, C)

    def __post_init__(self):
        who = f"image {self.image_id!r}"
        if not isinstance(self.image_id, str) or not self.image_id:
            raise TypeError(f"{who}: image_id must be a non-empty str, got {type(self.image_id).__name__}")
        for name in ("image_w", "image_h"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
            setattr(self, name, int(value))
        arrays = [("boxes", self.boxes, 4), ("features", self.features, None)]
        if self.class_probs is not None:
            arrays.append(("class_probs", self.class_probs, None))
        for name, arr, width in arrays:
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
                kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
                raise TypeError(f"{who}: {name} must be a float32 numpy array, got {kind}")
            if arr.ndim != 2 or (width and arr.shape[1] != width) or arr.shape[1] == 0:
                raise ValueError(f"{who}: {name} must have shape (n, {width or 'D>0'}), got {arr.shape}")
            if arr.shape[0] != self.boxes.shape[0]:
                raise ValueError(f"{who}: {name} has {arr.shape[0]} rows but boxes has {self.boxes.shape[0]}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{who}: {name} contains NaN or inf")
        if (self.boxes[:, 2] < self.boxes[:, 0]).any() or (self.boxes[:, 3] < self.boxes[:, 1]).any():
            raise ValueError(f"{who}: boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.class_probs is None else int(self.class_probs.shape[1])


def region_locations(boxes: np.ndarray, image_w: int, image_h: int) -> np.ndarray:
    """(n, 5) float32 ``[x1/W, y1/H, x2/W, y2/H, area/(W*H)]`` of pixel boxes clipped to the image first.

    The original readers divide without clipping; bottom-up-attention already clips its boxes to the image,
    so the two agree on its output.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, x2 = (np.clip(boxes[:, i], 0.0, image_w) for i in (0, 2))
    y1, y2 = (np.clip(boxes[:, i], 0.0, image_h) for i in (1, 3))
    area = (x2 - x1) * (y2 - y1) / (float(image_w) * float(image_h))
    return np.stack([x1 / image_w, y1 / image_h, x2 / image_w, y2 / image_h, area], axis=1).astype(np.float32)


def collate_regions(records: Sequence[RegionRecord], max_img_len: int, *, global_mean: str = "all"
                    ) -> Dict[str, np.ndarray]:
    """Pads a batch of images into the model's region inputs, R = min(max_img_len, 1 + max boxes).

      region_feats        (B, R, D) float32  row 0 the global feature, rows 1..k the kept boxes, zero-padded
      region_locs         (B, R, 5) float32  row 0 [0, 0, 1, 1, 1], rows 1..k region_locations, zero-padded
      region_valid        (B, R) bool        True on row 0 and the kept boxes; all False for an image with 0 boxes
      region_class_probs  (B, R, C) float32  only when every record has class_probs; global and padding rows 0
      num_regions         (B,) int64         the number of True entries in region_valid

    Truncation keeps the first ``max_img_len - 1`` boxes. ``global_mean="all"`` averages every box of the
    image, as the original ``img2txt_reader.py`` does (it builds ``[mean of all boxes, box_1..box_n]`` and
    only then cuts the sequence to ``max_img_len``); ``"kept"`` averages the kept boxes only. An image with
    no boxes is masked out entirely, as the original ``pad_feature_data`` does (``batch_image_size[i] > 1``).
    """
    if not records:
        raise ValueError("collate_regions: empty batch")
    if max_img_len < 1:
        raise ValueError(f"collate_regions: max_img_len must be >= 1, got {max_img_len}")
    if global_mean not in ("all", "kept"):
        raise ValueError(f"collate_regions: global_mean must be 'all' or 'kept', got {global_mean!r}")
    dims = {r.feature_dim for r in records}
    if len(dims) > 1:
        raise ValueError(f"collate_regions: mixed feature dims {sorted(dims)} in one batch")
    with_probs = all(r.class_probs is not None for r in records)
    classes = {r.num_classes for r in records} if with_probs else set()
    if len(classes) > 1:
        raise ValueError(f"collate_regions: mixed class counts {sorted(classes)} in one batch")
    B, D, R = len(records), dims.pop(), min(max_img_len, 1 + max(r.num_boxes for r in records))
    feats = np.zeros((B, R, D), np.float32)
    locs = np.zeros((B, R, 5), np.float32)
    valid = np.zeros((B, R), bool)
    probs = np.zeros((B, R, classes.pop()), np.float32) if with_probs else None
    for b, rec in enumerate(records):
        k = min(rec.num_boxes, R - 1)
        if rec.num_boxes == 0:
            continue
        pool = rec.features if global_mean == "all" else rec.features[:k]
        feats[b, 0] = pool.mean(axis=0, dtype=np.float64)
        feats[b, 1:k + 1] = rec.features[:k]
        locs[b, 0] = GLOBAL_LOC
        locs[b, 1:k + 1] = region_locations(rec.boxes[:k], rec.image_w, rec.image_h)
        valid[b, :k + 1] = True
        if probs is not None:
            probs[b, 1:k + 1] = rec.class_probs[:k]
    batch = {"region_feats": feats, "region_locs": locs, "region_valid": valid}
    if probs is not None:
        batch["region_class_probs"] = probs
    batch["num_regions"] = valid.sum(axis=1).astype(np.int64)
    return batch


class _Shard:
    """A live shard's row table; offsets follow from the row sizes."""

    def __init__(self, name: str, table: dict, feature_dim: int, num_classes: Optional[int]):
        self.name = name
        self.ids: List[str] = table["ids"]
        self.num_boxes: List[int] = table["num_boxes"]
        self.image_w: List[int] = table["image_w"]
        self.image_h: List[int] = table["image_h"]
        self.has_probs: List[bool] = table["has_probs"]
        if not len(self.ids) == len(self.num_boxes) == len(self.image_w) == len(self.image_h) == len(self.has_probs):
            raise ValueError(f"{name}.json: row table columns differ in length")
        widths = [4 + feature_dim + (num_classes if p else 0) for p in self.has_probs]
        self.sizes = [n * w * _DTYPE.itemsize for n, w in zip(self.num_boxes, widths)]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])[:-1].tolist()

    @property
    def nbytes(self) -> int:
        return int(sum(self.sizes))


class RegionStore:
    """A folder of region records keyed by image id (see the module docstring for the layout)."""

    def __init__(self, path, feature_dim: Optional[int] = None):
        self.path = os.fspath(path)
        self._feature_dim: Optional[int] = None
        self._num_classes: Optional[int] = None
        self._shards: List[_Shard] = []
        self._where: Dict[str, tuple] = {}
        self._ids: List[str] = []
        self._load()
        if feature_dim is not None:
            if self._feature_dim is not None and self._feature_dim != feature_dim:
                raise ValueError(f"{self.path}: store holds feature_dim {self._feature_dim}, not {feature_dim}")
            self._feature_dim = int(feature_dim)

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def feature_dim(self) -> Optional[int]:
        return self._feature_dim

    @property
    def num_classes(self) -> Optional[int]:
        return self._num_classes

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id) -> bool:
        return image_id in self._where

    def ids(self) -> List[str]:
        return list(self._ids)

    def __repr__(self) -> str:
        return (f"RegionStore({self.path!r}: {len(self)} images, {len(self._shards)} shards, "
                f"feature_dim={self._feature_dim}, num_classes={self._num_classes})")

    def get(self, image_id: str) -> RegionRecord:
        if image_id not in self._where:
            some = ", ".join(repr(i) for i in self._ids[:5]) + (", ..." if len(self._ids) > 5 else "")
            hint = " (ids are str)" if not isinstance(image_id, str) else ""
            raise KeyError(f"image id {image_id!r} is not in region store {self.path}{hint}; "
                           f"it holds {len(self)} images, e.g. [{some}]")
        s, row = self._where[image_id]
        with open(os.path.join(self.path, self._shards[s].name + ".bin"), "rb") as f:
            return self._read(f, self._shards[s], row)

    def __iter__(self) -> Iterator[RegionRecord]:
        for shard in self._shards:
            with open(os.path.join(self.path, shard.name + ".bin"), "rb") as f:
                for row in range(len(shard.ids)):
                    yield self._read(f, shard, row)

    def _read(self, f, shard: _Shard, row: int) -> RegionRecord:
        n, size = shard.num_boxes[row], shard.sizes[row]
        buf = bytearray(size)
        f.seek(shard.offsets[row])
        got = f.readinto(buf)
        if got != size:
            raise IOError(f"{f.name}: record {shard.ids[row]!r} is truncated ({got} of {size} bytes at offset "
                          f"{shard.offsets[row]}); the shard file is damaged")
        flat = np.frombuffer(buf, dtype=_DTYPE).astype(np.float32, copy=False)
        ends = np.cumsum([4 * n, self._feature_dim * n])
        probs = flat[ends[1]:].reshape(n, self._num_classes) if shard.has_probs[row] else None
        return RegionRecord(shard.ids[row], shard.image_w[row], shard.image_h[row], flat[:ends[0]].reshape(n, 4),
                            flat[ends[0]:ends[1]].reshape(n, self._feature_dim), probs)

    def _read_index(self) -> Optional[dict]:
        path = os.path.join(self.path, INDEX)
        if not os.path.exists(path):
            return None
        index = read_json(path, "region store index")
        if index.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} index (format={index.get('format')!r})")
        if index.get("version") != VERSION:
            raise ValueError(f"{path}: unsupported store version {index.get('version')!r}; this code reads {VERSION}")
        if index.get("dtype") != _DTYPE.str:
            raise ValueError(f"{path}: unsupported dtype {index.get('dtype')!r}; expected {_DTYPE.str!r}")
        return index

    def _load(self) -> None:
        index = self._read_index()
        if index is None:
            return
        self._feature_dim, self._num_classes = index["feature_dim"], index["num_classes"]
        for entry in index["shards"]:
            table_path = os.path.join(self.path, entry["name"] + ".json")
            shard = _Shard(entry["name"], read_json(table_path, "region store shard table"), self._feature_dim,
                           self._num_classes)
            if len(shard.ids) != entry["num_records"] or shard.nbytes != entry["bytes"]:
                raise ValueError(f"{table_path}: {len(shard.ids)} records / {shard.nbytes} bytes, but {INDEX} "
                                 f"says {entry['num_records']} / {entry['bytes']}")
            data = os.path.join(self.path, entry["name"] + ".bin")
            if os.path.isfile(data) and os.path.getsize(data) < shard.nbytes:  # records are read when used: a
                raise ValueError(f"{data}: {os.path.getsize(data)} bytes, but its table holds {shard.nbytes}; the "
                                 "shard file is truncated")  # cut shard is named when the store opens
            self._add_shard(shard)

    def _add_shard(self, shard: _Shard) -> None:
        s = len(self._shards)
        self._shards.append(shard)
        for row, image_id in enumerate(shard.ids):
            self._where[image_id] = (s, row)
        self._ids.extend(shard.ids)

    # -- writing ---------------------------------------------------------------------------------------
    def append(self, records: Sequence[RegionRecord], skip_existing: bool = False) -> None:
        """Adds ``records`` as one new shard. A known id raises ValueError, or is skipped with skip_existing."""
        fresh = self._select_new(list(records), skip_existing)
        if not fresh:
            return
        feature_dim, num_classes = self._check_dims(fresh)
        os.makedirs(self.path, exist_ok=True)
        self._check_unchanged()
        self._remove_orphans()
        seq = 1 + max([int(s.name.split("-")[1]) for s in self._shards if "/" not in s.name], default=0)
        name = f"shard-{seq:06d}"
        atomic_write(os.path.join(self.path, name + ".bin"), (
            np.ascontiguousarray(a, dtype=_DTYPE).tobytes()
            for r in fresh for a in (r.boxes, r.features, r.class_probs) if a is not None))
        table = {"ids": [r.image_id for r in fresh], "num_boxes": [r.num_boxes for r in fresh],
                 "image_w": [r.image_w for r in fresh], "image_h": [r.image_h for r in fresh],
                 "has_probs": [r.class_probs is not None for r in fresh]}
        write_json(os.path.join(self.path, name + ".json"), table, indent=None)
        self._make_live([_Shard(name, table, feature_dim, num_classes)], feature_dim, num_classes)

    def add_parts(self, parts: Sequence[str]) -> int:
        """Makes the shards of the stores in the sub-folders ``parts`` live in this store (see the module
        docstring) and returns the number of images added. Shards already listed are skipped, so calling it
        again after a part grew adds only its new shards. An image id in two places raises ValueError."""
        new, feature_dim, num_classes = [], self._feature_dim, self._num_classes
        listed = {s.name for s in self._shards}
        for part in parts:
            if not part or part in (".", "..") or "/" in part or os.sep in part:
                raise ValueError(f"{self.path}: a part is a sub-folder name, got {part!r}")
            sub = RegionStore(os.path.join(self.path, part))
            fresh = [s for s in sub._shards if f"{part}/{s.name}" not in listed]
            if not fresh:
                continue
            for dim, ours, theirs in (("feature_dim", feature_dim, sub.feature_dim),
                                      ("num_classes", num_classes, sub.num_classes)):
                if ours is not None and theirs is not None and ours != theirs:
                    raise ValueError(f"{sub.path}: part has {dim} {theirs}, the store {ours}")
            feature_dim, num_classes = feature_dim or sub.feature_dim, num_classes or sub.num_classes
            for shard in fresh:
                shard.name = f"{part}/{shard.name}"
                new.append(shard)
        self._check_no_duplicates(new)
        if new:
            self._check_unchanged()
            self._make_live(new, feature_dim, num_classes)
        return sum(len(s.ids) for s in new)

    def _check_no_duplicates(self, shards: List[_Shard]) -> None:
        where = {}
        for shard in shards:
            for image_id in shard.ids:
                other = (self._shards[self._where[image_id][0]].name if image_id in self._where
                         else where.get(image_id))
                if other is not None:
                    raise ValueError(f"{self.path}: image id {image_id!r} is in both {other} and {shard.name}")
                where[image_id] = shard.name

    def _make_live(self, shards: List[_Shard], feature_dim: int, num_classes: Optional[int]) -> None:
        """Rewrites the index with ``shards`` added after the live ones."""
        entries = [{"name": s.name, "num_records": len(s.ids), "bytes": s.nbytes} for s in self._shards + shards]
        index = {"format": FORMAT, "version": VERSION, "dtype": _DTYPE.str, "box_dim": 4,
                 "feature_dim": feature_dim, "num_classes": num_classes,
                 "num_records": len(self) + sum(len(s.ids) for s in shards), "shards": entries}
        write_json(os.path.join(self.path, INDEX), index)
        self._feature_dim, self._num_classes = feature_dim, num_classes
        for shard in shards:
            self._add_shard(shard)

    def _select_new(self, records: List[RegionRecord], skip_existing: bool) -> List[RegionRecord]:
        seen, fresh, dups = set(), [], []
        for rec in records:
            if not isinstance(rec, RegionRecord):
                raise TypeError(f"RegionStore.append takes RegionRecords, got {type(rec).__name__}")
            if rec.image_id in self._where or rec.image_id in seen:
                dups.append(rec.image_id)
                continue
            seen.add(rec.image_id)
            fresh.append(rec)
        if dups and not skip_existing:
            raise ValueError(f"{self.path}: image ids already in the store or repeated in the batch: {dups[:5]}"
                             f"{' ...' if len(dups) > 5 else ''} ({len(dups)} in all); pass skip_existing=True "
                             "to skip them")
        return fresh

    def _check_dims(self, records: List[RegionRecord]) -> tuple:
        feature_dim, num_classes = self._feature_dim, self._num_classes
        for rec in records:
            feature_dim = feature_dim or rec.feature_dim
            if rec.feature_dim != feature_dim:
                raise ValueError(f"{self.path}: image {rec.image_id!r} has feature_dim {rec.feature_dim}, "
                                 f"the store {feature_dim}")
            if rec.num_classes is not None:
                num_classes = num_classes or rec.num_classes
                if rec.num_classes != num_classes:
                    raise ValueError(f"{self.path}: image {rec.image_id!r} has {rec.num_classes} classes, "
                                     f"the store {num_classes}")
        return feature_dim, num_classes

    def _check_unchanged(self) -> None:
        """Refuses to write when another writer has changed the index since this store was opened."""
        index = self._read_index()
        on_disk = [e["name"] for e in index["shards"]] if index else []
        if on_disk != [s.name for s in self._shards]:
            raise RuntimeError(f"{self.path}: {INDEX} changed since the store was opened (another writer?); "
                               "reopen the store")

    def _remove_orphans(self) -> None:
        live = {s.name for s in self._shards}
        for name in os.listdir(self.path):
            m = _OURS.match(name)
            if (m and m.group(1) not in live) or (m and m.group(3)) or name == INDEX + ".tmp":
                os.remove(os.path.join(self.path, name))


def open_store(path: str) -> "RegionStore":
    """An existing store to read; a folder without ``index.json`` is a ``DataError`` (``RegionStore`` itself starts
    an empty store there, for writing)."""
    if not os.path.isfile(os.path.join(path, INDEX)):
        raise DataError(f"{path}: not a region store (no {INDEX}); give a folder written by make extract-regions or "
                        "make convert-regions")
    try:
        return RegionStore(path)
    except ValueError as e:  # a damaged store: its message names the file
        raise DataError(str(e)) from None
