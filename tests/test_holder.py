"""Bundle hot-swap: new bundles are picked up whole, damaged ones refused."""

import gc
import os
import sys
import threading
import time
import weakref

import pytest

from pipelines.nightly import run_nightly
from recsys.bundle import current_version
from serving import bundle_probe
from serving.bundle_probe import PROBES_DIR
from serving.errors import UnavailableError
from serving.holder import LOADER_NICENESS, BundleHolder
from serving.pipeline import RecommendRequest
from tests.conftest import shop_config


@pytest.fixture
def config(tmp_path, shop_dir):
    # No rankers: what is swapped is the bundle as a whole, and each refresh probes the bundle
    # in a child, which would compile both rankers first (a minute per test). Bundles with
    # compiled rankers are loaded by the served tests (tests/conftest.py's ml_pipeline).
    return shop_config(tmp_path, shop_dir).replace(ranking={"stages": []})


def test_no_bundle_means_unavailable_with_a_hint(config):
    holder = BundleHolder(config)
    assert not holder.refresh()
    with pytest.raises(UnavailableError, match="run `recsys nightly`"):
        holder.pipeline()


def test_swaps_to_a_new_bundle_and_old_requests_keep_theirs(config):
    first = run_nightly(config, show_progress=False).manifest.version
    holder = BundleHolder(config)
    assert holder.refresh() and holder.version == first
    in_flight = holder.pipeline()  # a request holds this reference from start to end

    second = run_nightly(config, force=True, show_progress=False).manifest.version
    assert holder.refresh() and holder.version == second != first
    assert not holder.refresh()  # nothing new
    assert in_flight.version == first
    assert len(in_flight.recommend(RecommendRequest("u1", 5)).items) == 5
    # The old bundle goes once its last request ends, by reference counting alone: a swap
    # runs no garbage collection (it would stop every request for 0.2 s on a big bundle).
    gone = [weakref.ref(in_flight), weakref.ref(in_flight.bundle)]
    gc.disable()
    try:
        del in_flight
        assert [ref() for ref in gone] == [None, None]
    finally:
        gc.enable()


def test_corrupt_new_bundle_is_refused_and_old_stays(config):
    good = run_nightly(config, show_progress=False).manifest.version
    holder = BundleHolder(config)
    holder.refresh()
    bad = run_nightly(config, force=True, show_progress=False).manifest.version
    victim = next((config_root(config) / bad / "als").glob("*.npz"))
    victim.write_bytes(victim.read_bytes()[:-10])  # truncated on disk
    assert current_version(config_root(config)) == bad
    assert not holder.refresh()
    assert holder.version == good
    assert holder.pipeline().recommend(RecommendRequest("u1", 3)).model_version == good


def config_root(config):
    from pathlib import Path

    return Path(config.artifacts.root)


def test_a_bundle_that_fails_its_warm_up_is_refused(config, monkeypatch):
    """A bundle that loads but cannot answer (any exception) never takes traffic."""
    good = run_nightly(config, show_progress=False).manifest.version
    holder = BundleHolder(config)
    holder.refresh()
    run_nightly(config, force=True, show_progress=False)

    def broken(self, requests: int = 30) -> None:
        raise ZeroDivisionError("a ranker that divides by zero on every request")

    monkeypatch.setattr("serving.holder.RecommendPipeline.warm_up", broken)
    assert not holder.refresh()
    assert holder.version == good


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_bundles_load_on_a_niced_watcher_thread_and_calls_keep_their_priority(config):
    holder = BundleHolder(config)
    stop = threading.Event()
    watcher = holder.watch(stop)
    try:
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        until = time.monotonic() + 10
        while os.getpriority(os.PRIO_PROCESS, watcher.native_id) != base + LOADER_NICENESS:
            assert time.monotonic() < until, "the watcher thread was not niced"
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        stop.set()
        watcher.join(10)


def _forge_crashing_ann(directory) -> None:
    """An HNSW file whose header points far outside it, with a manifest that vouches for it:
    the bundle passes verification, and hnswlib's loader dies with SIGSEGV on it."""
    import hashlib
    import json

    graph = next(directory.rglob("hnsw.bin"))
    raw = bytearray(graph.read_bytes())
    raw[0:8] = (10**12).to_bytes(8, "little")  # offsetLevel0
    graph.write_bytes(bytes(raw))
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    relative = graph.relative_to(directory).as_posix()
    manifest["files"][relative] = hashlib.sha256(raw).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def test_a_bundle_whose_loader_crashes_is_refused_by_a_child_and_never_served(config, monkeypatch):
    good = run_nightly(config, show_progress=False).manifest.version
    serving = BundleHolder(config)
    serving.refresh()
    bad = run_nightly(config, force=True, show_progress=False).manifest.version
    _forge_crashing_ann(config_root(config) / bad)
    assert not serving.refresh()  # this process is alive to say so: the child took the crash
    assert serving.version == good
    assert serving.pipeline().recommend(RecommendRequest("u1", 3)).model_version == good
    verdict = (config_root(config) / PROBES_DIR / f"{bad}.json").read_text()
    assert "SIGSEGV" in verdict

    def no_second_probe(*args):
        raise AssertionError("the verdict on disk should have spared this probe")

    monkeypatch.setattr(bundle_probe, "_load_in_child", no_second_probe)
    starting = BundleHolder(config)  # another worker, or this one restarted
    assert starting.refresh() and starting.version == good  # not left with nothing to serve
    assert current_version(config_root(config)) == bad  # nothing on disk was changed
    assert not starting.refresh()  # `current` stays refused on later polls


def test_a_current_pointing_outside_the_root_is_ignored_and_a_starting_worker_serves_the_last(
    config,
):
    good = run_nightly(config, show_progress=False).manifest.version
    (config_root(config) / "current").write_text("../../somewhere/else\n")
    holder = BundleHolder(config)
    assert holder.refresh() and holder.version == good
    assert not holder.refresh()  # logged once; the pointer stays ignored
