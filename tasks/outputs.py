"""The outputs every task writes: predictions aligned with their input file, the loss curve, a one-line
summary of the metrics."""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, List, Optional, Sequence

from paddle_unimo.fileio import atomic_write


def repeated_id(examples: Sequence, path: str) -> Optional[str]:
    """``file:line: id 'x' repeats line n`` for the first example whose id an earlier one has, else None: a row of
    predictions.jsonl names its example by id, and evaluate matches it to its reference by that id."""
    seen = {}
    for e in examples:
        if e.id in seen:
            return f"{path}:{e.line}: id {e.id!r} repeats line {seen[e.id]}"
        seen[e.id] = e.line
    return None


def warn_repeated_ids(examples: Sequence, path: str) -> None:
    """A warning when ids repeat in a file to predict for: its predictions are written, but evaluate cannot match
    them to references by id."""
    repeated = repeated_id(examples, path)
    if repeated:
        logging.getLogger("paddle_unimo").warning("%s: evaluate cannot match these predictions to references by id "
                                                  "(give each example its own)", repeated)


def prediction_rows(examples: Sequence, predictions: Sequence, report, row: Callable) -> list:
    """One row per input line up to the file's last non-blank line, in order: ``row(example, prediction)``, or
    an empty prediction with ``skipped`` (the reason) for a skipped line, ``header`` for a header row, or ``blank``
    for a blank line. ``examples`` carry their ``line``; ``report`` is the reader's (``skipped``, ``lines``,
    ``header``)."""
    rows = {e.line: row(e, p) for e, p in zip(examples, predictions)}
    for s in report.skipped:
        rows[s["line"]] = {"id": None, "line": s["line"], "prediction": "", "skipped": s["reason"]}
    last = max([report.lines, *rows])
    if report.header:
        rows[report.header] = {"id": None, "line": report.header, "prediction": "", "header": True}
    return [rows.get(n, {"id": None, "line": n, "prediction": "", "blank": True}) for n in range(1, last + 1)]


def write_predictions(out_dir: str, rows: Sequence[dict]) -> str:
    """``predictions.jsonl`` (the rows) and ``predictions.txt`` (one prediction per row on one line, an empty
    line for a skipped or blank input line), so that a submission file never shifts against its input."""
    path = os.path.join(out_dir, "predictions.jsonl")
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write(os.path.join(out_dir, "predictions.txt"),
                 "".join(" ".join(str(r["prediction"]).split()) + "\n" for r in rows))
    return path


def mean_loss_curve(history: Sequence[dict]) -> List[List[float]]:
    return [[h["step"], round(h["loss"], 5)] for h in history if "loss" in h]


def describe(metrics: dict) -> str:
    """``key value`` for every top-level number of ``metrics`` (counts and steps left out; other integers, such as
    retrieval's numbers of captions and images, as integers)."""
    skip = {"examples", "steps", "best_step", "skipped_lines"}
    return " ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.2f}" for k, v in metrics.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip
                    and not k.startswith("best_eval"))
