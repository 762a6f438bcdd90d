"""GLUE metrics (Wang et al. 2019, gluebenchmark.com), as GLUE's own evaluation and the original UNIMO's GLUE
evaluation (PaddlePaddle/Research NLP/UNIMO) compute them, with scikit-learn and scipy:

- accuracy (``sklearn.metrics.accuracy_score``) for every classification task;
- F1 of the positive class "1" (``f1_score``) for MRPC and QQP;
- Matthews correlation (``matthews_corrcoef``) for CoLA;
- Pearson and Spearman correlation (``scipy.stats.pearsonr`` / ``spearmanr``) for STS-B.

Every value is x100. ``main_metric`` names the one that chooses the best checkpoint: CoLA ``mcc``, STS-B
``pearson``, MRPC / QQP ``f1`` (of the original's acc_and_f1), the others ``accuracy``. Predictions and labels
are class indices or label names of ``paddle_unimo.data.glue.GLUE_TASKS`` (STS-B: scores).
"""
from __future__ import annotations

from typing import Dict, Sequence, Union

import numpy as np

from paddle_unimo.data.glue import GlueTask, get_task, label_id


def main_metric(task: Union[str, GlueTask]) -> str:
    """The key of ``glue_metrics`` that chooses the best checkpoint of ``task``."""
    name = get_task(task).name
    return {"cola": "mcc", "stsb": "pearson", "mrpc": "f1", "qqp": "f1"}.get(name, "accuracy")


def _as_array(spec: GlueTask, values: Sequence, what: str) -> np.ndarray:
    values = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if spec.is_regression:
        out = np.asarray(values, np.float64)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{spec.name} {what} must be finite numbers")
        return out
    out = []
    for v in values:
        index = label_id(spec, v) if isinstance(v, str) else int(v)
        if index != v and not isinstance(v, str) or not 0 <= index < spec.num_labels:
            raise ValueError(f"{spec.name} {what}: {v!r} is not a class index 0..{spec.num_labels - 1} or a label")
        out.append(index)
    return np.asarray(out, np.int64)


def glue_metrics(task: Union[str, GlueTask], predictions: Sequence, labels: Sequence) -> Dict[str, float]:
    """The GLUE metrics of ``task`` (see the module docstring), x100; a ``ValueError`` for empty input or
    different lengths. With a constant prediction or label sequence the correlations are nan (scipy's answer)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    spec = get_task(task)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("glue_metrics needs at least one prediction")
    pred, gold = _as_array(spec, predictions, "predictions"), _as_array(spec, labels, "labels")
    if spec.is_regression:
        return {"pearson": 100.0 * float(pearsonr(pred, gold)[0]),
                "spearman": 100.0 * float(spearmanr(pred, gold)[0])}
    out = {"accuracy": 100.0 * float(accuracy_score(gold, pred))}
    if spec.name in ("mrpc", "qqp"):
        positive = spec.labels.index("1")
        out["f1"] = 100.0 * float(f1_score(gold, pred, pos_label=positive, zero_division=0))
    if spec.name == "cola":
        out["mcc"] = 100.0 * float(matthews_corrcoef(gold, pred))
    return out
