"""Hands the events each serving process reads from the log to the live tops of the bundle
it serves (candidates/live_tops.py), and re-counts them into the next bundle's on a swap."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from candidates.live_tops import LiveTops
from recsys.config import Config
from recsys.interactions import event_weights, is_positive
from recsys.loaded_bundle import LoadedBundle
from serving.events import Event, events_frame


class TopsFeed:
    """`SessionStore`'s listener: called with every batch the log tail delivers (possibly
    none), under the store's lock, so batches arrive once and in log order."""

    def __init__(
        self, bundle_in_service: Callable[[], LoadedBundle | None], config: Config
    ) -> None:
        self.bundle_in_service = bundle_in_service
        self.config = config
        self.kept: deque[Event] = deque(maxlen=config.tops.live_events_kept)
        self._fed: LiveTops | None = None

    def __call__(self, events: Sequence[Event]) -> None:
        self.kept.extend(events)
        bundle = self.bundle_in_service()
        live = bundle.tops.live if bundle is not None else None
        if not isinstance(live, LiveTops):
            return
        if live is not self._fed:  # a new bundle: its nightly read the log up to its "now"
            self._fed = live
            events = [event for event in self.kept if event.timestamp > live.model.now]
        if events:
            count_into(live, bundle, events, self.config)


def count_into(
    live: LiveTops, bundle: LoadedBundle, events: Sequence[Event], config: Config
) -> None:
    """Events as the arrays `LiveTops.add` counts: the bundle's item indices, and each
    event's positivity and weight as the nightly would give them."""
    frame = events_frame(events)
    kinds = frame["event_type"].astype(str).to_numpy()
    live.add(
        users=frame["user_id"].astype(str).to_numpy(),
        items=bundle.items.to_index(frame["item_id"].astype(str).to_numpy()),
        positive=is_positive(frame, config),
        weights=event_weights(frame, config),
        is_view=kinds == "view",
        is_purchase=kinds == "purchase",
    )
