"""The nightly trains on the event log too: what LogEvents acknowledged reaches the next
bundle, new items and users included (issue "Near-realtime ALS steps", nightly)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipelines.event_archive import ARCHIVE_DIR, retire_segments
from pipelines.nightly import run_nightly
from recsys.bundle import STAGING_PREFIX, current_version, open_current
from serving.events import Event, EventLog
from serving.grpc.client import RecommenderClient
from serving.grpc.server import start_server
from serving.holder import BundleHolder
from serving.pipeline import RecommendRequest
from tests.conftest import shop_config
from tests.frames import logged_events
from tests.serving_harness import toml_text

FRESH_ITEM = "fresh-item-1"
NEWCOMER = "newcomer-1"


def test_events_logged_through_the_server_reach_the_next_bundle(tmp_path, shop_dir):
    # no rankers: what is tested is the data the nightly trains on, not the cascade
    config = shop_config(tmp_path, shop_dir).replace(ranking={"stages": []})
    first = run_nightly(config, show_progress=False)
    assert first.manifest.metrics["event_log"]["events"] == 0
    before = BundleHolder(config)
    assert before.refresh()
    assert FRESH_ITEM not in before.pipeline().bundle.items.ids

    now = int(time.time())
    fans = [f"u{i}" for i in range(12)]  # users of the shop who buy the new item
    events = [Event(user, FRESH_ITEM, "purchase", 1.0, now - 60) for user in fans]
    events += [Event(NEWCOMER, FRESH_ITEM, "view", 1.0, now - 30)]
    events += [Event(NEWCOMER, "i3", "cart", 1.0, now - 20)]
    server = start_server(config, watch=False)
    try:
        with RecommenderClient(f"127.0.0.1:{server.port}") as client:
            assert client.log_events(events) == len(events)
    finally:
        server.stop(grace=0)

    second = run_nightly(config, force=True, show_progress=False)
    logged = second.manifest.metrics["event_log"]
    assert (logged["events"], logged["new_items"], logged["new_users"]) == (len(events), 1, 1)
    assert sum(logged["offsets"].values()) > 0  # where a nearline worker of it starts
    _, current = open_current(config.artifacts.root)
    assert current.version == second.manifest.version

    holder = BundleHolder(config)
    assert holder.refresh()
    bundle = holder.pipeline().bundle
    item = bundle.items.index_of(FRESH_ITEM)
    user = bundle.users.index_of(NEWCOMER)
    assert item >= 0 and user >= 0
    # trained on: the new item has an iALS vector, and its buyers score it above the rest
    vectors = bundle.als.model
    assert np.linalg.norm(vectors.item_factors[item]) > 0
    scores = vectors.user_factors @ vectors.item_factors[item]
    buyers = [bundle.users.index_of(u) for u in fans]
    others = np.setdiff1d(np.arange(len(scores)), buyers)
    assert scores[buyers].mean() > scores[others].mean()
    # the newcomer is served as a known user, and never offered what they touched
    answer = holder.pipeline().recommend(RecommendRequest(NEWCOMER, 10))
    served = {item.item_id for item in answer.items}
    assert len(served) == 10 and not {FRESH_ITEM, "i3"} & served

    # a server starting now replays only what the bundle has not folded in
    later = Event(NEWCOMER, "i4", "view", 1.0, now - 10)
    EventLog(config.events.log_dir, 1 << 20).append([later])
    restarted = start_server(config, watch=False)
    try:
        sessions = restarted.servicer.sessions
        assert len(sessions) == 1
        assert sessions.session_of(NEWCOMER).recent == ("i4",)
        assert sessions.session_of(fans[0]) is None
    finally:
        restarted.stop(grace=0)


def test_a_nightly_killed_half_way_leaves_current_and_the_next_run_succeeds(tmp_path, shop_dir):
    config = shop_config(tmp_path, shop_dir).replace(ranking={"stages": []})
    first = run_nightly(config, show_progress=False).manifest.version
    toml = tmp_path / "nightly.toml"
    toml.write_text(
        toml_text(
            {
                "data": {"source": str(shop_dir), "cache_dir": config.data.cache_dir},
                "artifacts": {"root": config.artifacts.root, "keep": 3},
                "events": {"log_dir": config.events.log_dir},
                "als": {"factors": 16, "iterations": 5},
                "ranking": {"stages": []},
            }
        )
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "recsys_cli", "nightly", "--force", "--config", str(toml)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen = b""
    while b"stage gate and training" not in seen:  # its progress bar says where it is
        chunk = run.stderr.read1(4096)
        assert chunk, f"nightly ended before training: {seen.decode(errors='replace')}"
        seen += chunk
    run.kill()  # SIGKILL: no handler, no cleanup
    assert run.wait(30) == -signal.SIGKILL
    run.stderr.close()

    root = Path(config.artifacts.root)
    assert current_version(root) == first
    open_current(root)  # still verifies
    # a killed publish leaves a staging directory; the next run must not trip over it
    (root / f"{STAGING_PREFIX}20000101T000000000000Z").mkdir()
    second = run_nightly(config, force=True, show_progress=False)  # the lock died with it
    assert second.published and current_version(root) == second.manifest.version != first
    assert not list(root.glob(f"{STAGING_PREFIX}*"))


def test_the_nightly_retires_what_it_folded_and_every_event_counts_once(tmp_path, shop_dir):
    """Compaction: closed segments the current bundle folded in become a Parquet archive;
    the open one stays; the next nightly reads archive and log, each event once; an archive
    whose segments survived a crash does not count them twice; a restart replays nothing."""
    config = shop_config(tmp_path, shop_dir).replace(
        ranking={"stages": []}, events={"segment_bytes": 400}
    )
    log_dir = Path(config.events.log_dir)
    now = int(time.time())
    writer = EventLog(log_dir, config.events.segment_bytes)
    for i in range(10):  # ~100 bytes an event: a new segment every few calls
        writer.append([Event(f"u{i}", f"i{j}", "view", 1.0, now - 100 + i) for j in range(3)])
    segments = sorted(log_dir.glob("*.jsonl"))
    assert len(segments) > 3

    first = run_nightly(config, show_progress=False).manifest
    assert first.metrics["event_log"]["events"] == 30
    left = sorted(log_dir.glob("*.jsonl"))
    assert left == segments[-1:]  # only the segment still being written to
    assert len(list((log_dir / ARCHIVE_DIR).glob("*.parquet"))) == 1
    assert len(logged_events(log_dir)) == 30

    writer.append([Event("u1", "i9", "cart", 1.0, now - 5)])
    writer.close()  # the last segment is closed now too
    second = run_nightly(config, force=True, show_progress=False).manifest
    assert second.metrics["event_log"]["events"] == 31  # each once, from archive and log
    assert not list(log_dir.glob("*.jsonl"))  # all folded and closed: all retired
    assert len(logged_events(log_dir)) == 31

    # a nightly killed after committing an archive but before deleting its segments
    revived = log_dir / segments[0].name
    revived.write_bytes(b'{"user_id": "u0", "item_id": "i0", "event_type": "view", ')
    assert len(logged_events(log_dir)) == 31  # listed in an archive: not read again
    assert retire_segments(log_dir, {}, "any") == 0 and not revived.exists()

    restarted = start_server(config, watch=False)
    try:
        assert len(restarted.servicer.sessions) == 0  # everything is in the bundle
    finally:
        restarted.stop(grace=0)
