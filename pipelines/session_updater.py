"""`recsys session-updater`: SSRM trained further on the sessions LogEvents brings, between
nightlies, and published for serving (seed 003 §II.D and §V.A: "два параллельно выполняющиеся
процесса": recommending with the current parameters, and updating them).

A long-running worker that follows the current bundle (which must hold SSRM: sessions.models)
and tails the event log from where that bundle's nightly stopped. Events become sessions: a
user's session ends once the stream has moved `sessions.timeout_seconds` past its last event;
finished sessions of min_length..max_length items are kept for the next update. Every
`sessions.update_seconds` with new sessions, one update (candidates.session.updates: active
sampling over them and the reservoir, `update_steps` mini-batch steps), then a publication
under `<artifacts>/session_models/<bundle version>/` the way bundles are published (staged,
checksummed, renamed, `current` moved atomically); serving swaps the weights in at its next
poll. Each publication records the log offsets, the sessions still open and the reservoir:
a worker killed at any point resumes from the last one, no event lost or learnt twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from candidates.als import ALSModel
from candidates.session.live import (
    MODEL_DIR,
    SESSION_MODELS_DIR,
    LiveSSRM,
    read_published,
    session_models_root,
)
from candidates.session.reservoir import Reservoir, SavedReservoir
from candidates.session.sessions import Sessions
from candidates.session.ssrm import SSRMModel
from candidates.session.updates import ACTIVE, SeenSession, update_ssrm
from recsys.bundle import (
    BundleError,
    current_version,
    drop_stale_per_bundle,
    folded_log_offsets,
    publish_bundle,
    run_lock,
    verify_bundle,
)
from recsys.components import COMPONENTS
from recsys.config import Config
from recsys.loaded_bundle import load_ids
from serving.events import Event, EventLogTail
from serving.runtime import import_components

log = logging.getLogger(__name__)

LOCK_FILE = ".session_updater.lock"
KEEP_PUBLISHED = 3


@dataclass(frozen=True)
class UpdateReport:
    bundle: str
    published: str  # the new weights' version
    sessions: int  # new sessions learnt from in this update
    reservoir: int
    seconds: float  # the update and the publication, wall clock


class SessionUpdater:
    """One bundle's SSRM, its reservoir, the sessions being assembled and the log position."""

    def __init__(self, root: Path, version: str, config: Config) -> None:
        directory = root / version
        verify_bundle(directory)
        self.root, self.version, self.config = root, version, config
        import_components(config)  # the registry knows the components once their modules ran
        live = LiveSSRM.load(directory / COMPONENTS["ssrm"].subdirectory)
        if live.model is None:
            raise BundleError(
                f"bundle {version} has no SSRM model: add 'ssrm' to sessions.models and run "
                "`recsys nightly`"
            )
        users, items = load_ids(directory)
        self.users, self.items = users, items
        als = ALSModel.load(directory / COMPONENTS["als"].subdirectory)
        self.user_factors, self.item_factors = als.user_factors, als.item_factors
        self.model: SSRMModel = live.model
        self.publications = session_models_root(root, version)
        self.reservoir: Reservoir[SeenSession] = Reservoir(config.sessions.reservoir_size, seed=0)
        self.open: dict[str, tuple[list[int], int]] = {}  # user -> (items, last event time)
        self.finished: list[SeenSession] = []
        self.newest = 0  # the stream's clock: the newest event time read
        self.updates = 0
        published = current_version(self.publications)
        if published is None:
            self._fill_reservoir(live.reservoir)
            offsets = folded_log_offsets(root, version)
        else:
            offsets = self._resume(published)
        self.tail = EventLogTail(config.events.log_dir, offsets)

    def read(self) -> int:
        """Read the log's new events into sessions; the number of events read."""
        events = self.tail.read_new(self.config.nearline.max_batch_events)
        for event in sorted(events, key=lambda e: e.timestamp):
            self._add(event)
        if events:
            self._close_idle()
        return len(events)

    def update(self) -> UpdateReport | None:
        """One update on the finished sessions and the reservoir, published; None if there
        is nothing new to learn from."""
        if not self.finished:
            return None
        started = time.perf_counter()
        new, self.finished = self.finished, []
        sessions = self.config.sessions
        self.model = update_ssrm(
            self.model,
            new,
            self.reservoir,
            self.item_factors,
            sessions.ssrm,
            selection=ACTIVE,
            sample_size=sessions.update_sample,
            steps=sessions.update_steps,
            random=np.random.default_rng([self.updates, self.reservoir.seen]),
        )
        self.updates += 1
        published = self._publish()
        return UpdateReport(
            self.version, published, len(new), len(self.reservoir), time.perf_counter() - started
        )

    # ---------------------------------------------------------------- sessions

    def _add(self, event: Event) -> None:
        item = self.items.index_of(event.item_id)
        if item < 0 or item >= self.model.n_items:
            return  # an item the model has no row for yet: the next nightly learns it
        self.newest = max(self.newest, event.timestamp)
        items, last = self.open.get(event.user_id, ([], event.timestamp))
        if items and event.timestamp - last > self.config.sessions.timeout_seconds:
            self._finish(event.user_id, items)
            items = []
        items.append(item)
        self.open[event.user_id] = (items, max(last, event.timestamp))

    def _close_idle(self) -> None:
        timeout = self.config.sessions.timeout_seconds
        idle = [user for user, (_, last) in self.open.items() if self.newest - last > timeout]
        for user in idle:
            self._finish(user, self.open.pop(user)[0])

    def _finish(self, user: str, items: list[int]) -> None:
        sessions = self.config.sessions
        if sessions.min_length <= len(items) <= sessions.max_length:
            self.finished.append(SeenSession(np.array(items, np.int64), self._user_vector(user)))

    def _user_vector(self, user: str) -> np.ndarray:
        index = self.users.index_of(user)
        if 0 <= index < len(self.user_factors):
            return self.user_factors[index]
        return np.zeros(self.user_factors.shape[1], np.float32)

    # ---------------------------------------------------------------- publication

    def _publish(self) -> str:
        held = self.reservoir.held
        saved = SavedReservoir(
            Sessions.of([s.items for s in held], np.zeros(len(held)), np.zeros(len(held))),
            np.stack([s.user_vector for s in held]).astype(np.float32)
            if held
            else np.zeros((0, self.user_factors.shape[1]), np.float32),
            seen=self.reservoir.seen,
        )

        def write(directory: Path) -> None:
            (directory / MODEL_DIR).mkdir()
            self.model.save(directory / MODEL_DIR)
            saved.save(directory / MODEL_DIR)

        manifest = publish_bundle(
            self.publications,
            write,
            data_fingerprint=self.version,
            config={},
            metrics={
                "bundle": self.version,
                "offsets": self.tail.offsets,
                "open_sessions": {u: [items, last] for u, (items, last) in self.open.items()},
                "newest_event": self.newest,
                "updates": self.updates,
            },
            keep=KEEP_PUBLISHED,
        )
        return manifest.version

    def _resume(self, published: str) -> dict[str, int]:
        directory = self.publications / published
        manifest, self.model = read_published(directory, self.model.n_items)
        metrics = manifest.metrics
        self._fill_reservoir(SavedReservoir.load(directory / MODEL_DIR))
        self.open = {
            user: (list(items), int(last))
            for user, (items, last) in metrics["open_sessions"].items()
        }
        self.newest = int(metrics["newest_event"])
        self.updates = int(metrics["updates"])
        log.info("session updater: resumed bundle %s at %s", self.version, published)
        return {str(k): int(v) for k, v in metrics["offsets"].items()}

    def _fill_reservoir(self, saved: SavedReservoir | None) -> None:
        """The reservoir as saved, with the count of sessions it was drawn from (Algorithm
        R's t: a new session enters with probability R / t)."""
        if saved is None:
            return
        for s in range(len(saved.sessions)):
            self.reservoir.offer(SeenSession(saved.sessions[s], saved.user_vectors[s]))
        self.reservoir.seen = max(self.reservoir.seen, saved.seen)


def run_session_updater(
    config: Config,
    stop: threading.Event,
    on_update: Callable[[UpdateReport], None] | None = None,
) -> None:
    """Follow the current bundle, read sessions from the log and update every
    sessions.update_seconds, until `stop` is set."""
    root = Path(config.artifacts.root)
    with run_lock(root, LOCK_FILE, "recsys session-updater"):
        updater: SessionUpdater | None = None
        next_update = time.monotonic() + config.sessions.update_seconds
        while not stop.is_set():
            version = current_version(root)
            if version is None:
                stop.wait(config.nearline.poll_seconds)
                continue
            if updater is None or updater.version != version:
                updater = SessionUpdater(root, version, config)
                drop_stale_per_bundle(root, SESSION_MODELS_DIR)
                log.info("session updater: following bundle %s", version)
            read = updater.read()
            if time.monotonic() >= next_update:  # on time even while the log is busy
                next_update = time.monotonic() + config.sessions.update_seconds
                report = updater.update()
                if report is not None and on_update is not None:
                    on_update(report)
            if not read:
                stop.wait(config.nearline.poll_seconds)
