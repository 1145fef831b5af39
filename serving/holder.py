"""Holds the serving pipeline of the current bundle and swaps it whole when `current` moves.

A request takes one reference (`holder.pipeline()`) and uses it to the end, so a swap
never changes a bundle mid-request. A damaged new bundle is refused and logged; the old
one stays in service. A new bundle is first loaded in a throwaway child process
(serving/bundle_probe.py): native loaders trust their files, and a crash must not be ours.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from candidates.live_tops import LiveTops, attach_live_tops
from candidates.session.live import LiveModel
from recsys.bundle import BundleError, current_version, list_versions, verify_bundle
from recsys.config import Config
from recsys.loaded_bundle import LoadedBundle
from serving.bundle_probe import probe_bundle
from serving.errors import UnavailableError
from serving.fanout import GeneratorFanout
from serving.fresh_items import new_items_of
from serving.pipeline import RecommendPipeline
from serving.runtime import load_bundle
from serving.user_vectors import open_user_vectors

log = logging.getLogger(__name__)


# While a new bundle loads, the loading thread gives the GIL up after this long when a
# request thread wants it (Python's default is 5 ms: every hand-off of a request waited up
# to that, and a shop request has dozens of them).
LOADING_SWITCH_INTERVAL_S = 0.0002
LOADER_NICENESS = 10  # the watcher thread's nice value: below the threads answering calls
JOIN_WARM_UP_REQUESTS = 3  # a join's pipeline shares the bundle's warmed models and code


def _freeze_heap(first: bool) -> None:
    """Move the long-lived objects (the bundle) out of the garbage collector's sight.

    A request allocates many short-lived objects; every full collection would otherwise
    walk the whole bundle's object graph (id maps, pandas indexes), which measured as a
    1-2 ms p50 tax per request. Objects still die by reference counting. Before the first
    bundle a full collection clears start-up garbage; on a swap it would hold the GIL for
    0.2 s (the shop: 400k objects) while requests wait, and the old bundle needs none: no
    reference cycle holds it (tests/test_holder.py checks that it dies by reference
    counting alone).
    """
    if first:
        gc.collect()
    gc.freeze()


def _lower_this_thread_priority() -> None:
    """Nice the calling thread (Linux: threads are tasks with their own nice value).

    A bundle loads on the watcher thread of a worker pinned to one CPU, beside the thread
    answering calls. Much of a load runs without the GIL (checksums, reading arrays, the
    ANN index), and at the same priority the two threads split the CPU: at 200 RPS on the
    shop a swap took p99 to 271 ms. At nice 10 the loader gets the CPU the calls leave.
    There is no way back up without privileges, so only the watcher thread does this."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICENESS)


@contextmanager
def _loading() -> Iterator[None]:
    """The GIL handed to request threads sooner while this thread loads a bundle."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, LOADING_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


class BundleHolder:
    def __init__(
        self,
        config: Config,
        fanout: GeneratorFanout | None = None,
        on_swap: Callable[[str | None, str], None] | None = None,
    ) -> None:
        self.config = config
        self.fanout = fanout
        self.on_swap = on_swap  # (previous version, new version), e.g. for a metric
        self.root = Path(config.artifacts.root)
        self._pipeline: RecommendPipeline | None = None
        self._refused: set[str] = set()  # versions that failed to load
        self._bad_pointer: str | None = None  # the last unusable `current`, logged once
        self._lock = threading.Lock()  # one loader at a time; readers never wait
        # counts the logged events into a grown bundle's live tops before its swap
        # (TopsFeed.prime); None: the first request after the swap counts them
        self.prime_live_tops: Callable[[LiveTops, LoadedBundle], None] | None = None
        self._join_logged: tuple[str, ...] | None = None  # new ids of the failure logged
        self._unable_logged: str | None = None  # the component that cannot grow, logged
        # (pipeline, the store's change count) at the last look for items to join
        self._join_checked: tuple[weakref.ref, int] | None = None

    def pipeline(self) -> RecommendPipeline:
        pipeline = self._pipeline
        if pipeline is None:
            raise UnavailableError(f"no model bundle loaded from {self.root}; run `recsys nightly`")
        return pipeline

    def bundle_in_service(self) -> LoadedBundle | None:
        pipeline = self._pipeline
        return pipeline.bundle if pipeline is not None else None

    @property
    def version(self) -> str | None:
        return self._pipeline.version if self._pipeline else None

    def refresh(self) -> bool:
        """Load the bundle `current` points to if it is new. True if a swap happened.

        A bundle that fails (verification, the child-process probe, loading, warm-up) is
        refused for good and the one in service stays. A process that has none yet falls
        back to the newest other bundle on disk that loads: a bad `current` must not leave
        a starting worker with nothing to serve."""
        with self._lock:
            try:
                version = current_version(self.root)
            except BundleError as err:  # `current` names no bundle directory
                if str(err) != self._bad_pointer:  # logged once, not on every poll
                    self._bad_pointer = str(err)
                    log.error("ignoring `current`: %s", err)
                return self._fall_back(None)
            if version is None or version == self.version:
                self._refresh_session_weights()
                return False
            if version in self._refused:
                return self._fall_back(version)
            return self._load(version) or self._fall_back(version)

    def _refresh_session_weights(self) -> None:
        """The session updater's newest weights for the bundle in service, if any, for each
        session model (candidates.session.live: verified, and refused with a log line when
        damaged)."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        for part in pipeline.bundle.parts.values():
            if isinstance(part, LiveModel):
                part.refresh(self.root, pipeline.version)

    def _fall_back(self, refused: str | None) -> bool:
        """With no bundle in service yet, the newest bundle published before the refused
        `current` (any, if `current` names none) that loads. Not newer ones: a nightly may
        write a bundle it does not publish (its regression gate said no)."""
        if self._pipeline is not None:
            return False
        for older in reversed(list_versions(self.root)):
            if refused is not None and older >= refused:
                continue
            if older not in self._refused and self._load(older):
                log.warning("`current` (%s) refused; serving %s instead", refused, older)
                return True
        return False

    def _load(self, version: str) -> bool:
        """Swap to bundle `version` if it verifies, survives the probe and loads; False (and
        refused from then on) if not."""
        directory = self.root / version
        try:
            with _loading():
                verify_bundle(directory)
                if self.config.serving.probe_bundles:
                    reason = probe_bundle(self.root, version, self.config)
                    if reason is not None:
                        raise BundleError(reason)
                bundle = load_bundle(directory, version, self.config)
                attach_live_tops(bundle, self.config)
                vectors = open_user_vectors(self.config, version)
                pipeline = RecommendPipeline(bundle, self.config, self.fanout, vectors)
                pipeline.warm_up()
        except Exception as err:  # whatever stops it loading or serving: keep the old one
            self._refused.add(version)
            log.error("refusing bundle %s, keeping %s: %s", version, self.version, err)
            return False
        previous, self._pipeline = self.version, pipeline  # atomic reference swap
        _freeze_heap(first=previous is None)
        if self.on_swap is not None:
            self.on_swap(previous, version)
        log.info("serving bundle %s (was %s)", version, previous)
        return True

    def join_new_items(self) -> int:
        """Swap in the bundle in service grown by the items the nearline worker has vectors
        for and the bundle does not know, with the worker's newer vectors of items it knows
        (hot ones, stepped again; recsys/new_items.py): from then the whole cascade serves
        them. How many items joined or took a stepped vector; 0 when nothing is new, or
        when growing failed (the bundle in service stays; logged once per set of new
        items, and not tried again until the store's item vectors change)."""
        with self._lock:
            pipeline = self._pipeline
            if pipeline is None or pipeline.user_vectors is None:
                return 0
            bundle = pipeline.bundle
            unable = bundle.cannot_grow()
            if unable is not None:
                if self._unable_logged != unable:
                    self._unable_logged = unable
                    log.error(
                        "bundle %s: no item joins: %r cannot take new items", self.version, unable
                    )
                return 0
            changes = pipeline.user_vectors.item_vectors()[0]
            last = self._join_checked
            if last is not None and last[0]() is pipeline and last[1] == changes:
                return 0  # neither the store's items nor the bundle moved since the last look
            # weak: old bundles must go. A join that fails is not tried again until this moves
            self._join_checked = (weakref.ref(pipeline), changes)
            cap = self.config.nearline.join_max_items
            already = len(bundle.items) - len(bundle.items_at_nightly)
            new = new_items_of(
                pipeline.user_vectors, bundle, int(time.time()), max(cap - already, 0)
            )
            if new is None:
                return 0
            started = time.perf_counter()
            try:
                with _loading():
                    bundle = pipeline.bundle.grown(new)
                    live = attach_live_tops(bundle, self.config)
                    if live is not None and self.prime_live_tops is not None:
                        self.prime_live_tops(live, bundle)
                    grown = RecommendPipeline(
                        bundle, self.config, self.fanout, pipeline.user_vectors
                    )
                    # the process is warm: a few requests pay the new pipeline's first calls
                    grown.warm_up(requests=JOIN_WARM_UP_REQUESTS)
            except Exception as err:  # the bundle in service serves on without them
                if self._join_logged != tuple(new.ids):
                    self._join_logged = tuple(new.ids)
                    log.error(
                        "bundle %s: %d new items could not join: %s", self.version, len(new), err
                    )
                return 0
            # An atomic reference swap; the version stays. No heap freeze, unlike a bundle's
            # load: a join makes few long-lived objects (the arrays are one object each),
            # and a freeze every few seconds would also freeze the garbage cycles of the
            # requests in flight, which then never go, with whatever bundle arrays they hold.
            self._pipeline = grown
            log.info(
                "bundle %s: %d new items joined, %d stepped vectors taken, in %.2f s "
                "(%d items now, %d at the nightly%s)",
                grown.version,
                len(new),
                len(new.stepped),
                time.perf_counter() - started,
                len(bundle.items),
                len(bundle.items_at_nightly),
                "; nearline.join_max_items reached: others wait for the nightly"
                if already + len(new) >= cap
                else "",
            )
            return len(new) + len(new.stepped)

    def watch(self, stop: threading.Event) -> threading.Thread:
        """Poll `current` every serving.bundle_poll_seconds until `stop` is set."""

        def loop() -> None:
            _lower_this_thread_priority()
            while not stop.wait(self.config.serving.bundle_poll_seconds):
                self.refresh()

        thread = threading.Thread(target=loop, name="bundle-watcher", daemon=True)
        thread.start()
        return thread

    def join_every(self, seconds: float, stop: threading.Event) -> threading.Thread:
        """`join_new_items` every `seconds` until `stop` is set, at the watcher's priority."""

        def loop() -> None:
            _lower_this_thread_priority()
            while not stop.wait(seconds):
                self.join_new_items()

        thread = threading.Thread(target=loop, name="item-joiner", daemon=True)
        thread.start()
        return thread
