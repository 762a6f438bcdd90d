"""The embedded mini corpus of ``make pretrain``: synthetic image regions and captions that describe them.

    python -m tasks.pretrain_mini --out out/pretrain/mini [--images 48] [--seed 0]

Written for the project, deterministic: each image has 4-9 regions of 6 object classes in 4 colours; a
region's feature is its class prototype plus its colour prototype plus noise, its class distribution peaks
at its class (column 0 is the background), and its caption names two of its regions ("a red ball next to a
blue box"). Each caption carries a paraphrase (a CMCL positive) and two rewrites that change one colour or
one object (hard negatives), so every objective has something to learn. The text corpus is the bundled
demo data (``tasks/demo_data``).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from paddle_unimo.data.regions import RegionRecord, RegionStore
from paddle_unimo.fileio import atomic_write

CLASSES = ["ball", "box", "cat", "dog", "car", "tree"]  # class i + 1; column 0 is the background
COLOURS = ["red", "blue", "green", "yellow"]
RELATIONS = ["next to", "behind", "under", "near"]


def make_prototypes(rng, dim: int) -> dict:
    """The class and colour prototypes every region feature is drawn around."""
    return {"class": rng.standard_normal((len(CLASSES), dim)), "colour": 0.5 * rng.standard_normal((len(COLOURS), dim))}


def make_image(rng, index: int, dim: int, prototypes):
    n = int(rng.integers(4, 10))
    classes, colours = rng.integers(0, len(CLASSES), n), rng.integers(0, len(COLOURS), n)
    xy = rng.random((n, 2)) * 400
    boxes = np.concatenate([xy, xy + 40 + rng.random((n, 2)) * 200], axis=1).clip(0, 640).astype(np.float32)
    feats = prototypes["class"][classes] + prototypes["colour"][colours] + 0.1 * rng.standard_normal((n, dim))
    logits = rng.standard_normal((n, len(CLASSES) + 1))
    logits[np.arange(n), classes + 1] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    record = RegionRecord(f"mini{index:04d}", 640, 640, boxes, feats.astype(np.float32), probs.astype(np.float32))
    return record, classes, colours


def caption(rng, classes, colours) -> dict:
    i, j = rng.choice(len(classes), size=2, replace=False)
    a, b = (COLOURS[colours[i]], CLASSES[classes[i]]), (COLOURS[colours[j]], CLASSES[classes[j]])
    rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
    other_colour = COLOURS[(colours[i] + 1 + int(rng.integers(len(COLOURS) - 1))) % len(COLOURS)]
    other_class = CLASSES[(classes[j] + 1 + int(rng.integers(len(CLASSES) - 1))) % len(CLASSES)]
    return {"caption": f"a {a[0]} {a[1]} {rel} a {b[0]} {b[1]}",  # rows as tools/build_cmcl_data.py writes them
            "positive_texts": [{"text": f"there is a {a[0]} {a[1]} {rel} the {b[0]} {b[1]}", "source": "paraphrase"}],
            "positive_images": [],
            "negative_texts": [{"text": f"a {other_colour} {a[1]} {rel} a {b[0]} {b[1]}", "kind": "attribute"},
                               {"text": f"a {a[0]} {a[1]} {rel} a {b[0]} {other_class}", "kind": "object"}]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--dim", type=int, default=24, help="region feature size (the tiny preset's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    prototypes = make_prototypes(rng, args.dim)
    store = RegionStore(os.path.join(args.out, "regions"))
    records, lines = [], []
    for index in range(args.images):
        record, classes, colours = make_image(rng, index, args.dim, prototypes)
        records.append(record)
        lines.append(json.dumps({"image_id": record.image_id, "caption_id": f"{record.image_id}-0",
                                 **caption(rng, classes, colours)}))
    store.append(records, skip_existing=True)
    path, text = os.path.join(args.out, "captions.jsonl"), "\n".join(lines) + "\n"
    if not os.path.isfile(path) or open(path, encoding="utf-8").read() != text:  # as it is: a run may be reading it
        atomic_write(path, text)
    print(f"mini corpus: {len(store)} images with regions in {store.path if hasattr(store, 'path') else args.out}, "
          f"{len(lines)} captions in {path}")


if __name__ == "__main__":
    main()
