"""`recsys session-updater`: the bundle's session models (SSRM, GAG, MGIA) trained further on
the sessions LogEvents brings, between nightlies, and published for serving (seed 003 §II.D,
§III.D, §IV.C and §V.A: "два параллельно выполняющиеся процесса": recommending with the
current parameters, and updating them).

A long-running worker that follows the current bundle (which must hold at least one session
model: sessions.models) and tails the event log from where that bundle's nightly stopped.
Events become sessions: a user's session ends once the stream has moved
`sessions.timeout_seconds` past its last event; finished sessions of min_length..max_length
items are kept for the next update. Every `sessions.update_seconds` with new sessions, one
update of each model by its own selection rule (SSRM: active sampling, §II.D.3; GAG and
MGIA: new users and items first, the rest by the Wasserstein distance, §III.D) over the new
sessions and the one reservoir they share (Algorithm R: what it holds does not depend on the
model), `update_steps` mini-batch steps each; the reservoir then takes its share of the new
sessions. Then a publication under `<artifacts>/session_models/<bundle version>/` the way
bundles are published (staged, checksummed, renamed, `current` moved atomically), one
sub-directory per model; serving swaps the weights in at its next poll. Each publication
records the log offsets, the sessions still open and the reservoir: a worker killed at any
point resumes from the last one, no event lost or learnt twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from candidates.als import ALSModel
from candidates.session.gag import WASSERSTEIN, update_gag
from candidates.session.generator import MODEL_LOADERS, RESERVOIR
from candidates.session.live import (
    SESSION_MODELS_DIR,
    read_published,
    session_models_root,
    verified_publication,
)
from candidates.session.reservoir import Reservoir, SavedReservoir
from candidates.session.sessions import Sessions
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
    models: tuple[str, ...] = ()  # the models updated


class SessionUpdater:
    """One bundle's session models, their reservoir, the sessions being assembled and the
    log position."""

    def __init__(self, root: Path, version: str, config: Config) -> None:
        directory = root / version
        verify_bundle(directory)
        self.root, self.version, self.config = root, version, config
        import_components(config)  # the registry knows the components once their modules ran
        self.models: dict[str, Any] = {}
        for name, load in MODEL_LOADERS.items():
            model = load(directory / COMPONENTS[name].subdirectory)
            if model is not None:
                self.models[name] = model
        if not self.models:
            raise BundleError(
                f"bundle {version} has no session model: name one in sessions.models "
                f"({', '.join(MODEL_LOADERS)}) and run `recsys nightly`"
            )
        self.n_items = min(model.n_items for model in self.models.values())
        users, items = load_ids(directory)
        self.users, self.items = users, items
        als = ALSModel.load(directory / COMPONENTS["als"].subdirectory)
        self.user_factors, self.item_factors = als.user_factors, als.item_factors
        self.publications = session_models_root(root, version)
        self.reservoir: Reservoir[SeenSession] = Reservoir(config.sessions.reservoir_size, seed=0)
        self.open: dict[str, tuple[list[int], int]] = {}  # user -> (items, last event time)
        self.finished: list[SeenSession] = []
        self.newest = 0  # the stream's clock: the newest event time read
        self.updates = 0
        published = current_version(self.publications)
        if published is None:
            self._fill_reservoir(_bundle_reservoir(directory))
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
        """One update of every model on the finished sessions and the reservoir, published;
        None if there is nothing new to learn from."""
        if not self.finished:
            return None
        started = time.perf_counter()
        new, self.finished = self.finished, []
        held = list(self.reservoir.held)
        for number, (name, model) in enumerate(self.models.items()):
            random = np.random.default_rng([self.updates, self.reservoir.seen, number])
            self.models[name] = self._update(name, model, new, held, random)
        self.reservoir.extend(new)  # after the updates, whose pool has the new ones already
        self.updates += 1
        published = self._publish()
        return UpdateReport(
            self.version,
            published,
            len(new),
            len(self.reservoir),
            time.perf_counter() - started,
            tuple(self.models),
        )

    def _update(
        self,
        name: str,
        model: Any,
        new: list[SeenSession],
        held: list[SeenSession],
        random: np.random.Generator,
    ) -> Any:
        """One model's update by its own selection rule, with the same budget for each."""
        sessions = self.config.sessions
        budget = {"sample_size": sessions.update_sample, "steps": sessions.update_steps}
        if name == "ssrm":  # §II.D.3: active sampling by the MF prediction score
            return update_ssrm(
                model, new, held, self.item_factors, sessions.ssrm, selection=ACTIVE,
                random=random, **budget,
            )  # fmt: skip
        settings = sessions.gag if name == "gag" else sessions.mgia
        # §III.D (GAG), "полностью аналогично GAG" (MGIA, §IV.C): the Wasserstein selection
        return update_gag(
            model, new, held, settings, selection=WASSERSTEIN, random=random, **budget
        )

    # ---------------------------------------------------------------- sessions

    def _add(self, event: Event) -> None:
        item = self.items.index_of(event.item_id)
        if item < 0 or item >= self.n_items:
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
            index = self.users.index_of(user)  # -1: a user the bundle does not know
            vector = self._user_vector(index)
            self.finished.append(SeenSession(np.array(items, np.int64), vector, index))

    def _user_vector(self, index: int) -> np.ndarray:
        if 0 <= index < len(self.user_factors):
            return self.user_factors[index]
        return np.zeros(self.user_factors.shape[1], np.float32)

    # ---------------------------------------------------------------- publication

    def _publish(self) -> str:
        held = self.reservoir.held
        saved = SavedReservoir(
            Sessions.of([s.items for s in held], [s.user for s in held], np.zeros(len(held))),
            np.stack([s.user_vector for s in held]).astype(np.float32)
            if held
            else np.zeros((0, self.user_factors.shape[1]), np.float32),
            seen=self.reservoir.seen,
        )

        def write(directory: Path) -> None:
            for name, model in self.models.items():
                (directory / name).mkdir()
                model.save(directory / name)
            saved.save(directory)

        manifest = publish_bundle(
            self.publications,
            write,
            data_fingerprint=self.version,
            config={},
            metrics={
                "bundle": self.version,
                "models": list(self.models),
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
        manifest = verified_publication(directory)
        for name in self.models:
            _, model = read_published(directory, name, MODEL_LOADERS[name], self.n_items)
            if model is not None:  # else the publication predates this model: the bundle's
                self.models[name] = model
        metrics = manifest.metrics
        # publications before GAG and MGIA were updated kept the reservoir beside SSRM's weights
        self._fill_reservoir(
            SavedReservoir.load(directory) or SavedReservoir.load(directory / "ssrm")
        )
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
        users = saved.sessions.users
        for s in range(len(saved.sessions)):
            session = SeenSession(saved.sessions[s], saved.user_vectors[s], int(users[s]))
            self.reservoir.offer(session)
        self.reservoir.seen = max(self.reservoir.seen, saved.seen)


def _bundle_reservoir(directory: Path) -> SavedReservoir | None:
    """The reservoir the nightly drew; bundles of before it was a component of its own kept
    it beside SSRM's weights, and those without either start with an empty one."""
    saved = SavedReservoir.load(directory / COMPONENTS[RESERVOIR].subdirectory)
    if saved is None:
        saved = SavedReservoir.load(directory / COMPONENTS["ssrm"].subdirectory)
    if saved is None:
        log.warning("session updater: bundle %s has no reservoir; starting an empty one", directory)
    return saved


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
