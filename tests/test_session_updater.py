"""`recsys session-updater`: sessions from the event log train SSRM, GAG and MGIA further;
the weights are published like bundles, swapped in by serving under load, refused when
damaged, and a killed updater resumes with nothing lost or learnt twice (issue "Streaming
session recommenders")."""

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

from candidates.session.live import LiveModel, session_models_root
from pipelines.nightly import run_nightly
from pipelines.session_updater import SessionUpdater, run_session_updater
from recsys.bundle import BundleError, current_version
from serving.events import Event, EventLog
from serving.holder import BundleHolder
from tests.conftest import shop_config
from tests.serving_harness import Load, ServerProcess, toml_text

NOW = int(time.time()) - 86_400
GENERATORS = ["als", "popularity", "session_ssrm", "session_gag", "session_mgia"]
MODELS = ["ssrm", "gag", "mgia"]
SESSIONS = {
    "models": MODELS,
    "timeout_seconds": 60,
    **{model: {"epochs": 2} for model in MODELS},
}


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory, shop_dir):
    """A published shop bundle with SSRM, GAG and MGIA (60 s sessions), no rankers."""
    tmp = tmp_path_factory.mktemp("session_updater")
    config = shop_config(tmp, shop_dir).replace(
        ranking={"stages": []}, sessions=SESSIONS, serving={"generators": GENERATORS}
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


def assert_same_weights(a, b) -> None:
    if hasattr(a, "net"):  # GAG, MGIA: torch nets
        for (name, x), y in zip(
            a.net.state_dict().items(), b.net.state_dict().values(), strict=True
        ):
            np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=name)
    else:  # SSRM: numpy arrays
        np.testing.assert_array_equal(a.transform, b.transform)


def test_logged_sessions_train_and_publish_and_serving_swaps_them_in(config):
    """Every session model of the bundle is updated, by its own selection rule, on the same
    new sessions and reservoir, published in one version and swapped in by serving."""
    config, version = config
    root = Path(config.artifacts.root)
    # 20 users walk i40..i43; each walk is a session, closed when the stream moves on
    log(config, [*walks(range(20), 40, NOW), Event("u99", "i1", "click", 1.0, NOW + 1000)])
    updater = SessionUpdater(root, version, config)
    assert list(updater.models) == MODELS
    assert len(updater.reservoir) > 0  # drawn by the nightly from its training sessions
    seen_before = updater.reservoir.seen
    assert all(s.user >= 0 for s in updater.reservoir.held)  # with their users, for GAG's table
    assert updater.read() == 81
    assert len(updater.finished) == 20 and list(updater.open) == ["u99"]
    items, users = updater.items, updater.users
    walk_items = items.to_index([f"i{j}" for j in range(40, 44)]).tolist()
    assert all(s.items.tolist() == walk_items for s in updater.finished)
    assert sorted(s.user for s in updater.finished) == sorted(
        users.to_index([f"u{u}" for u in range(20)]).tolist()
    )

    holder = BundleHolder(config)
    assert holder.refresh()
    bundle = holder.pipeline().bundle
    lives: dict[str, LiveModel] = {model: getattr(bundle, model) for model in MODELS}
    before = {model: live.model for model, live in lives.items()}
    report = updater.update()
    assert report is not None and report.sessions == 20 and updater.finished == []
    assert report.models == tuple(MODELS)
    assert updater.reservoir.seen == seen_before + 20  # offered once, for all three models
    assert current_version(session_models_root(root, version)) == report.published
    holder.refresh()  # the poll that follows a publication
    walk, next_item = np.array(walk_items[:3]), walk_items[3]
    user = users.index_of("u0")

    def rank(model_name: str, model) -> int:  # of the walk's next item, 0 = first
        if model_name == "ssrm":
            scores = model.scores(walk, None, updater.item_factors)
        else:
            scores = model.session_scores(walk, user)
        return int((scores > scores[next_item]).sum())

    for model, live in lives.items():
        assert live.published == report.published and live.model is not before[model], model
        assert rank(model, live.model) < rank(model, before[model]), model  # it moved up
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
    for model in MODELS:  # every model resumes from the publication, not the bundle
        assert_same_weights(second.models[model], first.models[model])
    assert second.update().published > published


def test_damaged_weights_are_refused_and_the_ones_in_service_stay(config, caplog):
    config, version = config
    root = Path(config.artifacts.root)
    log(config, [*walks(range(10), 40, NOW), Event("u99", "i1", "click", 1.0, NOW + 1000)])
    updater = SessionUpdater(root, version, config)
    updater.read()
    published = updater.update().published
    weights = session_models_root(root, version) / published / "gag" / "gag.npz"
    weights.write_bytes(weights.read_bytes()[:100])  # a torn copy
    holder = BundleHolder(config)
    assert holder.refresh()
    bundle = holder.pipeline().bundle
    lives: list[LiveModel] = [getattr(bundle, model) for model in MODELS]
    models = [live.model for live in lives]
    holder.refresh()
    assert [live.model for live in lives] == models  # the checksums cover every model's files
    assert all(live.published is None for live in lives)
    assert "refusing gag session weights" in caplog.text and "corrupt" in caplog.text
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
            "sessions": {"models": MODELS, "timeout_seconds": 60},
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
                swapped = [f"serving {model} session weights {published[0]}" for model in MODELS]

                def swaps() -> list[int]:
                    text = server.log_path.read_text()
                    return [text.count(line) for line in swapped]

                while time.monotonic() < deadline and min(swaps()) < 2:
                    stop.wait(0.1)
                answered = len(load.versions)
                assert load.wait_for(answered + 30, 60)
            finally:
                stop.set()
                worker.join(30)
        assert swaps() == [2, 2, 2]  # every model, in both serving processes
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
                "sessions": {"models": MODELS, "timeout_seconds": 60, "update_seconds": 0.5},
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
