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


# ------------------------------------------------------------------ GAG (seed 003 §III.D)


def wasserstein_to_items(
    probabilities: np.ndarray, targets: np.ndarray, item_vectors: np.ndarray
) -> np.ndarray:
    """(B,) Wasserstein distance between each row's recommendation distribution over the
    items and the one-hot of the item the user went to: with a one-hot target, the cost of
    moving every item's mass to the target, Σ_i p_i d(i, target). The seed does not name the
    ground distance d; we take the cosine distance of the model's item vectors, so mass on
    items like the target costs little."""
    unit = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    cost = 1.0 - unit @ unit[targets].T  # (n_items, B)
    return np.einsum("bi,ib->b", probabilities, cost)


def wasserstein_selection(
    is_new: np.ndarray, distances: np.ndarray, size: int, random: np.random.Generator
) -> np.ndarray:
    """Positions chosen for a GAG update: every session with a user or item the model has
    not learnt, then `size` of the others drawn without replacement with probability
    proportional to their distance (the worst predicted are the most informative)."""
    is_new = np.asarray(is_new, dtype=bool)
    distances = np.asarray(distances, dtype=np.float64)
    if not np.all(np.isfinite(distances)) or np.any(distances < 0):
        raise ValueError("wasserstein selection: distances must be finite and >= 0")
    chosen = [np.flatnonzero(is_new)]
    others = np.flatnonzero(~is_new)
    informative = others[distances[others] > 0]
    if size >= len(informative):  # every session with a distance, then others at random
        chosen.append(informative)
        rest = others[distances[others] == 0]
        chosen.append(
            random.choice(rest, size=min(size - len(informative), len(rest)), replace=False)
        )
    elif size > 0:
        weights = distances[informative]
        chosen.append(
            random.choice(informative, size=size, replace=False, p=weights / weights.sum())
        )
    return np.sort(np.concatenate(chosen))
