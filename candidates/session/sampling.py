"""Which sessions an online update trains on (seed 003 §II.D.3, SSRM's "Active Sampling").

Each candidate session (the new ones and the reservoir's) gets a prediction score, the mean
MF score of its items for its user, score(s) = (1 / |s|) Σ_j ⟨u, v_j⟩: how well the model
already predicts it ("для снижения вычислительной нагрузки рекомендательная модель
используется только в части матричной факторизации"). A high score means little left to
learn, so sessions are ranked by score in decreasing order and drawn with probabilities
that grow with the rank: the least well predicted are the most informative.

The seed's text of the rank weight lost its formula; we take the weight proportional to the
rank, w_s = rank_s (1 for the best predicted), p_s = w_s / Σ w: rank-based sampling as in
SSRM, every session keeps a chance, the worst predicted is N times likelier than the best.
"""

from __future__ import annotations

import numpy as np

from candidates.session.sessions import Sessions


def prediction_scores(
    sessions: Sessions, user_vectors: np.ndarray, item_vectors: np.ndarray
) -> np.ndarray:
    """score(s) = mean over the session's items of ⟨u_s, v_j⟩; `user_vectors` holds one row
    per session (the user's MF vector), `item_vectors` one per catalogue item."""
    if len(user_vectors) != len(sessions):
        raise ValueError(f"{len(user_vectors)} user vectors for {len(sessions)} sessions")
    session_of_item = np.repeat(np.arange(len(sessions)), sessions.lengths)
    dots = np.einsum("ij,ij->i", item_vectors[sessions.items], user_vectors[session_of_item])
    sums = np.bincount(session_of_item, weights=dots, minlength=len(sessions))
    return (sums / np.maximum(sessions.lengths, 1)).astype(np.float64)


def active_sampling_probabilities(scores: np.ndarray) -> np.ndarray:
    """p_s = rank_s / Σ rank, rank 1 for the highest score (ties: the earlier session ranks
    first)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        return np.empty(0, np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("active sampling: session scores must be finite")
    ranks = np.empty(len(scores), np.float64)
    ranks[np.lexsort((np.arange(len(scores)), -scores))] = np.arange(1, len(scores) + 1)
    return ranks / ranks.sum()


def active_sample(scores: np.ndarray, size: int, random: np.random.Generator) -> np.ndarray:
    """Positions of `size` distinct sessions drawn with the active-sampling probabilities."""
    size = min(size, len(scores))
    if size <= 0:
        return np.empty(0, np.int64)
    probabilities = active_sampling_probabilities(scores)
    return random.choice(len(scores), size=size, replace=False, p=probabilities)
