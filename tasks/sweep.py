r"""A hyper-parameter grid over any registered task: one fine-tuning run per combination, then one table.

    python -m tasks.sweep --task glue_sst2 --grid "train.lr=1e-5,2e-5,3e-5 train.seed=1,2,3" --out out/sweep_sst2 \
        [--config FILE] [--model DIR] [--data DIR] [-o key=value ...]

As the original UNIMO reports GLUE (PaddlePaddle/Research NLP/UNIMO ``utils/stat_res.py``: the best dev score of
each run, then max / min / median / mean over the grid). Each combination runs into ``OUT/<key=value,...>`` with
``tasks.run finetune``: a finished combination returns its ``metrics.json`` (neither training nor decoding is
redone), an interrupted one resumes from its checkpoint, so running the same command again finishes a half-done
grid; other settings or data than a combination's run was made with stop the sweep, naming the difference. The
table has one row per run (its settings and best dev score) and one summary per setting other than ``train.seed``
(max, min, median, mean over its seeds) and over the whole grid; it is printed and written to ``OUT/sweep.json``
and ``OUT/sweep.tsv``.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from paddle_unimo import cpu_defaults

cpu_defaults()  # before anything below imports paddle

from paddle_unimo.fileio import atomic_write, write_json  # noqa: E402
from paddle_unimo.typed import ConfigError  # noqa: E402
from tasks import run  # noqa: E402
from tasks.cli import add_common_arguments, load_config, run_command  # noqa: E402
from tasks.registry import get_task  # noqa: E402

SEED = "train.seed"


def split_values(text: str) -> List[str]:
    """``"1,2"`` -> ``["1", "2"]``; a comma inside brackets belongs to its value (a YAML list: ``[1,2],[3]``)."""
    values, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    return values + [text[start:]]


def parse_grid(text: str) -> List[Tuple[str, List[str]]]:
    """``"a.b=1,2 c.d=x"`` -> ``[("a.b", ["1", "2"]), ("c.d", ["x"])]``; every key once, every value list non-empty;
    a list value in brackets (``train.lr_decay_epochs=[1,2],[3]``)."""
    grid, seen = [], set()
    for item in text.split():
        key, sep, values = item.partition("=")
        if not sep or not key or not values or any(not v for v in split_values(values)):
            raise ConfigError(f"--grid: {item!r} is not section.key=value1,value2,...")
        if key in seen:
            raise ConfigError(f"--grid: {key} is given twice")
        seen.add(key)
        grid.append((key, split_values(values)))
    if not grid:
        raise ConfigError("--grid: no settings (e.g. --grid \"train.lr=1e-5,2e-5 train.seed=1,2\")")
    return grid


def combinations(grid) -> List[Dict[str, str]]:
    keys = [k for k, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]


def run_name(combo: Dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in combo.items()).replace(os.sep, "_")


def summary(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """Max, min, median and mean of the runs' best scores; a run whose score was never defined (None: e.g. the
    correlation of a regressor that predicts a constant) is counted under ``undefined``, not in the statistics."""
    defined = [v for v in values if v is not None]
    stats = {"max": max(defined), "min": min(defined), "median": statistics.median(defined),
             "mean": statistics.fmean(defined)} if defined else dict.fromkeys(("max", "min", "median", "mean"))
    return {**stats, "runs": len(values), "undefined": len(values) - len(defined)}


def table(rows: List[dict], groups: List[dict], metric: str) -> str:
    def cell(value):
        return "n/a" if value is None else f"{value:.2f}"
    lines = [f"run\tbest {metric}"] + [f"{r['run']}\t{cell(r['best'])}" for r in rows]
    lines += ["", "setting\tmax\tmin\tmedian\tmean\truns\tundefined"]
    lines += ["\t".join([g["setting"], *(cell(g[k]) for k in ("max", "min", "median", "mean")), str(g["runs"]),
                         str(g["undefined"])]) for g in groups]
    return "\n".join(lines) + "\n"


def execute(argv=None) -> dict:
    """Runs (or finishes) the grid of ``argv``; returns the summary written to OUT/sweep.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--grid", required=True, help='e.g. "train.lr=1e-5,2e-5,3e-5 train.seed=1,2,3"')
    parser.add_argument("--config")
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--no-resume", action="store_true", help="start every combination over (its earlier "
                        "files move to <run>/previous/<time>/)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    grid = parse_grid(args.grid)
    task = get_task(args.task)
    metric = task.metric
    config = args.config or run.default_config(args.task, args.model)
    for key, values in grid:  # a key or value the config refuses stops the sweep before any run
        for value in values:
            try:
                load_config(config, [f"{key}={value}"], task.config_class)
            except ConfigError as e:
                raise ConfigError(f"--grid {key}={value}: {e}") from None
    base = ["finetune", "--task", args.task, *(["--config", args.config] if args.config else []),
            *(["--model", args.model] if args.model else []), *(["--data", args.data] if args.data else []),
            *(["--no-resume"] if args.no_resume else []), *(x for o in args.override for x in ("-o", o))]
    rows = []
    for combo in combinations(grid):
        folder = os.path.join(args.out, run_name(combo))
        done = os.path.join(folder, "metrics.json")
        # a finished run returns its metrics.json; one of other settings or data is refused, naming the difference
        metrics = run.execute([*base, "--out", folder, *(x for k, v in combo.items() for x in ("-o", f"{k}={v}"))])
        best = metrics[f"best_eval_{metric}"]  # None when no evaluation gave a score
        rows.append({"run": run_name(combo), "settings": combo, "best": None if best is None else float(best),
                     "metrics": done})
    groups = {}
    for row in rows:
        setting = run_name({k: v for k, v in row["settings"].items() if k != SEED}) or "(all)"
        groups.setdefault(setting, []).append(row["best"])
    summaries = [{"setting": s, **summary(v)} for s, v in groups.items()]
    if len(summaries) > 1:
        summaries.append({"setting": "(whole grid)", **summary([r["best"] for r in rows])})
    result = {"task": args.task, "metric": metric, "grid": dict(grid), "runs": rows, "summary": summaries}
    write_json(os.path.join(args.out, "sweep.json"), result)
    text = table(rows, summaries, metric)
    atomic_write(os.path.join(args.out, "sweep.tsv"), text)
    print(text)
    return result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_command(lambda: execute(argv), "--debug" in argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
