"""The durable event log behind LogEvents: validate, append with fsync, tail.

Layout: `<log_dir>/<start time>-<pid>-<random>.jsonl`, one segment per server process at a
time (a process never shares a file, so appends need no cross-process lock), a new
segment past `segment_bytes`. Each line is one event in the schema of `recsys.dataset`.
A batch is written with one `write` and then fsynced before LogEvents answers, so an
acknowledged event survives kill -9 (and power loss). A crash in the middle of a write
leaves at most one incomplete last line, which readers skip: only lines that end in a
newline count.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from recsys.config import EVENT_TYPES
from recsys.dataset import EVENT_COLUMNS, MAX_CLOCK_SKEW_SECONDS, normalize_events
from recsys.files import fsync_path
from serving.errors import RequestError, check_external_id

SEGMENT_SUFFIX = ".jsonl"
READ_BLOCK_BYTES = 1 << 18  # a batched reader reads the log this much at a time
# Beside a segment its writer will never append to again (rolled over, or the process shut
# down): only such a segment may be retired by the nightly (pipelines.event_archive). A
# segment whose writer was killed keeps no marker and is never retired (it is only read).
CLOSED_SUFFIX = ".closed"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    event_type: str
    value: float
    timestamp: int  # Unix seconds


def validate_events(
    events: Sequence[Event],
    max_batch: int,
    now: float | None = None,
    max_clock_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS,
) -> None:
    """Raise RequestError naming the first bad event and field; the batch is all or nothing."""
    if not events:
        raise RequestError("events is empty")
    if len(events) > max_batch:
        raise RequestError(f"events has {len(events)} events; at most {max_batch} per call")
    latest = (time.time() if now is None else now) + max_clock_skew_seconds
    for i, event in enumerate(events):
        for field_name in ("user_id", "item_id"):
            check_external_id(f"events[{i}].{field_name}", getattr(event, field_name))
        if event.event_type not in EVENT_TYPES:
            raise RequestError(
                f"events[{i}].event_type {event.event_type[:40]!r} unknown; "
                f"known: {', '.join(EVENT_TYPES)}"
            )
        if not math.isfinite(event.value):
            raise RequestError(f"events[{i}].value must be finite, got {event.value}")
        if not 0 < event.timestamp <= latest:
            raise RequestError(
                f"events[{i}].timestamp {event.timestamp} is not a Unix time in seconds "
                f"between 1970 and {max_clock_skew_seconds} s from now"
            )


class EventLog:
    """This process's append side of the log."""

    def __init__(self, directory: str | Path, segment_bytes: int) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: int | None = None
        self._name = ""
        self._size = 0

    def append(self, events: Sequence[Event]) -> None:
        """One write of the whole batch, then fsync: durable when this returns."""
        data = "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in events).encode()
        with self._lock:
            if self._file is None or self._size >= self.segment_bytes:
                self._open_segment()
            written = os.write(self._file, data)
            if written != len(data):  # a full disk: say so rather than ack a torn batch
                raise OSError(f"event log: wrote {written} of {len(data)} bytes")
            os.fsync(self._file)
            self._size += written

    def close(self) -> None:
        with self._lock:
            self._close_segment()

    def _open_segment(self) -> None:
        self._close_segment()
        name = f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(3)}{SEGMENT_SUFFIX}"
        self._file = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._name = name
        self._size = 0
        fsync_path(self.directory)  # the new file's name must be durable too

    def _close_segment(self) -> None:
        """Close the segment and say so (CLOSED_SUFFIX): nothing more will be appended."""
        if self._file is None:
            return
        os.close(self._file)
        self._file = None
        marker = os.open(self.directory / (self._name + CLOSED_SUFFIX), os.O_WRONLY | os.O_CREAT)
        os.close(marker)
        fsync_path(self.directory)


class EventLogTail:
    """Reads the complete lines appended to any segment (any process's) since last time.

    `offsets` (segment name -> bytes read) is where it stands: a reader that saves them
    (the nightly in its manifest, the nearline in its checkpoint) resumes from them with no
    event read twice or missed."""

    def __init__(self, directory: str | Path, offsets: dict[str, int] | None = None) -> None:
        self.directory = Path(directory)
        self._offsets: dict[str, int] = dict(offsets or {})
        self.skipped = 0  # complete lines that were not valid events

    @property
    def offsets(self) -> dict[str, int]:
        return dict(self._offsets)

    def read_new(self, max_events: int = 0) -> list[Event]:
        """The complete lines appended since the last call, segments in name order; at most
        `max_events` lines (0: all; a bad line counts, and is skipped), the offsets moved past
        exactly the lines taken, so that a reader cutting the stream into fixed batches cuts it
        the same way every time."""
        events: list[Event] = []
        taken = 0
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except FileNotFoundError:
            return events
        for entry in entries:
            if not entry.name.endswith(SEGMENT_SUFFIX):
                continue
            offset = self._offsets.get(entry.name, 0)
            try:
                if entry.stat().st_size <= offset:
                    continue
                with open(entry.path, "rb") as segment:
                    segment.seek(offset)
                    if max_events:  # read what the lines take, not the segment's rest
                        complete = _first_lines(segment, max_events - taken)
                    else:
                        chunk = segment.read()
                        complete = chunk[: chunk.rfind(b"\n") + 1]  # a partial line waits
            except FileNotFoundError:  # retired by the nightly since the listing: folded in
                continue
            taken += complete.count(b"\n")
            self._offsets[entry.name] = offset + len(complete)
            events += self._parse(complete, entry.name)
            if max_events and taken >= max_events:
                break
        return events

    def read_segment(self, path: Path, size: int) -> list[Event]:
        """The complete lines of one segment's first `size` bytes (whoever tails it)."""
        with open(path, "rb") as segment:
            chunk = segment.read(size)
        return self._parse(chunk[: chunk.rfind(b"\n") + 1], path.name)

    def _parse(self, chunk: bytes, segment: str) -> list[Event]:
        events = []
        for line in chunk.splitlines():
            try:
                events.append(Event(**json.loads(line)))
            except (ValueError, TypeError) as err:
                self.skipped += 1
                log.warning("event log %s: skipping a bad line: %s", segment, err)
        return events


def _first_lines(segment: BinaryIO, count: int) -> bytes:
    """Up to `count` complete lines from the segment's position, reading blocks only until
    they hold them: a reader taking a backlog in batches reads each byte about once, where
    reading the segment's whole rest per batch made a 64 MB backlog cost gigabytes."""
    data, end, found = b"", 0, 0
    while found < count:
        block = segment.read(READ_BLOCK_BYTES)
        if not block:
            break
        data += block
        while found < count:
            at = data.find(b"\n", end)
            if at < 0:
                break
            found, end = found + 1, at + 1
    return data[:end]


def events_frame(events: Sequence[Event]) -> pd.DataFrame:
    """Events as a frame in the schema and order of recsys.dataset."""
    frame = pd.DataFrame([asdict(e) for e in events], columns=list(EVENT_COLUMNS))
    return normalize_events(frame)
