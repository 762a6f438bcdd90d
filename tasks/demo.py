"""The main job on the bundled demo data: fine-tune the tiny preset on each 千言 task, generate, score.

    python -m tasks.demo [--out out/demo] [--model DIR] [--tasks dureader_qg advertisegen lcsts_new]

No download and no GPU: without ``--model`` each task starts from the tiny preset with a character
vocabulary built from its training data. With ``--model`` pointing at a real unimo-text checkpoint the
same command runs the baseline recipe (the ``*_base.yaml`` configs).
"""
from __future__ import annotations

import argparse
import os
import time

from tasks import run
from tasks.cli import ROOT

QIANYAN = ("dureader_qg", "advertisegen", "lcsts_new")  # the tasks of the table (the 千言 generation metrics)
COLUMNS = ("bleu4", "rouge1", "rouge2", "rougeL", "distinct2")


def table(rows) -> str:
    head = f"{'task':<14}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'minutes':>9}  predictions"
    lines = [head, "-" * len(head)]
    for task, metrics, minutes in rows:
        cells = "".join(f"{metrics[c]:>10.2f}" for c in COLUMNS)
        lines.append(f"{task:<14}{cells}{minutes:>9.1f}  {metrics['predictions']}")
    return "\n".join(lines)


def execute(argv=None):
    """Runs the command line ``argv``; returns its result (metrics, state, rows)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("out", "demo"))
    parser.add_argument("--model", help="a unimo-text checkpoint folder; default: the tiny preset")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="section.key=value for every task's config, e.g. train.recompute=true")
    parser.add_argument("--tasks", nargs="+", default=list(QIANYAN), choices=QIANYAN,
                        help="the 千言 generation tasks to run (the vision-language demo: python -m tasks.demo_vl; "
                             "any other task: make finetune TASK=)")
    args = parser.parse_args(argv)
    size = "base" if args.model else "tiny"
    rows = []
    for task in args.tasks:
        started = time.time()
        argv_task = ["finetune", "--config", os.path.join(ROOT, "tasks", "configs", f"{task}_{size}.yaml"),
                     "--out", os.path.join(args.out, task), "--no-resume"]
        extra = [x for o in args.override for x in ("-o", o)] + (["--model", args.model] if args.model else [])
        metrics = run.execute(argv_task + extra)
        rows.append((task, metrics, (time.time() - started) / 60))
    print("\n" + table(rows))
    print(f"\nmetrics.json, predictions, train.log, VisualDL logs (vdl/) and best/ are in {args.out}/<task>/")
    return rows


def main(argv=None) -> int:
    """The console entry point: exit status 0 (a user's error exits with 2, Ctrl-C with 130)."""
    execute(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
