"""Quality measured through the served path (issue "Ranking that earns its place"): the
stage gate, the regression gate, the evaluation's lists against Recommend, the report."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest

from candidates.als import ALSGenerator
from pipelines.loaders import load_dataset_dir
from pipelines.nightly import _regression_gate, _same_protocol, run_nightly, train_bundle
from pipelines.protocols import holdout
from pipelines.quality_report import evaluate_quality, write_quality_report
from pipelines.served_evaluation import (
    UNION,
    _baseline_lists,
    _servable_rows,
    _served_lists,
    evaluate_served,
    order_label,
)
from pipelines.stage_gate import gate_rank, gate_stages
from ranking.frame import RankingFrame
from ranking.gbdt import GBDTRanker
from serving.grpc.client import RecommenderClient
from serving.pipeline import RecommendPipeline, RecommendRequest
from tests.conftest import shop_config


def test_nightly_records_the_stage_gate_in_the_manifest(ml_nightly):
    assert ml_nightly.published
    validation = ml_nightly.manifest.metrics["validation"]
    assert validation["protocol"] == "leave_last_out" and validation["users"] > 100
    decided = {d["stage"] for d in validation["decisions"]}
    assert decided == {"lightgbm", "dlrm"}
    assert set(validation["kept"]) | set(validation["dropped"]) == decided
    figures = validation["validation"]
    final = next(m for m in reversed(list(figures)) if m.startswith("served"))
    # the served final list (every stage: this session's config turns the gate off)
    assert final == "served: + dlrm" and validation["kept"] == ["lightgbm", "dlrm"]
    assert figures[final]["NDCG@10"][0] > figures["most popular"]["NDCG@10"][0]
    # Rank's own pass on held-out + 99 sampled, over the stages Recommend kept
    rank = validation["rank"]
    assert rank["protocol"] == "sampled"
    assert [d["stage"] for d in rank["decisions"]] == validation["kept"]
    assert set(rank["dropped"]) <= set(validation["kept"])
    # ... which first chose the order of Rank's input: the best of those configured
    assert list(rank["orders"]) == ["als", "ease", "recent_ease"]
    assert rank["orders"][rank["order"]] == max(rank["orders"].values())
    assert ml_nightly.manifest.metrics["ranker_training"]["training requests"] > 100


def test_evaluation_lists_are_the_lists_recommend_serves(ml_nightly, ml_pipeline, ml_server):
    users = [str(u) for u in ml_pipeline.bundle.users.ids[:15]]
    lists = _served_lists(ml_pipeline, users, None, "final", False)
    with RecommenderClient(f"127.0.0.1:{ml_server.port}") as client:
        for row, user in enumerate(users):
            served = [item.item_id for item in client.recommend(user, 50).items]
            assert ml_pipeline.bundle.items.to_external(lists[row]).tolist() == served


@pytest.fixture(scope="module")
def shop(shop_dir, tmp_path_factory):
    config = shop_config(tmp_path_factory.mktemp("quality"), shop_dir)
    config = config.replace(ranking={"stage_gate": True})
    return load_dataset_dir(shop_dir), config


def test_a_ranker_trained_on_shuffled_labels_is_dropped(shop):
    dataset, config = shop
    config = config.replace(ranking={"stages": ["lightgbm"], "lightgbm_serving": "booster"})
    held = holdout(dataset, "leave_last_out", config)
    trained = train_bundle(held.train, config)
    bundle = trained.validation_bundle
    frame = _noise_frame(bundle)
    noise = GBDTRanker.fit(frame, frame, config.lightgbm)
    shuffled = bundle.replaced(
        rankers=dataclasses.replace(bundle.rankers, models={"lightgbm": noise}, dropped={})
    )
    valid = holdout(held.train, "leave_last_out", config, seed=1)
    gate = gate_stages(shuffled, config, valid)
    assert gate.kept == () and "lightgbm" in gate.dropped
    assert "does not beat its input" in gate.dropped["lightgbm"]
    # the decision carries the gap's paired standard error, over the same users' lists
    users = config.evaluation.max_users  # the gate's sample of the validation users
    trial = evaluate_served(shuffled, config, valid, "validation", baselines=False, max_users=users)
    gain = trial.per_user_ndcg["served: + lightgbm"] - trial.per_user_ndcg[UNION]
    decision = gate.decisions[0]
    assert decision.value - decision.input_value == pytest.approx(gain.mean())
    assert decision.error > 0
    assert decision.error == pytest.approx(gain.std(ddof=1) / np.sqrt(len(gain)))
    assert f"± {decision.error:.4f} paired over {len(gain)} users" in decision.reason
    # with the stage dropped the served list is its input's order: the union's
    served = shuffled.replaced(rankers=dataclasses.replace(shuffled.rankers, dropped=gate.dropped))
    users = list(valid.users[:20])
    union_config = config.replace(ranking={"stages": []})
    np.testing.assert_array_equal(
        _served_lists(RecommendPipeline(served, config), users, None, "gated", False),
        _served_lists(RecommendPipeline(served, union_config), users, None, "union", False),
    )


def test_rank_leaves_out_a_stage_that_orders_a_callers_items_worse(shop):
    """Rank's own pass (held-out item + 99 sampled, served through Rank) leaves out a ranker
    that orders them no better than its input; Rank then serves its input's order (the one
    the pass chose) while Recommend keeps the ranker."""
    dataset, config = shop
    config = config.replace(ranking={"stages": ["lightgbm"], "lightgbm_serving": "booster"})
    held = holdout(dataset, "leave_last_out", config)
    bundle = train_bundle(held.train, config).validation_bundle
    noise = GBDTRanker.fit(_noise_frame(bundle), _noise_frame(bundle), config.lightgbm)
    rankers = dataclasses.replace(
        bundle.rankers, models={"lightgbm": noise}, dropped={}, rank_dropped={}
    )
    shuffled = bundle.replaced(rankers=rankers)
    rank_valid = holdout(held.train, "sampled", config, seed=1)
    gate = gate_rank(shuffled, config, rank_valid, ("lightgbm",))
    dropped, decisions = gate.dropped, gate.decisions
    assert list(dropped) == ["lightgbm"] and "does not beat its input" in dropped["lightgbm"]
    assert decisions[0].value <= decisions[0].input_value == gate.orders[gate.order]
    with pytest.raises(ValueError, match="sampled"):
        gate_rank(shuffled, config, holdout(held.train, "leave_last_out", config, seed=1), ())
    rankers = dataclasses.replace(rankers, rank_order=gate.order)
    left_out = shuffled.replaced(rankers=dataclasses.replace(rankers, rank_dropped=dropped))
    served = RecommendPipeline(left_out, config)
    plain = RecommendPipeline(left_out, config.replace(ranking={"stages": []}))
    ranked = RecommendPipeline(shuffled, config)
    user, items = rank_valid.users[0], rank_valid.candidates[0]
    by_rank = [item.item_id for item in served.rank(user, items)]
    assert by_rank == [item.item_id for item in plain.rank(user, items)]
    assert by_rank != [item.item_id for item in ranked.rank(user, items)]
    placed_by = "als_dot" if gate.order == "als" else gate.order  # the iALS order's name
    assert {item.stage for item in served.rank(user, items)} == {placed_by}
    request = RecommendRequest(user_id=user, k=20)
    assert served.recommend(request).items == ranked.recommend(request).items


def test_ranks_input_takes_the_order_that_serves_it_best(shop):
    """Rank's pass serves each of ranking.rank_orders on held-out + 99 validation and keeps
    the best: with the iALS order turned upside down, an EASE order wins; Rank serves it,
    and the sampled evaluation shows it beside the iALS order as Rank's final list."""
    dataset, config = shop
    config = config.replace(ranking={"stages": []})
    held = holdout(dataset, "leave_last_out", config)
    bundle = train_bundle(held.train, config).validation_bundle
    model = bundle.als.model
    upside_down = dataclasses.replace(model, item_factors=-model.item_factors)
    worse = bundle.replaced(als=ALSGenerator(upside_down, bundle.als.index))
    rank_valid = holdout(held.train, "sampled", config, seed=1)
    gate = gate_rank(worse, config, rank_valid, ())
    assert list(gate.orders) == ["als", "ease", "recent_ease"] and gate.decisions == ()
    assert gate.order != "als" and gate.orders[gate.order] == max(gate.orders.values())
    assert gate.orders["als"] < gate.orders[gate.order]
    chosen = worse.replaced(rankers=dataclasses.replace(worse.rankers, rank_order=gate.order))
    evaluation = evaluate_served(
        chosen, config, rank_valid, "validation", baselines=False,
        max_users=config.evaluation.max_users,
    )  # fmt: skip
    assert evaluation.served == (UNION, order_label(gate.order))
    assert evaluation.metrics[evaluation.final]["NDCG@10"][0] == gate.orders[gate.order]
    assert evaluation.metrics[UNION]["NDCG@10"][0] == gate.orders["als"]
    # Rank serves EASE's order of the caller's items (each placed by the chosen order)
    ease = chosen.replaced(rankers=dataclasses.replace(chosen.rankers, rank_order="ease"))
    pipeline = RecommendPipeline(ease, config)
    user, given = rank_valid.users[0], rank_valid.candidates[0]
    ranked = pipeline.rank(user, given)
    assert {item.stage for item in ranked} == {"ease"}
    seen = ease.profiles.seen_items(ease.users.index_of(user))
    expected = ease.ease.score_items(seen)[ease.items.to_index([i.item_id for i in ranked])]
    np.testing.assert_allclose([item.score for item in ranked], expected, rtol=1e-5)
    assert np.all(np.diff(expected) <= 0)


def _noise_frame(bundle) -> RankingFrame:
    """Random rows in the bundle's feature layout, labels unrelated to them."""
    rng = np.random.default_rng(0)
    names = bundle.rankers.models["lightgbm"].feature_names
    n, groups = 4000, 200
    return RankingFrame(
        dense=rng.standard_normal((n, len(names))).astype(np.float32),
        dense_names=names,
        sparse=np.zeros((n, 4), np.int64),
        sparse_names=("user", "item", "category", "region"),
        sparse_cardinalities=(1, 1, 1, 1),
        groups=np.repeat(np.arange(groups), n // groups),
        labels=rng.permutation(np.arange(n) % 20 == 0).astype(np.float32),
    )


def test_regression_gate_compares_protocols_as_json(ml_config):
    # the manifest holds lists where the config holds tuples: equal protocols all the same
    evaluation = ml_config.to_dict()["evaluation"]
    assert isinstance(evaluation["candidate_cutoffs"], tuple)
    stored = {**evaluation, "candidate_cutoffs": list(evaluation["candidate_cutoffs"])}
    assert _same_protocol(stored, evaluation)
    assert not _same_protocol({**stored, "protocol": "chronological"}, evaluation)


def test_a_worse_bundle_is_not_published(shop, tmp_path):
    _, config = shop
    config = config.replace(artifacts={"root": str(tmp_path / "artifacts")})
    first = run_nightly(config, show_progress=False)
    assert first.published
    worse = config.replace(
        serving={"generators": ["top_new"], "generator_budgets": {}}, ranking={"stages": []}
    )
    second = run_nightly(worse, show_progress=False)
    assert not second.published and "regresses below" in second.reason
    # Rank's final list is guarded too: the first bundle's own figures, with Rank's alone
    # a tenth worse, are refused naming it; the same figures pass
    rank = first.gate.rank
    published, reason = _regression_gate(config, first.gate)
    value = f"{rank.final:.4f}"
    assert published and f"Rank's final NDCG@10 {value} vs current {value}" in reason
    worse_rank = dataclasses.replace(
        rank, orders={o: v * 0.9 for o, v in rank.orders.items()}, decisions=(), dropped={}
    )
    published, reason = _regression_gate(config, dataclasses.replace(first.gate, rank=worse_rank))
    assert not published and reason.startswith("Rank's final NDCG@10")


def test_quality_report_has_every_model_on_every_protocol(shop, tmp_path):
    dataset, config = shop
    result = evaluate_quality(dataset, config, ("leave_last_out", "sampled"))
    assert [(e.protocol, e.split) for e in result.evaluations] == [
        ("leave_last_out", "validation"),
        ("leave_last_out", "test"),
        ("sampled", "validation"),
        ("sampled", "test"),
    ]
    for evaluation in result.evaluations:
        baselines = {"most popular", "iALS", "EASE", "item-kNN", "last-item kNN", "recent EASE"}
        assert baselines | {UNION} <= set(evaluation.metrics)
        for values in evaluation.metrics.values():
            mean, error = values["NDCG@10"]
            assert 0.0 <= mean <= 1.0 and error >= 0.0
    sampled = result.evaluations[-1]
    # among 100 items a model ranks, HR@50 of any sensible model is well above zero
    assert sampled.metrics["most popular"]["HR@50"][0] > 0.3
    out = write_quality_report(result, tmp_path, "shop")
    text = (out / "report.md").read_text()
    assert "| last-item kNN |" in text and "ndcg_at_10.png" in text and "Stage gate" in text
    summary = text.split("\n## ")[0]
    rows = [line.split(" | ")[0][2:] for line in summary.splitlines() if line.startswith("| ")]
    served = [row for row in rows if row.startswith("served")]
    assert rows[1 : 1 + len(served)] == served  # after the header, served rows come first
    assert (out / "ndcg_at_10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def union_bundle(shop):
    """A bundle without rankers on the shop's leave-last-out split, with its config and split."""
    dataset, config = shop
    config = config.replace(ranking={"stages": []})
    held = holdout(dataset, "leave_last_out", config)
    return train_bundle(held.train, config).bundle, config, held


def test_evaluate_served_counts_every_held_out_user(union_bundle):
    bundle, config, held = union_bundle
    result = evaluate_served(bundle, config, held, "test", baselines=False)
    assert result.users == len(held.users)
    assert list(result.metrics) == [UNION]


def _hidden_from(bundle, user: str) -> np.ndarray:
    """bool per item: what serving must not show the user, read off the catalogue and the
    profiles themselves (already touched, out of stock, not sold in the user's region)."""
    region = bundle.profiles.region_of(user)
    every = np.arange(len(bundle.items))
    hidden = ~bundle.catalog.in_stock.copy()
    if region:
        hidden |= ~bundle.catalog.sold_in(region, every)
    hidden[bundle.profiles.seen_items(bundle.users.index_of(user))] = True
    return hidden


def test_baselines_choose_among_the_items_the_served_filters_let_through(union_bundle):
    """A baseline that likes best exactly what serving must hide lists none of it, and the
    report's share of hidden held-out items is the catalogue's own count."""
    bundle, config, held = union_bundle
    pipeline = RecommendPipeline(bundle, config)
    users = list(held.users)[:100]
    hidden = np.stack([_hidden_from(bundle, user) for user in users])
    assert hidden.sum(axis=1).min() > 0
    by_index = dict(zip(bundle.users.to_index(users).tolist(), hidden, strict=True))

    def likes_the_hidden(block: np.ndarray) -> np.ndarray:
        return np.stack([by_index[i] for i in block]).astype(np.float32)

    lists = _baseline_lists(
        {"likes the hidden": likes_the_hidden},
        bundle.users.to_index(users),
        bundle,
        None,
        partial(_servable_rows, pipeline, users),
    )["likes the hidden"]
    assert (lists >= 0).all()  # full lists, of the items serving may show
    assert not np.take_along_axis(hidden, lists, axis=1).any()

    result = evaluate_served(bundle, config, held, "test")
    expected = [
        _hidden_from(bundle, user)[item]
        for user, relevant in zip(held.users, held.relevant, strict=True)
        for item in bundle.items.to_index(relevant)
        if item >= 0
    ]
    assert 0 < result.hidden == pytest.approx(np.mean(expected))


def test_served_lists_report_coverage_novelty_and_diversity(union_bundle):
    """Beyond accuracy on the served lists: values in their ranges, and the popularity
    baseline, which shows everyone the same few items, below the union in both coverage
    and novelty."""
    bundle, config, held = union_bundle
    result = evaluate_served(bundle, config, held, "test")
    served = result.beyond[UNION]
    assert set(served) == {"coverage@10", "novelty@10", "diversity@10"}
    assert 0 < served["coverage@10"] <= 1 and 0 <= served["diversity@10"] <= 2
    assert result.beyond["most popular"]["novelty@10"] < served["novelty@10"]
    assert result.beyond["most popular"]["coverage@10"] < served["coverage@10"]
