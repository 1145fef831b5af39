"""Vectors for catalogue items no one has touched yet, from what they are (seed 004, "Зачем
еще нужны шаги": a content embedding of an item gets a matching collaborative one by a
least-squares step, "своего рода правильное усреднение с учетом коллаборативной специфики").

An item's content vector c is its categories (one-hot, each row scaled to unit length)
beside its title's TF-IDF. One ridge least-squares solve over the items that do have iALS
vectors learns the map W into the ALS space,

    W = argmin_W  Σ_{items with a vector} ‖c_i W - v_i‖² + λ ‖W‖²,

and an item without interactions gets v = c W: near the items that read like it, so the
iALS generator can find it for the users who like those, before anyone has touched it.
Solved per factor by LSQR on the sparse content matrix (the vocabulary may be large).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import lsqr

from candidates.i2i.builders import title_tfidf
from recsys.interactions import TrainingData

log = logging.getLogger(__name__)


def content_matrix(data: TrainingData) -> sp.csr_matrix | None:
    """Each item's content vector (categories, title TF-IDF); None if the catalogue has
    neither."""
    parts = []
    categories = sp.csr_matrix(data.item_categories, dtype=np.float32)
    if categories.shape[1]:
        counts = np.asarray(categories.sum(axis=1)).ravel()
        scale = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        parts.append(sp.diags(scale.astype(np.float32)) @ categories)
    titles = title_tfidf(data.item_text)
    if titles is not None:
        parts.append(titles)
    if not parts:
        return None
    return sp.hstack(parts).tocsr()


def content_map(content: sp.csr_matrix, vectors: np.ndarray, regularization: float) -> np.ndarray:
    """W (content dims x factors) of the ridge solve above, over the rows given."""
    damp = float(np.sqrt(regularization))
    return np.column_stack(
        [lsqr(content, vectors[:, j], damp=damp)[0] for j in range(vectors.shape[1])]
    ).astype(np.float32)


def fill_cold_items(
    item_factors: np.ndarray, data: TrainingData, regularization: float
) -> np.ndarray:
    """`item_factors` with each item that has no interaction (and some content) given c W;
    the others unchanged. Returns a new array."""
    cold = np.diff(data.interactions.tocsc().indptr) == 0
    content = content_matrix(data) if cold.any() else None
    if content is None:
        return item_factors
    has_content = np.diff(content.indptr) > 0
    warm = ~cold & has_content
    targets = cold & has_content
    if not warm.any() or not targets.any():
        return item_factors
    mapping = content_map(content[warm], item_factors[warm], regularization)
    filled = item_factors.copy()
    filled[targets] = content[targets] @ mapping
    log.info("als: %d items without interactions got vectors from their content", targets.sum())
    return filled
