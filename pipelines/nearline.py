"""`recsys nearline`: iALS kept up to date between nightlies by ALS steps (seed 004,
"Пошагаем": "Итого на практике мы имеем два конвейера: один с переобучением с нуля, другой с
шагами в near realtime").

A long-running worker that follows the current bundle and tails the event log from where
that bundle's nightly stopped reading it (the manifest's event_log offsets). Each micro-batch
of at most `nearline.max_batch_events` events:
1. adds the events to R (new users and items get indices past the bundle's);
2. steps the items that are due (new ones at once, hot ones after `item_step_events`
   events), with the user vectors fixed, then every user who acted, with the item vectors
   fixed (candidates.als_steps);
3. writes the batch (vectors, R entries, log offsets) to the journal (serving.vector_journal),
   which is both its checkpoint and the file store serving reads, and, with
   `nearline.store = "redis"`, publishes the users' vectors to Redis.
A worker killed at any point resumes from its last journal file: nothing lost, nothing
applied twice. One worker per artifacts root (a lock); a new bundle starts a new journal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from prometheus_client import Counter, Gauge, Histogram

from candidates.als import ALSModel
from candidates.als_steps import PendingItems, step_items_then_users
from recsys.bundle import (
    NEARLINE_LOCK_FILE,
    current_version,
    drop_stale_per_bundle,
    folded_log_offsets,
    run_lock,
    verify_bundle,
)
from recsys.components import COMPONENTS
from recsys.config import Config
from recsys.ids import IdMap
from recsys.interactions import event_weights
from recsys.loaded_bundle import load_ids
from serving.events import EventLogTail, events_frame
from serving.vector_journal import JOURNAL_DIR, JournalBatch, JournalWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    version: str
    events: int  # in this batch
    users: int  # user vectors solved
    items: int  # item vectors solved
    seconds: float  # reading excluded: the steps and the journal write
    applied: int  # events applied since the bundle
    newest_event: int  # Unix seconds of the newest event applied so far


EVENTS = Counter("recsys_nearline_events", "Events applied by ALS steps")
VECTORS = Counter("recsys_nearline_vectors", "Vectors solved by ALS steps", ["kind"])
BATCH_SECONDS = Histogram(
    "recsys_nearline_batch_seconds",
    "One micro-batch: steps and journal write",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
NEWEST_EVENT = Gauge(
    "recsys_nearline_newest_event_timestamp_seconds",
    "Timestamp of the newest event applied (time() - this is how far behind the steps are)",
)


def observe(report: BatchReport) -> None:
    """The batch in the worker's Prometheus metrics."""
    EVENTS.inc(report.events)
    VECTORS.labels("user").inc(report.users)
    VECTORS.labels("item").inc(report.items)
    BATCH_SECONDS.observe(report.seconds)
    NEWEST_EVENT.set(report.newest_event)


class _Ids:
    """External ids -> indices: the bundle's, then new ones in order of appearance."""

    def __init__(self, known: IdMap) -> None:
        self.known = known
        self.known_ids = np.asarray(known.ids, dtype=object)
        self.new: dict[str, int] = {}
        self.new_ids: list[str] = []

    def __len__(self) -> int:
        return len(self.known) + len(self.new_ids)

    def indices(self, external: np.ndarray) -> np.ndarray:
        index = self.known.to_index(external)
        for row in np.flatnonzero(index < 0):
            key = str(external[row])
            if key not in self.new:
                self.new[key] = len(self)
                self.new_ids.append(key)
            index[row] = self.new[key]
        return index

    def external(self, indices: np.ndarray) -> np.ndarray:
        ids = self.known_ids
        out = np.empty(len(indices), dtype=object)
        old = indices < len(ids)
        out[old] = ids[indices[old]]
        out[~old] = [self.new_ids[i - len(ids)] for i in indices[~old]]
        return out.astype(str)


class NearlineModel:
    """One bundle's iALS and R, and the journal of what has been stepped since."""

    def __init__(self, root: Path, version: str, config: Config) -> None:
        directory = root / version
        verify_bundle(directory)
        self.version, self.config = version, config
        users, items = load_ids(directory)
        self.users, self.items = _Ids(users), _Ids(items)
        # the iALS factors lie in the ANN-indexed generator's directory (its index unread)
        model = ALSModel.load(directory / COMPONENTS["als"].subdirectory)
        self.user_factors = np.array(model.user_factors, np.float32)
        self.item_factors = np.array(model.item_factors, np.float32)
        interactions = COMPONENTS["interactions"]
        self.base = interactions.load(directory / interactions.subdirectory, config).read()
        self.base_by_item = self.base.T.tocsr()
        self.delta = sp.csr_matrix(self.base.shape, dtype=np.float32)
        self.pending = PendingItems(len(self.items))
        self.applied = 0
        self.newest_event = 0
        self.last_batch: JournalBatch | None = None
        self.journal = JournalWriter(root, version)
        state = self.journal.state
        start = folded_log_offsets(root, version)
        self.tail = EventLogTail(config.events.log_dir, state.offsets if state.seq else start)
        if state.seq:
            self._resume()

    def step_once(self) -> BatchReport | None:
        """Read at most one batch from the log and apply it; None when nothing is new. If
        the journal cannot be written (a full disk) this raises, and this model's memory is
        ahead of its journal: the worker must stop, and a new one resumes from the journal
        (`recsys nearline` exits 1; its systemd unit restarts it)."""
        events = self.tail.read_new(self.config.nearline.max_batch_events)
        if not events:
            return None
        started = time.perf_counter()
        frame = events_frame(events)
        batch = self._apply(frame)
        self.journal.append(batch)
        self.last_batch = batch
        self.newest_event = max(self.newest_event, int(frame["timestamp"].max()))
        return BatchReport(
            self.version,
            len(frame),
            len(batch.user_ids),
            len(batch.item_ids),
            time.perf_counter() - started,
            self.applied,
            self.newest_event,
        )

    def _apply(self, frame: pd.DataFrame) -> JournalBatch:
        users = self.users.indices(frame["user_id"].to_numpy())
        items = self.items.indices(frame["item_id"].to_numpy())
        weights = event_weights(frame, self.config)
        self._add(users, items, weights)
        self.applied += len(frame)
        due = self.pending.due(self.item_factors, self.config.nearline.item_step_events)
        acted = np.unique(users)
        als = self.config.als
        step_items_then_users(
            self.user_factors,
            self.item_factors,
            due,
            self.base_by_item[due] + self.delta.T.tocsr()[due],
            acted,
            self.base[acted] + self.delta[acted],
            als.alpha,
            als.regularization,
            self.config.nearline.warm_quantile,
        )
        pending = np.flatnonzero(self.pending.counts)
        return JournalBatch(
            self.users.external(acted),
            self.user_factors[acted],
            self.items.external(due),
            self.item_factors[due],
            frame["user_id"].to_numpy().astype(str),
            frame["item_id"].to_numpy().astype(str),
            weights,
            self.tail.offsets,
            dict(
                zip(
                    self.items.external(pending).tolist(),
                    self.pending.counts[pending].tolist(),
                    strict=True,
                )
            ),
            self.applied,
        )

    def _add(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray) -> None:
        """R += the events, growing every array to the ids seen so far."""
        shape = (len(self.users), len(self.items))
        if shape != self.delta.shape:
            f = self.user_factors.shape[1]
            self.user_factors = _grown(self.user_factors, shape[0], f)
            self.item_factors = _grown(self.item_factors, shape[1], f)
            for matrix in (self.base, self.delta):
                matrix.resize(shape)
            self.base_by_item.resize((shape[1], shape[0]))
        added = sp.csr_matrix((weights, (users, items)), shape=shape, dtype=np.float32)
        self.delta = (self.delta + added).tocsr()
        self.pending.add(items)

    def _resume(self) -> None:
        """Rebuild from the journal: R's logged entries, the vectors, the pending counts."""
        state = self.journal.state
        event_users, event_items, weights = state.entries()
        users = self.users.indices(event_users)
        items = self.items.indices(event_items)
        self.users.indices(np.array(list(state.users), dtype=str))
        self.items.indices(np.array(list(state.items), dtype=str))
        self._add(users, items, weights)
        for ids, vectors, factors in (
            (state.users, self.users, self.user_factors),
            (state.items, self.items, self.item_factors),
        ):
            if ids:
                factors[vectors.indices(np.array(list(ids), dtype=str))] = np.array(
                    list(ids.values()), np.float32
                )
        self.pending.counts[:] = 0
        if state.pending:
            keys = self.items.indices(np.array(list(state.pending), dtype=str))
            self.pending.counts[keys] = list(state.pending.values())
        self.applied = state.events
        log.info(
            "nearline: resumed bundle %s at journal file %d (%d events applied)",
            self.version,
            state.seq,
            self.applied,
        )


def _grown(factors: np.ndarray, rows: int, width: int) -> np.ndarray:
    if rows <= len(factors):
        return factors
    return np.vstack([factors, np.zeros((rows - len(factors), width), np.float32)])


def run_nearline(
    config: Config,
    stop: threading.Event,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> None:
    """Follow the current bundle and apply the log's new events until `stop` is set."""
    root = Path(config.artifacts.root)
    with run_lock(root, NEARLINE_LOCK_FILE, "recsys nearline"):
        model: NearlineModel | None = None
        publisher = None
        while not stop.is_set():
            version = current_version(root)
            if version is None:
                stop.wait(config.nearline.poll_seconds)
                continue
            if model is None or model.version != version:
                model = NearlineModel(root, version, config)
                publisher = _publisher(config, model)
                drop_stale_per_bundle(root, JOURNAL_DIR)
                log.info("nearline: following bundle %s", version)
            report = model.step_once()
            if report is None:
                stop.wait(config.nearline.poll_seconds)
                continue
            if publisher is not None:
                publisher(model)
            observe(report)
            if on_batch is not None:
                on_batch(report)


def _publisher(config: Config, model: NearlineModel) -> Callable[[NearlineModel], None] | None:
    """With Redis: a function that publishes the last batch's user vectors; the journal's
    vectors are published once at start (a crash may have come between journal and Redis)."""
    if config.nearline.store != "redis":
        return None
    from serving.vector_redis import RedisVectors

    redis_vectors = RedisVectors(config.nearline.redis_url, model.version, timeout_seconds=10.0)
    redis_vectors.drop_other_versions()
    snapshot = model.journal.state.as_snapshot()
    redis_vectors.publish(
        snapshot.user_ids, snapshot.user_vectors, snapshot.item_ids, snapshot.item_vectors
    )

    def publish(model: NearlineModel) -> None:
        batch = model.last_batch
        redis_vectors.publish(
            batch.user_ids, batch.user_vectors, batch.item_ids, batch.item_vectors
        )

    return publish
