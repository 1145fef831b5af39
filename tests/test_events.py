"""The event log: all-or-nothing validation, durable appends, tails that see every process."""

from __future__ import annotations

import threading
import time

import pytest

import serving.events as events_module
from serving.errors import RequestError
from serving.events import Event, EventLog, EventLogTail, validate_events
from serving.sessions import SessionStore
from tests.frames import logged_events

NOW = 1_700_000_000


def event(user="u1", item="i1", kind="view", value=1.0, ts=NOW) -> Event:
    return Event(user, item, kind, value, ts)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (event(user=""), r"events\[1\]\.user_id must not be empty"),
        (event(item=""), r"events\[1\]\.item_id must not be empty"),
        (event(kind="like"), r"events\[1\]\.event_type 'like' unknown"),
        (event(value=float("nan")), r"events\[1\]\.value must be finite"),
        (event(ts=0), r"events\[1\]\.timestamp 0"),
        (event(ts=NOW * 1000), r"events\[1\]\.timestamp"),  # milliseconds by mistake
        (event(item="a\x00b"), r"events\[1\]\.item_id must be printable"),
        (event(user="u" * 300), r"events\[1\]\.user_id must be printable and at most 256"),
    ],
)
def test_a_bad_event_is_named(bad: Event, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        validate_events([event(), bad], max_batch=10, now=NOW)


def test_empty_and_oversized_batches_are_refused() -> None:
    with pytest.raises(RequestError, match="events is empty"):
        validate_events([], max_batch=10, now=NOW)
    with pytest.raises(RequestError, match="at most 2 per call"):
        validate_events([event()] * 3, max_batch=2, now=NOW)
    validate_events([event(user="Ωμέγα-☃")], max_batch=2, now=NOW)  # unicode ids are fine


def test_appended_events_are_read_back_in_order(tmp_path) -> None:
    log = EventLog(tmp_path, segment_bytes=1 << 20)
    log.append([event(item="a"), event(item="b", kind="cart")])
    log.append([event(user="u2", item="c", kind="rating", value=4.5)])
    frame = logged_events(tmp_path)
    assert frame["item_id"].tolist() == ["a", "b", "c"]
    assert frame["event_type"].astype(str).tolist() == ["view", "cart", "rating"]
    assert frame["value"].tolist() == [1.0, 1.0, 4.5]


def test_segments_roll_over_and_the_tail_reads_each_line_once(tmp_path) -> None:
    log = EventLog(tmp_path, segment_bytes=10)  # every append opens a new segment
    tail = EventLogTail(tmp_path)
    log.append([event(item="a")])
    assert [e.item_id for e in tail.read_new()] == ["a"]
    log.append([event(item="b")])
    log.append([event(item="c")])
    assert [e.item_id for e in tail.read_new()] == ["b", "c"]
    assert tail.read_new() == []
    assert len(list(tmp_path.glob("*.jsonl"))) == 3


def test_a_tail_in_fixed_batches_resumes_from_its_offsets(tmp_path) -> None:
    """The nearline worker's way of reading: batches of at most n lines, across segments,
    and a new tail given the offsets of an old one goes on where it stopped."""
    log = EventLog(tmp_path, segment_bytes=60)  # a few events per segment
    for name in "abcdefgh":
        log.append([event(item=name)])
    tail = EventLogTail(tmp_path)
    assert [e.item_id for e in tail.read_new(max_events=3)] == ["a", "b", "c"]
    resumed = EventLogTail(tmp_path, tail.offsets)  # what a checkpoint holds
    assert [e.item_id for e in resumed.read_new(max_events=3)] == ["d", "e", "f"]
    assert [e.item_id for e in resumed.read_new()] == ["g", "h"]
    assert [e.item_id for e in tail.read_new()] == ["d", "e", "f", "g", "h"]  # its own copy
    assert resumed.read_new(max_events=3) == []


def test_batches_read_across_block_boundaries_and_leave_a_partial_line(tmp_path, monkeypatch):
    """A batched reader reads blocks until it holds its lines (here 7 bytes at a time, lines
    of ~100): the same batches as reading everything, a half-written line left waiting."""
    monkeypatch.setattr(events_module, "READ_BLOCK_BYTES", 7)
    EventLog(tmp_path, segment_bytes=1 << 20).append([event(item=str(i)) for i in range(10)])
    with open(next(tmp_path.glob("*.jsonl")), "ab") as f:
        f.write(b'{"user_id": "u1", "item_id": "hal')
    tail = EventLogTail(tmp_path)
    batches = [[e.item_id for e in tail.read_new(max_events=4)] for _ in range(4)]
    assert batches == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"], []]
    segment = next(tmp_path.glob("*.jsonl"))
    assert tail.offsets[segment.name] == segment.read_bytes().rfind(b"\n") + 1


def test_an_incomplete_last_line_waits_and_a_garbled_line_is_skipped(tmp_path) -> None:
    """What a kill in the middle of a write leaves behind never becomes an event."""
    EventLog(tmp_path, segment_bytes=1 << 20).append([event(item="a")])
    segment = next(tmp_path.glob("*.jsonl"))
    with open(segment, "ab") as f:
        f.write(b'{"user_id": "u1", "item_id": "half')
    tail = EventLogTail(tmp_path)
    assert [e.item_id for e in tail.read_new()] == ["a"]
    with open(segment, "ab") as f:
        f.write(b"\nnot json at all\n")
    assert tail.read_new() == []
    assert tail.skipped == 2


def test_sessions_see_events_of_another_process_log(tmp_path) -> None:
    """Two writers (two server processes) and one reader: the reader sees both, in order."""
    first, second = EventLog(tmp_path, 1 << 20), EventLog(tmp_path, 1 << 20)
    store = SessionStore(EventLogTail(tmp_path), items_per_user=3, exclude_viewed=False)
    first.append([event(item="a"), event(item="b", kind="purchase")])
    second.append([event(item="c"), event(item="d", kind="cart"), event(user="u2", item="x")])
    assert store.catch_up() == 5
    session = store.session_of("u1")
    assert session.recent == ("d", "c", "b")  # the oldest, "a", fell out (3 per user)
    assert session.never_again == ("d", "b")
    assert store.session_of("nobody") is None


def test_a_flood_is_taken_in_bounded_catch_ups_and_the_follower_each_event_once(tmp_path):
    """A request applies at most its share of a backlog; while no request comes, the
    follower thread applies the rest; together they hand the listener (live tops) every
    event once, in log order, and the sessions end as one full catch-up leaves them."""
    log = EventLog(tmp_path, segment_bytes=1 << 16)  # the flood spans several segments
    flood = [event(user=f"u{i % 50}", item=f"i{i}", ts=NOW + i) for i in range(8000)]
    for start in range(0, 5000, 1000):
        log.append(flood[start : start + 1000])
    heard: list[str] = []
    store = SessionStore(
        EventLogTail(tmp_path), 5, False, listener=lambda got: heard.extend(e.item_id for e in got)
    )
    assert store.catch_up(100) == 100  # a request meeting the flood: its share, no more
    assert heard == [f"i{i}" for i in range(100)]
    stop = threading.Event()
    follower = store.follow(stop, poll_seconds=0.01, batch=700)
    deadline = time.monotonic() + 30
    while len(heard) < 5000:  # no request comes: the follower takes the backlog
        assert time.monotonic() < deadline, f"the follower applied {len(heard)} of 5000"
        stop.wait(0.005)
    for start in range(5000, 8000, 1000):
        log.append(flood[start : start + 1000])
    while len(heard) < len(flood):  # requests again, beside the follower
        store.catch_up(100)
    stop.set()
    follower.join(5)
    assert not follower.is_alive()
    assert heard == [e.item_id for e in flood]
    reference = SessionStore(EventLogTail(tmp_path), 5, False)
    reference.catch_up()
    for user in ("u0", "u7", "u49"):
        assert store.session_of(user) == reference.session_of(user)
    assert store.catch_up(100) == 0


def test_a_viewed_item_seen_again_moves_to_the_front_and_keeps_its_flag(tmp_path) -> None:
    log = EventLog(tmp_path, 1 << 20)
    store = SessionStore(EventLogTail(tmp_path), items_per_user=10, exclude_viewed=False)
    log.append(
        [
            event(item="a", kind="purchase", ts=NOW),
            event(item="b", ts=NOW + 5),
            event(item="a", ts=NOW + 9),
        ]
    )
    store.catch_up()
    assert store.session_of("u1").recent == ("a", "b")
    assert store.session_of("u1").never_again == ("a",)
    assert store.session_of("u1").times == (NOW + 9, NOW + 5)  # each item's latest event


def test_exclude_viewed_keeps_every_session_item_out(tmp_path) -> None:
    log = EventLog(tmp_path, 1 << 20)
    store = SessionStore(EventLogTail(tmp_path), items_per_user=10, exclude_viewed=True)
    log.append([event(item="a"), event(item="b", kind="click")])
    store.catch_up()
    assert store.session_of("u1").never_again == ("b", "a")


def test_least_recent_users_are_forgotten_past_the_cap(tmp_path) -> None:
    log = EventLog(tmp_path, 1 << 20)
    store = SessionStore(EventLogTail(tmp_path), 10, False, max_users=2)
    log.append([event(user="u1"), event(user="u2"), event(user="u3")])
    store.catch_up()
    assert len(store) == 2 and store.session_of("u1") is None
