"""Reference models every served figure stands beside, on the same split (issue "Ranking
that earns its place"): most popular, iALS, EASE, item-kNN, last-item kNN, EASE + last-item
kNN and recent EASE (EASE over the user's latest items, weighted by recency). Each scores
every item for a block of users; evaluation masks what the user already touched, exactly as
serving's `already_interacted` filter does.

They are computed from the served bundle's own parts where it has them (its popularity,
iALS and EASE), and from full-length cosine lists otherwise, so that a baseline is never
weakened by a serving budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from candidates.ease import EASEModel
from candidates.i2i.builders import cosine_neighbors, item_popularity
from candidates.i2i.lists import TieOrder
from candidates.sequence import sequence_weights
from recsys.config import Config
from recsys.interactions import TrainingData, recent_items
from recsys.loaded_bundle import LoadedBundle

LIST_LENGTH = 300  # cosine neighbours per item kept for the kNN baselines
LAST_ITEMS, LAST_DECAY = 3, 0.7  # the reference last-item kNN: 3 latest items, decay 0.7
EASE_LAST_WEIGHT = 2.0  # EASE + 2 x last-item kNN
RECENT_ITEMS, RECENT_DECAY = 50, 0.9  # recent EASE: the 50 latest distinct items, decay 0.9

Scorer = Callable[[np.ndarray], np.ndarray]  # user indices -> (n, n_items) float32 scores


def baseline_scorers(bundle: LoadedBundle, data: TrainingData, config: Config) -> dict[str, Scorer]:
    """name -> scorer over the bundle's users (index -1: a user the bundle does not know,
    who gets the popularity scores from every model, as serving answers them)."""
    n_items = len(bundle.items)
    popularity = bundle.popularity.scores.astype(np.float32)
    binary = data.interactions.astype(bool).astype(np.float32).tocsr()
    wide = dataclasses.replace(config.i2i, neighbors=LIST_LENGTH, history_limit=1 << 30)
    lists = cosine_neighbors(data, wide, TieOrder.by_popularity(item_popularity(data)))
    rows = np.repeat(np.arange(n_items), lists.ids.shape[1])
    keep = lists.ids.ravel() >= 0
    similarity = sp.csr_matrix(
        (lists.scores.ravel()[keep], (rows[keep], lists.ids.ravel()[keep])),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
    als = bundle.als.model
    ease = bundle.ease or EASEModel.fit(data.interactions, config.ease)

    def known(users: np.ndarray, score: Scorer) -> np.ndarray:
        result = np.tile(popularity, (len(users), 1))
        mask = users >= 0
        if mask.any():
            result[mask] = score(users[mask])
        return result

    def last_items(users: np.ndarray) -> np.ndarray:
        weights = sequence_weights(LAST_ITEMS, LAST_DECAY)
        seeds = sp.lil_matrix((len(users), n_items), dtype=np.float32)
        for row, user in enumerate(users):
            latest = bundle.profiles.sequence_of(int(user))[:LAST_ITEMS]
            seeds[row, latest] = weights[: len(latest)]
        return np.asarray((seeds.tocsr() @ similarity).todense())

    recent = recency_weights(data, RECENT_ITEMS, RECENT_DECAY)

    scorers: dict[str, Scorer] = {
        "most popular": lambda users: np.tile(popularity, (len(users), 1)),
        "iALS": lambda users: known(users, lambda u: als.user_factors[u] @ als.item_factors.T),
        "item-kNN": lambda users: known(
            users, lambda u: np.asarray((binary[u] @ similarity).todense())
        ),
        "last-item kNN": lambda users: known(users, last_items),
        "EASE": lambda users: known(users, lambda u: ease.score_users(binary[u])),
        "EASE + last-item kNN": lambda users: known(
            users,
            # an item EASE does not model (a large catalogue's tail) keeps its kNN score
            lambda u: (
                np.nan_to_num(ease.score_users(binary[u]), nan=0.0)
                + EASE_LAST_WEIGHT * last_items(u)
            ),
        ),
        "recent EASE": lambda users: known(users, lambda u: ease.score_rows(recent[u])),
    }
    return scorers


def recency_weights(data: TrainingData, latest: int, decay: float) -> sp.csr_matrix:
    """(n_users, n_items): decay ** r on each user's r-th newest distinct item (events of any
    type, ties in log order), for the `latest` newest; taken from the whole history, never
    cut to the bundle's sequence.length, so the baseline is not weakened by a serving setting."""
    indptr, items, _ = recent_items(data, latest)
    rank = np.arange(len(items)) - np.repeat(indptr[:-1], np.diff(indptr))
    return sp.csr_matrix(
        (decay ** rank.astype(np.float32), items, indptr),
        shape=(len(data.users), len(data.items)),
        dtype=np.float32,
    )
