"""English generation benchmarks in the original UNIMO seq2seq encoding (``src/reader/seq2seq_reader.py`` of
PaddlePaddle/Research NLP/UNIMO, an ERNIE-GEN descendant): readers, the encoder and the collators.

Readers return ``(examples, ReadReport)`` like ``seq2seq.read_examples``; examples are ``EnglishExample``
(a ``seq2seq.Example`` with source segments, knowledge and token ids), and bad input is a ``DataError``
naming ``file:line``:

* ``read_line_aligned``: ``X.src``/``X.tgt`` (UniLM, fairseq ``X.source``/``X.target``, Gigaword), the
  SQuAD-QG split of Du et al. (``src-X.txt``/``tgt-X.txt``) or UniLM's (``X.pa.tok.txt``/``X.q.tok.txt``,
  ``paragraph [SEP] answer``: see ``source_segments``); ``line_aligned_paths`` finds the pair. Line i
  of one file goes with line i of the other; surrounding whitespace is stripped (nqg lines end with a space).
* ``read_jsonl_pairs``: JSON lines ``{"src", "tgt"}`` (or other keys, e.g. XSum ``document``/``summary``).
* ``read_unimo_tsv``: the original TSV. A header names the columns; ``tgt`` is the target, ``knowledge``
  the dialog knowledge, every other column a source segment, in order. Texts are space-separated GPT-2 BPE
  ids (the tokens of ``unimo_en.vocab.txt``); they are kept as ints (``pretokenized``) and never re-tokenized.
  In a dialog file the first source column holds the turns joined by `` [SEP] ``.
* ``read_cnn_dm``: raw ``.story`` files selected and ordered by the official URL lists, as abisee/cnn-dailymail
  ``make_datafiles.py`` does: story id = sha1 hex of the URL line (``hashhex``); every line stripped; a line
  not ending in one of its END_TOKENS gets `` .`` (``fix_missing_period``, also article lines); lines after an
  ``@highlight`` line are highlights, the other non-empty lines the article, joined with single spaces.
  Differences, for the plain-text ``.src/.tgt`` files that BPE models use: the stories are not PTB-tokenized
  (the script reads CoreNLP-tokenized copies), text stays cased (``lower=True`` gives the script's
  lower-casing), and the target is the highlights joined by a space without the script's ``<s> ... </s>``
  tags (``sentence_tags=True`` gives them). ``target_sentences`` keeps the highlights (for ROUGE-Lsum).
* ``read_coqa``: the official CoQA JSON; one example per question turn (see ``read_coqa``).

Encoding (``OriginalSeq2SeqEncoder``), for position_start p (2 for the English model):
``[CLS] seg_1 [SEP] seg_2 [SEP] ... | [CLS] tgt [MASK]``. [CLS] sits at p, each segment's tokens (with its
[SEP]) at p+1, p+2, ... (the original's ``range(3, len + 3)``), the target [CLS] at p and the target tokens
from p+1 again. Each segment keeps at most ``max_src_len - 1`` ids including its [SEP] (the original's
``_trunc_token_ids`` with ``keep_sep=True``), so a one-segment source never exceeds ``max_src_len`` whatever
the target; as in the original (without ``continuous_position``) several segments are not cut jointly.
The target with its final [SEP] keeps ``max_tgt_len - 1`` ids (``keep_sep=False``), then a final [SEP]
becomes [MASK], the end token: a truncated target has no end token, so the model is never taught to stop
there. Token types are 0 for the source and 1 for the target (the original numbers source columns 0, 1, ...
and the target ``tgt_type_id``; the English model has no token-type embedding, so this changes nothing).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import masks
from ..fileio import DataError, read_json, read_text_lines
from ..tokenization import from_original_ids
from . import PassCounts
from .seq2seq import Example, Fields, ReadReport, read_examples

logger = logging.getLogger(__name__)
Segment = Union[str, List[int]]
TURN_SEP = " [SEP] "  # joins dialog turns in a source text
TURN_TYPE_SIZE = 16   # turn ids 0..15: 0 for knowledge and target, at most 15 history turns
ROLE_TYPE_SIZE = 3    # role ids: 0 / 1 alternate by turn, 2 the knowledge (passage)
KNOWLEDGE_ROLE = 2
END_TOKENS = (".", "!", "?", "...", "'", "`", '"', "\u2019", "\u201d", ")")  # make_datafiles.py


@dataclass
class EnglishExample(Example):
    """``source``/``target`` as read (for a TSV: the column text); ``segments`` the source segments, texts or
    GPT-2 ids when ``pretokenized`` (then ``target_ids`` too); ``dialog`` marks CoQA-style examples whose
    ``segments`` are turns with per-turn ``role_ids``/``turn_ids``; ``references`` every gold answer (CoQA)."""
    segments: List[Segment] = field(default_factory=list)
    knowledge: Optional[Segment] = None
    target_ids: Optional[List[int]] = None
    pretokenized: bool = False
    dialog: bool = False
    role_ids: Optional[List[int]] = None
    turn_ids: Optional[List[int]] = None
    references: Optional[List[str]] = None
    target_sentences: Optional[List[str]] = None


def dialog_types(num_turns: int) -> Tuple[List[int], List[int]]:
    """Per-turn (role ids, turn ids) of a history of ``num_turns`` turns, oldest first, as the original: the
    roles alternate starting from ``num_turns % 2`` (so the current question, the last turn, is always role
    1 and answers role 0) and the turn ids count down from ``num_turns`` to 1 (the current turn)."""
    roles = [(num_turns + i) % 2 for i in range(num_turns)]
    return roles, list(range(num_turns, 0, -1))


def _report_bad(report: ReadReport, error: DataError, where: str, skip_bad: bool) -> None:
    if not skip_bad:
        raise error
    message, prefix = str(error), f"{where}: "
    file, _, line = where.rpartition(":")
    report.skipped.append({"file": file, "line": int(line) if line.isdigit() else 0,
                           "reason": message[len(prefix):] if message.startswith(prefix) else message})


def _finish(report: ReadReport, examples: list) -> Tuple[list, ReadReport]:
    report.read = len(examples)
    if report.skipped:
        first = report.skipped[0]
        logger.warning("%s: skipped %d bad records (first: line %d: %s)", report.path, len(report.skipped),
                       first["line"], first["reason"])
    if not examples:
        raise DataError(f"{report.path}: no usable examples ({len(report.skipped)} bad records skipped)")
    return examples, report


# ---- line-aligned files and JSON lines ----------------------------------------------------------------

LINE_ALIGNED_NAMES = (("{}.src", "{}.tgt"), ("{}.source", "{}.target"), ("src-{}.txt", "tgt-{}.txt"),
                      ("{}.pa.tok.txt", "{}.q.tok.txt"))


def source_segments(where: str, source: str, separator: str = "") -> List[str]:
    """The segments of a source text split at ``separator``, its surrounding white space optional (none: the whole
    text; a line's trailing space is stripped before, so ``paragraph [SEP] `` has an empty answer), each encoded
    as one source segment ending in [SEP], positions restarting, as the original TSV's source columns are.
    UniLM's SQuAD-QG lines ``paragraph [SEP] answer`` (the ``squad_qg`` configs' ``data.source_separator``
    ``" [SEP] "``) so give ``[CLS] paragraph [SEP] answer [SEP]``, not the characters of "[SEP]". An empty segment
    is a ``DataError``."""
    if not separator:
        return [source]
    segments = [part.strip() for part in source.split(separator.strip() or separator)]  # lines are stripped
    if not all(segments):
        raise DataError(f"{where}: an empty segment around {separator!r}")
    return segments


def _named_as(name: str, side: int) -> Optional[Tuple[Tuple[str, str], str]]:
    """(the naming of ``LINE_ALIGNED_NAMES``, the split) when the file ``name`` is named as the source (``side`` 0)
    or target (1) of a line-aligned pair (``dev.src``: (("{}.src", "{}.tgt"), "dev")), else None."""
    for names in LINE_ALIGNED_NAMES:
        prefix, suffix = names[side].split("{}")
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            return names, name[len(prefix):len(name) - len(suffix)]
    return None


def _partner(path, side: int) -> Optional[str]:
    """The other file of a line-aligned pair when ``path`` is named as its source (``side`` 0) or target (1)."""
    folder, name = os.path.split(os.fspath(path))
    named = _named_as(name, side)
    return None if named is None else os.path.join(folder, named[0][1 - side].format(named[1]))


def pair_of_source_file(path) -> Optional[Tuple[str, Optional[str]]]:
    """(source, target) when ``path`` is named as the source of a line-aligned pair (``dev.src``, ``test.source``,
    ``src-dev.txt``; the target of the same naming beside it, None when absent), else None. A file named as a
    pair's target (``dev.tgt``) is a ``DataError`` saying to give its source."""
    target = _partner(path, 0)
    if target is not None:
        return os.fspath(path), target if os.path.isfile(target) else None
    source = _partner(path, 1)
    if source is not None:
        raise DataError(f"{os.fspath(path)}: the target side of a line-aligned pair: give its source file "
                        f"{os.path.basename(source)}, read with it line by line")
    return None


def line_aligned_paths(folder, split: str) -> Tuple[str, Optional[str]]:
    """(source, target) files of ``split`` in ``folder``: ``split.src``/``split.tgt`` (UniLM),
    ``split.source``/``split.target`` (fairseq) or ``src-split.txt``/``tgt-split.txt`` (SQuAD-QG, nqg); the
    target is None when absent. A missing source is a ``DataError`` listing the names tried."""
    folder = os.fspath(folder)
    pairs = [(src.format(split), tgt.format(split)) for src, tgt in LINE_ALIGNED_NAMES]
    for src, tgt in pairs:
        if os.path.isfile(os.path.join(folder, src)):
            tgt_path = os.path.join(folder, tgt)
            return os.path.join(folder, src), tgt_path if os.path.isfile(tgt_path) else None
    here = os.path.abspath(folder or ".")
    names = os.listdir(here) if os.path.isdir(here) else []
    found = sorted({named[1] for named in (_named_as(name, 0) for name in names) if named})
    raise DataError(f"{here}: no source file for split '{split}' (tried {', '.join(p[0] for p in pairs)})"
                    + (f"; the folder has the split{'s' * (len(found) > 1)} {', '.join(found)}: -o data.dev=<split> "
                       "(or data.train=) chooses, and UniLM's releases name the validation split dev" if found else ""))


def _numbered_lines(path: str) -> Tuple[Dict[int, str], int]:
    lines = {int(where.rpartition(":")[2]): text.strip() for where, text in read_text_lines(path)}
    return lines, max(lines, default=0)


def read_line_aligned(source_path, target_path=None, need_target: bool = True, skip_bad: bool = False,
                      separator: str = ""):
    """Line i of ``source_path`` with line i of ``target_path``; returns (examples, ReadReport). ``separator``
    splits a source into segments (``source_segments``).

    Trailing blank lines are ignored; different line counts are a ``DataError`` naming both files. A blank
    line inside either file is a bad record (``DataError``, or skipped with ``skip_bad``). Ids are line numbers.
    """
    source_path = os.fspath(source_path)
    for path in filter(None, [source_path, target_path and os.fspath(target_path)]):
        if not os.path.exists(path):
            raise DataError(f"{path}: file not found")
    if target_path is None and need_target:
        beside = _partner(source_path, 0)
        raise DataError(f"{source_path}: no target file" + (f" ({beside} not found)" if beside else " given"))
    sources, n_src = _numbered_lines(source_path)
    targets, n_tgt = _numbered_lines(target_path) if target_path is not None else ({}, n_src)
    if n_src != n_tgt:
        shorter = os.fspath(target_path) if n_tgt < n_src else source_path
        raise DataError(f"{source_path} has {n_src} lines but {os.fspath(target_path)} has {n_tgt} (up to its last "
                        f"non-blank line): the files are not line-aligned; {shorter}:{min(n_src, n_tgt) + 1} is "
                        "missing or blank")
    if not n_src:
        raise DataError(f"{source_path}: empty file (no non-blank line)")
    report, examples = ReadReport(source_path, lines=n_src), []
    for line in range(1, n_src + 1):
        source, target, where = sources.get(line), targets.get(line), f"{source_path}:{line}"
        if source is None or (target is None and target_path is not None):
            what = "source line" if source is None else f"target line ({os.fspath(target_path)}:{line})"
            _report_bad(report, DataError(f"{where}: empty {what}"), where, skip_bad)
            continue
        try:
            segments = source_segments(where, source, separator)
        except DataError as e:
            _report_bad(report, e, where, skip_bad)
            continue
        examples.append(EnglishExample(str(line), source, target, line=line, segments=segments))
    return _finish(report, examples)


def read_jsonl_pairs(path, source_key: str = "src", target_key: str = "tgt", id_key: Optional[str] = None,
                     need_target: bool = True, skip_bad: bool = False, separator: str = ""):
    """JSON lines with a source and a target field (``seq2seq.read_examples``, whose checks it shares);
    ``separator`` as ``read_line_aligned``'s."""
    if os.fspath(path).lower().endswith(".tsv"):
        raise DataError(f"{path}: a .tsv file is not JSON lines (use read_unimo_tsv)")
    examples, report = read_examples(path, Fields(source_key, target_key, id=id_key), need_target, skip_bad)
    out = []
    for e in examples:
        where = f"{os.fspath(path)}:{e.line}"
        try:
            out.append(EnglishExample(e.id, e.source, e.target, line=e.line,
                                      segments=source_segments(where, e.source, separator)))
        except DataError as error:
            _report_bad(report, error, where, skip_bad)
    return _finish(report, out) if len(out) < len(examples) else (out, report)


# ---- the original UNIMO TSV -----------------------------------------------------------------------------

def _ids(where: str, column: str, text: str) -> List[int]:
    try:
        ids = [int(t) for t in text.split()]
    except ValueError:
        raise DataError(f"{where}: column '{column}' is not space-separated token ids: {text[:60]!r}") from None
    if not ids:
        raise DataError(f"{where}: empty column '{column}'")
    return ids


def read_unimo_tsv(path, pretokenized: bool = True, dialog: bool = False, need_target: bool = True,
                   skip_bad: bool = False):
    """The original seq2seq TSV (see the module docstring); ``pretokenized=False`` for columns of plain text.

    With ``dialog`` the first source column is split into turns at `` [SEP] `` (the last 15 are kept by the
    encoder). A wrong column count, a column that is not ids, an empty target are bad records.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    lines = read_text_lines(path)
    header_where, header = next(lines, (f"{path}:1", None))
    if header is None:
        raise DataError(f"{path}: empty file (no header)")
    columns = header.split("\t")
    sources = [i for i, name in enumerate(columns) if name not in ("tgt", "knowledge")]
    if not sources or (need_target and "tgt" not in columns):
        raise DataError(f"{header_where}: header {columns} needs a 'tgt' column and a source column")
    header_line = int(header_where.rpartition(":")[2])
    report, examples = ReadReport(path, lines=header_line, header=header_line), []
    for where, text in lines:
        report.lines = int(where.rpartition(":")[2])
        try:
            values = text.split("\t")
            if len(values) != len(columns):
                raise DataError(f"{where}: {len(values)} columns, the header has {len(columns)}")
            row = dict(zip(columns, values))
            named = [(columns[i], values[i]) for i in sources]
            if dialog:
                named = [(named[0][0], turn) for turn in named[0][1].split(TURN_SEP)] + named[1:]
            target, knowledge = row.get("tgt"), row.get("knowledge") or None
            if need_target and not (target or "").strip():
                raise DataError(f"{where}: empty target 'tgt'")
            ex = EnglishExample(str(len(examples)), values[sources[0]], target, line=report.lines,
                                pretokenized=pretokenized, dialog=dialog, knowledge=knowledge)
            ex.segments = [_ids(where, name, t) if pretokenized else t for name, t in named]
            if pretokenized:
                ex.target_ids = _ids(where, "tgt", target) if (target or "").strip() else None
                ex.knowledge = _ids(where, "knowledge", knowledge) if knowledge else None
        except DataError as e:
            _report_bad(report, e, where, skip_bad)
            continue
        if dialog:
            ex.role_ids, ex.turn_ids = dialog_types(len(ex.segments))
        examples.append(ex)
    return _finish(report, examples)


# ---- CNN / DailyMail ------------------------------------------------------------------------------------

def hashhex(url: str) -> str:
    """The story id of a URL: sha1 hex digest of its UTF-8 bytes (make_datafiles.py ``hashhex``)."""
    return hashlib.sha1(url.encode("utf-8")).hexdigest()


def fix_missing_period(line: str) -> str:
    if "@highlight" in line or line == "" or line[-1] in END_TOKENS:
        return line
    return line + " ."


def story_article_and_highlights(path, lower: bool = False) -> Tuple[str, List[str]]:
    """(article, highlights) of one ``.story`` file as make_datafiles.py ``get_art_abs`` splits it."""
    lines = [text.strip() for _, text in read_text_lines(path)]
    lines = [fix_missing_period(line.lower() if lower else line) for line in lines]
    article, highlights, next_is_highlight = [], [], False
    for line in lines:
        if line == "":
            continue
        if line.startswith("@highlight"):
            next_is_highlight = True
        elif next_is_highlight:
            highlights.append(line)
        else:
            article.append(line)
    return " ".join(article), highlights


def read_cnn_dm(stories_dirs, url_lists_dir, split: str, lower: bool = False, sentence_tags: bool = False,
                skip_bad: bool = False):
    """The CNN/DM ``split`` ("train", "val", "test") from ``url_lists_dir/all_{split}.txt``, in list order.

    ``stories_dirs``: one folder or several (``cnn/stories``, ``dailymail/stories``) searched in order for
    ``<hashhex(url)>.story``. A missing story, an empty article or no highlight is a bad record.
    """
    url_list = os.path.join(os.fspath(url_lists_dir), f"all_{split}.txt")
    if not os.path.isfile(url_list):
        raise DataError(f"{url_list}: URL list not found")
    dirs = [os.fspath(stories_dirs)] if isinstance(stories_dirs, (str, os.PathLike)) else \
        [os.fspath(d) for d in stories_dirs]
    report, examples = ReadReport(url_list), []
    for where, url in read_text_lines(url_list):
        report.lines = int(where.rpartition(":")[2])
        story_id = hashhex(url.strip())
        try:
            found = [p for p in (os.path.join(d, story_id + ".story") for d in dirs) if os.path.isfile(p)]
            if not found:
                raise DataError(f"{where}: story {story_id}.story of {url.strip()} not in {dirs}")
            article, highlights = story_article_and_highlights(found[0], lower)
            if not article or not highlights:
                raise DataError(f"{where}: {found[0]} has {'no highlight' if article else 'an empty article'}")
        except DataError as e:
            _report_bad(report, e, where, skip_bad)
            continue
        target = " ".join(f"<s> {h} </s>" for h in highlights) if sentence_tags else " ".join(highlights)
        examples.append(EnglishExample(story_id, article, target, line=report.lines, segments=[article],
                                       target_sentences=highlights))
    return _finish(report, examples)


# ---- CoQA ------------------------------------------------------------------------------------------------

def dialog_example(ident: str, passage: str, history: Sequence[str], target: Optional[str] = None, line: int = 0,
                   max_turns: int = TURN_TYPE_SIZE - 1, references: Optional[List[str]] = None) -> EnglishExample:
    """The example of a dialog turn: ``history`` the turns so far, oldest first, ending with the current question
    (``q1, a1, ..., qk``), of which the last ``max_turns`` are kept as ``segments`` (joined by `` [SEP] `` as
    ``source``), with their ``role_ids``/``turn_ids`` (``dialog_types``); ``knowledge`` the passage."""
    segments = list(history[-max_turns:])
    roles, turns = dialog_types(len(segments))
    return EnglishExample(ident, TURN_SEP.join(segments), target, line=line, segments=segments, knowledge=passage,
                          dialog=True, role_ids=roles, turn_ids=turns, references=references)


def read_coqa(path, max_turns: int = TURN_TYPE_SIZE - 1):
    """The official CoQA JSON: one dialog example per question turn.

    For question k of a story the history is ``q1, a1, ..., q(k-1), a(k-1), qk`` (gold answers' ``input_text``),
    of which the last ``max_turns`` (15: the original's ``turn_type_size - 1``) are kept as ``segments``;
    ``source`` joins them with `` [SEP] ``, ``knowledge`` is the story, ``target`` the answer's ``input_text``,
    ``references`` the answer plus every ``additional_answers`` entry of the turn (evaluate-v1.0.py's gold list),
    ``role_ids``/``turn_ids`` per turn from ``dialog_types``. Ids are ``<story id>_<turn id>``; ``line`` is the
    example's 1-based position in the file (the order of ``predictions.jsonl``); the report's ``lines`` is the
    number of stories.
    """
    path = os.fspath(path)
    data = read_json(path, "CoQA file")
    stories = data.get("data") if isinstance(data, dict) else None
    if not isinstance(stories, list):
        raise DataError(f"{path}: expected a JSON object with a 'data' list of stories")
    report, examples = ReadReport(path, lines=len(stories)), []
    for index, story in enumerate(stories):
        where = f"{path}: story {index}"
        try:
            story_id, passage, questions, answers = (story[k] for k in ("id", "story", "questions", "answers"))
            extra = list((story.get("additional_answers") or {}).values())
            if len(questions) != len(answers) or any(len(a) != len(answers) for a in extra):
                raise DataError(f"{where} ({story_id}): {len(questions)} questions but {len(answers)} answers "
                                f"(additional: {[len(a) for a in extra]})")
            history: List[str] = []
            for turn, (question, answer) in enumerate(zip(questions, answers)):
                history.append(question["input_text"])
                examples.append(dialog_example(
                    f"{story_id}_{question.get('turn_id', turn + 1)}", passage, history, answer["input_text"],
                    line=len(examples) + 1, max_turns=max_turns,
                    references=[answer["input_text"]] + [a[turn]["input_text"] for a in extra]))
                history.append(answer["input_text"])
        except (KeyError, TypeError) as e:
            raise DataError(f"{where}: not the official CoQA layout ({type(e).__name__}: {e})") from None
    return _finish(report, examples)


# ---- the original encoding ------------------------------------------------------------------------------

@dataclass
class OriginalEncoded:
    """Model ids and positions of one example. ``role_ids``/``turn_ids`` (dialog only) cover the source; the
    target's are all 0 (also for generated tokens)."""
    source_ids: List[int]
    target_ids: List[int]  # [CLS] target [MASK], [CLS] target (truncated), or [CLS] alone for decoding
    source_positions: List[int]
    target_positions: List[int]
    role_ids: Optional[List[int]] = None
    turn_ids: Optional[List[int]] = None


class OriginalSeq2SeqEncoder:
    """The original UNIMO encoding (module docstring) with counted truncations (``truncated``)."""

    def __init__(self, tokenizer, max_src_len: int, max_tgt_len: int, position_start: int = 2,
                 turn_type_size: int = TURN_TYPE_SIZE):
        if max_src_len < 3 or max_tgt_len < 2:
            raise ValueError(f"max_src_len {max_src_len} must be >= 3 and max_tgt_len {max_tgt_len} >= 2")
        self.tok, self.max_src_len, self.max_tgt_len = tokenizer, max_src_len, max_tgt_len
        self.position_start, self.max_turns = position_start, turn_type_size - 1
        self.truncated = {"source": 0, "knowledge": 0, "turns": 0, "target": 0}  # every encoding
        self.passes = PassCounts()  # per input set, its last pass (counted())

    def _to_ids(self, segment: Segment, pretokenized: bool) -> List[int]:
        return from_original_ids(self.tok, segment) if pretokenized else self.tok.encode(segment)

    def _segment(self, segment: Segment, pretokenized: bool, what: str) -> List[int]:
        ids = self._to_ids(segment, pretokenized) + [self.tok.sep_token_id]
        if len(ids) > self.max_src_len - 1:  # _trunc_token_ids(keep_sep=True)
            self.truncated[what] += 1
            ids = ids[:self.max_src_len - 2] + [self.tok.sep_token_id]
        return ids

    def encode(self, example: Example, with_target: bool = True) -> OriginalEncoded:
        t, p = self.tok, self.position_start
        pretokenized, dialog = getattr(example, "pretokenized", False), getattr(example, "dialog", False)
        segments = list(getattr(example, "segments", None) or [])
        if not segments:
            segments = example.source.split(TURN_SEP) if dialog else \
                ([example.title] if example.title is not None else []) + [example.source]
        source, positions, roles, turns = [t.cls_token_id], [p], [], []
        knowledge = getattr(example, "knowledge", None)
        if dialog:
            if len(segments) > self.max_turns:
                self.truncated["turns"] += 1
                segments = segments[-self.max_turns:]
            seg_roles, seg_turns = dialog_types(len(segments))
            roles, turns = [len(segments) % 2], [len(segments)]
            if knowledge:
                ids = self._segment(knowledge, pretokenized, "knowledge")
                source, positions = source + ids, positions + list(range(p + 1, p + 1 + len(ids)))
                roles, turns = roles + [KNOWLEDGE_ROLE] * len(ids), turns + [0] * len(ids)
        for k, segment in enumerate(segments):
            ids = self._segment(segment, pretokenized, "source")
            source, positions = source + ids, positions + list(range(p + 1, p + 1 + len(ids)))
            if dialog:
                roles, turns = roles + [seg_roles[k]] * len(ids), turns + [seg_turns[k]] * len(ids)
        target = [t.cls_token_id]
        if with_target:
            text = getattr(example, "target_ids", None) if pretokenized else example.target
            if text is None:
                raise ValueError(f"example {example.id} has no target")
            ids = self._to_ids(text, pretokenized) + [t.sep_token_id]
            if len(ids) > self.max_tgt_len - 1:  # _trunc_token_ids(keep_sep=False): no end token
                self.truncated["target"] += 1
                ids = ids[:self.max_tgt_len - 1]
            if ids[-1] == t.sep_token_id:
                ids[-1] = t.mask_token_id  # [MASK] is the end token
            target += ids
        return OriginalEncoded(source, target, positions, [p] + list(range(p + 1, p + len(target))),
                               roles if dialog else None, turns if dialog else None)

    def encode_all(self, examples: Sequence[Example], with_target: bool = True,
                   where: str = "") -> List[OriginalEncoded]:
        before = dict(self.truncated)
        out = [self.encode(e, with_target) for e in examples]
        cut = self.passes.record_since(where, before, self.truncated)
        if cut:
            logger.warning("%s: truncated %s (max_src_len %d, max_tgt_len %d)", where or "examples",
                           ", ".join(f"{n} {k}" for k, n in cut.items()), self.max_src_len, self.max_tgt_len)
        return out

    def counted(self) -> dict:
        """As ``seq2seq.Seq2SeqEncoder.counted``: each input set's last pass."""
        return self.passes.totals(self.truncated)


def _batch(items: Sequence[OriginalEncoded], pad_id: int, decoding: bool) -> Dict[str, np.ndarray]:
    dialog = {e.role_ids is not None for e in items}
    if len(dialog) != 1:
        raise ValueError("a batch mixes dialog and non-dialog examples")
    rows = {k: [] for k in ("input_ids", "token_type_ids", "position_ids", "rank", "valid", "role_ids",
                            "turn_ids")}
    for e in items:
        tgt, tgt_pos = (e.target_ids[:1], e.target_positions[:1]) if decoding else (e.target_ids,
                                                                                     e.target_positions)
        n_src, n_tgt = len(e.source_ids), len(tgt)
        rows["input_ids"].append(np.asarray(e.source_ids + tgt, np.int64))
        rows["token_type_ids"].append(np.asarray([0] * n_src + [1] * n_tgt, np.int64))
        rows["position_ids"].append(np.asarray(e.source_positions + tgt_pos, np.int64))
        rows["rank"].append(masks.ranks(n_src, n_tgt))
        rows["valid"].append(np.ones(n_src + n_tgt, bool))
        if e.role_ids is not None:
            rows["role_ids"].append(np.asarray(e.role_ids + [0] * n_tgt, np.int64))
            rows["turn_ids"].append(np.asarray(e.turn_ids + [0] * n_tgt, np.int64))
    batch = {k: masks.pad_batch(v, pad_id if k == "input_ids" else (False if k == "valid" else 0), left=decoding)
             for k, v in rows.items() if v}
    rank, valid = batch.pop("rank"), batch.pop("valid")
    batch["attention_mask"] = masks.may_attend(valid, rank)
    return batch


def original_training_batch(items: Sequence[OriginalEncoded], pad_id: int) -> Dict[str, np.ndarray]:
    """Right-padded teacher-forcing batch (B = batch, L = longest source + target, N = target tokens to predict):

      input_ids        (B, L) int64  source then target ids, ``pad_id`` where padded
      token_type_ids   (B, L) int64  0 source / 1 target
      position_ids     (B, L) int64  the encoder's positions (restarting per segment and for the target)
      attention_mask   (B, L, L) bool  ``masks.may_attend``: source rank 0, target ranks 1..T, pads never seen
      masked_positions (N,) int64    flat index into B * L of each target position but the last
      labels           (N,) int64    the next target token there ([MASK] = eos only if the target was not cut)
      role_ids, turn_ids (B, L) int64  dialog batches only; 0 on the target and on pads
    """
    batch = _batch(items, pad_id, decoding=False)
    length = batch["input_ids"].shape[1]
    positions, labels = [], []
    for b, e in enumerate(items):
        start = len(e.source_ids)
        positions.extend(b * length + j for j in range(start, start + len(e.target_ids) - 1))
        labels.extend(e.target_ids[1:])
    batch["masked_positions"] = np.asarray(positions, np.int64)
    batch["labels"] = np.asarray(labels, np.int64)
    return batch


def original_decoding_batch(items: Sequence[OriginalEncoded], pad_id: int) -> Dict[str, np.ndarray]:
    """Source and target [CLS] (at position_start), left-padded so every row's [CLS] is last; the keys of
    ``original_training_batch`` without masked_positions/labels. Generated tokens continue at the [CLS]
    position + 1, token type 1 (and role 0, turn 0 for dialogs)."""
    return _batch(items, pad_id, decoding=True)
