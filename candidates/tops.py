"""Static tops (seed 004, "Статические топы"): item lists sorted offline by popularity
("клики, покупки, CTR, pCTR, wCTR, wpCTR") and freshness ("новинки, набирающие популярность")
"за разные периоды времени"; at runtime they "лежат в памяти" as sorted arrays and are sliced.

Definitions. "now" is the newest event's time; window w days = events with
time > now - w * 86400 (w = 0: all history). Over the events of one window:

- impressions(i) = distinct users with any event on i; clicks(i) = distinct users with a
  positive event on i (TrainingData.event_positive). Counting (user, item) pairs, not events,
  keeps CTR <= 1 on every dataset. On rating-only data (MovieLens) impressions are the raters
  and clicks the raters at or above data.positive_rating.
- purchases(i) = number of "purchase" events (so the list is empty on rating-only data).
- ctr = clicks / impressions.
- pctr = (clicks + m * p0) / (impressions + m): a Beta prior of strength m =
  pctr_prior_strength around p0 = Σ clicks / Σ impressions of the list's scope (the window's
  global CTR; for a region list, the CTR of that region's users).
- wctr = weighted clicks / impressions; weighted clicks = Σ of the item's event weights (R's
  weights: config [als.event_weights], weak ratings at als.negative_rating_weight) over its
  non-view events, since a view is the impression, not an action. wpctr smooths wctr like
  pctr, around Σ weighted clicks / Σ impressions.
- weighted = Σ of all the item's event weights (as candidates/popularity.py).
- trending = (n_cur + p) / (n_prev + p) with n = impressions in this window and in the
  previous window of the same length, p = trending_prior; only items with
  n_cur >= max(trending_min_count, 1); there is no trending list for w = 0.
- new = items created after now - new_days * 86400, newest first; score = the share of
  new_days still ahead of the item, in (0, 1] (above 1 for items created after "now").
  One list per scope, no window; no region lists (where an item sells is not known here).

Scopes: global; per category (an item is in every category it belongs to, ranked by its
global score); per region (only events by users whose home region it is). A list keeps its
best `depth` items with score > 0 (CTR-like lists: impressions > 0 as well), ties broken by
item index.

Storage: every list concatenated in flat arrays (CSR-like): `ids`, `scores`, `offsets`, and a
key table (metric, window, scope, value) with one row per list; saved as one npz + one json.

Generator names: top_<metric>_<window>[_by_category|_by_region] with window "<w>d" or "all",
plus top_new and top_new_by_category.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from candidates.base import Generator, register_generator
from recsys.arrays import NO_ITEMS, first_positions, run_positions
from recsys.components import Component, register_component
from recsys.config import EVENT_TYPES, Config, TopsConfig
from recsys.context import Candidates, RequestContext
from recsys.interactions import TrainingData
from recsys.new_items import NewItems

log = logging.getLogger(__name__)

NPZ_FILE = "tops.npz"
JSON_FILE = "tops.json"
FORMAT_VERSION = 1
SECONDS_PER_DAY = 86_400

WINDOWED_METRICS = ("clicks", "purchases", "ctr", "pctr", "wctr", "wpctr", "weighted", "trending")
METRICS = (*WINDOWED_METRICS, "new")
CTR_LIKE = ("ctr", "pctr", "wctr", "wpctr")
SCOPES = ("global", "category", "region")
SCOPE_SUFFIX = {"global": "", "category": "_by_category", "region": "_by_region"}
NO_WINDOW = -1  # the key table's window of the "new" lists
NO_VALUE = -1  # the key table's value of global lists
ARRAYS = (
    "ids",
    "scores",
    "offsets",
    "key_metric",
    "key_window",
    "key_scope",
    "key_value",
    "item_category_indptr",
    "item_category_indices",
    "item_stats",
)
OPTIONAL_ARRAYS = ("item_counts", "region_keys", "region_counts")  # absent from older bundles
COUNTS = ("impressions", "clicks", "weighted_clicks", "purchases", "weighted", "previous")
PRIOR_COUNTS = ("clicks", "weighted_clicks")  # the numerators smoothed towards a prior
_NO_SCORES = np.empty(0, dtype=np.float32)


class TopLists(Protocol):
    def top(
        self, metric: str, window_days: int, scope: str = "global", value: int = NO_VALUE
    ) -> tuple[np.ndarray, np.ndarray]: ...


def window_label(days: int) -> str:
    return "all" if days == 0 else f"{days}d"


def empty_answer(name: str) -> Candidates:
    return Candidates(NO_ITEMS, _NO_SCORES, name)


def check_budget(name: str, budget: int) -> None:
    if budget < 0:
        raise ValueError(f"{name}: budget must be >= 0, got {budget}")


# ---------------------------------------------------------------------------------------------
# Offline: counting
# ---------------------------------------------------------------------------------------------


class _ScopedCounter:
    """Sums over "scoped items": first every item in the global scope (row 0), then each
    (region, item) group that has events (row 1 + region). Built once per fit from one
    np.unique over (user, item) pair keys, so each window costs O(events + pairs)."""

    def __init__(self, data: TrainingData) -> None:
        n_items = len(data.items)
        pair_keys, self.event_pair = np.unique(
            data.event_users * n_items + data.event_items, return_inverse=True
        )
        self.n_items = n_items
        self.pair_item = pair_keys % n_items
        pair_region = data.user_region[pair_keys // n_items].astype(np.int64)
        regional = pair_region >= 0
        group_keys, group_of_pair = np.unique(
            pair_region[regional] * n_items + self.pair_item[regional], return_inverse=True
        )
        self.n_groups = len(group_keys)
        self.pair_group = np.full(len(pair_keys), -1, dtype=np.int64)
        self.pair_group[regional] = group_of_pair
        self.event_group = self.pair_group[self.event_pair]
        self.event_items = data.event_items
        self.row = np.concatenate([np.zeros(n_items, np.int64), group_keys // n_items + 1])
        self.item = np.concatenate([np.arange(n_items, dtype=np.int64), group_keys % n_items])

    def distinct_users(self, events: np.ndarray) -> np.ndarray:
        """Per scoped item: users with at least one of the `events` (a bool mask) on it."""
        seen = np.zeros(len(self.pair_item), dtype=bool)
        seen[self.event_pair[events]] = True
        pairs = np.flatnonzero(seen)
        return self._reduce(self.pair_item[pairs], self.pair_group[pairs], None)

    def event_sum(self, events: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Per scoped item: the number (or summed `weights`) of the `events` (a bool mask)."""
        chosen = np.flatnonzero(events)
        w = None if weights is None else weights[chosen]
        return self._reduce(self.event_items[chosen], self.event_group[chosen], w)

    def per_row(self, values: np.ndarray) -> np.ndarray:
        """Σ values per scope row (0: global, 1 + r: region r)."""
        return np.bincount(self.row, weights=values)

    def _reduce(self, item: np.ndarray, group: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        regional = group >= 0
        return np.concatenate(
            [
                np.bincount(item, weights=w, minlength=self.n_items),
                np.bincount(
                    group[regional],
                    weights=None if w is None else w[regional],
                    minlength=self.n_groups,
                ),
            ]
        ).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _window_counts(
    data: TrainingData, counter: _ScopedCounter, window: int
) -> dict[str, np.ndarray]:
    """The counts (COUNTS) every windowed metric is a function of, per scoped item, over the
    events of the last `window` days ("previous": impressions in the window before it)."""
    now, times = data.newest_time, data.event_times
    in_window = times > now - window * SECONDS_PER_DAY if window else np.ones(len(times), bool)
    is_view = data.event_types == EVENT_TYPES.index("view")
    is_purchase = data.event_types == EVENT_TYPES.index("purchase")
    previous = (times > now - 2 * window * SECONDS_PER_DAY) & ~in_window
    return {
        "impressions": counter.distinct_users(in_window),
        "clicks": counter.distinct_users(in_window & data.event_positive),
        "weighted_clicks": counter.event_sum(in_window & ~is_view, data.event_weights),
        "purchases": counter.event_sum(in_window & is_purchase),
        "weighted": counter.event_sum(in_window, data.event_weights),
        "previous": counter.distinct_users(previous) if window else np.zeros(len(counter.row)),
    }


def window_scores(
    counts: Mapping[str, np.ndarray],
    priors: dict[str, np.ndarray | float],
    config: TopsConfig,
    window: int,
    metrics: tuple[str, ...] = WINDOWED_METRICS,
) -> dict[str, np.ndarray]:
    """The windowed `metrics` from their counts (the definitions atop this module; `counts`
    needs only those the metrics read); no "trending" over all history. `priors`: each
    entry's pCTR prior p0 for "clicks" and "weighted_clicks", its scope's Σnum / Σimpr."""
    m = config.pctr_prior_strength

    def smoothed(num: str) -> np.ndarray:
        return _smoothed(counts[num], counts["impressions"], priors[num], m)

    formulas = {
        "clicks": lambda: counts["clicks"],
        "purchases": lambda: counts["purchases"],
        "ctr": lambda: _ratio(counts["clicks"], counts["impressions"]),
        "pctr": lambda: smoothed("clicks"),
        "wctr": lambda: _ratio(counts["weighted_clicks"], counts["impressions"]),
        "wpctr": lambda: smoothed("weighted_clicks"),
        "weighted": lambda: counts["weighted"],
        "trending": lambda: _trending(counts["impressions"], counts["previous"], config),
    }
    return {
        metric: formulas[metric]()
        for metric in metrics
        if window or metric != "trending"  # growth needs a previous window of equal length
    }


def _smoothed(
    num: np.ndarray, impressions: np.ndarray, prior: np.ndarray | float, m: float
) -> np.ndarray:
    """seed 004, "CTR, pCTR": (num + m * p0) / (impressions + m)."""
    smoothed = _ratio(num + m * prior, impressions + m)
    return np.where(impressions > 0, smoothed, 0.0)


def _trending(current: np.ndarray, previous: np.ndarray, config: TopsConfig) -> np.ndarray:
    """seed 004, "набирающие популярность": growth vs the previous window of equal length."""
    p = config.trending_prior
    growth = (current + p) / (previous + p)
    return np.where(current >= max(config.trending_min_count, 1), growth, 0.0)


# ---------------------------------------------------------------------------------------------
# Offline: ranking into flat lists
# ---------------------------------------------------------------------------------------------


@dataclass
class _ListBuilder:
    """Accumulates lists block by block; a block is one (metric, window) over its scopes."""

    n_categories: int
    n_regions: int
    depth: int
    cat_items: np.ndarray  # (item, category) membership pairs of the catalog
    cat_codes: np.ndarray
    keys: list[np.ndarray] = field(default_factory=list)  # (n_lists_in_block, 4) per block
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    n_lists: int = 0

    def add_block(
        self,
        metric: str,
        window: int,
        item_scores: np.ndarray,  # global score per item
        region_codes: np.ndarray | None = None,  # region index per regional entry
        region_items: np.ndarray | None = None,
        region_scores: np.ndarray | None = None,
    ) -> None:
        base, n_cat = self.n_lists, self.n_categories
        n_reg = 0 if region_codes is None else self.n_regions
        scopes = np.repeat([0, 1, 2], [1, n_cat, n_reg]).astype(np.int64)
        values = np.concatenate([[NO_VALUE], np.arange(n_cat), np.arange(n_reg)])
        metrics = np.full(len(scopes), METRICS.index(metric))
        windows = np.full(len(scopes), window)
        block_keys = np.column_stack([metrics, windows, scopes, values]).astype(np.int64)
        self.keys.append(block_keys)
        self.n_lists += len(block_keys)
        n_items = len(item_scores)
        lists = [np.full(n_items, base), base + 1 + self.cat_codes]
        items = [np.arange(n_items, dtype=np.int64), self.cat_items]
        scores = [item_scores, item_scores[self.cat_items]]
        if region_codes is not None:
            lists.append(base + 1 + n_cat + region_codes)
            items.append(region_items)
            scores.append(region_scores)
        self.parts.append(
            _rank(np.concatenate(lists), np.concatenate(items), np.concatenate(scores), self.depth)
        )

    def arrays(self) -> dict[str, np.ndarray]:
        list_of = np.concatenate([p[0] for p in self.parts])
        keys = np.concatenate(self.keys) if self.keys else np.empty((0, 4), np.int64)
        offsets = np.zeros(self.n_lists + 1, dtype=np.int64)
        np.cumsum(np.bincount(list_of, minlength=self.n_lists), out=offsets[1:])
        return {
            "ids": np.concatenate([p[1] for p in self.parts]).astype(np.int64),
            "scores": np.concatenate([p[2] for p in self.parts]).astype(np.float32),
            "offsets": offsets,
            "key_metric": keys[:, 0].astype(np.int8),
            "key_window": keys[:, 1].astype(np.int32),
            "key_scope": keys[:, 2].astype(np.int8),
            "key_value": keys[:, 3].astype(np.int32),
        }


def _rank(
    lists: np.ndarray, items: np.ndarray, scores: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries with score > 0 sorted by (list, -score, item), at most `depth` per list."""
    keep = scores > 0
    lists, items, scores = lists[keep], items[keep], scores[keep]
    order = np.lexsort((items, -scores, lists))
    lists, items, scores = lists[order], items[order], scores[order]
    starts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]])
    sizes = np.diff(np.r_[starts, len(lists)])
    rank = np.arange(len(lists)) - np.repeat(starts, sizes)
    top = rank < depth
    return lists[top], items[top], scores[top]


def _new_scores(data: TrainingData, new_days: int) -> np.ndarray:
    """seed 004, "новинки": share of new_days ahead of the item; 0 for older items."""
    span = new_days * SECONDS_PER_DAY
    ahead = (data.item_created - (data.newest_time - span)).astype(np.float64)
    return np.where(ahead > 0, ahead / span, 0.0)


def _validate(data: TrainingData, config: TopsConfig) -> None:
    if not np.isfinite(data.event_weights).all():
        raise ValueError("tops: event weights contain NaN or infinity")
    if config.trending_prior <= 0 and any(config.windows_days):
        raise ValueError(
            "tops.trending_prior must be > 0: it keeps (n_cur + p) / (n_prev + p) finite "
            "for items absent from the previous window"
        )


# ---------------------------------------------------------------------------------------------
# The model: flat lists + lookups
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TopsModel:
    """Every static top in flat arrays, with the lookups the generators slice them by."""

    ids: np.ndarray  # int64: every list's items, best first, list after list
    scores: np.ndarray  # float32, same length
    offsets: np.ndarray  # int64 (n_lists + 1,): list k is ids[offsets[k] : offsets[k + 1]]
    key_metric: np.ndarray  # int8 per list: index into METRICS
    key_window: np.ndarray  # int32 per list: days (0 = all history, NO_WINDOW for "new")
    key_scope: np.ndarray  # int8 per list: index into SCOPES
    key_value: np.ndarray  # int32 per list: category or region index, NO_VALUE when global
    item_category_indptr: np.ndarray  # int64 (n_items + 1,): categories of each item (CSR)
    item_category_indices: np.ndarray  # int32
    item_stats: np.ndarray  # float32 (n_stats, n_items): every global windowed metric, all items
    # float32 (n_windows, len(COUNTS), n_items): the global counts those metrics come from, so
    # that serving can move them with the events logged since (serving/live_tops.py); None in
    # bundles from before them
    item_counts: np.ndarray | None
    # the same per (region, item) with events, for the region lists: int64 keys
    # region * n_items + item, sorted, and float32 (n_windows, len(COUNTS), n_keys) counts
    region_keys: np.ndarray | None
    region_counts: np.ndarray | None
    windows_days: tuple[int, ...]
    category_names: tuple[str, ...]
    region_names: tuple[str, ...]
    user_categories: int  # categories of the user's history a by_category top answers from
    now: int  # Unix seconds the windows end at
    _lists: dict[tuple[int, int, int, int], int] = field(init=False, repr=False)
    _regions: dict[str, int] = field(init=False, repr=False)
    _specs: dict[str, tuple[str, int, str]] = field(init=False, repr=False)
    # what the generators answer from: None, these lists; in serving, the live tops that the
    # events logged since the bundle move (candidates/live_tops.py)
    _live: TopLists | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        n_lists = len(self.offsets) - 1
        if n_lists < 0 or self.offsets[-1] != len(self.ids) or len(self.ids) != len(self.scores):
            raise ValueError(
                f"tops: offsets end at {self.offsets[-1] if n_lists >= 0 else None} "
                f"but there are {len(self.ids)} ids and {len(self.scores)} scores"
            )
        key_columns = (self.key_metric, self.key_window, self.key_scope, self.key_value)
        if any(len(column) != n_lists for column in key_columns):
            raise ValueError(f"tops: key table rows differ from the {n_lists} lists")
        if (self.region_keys is None) != (self.region_counts is None) or (
            self.region_counts is not None
            and self.region_counts.shape[::2] != (len(self.windows_days), len(self.region_keys))
        ):
            raise ValueError("tops: region counts do not fit their keys and windows")
        for array in (*key_columns, self.ids, self.scores, self.offsets):
            array.flags.writeable = False  # runtime state is immutable
        keys = zip(*(column.tolist() for column in key_columns), strict=True)
        object.__setattr__(self, "_lists", {key: k for k, key in enumerate(keys)})
        object.__setattr__(self, "_regions", {r: k for k, r in enumerate(self.region_names)})
        object.__setattr__(self, "_specs", _name_specs(self.windows_days))

    # -- offline -------------------------------------------------------------------------------

    @classmethod
    def fit(cls, data: TrainingData, config: Config) -> TopsModel:
        """All lists from `config.tops`; event weights are R's (config [als.event_weights],
        already applied in `data.event_weights`)."""
        began = time.perf_counter()
        tops = config.tops
        _validate(data, tops)
        categories = data.item_categories.tocsr()
        categories.sort_indices()
        membership = categories.tocoo()
        builder = _ListBuilder(
            n_categories=len(data.category_names),
            n_regions=len(data.region_names),
            depth=tops.depth,
            cat_items=membership.row.astype(np.int64),
            cat_codes=membership.col.astype(np.int64),
        )
        counter = _ScopedCounter(data)
        n_items = len(data.items)
        is_item_row = counter.row == 0
        windows = tuple(dict.fromkeys(tops.windows_days))  # deduplicated, config order
        stats, counts, region_counts = [], [], []
        for window in windows:
            window_counts = _window_counts(data, counter, window)
            counts.append(np.stack([window_counts[name][:n_items] for name in COUNTS]))
            region_counts.append(np.stack([window_counts[name][n_items:] for name in COUNTS]))
            impressions = counter.per_row(window_counts["impressions"])
            priors = {  # each scope's own CTR: global, or the region's users'
                name: _ratio(counter.per_row(window_counts[name]), impressions)[counter.row]
                for name in PRIOR_COUNTS
            }
            scored = window_scores(window_counts, priors, tops, window)
            for metric, values in scored.items():
                stats.append(values[:n_items].astype(np.float32))
                builder.add_block(
                    metric,
                    window,
                    values[:n_items],
                    counter.row[~is_item_row] - 1,
                    counter.item[~is_item_row],
                    values[~is_item_row],
                )
        builder.add_block("new", NO_WINDOW, _new_scores(data, tops.new_days))
        model = cls(
            **builder.arrays(),
            item_category_indptr=categories.indptr.astype(np.int64),
            item_category_indices=categories.indices.astype(np.int32),
            item_stats=np.stack(stats) if stats else np.empty((0, n_items), np.float32),
            item_counts=(
                np.stack(counts).astype(np.float32)
                if counts
                else np.empty((0, len(COUNTS), n_items), np.float32)
            ),
            region_keys=(counter.row[~is_item_row] - 1) * n_items + counter.item[~is_item_row],
            region_counts=(
                np.stack(region_counts).astype(np.float32)
                if region_counts
                else np.empty((0, len(COUNTS), counter.n_groups), np.float32)
            ),
            windows_days=windows,
            category_names=tuple(data.category_names),
            region_names=tuple(data.region_names),
            user_categories=tops.user_categories,
            now=data.newest_time,
        )
        log.info(
            "tops: %d lists, %d entries in %.1f s",
            len(model.offsets) - 1,
            len(model.ids),
            time.perf_counter() - began,
        )
        return model

    # -- lookups -------------------------------------------------------------------------------

    def top(
        self, metric: str, window_days: int, scope: str = "global", value: int = NO_VALUE
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of one list, best first; empty if it was not built (e.g. no such
        category). `window_days` is ignored for "new"."""
        window = NO_WINDOW if metric == "new" else window_days
        k = self._lists.get((METRICS.index(metric), window, SCOPES.index(scope), value))
        if k is None:
            return NO_ITEMS, _NO_SCORES
        start, end = self.offsets[k], self.offsets[k + 1]
        return self.ids[start:end], self.scores[start:end]

    @property
    def live(self) -> TopLists | None:
        return self._live

    def serve_from(self, lists: TopLists) -> None:
        """Let the generators answer from `lists` (same lookups as `top`) from now on."""
        object.__setattr__(self, "_live", lists)

    def current_top(
        self, metric: str, window_days: int, scope: str = "global", value: int = NO_VALUE
    ) -> tuple[np.ndarray, np.ndarray]:
        """`top` as the generators see it: the live lists where serving attached them."""
        live = self._live
        return (live or self).top(metric, window_days, scope, value)

    def stat_names(self) -> tuple[str, ...]:
        """Names of the rows of `item_stats`: <metric>_<window>, in fit order."""
        return tuple(
            f"{metric}_{window_label(window)}"
            for window in self.windows_days
            for metric in WINDOWED_METRICS
            if window or metric != "trending"
        )

    def region_index(self, region: str) -> int:
        """Index of a region name, -1 if the training data had no user there."""
        return self._regions.get(region, -1)

    def region_code(self, region: str) -> int:
        """A request's region as a categorical code (the ranking features' sparse column):
        1 + its index, 0 for none or one the training data did not have."""
        return self.region_index(region) + 1 if region else 0

    def categories_of(self, items: np.ndarray) -> np.ndarray:
        """Category codes of `items`, concatenated (one per membership); unknown items skipped."""
        return self._memberships(items)[1]

    def in_category(self, items: np.ndarray, category: int) -> np.ndarray:
        """Per item of `items`: whether it belongs to `category` (False for unknown items)."""
        owners, codes = self._memberships(items)
        found = np.zeros(len(items), dtype=bool)
        found[owners[codes == category]] = True
        return found

    def _memberships(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in `items`, category code) per membership of the known items."""
        positions = np.flatnonzero((items >= 0) & (items < len(self.item_category_indptr) - 1))
        starts = self.item_category_indptr[items[positions]]
        sizes = self.item_category_indptr[items[positions] + 1] - starts
        codes = self.item_category_indices[run_positions(starts, sizes)]
        return np.repeat(positions, sizes), codes

    # -- runtime generators --------------------------------------------------------------------

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def generator(self, name: str) -> Generator:
        spec = self._specs.get(name)
        if spec is None:
            raise ValueError(
                f"unknown tops generator {name!r}; the grammar is "
                "top_<metric>_<window>[_by_category|_by_region] or top_new[_by_category], "
                f"built here: {', '.join(self.names())}"
            )
        metric, window, scope = spec
        if scope == "category":
            return CategoryTop(name, self, metric, window)
        if scope == "region":
            return RegionTop(name, self, metric, window)
        return GlobalTop(name, self, metric, window)

    def grown(self, new: NewItems) -> TopsModel:
        """New items with no categories and nothing counted before they joined: the lists
        stay, and the live tops count their events from then (candidates/live_tops.py).
        The region groups' keys (region * n_items + item) are renumbered for the larger
        catalogue, in the same order."""
        region_keys = self.region_keys
        if region_keys is not None:
            region_keys = region_keys // new.first * new.end + region_keys % new.first
        indptr = self.item_category_indptr
        return dataclasses.replace(
            self,
            item_category_indptr=np.concatenate([indptr, np.full(len(new), indptr[-1])]),
            item_stats=new.rows(self.item_stats, 0.0, axis=1),
            item_counts=None if self.item_counts is None else new.rows(self.item_counts, 0.0, 2),
            region_keys=region_keys,
        )

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        arrays = {name: getattr(self, name) for name in (*ARRAYS, *OPTIONAL_ARRAYS)}
        np.savez(directory / NPZ_FILE, **{k: v for k, v in arrays.items() if v is not None})
        meta = {
            "format": FORMAT_VERSION,
            "metrics": list(METRICS),
            "scopes": list(SCOPES),
            "windows_days": list(self.windows_days),
            "category_names": list(self.category_names),
            "region_names": list(self.region_names),
            "user_categories": self.user_categories,
            "now": self.now,
        }
        (directory / JSON_FILE).write_text(json.dumps(meta, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path) -> TopsModel:
        meta = json.loads((directory / JSON_FILE).read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("metrics") != list(METRICS):
            raise ValueError(
                f"{directory / JSON_FILE}: format {meta.get('format')} with metrics "
                f"{meta.get('metrics')}; this code reads format {FORMAT_VERSION}, {list(METRICS)}"
            )
        with np.load(directory / NPZ_FILE) as stored:
            missing = [name for name in ARRAYS if name not in stored.files]
            if missing:
                raise ValueError(f"{directory / NPZ_FILE}: missing arrays {missing}")
            arrays = {name: stored[name] for name in ARRAYS}
            optional = {name: stored.get(name) for name in OPTIONAL_ARRAYS}
        return cls(
            **arrays,
            **optional,
            windows_days=tuple(meta["windows_days"]),
            category_names=tuple(meta["category_names"]),
            region_names=tuple(meta["region_names"]),
            user_categories=int(meta["user_categories"]),
            now=int(meta["now"]),
        )


def _name_specs(windows_days: tuple[int, ...]) -> dict[str, tuple[str, int, str]]:
    """Generator name -> (metric, window, scope), for every list kind this model holds."""
    specs = {}
    for metric in WINDOWED_METRICS:
        for window in windows_days:
            if metric == "trending" and window == 0:
                continue  # growth needs a previous window of equal length
            for scope in SCOPES:
                specs[f"top_{metric}_{window_label(window)}{SCOPE_SUFFIX[scope]}"] = (
                    metric,
                    window,
                    scope,
                )
    specs["top_new"] = ("new", NO_WINDOW, "global")
    specs["top_new_by_category"] = ("new", NO_WINDOW, "category")
    return specs


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GlobalTop:
    """The same list for everyone: a slice of it."""

    name: str
    model: TopsModel
    metric: str
    window: int

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        check_budget(self.name, budget)
        ids, scores = self.model.current_top(self.metric, self.window)
        return Candidates(ids[:budget].copy(), scores[:budget].copy(), self.name)


@dataclass(frozen=True, eq=False)
class RegionTop:
    """The list of the request's region; nothing for a region unseen in training."""

    name: str
    model: TopsModel
    metric: str
    window: int

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        check_budget(self.name, budget)
        region = self.model.region_index(ctx.region)
        if region < 0:
            return empty_answer(self.name)
        ids, scores = self.model.current_top(self.metric, self.window, "region", region)
        return Candidates(ids[:budget].copy(), scores[:budget].copy(), self.name)


@dataclass(frozen=True, eq=False)
class CategoryTop:
    """The tops of the user's favourite categories (by share of the history, else of basket
    and favourites), the budget split between them in proportion to that share."""

    name: str
    model: TopsModel
    metric: str
    window: int

    def generate(self, ctx: RequestContext, budget: int) -> Candidates:
        check_budget(self.name, budget)
        seen = ctx.history if len(ctx.history) else np.concatenate([ctx.basket, ctx.favorites])
        categories, counts = np.unique(self.model.categories_of(seen), return_counts=True)
        if budget == 0 or len(categories) == 0:
            return empty_answer(self.name)
        chosen = np.lexsort((categories, -counts))[: self.model.user_categories]
        quotas = split_budget(budget, counts[chosen])
        ids, scores = [], []
        for category, quota in zip(categories[chosen].tolist(), quotas.tolist(), strict=True):
            top_ids, top_scores = self.model.current_top(
                self.metric, self.window, "category", category
            )
            ids.append(top_ids[:quota])
            scores.append(top_scores[:quota])
        ids, scores = best_per_item(np.concatenate(ids), np.concatenate(scores))
        return Candidates(ids[:budget], scores[:budget], self.name)


def split_budget(budget: int, weights: np.ndarray) -> np.ndarray:
    """`budget` split in proportion to `weights` (largest remainder; ties to the earlier)."""
    exact = budget * weights / weights.sum()
    quotas = np.floor(exact).astype(np.int64)
    short = budget - int(quotas.sum())
    quotas[np.argsort(quotas - exact, kind="stable")[:short]] += 1
    return quotas


def best_per_item(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item once with its best score, best first (ties by item index)."""
    best_first = np.lexsort((ids, -scores))
    ids, scores = ids[best_first], scores[best_first]
    keep = first_positions(ids)  # the best-ranked copy of each item
    return ids[keep].astype(np.int64), scores[keep].astype(np.float32)


register_component(
    Component(
        "tops",
        fit=lambda given: TopsModel.fit(given.data, given.config),
        load=lambda directory, config: TopsModel.load(directory),
        grow=lambda model, new: model.grown(new),
    )
)
# a family: top_<metric>_<window>[_<scope>], each name parsed (and refused) by the model
register_generator(
    "top_",
    lambda bundle, config, name: bundle.tops.generator(name),
    prefix=True,
    example="top_<metric>_<window> (e.g. top_clicks_7d)",
)
