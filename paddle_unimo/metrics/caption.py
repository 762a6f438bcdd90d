"""COCO caption metrics exactly as the COCO caption evaluation code computes them (the UNIMO paper reports
image captioning on the COCO Karpathy test split as BLEU-4, METEOR, CIDEr and SPICE).

``caption_scores`` runs what ``pycocoevalcap.eval.COCOEvalCap.evaluate`` runs (pycocoevalcap 1.2, the pip
package of tylin/coco-caption), without the COCO API objects around it: the Stanford PTB tokenizer
(``stanford-corenlp-3.4.1.jar``: lower-cased, punctuation removed) on the predictions and on the references,
then ``Bleu(4)``, ``Meteor()`` (``meteor-1.5.jar``), ``Rouge()`` (ROUGE-L, beta 1.2), ``Cider()`` (CIDEr-D
document frequencies from the given references) and ``Spice()`` (``spice-1.0.jar``), each called as
``compute_score(gts, res)``. Scores are multiplied by 100, as papers report them.

SPICE needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads from nlp.stanford.edu on first use; this
module never downloads them. When they are absent SPICE is not run and the result says so under ``skipped``.
The tokenizer, METEOR and SPICE start Java (``java`` on PATH).

Readers: ``read_coco_results`` reads a COCO result file ``[{"image_id": ..., "caption": ...}, ...]``;
``read_coco_references`` reads COCO caption annotations ``{"annotations": [{"image_id", "caption"}, ...]}``
or the coco-caption debug layout ``{"<image_id>": [caption, ...]}``. Image ids are kept as the JSON gives
them (COCO files: ints; debug layout: strings).
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, Hashable, List, Mapping, Sequence

from paddle_unimo.fileio import DataError, read_json

BLEU_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4")


def _spice_dir() -> str:
    from pycocoevalcap.spice import spice
    return os.path.dirname(os.path.abspath(spice.__file__))


def spice_available() -> bool:
    """True when ``spice-1.0.jar`` and the Stanford CoreNLP 3.6.0 jars (code and models) that its manifest
    loads from ``lib/`` are installed beside pycocoevalcap's spice.py; nothing is downloaded."""
    from pycocoevalcap.spice import get_stanford_models as stanford
    from pycocoevalcap.spice import spice
    folder = _spice_dir()
    needed = [os.path.join(folder, spice.SPICE_JAR)]
    needed += [os.path.join(folder, stanford.SPICELIB, name.format(stanford.JAR)) for name in ("{}.jar",
                                                                                               "{}-models.jar")]
    return all(os.path.isfile(path) for path in needed)


def _check_ids(predictions: Mapping, references: Mapping) -> None:
    no_refs = [k for k in predictions if k not in references]
    no_pred = [k for k in references if k not in predictions]
    if not no_refs and not no_pred:
        return
    message = []
    if no_refs:
        message.append(f"predictions for {len(no_refs)} image(s) without references: {no_refs[:10]!r}")
    if no_pred:
        message.append(f"references for {len(no_pred)} image(s) without predictions: {no_pred[:10]!r}")
    if {str(k) for k in predictions} == {str(k) for k in references}:
        message.append("(the ids differ only in type, int against str)")
    raise ValueError("; ".join(message))


def meteor_score(gts, res) -> float:
    """pycocoevalcap's METEOR 1.5 (x100) of tokenized ``{id: [text]}`` references and results; the Java process
    it starts is stopped afterwards."""
    from pycocoevalcap.meteor.meteor import Meteor
    meteor = Meteor()
    try:
        return 100.0 * float(meteor.compute_score(gts, res)[0])
    finally:
        del meteor  # its __del__ stops the METEOR Java process


def caption_scores(predictions: Mapping[Hashable, str],
                   references: Mapping[Hashable, Sequence[str]]) -> Dict[str, object]:
    """COCOEvalCap scores ×100 of one caption per image against that image's references.

    Returns ``bleu1``..``bleu4``, ``meteor``, ``rouge_l``, ``cider`` and ``spice`` when ``spice_available()``,
    else ``skipped = {"spice": reason}``. Both dicts must hold the same image ids (ValueError otherwise).
    """
    _check_ids(predictions, references)
    for image_id, captions in references.items():
        if isinstance(captions, str) or not captions or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"image {image_id!r}: references must be a non-empty list of caption strings")
        if not isinstance(predictions[image_id], str):
            raise ValueError(f"image {image_id!r}: the prediction must be one caption string")
    if shutil.which("java") is None:
        raise RuntimeError("caption_scores needs Java (`java` not on PATH): the PTB tokenizer used by every "
                           "metric, METEOR and SPICE run jars from pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    image_ids = list(references)  # COCOEvalCap iterates the annotation file's images
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in image_ids})
    res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in image_ids})

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores: Dict[str, object] = {key: 100.0 * float(value) for key, value in zip(BLEU_KEYS, bleu)}
    scores["meteor"] = meteor_score(gts, res)
    scores["rouge_l"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
    scores["cider"] = 100.0 * float(Cider().compute_score(gts, res)[0])
    if spice_available():
        from pycocoevalcap.spice.spice import Spice
        scores["spice"] = 100.0 * float(Spice().compute_score(gts, res)[0])
    else:
        scores["skipped"] = {"spice": "Stanford CoreNLP 3.6.0 jars are not installed in "
                                      f"{os.path.join(_spice_dir(), 'lib')} (pycocoevalcap downloads them "
                                      "from nlp.stanford.edu on first use; not attempted)"}
    return scores


# ---- readers ---------------------------------------------------------------------------------------------

def _image_id(value, where: str):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{where}: image_id must be an int or a string, got {value!r}")
    return value


def _entries(path, data, what: str) -> List[tuple]:
    """``(where, image_id, caption)`` of a list of ``{"image_id", "caption"}`` objects."""
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    out = []
    for index, entry in enumerate(data):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
            raise DataError(f"{where}: expected an object with image_id and caption, got {entry!r}"[:300])
        if not isinstance(entry["caption"], str):
            raise DataError(f"{where}: caption must be a string, got {entry['caption']!r}")
        out.append((where, _image_id(entry["image_id"], where), entry["caption"]))
    return out


def read_coco_results(path) -> Dict[Hashable, str]:
    """A COCO caption result file ``[{"image_id", "caption"}, ...]`` -> ``{image_id: caption}``; a malformed
    entry or a repeated image_id is a ``DataError`` naming the file and the entry's index."""
    predictions: Dict[Hashable, str] = {}
    for where, image_id, caption in _entries(path, read_json(path, "COCO result file"), "results"):
        if image_id in predictions:
            raise DataError(f"{where}: image_id {image_id!r} repeated (one caption per image)")
        predictions[image_id] = caption
    return predictions


def read_coco_references(path) -> Dict[Hashable, List[str]]:
    """COCO caption annotations (``{"annotations": [{"image_id", "caption"}, ...]}``, images in order of first
    mention) or the coco-caption debug layout ``{"<image_id>": [caption, ...]}`` -> ``{image_id: captions}``."""
    data = read_json(path, "COCO caption annotations")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    references: Dict[Hashable, List[str]] = {}
    if "annotations" in data:
        for _, image_id, caption in _entries(path, data["annotations"], "annotations"):
            references.setdefault(image_id, []).append(caption)
        return references
    for image_id, captions in data.items():
        where = f"{path}: image {image_id!r}"
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise DataError(f"{where}: expected a non-empty list of caption strings, got {captions!r}"[:300])
        references[image_id] = list(captions)
    return references
