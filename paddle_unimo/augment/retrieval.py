"""CMCL retrieval (UNIMO paper section 2.1): similar texts by TF-IDF, similar images by region labels.

The paper retrieves, for each image-text pair, (a) the captions of other images most similar to its caption
by TF-IDF: they nearly describe the image but not exactly, so they are sentence-level hard negatives (X-);
(b) texts of a text corpus and images of the image collection related to the pair, weakly aligned positives
(X^T, X^I). Texts: cosine similarity of TF-IDF vectors (scikit-learn's ``TfidfVectorizer``, rows
L2-normalised, so the sparse dot product is the cosine). Images: the Jaccard overlap of the sets of detected
object classes (the argmax class of each region, background ignored), a cheap stand-in for visual similarity
that needs only the region store's ``class_probs``.

All return, per query, up to ``k`` ``(index, score)`` pairs, best first, ties broken by the lower index, with score
> ``min_score``; a query never retrieves itself (nor, from a corpus, a text equal to it), and a caption never
retrieves a caption of its own image (those are aligned with the image, not merely similar). Scores are computed in
row blocks of at most ``block_cells`` dense cells, so memory stays bounded for large corpora (the work is O(N^2)).
"""
from __future__ import annotations

from typing import Callable, Dict, FrozenSet, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from ..data.regions import RegionRecord

__all__ = ["Neighbours", "nearest_texts", "nearest_corpus_texts", "region_labels", "nearest_images"]

Neighbours = List[List[Tuple[int, float]]]
_BLOCK_CELLS = 1 << 24


def _top_k(scores: np.ndarray, k: int, min_score: float) -> List[Tuple[int, float]]:
    """The ``k`` best entries of one row above ``min_score``; equal scores keep the lower index first."""
    eligible = np.flatnonzero(scores > min_score)
    if k <= 0 or eligible.size == 0:
        return []
    values = scores[eligible]
    if eligible.size > k:  # keep every entry tied with the k-th best, then order exactly
        kth = np.partition(values, eligible.size - k)[eligible.size - k]
        keep = values >= kth
        eligible, values = eligible[keep], values[keep]
    order = np.lexsort((eligible, -values))[:k]
    return [(int(eligible[j]), float(values[j])) for j in order]


def _blocked(score_rows: Callable[[int, int], np.ndarray], n: int, excluded: Callable[[int], np.ndarray], k: int,
             min_score: float, block_cells: int, columns: Optional[int] = None) -> Neighbours:
    """Runs ``score_rows(start, stop) -> (stop-start, columns)`` over the ``n`` rows in blocks and keeps each
    row's top ``k`` (``columns``: ``n`` by default)."""
    out: Neighbours = []
    step = max(1, block_cells // max(n if columns is None else columns, 1))
    for start in range(0, n, step):
        block = np.asarray(score_rows(start, min(n, start + step)), dtype=np.float64)
        for r, row in enumerate(block):
            row[excluded(start + r)] = -np.inf
            out.append(_top_k(row, k, min_score))
    return out


def nearest_texts(texts: Sequence[str], groups: Optional[Sequence[Hashable]] = None, k: int = 2,
                  min_score: float = 0.0, block_cells: int = _BLOCK_CELLS, **tfidf) -> Neighbours:
    """Per text, the ``k`` most TF-IDF-cosine-similar other texts, skipping texts of the same group.

    ``groups[i]`` is text i's image id (None: every text its own group). ``tfidf`` goes to
    ``TfidfVectorizer`` (defaults: lower-cased words of 2+ characters, unigrams, smoothed idf, L2 norm).
    """
    if groups is not None and len(groups) != len(texts):
        raise ValueError(f"nearest_texts: {len(texts)} texts but {len(groups)} groups")
    if k <= 0 or not texts:
        return [[] for _ in texts]
    try:
        vectors = TfidfVectorizer(**tfidf).fit_transform(list(texts)).tocsr()  # (N, V) rows L2-normalised
    except ValueError as err:  # only stop words / 1-letter words: nothing to compare
        if "empty vocabulary" not in str(err):
            raise
        return [[] for _ in texts]
    members = _group_rows(groups) if groups is not None else {}

    def excluded(i: int) -> np.ndarray:
        return members[groups[i]] if groups is not None else np.asarray([i])

    return _blocked(lambda a, b: (vectors[a:b] @ vectors.T).toarray(), len(texts), excluded, k, min_score,
                    block_cells)


def nearest_corpus_texts(queries: Sequence[str], corpus: Sequence[str], k: int = 2, min_score: float = 0.0,
                         block_cells: int = _BLOCK_CELLS, **tfidf) -> Neighbours:
    """Per query, the ``k`` texts of ``corpus`` most TF-IDF-cosine-similar to it (indices into ``corpus``); a
    corpus text equal to the query is skipped. The vectoriser is fitted on the corpus and the queries together;
    ``tfidf`` as ``nearest_texts``'s. The work is O(len(queries) x len(corpus))."""
    if k <= 0 or not queries or not corpus:
        return [[] for _ in queries]
    try:
        vectors = TfidfVectorizer(**tfidf).fit_transform([*corpus, *queries]).tocsr()
    except ValueError as err:
        if "empty vocabulary" not in str(err):
            raise
        return [[] for _ in queries]
    docs, asked = vectors[:len(corpus)], vectors[len(corpus):]
    where = _group_rows(corpus)
    empty = np.zeros(0, np.int64)
    return _blocked(lambda a, b: (asked[a:b] @ docs.T).toarray(), len(queries),
                    lambda i: where.get(queries[i], empty), k, min_score, block_cells, columns=len(corpus))


def _group_rows(groups: Sequence[Hashable]) -> Dict[Hashable, np.ndarray]:
    rows: Dict[Hashable, List[int]] = {}
    for i, key in enumerate(groups):
        rows.setdefault(key, []).append(i)
    return {key: np.asarray(v, np.int64) for key, v in rows.items()}


def region_labels(record: RegionRecord, background: Optional[int]) -> FrozenSet[int]:
    """The set of argmax classes of the record's regions, without the background class.

    ``background`` is the background column of ``class_probs``: 0 for bottom-up-attention / original UNIMO
    files (Caffe order) and for stores ``paddle_unimo.regions`` writes (it moves paddledet's last background
    column first), -1 (last) for paddledet's own order, None when the classes hold no background. A region whose
    argmax is background is dropped; a record without class_probs has no labels.
    """
    if record.class_probs is None or record.num_boxes == 0:
        return frozenset()
    labels = set(np.argmax(record.class_probs, axis=1).tolist())
    if background is not None:
        labels.discard(background % record.class_probs.shape[1])
    return frozenset(labels)


def nearest_images(label_sets: Sequence[FrozenSet[int]], k: int = 2, min_score: float = 0.0,
                   block_cells: int = _BLOCK_CELLS) -> Neighbours:
    """Per image, the ``k`` other images with the highest Jaccard overlap |A & B| / |A | B| of label sets.

    An image without labels retrieves nothing and is never retrieved (its overlap is 0).
    """
    n = len(label_sets)
    if n == 0:
        return []
    classes = {c: j for j, c in enumerate(sorted({c for s in label_sets for c in s}))}
    rows = np.repeat(np.arange(n), [len(s) for s in label_sets])
    cols = np.asarray([classes[c] for s in label_sets for c in sorted(s)], np.int64)
    onehot = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(n, max(len(classes), 1)))
    sizes = np.asarray([len(s) for s in label_sets], np.float64)

    def jaccard(a: int, b: int) -> np.ndarray:
        inter = (onehot[a:b] @ onehot.T).toarray()  # (b-a, n) shared labels
        union = sizes[a:b, None] + sizes[None, :] - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

    return _blocked(jaccard, n, lambda i: np.asarray([i]), k, min_score, block_cells)
