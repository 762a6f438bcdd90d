"""The vision-language tasks on the embedded demo set: fine-tune the tiny preset on each, predict, score.

    python -m tasks.demo_vl [--out out/demo_vl] [--tasks coco_caption flickr30k_retrieval snli_ve vqa] [-o k=v]

No download and no GPU: every task reads ``tasks/demo_data/vl`` (synthetic regions, captions, entailment
pairs and questions written by ``python -m tasks.vl_mini``) with its ``tasks/configs/<task>_tiny.yaml`` and
starts from the tiny preset with a word vocabulary of its training text. Each task's run goes to
``OUT/<task>`` (metrics.json, predictions, train.log, vdl/, best/); the table of the tasks' metrics and
seconds is printed and written to ``OUT/results.json``. ``-o section.key=value`` applies to every task's
config (a key a task's config does not have is an error for that task, as with ``tasks.run``).
"""
from __future__ import annotations

import argparse
import os
import time

from paddle_unimo import cpu_defaults

cpu_defaults()  # before anything below imports paddle

from paddle_unimo.fileio import write_json  # noqa: E402
from tasks import run  # noqa: E402
from tasks.cli import ROOT  # noqa: E402
from tasks.registry import get_task  # noqa: E402

VL_TASKS = ("coco_caption", "flickr30k_retrieval", "snli_ve", "vqa")


def table(rows) -> str:
    head = f"{'task':<21}{'metric':<13}{'value':>8}{'seconds':>9}"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['task']:<21}{row['metric']:<13}{row['value']:>8.2f}{row['seconds']:>9.1f}")
    return "\n".join(lines)


def execute(argv=None):
    """Runs the command line ``argv``; returns the table's rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("out", "demo_vl"))
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="section.key=value for every task's config, e.g. train.epochs=5")
    parser.add_argument("--tasks", nargs="+", default=list(VL_TASKS), choices=VL_TASKS)
    args = parser.parse_args(argv)
    extra = [x for o in args.override for x in ("-o", o)]
    rows = []
    started_all = time.time()
    for task in args.tasks:
        started = time.time()
        out = os.path.join(args.out, task)
        metrics = run.execute(["finetune", "--config", os.path.join(ROOT, "tasks", "configs", f"{task}_tiny.yaml"),
                               "--out", out, "--no-resume", *extra])
        metric = get_task(task).metric  # the number a task is judged by (COCO BLEU-4; the others 0-100)
        rows.append({"task": task, "metric": metric, "value": float(metrics[metric]),
                     "seconds": round(time.time() - started, 1), "steps": metrics["steps"],
                     "metrics": os.path.join(out, "metrics.json")})
    total = round(time.time() - started_all, 1)
    write_json(os.path.join(args.out, "results.json"), {"rows": rows, "seconds": total})
    print("\n" + table(rows))
    print(f"\ntotal {total:.0f} s; metrics.json, predictions, train.log, VisualDL logs (vdl/) and best/ are in "
          f"{args.out}/<task>/, this table in {os.path.join(args.out, 'results.json')}")
    return rows


def main(argv=None) -> int:
    """The console entry point: exit status 0 (a user's error exits with 2, Ctrl-C with 130)."""
    execute(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
