"""Object tags for image captioning: the names of the objects detected in an image, read as text between the
regions and the caption (Oscar's object tags, which the original UNIMO captioning reads from its object file
``coco_object_0.35_tot.ids``: PaddlePaddle/Research NLP/UNIMO ``src/reader/img2txt_reader.py``).

Sources:

- ``tags_from_regions``: a region store record's class distributions (column 0 the background, then the
  detector's classes): the best foreground class of every box whose probability is at least ``threshold``,
  named by ``class_names`` (one name per line, in the detector's class order, e.g. bottom-up-attention's
  ``objects_vocab.txt``; ``a,b`` alternatives keep the first), in box order, each name once.
- ``read_tag_file``: a JSON file ``{"<image file name>": "tag tag ..." | ["tag", ...]}``, or the original's
  object file ``image_id;obj_token_ids;obj_sent_ids;obj_pos_ids`` whose token ids are used as they are (they
  are ids of the original English vocabulary) with its position ids (the original's reader feeds
  ``obj_pos_ids`` as they are), and whose ``image_id`` is matched to an image by the number at the end of its
  file name (``COCO_val2014_000000391895.jpg`` -> 391895).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..fileio import DataError, read_json, read_text_lines


@dataclass(frozen=True)
class TagIds:
    """The tags of one line of the original object file: ``obj_token_ids`` and their ``obj_pos_ids``."""
    ids: Tuple[int, ...]
    positions: Tuple[int, ...]


Tags = Union[str, TagIds]  # a text of tag names, or the token and position ids of the original object file


def read_class_names(path: str) -> List[str]:
    names = [line.split(",")[0].strip() for _, line in read_text_lines(path)]
    if not names:
        raise DataError(f"{path}: no class names")
    return names


def tags_from_regions(class_probs: np.ndarray, class_names: Sequence[str], threshold: float,
                      max_boxes: int) -> str:
    """The tag text of one image from its boxes' class distributions (n, 1 + C), of the first ``max_boxes``."""
    probs = np.asarray(class_probs)[:max_boxes, 1:]
    if probs.shape[1] != len(class_names):
        raise DataError(f"the region store has {probs.shape[1]} foreground classes but the class name file "
                        f"names {len(class_names)}")
    names: List[str] = []
    if len(probs):
        best = probs.argmax(axis=1)
        for box, cls in enumerate(best):
            if probs[box, cls] >= threshold and class_names[cls] not in names:
                names.append(class_names[cls])
    return " ".join(names)


def image_number(name: str) -> str:
    """The number at the end of an image file name's stem ("" if none): the COCO / Flickr30k image id."""
    match = re.search(r"(\d+)$", os.path.splitext(name)[0])
    return str(int(match.group(1))) if match else ""


def read_tag_file(path: str) -> Dict[str, Tags]:
    """``{key: tags}``: keys are image file names (JSON) or image numbers (the original object file)."""
    if path.endswith(".json"):
        data = read_json(path, "object tag file")
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object of image file name -> tags, got {type(data).__name__}")
        out: Dict[str, Tags] = {}
        for image, tags in data.items():
            if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
                tags = " ".join(tags)
            if not isinstance(tags, str):
                raise DataError(f"{path}: [{image!r}]: tags must be a string or a list of strings")
            out[image] = tags
        return out
    out = {}
    for where, line in read_text_lines(path):
        parts = line.split(";")
        if len(parts) != 4:
            raise DataError(f"{where}: expected 4 ';'-separated fields image_id;obj_token_ids;obj_sent_ids;"
                            f"obj_pos_ids, got {len(parts)}")
        fields = {}
        for name, text in (("obj_token_ids", parts[1]), ("obj_pos_ids", parts[3])):
            try:
                fields[name] = tuple(int(t) for t in text.split())
            except ValueError:
                raise DataError(f"{where}: {name} must be space-separated integers") from None
        ids, positions = fields["obj_token_ids"], fields["obj_pos_ids"]
        if len(positions) != len(ids) or min(positions, default=0) < 0:
            raise DataError(f"{where}: expected one obj_pos_id >= 0 per obj_token_id, got {len(positions)} for "
                            f"{len(ids)}")
        out[str(int(parts[0])) if parts[0].strip().isdigit() else parts[0].strip()] = TagIds(ids, positions)
    return out


def lookup_tags(tags: Dict[str, Tags], image: str, default: Optional[Tags] = "") -> Optional[Tags]:
    """The tags of ``image`` in a ``read_tag_file`` table (by file name, else by image number); ``default`` if
    none."""
    if image in tags:
        return tags[image]
    return tags.get(image_number(image), default)
