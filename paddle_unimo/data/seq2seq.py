"""Seq2seq data for generation fine-tuning: readers of the 千言 files, encoding, and the training/decoding
collators (UNIMO_FACTS.md sections 2-3).

Files are JSON lines, or the original LCSTS TSV ``summary<TAB>content``. A task names which fields are the
source, the optional title and the target (DuReaderQG: context / answer / question).

Bad input names the file and line: malformed JSON, a missing field, an empty target, bytes that are not
UTF-8. With ``skip_bad`` such lines are skipped and counted instead.

Encoding follows PaddleNLP's ``gen_encode``: ``[CLS] title [SEP] source [SEP]`` then ``[CLS] target
[MASK]`` ([MASK] is the eos). Documented truncation: the title keeps ``max_title_len - 1`` tokens, the target
``max_target_len - 2``, and the source whatever is left of ``max_seq_len``; each truncation is counted and
reported once per file as a warning.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import masks

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


class DataError(ValueError):
    """Bad input data; the message starts with ``file:line``."""


@dataclass(frozen=True)
class Fields:
    source: str
    target: str
    title: Optional[str] = None
    id: Optional[str] = None


@dataclass
class Example:
    id: str
    source: str
    target: Optional[str]
    title: Optional[str] = None


@dataclass
class ReadReport:
    path: str
    read: int = 0
    skipped: List[str] = field(default_factory=list)  # "file:line: reason"


def _parse_line(raw: bytes, where: str, fields: Fields, tsv: bool, need_target: bool, line_no: int) -> Example:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
    text = text.rstrip("\r\n")
    if tsv:
        parts = text.split("\t")
        if len(parts) != 2:
            raise DataError(f"{where}: expected 'summary<TAB>content', got {len(parts)} columns")
        record = {fields.target: parts[0], fields.source: parts[1]}
    else:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    needed = [fields.source] + ([fields.title] if fields.title else []) + ([fields.target] if need_target else [])
    for name in needed:
        if name not in record:
            raise DataError(f"{where}: missing field '{name}' (has {sorted(record)})")
        if not isinstance(record[name], str):
            raise DataError(f"{where}: field '{name}' must be a string, got {type(record[name]).__name__}")
    target = record.get(fields.target)
    if need_target and not target.strip():
        raise DataError(f"{where}: empty target '{fields.target}'")
    if not record[fields.source].strip():
        raise DataError(f"{where}: empty source '{fields.source}'")
    ident = str(record.get(fields.id, line_no)) if fields.id else str(line_no)
    return Example(ident, record[fields.source], target, record.get(fields.title) if fields.title else None)


def read_examples(path: str, fields: Fields, need_target: bool = True, skip_bad: bool = False):
    """Reads a JSONL (or LCSTS ``.tsv``) file; returns (examples, ReadReport)."""
    tsv = path.endswith(".tsv")
    examples, report = [], ReadReport(path)
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                examples.append(_parse_line(raw, f"{path}:{line_no}", fields, tsv, need_target, line_no))
            except DataError as e:
                if not skip_bad:
                    raise
                report.skipped.append(str(e))
    report.read = len(examples)
    if report.skipped:
        logger.warning("%s: skipped %d bad lines (first: %s)", path, len(report.skipped), report.skipped[0])
    if not examples:
        raise DataError(f"{path}: no usable examples")
    return examples, report


@dataclass
class Encoded:
    source_ids: List[int]  # [CLS] title [SEP] source [SEP]
    target_ids: List[int]  # [CLS] target [MASK], or [CLS] alone for decoding


class Seq2SeqEncoder:
    """Token ids of examples, with counted truncation (see the module docstring)."""

    def __init__(self, tokenizer, max_seq_len: int, max_target_len: int, max_title_len: int = 0):
        if max_seq_len <= max_target_len + max_title_len + 2:
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for the source after max_target_len "
                             f"{max_target_len} and max_title_len {max_title_len}")
        self.tok = tokenizer
        self.max_seq_len, self.max_target_len, self.max_title_len = max_seq_len, max_target_len, max_title_len
        self.truncated = {"source": 0, "title": 0, "target": 0}

    def _cut(self, ids: List[int], limit: int, what: str) -> List[int]:
        if len(ids) > limit:
            self.truncated[what] += 1
            return ids[:max(limit, 0)]
        return ids

    def encode(self, example: Example, with_target: bool = True) -> Encoded:
        t = self.tok
        title = []
        if example.title is not None:
            title = self._cut(t.encode(example.title), self.max_title_len - 1, "title") + [t.sep_token_id]
        if with_target:
            target = [t.cls_token_id] + self._cut(t.encode(example.target), self.max_target_len - 2, "target") \
                + [t.mask_token_id]
        else:
            target = [t.cls_token_id]
        room = self.max_seq_len - len(target) - len(title) - 2
        source = self._cut(t.encode(example.source), room, "source")
        return Encoded([t.cls_token_id] + title + source + [t.sep_token_id], target)

    def encode_all(self, examples: Sequence[Example], with_target: bool = True, where: str = "") -> List[Encoded]:
        before = dict(self.truncated)
        out = [self.encode(e, with_target) for e in examples]
        cut = {k: self.truncated[k] - before[k] for k in before if self.truncated[k] > before[k]}
        if cut:
            logger.warning("%s: truncated %s (max_seq_len %d, max_target_len %d, max_title_len %d)", where or
                           "examples", ", ".join(f"{n} {k}s" for k, n in cut.items()), self.max_seq_len,
                           self.max_target_len, self.max_title_len)
        return out


def training_batch(items: Sequence[Encoded], pad_id: int, position_start: int) -> Dict[str, np.ndarray]:
    """UniLM batch with next-token labels at the target positions.

      input_ids, token_type_ids, position_ids (B, L) int64; attention_mask (B, L, L) bool
      masked_positions (N,) int64  flat index into B * L of every position that predicts a target token
      labels           (N,) int64  the token it predicts ([MASK] = eos included)
    """
    batch = masks.seq2seq_inputs([e.source_ids for e in items], [e.target_ids for e in items], pad_id,
                                 position_start)
    length = batch["input_ids"].shape[1]
    positions, labels = [], []
    for b, e in enumerate(items):
        start, end = len(e.source_ids), len(e.source_ids) + len(e.target_ids)
        positions.extend(b * length + j for j in range(start, end - 1))
        labels.extend(e.target_ids[1:])
    batch.pop("valid")
    batch["masked_positions"] = np.asarray(positions, "int64")
    batch["labels"] = np.asarray(labels, "int64")
    return batch


def decoding_batch(items: Sequence[Encoded], pad_id: int, position_start: int) -> Dict[str, np.ndarray]:
    """Sources ending in the target's [CLS], left-padded so that every row's next token comes last."""
    batch = masks.seq2seq_inputs([e.source_ids for e in items], [e.target_ids for e in items], pad_id,
                                 position_start, left_pad=True)
    batch.pop("valid")
    return batch


def postprocess(tokenizer, ids: Sequence[int]) -> str:
    """Text of generated ids: stops at the eos, drops [UNK] and other special tokens, merges word pieces."""
    out = []
    for i in ids:
        i = int(i)
        if i == tokenizer.eos_token_id:
            break
        if i not in tokenizer.special_ids:
            out.append(i)
    return tokenizer.decode(out)
