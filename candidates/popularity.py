"""Global popularity top (seed 004, "Статические топы": a list sorted offline, held in memory).

Popularity is the summed event weight per item (the same weights as R in iALS) over the
last `window_days` of history. The ranked order is precomputed, so a request only slices it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from candidates.base import register_generator
from recsys.arrays import top_k_batch
from recsys.components import Component, register_component
from recsys.config import PopularityConfig
from recsys.context import Candidates, RequestContext
from recsys.interactions import TrainingData

FILE = "popularity.npz"
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class PopularityTop:
    name = "popularity"
    scores: np.ndarray  # float32 per item
    ranked: np.ndarray  # int64 item indices, most popular first
    # in serving, the same top moved by the events logged since the bundle: the live tops'
    # "weighted" list of the same window (candidates/live_tops.py); None: the bundle's
    _live: Callable[[], tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def serve_from(self, top: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """Let the generator answer from `top()`, (ids, scores) best first, from now on."""
        object.__setattr__(self, "_live", top)

    @classmethod
    def fit(cls, data: TrainingData, config: PopularityConfig) -> PopularityTop:
        in_window = np.ones(len(data.event_times), dtype=bool)
        if config.window_days > 0:
            in_window = data.event_times > data.newest_time - config.window_days * SECONDS_PER_DAY
        scores = np.bincount(
            data.event_items[in_window],
            weights=data.event_weights[in_window],
            minlength=len(data.items),
        ).astype(np.float32)
        return cls.from_scores(scores)

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> PopularityTop:
        # lexsort: by score descending, ties by item index so the order is deterministic
        ranked = np.lexsort((np.arange(len(scores)), -scores)).astype(np.int64)
        return cls(scores=scores, ranked=ranked)

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        live = self._live
        if live is not None:
            ids, scores = live()
            return Candidates(ids[:budget].copy(), scores[:budget].copy(), self.name)
        top = self.ranked[:budget]
        return Candidates(top, self.scores[top], self.name)

    def recommend_batch(self, n_users: int, k: int, exclude: sp.csr_matrix) -> np.ndarray:
        """The same top for every user, minus each user's `exclude` row; (n, k) int64."""
        # Only the first k + (most excluded per user) ranked items can make any list.
        depth = min(len(self.ranked), k + int(np.diff(exclude.indptr).max(initial=0)))
        head = self.ranked[:depth]
        block = np.broadcast_to(self.scores[head], (n_users, depth))
        position = np.full(len(self.scores), -1, dtype=np.int64)
        position[head] = np.arange(depth)
        rows = np.repeat(np.arange(n_users), np.diff(exclude.indptr))
        cols = position[exclude.indices]
        mask = sp.csr_matrix(
            (np.ones(int((cols >= 0).sum()), np.float32), (rows[cols >= 0], cols[cols >= 0])),
            shape=(n_users, depth),
        )
        chosen = top_k_batch(block, k, mask)
        return np.where(chosen >= 0, head[np.maximum(chosen, 0)], -1)

    def save(self, directory: Path) -> None:
        np.savez(directory / FILE, scores=self.scores)

    @classmethod
    def load(cls, directory: Path) -> PopularityTop:
        with np.load(directory / FILE) as data:
            return cls.from_scores(data["scores"])


register_component(
    Component(
        "popularity",
        fit=lambda given: PopularityTop.fit(given.data, given.config.popularity),
        load=lambda directory, config: PopularityTop.load(directory),
        # no weight before they joined; the live tops count them from then
        grow=lambda top, new: PopularityTop(
            new.rows(top.scores, 0.0),
            np.concatenate([top.ranked, np.arange(new.first, new.end, dtype=np.int64)]),
        ),
    )
)
register_generator("popularity", lambda bundle, config, name: bundle.popularity)
