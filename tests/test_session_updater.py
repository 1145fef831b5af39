"""`recsys session-updater`: sessions from the event log train SSRM further; the weights
are published like bundles, swapped in by serving under load, refused when damaged, and a
killed updater resumes with nothing lost or learnt twice (issue "Streaming session
recommenders")."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from candidates.session.live import MODEL_DIR, LiveSSRM, session_models_root
from pipelines.nightly import run_nightly
from pipelines.session_updater import SessionUpdater, run_session_updater
from recsys.bundle import BundleError, current_version
from serving.events import Event, EventLog
from serving.holder import BundleHolder
from tests.conftest import shop_config
from tests.serving_harness import Load, ServerProcess, toml_text

NOW = int(time.time()) - 86_400
GENERATORS = ["als", "popularity", "session_ssrm"]


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory, shop_dir):
    """A published shop bundle with SSRM (60 s sessions), no rankers."""
    tmp = tmp_path_factory.mktemp("session_updater")
    config = shop_config(tmp, shop_dir).replace(
        ranking={"stages": []},
        sessions={"models": ["ssrm"], "timeout_seconds": 60, "ssrm": {"epochs": 2}},
        serving={"generators": GENERATORS},
    )
    version = run_nightly(config, show_progress=False).manifest.version
    return config, version


@pytest.fixture
def config(bundle_root, tmp_path):
    """The module's bundle under a root of this test's own."""
    base, version = bundle_root
    root = tmp_path / "artifacts"
    shutil.copytree(base.artifacts.root, root)
    return base.replace(
        artifacts={"root": str(root)}, events={"log_dir": str(tmp_path / "events")}
    ), version


def walks(users: range, start: int, at: int) -> list[Event]:
    """Each user clicks i<start>, i<start+1>, ... i<start+3>, 10 s apart, from time `at`."""
    return [
        Event(f"u{u}", f"i{start + j}", "click", 1.0, at + 10 * j) for u in users for j in range(4)
    ]


def log(config, events: list[Event]) -> None:
    EventLog(config.events.log_dir, 1 << 20).append(events)


def test_logged_sessions_train_and_publish_and_serving_swaps_them_in(config):
    config, version = config
    root = Path(config.artifacts.root)
    # 20 users walk i40..i43; each walk is a session, closed when the stream moves on
    log(config, [*walks(range(20), 40, NOW), Event("u99", "i1", "click", 1.0, NOW + 1000)])
    updater = SessionUpdater(root, version, config)
    reservoir_before = len(updater.reservoir)
    assert reservoir_before > 0  # drawn from the bundle's training sessions
    assert updater.read() == 81
    assert len(updater.finished) == 20 and list(updater.open) == ["u99"]
    assert all(
        s.items.tolist() == updater.items.to_index([f"i{j}" for j in range(40, 44)]).tolist()
        for s in updater.finished
    )

    holder = BundleHolder(config)
    assert holder.refresh()
    live = holder.pipeline().bundle.ssrm
    before = live.model
    report = updater.update()
    assert report is not None and report.sessions == 20 and updater.finished == []
    assert current_version(session_models_root(root, version)) == report.published
    holder.refresh()  # the poll that follows a publication
    assert live.published == report.published and live.model is not before
    items = updater.items
    walk = items.to_index(["i40", "i41", "i42"])
    next_item = items.index_of("i43")

    def rank(model) -> int:  # of the walk's next item, 0 = first
        scores = model.scores(walk, None, updater.item_factors)
        return int((scores > scores[next_item]).sum())

    assert rank(live.model) < rank(before)  # the walk's next item moved up
    assert updater.update() is None  # nothing new to learn from


def test_a_killed_updater_resumes_with_nothing_lost_or_learnt_twice(config):
    config, version = config
    root = Path(config.artifacts.root)
    log(config, walks(range(10), 40, NOW) + walks(range(10, 15), 60, NOW + 500))
    first = SessionUpdater(root, version, config)
    first.read()
    assert len(first.finished) == 10 and len(first.open) == 5  # the later walks still open
    published = first.update().published
    # the process dies here; a new one resumes from the publication
    log(config, [Event("u99", "i1", "click", 1.0, NOW + 5000)])
    second = SessionUpdater(root, version, config)
    assert second.updates == 1 and second.reservoir.seen == first.reservoir.seen
    assert sorted(second.open) == sorted(first.open)
    assert second.read() == 1  # only the event logged since: none read twice
    assert len(second.finished) == 5  # the open walks, closed by the stream moving on
    np.testing.assert_array_equal(second.model.transform, first.model.transform)
    assert second.update().published > published


def test_damaged_weights_are_refused_and_the_ones_in_service_stay(config, caplog):
    config, version = config
    root = Path(config.artifacts.root)
    log(config, [*walks(range(10), 40, NOW), Event("u99", "i1", "click", 1.0, NOW + 1000)])
    updater = SessionUpdater(root, version, config)
    updater.read()
    published = updater.update().published
    weights = session_models_root(root, version) / published / MODEL_DIR / "ssrm.npz"
    weights.write_bytes(weights.read_bytes()[:100])  # a torn copy
    holder = BundleHolder(config)
    assert holder.refresh()
    live: LiveSSRM = holder.pipeline().bundle.ssrm
    model = live.model
    holder.refresh()
    assert live.model is model and live.published is None
    assert "refusing session weights" in caplog.text and "corrupt" in caplog.text
    with pytest.raises(BundleError, match="corrupt"):
        SessionUpdater(root, version, config)  # the updater will not build on it either


def test_an_update_published_while_serving_under_load_fails_no_request(config, tmp_path):
    config, _ = config
    config = config.replace(sessions={"update_seconds": 0.2}, serving={"bundle_poll_seconds": 0.2})
    server = ServerProcess(
        tmp_path,
        {
            "data": {"source": config.data.source, "cache_dir": config.data.cache_dir},
            "artifacts": {"root": config.artifacts.root},
            "ranking": {"stages": []},
            "serving": {
                "port": 0,
                "processes": 2,
                "metrics_port": 0,
                "generators": GENERATORS,
                "bundle_poll_seconds": 0.2,
            },
            "events": {"log_dir": config.events.log_dir},
            "sessions": {"models": ["ssrm"], "timeout_seconds": 60},
            "nearline": {"metrics_port": 0},
        },
    ).start()
    try:
        log(config, [*walks(range(30), 40, NOW), Event("u99", "i1", "click", 1.0, NOW + 1000)])
        stop, published = threading.Event(), []
        worker = threading.Thread(
            target=run_session_updater,
            args=(config, stop, lambda report: published.append(report.published)),
            daemon=True,
        )
        with Load(server.address, threads=3, user="u1") as load:
            assert load.wait_for(30, 60)
            worker.start()
            try:
                deadline = time.monotonic() + 60
                while not published and time.monotonic() < deadline:
                    stop.wait(0.1)
                assert published, "the updater published nothing"
                swapped = f"serving session weights {published[0]}"
                while (
                    time.monotonic() < deadline and server.log_path.read_text().count(swapped) < 2
                ):
                    stop.wait(0.1)
                answered = len(load.versions)
                assert load.wait_for(answered + 30, 60)
            finally:
                stop.set()
                worker.join(30)
        assert server.log_path.read_text().count(swapped) == 2  # both serving processes
        assert load.failures == []
        assert len(load.versions) > 60
    finally:
        server.stop()


def test_the_command_publishes_and_stops_on_sigterm(config, tmp_path):
    """`recsys session-updater` in a process of its own, as deploy/ runs it: it finds the
    bundle's components itself (a fresh process has imported none), publishes, and exits 0
    on SIGTERM."""
    config, version = config
    log(config, [*walks(range(10), 40, NOW), Event("u99", "i1", "click", 1.0, NOW + 1000)])
    path = tmp_path / "updater.toml"
    path.write_text(
        toml_text(
            {
                "data": {"source": config.data.source, "cache_dir": config.data.cache_dir},
                "artifacts": {"root": config.artifacts.root},
                "events": {"log_dir": config.events.log_dir},
                "sessions": {"models": ["ssrm"], "timeout_seconds": 60, "update_seconds": 0.5},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys_cli", "session-updater", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:  # blocks until the process writes or exits
            lines.append(line)
            if "published" in line:
                break
        assert any("published" in line for line in lines), "".join(lines)
        published = current_version(session_models_root(Path(config.artifacts.root), version))
        assert published is not None and published in lines[-1]
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
