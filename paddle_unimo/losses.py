"""Losses shared by the pretraining objectives (``paddle_unimo.objectives``) and the fine-tuning tasks.

It sits below both, so that an objective never imports the training package.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

__all__ = ["circle_loss", "label_smoothed_cross_entropy"]


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


def circle_loss(positive, negatives, margin: float = 0.2, scale: float = 1.0):
    """Circle loss (Sun et al. 2020) of one positive score against its negatives, as the original UNIMO retrieval
    trains (PaddlePaddle/Research NLP/UNIMO ``src/finetune/retrieval.py``): with ``a_p = relu(1 + m - s_p)`` and
    ``a_n = relu(s_n + m)`` held constant, ``log(1 + sum_n exp(scale a_n (s_n - m)) exp(-scale a_p (s_p - 1 + m)))``,
    averaged over the rows. positive (B,), negatives (B, N)."""
    a_p = F.relu(1.0 + margin - positive).detach()
    a_n = F.relu(negatives + margin).detach()
    logit_p = -scale * a_p * (positive - (1.0 - margin))
    logit_n = scale * a_n * (negatives - margin)
    return F.softplus(paddle.logsumexp(logit_n, axis=1) + logit_p).mean()
