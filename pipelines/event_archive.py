"""The event log's compacted past: the nightly retires segments into Parquet archives.

The log stays the system of record (every nightly trains on all of it), but a segment
need not stay a JSONL file forever. After a nightly, each segment that is

- closed: its writer will never append again (`serving.events.CLOSED_SUFFIX`), and
- folded: the current bundle's nightly read every byte of it (its manifest's offsets),

is copied into `<log_dir>/archive/<bundle version>.parquet` and deleted. What remains as
JSONL is what serving and the nearline worker still tail; what they start from (the folded
offsets) never lies in a retired segment's unread part, because there is none.

Crash safety: the archive's Parquet file is written first, then `<version>.json`, the
segments it holds and their sizes, each under a temporary name, fsynced and renamed. The
JSON is the commit: a reader counts a segment either from its archive (listed) or from its
JSONL (not listed), never both; a nightly killed before deleting the segments leaves them to
the next one to delete.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from recsys.dataset import EVENT_COLUMNS, normalize_events
from recsys.files import write_atomically
from serving.events import CLOSED_SUFFIX, SEGMENT_SUFFIX, EventLogTail, events_frame

ARCHIVE_DIR = "archive"

log = logging.getLogger(__name__)


def read_log(log_dir: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every event of the log, archived or not, as one events frame, and the offsets read up
    to (archived segments count as read whole)."""
    archived, frames = _archives(Path(log_dir))
    tail = EventLogTail(log_dir, archived)  # an archived segment still on disk: skipped
    frames.append(events_frame(tail.read_new()))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return normalize_events(frame), tail.offsets


def retire_segments(log_dir: str | Path, folded: dict[str, int], version: str) -> int:
    """Archive and delete the closed segments that `folded` (a bundle's offsets) covers
    whole; returns how many. Also deletes segments an earlier, interrupted run archived."""
    directory = Path(log_dir)
    archived, _ = _archives(directory)
    for name in archived:  # archived by a run that died before deleting them
        _delete_segment(directory, name)
    retiring = {}
    for marker in sorted(directory.glob(f"*{SEGMENT_SUFFIX}{CLOSED_SUFFIX}")):
        name = marker.name.removesuffix(CLOSED_SUFFIX)
        segment = directory / name
        if name in archived or not segment.exists():
            continue
        size = segment.stat().st_size
        if folded.get(name) == size:
            retiring[name] = size
    if not retiring:
        return 0
    tail = EventLogTail(directory, {})
    events = [e for name in retiring for e in tail.read_segment(directory / name, retiring[name])]
    frame = pd.DataFrame([asdict(e) for e in events], columns=list(EVENT_COLUMNS))
    target = directory / ARCHIVE_DIR
    target.mkdir(exist_ok=True)
    write_atomically(target / f"{version}.parquet", lambda f: frame.to_parquet(f, index=False))
    listing = json.dumps(retiring).encode()
    write_atomically(target / f"{version}.json", lambda f: f.write(listing))  # the commit
    for name in retiring:
        _delete_segment(directory, name)
    log.info(
        "event log: %d segments (%d events) archived as %s", len(retiring), len(frame), version
    )
    return len(retiring)


def _archives(directory: Path) -> tuple[dict[str, int], list[pd.DataFrame]]:
    """Segment name -> bytes for every committed archive, and their events."""
    archived: dict[str, int] = {}
    frames = []
    for listing in sorted((directory / ARCHIVE_DIR).glob("*.json")):
        archived.update(json.loads(listing.read_text()))
        frames.append(pd.read_parquet(listing.with_suffix(".parquet")))
    return archived, frames


def _delete_segment(directory: Path, name: str) -> None:
    for path in (directory / name, directory / (name + CLOSED_SUFFIX)):
        path.unlink(missing_ok=True)
