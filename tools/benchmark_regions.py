"""CPU speed of region extraction (tools/extract_regions.py) for the C4 and FPN detectors, random weights.

    python -m tools.benchmark_regions --images path/to/images [--proposals 300] [--short-side 600]

Prints images/s and where the time goes: backbone + RPN (once per image) versus the RoI box head (once per
proposal; C4 runs the whole ResNet res5 stage per RoI, FPN two fully connected layers) and box selection.
One image is run first and not counted (weight packing, allocator warm-up). With random weights (zero-gamma
init, see paddle_unimo.regions.detector) the RPN still returns the full ``--proposals`` boxes, so the per-image
cost is that of a trained detector; the features themselves are meaningless.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import paddle_unimo
# detector imports paddle inside its functions, so main's cpu_defaults() still comes first
from paddle_unimo.regions.detector import ExtractorConfig, RegionExtractor, read_image


def parse_args(argv=None):
    d = ExtractorConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of .jpg/.jpeg/.png images")
    p.add_argument("--archs", nargs="+", default=["c4", "fpn"], choices=["c4", "fpn"])
    p.add_argument("--proposals", type=int, default=d.proposals)
    p.add_argument("--short-side", type=int, default=d.short_side)
    p.add_argument("--max-side", type=int, default=d.max_side)
    return p.parse_args(argv)


def load_images(folder: str):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    if not names:
        raise SystemExit(f"{folder}: no images")
    return [(n, read_image(os.path.join(folder, n))[0]) for n in names]


def measure(arch: str, images, args) -> dict:
    cfg = ExtractorConfig(arch=arch, proposals=args.proposals, short_side=args.short_side,
                          max_side=args.max_side)
    extractor = RegionExtractor(cfg, random_weights=True)
    extractor.extract(images[0][1], "warm-up")
    extractor.timings = dict.fromkeys(extractor.timings, 0.0)
    extractor.num_rois = 0
    start = time.perf_counter()
    boxes = sum(extractor.extract(image, name)[0].num_boxes for name, image in images)
    total = time.perf_counter() - start
    n = len(images)
    t = extractor.timings
    return {"arch": arch, "dim": cfg.feature_dim, "img/s": n / total, "s/img": total / n,
            "backbone+RPN": t["backbone_rpn"] / n, "RoI head": t["roi_head"] / n, "select": t["select"] / n,
            "RoIs/img": extractor.num_rois / n, "ms/RoI": 1000 * t["roi_head"] / max(extractor.num_rois, 1),
            "boxes/img": boxes / n}


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    args = parse_args(argv)
    images = load_images(args.images)
    print(f"{len(images)} images from {args.images}; short side {args.short_side}, max side {args.max_side}, "
          f"{args.proposals} proposals; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, random weights")
    head = f"{'arch':<5}{'dim':>6}{'img/s':>8}{'s/img':>8}{'backbone+RPN':>14}{'RoI head':>10}{'select':>8}" \
           f"{'RoIs/img':>10}{'ms/RoI':>8}{'boxes/img':>11}"
    rows = [measure(arch, images, args) for arch in args.archs]
    print(head)
    for r in rows:
        print(f"{r['arch']:<5}{r['dim']:>6}{r['img/s']:>8.3f}{r['s/img']:>8.2f}{r['backbone+RPN']:>12.2f} s"
              f"{r['RoI head']:>8.2f} s{r['select']:>6.2f} s{r['RoIs/img']:>10.0f}{r['ms/RoI']:>8.1f}"
              f"{r['boxes/img']:>11.1f}")
    for r in rows:
        parts = {k: r[k] for k in ("backbone+RPN", "RoI head", "select")}
        total = sum(parts.values())
        print(f"{r['arch']}: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in parts.items())
              + f" of {total:.2f} s/img measured in stages (the rest is pre-processing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
