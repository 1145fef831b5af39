"""SSRM (seed 003 §II): its samples, its numpy serving path against the torch net, that it
learns a session pattern, and point-in-time user vectors."""

from __future__ import annotations

import dataclasses
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from candidates.als import ALSModel
from candidates.base import make_generator
from candidates.session.generator import ssrm_generator
from candidates.session.live import LiveModel
from candidates.session.reservoir import Reservoir
from candidates.session.sessions import split_sessions
from candidates.session.ssrm import (
    SSRMModel,
    torch_scores,
    training_sessions,
    user_vectors_at_starts,
)
from candidates.session.ssrm_net import Samples, SSRMNet, train
from candidates.session.updates import SELECTIONS, SeenSession, update_ssrm
from pipelines.synthetic import generate_synthetic
from pipelines.training_data import build_training_data
from ranking.features import FeatureBuilder
from recsys.config import load_config
from recsys.context import RequestContext, union
from recsys.torch_runs import seeded
from serving.pipeline import RecommendPipeline, RecommendRequest
from serving.sessions import Session
from tests.stored_files import resave_npz
from tests.test_gag import latest_session

CONFIG = load_config().replace(
    sessions={"ssrm": {"epochs": 8, "dropout": 0.0, "learning_rate": 0.01}}
)


def test_every_prefix_of_a_session_is_a_sample() -> None:
    sessions = split_sessions([0, 0, 0, 1, 1], [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], 60)
    samples = Samples.of(sessions, width=2)
    # session [5, 6, 7]: [5] -> 6, [5, 6] -> 7; session [8, 9]: [8] -> 9 (ids + 1, padded 0)
    assert samples.targets.tolist() == [6, 7, 9]
    assert samples.inputs.tolist() == [[6, 0], [6, 7], [9, 0]]
    assert samples.lengths.tolist() == [1, 2, 1]
    assert samples.session.tolist() == [0, 0, 1]
    # a prefix longer than the width keeps its newest items
    long = Samples.of(split_sessions([0] * 4, [1, 2, 3, 4], [0, 1, 2, 3], 60), width=2)
    assert long.inputs[-1].tolist() == [3, 4] and long.targets[-1] == 4


def cyclic_sessions(n_items: int, count: int, seed: int):
    """Sessions that walk the catalogue: i, i+1, i+2, ... (mod n), of 3-6 items."""
    random = np.random.default_rng(seed)
    users, items, times, clock = [], [], [], 0
    for s in range(count):
        start, length = random.integers(n_items), random.integers(3, 7)
        for j in range(length):
            users.append(s % 7)
            items.append((start + j) % n_items)
            times.append(clock)
            clock += 1
        clock += 1000
    return split_sessions(users, items, times, 60)


def trained_net(n_items: int = 20, seed: int = 0) -> tuple[SSRMNet, np.ndarray]:
    sessions = cyclic_sessions(n_items, 300, seed)
    mf_items = np.random.default_rng(seed).standard_normal((n_items, 4)).astype(np.float32) * 0.3
    users = (
        np.random.default_rng(seed + 1).standard_normal((len(sessions), 4)).astype(np.float32) * 0.3
    )
    with seeded(seed):
        net = SSRMNet(mf_items, CONFIG.sessions.ssrm)
        train(net, Samples.of(sessions, 19), users, CONFIG.sessions.ssrm, epochs=8)
    return net, mf_items


def test_ssrm_learns_what_follows_in_a_session() -> None:
    net, mf_items = trained_net()
    model = SSRMModel.of(net, max_length=20, history=[], known_items=np.ones(20, bool))
    hits = 0
    for start in range(20):
        session = (start + np.arange(4)) % 20
        scores = model.scores(session, np.zeros(4, np.float32), mf_items)
        hits += int(np.argmax(scores) == (start + 4) % 20)
    assert hits >= 16  # chance: 1 in 20


def test_the_numpy_serving_path_scores_as_the_torch_net() -> None:
    net, mf_items = trained_net(seed=3)
    model = SSRMModel.of(net, max_length=20, history=[], known_items=np.ones(20, bool))
    user = np.array([0.5, -0.2, 0.1, 0.3], np.float32)
    for session in (np.array([3]), np.array([1, 2, 3, 4, 5]), np.array([7, 7, 2])):
        np.testing.assert_allclose(
            model.scores(session, user, mf_items),
            torch_scores(net, session, user),
            rtol=1e-4,
            atol=1e-4,
        )
    # an unknown user: uniform attention and no MF half, as the net with a zero vector
    np.testing.assert_allclose(
        model.scores(np.array([1, 2]), None, mf_items),
        torch_scores(net, np.array([1, 2]), np.zeros(4, np.float32)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_a_saved_model_loads_the_same_and_a_damaged_one_is_refused(tmp_path) -> None:
    net, mf_items = trained_net(seed=5)
    model = SSRMModel.of(
        net, max_length=20, history=[{"epoch": 1}], known_items=np.arange(20) % 3 > 0
    )
    model.save(tmp_path)
    loaded = SSRMModel.load(tmp_path)
    session = np.array([4, 5, 6])
    np.testing.assert_array_equal(
        loaded.scores(session, None, mf_items), model.scores(session, None, mf_items)
    )
    np.testing.assert_array_equal(loaded.known_items, model.known_items)
    assert SSRMModel.load(tmp_path / "nothing") is None
    # a model saved before known_items was kept learnt, as far as anyone knows, every item
    resave_npz(tmp_path / "ssrm.npz", drop=("known_items",))
    assert SSRMModel.load(tmp_path).known_items.all()
    broken = dataclasses.replace(model, transform=model.transform[:, :3])
    broken.save(tmp_path)
    with pytest.raises(ValueError, match="transform"):
        SSRMModel.load(tmp_path)


def test_a_sessions_user_vector_sees_only_events_before_it() -> None:
    dataset = generate_synthetic(n_users=200, n_items=150, n_events=6000, n_categories=6, seed=2)
    config = load_config().replace(sessions={"timeout_seconds": 86400}, als={"iterations": 3})
    data = build_training_data(dataset, config)
    sessions = training_sessions(data, config.sessions)
    assert len(sessions) > 50
    items = ALSModel.fit(data.interactions, config.als).item_factors
    before = user_vectors_at_starts(data, sessions, items, config.als)
    cut = int(np.median(data.event_times))
    future = data.event_times >= cut
    shuffled = data.event_items.copy()
    shuffled[future] = np.random.default_rng(0).permutation(shuffled[future])
    after = user_vectors_at_starts(
        dataclasses.replace(data, event_items=shuffled), sessions, items, config.als
    )
    early = sessions.starts <= cut
    np.testing.assert_array_equal(before[early], after[early])  # the future changed nothing
    assert not np.allclose(before[~early], after[~early])  # the test can see a change
    # a user's first session has nothing before it: zeros, as an unknown user at serving
    first_time = np.full(len(data.users), np.iinfo(np.int64).max)
    np.minimum.at(first_time, data.event_users, data.event_times)
    first = sessions.starts == first_time[sessions.users]
    assert first.any() and not np.any(before[first])
    assert np.all(np.linalg.norm(before[~first], axis=1) > 0)


def test_the_session_generator_reads_the_live_session(shop_bundle) -> None:
    """Items LogEvents brought (the request's session) are the newest of the sequence SSRM
    reads: a different session, a different list; the ranking feature is the same score."""
    bundle, config, dataset = shop_bundle
    model = bundle.ssrm.model
    assert model is not None and model.history
    generator = make_generator("session_ssrm", bundle, config)
    pipeline = RecommendPipeline.candidate_stage(bundle, config)
    user = str(dataset.events["user_id"].iloc[-1])
    plain = pipeline.context(RecommendRequest(user_id=user, k=10))
    found = generator.generate(plain, 40)
    assert len(found) == 40 and not set(found.item_ids) & set(plain.sequence.tolist())
    expected = model.scores(
        latest_session(plain, bundle, model.max_length, config.sessions.timeout_seconds),
        bundle.als.model.vector_of(plain),
        bundle.als.model.item_factors,
    )
    np.testing.assert_allclose(found.scores, expected[found.item_ids], rtol=1e-6)
    live = tuple(str(i) for i in bundle.items.ids[found.item_ids[:3]])
    with_session = pipeline.context(
        RecommendRequest(user_id=user, k=10, session=Session(recent=live, never_again=()))
    )
    assert with_session.sequence[:3].tolist() == found.item_ids[:3].tolist()
    moved = generator.generate(with_session, 40)
    assert moved.item_ids.tolist() != found.item_ids.tolist()
    features = FeatureBuilder(
        bundle, ("session_ssrm",), config.sequence, config.sessions.timeout_seconds
    )
    frame = features.build(with_session, union([moved]))
    column = frame.dense[:, frame.dense_names.index("ssrm_score")]
    items = union([moved]).items
    np.testing.assert_allclose(column, generator.scoring(with_session).scores_of(items))
    # a user with no items at all: no session, no candidates, NaN features
    nobody = pipeline.context(RecommendRequest(user_id="never-seen", k=10))
    assert len(generator.generate(nobody, 40)) == 0


def test_the_generator_proposes_only_items_a_session_taught_the_model() -> None:
    """Items no session showed the model are not proposed, however they score (their rows
    learnt nothing but the softmax's push down); the ranking feature still scores every
    item; an update that learns from a session holding them makes them proposable."""
    net, mf_items = trained_net(seed=7)
    known = np.arange(20) >= 10
    model = SSRMModel.of(net, max_length=20, history=[], known_items=known)
    live = LiveModel("ssrm", model, None)
    als = ALSModel(np.zeros((1, 4), np.float32), mf_items)
    generator = ssrm_generator(SimpleNamespace(ssrm=live, als=SimpleNamespace(model=als)))
    ctx = RequestContext(user_index=-1, sequence=np.array([12, 3, 11], np.int64))  # newest first
    session = np.array([11, 3, 12])  # oldest first
    scores = model.scores(session, None, mf_items)
    found = generator.generate(ctx, 20)
    proposable = generator._proposable  # the learnt rows, copied once per model
    assert generator.generate(RequestContext(-1, sequence=np.array([5])), 5)
    assert generator._proposable is proposable
    assert set(found.item_ids) == set(range(10, 20)) - {11, 12}
    assert scores[~known].max() > found.scores.min()  # not for want of a score
    np.testing.assert_allclose(found.scores, scores[found.item_ids], rtol=1e-6)
    assert found.scores.tolist() == sorted(found.scores, reverse=True)
    np.testing.assert_allclose(generator.scores_of(ctx, np.arange(20)), scores, rtol=1e-6)
    assert np.isnan(generator.scores_of(ctx, np.array([20, 25]))).all()  # newer than the model
    updated = update_ssrm(
        model,
        [SeenSession(np.array([2, 4, 6]), np.zeros(4, np.float32))],
        [],
        mf_items,
        CONFIG.sessions.ssrm,
        selection=SELECTIONS[0],
        sample_size=1,
        steps=1,
        random=np.random.default_rng(0),
    )
    assert set(np.flatnonzero(updated.known_items)) == {2, 4, 6, *range(10, 20)}
    assert not model.known_items[[2, 4, 6]].any()  # the served model is not changed
    live.model = updated
    assert {2, 4, 6} <= set(generator.generate(ctx, 20).item_ids)


def stride_sessions(stride: int, count: int, n_items: int, seed: int) -> list[SeenSession]:
    random = np.random.default_rng(seed)
    return [
        SeenSession(
            (random.integers(n_items) + stride * np.arange(5)) % n_items, np.zeros(4, np.float32)
        )
        for _ in range(count)
    ]


def next_item_hits(model: SSRMModel, mf_items: np.ndarray, stride: int) -> int:
    hits = 0
    for start in range(20):
        session = (start + stride * np.arange(4)) % 20
        hits += int(np.argmax(model.scores(session, None, mf_items)) == (start + 4 * stride) % 20)
    return hits


def test_an_online_update_learns_a_drifted_pattern() -> None:
    """Pre-trained on sessions that step by 1, updated on sessions that step by 3 and a
    reservoir of the old ones: the update learns the new pattern."""
    net, mf_items = trained_net()
    model = SSRMModel.of(net, max_length=20, history=[], known_items=np.ones(20, bool))
    before = next_item_hits(model, mf_items, stride=3)
    reservoir: Reservoir[SeenSession] = Reservoir(50, seed=0)
    reservoir.extend(stride_sessions(1, 50, 20, seed=1))
    new = stride_sessions(3, 100, 20, seed=2)
    for selection in SELECTIONS:
        updated = update_ssrm(
            model,
            new,
            reservoir.held,
            mf_items,
            CONFIG.sessions.ssrm,
            selection=selection,
            sample_size=64,
            steps=40,
            random=np.random.default_rng(0),
        )
        assert next_item_hits(updated, mf_items, stride=3) >= before + 8, selection
    assert next_item_hits(model, mf_items, stride=3) == before  # the given model is unchanged
    with pytest.raises(ValueError, match="selection"):
        update_ssrm(
            model,
            new,
            reservoir.held,
            mf_items,
            CONFIG.sessions.ssrm,
            selection="best",
            sample_size=8,
            steps=1,
            random=np.random.default_rng(0),
        )


def test_a_bundle_from_before_session_models_still_loads(shop_bundle, tmp_path) -> None:
    """An optional component: a bundle without its directory loads with no session model
    (an upgrade need not wait for a nightly), and the generator answers nothing."""
    bundle, config, _ = shop_bundle
    bundle.save(tmp_path / "old")
    shutil.rmtree(tmp_path / "old" / "ssrm")
    loaded = type(bundle).load(tmp_path / "old", "old", config)
    assert loaded.ssrm.model is None
    ctx = RecommendPipeline.candidate_stage(loaded, config).context(
        RecommendRequest(user_id=str(loaded.users.ids[0]), k=5)
    )
    assert len(make_generator("session_ssrm", loaded, config).generate(ctx, 10)) == 0
    # a component that is not optional is still required
    shutil.rmtree(tmp_path / "old" / "ease")
    with pytest.raises(FileNotFoundError, match="ease"):
        type(bundle).load(tmp_path / "old", "old", config)
