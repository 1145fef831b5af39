"""The nearline worker's journal: the vectors it solved and what it has read, per bundle.

seed 004, "ALS": "Пользовательские эмбеды кладем в какой-нибудь key-value storage, в рантайме
забираем из него эмбед пользователя". This is the embedded store: files under the artifacts
root that every serving process on the machine reads (`JournalReader`); `serving.vector_redis`
is the one for several machines.

Layout: `<artifacts root>/nearline/<bundle version>/<seq>.<kind>.npz`, `seq` counting up from 1:
- "delta": one micro-batch: the vectors it changed, the R entries its events added, and where
  the worker stood after it (log offsets, pending item counts, events applied);
- "snapshot": the same for everything since the bundle, written every `snapshot_every`
  batches; the files before it are then deleted.
A file is written under a temporary name, fsynced and renamed: a reader sees it whole or not
at all. The log offsets sit in the file with the vectors they produced, so a worker killed at
any moment resumes from its last file with no event lost or applied twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.files import write_atomically

JOURNAL_DIR = "nearline"
FILE_NAME = re.compile(r"^(\d{12})\.(delta|snapshot)\.npz$")
VECTOR_KINDS = ("user", "item")

log = logging.getLogger(__name__)


class JournalError(RuntimeError):
    """A journal file that does not read (damaged on disk); `number` is its sequence number."""

    def __init__(self, path: Path, number: int, reason: str) -> None:
        super().__init__(f"{path}: unreadable nearline journal file: {reason}")
        self.path, self.number = path, number


def journal_directory(root: str | Path, version: str) -> Path:
    return Path(root) / JOURNAL_DIR / version


@dataclass
class JournalBatch:
    """What one micro-batch (or a snapshot: everything so far) writes."""

    user_ids: np.ndarray  # str
    user_vectors: np.ndarray  # float32 (n, f)
    item_ids: np.ndarray
    item_vectors: np.ndarray
    event_users: np.ndarray  # str per R entry added
    event_items: np.ndarray  # str
    event_weights: np.ndarray  # float32
    offsets: dict[str, int] = field(default_factory=dict)  # event log position after it
    pending: dict[str, int] = field(default_factory=dict)  # item id -> events since its step
    events: int = 0  # events applied since the bundle, this batch included


@dataclass
class JournalState:
    """Everything the journal holds, merged: the newest vector of each id, every R entry."""

    users: dict[str, np.ndarray] = field(default_factory=dict)
    items: dict[str, np.ndarray] = field(default_factory=dict)
    event_users: list[np.ndarray] = field(default_factory=list)
    event_items: list[np.ndarray] = field(default_factory=list)
    event_weights: list[np.ndarray] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    events: int = 0
    seq: int = 0

    def apply(self, batch: JournalBatch, seq: int, snapshot: bool) -> None:
        if snapshot:  # everything so far: what came before it is in it
            self.event_users, self.event_items, self.event_weights = [], [], []
        self.users.update(zip(batch.user_ids.tolist(), batch.user_vectors, strict=True))
        self.items.update(zip(batch.item_ids.tolist(), batch.item_vectors, strict=True))
        self.event_users.append(batch.event_users)
        self.event_items.append(batch.event_items)
        self.event_weights.append(batch.event_weights)
        self.offsets, self.pending, self.events = batch.offsets, batch.pending, batch.events
        self.seq = seq

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every R entry held, as (user ids, item ids, weights) in the order applied."""
        return (
            _concat(self.event_users, str),
            _concat(self.event_items, str),
            _concat(self.event_weights, np.float32),
        )

    def as_snapshot(self) -> JournalBatch:
        def stacked(vectors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            ids = np.array(list(vectors), dtype=str)
            width = len(next(iter(vectors.values()))) if vectors else 0
            values = np.array(list(vectors.values()), np.float32).reshape(len(ids), width)
            return ids, values

        user_ids, user_vectors = stacked(self.users)
        item_ids, item_vectors = stacked(self.items)
        return JournalBatch(
            user_ids,
            user_vectors,
            item_ids,
            item_vectors,
            *self.entries(),
            self.offsets,
            self.pending,
            self.events,
        )


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype)


class JournalWriter:
    """The one writer of a bundle's journal (the nearline worker holds the lock)."""

    def __init__(self, root: str | Path, version: str, snapshot_every: int = 100) -> None:
        self.directory = journal_directory(root, version)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.snapshot_every = snapshot_every
        self.state = self._recovered()

    def _recovered(self) -> JournalState:
        """The journal up to its first unreadable file, if any: that file and every later
        one are moved aside (`.corrupt-<name>`), so the worker resumes from the last good
        file and reads the log again from its offsets (nothing lost, nothing twice). New
        files are numbered after every file seen, so readers pick them up."""
        try:
            return read_journal(self.directory)
        except JournalError as err:
            log.error("%s; resuming from the file before it", err)
            highest = 0
            for path, (number, _) in _files(self.directory):
                highest = max(highest, number)
                if number >= err.number:
                    path.rename(path.with_name(f".corrupt-{path.name}"))
            state = read_journal(self.directory)
            state.seq = max(state.seq, highest)
            return state

    def append(self, batch: JournalBatch) -> int:
        """Write one batch durably; every `snapshot_every` batches fold the journal into a
        snapshot and delete what it replaces. Returns the batch's sequence number."""
        seq = self.state.seq + 1
        _write(self.directory, seq, "delta", batch)
        self.state.apply(batch, seq, snapshot=False)
        if seq % self.snapshot_every == 0:
            seq += 1
            _write(self.directory, seq, "snapshot", self.state.as_snapshot())
            self.state.seq = seq
            for path, (number, _) in _files(self.directory):
                if number < seq:
                    path.unlink(missing_ok=True)
        return self.state.seq


def read_journal(
    directory: Path, after: int = 0, vectors_only: bool = False, skip_bad: bool = False
) -> JournalState:
    """What the files after number `after` add: from the newest snapshot among them (unless
    it directly follows `after`: then it holds nothing new) and the deltas after it.
    `vectors_only` skips the R entries (serving needs only vectors). An unreadable file is a
    JournalError, or with `skip_bad` (serving) logged and passed over."""
    state = JournalState(seq=after)
    files = [(path, number, kind) for path, (number, kind) in _files(directory) if number > after]
    snapshots = [i for i, (_, number, kind) in enumerate(files) if kind == "snapshot"]
    if snapshots:
        files = files[snapshots[-1] :]
        if files[0][1] == after + 1 and after > 0:
            state.seq = files[0][1]
            files = files[1:]
    for path, number, kind in files:
        try:
            batch = _read(path, vectors_only)
        except FileNotFoundError:  # replaced by a snapshot while we listed: read again
            return read_journal(directory, after, vectors_only, skip_bad)
        except Exception as err:  # whatever a damaged file raises (zip, npy, JSON)
            bad = JournalError(path, number, f"{type(err).__name__}: {err}")
            if not skip_bad:
                raise bad from None
            log.warning("%s; skipped", bad)
            state.seq = number
            continue
        state.apply(batch, number, snapshot=kind == "snapshot")
    return state


def _files(directory: Path) -> list[tuple[Path, tuple[int, str]]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = FILE_NAME.match(name)
        if match:
            found.append((directory / name, (int(match[1]), match[2])))
    return sorted(found, key=lambda entry: entry[1][0])


def _write(directory: Path, seq: int, kind: str, batch: JournalBatch) -> None:
    meta = {"offsets": batch.offsets, "pending": batch.pending, "events": batch.events}
    write_atomically(
        directory / f"{seq:012d}.{kind}.npz",
        lambda out: np.savez(
            out,
            user_ids=batch.user_ids.astype(str),
            user_vectors=batch.user_vectors.astype(np.float32),
            item_ids=batch.item_ids.astype(str),
            item_vectors=batch.item_vectors.astype(np.float32),
            event_users=batch.event_users.astype(str),
            event_items=batch.event_items.astype(str),
            event_weights=batch.event_weights.astype(np.float32),
            meta=np.array(json.dumps(meta)),
        ),
    )


def _read(path: Path, vectors_only: bool = False) -> JournalBatch:
    with np.load(path, allow_pickle=False) as data:  # an npz reads each array on demand
        meta = json.loads(str(data["meta"]))

        def entries(name: str, dtype: type) -> np.ndarray:
            return np.empty(0, dtype) if vectors_only else data[name]

        return JournalBatch(
            data["user_ids"],
            data["user_vectors"],
            data["item_ids"],
            data["item_vectors"],
            entries("event_users", str),
            entries("event_items", str),
            entries("event_weights", np.float32),
            {str(k): int(v) for k, v in meta["offsets"].items()},
            {str(k): int(v) for k, v in meta["pending"].items()},
            int(meta["events"]),
        )


class JournalReader:
    """A serving process's view of the journal of its bundle: looks for new files at most
    every `refresh_seconds`, on the request path, without blocking a request on another's
    refresh."""

    def __init__(self, root: str | Path, version: str, refresh_seconds: float = 0.05) -> None:
        self.directory = journal_directory(root, version)
        self.refresh_seconds = refresh_seconds
        self._users: dict[str, np.ndarray] = {}
        self._items: dict[str, np.ndarray] = {}
        self.items_changed = 0  # counts the refreshes that brought item vectors
        self._seq = 0
        self._checked = 0.0
        self._lock = threading.Lock()

    def user_vector(self, user_id: str) -> np.ndarray | None:
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return self._users.get(user_id)

    def item_vectors(self) -> tuple[int, dict[str, np.ndarray]]:
        """Every item vector the worker solved (new items and re-stepped hot ones), and a
        number that changes whenever they do (for callers that cache what they derive)."""
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return self.items_changed, self._items

    def refresh(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another request is reading the new files; use what is there
        try:
            self._checked = time.monotonic()
            files = _files(self.directory)
            if not files or files[-1][1][0] <= self._seq:
                return
            state = read_journal(self.directory, after=self._seq, vectors_only=True, skip_bad=True)
            # in place: a request's get() meanwhile sees the old or the new vector, never
            # a torn one (one dict operation holds the GIL), and no refresh copies them all
            self._users.update(state.users)
            if state.items:
                self._items.update(state.items)
                self.items_changed += 1
            self._seq = state.seq
        except (OSError, ValueError, KeyError) as err:
            log.warning("nearline journal %s: keeping what was read: %s", self.directory, err)
        finally:
            self._lock.release()
