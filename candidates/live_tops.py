"""Tops that move with the events logged since the bundle (issue "Near-realtime ALS steps":
the nearline "updates the popularity and trending tops").

A bundle's tops (candidates/tops.py) are counted up to its "now". Between nightlies, every
serving process reads each event `LogEvents` acknowledged (serving/tops_feed.py hands them
here), adds it to the counts the bundle kept per item (`TopsModel.item_counts`), and
re-scores the items it touched with the same formulas (`window_scores`): an item bought a
hundred times this morning climbs `top_purchases_7d` for the next request in every process.

What is live, and how far:
- The global and per-category lists of every windowed metric (clicks, purchases, CTR, pCTR,
  wCTR, wpCTR, weighted, trending). A window is read as "since its start at the bundle's
  now": it grows until the next nightly slides it (by a day, with a nightly a day).
- Impressions and clicks count distinct users, among the events since the bundle: a user's
  second view of an item today counts once, but one who also viewed it within the window
  before the bundle counts again (the bundle keeps counts, not pairs).
- Untouched items keep the bundle's scores, although a pCTR's prior moves a little with
  every event; the pCTR lists of touched items use the moved prior.
- The `popularity` generator answers from the live "weighted" list of its window (the same
  sums, cut at tops.depth) when tops.windows_days has popularity.window_days.
- Region lists, "new" lists, the popularity backfill and the ranking features (the rankers
  learnt them at the bundle's time) move at the nightly. Items only the event log
  knows have no index in the bundle and join at the nightly (or through the nearline's
  fresh slots).
"""

from __future__ import annotations

import threading

import numpy as np

from candidates.tops import (
    COUNTS,
    NO_VALUE,
    PRIOR_COUNTS,
    TopsModel,
    best_per_item,
    window_scores,
)
from recsys.config import Config, TopsConfig
from recsys.loaded_bundle import LoadedBundle

IMPRESSIONS, CLICKS, WEIGHTED_CLICKS, PURCHASES, WEIGHTED = (
    COUNTS.index(name)
    for name in ("impressions", "clicks", "weighted_clicks", "purchases", "weighted")
)


class LiveTops:
    """One bundle's global and category tops plus the events since it; thread-safe."""

    def __init__(self, model: TopsModel, config: TopsConfig) -> None:
        if model.item_counts is None:
            raise ValueError("tops: this bundle keeps no item counts (built before live tops)")
        self.model = model
        self.depth = config.depth
        self.config = config
        self.windows = {window: k for k, window in enumerate(model.windows_days)}
        self.base = model.item_counts  # (n_windows, len(COUNTS), n_items)
        self.delta = np.zeros_like(self.base)
        # Σ over items per window and count, for the pCTR priors, kept up to date by `add`
        self.totals = self.base.sum(axis=2, dtype=np.float64)
        self._impressed: set[tuple[str, int]] = set()  # (user, item) pairs since the bundle
        self._clicked: set[tuple[str, int]] = set()
        self._touched = np.empty(0, dtype=np.int64)  # sorted items with events since
        self._lists: dict[tuple[str, int, str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._rescored: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.events = 0

    def add(
        self,
        users: np.ndarray,  # str per event
        items: np.ndarray,  # int64 bundle item index per event, -1: not in the bundle
        positive: np.ndarray,  # bool per event (data.positive_events)
        weights: np.ndarray,  # float per event: its weight in R (als.event_weights)
        is_view: np.ndarray,  # bool per event
        is_purchase: np.ndarray,  # bool per event
    ) -> None:
        """Count events, in log order, into every window."""
        known = items >= 0
        if not known.any():
            return
        with self._lock:
            delta, totals = self.delta, self.totals
            for user, item, pos, weight, view, purchase in zip(
                users[known].tolist(),
                items[known].tolist(),
                positive[known].tolist(),
                weights[known].tolist(),
                is_view[known].tolist(),
                is_purchase[known].tolist(),
                strict=True,
            ):
                pair = (user, item)
                step = np.zeros(len(COUNTS))
                if pair not in self._impressed:
                    self._impressed.add(pair)
                    step[IMPRESSIONS] = 1
                if pos and pair not in self._clicked:
                    self._clicked.add(pair)
                    step[CLICKS] = 1
                step[WEIGHTED_CLICKS] = 0.0 if view else weight
                step[PURCHASES] = purchase
                step[WEIGHTED] = weight
                delta[:, :, item] += step  # every window: each grows from its bundle start
                totals += step
            self.events += int(known.sum())
            self._touched = np.union1d(self._touched, items[known])
            self._lists, self._rescored = {}, {}  # every list may have moved

    def top(
        self, metric: str, window_days: int, scope: str = "global", value: int = NO_VALUE
    ) -> tuple[np.ndarray, np.ndarray]:
        """`TopsModel.top`, with the events since the bundle counted in where they are live."""
        model = self.model
        if (
            metric == "new"
            or scope == "region"
            or window_days not in self.windows
            or not len(self._touched)
        ):
            return model.top(metric, window_days, scope, value)
        key = (metric, window_days, scope, value)
        found = self._lists.get(key)
        if found is None:
            with self._lock:
                found = self._lists.get(key)
                if found is None:
                    found = self._lists[key] = self._merged(metric, window_days, scope, value)
        return found

    def _merged(
        self, metric: str, window_days: int, scope: str, value: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bundle's list with the touched items re-scored (dropped where now 0)."""
        ids, scores = self.model.top(metric, window_days, scope, value)
        if scope == "category" and not len(ids):
            return ids, scores  # a category without a list in the bundle: nothing to move
        touched, live = self._touched_scores(metric, window_days)
        if live is None:  # trending over all history: no list
            return ids, scores
        if scope == "category":
            mine = self.model.in_category(touched, value)
            touched, live = touched[mine], live[mine]
        stale = np.isin(ids, touched, assume_unique=True)
        keep = live > 0
        if keep.sum() > self.depth:  # only the best `depth` can make the list
            keep[keep] = live[keep] >= np.partition(live[keep], -self.depth)[-self.depth]
        merged_ids, merged_scores = best_per_item(
            np.concatenate([ids[~stale], touched[keep]]),
            np.concatenate([scores[~stale], live[keep]]),
        )
        return merged_ids[: self.depth], merged_scores[: self.depth]

    def _touched_scores(
        self, metric: str, window_days: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(touched items, their `metric` now), once per batch for every scope's list."""
        key = (metric, window_days)
        found = self._rescored.get(key)
        if found is not None:
            return found
        touched, w = self._touched, self.windows[window_days]
        counts = self.base[w][:, touched] + self.delta[w][:, touched]
        named = {name: counts[k].astype(np.float64) for k, name in enumerate(COUNTS)}
        totals = self.totals[w]
        impressions = totals[IMPRESSIONS]
        priors = {  # the global CTR, as the bundle's global and category lists use
            name: np.full(
                len(touched), totals[COUNTS.index(name)] / impressions if impressions else 0.0
            )
            for name in PRIOR_COUNTS
        }
        scored = window_scores(named, priors, self.config, window_days, (metric,))
        live = scored[metric].astype(np.float32) if metric in scored else None
        self._rescored[key] = (touched, live)
        return touched, live


def attach_live_tops(bundle: LoadedBundle, config: Config) -> LiveTops | None:
    """Let the bundle's tops generators (and `popularity`, where a tops window matches its
    own) answer from live lists; None where config.tops.live is off or the bundle predates
    the counts."""
    tops = bundle.tops
    if not config.tops.live or tops.item_counts is None:
        return None
    live = LiveTops(tops, config.tops)
    tops.serve_from(live)
    window = config.popularity.window_days
    if window in tops.windows_days:
        bundle.popularity.serve_from(lambda: live.top("weighted", window))
    return live
