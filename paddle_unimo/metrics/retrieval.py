"""Image-text retrieval recall R@K (Flickr30K / MSCOCO), reported as UNITER and UNIMO report it.

Follows UNITER ``utils/itm_eval.py`` (``itm_eval``) on a (num_texts, num_images) score matrix:

* ``img_r{k}`` — *image retrieval*: each text is a query over all images; a hit when the text's image is among
  the top k. Averaged over texts.
* ``txt_r{k}`` — *text retrieval*: each image is a query over all texts; a hit when any of the image's
  captions is among the top k. Averaged over images.
* ``mean_recall`` — the mean of all the reported recalls (with ks = (1, 5, 10) this is UNITER's ``r_mean``,
  the mean of the six). All values are percentages (0-100); UNITER reports fractions.

**Ties** (UNITER's ``topk`` leaves their order unspecified) are broken against the query: the rank of the
ground truth is the number of *wrong* candidates scoring at least as high as it, and a hit at k means
rank < k. A wrong candidate tied with the ground truth therefore always ranks above it; ties among correct
candidates (two captions of the same image) do not matter, since only the best-placed one counts.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def _as_scores(scores) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"scores must be a non-empty (num_texts, num_images) matrix, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    return scores


def _as_text_to_image(text_to_image, num_texts: int, num_images: int) -> np.ndarray:
    if text_to_image is None:
        if num_texts != num_images:
            raise ValueError(f"scores are {num_texts}x{num_images}: text_to_image is required unless the matrix is "
                             "square (text i matches image i)")
        return np.arange(num_texts)
    t2i = np.asarray(text_to_image)
    if t2i.shape != (num_texts,):
        raise ValueError(f"text_to_image must have shape ({num_texts},), got {t2i.shape}")
    if not np.issubdtype(t2i.dtype, np.integer):
        raise ValueError(f"text_to_image must hold integer image indices, got dtype {t2i.dtype}")
    if t2i.min() < 0 or t2i.max() >= num_images:
        raise ValueError(f"text_to_image holds indices outside 0..{num_images - 1}")
    captionless = np.setdiff1d(np.arange(num_images), t2i)
    if captionless.size:
        raise ValueError(f"images without any text: {captionless[:20].tolist()}")
    return t2i


def _check_ks(ks: Sequence[int]) -> tuple:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks has repeats: {ks}")
    return tuple(int(k) for k in ks)


def retrieval_ranks(scores, text_to_image: Optional[Sequence[int]] = None):
    """``(image_rank (num_texts,), text_rank (num_images,))``: 0-based ranks of the ground truth under the
    tie rule of the module docstring."""
    scores = _as_scores(scores)
    num_texts, num_images = scores.shape
    t2i = _as_text_to_image(text_to_image, num_texts, num_images)
    gt_score = scores[np.arange(num_texts), t2i]  # (T,)
    image_rank = (scores >= gt_score[:, None]).sum(axis=1) - 1  # minus the ground-truth image itself
    positive = t2i[:, None] == np.arange(num_images)[None, :]  # (T, I): text t is a caption of image i
    best_positive = np.where(positive, scores, -np.inf).max(axis=0)  # (I,)
    text_rank = ((scores >= best_positive[None, :]) & ~positive).sum(axis=0)
    return image_rank, text_rank


def recall_at_k(scores, ks: Sequence[int] = (1, 5, 10),
                text_to_image: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """``{"txt_r1", ..., "img_r1", ..., "mean_recall"}`` in percent (see the module docstring).

    ``scores`` is (num_texts, num_images), higher = better match; ``text_to_image`` (num_texts,) gives each
    text's image index. Without it the matrix must be square and text i matches image i.
    """
    ks = _check_ks(ks)
    image_rank, text_rank = retrieval_ranks(scores, text_to_image)
    out = {f"txt_r{k}": 100.0 * float(np.mean(text_rank < k)) for k in ks}
    out.update({f"img_r{k}": 100.0 * float(np.mean(image_rank < k)) for k in ks})
    out["mean_recall"] = sum(out.values()) / len(out)
    return out
