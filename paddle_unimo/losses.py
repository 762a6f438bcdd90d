"""Losses shared by the pretraining objectives (``paddle_unimo.objectives``) and the fine-tuning tasks.

It sits below both, so that an objective never imports the training package.
"""
from __future__ import annotations

import paddle

__all__ = ["label_smoothed_cross_entropy"]


def label_smoothed_cross_entropy(logits, labels, epsilon: float = 0.0):
    """Mean over rows of (1 - eps) * NLL(label) + eps * mean_v(-log p_v), i.e. cross-entropy against the
    smoothed target (1 - eps) * onehot + eps / V, as PaddleNLP's ``F.label_smooth`` + soft-label CE (the
    unimo-text fine-tuning recipe); ``epsilon`` 0 is plain cross-entropy, as in pretraining.

    logits (N, V) float, labels (N,) int64. Written with logsumexp: paddle's CPU log_softmax backward is
    two orders of magnitude slower on vocabulary-sized rows.
    """
    logits = logits.astype("float32")
    lse = paddle.logsumexp(logits, axis=-1)
    nll = lse - paddle.take_along_axis(logits, labels.reshape([-1, 1]), axis=-1).squeeze(-1)
    if epsilon:
        nll = (1 - epsilon) * nll + epsilon * (lse - logits.mean(axis=-1))
    return nll.mean()
