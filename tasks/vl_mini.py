"""The embedded vision-language demo set (``tasks/demo_data/vl``): synthetic image regions, with captions,
entailment hypotheses and questions about them, in the formats users download.

    python -m tasks.vl_mini --out tasks/demo_data/vl [--images 60] [--seed 1]

Written for the project, deterministic. Images and their regions are made as ``tasks/pretrain_mini.py`` makes
them (4-9 regions of 6 object classes in 4 colours; features from class and colour prototypes; class
distributions peaking at the true class). Files:

- ``regions/``: the region store (24-d features, class distributions with the background first);
- ``class_names.txt``: the object classes, for object tags from the store;
- ``captions.json``: a Karpathy split file, 2 captions per image ("a red ball next to a blue box"), the first
  80% of the images ``train``, the rest ``val``;
- ``snli_ve_{train,dev}.jsonl``: per image an entailed, a neutral and two contradicted hypotheses, worded alike
  across labels so that only the image tells them apart (``hypotheses``);
- ``vqa_{train,dev}_questions.json`` / ``_annotations.json``: VQA v2 files, questions of three kinds (the
  colour of an object the image has once, whether it has an object, how many boxes of a class it has), 10
  answers each.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from paddle_unimo.data.regions import RegionStore
from paddle_unimo.fileio import atomic_write, write_json, write_jsonl

from tasks.pretrain_mini import CLASSES, COLOURS, RELATIONS, caption, make_image, make_prototypes

def hypotheses(rng, classes, colours) -> list:
    """Hypotheses whose wording never tells the label: "there is a <colour> <object>" is entailed when the image
    has that object in that colour and contradicted when it lacks the object; "the <object> is <relation> the
    <object>" is neutral when the image has both objects (regions cannot show the relation) and contradicted when
    it lacks one of them."""
    present = sorted(set(int(c) for c in classes))
    absent = [c for c in range(len(CLASSES)) if c not in present]
    i = int(rng.integers(len(classes)))
    colour = COLOURS[int(rng.integers(len(COLOURS)))]
    out = [(f"there is a {COLOURS[colours[i]]} {CLASSES[classes[i]]}", "entailment")]
    a, b = rng.choice(len(classes), size=2, replace=False)
    rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
    out.append((f"the {CLASSES[classes[a]]} is {rel} the {CLASSES[classes[b]]}", "neutral"))
    if absent:
        missing = CLASSES[absent[int(rng.integers(len(absent)))]]
        out.append((f"there is a {colour} {missing}", "contradiction"))
        out.append((f"the {CLASSES[classes[a]]} is {rel} the {missing}", "contradiction"))
    return out


def questions(rng, classes, colours) -> list:
    counts = {c: int((classes == c).sum()) for c in range(len(CLASSES))}
    once = [c for c, n in counts.items() if n == 1]
    out = []
    if once:
        c = once[int(rng.integers(len(once)))]
        out.append((f"what color is the {CLASSES[c]}?", COLOURS[int(colours[list(classes).index(c)])]))
    c = int(rng.integers(len(CLASSES)))
    out.append((f"is there a {CLASSES[c]}?", "yes" if counts[c] else "no"))
    c = int(classes[int(rng.integers(len(classes)))])
    out.append((f"how many {CLASSES[c]}s are there?", str(counts[c])))  # digits, as VQA v2 annotations
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--dim", type=int, default=24, help="region feature size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    prototypes = make_prototypes(rng, args.dim)
    store = RegionStore(os.path.join(args.out, "regions"))
    records, karpathy = [], []
    ve = {"train": [], "dev": []}
    vqa = {"train": ([], []), "dev": ([], [])}
    for index in range(args.images):
        record, classes, colours = make_image(rng, index, args.dim, prototypes)
        record.image_id = f"mini_{index:04d}.jpg"  # a file name, with the number VQA's COCO names are matched by
        records.append(record)
        name, train = record.image_id, index < int(0.8 * args.images)
        split = "train" if train else "dev"
        karpathy.append({"filename": name, "imgid": index, "split": "train" if train else "val",
                         "sentences": [{"raw": caption(rng, classes, colours)["caption"], "sentid": 2 * index + k,
                                        "imgid": index} for k in range(2)]})
        for k, (text, label) in enumerate(hypotheses(rng, classes, colours)):
            ve[split].append({"Flickr30K_ID": name[:-len(".jpg")], "sentence2": text, "gold_label": label,
                              "pairID": f"{name}#{k}"})
        for k, (text, answer) in enumerate(questions(rng, classes, colours)):
            qid = index * 10 + k
            vqa[split][0].append({"image_id": index, "question": text, "question_id": qid})
            vqa[split][1].append({"question_id": qid, "image_id": index,
                                  "answers": [{"answer": answer, "answer_id": j + 1} for j in range(10)]})
    store.append(records, skip_existing=True)
    write_json(os.path.join(args.out, "captions.json"), {"dataset": "vl_mini", "images": karpathy})
    atomic_write(os.path.join(args.out, "class_names.txt"), "".join(c + "\n" for c in CLASSES))
    for split in ("train", "dev"):
        write_jsonl(os.path.join(args.out, f"snli_ve_{split}.jsonl"), ve[split])
        questions_file, annotations = vqa[split]
        write_json(os.path.join(args.out, f"vqa_{split}_questions.json"),
                   {"data_subtype": "vl_mini", "questions": questions_file})
        write_json(os.path.join(args.out, f"vqa_{split}_annotations.json"), {"annotations": annotations})
    print(f"vl_mini: {len(records)} images in {args.out}: captions, SNLI-VE pairs, VQA questions, region store")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
