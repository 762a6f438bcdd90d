r"""Build the CMCL positives, hard negatives and retrieved texts/images for a captions file (UNIMO paper §2.1).

    python -m tools.build_cmcl_data --captions captions.jsonl --out cmcl.jsonl --paraphrases backtrans.tsv \
        --regions regions/coco --background first --negatives 4 --retrieved-texts 2 --retrieved-images 2 \
        --text-corpus sentences.txt --corpus-texts 2 --seed 0

Input: JSON lines ``{"image_id", "caption_id", "caption"}``. ``--paraphrases``: ``caption_id<TAB>paraphrase``
lines (back-translations or paraphrases made offline). ``--regions``: a ``RegionStore`` folder whose
``class_probs`` give each image's region labels; ``--background`` says which column is background: ``first``
for stores written by ``tools/extract_regions.py`` (which puts paddledet's background column first) and
converted bottom-up-attention or original UNIMO files, ``last`` for class distributions in paddledet's own
order, ``none`` when there is none. ``--retrieved-texts``: the captions of other images most similar by TF-IDF,
added to the hard negatives (the paper's sentence-level negatives). ``--text-corpus``: a text file, one text per
line, from which ``--corpus-texts`` TF-IDF neighbours per caption are added to the positives (X^T).

Output: one JSON line per caption with ``positive_texts``, ``positive_images`` and ``negative_texts``
(``paddle_unimo/augment/records.py`` documents the row; ``records.to_example`` turns a row into the
``CMCLExample`` of ``paddle_unimo/objectives/cmcl.py``), written to a temporary file and renamed. Negatives
are seeded per caption by (--seed, caption_id), so they do not change when other captions are added.
"""
from __future__ import annotations

import argparse
import sys

import paddle_unimo
from paddle_unimo.augment.records import build_rows, read_captions, store_image_neighbours, summarize
from paddle_unimo.augment.rewrite import read_paraphrases
from paddle_unimo.data.regions import open_store
from paddle_unimo.fileio import DataError, read_text_lines, write_jsonl

_BACKGROUND = {"first": 0, "last": -1, "none": None}


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", required=True, help="JSON lines {image_id, caption_id, caption}")
    parser.add_argument("--out", required=True, help="output JSON lines, one row per caption")
    parser.add_argument("--paraphrases", help="TSV caption_id<TAB>paraphrase (sentence-level positives)")
    parser.add_argument("--regions", help="RegionStore folder with class_probs, for image retrieval")
    parser.add_argument("--background", choices=sorted(_BACKGROUND), default="first",
                        help="background column of class_probs: first in stores written by extract_regions.py "
                             "and converted from bottom-up-attention files (default)")
    parser.add_argument("--negatives", type=_non_negative, default=4, help="hard negatives per caption")
    parser.add_argument("--retrieved-texts", type=_non_negative, default=2,
                        help="TF-IDF-similar captions of other images per caption, as hard negatives")
    parser.add_argument("--text-corpus", help="text file, one text per line: retrieved positives (X^T)")
    parser.add_argument("--corpus-texts", type=_non_negative, default=None,
                        help="TF-IDF neighbours in --text-corpus per caption (default 2 with --text-corpus, else 0)")
    parser.add_argument("--retrieved-images", type=_non_negative, default=None,
                        help="region-label neighbours per image (default 2 with --regions, else 0)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.retrieved_images is None:
        args.retrieved_images = 2 if args.regions else 0
    if args.retrieved_images and not args.regions:
        parser.error("--retrieved-images needs --regions (a RegionStore with class_probs)")
    if args.corpus_texts is None:
        args.corpus_texts = 2 if args.text_corpus else 0
    if args.corpus_texts and not args.text_corpus:
        parser.error("--corpus-texts needs --text-corpus (a text file, one text per line)")
    return args


def run(argv=None) -> dict:
    """Builds and writes the file; returns the counts of the summary line (``records.summarize``)."""
    args = parse_args(argv)
    captions = read_captions(args.captions)
    paraphrases = read_paraphrases(args.paraphrases, {c["caption_id"] for c in captions}) if args.paraphrases \
        else {}
    neighbours, missing = {}, 0
    if args.regions:
        store = open_store(args.regions)
        if store.num_classes is None:
            raise DataError(f"{args.regions}: the store has no class_probs, so images have no region labels")
        neighbours = store_image_neighbours(store, args.retrieved_images, _BACKGROUND[args.background])
        missing = len({c["image_id"] for c in captions if c["image_id"] not in store})
    corpus = [text.strip() for _, text in read_text_lines(args.text_corpus) if text.strip()] if args.text_corpus \
        else []
    if args.text_corpus and not corpus:
        raise DataError(f"{args.text_corpus}: no text (the text corpus is empty)")
    rows = build_rows(captions, args.negatives, args.retrieved_texts, args.seed, paraphrases, neighbours, corpus,
                      args.corpus_texts)
    write_jsonl(args.out, rows)
    summary = {**summarize(rows), "images_not_in_store": missing}
    neg = summary["negatives"]
    print(f"{summary['captions']} captions of {summary['images']} images -> {args.out}: "
          f"negatives object {neg['object']}, attribute {neg['attribute']}, relation {neg['relation']} "
          f"({summary['captions_without_rewrites']} captions with none), retrieved captions {neg['retrieved']}; "
          f"positives: paraphrases {summary['paraphrases']}, corpus texts {summary['corpus_texts']}; retrieved images "
          f"{summary['retrieved_images']}" + (f" ({missing} images not in the store)" if args.regions else "")
          + f"; parsed: {summary['parsed_with_object']} with an object, "
          f"{summary['parsed_with_relation']} with a relation")
    return summary


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    from tasks.cli import run_tool
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
