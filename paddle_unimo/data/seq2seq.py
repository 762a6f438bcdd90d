"""Seq2seq data for generation fine-tuning: readers of the 千言 files, encoding, and the training/decoding
collators (PaddleNLP's 千言 baselines and ``UNIMOTokenizer.gen_encode``).

Files are JSON lines, or the original LCSTS TSV ``summary<TAB>content`` (to predict, the content alone may do).
A task names which fields are the source, the optional title and the target (DuReaderQG: context / answer /
question).

Files are read through ``paddle_unimo.fileio`` (a UTF-8 byte order mark is accepted). Bad input names the
file and line: malformed JSON, a missing field, an empty target, bytes that are not UTF-8. With ``skip_bad``
bad records are skipped and each is listed, with its line and reason, in the ``ReadReport``.

Encoding follows PaddleNLP's ``gen_encode``: ``[CLS] title [SEP] source [SEP]`` then ``[CLS] target
[MASK]`` ([MASK] is the eos). Documented truncation: the title keeps ``max_title_len - 1`` tokens, the target
``max_target_len - 2``, and the source whatever is left of ``max_seq_len``; each truncation is counted and
reported once per file as a warning.

Prompts, as the ``--template`` of PaddleNLP's question-generation application (``applications/question_generation``):
a source template, a format string of ``{source}`` and ``{title}`` (e.g. ``答案：{title}[SEP]上下文：{source}``),
is the text encoded as the source; a title it names is then no segment of its own (nor cut at ``max_title_len``:
the templated source is cut at its end, as PaddleNLP cuts it). Its text is tokenized as
written, as ``gen_encode`` tokenizes the application's templates: a ``[SEP]`` in it is the characters ``[``,
``sep``, ``]`` there too (``gen_encode`` does not look for special tokens in its texts). A target prefix
(``问题：``) is put before every training target, as the tokens of the prefix alone, and taken off a prediction
that starts with exactly those tokens (PaddleNLP's ``remove_template`` strips a set of characters from both ends).
``gen_encode`` tokenizes the joined text instead: the same tokens, but where a prefix ending in a letter or digit
meets a target starting with one, whose word pieces could merge across the join.
"""
from __future__ import annotations

import logging
import os
import string
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import masks
from ..fileio import JSON_LINES_HINT, DataError, parse_json_line, read_text_lines
from . import PassCounts

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Fields:
    source: str
    target: str
    title: Optional[str] = None
    id: Optional[str] = None
    source_format: Optional[Callable[[str], object]] = None  # raises ValueError for a source of the wrong form


@dataclass
class Example:
    id: str
    source: str
    target: Optional[str]
    title: Optional[str] = None
    line: int = 0  # 1-based line of the file it was read from; 0 when built in code


@dataclass
class ReadReport:
    """What ``read_examples`` did with a file: ``lines`` is the number of its last non-blank line, ``read``
    the examples kept, ``skipped`` one ``{"file", "line", "reason"}`` per line left out with ``skip_bad``,
    ``header`` the line of a header row (0: none)."""
    path: str
    read: int = 0
    lines: int = 0
    header: int = 0
    skipped: List[Dict[str, object]] = field(default_factory=list)


def _record(where: str, text: str, fields: Fields, tsv: bool, need_target: bool) -> dict:
    """A JSON line's record, or a TSV line's: ``summary<TAB>content``, or (predicting) the content alone."""
    if not tsv:
        return parse_json_line(where, text)
    if fields.title:
        raise DataError(f"{where}: a .tsv file holds 'target<TAB>source' lines, which have no '{fields.title}': "
                        "this task reads JSON lines")
    parts = text.split("\t")
    if len(parts) == 1 and not need_target:
        return {fields.source: parts[0]}
    if len(parts) != 2:
        alone = "" if need_target else " (or the content alone, to predict)"
        raise DataError(f"{where}: expected 'summary<TAB>content'{alone}, got {len(parts)} columns")
    return {fields.target: parts[0], fields.source: parts[1]}


def _parse_line(where: str, text: str, fields: Fields, tsv: bool, need_target: bool, line_no: int) -> Example:
    return record_example(where, _record(where, text, fields, tsv, need_target), fields, need_target, line_no)


def record_example(where: str, record: dict, fields: Fields, need_target: bool = False, line_no: int = 0) -> Example:
    """The example of one record (a parsed JSON line, or a mapping given in code); a missing, non-string or empty
    field is a ``DataError`` starting ``where: ``."""
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
    if fields.source_format is not None:
        try:
            fields.source_format(record[fields.source])
        except ValueError as e:
            raise DataError(f"{where}: field '{fields.source}': {e}") from None
    ident = str(record.get(fields.id, line_no)) if fields.id else str(line_no)
    title = record.get(fields.title) if fields.title else None
    return Example(ident, record[fields.source], target, title, line=line_no)


def read_examples(path: str, fields: Fields, need_target: bool = True, skip_bad: bool = False):
    """Reads a JSONL (or LCSTS ``.tsv``, whose first line may be the header ``summary<TAB>content``) file; returns
    (examples, ReadReport).

    A bad record (malformed JSON, a missing, non-string or empty field, a wrong column count) is a
    ``DataError`` starting ``file:line: ``, or with ``skip_bad`` an entry of ``ReadReport.skipped``. Bytes that
    are not UTF-8 stop the read even with ``skip_bad``: they mean the file has another encoding (GBK, for a
    Chinese data set), in which nearly every line would be skipped. A missing file, a folder, a file without
    a non-blank line and a file without one usable example are ``DataError`` naming the file.
    """
    tsv = os.fspath(path).lower().endswith(".tsv")

    def parse(where, line_no, text):
        return _parse_line(where, text, fields, tsv, need_target, line_no)

    def header(where, text):  # a TSV's first line naming its columns (summary<TAB>content) is no example
        names = [part.strip().lower() for part in text.split("\t")]
        if names == [fields.source, fields.target]:
            raise DataError(f"{where}: the header names {fields.source}<TAB>{fields.target}; the columns are read as "
                            f"{fields.target}<TAB>{fields.source}: swap them")
        return parse if names in ([fields.target, fields.source], [fields.source]) else None
    return read_records(path, parse, skip_bad, header if tsv else None)


SKIP_HINT = " (--skip-bad, or -o data.skip_bad=true, leaves such lines out and lists them in OUT/skipped.jsonl)"


def read_records(path, parse, skip_bad: bool, first_line=None):
    """The reading loop of the line-based readers: ``parse(where, line_no, text)`` -> an example for every
    non-blank line; a ``DataError`` from it stops the read, or with ``skip_bad`` becomes an entry of the report.
    ``first_line(where, text)``, when given, sees the first non-blank line outside that handling (a bad header
    always stops the read) and returns the parse for the rest when that line is a header, None when it is data.
    Returns (examples, ReadReport); a missing or empty file and a file without one usable example are errors."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    examples, report, first = [], ReadReport(path), first_line is not None
    for where, text in read_text_lines(path):
        report.lines = int(where.rpartition(":")[2])
        if first:
            first, header_parse = False, first_line(where, text)
            if header_parse is not None:
                parse, report.header = header_parse, report.lines
                continue
        try:
            examples.append(parse(where, report.lines, text))
        except DataError as e:
            if not skip_bad:
                # (not for a JSON document, whose lines skipped would leave nothing)
                raise DataError(f"{e}{'' if JSON_LINES_HINT in str(e) else SKIP_HINT}") from None
            message, prefix = str(e), f"{where}: "
            reason = message[len(prefix):] if message.startswith(prefix) else message
            report.skipped.append({"file": path, "line": report.lines, "reason": reason})
    report.read = len(examples)
    if not report.lines:
        raise DataError(f"{path}: empty file (no non-blank line)")
    if report.skipped:
        first_skip = report.skipped[0]
        logger.warning("%s: skipped %d bad lines (first: line %d: %s)", path, len(report.skipped),
                       first_skip["line"], first_skip["reason"])
    if not examples:
        raise DataError(f"{path}: no usable examples ({len(report.skipped)} bad lines skipped)")
    return examples, report


@lru_cache(maxsize=None)
def template_fields(template: str) -> frozenset:
    """The fields a source template names: ``{source}`` once or more, ``{title}`` optionally; anything else (another
    name, a format spec, an unmatched brace) is a ``ValueError`` (``{{`` and ``}}`` are braces of the text)."""
    names = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in ("source", "title") or spec or conversion:
            raise ValueError(f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: a "
                             "template names {source} and {title} only ({{ and }} are braces of the text)")
        names.add(name)
    if "source" not in names:
        raise ValueError("names no {source}")
    return frozenset(names)


def prompted(example: Example, source_template: str = "",
             target_prefix: str = "") -> Tuple[str, Optional[str], Optional[str]]:
    """(source, title, target): the texts of an example as they are encoded (see the module docstring)."""
    source, title, target = example.source, example.title, example.target
    if source_template:
        source = source_template.format(source=example.source, title=example.title or "")
        if "title" in template_fields(source_template):
            title = None
    return source, title, None if target is None else target_prefix + target


@dataclass
class Encoded:
    source_ids: List[int]  # [CLS] title [SEP] source [SEP]
    target_ids: List[int]  # [CLS] target [MASK], or [CLS] alone for decoding


class Seq2SeqEncoder:
    """Token ids of examples, with counted truncation (see the module docstring)."""

    def __init__(self, tokenizer, max_seq_len: int, max_target_len: int, max_title_len: int = 0,
                 source_template: str = "", target_prefix: str = ""):
        if max_seq_len <= max_target_len + max_title_len + 2:
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for the source after max_target_len "
                             f"{max_target_len} and max_title_len {max_title_len}")
        self.tok = tokenizer
        self.max_seq_len, self.max_target_len, self.max_title_len = max_seq_len, max_target_len, max_title_len
        self.source_template, self.target_prefix = source_template, target_prefix
        self.prefix_ids = tokenizer.encode(target_prefix) if target_prefix else []  # taken off predictions
        self.truncated = {"source": 0, "title": 0, "target": 0}  # every encoding
        self.passes = PassCounts()  # per input set, its last pass (counted())

    def _cut(self, ids: List[int], limit: int, what: str) -> List[int]:
        if len(ids) > limit:
            self.truncated[what] += 1
            return ids[:max(limit, 0)]
        return ids

    def encode(self, example: Example, with_target: bool = True) -> Encoded:
        t = self.tok
        source_text, title_text, _ = prompted(example, self.source_template)
        title = []
        if title_text is not None:
            title = self._cut(t.encode(title_text), self.max_title_len - 1, "title") + [t.sep_token_id]
        if with_target:
            target = self.prefix_ids + t.encode(example.target)
            target = [t.cls_token_id] + self._cut(target, self.max_target_len - 2, "target") + [t.mask_token_id]
        else:
            target = [t.cls_token_id]
        room = self.max_seq_len - len(target) - len(title) - 2
        source = self._cut(t.encode(source_text), room, "source")
        return Encoded([t.cls_token_id] + title + source + [t.sep_token_id], target)

    def encode_all(self, examples: Sequence[Example], with_target: bool = True, where: str = "") -> List[Encoded]:
        before = dict(self.truncated)
        out = [self.encode(e, with_target) for e in examples]
        cut = self.passes.record_since(where, before, self.truncated)
        if cut:
            logger.warning("%s: truncated %s (max_seq_len %d, max_target_len %d, max_title_len %d)", where or
                           "examples", ", ".join(f"{n} {k}s" for k, n in cut.items()), self.max_seq_len,
                           self.max_target_len, self.max_title_len)
        return out

    def counted(self) -> dict:
        """Truncations of the input sets ``encode_all`` saw, each set's last pass (the training data once, the
        dev set once however many evaluations decoded it)."""
        return self.passes.totals(self.truncated)


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


def postprocess(tokenizer, ids: Sequence[int], prefix_ids: Sequence[int] = ()) -> str:
    """Text of generated ids: takes off ``prefix_ids`` when the ids start with them (a target prefix), stops at the
    eos, drops [UNK] and other special tokens, merges word pieces."""
    ids = [int(i) for i in ids]
    if prefix_ids and ids[:len(prefix_ids)] == list(prefix_ids):
        ids = ids[len(prefix_ids):]
    out = []
    for i in ids:
        if i == tokenizer.eos_token_id:
            break
        if i not in tokenizer.special_ids:
            out.append(i)
    return tokenizer.decode(out)
