"""Adversarial embedding perturbation for fine-tuning (VILLA, Gan et al. 2020; FreeLB, Zhu et al. 2020), as the
original UNIMO fine-tunes captioning (``adv_type villa``) and visual entailment (PGD-L2, always on):
PaddlePaddle/Research NLP/UNIMO ``src/finetune/img2txt.py`` and ``visual_entailment.py``.

Where the perturbations go, as in the original: the text's is added to the word + position embeddings before
their LayerNorm (``UNIMOModel.forward(text_delta=...)``; object tags are never perturbed), the image's to the
raw region features before the region projection. Each modality is perturbed in its own forward pass.

One training step with ``steps`` = K:

    clean = forward(no perturbation);  loss = CE(clean)
    delta_t, delta_v = uniform(-1, 1) * mask * init_mag / sqrt(valid positions * width)   (per example)
    for k in 1..K:
        adv_t = forward(text + delta_t);  adv_v = forward(regions + delta_v)
        loss += (CE(adv_t) + CE(adv_v)) / K + kl_weight * (KL_sym(clean, adv_t) + KL_sym(clean, adv_v))
        delta <- delta + lr * g / ||g||   (g = d CE(adv) / d delta, the L2 norm per example over all positions)
        if max_norm > 0 and ||delta|| > max_norm: delta <- delta * max_norm / ||delta||

``KL_sym(p, q) = KL(p||q) + KL(q||p)`` over the predicted positions' distributions, averaged over them; as in
the original the KL terms are summed over the K steps and the CE terms averaged. The returned loss is
back-propagated once by the trainer, which gives the parameters the gradients the original accumulates step by
step (each delta is a constant for them).

Two differences from the original code, both deliberate: the clean pass runs once per step instead of once per
K (one set of dropout masks for it, K fewer forward passes); and the projection compares the norm of the
perturbation with ``max_norm`` (FreeLB's rule) where the original compares the gradient's norm with it, which
does not bound the perturbation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import paddle
import paddle.nn.functional as F

from ..modeling import paddle_linear
from ..typed import bounded


@dataclass
class AdversarialConfig:
    steps: int = bounded(0, min=0)  # K; 0 turns adversarial training off
    lr: float = bounded(0.05, min=0.0)  # the ascent step (adv_lr)
    init_mag: float = bounded(0.4, min=0.0)  # adv_init_mag
    max_norm: float = bounded(0.0, min=0.0)  # adv_max_norm; 0: no projection
    kl_weight: float = bounded(1.0, min=0.0)  # adv_kl_weight (visual entailment: 1)
    perturb_text: bool = True
    perturb_image: bool = True


def _per_example_norm(x):
    return paddle.sqrt((x.reshape([x.shape[0], -1]) ** 2).sum(axis=1)).clip(min=1e-8)


def _expand(norm, like):
    return norm.reshape([-1] + [1] * (like.ndim - 1))


def initial_delta(mask, width: int, init_mag: float):
    """(B, L, width) uniform(-1, 1), zero where ``mask`` (B, L) is False, scaled per example by
    init_mag / sqrt(valid positions * width)."""
    mask = mask.astype("float32").unsqueeze(-1)
    noise = paddle.uniform([mask.shape[0], mask.shape[1], width], min=-1.0, max=1.0) * mask
    size = (mask.sum(axis=[1, 2]) * width).clip(min=1.0)
    return noise * _expand(init_mag / paddle.sqrt(size), noise)


def ascend(delta, grad, mask, lr: float, max_norm: float):
    """One normalised ascent step on ``delta``, projected into the ``max_norm`` ball (per example)."""
    delta = delta + lr * grad / _expand(_per_example_norm(grad), grad)
    delta = delta * mask.astype(delta.dtype).unsqueeze(-1)
    if max_norm > 0:
        norm = _per_example_norm(delta)
        delta = delta * _expand(paddle.minimum(paddle.ones_like(norm), max_norm / norm), delta)
    return delta.detach()


def symmetric_kl(clean_logits, adv_logits):
    """Mean over rows of KL(p||q) + KL(q||p) between the softmax distributions of two (N, C) logit tensors."""
    p_log = clean_logits - paddle.logsumexp(clean_logits, axis=-1, keepdim=True)
    q_log = adv_logits - paddle.logsumexp(adv_logits, axis=-1, keepdim=True)
    return ((F.softmax(clean_logits, -1) - F.softmax(adv_logits, -1)) * (p_log - q_log)).sum(axis=-1).mean()


def adversarial_loss(cfg: AdversarialConfig, forward: Callable, loss_of: Callable, text_mask, region_feats,
                     region_mask, hidden_size: int):
    """The loss of one step with adversarial perturbation (module docstring).

    forward(text_delta, region_feats) -> logits (N, C) at the predicted positions; loss_of(logits) -> scalar;
    text_mask (B, L) bool: the perturbed text tokens (None: text not perturbed); region_feats (B, R, D) and
    region_mask (B, R) bool (None: image not perturbed). Returns (loss, clean logits)."""
    clean = forward(None, region_feats)
    total = loss_of(clean)
    if cfg.steps == 0:
        return total, clean
    modalities = []
    if cfg.perturb_text and text_mask is not None:
        modalities.append(("text", text_mask, initial_delta(text_mask, hidden_size, cfg.init_mag)))
    if cfg.perturb_image and region_mask is not None:
        modalities.append(("image", region_mask, initial_delta(region_mask, region_feats.shape[-1], cfg.init_mag)))
    for _ in range(cfg.steps):
        for i, (kind, mask, delta) in enumerate(modalities):
            delta.stop_gradient = False
            with paddle_linear():  # paddle.grad below asks for the delta's gradient alone
                logits = forward(delta, region_feats) if kind == "text" else forward(None, region_feats + delta)
            adv = loss_of(logits)
            total = total + adv / cfg.steps + cfg.kl_weight * symmetric_kl(clean, logits)
            grad, = paddle.grad(adv, delta, retain_graph=True)
            modalities[i] = (kind, mask, ascend(delta.detach(), grad, mask, cfg.lr, cfg.max_norm))
    return total, clean

