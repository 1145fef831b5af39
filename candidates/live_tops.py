"""Tops that move with the events logged since the bundle (issue "Near-realtime ALS steps":
the nearline "updates the popularity and trending tops").

A bundle's tops (candidates/tops.py) are counted up to its "now". Between nightlies, every
serving process reads each event `LogEvents` acknowledged (serving/tops_feed.py hands them
here), adds it to the counts the bundle kept per item (`TopsModel.item_counts`), and
re-scores the items it touched with the same formulas (`window_scores`): an item bought a
hundred times this morning climbs `top_purchases_7d` for the next request in every process.

What is live, and how far:
- The global, per-category and per-region lists of every windowed metric (clicks,
  purchases, CTR, pCTR, wCTR, wpCTR, weighted, trending). A window is read as "since its
  start at the bundle's now": it grows until the next nightly slides it (by a day, with a
  nightly a day). An event counts in its user's home region, as at the nightly (the
  bundle's profiles: a user the bundle does not know counts in no region).
- Impressions and clicks count distinct users, among the events since the bundle: a user's
  second view of an item today counts once, but one who also viewed it within the window
  before the bundle counts again (the bundle keeps counts, not pairs). A process remembers
  the latest tops.live_events_kept (user, item) pairs: memory stays bounded on a busy day,
  and a pair seen longer ago than that counts again.
- Untouched items keep the bundle's scores, although a pCTR's prior moves a little with
  every event; the pCTR lists of touched items use the moved prior.
- The `popularity` generator answers from the live "weighted" list of its window (the same
  sums, cut at tops.depth) when tops.windows_days has popularity.window_days.
- "New" lists, the popularity backfill and the ranking features (the rankers learnt them at
  the bundle's time) move at the nightly. Items only the event log knows are counted from
  when they join the bundle in service (recsys/new_items.py), their earlier events with
  them (serving/tops_feed.py counts the kept events into the grown bundle's tops).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import numpy as np

from candidates.tops import (
    COUNTS,
    NO_VALUE,
    PRIOR_COUNTS,
    WINDOWED_METRICS,
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


class _Gathered(Mapping[str, np.ndarray]):
    """One window's counts of some items (or region groups), each gathered when a formula
    first reads it: a re-score gathers only the counts its metric reads (window_scores says
    which)."""

    def __init__(self, counts: np.ndarray, columns: np.ndarray) -> None:
        self.counts, self.columns = counts, columns  # (len(COUNTS), n) and which of the n
        self.read: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.read:
            self.read[name] = self.counts[COUNTS.index(name), self.columns].astype(np.float64)
        return self.read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(COUNTS)

    def __len__(self) -> int:
        return len(COUNTS)


def _priors(totals: np.ndarray) -> dict[str, float]:
    """Each pCTR numerator's prior p0 from one scope's sums (len(COUNTS),): Σnum / Σimpr."""
    impressions = totals[IMPRESSIONS]
    return {
        name: totals[COUNTS.index(name)] / impressions if impressions else 0.0
        for name in PRIOR_COUNTS
    }


class _RegionCounts:
    """The bundle's counts per (region, item) with events (read-only), and the counts now of
    the (region, item) groups touched since: a region's list moves without a writable copy
    of every group's counts in every serving process."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, n_items: int, n_regions: int):
        self.keys, self.base, self.n_items = keys, counts, n_items
        regions = keys // n_items
        # Σ per region, window and count: each region's pCTR prior (its users' CTR)
        self.totals = np.zeros((counts.shape[0], len(COUNTS), n_regions), dtype=np.float64)
        for w in range(counts.shape[0]):
            for c in range(len(COUNTS)):
                self.totals[w, c] = np.bincount(regions, counts[w, c], minlength=n_regions)
        self.slot_of: dict[int, int] = {}  # touched group key -> its slot, in order of first
        self.item = np.empty(0, dtype=np.int64)  # per slot
        self.counts = np.zeros((counts.shape[0], len(COUNTS), 0), dtype=np.float32)  # per slot
        self.touched = np.zeros((n_regions, n_items), dtype=bool)  # (region, item) has a slot
        self._slots = [np.empty(0, dtype=np.int64) for _ in range(n_regions)]  # per region
        self._n_slots = np.zeros(n_regions, dtype=np.int64)

    def add(self, region: int, item: int, step: np.ndarray) -> None:
        key = region * self.n_items + item
        slot = self.slot_of.get(key)
        if slot is None:
            slot = self._new_slot(key, region, item)
        self.counts[:, :, slot] += step
        self.totals[:, :, region] += step

    def slots_in(self, region: int) -> np.ndarray:
        """The slots of one region's touched groups (a view: no copy)."""
        return self._slots[region][: self._n_slots[region]]

    def _new_slot(self, key: int, region: int, item: int) -> int:
        slot = len(self.slot_of)
        if slot == len(self.item):  # grow by doubling: amortised O(1) per new group
            size = max(2 * slot, 64)
            grown = np.zeros((*self.counts.shape[:2], size), dtype=np.float32)
            grown[:, :, :slot] = self.counts[:, :, :slot]
            self.counts = grown
            self.item = np.concatenate([self.item, np.full(size - slot, -1, np.int64)])
        at = int(np.searchsorted(self.keys, key))
        if at < len(self.keys) and self.keys[at] == key:  # the bundle's counts to start from
            self.counts[:, :, slot] = self.base[:, :, at]
        self.item[slot] = item
        self.slot_of[key] = slot
        self.touched[region, item] = True
        mine, n = self._slots[region], self._n_slots[region]
        if n == len(mine):
            self._slots[region] = mine = np.concatenate([mine, np.empty(max(n, 64), np.int64)])
        mine[n] = slot
        self._n_slots[region] = n + 1
        return slot


class LiveTops:
    """One bundle's global and category tops plus the events since it; thread-safe. The
    model owns them (`attach_live_tops`), so it must outlive them: they keep a weak proxy.

    Costs (bench/bench_live_tops.py): counting is per event; the first read of a list after
    a batch re-scores the items touched since the bundle (their scores are kept per metric
    and window, so each scope's list reuses them) and merges the best of them into the
    bundle's list; later reads are a dict lookup.
    """

    def __init__(self, model: TopsModel, config: TopsConfig) -> None:
        if model.item_counts is None:
            raise ValueError("tops: this bundle keeps no item counts (built before live tops)")
        # A proxy: the model holds these live tops (`serve_from`), and a strong reference
        # back would make a cycle, which serving's frozen heap never collects (a bundle must
        # die by reference counting alone: serving/holder.py `_freeze_heap`); every swap or
        # join of new items then kept the old tops and their counts alive.
        self.model = weakref.proxy(model)
        self.depth = config.depth
        self.config = config
        self.windows = {window: k for k, window in enumerate(model.windows_days)}
        # (n_windows, len(COUNTS), n_items): the bundle's counts plus the events since
        self.counts = model.item_counts.astype(np.float32, copy=True)
        # Σ over items per window and count, for the pCTR priors
        self.totals = self.counts.sum(axis=2, dtype=np.float64)
        # (user, item) pairs since the bundle, the latest max_pairs of them
        self._impressed: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._clicked: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.max_pairs = max(config.live_events_kept, 1)
        n_items = self.counts.shape[2]
        self._is_touched = np.zeros(n_items, dtype=bool)
        self._touched_buffer = np.empty(n_items, dtype=np.int64)  # in order of first event
        self._n_touched = 0
        self._lists: dict[tuple[str, int, str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._rescored: dict[tuple[str, int], np.ndarray] = {}  # scores of the touched items
        self._members: dict[int, tuple[int, np.ndarray]] = {}  # category -> (n seen, positions)
        self.regions = (
            None
            if model.region_keys is None
            else _RegionCounts(
                model.region_keys, model.region_counts, n_items, len(model.region_names)
            )
        )
        self._lock = threading.Lock()
        self.events = 0

    @property
    def touched(self) -> np.ndarray:
        """Items with events since the bundle, in order of their first (a view: no copy)."""
        return self._touched_buffer[: self._n_touched]

    def add(
        self,
        users: np.ndarray,  # str per event
        items: np.ndarray,  # int64 bundle item index per event, -1: not in the bundle
        positive: np.ndarray,  # bool per event (data.positive_events)
        weights: np.ndarray,  # float per event: its weight in R (als.event_weights)
        is_view: np.ndarray,  # bool per event
        is_purchase: np.ndarray,  # bool per event
        regions: np.ndarray | None = None,  # int64 per event: the user's home region, -1 none
    ) -> None:
        """Count events, in log order, into every window."""
        known = items >= 0
        if not known.any():
            return
        if regions is None or self.regions is None:
            regions = np.full(len(items), -1, dtype=np.int64)
        with self._lock:
            counts, totals = self.counts, self.totals
            step = np.zeros(len(COUNTS), dtype=np.float32)
            for user, item, pos, weight, view, purchase, region in zip(
                users[known].tolist(),
                items[known].tolist(),
                positive[known].tolist(),
                weights[known].tolist(),
                is_view[known].tolist(),
                is_purchase[known].tolist(),
                regions[known].tolist(),
                strict=True,
            ):
                pair = (user, item)
                step[IMPRESSIONS] = self._first(self._impressed, pair)
                step[CLICKS] = pos and self._first(self._clicked, pair)
                step[WEIGHTED_CLICKS] = 0.0 if view else weight
                step[PURCHASES] = purchase
                step[WEIGHTED] = weight
                counts[:, :, item] += step  # every window: each grows from its bundle start
                totals += step
                if region >= 0:  # the same (user, item) firsts: a user has one home region
                    self.regions.add(region, item, step)
                if not self._is_touched[item]:
                    self._is_touched[item] = True
                    self._touched_buffer[self._n_touched] = item
                    self._n_touched += 1
            self.events += int(known.sum())
            self._lists, self._rescored = {}, {}  # every list may have moved

    def _first(self, pairs: OrderedDict[tuple[str, int], None], pair: tuple[str, int]) -> bool:
        """Whether `pair` is new to `pairs` (then remembered, the oldest forgotten past the cap)."""
        if pair in pairs:
            pairs.move_to_end(pair)
            return False
        pairs[pair] = None
        if len(pairs) > self.max_pairs:
            pairs.popitem(last=False)
        return True

    def top(
        self, metric: str, window_days: int, scope: str = "global", value: int = NO_VALUE
    ) -> tuple[np.ndarray, np.ndarray]:
        """`TopsModel.top`, with the events since the bundle counted in where they are live."""
        model = self.model
        if (
            metric not in WINDOWED_METRICS
            or window_days not in self.windows
            or (metric == "trending" and not window_days)
            or not self._n_touched
            or (scope == "region" and (self.regions is None or not self.regions.slot_of))
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
        if scope == "region":
            slots = self.regions.slots_in(value)
            touched = self.regions.item[slots]
            live = self._region_scores(metric, window_days, value, slots)
            untouched = ~self.regions.touched[value, ids]
        else:
            touched, live = self.touched, self._touched_scores(metric, window_days)
            if scope == "category":
                mine = self._members_of(value)
                touched, live = touched[mine], live[mine]
            untouched = ~self._is_touched[ids]
        keep = live > 0
        if keep.sum() > self.depth:  # only the best `depth` can make the list
            keep[keep] = live[keep] >= np.partition(live[keep], -self.depth)[-self.depth]
        merged_ids, merged_scores = best_per_item(
            np.concatenate([ids[untouched], touched[keep]]),
            np.concatenate([scores[untouched], live[keep]]),
        )
        return merged_ids[: self.depth], merged_scores[: self.depth]

    def _touched_scores(self, metric: str, window_days: int) -> np.ndarray:
        """`metric` now, per touched item: once per batch for every scope's list."""
        key = (metric, window_days)
        found = self._rescored.get(key)
        if found is not None:
            return found
        w = self.windows[window_days]
        named = _Gathered(self.counts[w], self.touched)
        priors = _priors(self.totals[w])  # the global CTR, as the global and category lists use
        live = window_scores(named, priors, self.config, window_days, (metric,))[metric]
        found = self._rescored[key] = live.astype(np.float32)
        return found

    def _region_scores(
        self, metric: str, window_days: int, region: int, slots: np.ndarray
    ) -> np.ndarray:
        """`metric` now, per touched (region, item) group of one region, with the region's
        prior (its users' CTR, as the bundle's region lists use)."""
        regions, w = self.regions, self.windows[window_days]
        priors = _priors(regions.totals[w][:, region])
        named = _Gathered(regions.counts[w], slots)
        return window_scores(named, priors, self.config, window_days, (metric,))[metric]

    def _members_of(self, category: int) -> np.ndarray:
        """Positions in `touched` of the items in `category`, extended as items are touched."""
        seen, positions = self._members.get(category, (0, np.empty(0, dtype=np.int64)))
        if seen < self._n_touched:
            new = self.touched[seen:]
            positions = np.concatenate(
                [positions, seen + np.flatnonzero(self.model.in_category(new, category))]
            )
            self._members[category] = (self._n_touched, positions)
        return positions


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
