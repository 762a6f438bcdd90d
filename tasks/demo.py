"""The main job on the bundled demo data: fine-tune the tiny preset on each 千言 task, generate, score.

    python -m tasks.demo [--out out/demo] [--model DIR] [--tasks dureader_qg advertisegen lcsts_new]

No download and no GPU: without ``--model`` each task starts from the tiny preset with a character
vocabulary built from its training data. With ``--model`` pointing at a real unimo-text checkpoint the
same command runs the baseline recipe (the ``*_base.yaml`` configs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tasks import run  # noqa: E402
from tasks.generation import TASKS  # noqa: E402

COLUMNS = ("bleu4", "rouge1", "rouge2", "rougeL", "distinct2")


def table(rows) -> str:
    head = f"{'task':<14}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'minutes':>9}  predictions"
    lines = [head, "-" * len(head)]
    for task, metrics, minutes in rows:
        cells = "".join(f"{metrics[c]:>10.2f}" for c in COLUMNS)
        lines.append(f"{task:<14}{cells}{minutes:>9.1f}  {metrics['predictions']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "demo"))
    parser.add_argument("--model", help="a unimo-text checkpoint folder; default: the tiny preset")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args(argv)
    size = "base" if args.model else "tiny"
    rows = []
    for task in args.tasks:
        started = time.time()
        argv_task = ["finetune", "--config", os.path.join(ROOT, "tasks", "configs", f"{task}_{size}.yaml"),
                     "--out", os.path.join(args.out, task), "--no-resume"]
        metrics = run.main(argv_task + (["--model", args.model] if args.model else []))
        rows.append((task, metrics, (time.time() - started) / 60))
    print("\n" + table(rows))
    print(f"\nmetrics.json, predictions, train.log, VisualDL logs (vdl/) and best/ are in {args.out}/<task>/")
    return rows


if __name__ == "__main__":
    main()
