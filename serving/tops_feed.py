"""Hands the events each serving process reads from the log to the live tops of the bundle
it serves (candidates/live_tops.py), and re-counts them into the next bundle's on a swap."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from candidates.live_tops import LiveTops
from recsys.config import EVENT_TYPES, Config
from recsys.interactions import positives_of_types, weights_of_types
from recsys.loaded_bundle import LoadedBundle
from serving.events import Event

log = logging.getLogger(__name__)


class TopsFeed:
    """`SessionStore`'s listener: called with every batch the log tail delivers (possibly
    none), under the store's lock, so batches arrive once and in log order."""

    def __init__(
        self, bundle_in_service: Callable[[], LoadedBundle | None], config: Config
    ) -> None:
        self.bundle_in_service = bundle_in_service
        self.config = config
        self.kept: deque[Event] = deque(maxlen=config.tops.live_events_kept)
        self.delivered = 0  # events handed to this feed so far
        self._fed: LiveTops | None = None
        self._failed: LiveTops | None = None  # the bundle whose counting failed, logged once
        # live tops counted ahead of their swap (`prime`), and `delivered` when they were
        self._primed: tuple[LiveTops, int] | None = None
        self._lock = threading.Lock()  # `prime` runs on another thread than the calls

    def __call__(self, events: Sequence[Event]) -> None:
        with self._lock:
            self.kept.extend(events)
            self.delivered += len(events)
            bundle = self.bundle_in_service()
            live = bundle.tops.live if bundle is not None else None
            if not isinstance(live, LiveTops):
                return
            if live is not self._fed:  # a new bundle: count what it has not
                self._fed, events = live, self._not_counted_in(live)
            if events:
                self._count(live, bundle, events)

    def prime(self, live: LiveTops, bundle: LoadedBundle) -> None:
        """Count the kept events into the live tops of a bundle about to be swapped in (a
        bundle grown by new items: serving/holder.py), on the caller's thread: the first
        request after the swap then counts only what arrived since, not the whole day."""
        with self._lock:
            events, delivered = self._after_bundle(live), self.delivered
        self._count(live, bundle, events)  # requests go on counting into the bundle in service
        with self._lock:
            self._primed = (live, delivered)

    def _not_counted_in(self, live: LiveTops) -> list[Event]:
        """What a bundle's live tops have not counted yet: the events since `prime` counted
        them, or those after the bundle's "now" (its nightly read the log up to there)."""
        primed, self._primed = self._primed, None
        if primed is None or primed[0] is not live:
            return self._after_bundle(live)
        since = min(self.delivered - primed[1], len(self.kept))
        return list(self.kept)[len(self.kept) - since :]

    def _after_bundle(self, live: LiveTops) -> list[Event]:
        """The kept events after the bundle's "now" (its nightly read the log up to there)."""
        return [event for event in self.kept if event.timestamp > live.model.now]

    def _count(self, live: LiveTops, bundle: LoadedBundle, events: Sequence[Event]) -> None:
        if not events:
            return
        try:
            count_into(live, bundle, events, self.config)
        except Exception:  # live tops are a refinement: never fail the request catching up
            if live is not self._failed:  # once per bundle, not per request
                self._failed = live
                log.exception("live tops: could not count %d events; the lists stay", len(events))


def count_into(
    live: LiveTops, bundle: LoadedBundle, events: Sequence[Event], config: Config
) -> None:
    """Events as the arrays `LiveTops.add` counts: the bundle's item indices, and each
    event's positivity and weight as the nightly gives them. Plain arrays, no data frame: a
    request that catches up with a few events pays microseconds, not milliseconds."""
    codes = np.array([EVENT_TYPES.index(e.event_type) for e in events], dtype=np.int64)
    values = np.array([e.value for e in events], dtype=np.float64)
    region_of, region_index = bundle.profiles.region_of, live.model.region_index
    live.add(
        users=np.array([e.user_id for e in events], dtype=object),
        items=np.array([bundle.items.index_of(e.item_id) for e in events], dtype=np.int64),
        positive=positives_of_types(codes, values, config),
        weights=weights_of_types(codes, values, config),
        is_view=codes == EVENT_TYPES.index("view"),
        is_purchase=codes == EVENT_TYPES.index("purchase"),
        regions=np.array([region_index(region_of(e.user_id)) for e in events], dtype=np.int64),
    )
