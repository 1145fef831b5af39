"""What users did since the bundle was built, from the event log, for their next requests.

Every server process keeps its own store and catches up with the shared log (all
processes' segments) before it answers, so an event acknowledged by one process is seen
by the next request in any process: the log is the single source of truth, and LogEvents
fsyncs before it acknowledges.

Items are kept as external ids so that a bundle swap (which renumbers items) changes
nothing here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from serving.events import Event, EventLogTail

NEVER_AGAIN = frozenset({"cart", "purchase", "rating"})  # not recommended again this session
MAX_USERS = 200_000  # least recently active users are forgotten past this (memory bound)


@dataclass(frozen=True)
class Session:
    recent: tuple[str, ...]  # item ids, most recently logged first: i2i seeds
    never_again: tuple[str, ...]  # item ids not to recommend in this session
    # Unix seconds of each recent item's latest event (the session models cut the user's
    # latest session at gaps longer than sessions.timeout_seconds); () where not known
    times: tuple[int, ...] = ()


class SessionStore:
    def __init__(
        self,
        tail: EventLogTail,
        items_per_user: int,
        exclude_viewed: bool,
        max_users: int = MAX_USERS,
        listener: Callable[[list[Event]], None] | None = None,
    ) -> None:
        """`listener`: called with every batch the tail delivers (possibly empty), under
        this store's lock: each batch once, in log order (serving/tops_feed.py)."""
        self.tail = tail
        self.listener = listener
        self.items_per_user = items_per_user
        self.exclude_viewed = exclude_viewed
        self.max_users = max_users
        # user -> item -> ("never again" flag, latest event time), both least recent first
        self._users: OrderedDict[str, OrderedDict[str, tuple[bool, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def catch_up(self) -> int:
        """Apply whatever the log gained since the last call; returns the number of events."""
        with self._lock:
            events = self.tail.read_new()
            for event in events:
                self._apply(event)
            if self.listener is not None:
                self.listener(events)
            return len(events)

    def session_of(self, user_id: str) -> Session | None:
        with self._lock:
            items = self._users.get(user_id)
            if not items:
                return None
            recent = tuple(reversed(items))
            never = tuple(item for item in recent if items[item][0])
            times = tuple(items[item][1] for item in recent)
            return Session(recent=recent, never_again=never, times=times)

    def __len__(self) -> int:
        return len(self._users)

    def _apply(self, event: Event) -> None:
        items = self._users.get(event.user_id)
        if items is None:
            items = self._users[event.user_id] = OrderedDict()
        self._users.move_to_end(event.user_id)
        never = self.exclude_viewed or event.event_type in NEVER_AGAIN
        was_never, last = items.get(event.item_id, (False, event.timestamp))
        items[event.item_id] = (was_never or never, max(last, event.timestamp))
        items.move_to_end(event.item_id)
        while len(items) > self.items_per_user:
            items.popitem(last=False)
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)
