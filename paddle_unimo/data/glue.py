"""GLUE (Wang et al. 2019, gluebenchmark.com) for text fine-tuning: the nine tasks, readers of their TSV files
and of the original UNIMO's preprocessed TSV, the original's pair encoding, the batch collator and the GLUE
submission files.

Formats:

- GLUE TSVs as distributed by GLUE's ``download_glue_data.py`` (``GLUE_TASKS`` lists folders, files, headers
  and columns). Lines are split on tabs only, with no quote processing (``csv.QUOTE_NONE``): the texts contain
  bare ``"`` characters. Files with a header are read by column name and their header is checked (every
  column of the official header must be there; MNLI dev has the extra ``label2``..``label5`` of its train
  header ``label1``). CoLA train/dev have no header: ``source, label, original label, sentence``; their column
  count is checked on line 1. MRPC train/dev keep the byte order mark and header of the MSR release
  (``Quality  #1 ID  #2 ID  #1 String  #2 String``); its test file has ``index`` instead of ``Quality``.
- The original UNIMO classification TSV (PaddlePaddle/Research NLP/UNIMO ``src/reader/classification_reader.py``,
  ``regression_reader.py``): a header naming ``text_a``, optional ``text_b``, ``label`` (optional here, for
  unlabelled files) and optional ``qid``; the texts are text, which the original's reader encodes with its GPT-2
  BPE tokenizer (``tokenizer.tokenize``, then the vocabulary) as ``tokenizer.encode`` does here; the label is a
  class index (or an STS-B score).

Examples: ``GlueExample.id`` is the test file's index column (``qid`` in the original format) or the line
number; ``label`` is the label name (``GlueTask.labels``), a float score for STS-B, None for test files. A bad
row (wrong column count, unknown label, empty text, non-number score) is a ``DataError``
``file:line: ...``, or with ``skip_bad`` an entry of the ``ReadReport`` (``paddle_unimo.data.seq2seq``).

Encoding follows the original reader: ``[CLS] a [SEP] (b [SEP])``, the longer text losing its last token first
until the pair fits (``_truncate_seq_pair``; a tie pops from b), token types 0 for ``[CLS] a [SEP]`` and 1 for
``b [SEP]``, positions ``position_start + i`` over the whole sequence (the English model: ``range(2, L + 2)``).

Class indices follow ``GlueTask.labels``; MNLI is entailment / neutral / contradiction, the order of the GLUE
data in TFDS and Hugging Face ``datasets`` (GLUE's own baselines number them neutral / entailment /
contradiction; the files and the submissions use the names, so only a head trained elsewhere cares).
Submissions: ``<task>.tsv`` with a header ``index<TAB>prediction``, one row per test example, label names as
GLUE expects them and STS-B scores clipped to [0, 5] with 3 decimals.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import masks
from ..fileio import DataError, atomic_write, read_text_lines
from .seq2seq import ReadReport, read_records

Column = Union[str, int]  # a header name, or an index in a file without header
Label = Union[str, float, None]
logger = logging.getLogger(__name__)

_MNLI_COLUMNS = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                 "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
_STSB_COLUMNS = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
_MRPC_COLUMNS = ("#1 ID", "#2 ID", "#1 String", "#2 String")


@dataclass(frozen=True)
class Layout:
    """Where a file's fields are: ``header`` the official header (None: the file has none, then the columns
    are indices and ``width`` the column count); ``label`` None for test files, ``index`` None for train/dev."""
    header: Optional[Tuple[str, ...]]
    text_a: Column
    text_b: Optional[Column] = None
    label: Optional[Column] = None
    index: Optional[Column] = None
    width: Optional[int] = None


@dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str  # the official GLUE folder
    files: Dict[str, str]  # split -> file name
    labelled: Layout  # train and dev files
    test: Layout
    labels: Optional[Tuple[str, ...]]  # label names in class-index order; None: regression (STS-B)
    submissions: Dict[str, str]  # test split -> submission file name
    layouts: Dict[str, Layout] = field(default_factory=dict)  # a split of its own layout (MNLI's test_ax)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


def _task(name, folder, labelled, test, labels, mnli=False) -> GlueTask:
    if mnli:
        files = {"train": "train.tsv", "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
                 "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}
        subs = {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}
        # GLUE's diagnostic set (diagnostic/diagnostic.tsv), predicted by the MNLI model: the AX row of a submission
        files["test_ax"], subs["test_ax"] = "diagnostic.tsv", "AX.tsv"
        layouts = {"test_ax": Layout(("index", "sentence1", "sentence2"), "sentence1", "sentence2", index="index")}
    else:
        files, subs = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}, {"test": f"{folder}.tsv"}
        layouts = {}
    return GlueTask(name, folder, files, labelled, test, labels, subs, layouts)


BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: Dict[str, GlueTask] = {t.name: t for t in (
    _task("cola", "CoLA", Layout(None, 3, label=1, width=4), Layout(("index", "sentence"), "sentence", index="index"),
          BINARY),
    _task("sst2", "SST-2", Layout(("sentence", "label"), "sentence", label="label"),
          Layout(("index", "sentence"), "sentence", index="index"), BINARY),
    _task("mrpc", "MRPC", Layout(("Quality",) + _MRPC_COLUMNS, "#1 String", "#2 String", label="Quality"),
          Layout(("index",) + _MRPC_COLUMNS, "#1 String", "#2 String", index="index"), BINARY),
    _task("stsb", "STS-B", Layout(_STSB_COLUMNS + ("score",), "sentence1", "sentence2", label="score"),
          Layout(_STSB_COLUMNS, "sentence1", "sentence2", index="index"), None),
    _task("qqp", "QQP", Layout(("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), "question1",
                               "question2", label="is_duplicate"),
          Layout(("id", "question1", "question2"), "question1", "question2", index="id"), BINARY),
    _task("mnli", "MNLI", Layout(_MNLI_COLUMNS + ("label1", "gold_label"), "sentence1", "sentence2",
                                 label="gold_label"),
          Layout(_MNLI_COLUMNS, "sentence1", "sentence2", index="index"), ("entailment", "neutral", "contradiction"),
          mnli=True),
    _task("qnli", "QNLI", Layout(("index", "question", "sentence", "label"), "question", "sentence", label="label"),
          Layout(("index", "question", "sentence"), "question", "sentence", index="index"), NLI2),
    _task("rte", "RTE", Layout(("index", "sentence1", "sentence2", "label"), "sentence1", "sentence2", label="label"),
          Layout(("index", "sentence1", "sentence2"), "sentence1", "sentence2", index="index"), NLI2),
    _task("wnli", "WNLI", Layout(("index", "sentence1", "sentence2", "label"), "sentence1", "sentence2",
                                 label="label"),
          Layout(("index", "sentence1", "sentence2"), "sentence1", "sentence2", index="index"), BINARY),
)}


def get_task(task: Union[str, GlueTask]) -> GlueTask:
    """A ``GlueTask`` by name (``cola``, ..., case-insensitive; the folder name works too)."""
    if isinstance(task, GlueTask):
        return task
    key = str(task).lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {list(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def glue_path(data_dir, task: Union[str, GlueTask], split: str) -> str:
    """``data_dir/<folder>/<file>`` of a split (MNLI: train, dev_matched, dev_mismatched, test_matched,
    test_mismatched; the others: train, dev, test)."""
    spec = get_task(task)
    if split not in spec.files:
        raise ValueError(f"{spec.name} has no split {split!r}; it has {list(spec.files)}")
    return os.path.join(os.fspath(data_dir), spec.folder, spec.files[split])


class LayoutError(DataError):
    """A file's first line is not the layout of the split it is read as (its header, or its column count)."""


def _is_test(split: str) -> bool:
    if split in ("train", "dev", "test", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched",
                 "test_ax"):
        return split.startswith("test")
    raise ValueError(f"split must be train, dev or test (MNLI: also dev_/test_matched/mismatched, test_ax), got "
                     f"{split!r}")


@dataclass
class GlueExample:
    id: str
    text_a: str
    text_b: Optional[str]
    label: Label
    line: int = 0  # 1-based line of the file it was read from; 0 when built in code


def _field(parts: List[str], column: Optional[int], name: str, where: str, required: bool = True) -> Optional[str]:
    if column is None:
        return None
    value = parts[column]
    if required and not value.strip():
        raise DataError(f"{where}: empty {name}")
    return value


def _parse_label(spec: GlueTask, value: str, where: str) -> Label:
    if spec.labels is not None:
        if value not in spec.labels:
            raise DataError(f"{where}: unknown {spec.name} label {value!r}; expected one of {list(spec.labels)}")
        return value
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise DataError(f"{where}: {spec.name} score {value!r} is not a finite number")
    if not 0.0 <= score <= 5.0:  # STS-B's similarity scale
        raise DataError(f"{where}: {spec.name} score {value!r} is outside 0..5")
    return score


def _read_tsv(path, parse, skip_bad: bool, check_first):
    """``seq2seq.read_records`` over tab-separated lines: ``parse(where, line_no, parts)`` reads a row (None
    until a header gives it); ``check_first(where, text)`` sees the first line and returns the row parse when
    that line is a header, None when it is data."""
    def by_parts(row_parse):
        return lambda where, line_no, text: row_parse(where, line_no, text.split("\t"))

    def first_line(where, text):
        header_parse = check_first(where, text)
        return None if header_parse is None else by_parts(header_parse)
    return read_records(path, by_parts(parse) if parse else None, skip_bad, first_line)


def read_glue(path, task: Union[str, GlueTask], split: str = "train",
              skip_bad: bool = False) -> Tuple[List[GlueExample], ReadReport]:
    """Examples of a GLUE TSV of ``task`` (``split`` train/dev: labelled, test: not) and the ``ReadReport``."""
    spec, test = get_task(task), _is_test(split)
    layout = spec.layouts.get(split) or (spec.test if test else spec.labelled)
    kind = f"{spec.folder} {'test' if test else 'train/dev'}"

    def make_parse(col: Dict[str, Optional[int]], width: int):
        def parse(where: str, line_no: int, parts: List[str]) -> GlueExample:
            if len(parts) != width:
                raise DataError(f"{where}: expected {width} tab-separated columns, got {len(parts)}")
            text_a = _field(parts, col["text_a"], "sentence" if col["text_b"] is None else "first sentence", where)
            text_b = _field(parts, col["text_b"], "second sentence", where)
            label = None if col["label"] is None else _parse_label(spec, parts[col["label"]], where)
            ident = _field(parts, col["index"], "index", where) if test else None
            return GlueExample(ident.strip() if ident else str(line_no), text_a, text_b, label, line_no)
        return parse

    names = ("text_a", "text_b", "label", "index")
    if layout.header is None:
        parse = make_parse({n: getattr(layout, n) for n in names}, layout.width)

        def check_first(where, text):
            if len(text.split("\t")) != layout.width:
                raise LayoutError(f"{where}: not a {kind} file: expected {layout.width} tab-separated columns "
                                f"without a header (source, label, original label, sentence), got "
                                f"{len(text.split(chr(9)))}: {text[:80]!r}")
            return None
    else:
        parse = None

        def check_first(where, text):
            header = text.split("\t")
            missing = [c for c in layout.header if c not in header]
            if missing:
                raise LayoutError(f"{where}: not a {kind} file: expected a header with the columns "
                                f"{list(layout.header)}, got {header[:12]} (missing {missing})")
            return make_parse({n: None if getattr(layout, n) is None else header.index(getattr(layout, n))
                               for n in names}, len(header))
    return _read_tsv(path, parse, skip_bad, check_first)


def read_unimo_tsv(path, skip_bad: bool = False) -> Tuple[List[GlueExample], ReadReport]:
    """Examples of an original UNIMO classification TSV: ``text_a``/``text_b`` as written, ``label`` the file's
    string (None without a label column), ``id`` the ``qid`` column or the line number."""
    parse = None

    def check_first(where, text):
        header = text.split("\t")
        if "text_a" not in header:
            raise DataError(f"{where}: not an original UNIMO TSV: expected a header with the columns text_a, "
                            f"[text_b,] label [and qid], got {header[:12]}")
        col = {n: header.index(n) if n in header else None for n in ("text_a", "text_b", "label", "qid")}

        def parse_row(where: str, line_no: int, parts: List[str]) -> GlueExample:
            if len(parts) != len(header):
                raise DataError(f"{where}: expected {len(header)} tab-separated columns, got {len(parts)}")
            text_b = _field(parts, col["text_b"], "text_b", where)
            label = _field(parts, col["label"], "label", where)
            qid = _field(parts, col["qid"], "qid", where)
            return GlueExample(qid.strip() if qid else str(line_no), _field(parts, col["text_a"], "text_a", where),
                               text_b, label.strip() if label else None, line_no)
        return parse_row
    return _read_tsv(path, parse, skip_bad, check_first)


def read_glue_file(path, task: Union[str, GlueTask], split: str = "train",
                   skip_bad: bool = False) -> Tuple[List[GlueExample], ReadReport]:
    """``read_unimo_tsv`` when the first line is a header naming ``text_a`` (the original's format), else
    ``read_glue``."""
    for _, text in read_text_lines(path) if os.path.isfile(path) else ():
        if "text_a" in text.split("\t"):
            return read_unimo_tsv(path, skip_bad)
        break
    return read_glue(path, task, split, skip_bad)


# ---- encoding --------------------------------------------------------------------------------------------

def truncate_pair(a_ids: Sequence[int], b_ids: Optional[Sequence[int]], max_tokens: int):
    """Copies of ``a_ids``, ``b_ids`` whose total length is at most ``max_tokens``: the original's
    ``_truncate_seq_pair`` pops the last token of the longer list (of b on a tie) until they fit; a single
    text is cut to ``max_tokens``."""
    a = list(a_ids)
    if b_ids is None:
        return a[:max(max_tokens, 0)], None
    b = list(b_ids)
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
    return a, b


def encode_pair(a_ids: Sequence[int], b_ids: Optional[Sequence[int]], max_len: int, cls_id: int,
                sep_id: int) -> Tuple[List[int], List[int]]:
    """``([CLS] a [SEP] (b [SEP]), token types)`` of at most ``max_len`` ids (types 0 up to the first [SEP],
    1 after), ``a``/``b`` truncated by ``truncate_pair`` to ``max_len - 3`` (pair) or ``max_len - 2``."""
    special = 2 if b_ids is None else 3
    if max_len < special:
        raise ValueError(f"max_len {max_len} leaves no room for the {special} special tokens")
    a, b = truncate_pair(a_ids, b_ids, max_len - special)
    ids, types = [cls_id] + a + [sep_id], [0] * (len(a) + 2)
    if b is not None:
        ids, types = ids + b + [sep_id], types + [1] * (len(b) + 1)
    return ids, types


def label_id(task: Union[str, GlueTask], label: Label) -> Union[int, float, None]:
    """Class index of a label name (or of the index itself as a decimal string, as the original TSV writes it);
    the score as a float for STS-B; None stays None."""
    spec = get_task(task)
    if label is None:
        return None
    if spec.labels is None:
        return float(label)
    if label in spec.labels:
        return spec.labels.index(label)
    if isinstance(label, str) and label.isdigit() and int(label) < len(spec.labels):
        return int(label)
    raise ValueError(f"unknown {spec.name} label {label!r}; expected one of {list(spec.labels)} or a class index")


@dataclass
class GlueRow:
    id: str
    input_ids: List[int]
    token_type_ids: List[int]
    label: Union[int, float, None]  # class index, STS-B score, or None (test)
    truncated: bool = False


def encode_example(example: GlueExample, task: Union[str, GlueTask], tokenizer, max_len: int) -> GlueRow:
    """A ``GlueRow`` of an example: texts through ``tokenizer.encode``, then ``encode_pair`` with the tokenizer's
    [CLS] / [SEP]."""
    a = tokenizer.encode(example.text_a)
    b = None if example.text_b is None else tokenizer.encode(example.text_b)
    ids, types = encode_pair(a, b, max_len, tokenizer.cls_token_id, tokenizer.sep_token_id)
    truncated = len(ids) < len(a) + (0 if b is None else len(b) + 1) + 2
    return GlueRow(example.id, ids, types, label_id(task, example.label), truncated)


def glue_batch(rows: Sequence[GlueRow], pad_id: int, position_start: int) -> Dict[str, np.ndarray]:
    """Right-padded batch of encoded rows (B rows, L the longest):

      input_ids       (B, L) int64, pad_id where padded
      position_ids    (B, L) int64, position_start + i over the whole sequence, 0 where padded
      token_type_ids  (B, L) int64, 0 for [CLS] a [SEP], 1 for b [SEP], 0 where padded
      attention_mask  (B, L, L) bool, masks.may_attend: every token sees every real token (all ranks 0)
      labels          (B,) int64 class indices, float32 for STS-B; absent when the rows have no labels (test)
    """
    if not rows:
        raise ValueError("glue_batch needs at least one row")
    ids = masks.pad_batch([np.asarray(r.input_ids, np.int64) for r in rows], pad_id)
    batch = {
        "input_ids": ids,
        "position_ids": masks.pad_batch([position_start + np.arange(len(r.input_ids), dtype=np.int64)
                                         for r in rows], 0),
        "token_type_ids": masks.pad_batch([np.asarray(r.token_type_ids, np.int64) for r in rows], 0),
    }
    valid = masks.pad_batch([np.ones(len(r.input_ids), bool) for r in rows], False)
    batch["attention_mask"] = masks.may_attend(valid, np.zeros(ids.shape, np.int64))
    labels = [r.label for r in rows]
    if any(label is not None for label in labels):
        if any(label is None for label in labels):
            raise ValueError("glue_batch: some rows have labels and some do not")
        regression = any(isinstance(label, float) for label in labels)
        batch["labels"] = np.asarray(labels, np.float32 if regression else np.int64)
    return batch


# ---- submissions -----------------------------------------------------------------------------------------

def _prediction_text(spec: GlueTask, value) -> str:
    if spec.labels is None:
        score = float(value)
        if not math.isfinite(score):
            raise ValueError(f"{spec.name} prediction {value!r} is not a finite number")
        return f"{min(max(score, 0.0), 5.0):.3f}"
    if isinstance(value, str):
        if value not in spec.labels:
            raise ValueError(f"unknown {spec.name} label {value!r}; expected one of {list(spec.labels)}")
        return value
    index = int(value)
    if index != value or not 0 <= index < len(spec.labels):
        raise ValueError(f"{spec.name} prediction {value!r} is not a class index 0..{len(spec.labels) - 1}")
    return spec.labels[index]


def write_submission(out_dir, task: Union[str, GlueTask], ids: Sequence, predictions: Sequence,
                     split: str = "test") -> str:
    """Writes GLUE's ``<task>.tsv`` (MNLI: ``MNLI-m.tsv`` for test_matched, ``MNLI-mm.tsv`` for test_mismatched,
    ``AX.tsv`` for test_ax, GLUE's diagnostic set)
    into ``out_dir`` atomically and returns its path. ``predictions`` are class indices or label names (STS-B:
    scores, clipped to [0, 5] and written with 3 decimals), one per id, in the test file's order."""
    spec = get_task(task)
    if split not in spec.submissions:
        raise ValueError(f"{spec.name} submissions are for the split(s) {list(spec.submissions)}, not {split!r}")
    ids, predictions = list(ids), list(predictions)
    if len(ids) != len(predictions) or not ids:
        raise ValueError(f"write_submission needs as many predictions as ids (at least one), got "
                         f"{len(predictions)} predictions for {len(ids)} ids")
    lines = ["index\tprediction\n"] + [f"{i}\t{_prediction_text(spec, p)}\n" for i, p in zip(ids, predictions)]
    path = os.path.join(os.fspath(out_dir), spec.submissions[split])
    atomic_write(path, "".join(lines))
    return path
