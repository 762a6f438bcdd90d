"""Reading a predictions file for ``evaluate`` and matching it to the references, refusing anything that would
score a silent subset: an empty file, a line without a string ``prediction``, an id that is not among the
references or that repeats, and references left without a prediction (how many, and which ids); and anything
that would score predictions against another file's references: a row whose input (the source, texts or image
``predict`` copies into it) differs from its reference's.

The file is ``predictions.jsonl`` as ``predict`` writes it (``{"id", "prediction", ...}`` per line; rows marked
``skipped``, ``header`` or ``blank`` stand for input lines that had no example and are passed over).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from paddle_unimo.fileio import DataError, read_jsonl
from tasks.outputs import repeated_id


INPUTS = ("source", "title", "text_a", "text_b", "text", "image")  # the example fields predict copies into a row


def read_predictions(path: str) -> List[Tuple[str, str, str, Dict[str, object]]]:
    """``(file:line, id, prediction, inputs)`` of every row that stands for an example; ``inputs`` are its
    ``INPUTS`` fields (a benchmark's submission file has none: ``{}``)."""
    if path.endswith((".txt", ".tsv")):  # predictions.txt, a GLUE submission file
        raise DataError(f"{path}: evaluate reads predictions.jsonl, whose ids match predictions to references "
                        "(predict writes it beside predictions.txt and a benchmark's submission file)")
    rows = []
    for where, row in read_jsonl(path):
        if row.get("skipped") or row.get("blank") or row.get("header"):
            continue
        if "prediction" not in row:
            raise DataError(f"{where}: missing field 'prediction' (has {sorted(row)})")
        if not isinstance(row["prediction"], str):
            raise DataError(f"{where}: field 'prediction' must be a string, got {type(row['prediction']).__name__}")
        if row.get("id") is None:
            raise DataError(f"{where}: missing field 'id' (the example's id, to match it to its reference)")
        rows.append((where, str(row["id"]), row["prediction"], {k: row[k] for k in INPUTS if k in row}))
    if not rows:
        raise DataError(f"{path}: no predictions (the file is empty)")
    return rows


def match_predictions(rows, references: Sequence, path: str, references_path: str):
    """The references and their predictions, in reference order; every reference needs exactly one, of the same
    input."""
    repeated = repeated_id(references, references_path)
    if repeated:
        raise DataError(f"{repeated}: the references must name each example once, as the predictions do")
    by_id, seen = {}, {}
    for where, ident, prediction, _ in rows:
        if ident in seen:
            raise DataError(f"{where}: id {ident!r} repeats {seen[ident]}")
        seen[ident] = where
        by_id[ident] = prediction
    known = {e.id: e for e in references}
    extra = [(where, ident) for where, ident, _, _ in rows if ident not in known]
    if extra:
        raise DataError(f"{extra[0][0]}: id {extra[0][1]!r} is not in the references {references_path} "
                        f"({len(extra)} such lines)")
    missing = [e.id for e in references if e.id not in by_id]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise DataError(f"{path}: {len(missing)} of {len(references)} references in {references_path} have no "
                        f"prediction (ids: {shown}); the references are the file the predictions were made for, "
                        "with its targets (REFS=, --references, or DATA=)")
    for where, ident, _, inputs in rows:
        for name, value in inputs.items():
            if hasattr(known[ident], name) and getattr(known[ident], name) != value:
                raise DataError(f"{where}: its {name} is not that of id {ident!r} in the references "
                                f"{references_path}: the predictions are of another file; REFS= (--references) "
                                "names the file they were predicted for")
    return list(references), [by_id[e.id] for e in references]
