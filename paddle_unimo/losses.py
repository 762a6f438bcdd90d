"""Losses shared by the pretraining objectives (``paddle_unimo.objectives``) and the fine-tuning tasks.

It sits below both, so that an objective never imports the training package.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

from . import cpu_kernels

__all__ = ["circle_loss", "label_smoothed_cross_entropy"]


def label_smoothed_cross_entropy(logits, labels, epsilon: float = 0.0):
    """Mean over rows of (1 - eps) * NLL(label) + eps * mean_v(-log p_v), i.e. cross-entropy against the
    smoothed target (1 - eps) * onehot + eps / V, as PaddleNLP's ``F.label_smooth`` + soft-label CE (the
    unimo-text fine-tuning recipe); ``epsilon`` 0 is plain cross-entropy, as in pretraining.

    logits (N, V) float, labels (N,) int64. Its gradient is written out: on float32 CPU tensors by a kernel
    (``unimo_smoothed_cross_entropy``, ``cpu_kernels``: each row's softmax, loss and gradient in one pass), else by
    ``_SmoothedCrossEntropy`` on paddle's ops. Paddle's CPU autograd of this formula (logsumexp, take_along_axis,
    mean) took 130-180 ms forward and backward on a training step's (256, 18000) logits, the PyLayer 37 ms (~16
    with the heap kept), the kernel ~4; its log_softmax backward is two orders of magnitude slower still.
    """
    logits = logits.astype("float32")
    ops = cpu_kernels.ops_for(logits)
    if ops is not None and len(logits.shape) == 2:
        labels = labels.reshape([-1]).astype("int64")
        return ops.unimo_smoothed_cross_entropy(logits.contiguous(), labels, float(epsilon))[0].mean()
    return _SmoothedCrossEntropy.apply(logits, labels, float(epsilon))


class _SmoothedCrossEntropy(paddle.autograd.PyLayer):
    """``label_smoothed_cross_entropy`` with the gradient of the mean loss written out:
    ``(softmax(logits) - (1 - eps) * onehot(label) - eps / V) / N``, computed in place in the saved softmax (paddle
    3.3.1 runs a PyLayer's backward once: a second, with ``retain_graph``, crashes it). On CPU a new (256, 18000)
    tensor costs ~17 ms whatever the op (the memory's first touch), so there is one: the shifted logits."""

    @staticmethod
    def forward(ctx, logits, labels, epsilon):
        rows, vocab = logits.shape
        at_label = paddle.arange(rows, dtype="int64") * vocab + labels.reshape([-1]).astype("int64")  # flat indices
        shifted = logits - logits.max(axis=-1, keepdim=True)
        nll = -paddle.gather(shifted.reshape([-1]), at_label).reshape([-1, 1])
        if epsilon:
            nll = (1 - epsilon) * nll - epsilon * shifted.mean(axis=-1, keepdim=True)
        probs = shifted.exp_()
        total = probs.sum(axis=-1, keepdim=True)
        ctx.save_for_backward(probs.divide_(total), at_label)
        ctx.epsilon = epsilon
        return (nll + paddle.log(total)).mean()

    @staticmethod
    def backward(ctx, grad):
        probs, at_label = ctx.saved_tensor()
        rows, vocab = probs.shape
        scale = float(grad) / max(rows, 1)
        flat = probs.scale_(scale, bias=-scale * ctx.epsilon / vocab).reshape([-1])
        flat.scatter_(at_label, paddle.gather(flat, at_label) - scale * (1 - ctx.epsilon))
        return flat.reshape([rows, vocab]), None


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
