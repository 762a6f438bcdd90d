"""Readers of the vision-language annotation files users download, returning plain dataclasses.

Captions (``Caption``) feed captioning, retrieval and image-text pretraining; entailment pairs
(``EntailmentPair``) and questions (``VqaQuestion``) feed the SNLI-VE and VQA fine-tuning tasks of the UNIMO
paper (section 4.1). Every file is read through ``paddle_unimo.fileio`` (UTF-8, a byte order mark accepted);
bad input is a ``DataError`` naming the file and the line (JSON lines, text) or the key (JSON).

Formats:

- Karpathy splits (``dataset_coco.json``, ``dataset_flickr30k.json`` of Karpathy & Fei-Fei's neuraltalk /
  neuraltalk2 ``caption_datasets.zip``): ``{"images": [{"filename", "filepath"?, "split", "sentences":
  [{"raw", "tokens", "sentid", "imgid"}], "imgid", "sentids", "cocoid"?}], "dataset"}``; ``split`` is one of
  train / restval / val / test, where restval is the part of COCO val2014 that the splits give to training.
- COCO caption annotations (``captions_train2014.json``, ``captions_val2014.json`` of the COCO 2014 release):
  ``{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "id", "caption"}]}``.
- Reference captions in the layout of the tylin/coco-caption evaluation code: ``{"<image_id>": [caption, ...]}``.
- Flickr30k Entities ``Sentences/<image id>.txt``: one caption a line, phrases marked up as
  ``[/EN#<chain id>/<type>[/<type>...] <phrase>]``; the markup is dropped, the phrase kept.
- SNLI-VE (Xie et al. 2019) JSON lines ``snli_ve_{train,dev,test}.jsonl``: ``Flickr30K_ID``, ``sentence2`` (the
  hypothesis), ``gold_label``, ``pairID`` (and the SNLI fields, ignored).
- VQA v2 (Goyal et al. 2017) ``v2_OpenEnded_mscoco_<subtype>_questions.json`` (``{"data_subtype", "questions":
  [{"image_id", "question", "question_id"}]}``) and ``v2_mscoco_<subtype>_annotations.json`` (``{"annotations":
  [{"question_id", "answers": [{"answer", ...} x 10], ...}]}``). Images are named as COCO names them,
  ``COCO_<subtype>_<image_id:012d>.jpg``; test-dev2015 questions are about test2015 images.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

from ..fileio import DataError, parse_json_line, read_json, read_text_lines
from ..metrics.vqa import NUM_ANSWERS

KARPATHY_SPLITS = ("train", "restval", "val", "test")
SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")
_ENTITY = re.compile(r"\[/EN#\d+(?:/[^\s\]/]+)+ ([^\[\]]*)\]")


@dataclass
class Caption:
    """One caption of one image; ``split`` is "" when the file does not say."""
    image: str
    text: str
    split: str
    id: str


@dataclass
class EntailmentPair:
    """An SNLI-VE premise image, its hypothesis and label (entailment / neutral / contradiction)."""
    image: str
    hypothesis: str
    label: str
    id: str
    line: int = field(default=0, compare=False)  # its line in the file


@dataclass
class VqaQuestion:
    """A VQA question; ``answers`` holds the annotators' answers, None when the split has no annotations."""
    question_id: int
    image: str
    question: str
    answers: Optional[List[str]]


def _get(obj, key: str, kind, where: str):
    """``obj[key]`` checked to be a ``kind``; a ``DataError`` naming ``where`` and the key otherwise."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{where}: missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{where}: {key!r} must be {names}, got {type(value).__name__}")
    return value


def _text(obj, key: str, where: str) -> str:
    value = _get(obj, key, str, where).strip()
    if not value:
        raise DataError(f"{where}: {key!r} is empty")
    return value


def read_karpathy(path, splits: Iterable[str] = ("train", "restval")) -> List[Caption]:
    """Captions of the images whose split is in ``splits`` (image = ``filename``, id = ``sentid``); the
    caption's ``split`` keeps the file's value, so restval stays distinguishable from train."""
    splits = tuple(splits)
    unknown = sorted(set(splits) - set(KARPATHY_SPLITS))
    if unknown:
        raise ValueError(f"unknown Karpathy split(s) {unknown}; known: {list(KARPATHY_SPLITS)}")
    path = os.fspath(path)
    images = _get(read_json(path, "Karpathy split file"), "images", list, path)
    captions = []
    for i, image in enumerate(images):
        where = f"{path}: images[{i}]"
        split = _get(image, "split", str, where)
        if split not in KARPATHY_SPLITS:
            raise DataError(f"{where}: split {split!r} is not one of {list(KARPATHY_SPLITS)}")
        filename = _text(image, "filename", where)
        sentences = _get(image, "sentences", list, where)
        if split not in splits:
            continue
        for j, sentence in enumerate(sentences):
            at = f"{where}.sentences[{j}]"
            sentid = _get(sentence, "sentid", int, at)
            captions.append(Caption(filename, _text(sentence, "raw", at), split, str(sentid)))
    return captions


def read_coco_captions(path, split: str = "") -> List[Caption]:
    """Captions of a COCO caption annotation file (image = the image's ``file_name``, id = the annotation id)."""
    path = os.fspath(path)
    data = read_json(path, "COCO caption file")
    names: Dict[int, str] = {}
    for i, image in enumerate(_get(data, "images", list, path)):
        names[_get(image, "id", int, f"{path}: images[{i}]")] = _text(image, "file_name", f"{path}: images[{i}]")
    captions = []
    for i, ann in enumerate(_get(data, "annotations", list, path)):
        where = f"{path}: annotations[{i}]"
        ann_id = _get(ann, "id", int, where)
        image_id = _get(ann, "image_id", int, where)
        if image_id not in names:
            raise DataError(f"{path}: annotation id {ann_id} refers to image_id {image_id}, "
                            f"which is not in 'images'")
        captions.append(Caption(names[image_id], _text(ann, "caption", where), split, str(ann_id)))
    return captions


def read_coco_refs(path, split: str = "") -> List[Caption]:
    """Captions of a ``{"<image_id>": [caption, ...]}`` reference file (image = the key as written, id =
    ``<image_id>#<index>``), in the file's order."""
    path = os.fspath(path)
    data = read_json(path, "reference caption file")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of image id -> captions, got {type(data).__name__}")
    captions = []
    for image_id in data:
        for j, text in enumerate(_get(data, image_id, list, path)):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}: [{image_id!r}][{j}] must be a non-empty string, got {text!r:.60}")
            captions.append(Caption(image_id, text.strip(), split, f"{image_id}#{j}"))
    return captions


def strip_entities(text: str, where: str = "") -> str:
    """The plain caption of a Flickr30k Entities line: ``[/EN#12/people A girl]`` becomes ``A girl``."""
    plain = _ENTITY.sub(r"\1", text)
    if "[/EN#" in plain:
        raise DataError(f"{where}: unbalanced entity markup in {text[:60]!r}")
    return plain


def read_flickr30k_sentences(path, split: str = "") -> List[Caption]:
    """Captions of one Flickr30k Entities ``Sentences/<image id>.txt`` file, or of every ``.txt`` file of a
    folder in name order (image = ``<image id>.jpg``, id = ``<image id>.jpg#<line index>`` as in
    Flickr30k's ``results_20130124.token``)."""
    path = os.fspath(path)
    files = ([os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".txt")]
             if os.path.isdir(path) else [path])
    captions = []
    for file in files:
        image = os.path.splitext(os.path.basename(file))[0] + ".jpg"
        for j, (where, line) in enumerate(read_text_lines(file)):
            text = strip_entities(line, where).strip()
            captions.append(Caption(image, text, split, f"{image}#{j}"))
    return captions


def read_snli_ve(path, skip_bad: bool = False):
    """``(pairs, ReadReport)`` of an SNLI-VE JSON-lines file (image = ``<Flickr30K_ID>.jpg``, id = ``pairID``);
    a bad line is a ``DataError`` naming it, or with ``skip_bad`` an entry of the report."""
    from .seq2seq import read_records
    return read_records(os.fspath(path), snli_ve_pair, skip_bad)


def snli_ve_pair(where: str, line: int, text: str) -> EntailmentPair:
    row = parse_json_line(where, text)
    label = _get(row, "gold_label", str, where)
    if label not in SNLI_VE_LABELS:
        raise DataError(f"{where}: gold_label {label!r} is not one of {list(SNLI_VE_LABELS)}")
    image = _get(row, "Flickr30K_ID", (str, int), where)
    return EntailmentPair(f"{image}.jpg", _text(row, "sentence2", where), label, _text(row, "pairID", where), line)


def coco_image_name(subtype: str, image_id: int) -> str:
    """The COCO file name of an image: ``COCO_val2014_000000000042.jpg``."""
    subtype = "test2015" if subtype == "test-dev2015" else subtype
    return f"COCO_{subtype}_{image_id:012d}.jpg"


def read_vqa(questions_path, annotations_path=None, scored: bool = False) -> List[VqaQuestion]:
    """Questions of a VQA v2 questions file, each with the answers of its annotation (None without an
    annotations file); a question without annotation is a ``DataError`` naming its id, and with ``scored``
    (answers the VQA accuracy will score) one without the 10 answers the accuracy leaves out in turn."""
    questions_path = os.fspath(questions_path)
    data = read_json(questions_path, "VQA questions file")
    subtype = _text(data, "data_subtype", questions_path)
    answers: Optional[Dict[int, List[str]]] = None
    if annotations_path is not None:
        annotations_path = os.fspath(annotations_path)
        answers = {}
        anns = _get(read_json(annotations_path, "VQA annotations file"), "annotations", list, annotations_path)
        for i, ann in enumerate(anns):
            where = f"{annotations_path}: annotations[{i}]"
            qid = _get(ann, "question_id", int, where)
            if qid in answers:
                raise DataError(f"{where}: question_id {qid} is annotated twice")
            answers[qid] = [_get(a, "answer", str, f"{where}.answers[{k}]")
                            for k, a in enumerate(_get(ann, "answers", list, where))]
            if scored and len(answers[qid]) != NUM_ANSWERS:
                raise DataError(f"{where}: question_id {qid} has {len(answers[qid])} answers; VQA v2 gives "
                                f"{NUM_ANSWERS} per question")
    out = []
    for i, q in enumerate(_get(data, "questions", list, questions_path)):
        where = f"{questions_path}: questions[{i}]"
        qid = _get(q, "question_id", int, where)
        if answers is not None and qid not in answers:
            raise DataError(f"{annotations_path}: no annotation of question_id {qid} "
                            f"(asked in {questions_path})")
        out.append(VqaQuestion(qid, coco_image_name(subtype, _get(q, "image_id", int, where)),
                               _text(q, "question", where), None if answers is None else answers[qid]))
    return out


def read_caption_file(path, splits: Iterable[str] = ("train", "restval")) -> List[Caption]:
    """Captions of any caption format above, told apart by content: a folder of Flickr30k Entities sentences, a
    Karpathy split file (``images`` with ``sentences``; only ``splits``), COCO caption annotations
    (``annotations``), or a ``{"<image_id>": [caption, ...]}`` reference file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return read_flickr30k_sentences(path)
    data = read_json(path, "caption file")
    if isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" not in data:
        return read_karpathy(path, splits)
    if isinstance(data, dict) and "annotations" in data:
        return read_coco_captions(path)
    if isinstance(data, dict):
        return read_coco_refs(path)
    raise DataError(f"{path}: not a caption file (expected a Karpathy split file, COCO caption annotations or "
                    f"{{image_id: [captions]}}), got a JSON {type(data).__name__}")
