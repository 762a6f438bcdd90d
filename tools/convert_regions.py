"""Convert region-feature files into a paddle_unimo RegionStore folder.

    python -m tools.convert_regions --format bottom_up_tsv --input feats.tsv --out regions/

Formats (see paddle_unimo/data/region_formats.py): bottom_up_tsv (bottom-up-attention generate_tsv.py),
unimo_caption, unimo_retrieval, unimo_ve (the original UNIMO fine-tuning files). --input takes files or
folders (every non-hidden file inside, sorted); .gz is read transparently. Images already in the store are
skipped (each captioning/VE line repeats its image), so an interrupted conversion can simply be rerun.
"""
from __future__ import annotations

import argparse
import os
import sys

import paddle_unimo
from paddle_unimo.data.region_formats import READERS, convert_to_store
from paddle_unimo.data.regions import RegionStore


def input_files(paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += [os.path.join(path, n) for n in sorted(os.listdir(path))
                      if not n.startswith(".") and os.path.isfile(os.path.join(path, n))]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"no input files in {paths}")
    return files


def convert(fmt: str, inputs, out: str, batch_size: int = 256, skip_existing: bool = True, hw: bool = False):
    store = RegionStore(out)
    totals = {"read": 0, "added": 0, "skipped": 0}
    for path in input_files(inputs):
        reader = READERS[fmt](path, wh_order="hw") if hw else READERS[fmt](path)
        counts = convert_to_store(reader, store, batch_size=batch_size, skip_existing=skip_existing)
        print(f"{path}: read {counts['read']} lines, added {counts['added']} images, "
              f"skipped {counts['skipped']} already stored")
        totals = {k: totals[k] + counts[k] for k in totals}
    print(f"{out}: {len(store)} images (feature_dim {store.feature_dim}, num_classes {store.num_classes}); "
          f"this run read {totals['read']}, added {totals['added']}, skipped {totals['skipped']}")
    return totals


def run(argv=None) -> dict:
    """Parses the command line and converts; returns ``{"read", "added", "skipped"}`` over all inputs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(READERS))
    parser.add_argument("--input", required=True, nargs="+", help="input files or folders")
    parser.add_argument("--out", required=True, help="RegionStore folder (created or extended)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per shard file")
    parser.add_argument("--error-on-duplicate", action="store_true",
                        help="fail on an image id already in the store instead of skipping it")
    parser.add_argument("--hw", action="store_true",
                        help="unimo_retrieval only: the file's size fields are image_h, image_w "
                             "(as the original test reader reads them)")
    args = parser.parse_args(argv)
    if args.hw and args.format != "unimo_retrieval":
        parser.error("--hw applies to --format unimo_retrieval only")
    return convert(args.format, args.input, args.out, args.batch_size, not args.error_on_duplicate, args.hw)


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    from tasks.cli import run_tool
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
