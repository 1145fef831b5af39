"""What offline fitting sees (`TrainingData`), each event's weight in it, and the per-user
recent items read from it."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.config import EVENT_TYPES, Config
from recsys.ids import IdMap

log = logging.getLogger(__name__)

# TrainingData.newest_time: a tail of at most this share of the events, lying more than the
# gap beyond the rest, is not the data's "now"
OUTLIER_SHARE = 1e-3
OUTLIER_GAP_SECONDS = 7 * 86400


def event_weights(events: pd.DataFrame, config: Config) -> np.ndarray:
    """Each event's contribution to R (config [als.event_weights]); weak ratings count less."""
    return weights_of_types(_type_codes(events), events["value"].to_numpy(), config)


def is_positive(events: pd.DataFrame, config: Config) -> np.ndarray:
    """Events that count as relevant in evaluation (config [data].positive_events)."""
    return positives_of_types(_type_codes(events), events["value"].to_numpy(), config)


def weights_of_types(codes: np.ndarray, values: np.ndarray, config: Config) -> np.ndarray:
    """`event_weights` over arrays: each event's type (an index into EVENT_TYPES) and value."""
    by_type = np.array(
        [getattr(config.als.event_weights, t) for t in EVENT_TYPES], dtype=np.float32
    )
    weights = by_type[codes]
    is_weak_rating = (codes == EVENT_TYPES.index("rating")) & (values < config.data.positive_rating)
    weights[is_weak_rating] = config.als.negative_rating_weight
    return weights


def positives_of_types(codes: np.ndarray, values: np.ndarray, config: Config) -> np.ndarray:
    """`is_positive` over arrays: each event's type (an index into EVENT_TYPES) and value."""
    positive = np.isin(codes, [EVENT_TYPES.index(t) for t in config.data.positive_events])
    is_rating = codes == EVENT_TYPES.index("rating")
    return positive & (~is_rating | (values >= config.data.positive_rating))


def _type_codes(events: pd.DataFrame) -> np.ndarray:
    """Event types as indices into EVENT_TYPES (the categories recsys.dataset gives them)."""
    kinds = events["event_type"]
    if list(kinds.cat.categories) != list(EVENT_TYPES):
        raise ValueError(f"event types {list(kinds.cat.categories)}, expected {EVENT_TYPES}")
    return kinds.cat.codes.to_numpy()


@dataclass(frozen=True)
class TrainingData:
    """What offline fitting sees: id maps, the weighted user x item matrix, event arrays,
    and the catalog and user attributes generators need (categories, freshness, regions).

    Events are in time order. Item-side arrays are indexed like `items`, user-side like
    `users`; category and region codes index `category_names` / `region_names`.
    """

    users: IdMap
    items: IdMap
    interactions: sp.csr_matrix  # float32 (n_users, n_items): R in seed 004 "ALS"
    event_users: np.ndarray  # int64 per event
    event_items: np.ndarray  # int64 per event
    event_weights: np.ndarray  # float32 per event, the event's contribution to R
    event_times: np.ndarray  # int64 Unix seconds per event
    event_types: np.ndarray  # int8 per event: index into recsys.config.EVENT_TYPES
    event_positive: np.ndarray  # bool per event: counts as a positive (config [data])
    item_categories: sp.csr_matrix  # bool (n_items, n_categories)
    category_names: tuple[str, ...]
    item_created: np.ndarray  # int64 Unix seconds per item
    item_price: np.ndarray  # float32 per item
    item_text: np.ndarray  # object (str) per item: the catalog title, "" if none
    user_region: np.ndarray  # int32 per user: index into region_names, -1 if unknown
    region_names: tuple[str, ...]

    @functools.cached_property
    def newest_time(self) -> int:
        """The data's "now", where windows (tops, trends, ages) end: the newest event,
        unless a thin tail of events lies far beyond the rest (one event stamped today in a
        1998 log, a clock gone wrong). Then the newest event within OUTLIER_GAP_SECONDS of
        the 99.9th percentile: one stray event must not empty every windowed top."""
        if not len(self.event_times):
            return 0
        times = np.sort(self.event_times)
        bulk = times[int(np.ceil((1 - OUTLIER_SHARE) * len(times))) - 1]
        now = int(times[np.searchsorted(times, bulk + OUTLIER_GAP_SECONDS, side="right") - 1])
        if now < times[-1]:
            ahead = int(np.count_nonzero(times > now))
            log.warning(
                "%d events lie more than %d days beyond the rest of the data (newest %s); "
                "windows end at %s instead",
                ahead,
                OUTLIER_GAP_SECONDS // 86400,
                _utc(int(times[-1])),
                _utc(now),
            )
        return now


def recent_positives(data: TrainingData, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last `limit` distinct positive items, most recent first, as CSR arrays
    (indptr over data.users, item indices). Vectorised: one sort, no loop over users."""
    return recent_items(data, limit, data.event_positive)[:2]


def recent_items(
    data: TrainingData, limit: int, counted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's last `limit` distinct items among the `counted` events (bool per event;
    None: every event), most recent first, as CSR arrays like `recent_positives`, with the
    time of each item's latest event (int64, aligned with the items)."""
    counted = np.ones(len(data.event_items), bool) if counted is None else counted
    chosen = np.flatnonzero(counted)[::-1]  # newest first (events are in time order)
    users, items = data.event_users[chosen], data.event_items[chosen]
    times = data.event_times[chosen]
    # first occurrence of a (user, item) pair in newest-first order = its latest positive
    _, first = np.unique(users * len(data.items) + items, return_index=True)
    first.sort()  # back to newest-first order
    users, items, times = users[first], items[first], times[first]
    order = np.argsort(users, kind="stable")  # by user, newest first within a user
    users, items, times = users[order], items[order], times[order]
    starts = np.searchsorted(users, np.arange(len(data.users) + 1))
    rank = np.arange(len(users)) - starts[users]
    keep = rank < limit
    counts = np.bincount(users[keep], minlength=len(data.users))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, items[keep].astype(np.int64), times[keep].astype(np.int64)


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
