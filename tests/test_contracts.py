"""One contract test per stage kind, over every registered implementation: a generator,
a filter or a bundle component added later is held to the same rules without a test of
its own (issue "One-way layers")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from candidates.base import GENERATORS, make_generator
from ranking.frame import RankingFrame
from ranking.rankers import RANKERS, RankerFit, ranker_kind
from recsys.components import saved_components
from recsys.config import I2I_KINDS, load_config
from serving.filters import FILTER_FACTORIES
from serving.pipeline import RecommendPipeline, RecommendRequest
from serving.runtime import import_components

BUDGETS = (0, 1, 7, 60)


def generator_names(bundle) -> list[str]:
    """Every registered generator; a family by a few of its members."""
    names = []
    for kind in GENERATORS.values():
        if not kind.prefix:
            names.append(kind.name)
        elif kind.name == "i2i_":
            names.extend(f"i2i_{k}" for k in I2I_KINDS)
        elif kind.name == "last_items_":
            names.extend(f"last_items_{k}" for k in bundle.i2i.kinds)
        elif kind.name == "top_":
            names.extend(bundle.tops.names()[:3])
        else:
            pytest.fail(f"the contract test does not know members of the family {kind.name!r}")
    return names


def request_contexts(bundle, config, dataset):
    """A regular, a user with one event, an unknown user, and one with a basket only."""
    pipeline = RecommendPipeline.candidate_stage(bundle, config)
    counts = dataset.events["user_id"].astype(str).value_counts()
    regular, single = str(counts.index[0]), str(counts.index[-1])
    basket = tuple(str(i) for i in bundle.items.ids[:2])
    return [
        pipeline.context(RecommendRequest(user_id=regular, k=10)),
        pipeline.context(RecommendRequest(user_id=single, k=10)),
        pipeline.context(RecommendRequest(user_id="never-seen", k=10)),
        pipeline.context(RecommendRequest(user_id="never-seen", k=10, basket_item_ids=basket)),
    ]


def test_every_generator_keeps_the_contract(shop_bundle):
    bundle, config, dataset = shop_bundle
    import_components(config)
    names = generator_names(bundle)
    assert {
        "als",
        "popularity",
        "quorum",
        "ease",
        "last_items",
        "business",
        "session_ssrm",
        "session_gag",
        "session_mgia",
    } <= set(names)
    n_items = len(bundle.items)
    for name in names:
        generator = make_generator(name, bundle, config)
        assert generator.name == name
        for ctx in request_contexts(bundle, config, dataset):
            for budget in BUDGETS:
                found = generator.generate(ctx, budget)
                again = generator.generate(ctx, budget)
                where = f"{name}, user {ctx.user_index}, budget {budget}"
                assert found.source == name, where
                assert len(found) <= budget, where
                assert len(np.unique(found.item_ids)) == len(found), f"{where}: duplicates"
                assert found.item_ids.dtype == np.int64, where
                assert ((found.item_ids >= 0) & (found.item_ids < n_items)).all(), where
                assert np.isfinite(found.scores).all(), f"{where}: scores not finite"
                assert (np.diff(found.scores) <= 0).all(), f"{where}: not best first"
                np.testing.assert_array_equal(found.item_ids, again.item_ids, err_msg=where)


def test_an_unknown_generator_name_lists_the_known_ones(shop_bundle):
    bundle, config, _ = shop_bundle
    import_components(config)
    with pytest.raises(ValueError, match=r"unknown generator 'nope'; known: .*als.*i2i_"):
        make_generator("nope", bundle, config)


def test_every_filter_only_removes_and_is_deterministic(shop_bundle):
    bundle, config, dataset = shop_bundle
    items = np.arange(len(bundle.items), dtype=np.int64)
    for name, factory in FILTER_FACTORIES.items():
        chosen = factory(bundle.catalog, bundle.profiles, config.serving)
        for ctx in request_contexts(bundle, config, dataset):
            kept = chosen.keep(ctx, items)
            assert kept.dtype == bool and kept.shape == items.shape, name
            np.testing.assert_array_equal(kept, chosen.keep(ctx, items), err_msg=name)
            # a subset asked alone gets the same answers (a filter judges items, not lists)
            part = items[::3]
            np.testing.assert_array_equal(chosen.keep(ctx, part), kept[::3], err_msg=name)


def test_every_bundle_component_survives_a_save_and_load(shop_bundle, tmp_path):
    """Saved, loaded and saved again, every component writes the same contents."""
    bundle, config, _ = shop_bundle
    bundle.save(tmp_path / "first")
    loaded = type(bundle).load(tmp_path / "first", "v", config)
    loaded.save(tmp_path / "second")
    components = saved_components()
    assert {"als", "i2i", "tops", "catalog", "profiles", "stats", "rankers"} <= {
        c.name for c in components
    }
    for component in components:
        first = tmp_path / "first" / component.subdirectory
        second = tmp_path / "second" / component.subdirectory
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
        for relative in files:
            assert_same_contents(first / relative, second / relative, component.name)


def assert_same_contents(a: Path, b: Path, component: str) -> None:
    where = f"{component}: {a.name}"
    if a.suffix == ".npz":  # zip members carry their write time: compare the arrays
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            assert sorted(x.files) == sorted(y.files), where
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{where}[{key}]")
    elif a.suffix == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), obj=where)
    else:
        assert a.read_bytes() == b.read_bytes(), where


def ranking_frame(seed: int, requests: int = 60, rows: int = 20) -> RankingFrame:
    """Requests whose one positive has a higher first feature, a few NaNs, ids in range."""
    rng = np.random.default_rng(seed)
    n = requests * rows
    labels = np.zeros(n, np.float32)
    labels[np.arange(requests) * rows + rng.integers(0, rows, requests)] = 1.0
    dense = rng.standard_normal((n, 4)).astype(np.float32)
    dense[:, 0] += 2 * labels
    dense[rng.random(dense.shape) < 0.05] = np.nan
    sparse = np.stack([rng.integers(0, 30, n), rng.integers(1, 50, n)], axis=1)
    return RankingFrame(
        dense=dense,
        dense_names=("signal", "a", "b", "c"),
        sparse=sparse.astype(np.int64),
        sparse_names=("user", "item"),
        sparse_cardinalities=(30, 50),
        groups=np.repeat(np.arange(requests), rows),
        labels=labels,
    )


def test_every_ranker_keeps_the_contract(tmp_path):
    """Trained on a small frame and asked as the cascade asks (its serving form): one finite
    score per row (none dropped), the same scores again, from a second fit (seeded), and
    after a save and load."""
    ranker_kind("lightgbm")  # the registry is filled on first use
    assert {"lightgbm", "dlrm"} <= set(RANKERS)
    config = load_config().replace(
        dlrm={"epochs": 2, "embedding_dim": 4, "bottom_mlp": [8], "top_mlp": [8]},
        ranking={"dlrm_serving": "eager", "lightgbm_serving": "booster"},
    )
    train, valid, unseen = ranking_frame(0), ranking_frame(1), ranking_frame(2)
    item_factors = np.random.default_rng(3).standard_normal((49, 4)).astype(np.float32)
    given = RankerFit(train, valid, config, item_factors)
    for name, kind in RANKERS.items():
        model = kind.fit(given)

        def scores_of(ranker, kind=kind):  # as the cascade asks: through the serving form
            return kind.serving(ranker, config.ranking, None).predict(unseen)

        scores = scores_of(model)
        assert scores.shape == (len(unseen),) and np.isfinite(scores).all(), name
        np.testing.assert_array_equal(scores, scores_of(model), err_msg=name)
        np.testing.assert_array_equal(scores, scores_of(kind.fit(given)), err_msg=name)
        (tmp_path / name).mkdir()
        model.save(tmp_path / name)
        loaded = kind.load(tmp_path / name)
        np.testing.assert_allclose(scores_of(loaded), scores, rtol=1e-6, err_msg=name)
        assert model.feature_names == unseen.dense_names, name


def test_every_business_rule_keeps_the_contract():
    """Each registered rule, alone after the rules it needs, with every knob on: shown rows
    are distinct rows of the request, at most k, the same on a second call."""
    from recsys.config import RULE_NAMES, RULE_NEEDS_BEFORE
    from recsys.ids import IdMap
    from serving.rules import RULES, BusinessRules, ItemAttributes

    assert tuple(RULES) == RULE_NAMES
    rng = np.random.default_rng(0)
    n = 60
    categories = sp.csr_matrix(rng.random((n, 4)) < 0.3)
    attributes = ItemAttributes(
        item_ids=IdMap.from_values([f"i{i}" for i in range(n)]),
        categories=categories,
        category_names=("a", "b", "c", "d"),
        created=rng.uniform(0, 100 * 86_400, n),
        group=rng.integers(-1, 10, n),
        unit_vectors=rng.standard_normal((n, 8)).astype(np.float32),
    )
    window = {"starts": "1970-01-01T00:00:00Z", "ends": "2100-01-01T00:00:00Z"}
    promotions = [
        {"name": "up", "kind": "boost", "categories": ["a"], "factor": 3.0, **window},
        {"name": "top", "kind": "pin", "items": ["i5", "i7"], "position": 2, **window},
    ]
    for name in RULES:
        needed = set(RULE_NEEDS_BEFORE.get(name, ())) | {name}
        order = [rule for rule in RULE_NAMES if rule in needed]
        config = load_config().replace(
            rules={
                "order": order,
                "category_cap": 2,
                "mmr_lambda": 0.7,
                "fresh_quota": 3,
                "promotions": promotions,
            }
        )
        rules = BusinessRules(config.rules, attributes)
        for k in (0, 1, 5, 20, 80):
            items = rng.permutation(n)[:40]
            scores = rng.standard_normal(40).astype(np.float32)
            shown = rules.apply(items, scores, k, 50 * 86_400).order
            where = f"{name} ({order}), k {k}"
            assert len(shown) <= min(k, len(items)), where
            assert len(np.unique(shown)) == len(shown), f"{where}: duplicates"
            assert ((shown >= 0) & (shown < len(items))).all(), where
            again = rules.apply(items, scores, k, 50 * 86_400).order
            np.testing.assert_array_equal(shown, again, err_msg=where)
