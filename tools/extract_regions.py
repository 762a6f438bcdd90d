"""Extract UNIMO image regions (bottom-up-attention style) with a PaddleDetection Faster R-CNN.

    python -m tools.extract_regions --images path/to/images --out out/regions --random-weights

``--images`` is a folder (its image files, sorted by name) or a list file (one path per line, relative paths
taken from the list's folder). Each image becomes up to ``--max-boxes`` regions in the region store ``--out``
(``paddle_unimo.data.regions.RegionStore``, keyed by the file name without folder). Results are appended every
``--flush-every`` images, so a killed run keeps what it finished, and a rerun skips images already in the
store. Images that cannot be used are listed in ``OUT/errors.jsonl`` (path + reason) and the run goes on;
grayscale, 16-bit and RGBA images are converted, tiny images are upscaled by the resize.
``OUT/extraction.json`` records the detector settings; a rerun with different settings is refused.

Without ``--weights`` you must say ``--random-weights``: every stage runs, but the features mean nothing.
Exit status: 0, or 1 when every image tried failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import paddle_unimo
from paddle_unimo.data.regions import RegionStore
from paddle_unimo.fileio import read_json, read_text_lines, write_json
# detector imports paddle inside its functions, so main's cpu_defaults() still comes first
from paddle_unimo.regions.detector import ExtractorConfig, ImageError, RegionExtractor, read_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RANDOM_WARNING = ("RANDOM WEIGHTS: these region features, boxes and class probabilities come from an "
                  "untrained detector and are MEANINGLESS. Use them only to test the pipeline.")
# Settings that do not change the extracted values, so a resumed run may differ in them.
_NOT_COMPARED = ("roi_batch",)


def parse_args(argv=None):
    d = ExtractorConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="image folder, or a list file with one image path per line")
    p.add_argument("--out", required=True, help="region store folder (created; resumed when it exists)")
    p.add_argument("--weights", help="PaddleDetection Faster R-CNN .pdparams (strict load)")
    p.add_argument("--random-weights", action="store_true", help="seeded random detector (tests only)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    p.add_argument("--arch", choices=("c4", "fpn"), default=d.arch)
    p.add_argument("--depth", type=int, help="ResNet depth (default 101 for c4, 50 for fpn)")
    p.add_argument("--num-classes", type=int, default=d.num_classes, help="foreground classes of the weights")
    p.add_argument("--proposals", type=int, default=d.proposals, help="RPN boxes per image into the box head")
    p.add_argument("--conf", type=float, default=d.conf_threshold, help="keep boxes at least this confident")
    p.add_argument("--nms-iou", type=float, default=d.nms_iou)
    p.add_argument("--min-boxes", type=int, default=d.min_boxes)
    p.add_argument("--max-boxes", type=int, default=d.max_boxes)
    p.add_argument("--regress-boxes", action="store_true", help="report regressed boxes, not the proposals")
    p.add_argument("--short-side", type=int, default=d.short_side)
    p.add_argument("--max-side", type=int, default=d.max_side)
    p.add_argument("--flush-every", type=int, default=8, help="images per append to the store")
    args = p.parse_args(argv)
    if bool(args.weights) == args.random_weights:
        p.error("give exactly one of --weights FILE.pdparams or --random-weights")
    return args


def config_from_args(args) -> ExtractorConfig:
    return ExtractorConfig(arch=args.arch, depth=args.depth, num_classes=args.num_classes,
                           proposals=args.proposals, conf_threshold=args.conf, nms_iou=args.nms_iou,
                           min_boxes=args.min_boxes, max_boxes=args.max_boxes, regress_boxes=args.regress_boxes,
                           short_side=args.short_side, max_side=args.max_side)


def list_images(source: str):
    """[(image_id, path)] in order, and [(path, reason)] for entries that cannot get a unique id."""
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if not n.startswith(".") and n.lower().endswith(IMAGE_EXTS))
        paths = [os.path.join(source, n) for n in names]
    elif os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        lines = [line.strip() for _, line in read_text_lines(source)]
        paths = [os.path.join(base, line) for line in lines if not line.startswith("#")]
    else:
        raise SystemExit(f"--images {source}: no such folder or list file")
    items, bad, seen = [], [], {}
    for path in paths:
        image_id = os.path.basename(path)
        if image_id in seen:
            bad.append((path, f"duplicate image_id {image_id!r} (also {seen[image_id]})"))
            continue
        seen[image_id] = path
        items.append((image_id, path))
    return items, bad


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_settings(out: str, settings: dict) -> None:
    """Write OUT/extraction.json, or refuse when the store was filled with other settings."""
    path = os.path.join(out, "extraction.json")
    if os.path.exists(path):
        old = read_json(path, "extraction settings")
        diff = {k: (old.get(k), v) for k, v in settings.items()
                if k not in _NOT_COMPARED and old.get(k) != v}
        if diff:
            raise SystemExit(f"{out} was extracted with other settings ({path}); use another --out. "
                             f"Differences (stored, now): {diff}")
    write_json(path, settings)


class Run:
    """One pass over the images: extraction, batched appends, error log, counts."""

    def __init__(self, args, extractor: RegionExtractor):
        self.args, self.extractor = args, extractor
        self.store = RegionStore(args.out)
        self.pending, self.counts = [], {"done": 0, "skipped": 0, "failed": 0}
        self.errors = open(os.path.join(args.out, "errors.jsonl"), "w", encoding="utf-8")  # this run's failures

    def fail(self, path: str, reason: str, log) -> None:
        self.counts["failed"] += 1
        self.errors.write(json.dumps({"image": path, "reason": reason}) + "\n")
        self.errors.flush()  # a killed run still lists what failed
        log(f"failed: {path}: {reason}")

    def flush(self) -> None:
        if self.pending:
            self.store.append(self.pending)
            self.pending = []

    def one(self, image_id: str, path: str, log) -> None:
        if image_id in self.store:
            self.counts["skipped"] += 1
            return
        try:
            image, notes = read_image(path)
            record, more = self.extractor.extract(image, image_id)
        except ImageError as err:
            return self.fail(path, str(err), log)
        except Exception as err:  # noqa: BLE001 -- one bad image must not end the run; the reason is logged
            return self.fail(path, f"{type(err).__name__}: {err}", log)
        if notes + more:
            log(f"{image_id}: {'; '.join(notes + more)}")
        self.pending.append(record)
        self.counts["done"] += 1
        if len(self.pending) >= self.args.flush_every:
            self.flush()


def settings_of(args, extractor: RegionExtractor) -> dict:
    settings = {**extractor.describe(), "random_weights": args.random_weights,
                "seed": args.seed if args.random_weights else None,
                "weights_sha256": file_sha256(args.weights) if args.weights else None}
    if args.random_weights:
        settings["warning"] = RANDOM_WARNING
    return settings


def loud_warning(message: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!!! {message}\n{bar}\n", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    from tqdm import tqdm
    args = parse_args(argv)
    if args.random_weights:
        loud_warning(RANDOM_WARNING)
    items, bad = list_images(args.images)
    extractor = RegionExtractor(config_from_args(args), args.weights, args.random_weights, args.seed)
    check_settings(args.out, settings_of(args, extractor))
    run = Run(args, extractor)
    start = time.perf_counter()
    try:
        for path, reason in bad:
            run.fail(path, reason, tqdm.write)
        for image_id, path in tqdm(items, desc="regions", unit="img", file=sys.stderr):
            run.one(image_id, path, tqdm.write)
    finally:
        run.flush()  # also on Ctrl-C: finished images are kept
        run.errors.close()
    c, t = run.counts, extractor.timings
    print(f"extract_regions: {c['done']} done, {c['skipped']} skipped (already in the store), {c['failed']} "
          f"failed{' (see ' + os.path.join(args.out, 'errors.jsonl') + ')' if c['failed'] else ''}; store holds "
          f"{len(run.store)} images; {time.perf_counter() - start:.1f} s, backbone+RPN {t['backbone_rpn']:.1f} s, "
          f"RoI head {t['roi_head']:.1f} s ({extractor.num_rois} RoIs), selection {t['select']:.1f} s")
    if args.random_weights:
        loud_warning(RANDOM_WARNING)
    return 1 if c["failed"] and not c["done"] and not c["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
