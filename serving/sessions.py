"""What users did since the bundle was built, from the event log, for their next requests.

Every server process keeps its own store and catches up with the shared log (all
processes' segments) before it answers, so an event acknowledged by one process is seen
by the next request in any process: the log is the single source of truth, and LogEvents
fsyncs before it acknowledges. A thread of each process follows the log while no request
does (`follow`): a worker idle during a flood of logged events does not leave the whole
backlog to its next request. `events.request_catch_up` can bound what a request applies
itself (a flood then answers in time with sessions that far; serving/grpc/server.py
counts such requests).

Items are kept as external ids so that a bundle swap (which renumbers items) changes
nothing here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from serving.events import Event, EventLogTail

NEVER_AGAIN = frozenset({"cart", "purchase", "rating"})  # not recommended again this session
MAX_USERS = 200_000  # least recently active users are forgotten past this (memory bound)
# events the follower applies per hold of the lock: ~30 ms with live tops counting them, the
# longest a request waits for it
FOLLOW_BATCH = 1000
FOLLOWER_YIELD_SECONDS = 0.0005  # how often a follower stepping aside looks again


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
        self._waiting = 0  # callers of catch_up waiting for or holding the lock
        self._last_take = time.monotonic()  # when events were last applied (by anyone)
        self._waiting_lock = threading.Lock()

    def catch_up(self, max_events: int = 0) -> int:
        """Apply what the log gained since the last call, at most `max_events` (0: all);
        returns how many log lines were taken (max_events: more may be waiting). A caller
        waiting here has the lock before the follower's next batch."""
        with self._waiting_lock:
            self._waiting += 1
        try:
            return self._take(max_events)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _take(self, max_events: int) -> int:
        with self._lock:
            self._last_take = time.monotonic()
            before = self.tail.skipped
            events = self.tail.read_new(max_events)
            for event in events:
                self._apply(event)
            if self.listener is not None:
                self.listener(events)
            return len(events) + self.tail.skipped - before

    def follow(
        self, stop: threading.Event, poll_seconds: float, batch: int = FOLLOW_BATCH
    ) -> threading.Thread:
        """A thread applying the log's new events, `batch` per hold of the lock, when nobody
        caught up in the last `poll_seconds`, until `stop` is set: a process idle while
        other workers log a flood keeps up with it, so its next request does not meet the
        whole backlog. While requests come, they catch up themselves and the thread stays
        out of their way (competing for the GIL made each slower: bench/bench_flood.py)."""

        def loop() -> None:
            while not stop.wait(poll_seconds):
                if time.monotonic() - self._last_take < poll_seconds:
                    continue  # requests are catching up themselves: no need to compete
                while self._take(batch) >= batch and not stop.is_set():
                    # a backlog: the next batch at once, but after any request waiting for
                    # the lock (a lock is not fair: re-taken at once, it could starve them)
                    while self._waiting and not stop.wait(FOLLOWER_YIELD_SECONDS):
                        pass

        thread = threading.Thread(target=loop, name="session-follower", daemon=True)
        thread.start()
        return thread

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
