"""Ranking features: one path for training and serving, hand-checked values, no leakage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from candidates.als_steps import solve_rows
from pipelines.loaders import load_dataset_dir
from pipelines.ranking_data import (
    build_ranking_data,
    draw_requests,
    labelling_events,
)
from recsys.interactions import event_weights
from serving.pipeline import RecommendRequest
from tests.conftest import shop_config


@pytest.fixture(scope="module")
def shop(shop_dir, tmp_path_factory):
    config = shop_config(tmp_path_factory.mktemp("features"), shop_dir)
    config = config.replace(
        # the request's own item alone labels it here; graded labels have their own test
        ranking={
            "random_negatives": 10,
            "max_requests": 300,
            "nearline_vectors": True,
            "later_positives": 0,
        },
        sequence={"ease_features": True},
    )
    dataset = load_dataset_dir(shop_dir)
    data = build_ranking_data(dataset, config)
    return dataset, config, data


def test_training_rows_equal_what_serving_computes(shop):
    _, _, data = shop
    frame = data.frame
    with_sequence = 0
    for group, request in list(enumerate(data.requests))[:10]:
        pipeline = data.pipelines[request.period]
        session = data.sessions[group]
        ctx = pipeline.context(RecommendRequest(user_id=request.user, k=10, session=session))
        # what the nearline store gives serving for a user who acted since the bundle
        ctx = dataclasses.replace(ctx, user_vector=data.vectors[group])
        served_candidates, _ = pipeline.candidates(ctx)
        served = pipeline.features.build(ctx, served_candidates)
        rows = frame.groups == group
        trained_items = frame.sparse[rows, 1] - 1
        # the training rows are a sample of the served candidates (the positive, and
        # ranking.negatives_per_request others) plus random negatives
        proposed = np.isin(trained_items, served_candidates.items)
        assert proposed.sum() >= min(len(served_candidates), 20)
        position = np.searchsorted(served_candidates.items, trained_items[proposed])
        np.testing.assert_array_equal(frame.dense[rows][proposed], served.dense[position])
        np.testing.assert_array_equal(frame.sparse[rows][proposed], served.sparse[position])
        # seq_decayed_ease by hand: the sequence's rows of EASE's B, the r-th newest x 0.9^r
        decayed = served.dense[:, served.dense_names.index("seq_decayed_ease")]
        ease, sequence = pipeline.bundle.ease, ctx.sequence
        assert len(ease.items) == ease.n_items  # the shop's EASE models every item
        if not len(sequence):  # a user new to the period's bundle, with no session
            assert np.isnan(decayed).all()
            continue
        with_sequence += 1
        expected = sum(0.9**r * ease.weights[item] for r, item in enumerate(sequence))
        np.testing.assert_allclose(decayed, expected[served_candidates.items], rtol=1e-4)
    assert with_sequence >= 5


def test_feature_values_by_hand(shop):
    dataset, _, data = shop
    frame = data.frame
    group = next(
        g
        for g, r in enumerate(data.requests)
        if data.pipelines[r.period].bundle.users.index_of(r.user) >= 0
    )
    request = data.requests[group]
    pipeline = data.pipelines[request.period]
    bundle = pipeline.bundle
    names = frame.dense_names
    col = {name: names.index(name) for name in names}
    before = dataset.events[dataset.events["timestamp"] < data.cutoffs[request.period]]
    user = request.user
    rows = np.flatnonzero(frame.groups == group)
    items = frame.sparse[rows, 1] - 1
    u = bundle.users.index_of(user)
    als = bundle.als.model
    np.testing.assert_allclose(
        frame.dense[rows, col["als_dot"]], als.item_factors[items] @ als.user_factors[u], rtol=1e-5
    )
    mine = before[before["user_id"] == user]
    assert frame.dense[rows[0], col["user_events"]] == len(mine)
    assert frame.dense[rows[0], col["user_distinct_items"]] == mine["item_id"].nunique()
    # an item a generator did not find has NaN (missing) in its columns, never 0
    score_columns = [col[f"gen_{g}_score"] for g in pipeline.features.generator_names]
    found = ~np.isnan(frame.dense[:, score_columns])
    np.testing.assert_array_equal(found.sum(axis=1), frame.dense[:, col["n_sources"]])
    rank_columns = [col[f"gen_{g}_rank"] for g in pipeline.features.generator_names]
    np.testing.assert_array_equal(found, ~np.isnan(frame.dense[:, rank_columns]))
    # category recency: days since the user's newest event in one of the item's categories
    catalog = dataset.items.set_index("item_id")["categories"]
    now = bundle.stats.now
    for row, item in zip(rows[:20], items[:20], strict=True):
        item_categories = set(catalog[bundle.items.ids[item]].split("|"))
        touched = mine[
            mine["item_id"].map(
                lambda i, wanted=item_categories: bool(wanted & set(catalog[i].split("|")))
            )
        ]
        got = frame.dense[row, col["category_recency_days"]]
        if len(touched):
            assert got == pytest.approx((now - touched["timestamp"].max()) / 86400, rel=1e-5)
        else:
            assert np.isnan(got)


def test_each_label_is_the_requests_positive(shop):
    dataset, config, data = shop
    frame = data.frame
    assert set(np.unique(frame.labels)) == {0.0, 1.0}
    events = dataset.events
    for group, request in list(enumerate(data.requests))[:30]:
        rows = frame.groups == group
        bundle = data.pipelines[request.period].bundle
        labelled = bundle.items.ids[frame.sparse[rows, 1][frame.labels[rows] == 1] - 1]
        assert labelled.tolist() == [events["item_id"].iat[request.row]]
        assert events["user_id"].iat[request.row] == request.user
        # the label is the user's first event with an item they convert on
        item = events["item_id"].iat[request.row]
        mine = events[events["user_id"] == request.user]
        assert item not in set(
            events.iloc[: request.row].loc[mine.index[mine.index < request.row], "item_id"]
        )
        later = mine[(mine["item_id"] == item)]["event_type"]
        assert later.isin(config.data.positive_events).any()
    every = config.replace(ranking={"label_events": "all"})
    drawn = draw_requests(dataset, every, data.cutoffs, seed=0)
    assert {events["event_type"].iat[r.row] for r in drawn} >= {"view"}


def test_no_leakage_a_request_sees_only_what_came_before_it(shop):
    dataset, _, data = shop
    events = dataset.events
    times = events["timestamp"].to_numpy()
    assert len(data.requests) >= 100 and len(set(data.users)) >= 50
    for group, request in enumerate(data.requests):
        start = data.cutoffs[request.period]
        # the period's bundle was built on events before its start, and the request is later
        assert data.pipelines[request.period].bundle.stats.now < start <= times[request.row]
        session = data.sessions[group]
        if session is None:
            continue
        mine = events.iloc[: request.row]
        mine = mine[(mine["user_id"] == request.user) & (mine["timestamp"] >= start)]
        assert set(session.recent) <= set(mine["item_id"].astype(str))
        # each item's time is its latest event's before the request, as the store keeps it
        latest = mine.groupby(mine["item_id"].astype(str))["timestamp"].max()
        assert list(session.times) == [int(latest[item]) for item in session.recent]


def test_training_population_covers_long_inactive_users(shop):
    """Served users are mostly long past their last event; the training requests must
    include such users, not only those active right before a cut."""
    _, _, data = shop
    frame = data.frame
    days = frame.dense[:, frame.dense_names.index("user_days_since_last")]
    first_rows = np.r_[0, np.flatnonzero(np.diff(frame.groups)) + 1]
    trained = days[first_rows]
    served = data.pipelines[-1].bundle.stats
    served_days = (served.now - served.user_last_time) / 86_400
    long_inactive = np.quantile(served_days, 0.75)
    assert long_inactive > 1.0
    # the served quarter that is longest inactive is a twentieth or more of the requests (8%
    # here), and the training spread reaches past the served median
    assert np.mean(trained >= long_inactive) >= 0.05
    assert np.nanquantile(trained, 0.9) >= np.median(served_days)
    # and new users (unknown to the period's bundle, known by their session) are there too
    assert np.isnan(trained).any()


def test_a_request_with_a_session_sees_the_nearline_vector_of_its_moment(shop):
    """seed 004, "Пошагаем": one ALS step from the period bundle's item vectors over the
    user's events before the request, never after it; without a session, the bundle's."""
    dataset, config, data = shop
    events = dataset.events
    weights = event_weights(events, config)
    stepped = [g for g, vector in enumerate(data.vectors) if vector is not None]
    assert len(stepped) >= 20 and len(stepped) < len(data.requests)
    for group in stepped[:20]:
        request = data.requests[group]
        assert data.sessions[group] is not None  # only users who acted since the bundle
        bundle = data.pipelines[request.period].bundle
        factors = bundle.als.model.item_factors
        before = np.flatnonzero(
            (events["user_id"].to_numpy() == request.user) & (np.arange(len(events)) < request.row)
        )
        items = bundle.items.to_index(events["item_id"].astype(str).to_numpy()[before])
        known = items >= 0
        row = sp.csr_matrix(
            (weights[before][known], (np.zeros(known.sum(), int), items[known])),
            shape=(1, len(factors)),
        )
        expected = solve_rows(factors, row, config.als.alpha, config.als.regularization)[0]
        np.testing.assert_allclose(data.vectors[group], expected, rtol=1e-4, atol=1e-5)
        user = bundle.users.index_of(request.user)
        if user >= 0:  # the session moved the vector away from the bundle's
            assert not np.allclose(data.vectors[group], bundle.als.model.user_factors[user])
    for group in range(len(data.requests)):
        if data.sessions[group] is None:
            assert data.vectors[group] is None
    off = build_ranking_data(dataset, config.replace(ranking={"nearline_vectors": False}))
    assert all(vector is None for vector in off.vectors)


GRADE = 4  # not the default, so the test sees the setting work


def test_later_positives_grade_the_users_next_items(shop):
    dataset, config, _ = shop
    graded = config.replace(
        ranking={"later_positives": 3, "next_item_grade": GRADE, "nearline_vectors": False}
    )
    data = build_ranking_data(dataset, graded)
    frame, events = data.frame, dataset.events
    assert set(np.unique(frame.labels)) == {0.0, 1.0, GRADE}
    labelling = labelling_events(events, graded)
    later_seen = 0
    for group, request in enumerate(data.requests):
        rows = frame.groups == group
        items = data.pipelines[request.period].bundle.items.ids[frame.sparse[rows, 1] - 1]
        labels = frame.labels[rows]
        assert items[labels == GRADE].tolist() == [events["item_id"].iat[request.row]]
        # grade 1: among the user's next three labelling items after the request, no other
        mine = np.flatnonzero(labelling & (events["user_id"] == request.user).to_numpy())
        next_three = set(events["item_id"].to_numpy()[mine[mine > request.row][:3]])
        assert set(items[labels == 1]) <= next_three
        later_seen += int((labels == 1).sum())
    assert later_seen > 0


def test_horizon_requests_ask_for_the_users_whole_period(shop):
    """ranking.requests = "horizons": one request per user and period, at the period's start
    (its bundle, no session, no stepped vector), labelled by every item the user takes up
    in the period; "auto" picks it for a chronological validation split."""
    dataset, config, _ = shop
    assert config.request_kind == "moments"
    chrono = config.replace(evaluation={"protocol": "chronological"})
    assert chrono.request_kind == "horizons"
    assert chrono.replace(ranking={"requests": "moments"}).request_kind == "moments"
    data = build_ranking_data(dataset, chrono.replace(ranking={"max_requests": 0}))
    events, frame = dataset.events, data.frame
    times = events["timestamp"].to_numpy()
    labelling = labelling_events(events, chrono)
    period = np.searchsorted(np.asarray(data.cutoffs), times, side="right") - 1
    users = events["user_id"].astype(str).to_numpy()
    asked = {(u, p) for u, p in zip(users[labelling], period[labelling], strict=True) if p >= 0}
    assert data.drawn == len(asked)
    seen, several = set(), 0
    for group, request in enumerate(data.requests):
        assert request.horizon and (request.user, request.period) not in seen
        seen.add((request.user, request.period))
        assert data.sessions[group] is None and data.vectors[group] is None
        mine = np.flatnonzero(labelling & (users == request.user) & (period == request.period))
        assert request.row == mine[0]
        rows = frame.groups == group
        items = data.pipelines[request.period].bundle.items.ids[frame.sparse[rows, 1] - 1]
        taken = set(items[frame.labels[rows] == 1])
        assert taken and taken <= set(events["item_id"].to_numpy()[mine])
        several += len(taken) > 1
    assert set(np.unique(frame.labels)) == {0.0, 1.0}
    assert several >= 10  # most requests are labelled by more than one item
