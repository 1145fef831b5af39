"""The request pipeline on a real MovieLens-100k bundle, checked against the raw catalog."""

import numpy as np
import pytest

from recsys.config import load_config
from serving.errors import NotFoundError, RequestError
from serving.pipeline import RecommendPipeline, RecommendRequest
from tests.catalog_truth import eligible_items, home_region

USERS = [str(u) for u in (1, 13, 196, 405, 655, 943)]


@pytest.mark.parametrize("user", USERS)
def test_every_item_passes_every_filter(ml_pipeline, ml_dataset, user):
    exclude, basket = ("50", "181"), ("100",)
    result = ml_pipeline.recommend(
        RecommendRequest(user, 50, exclude_item_ids=exclude, basket_item_ids=basket)
    )
    ids = [i.item_id for i in result.items]
    assert len(ids) == 50 and len(set(ids)) == 50
    allowed = (
        eligible_items(ml_dataset, user, home_region(ml_dataset, user)) - set(exclude) - set(basket)
    )
    assert set(ids) <= allowed
    assert not result.cold_start
    scores = [i.score for i in result.items]
    assert scores == sorted(scores, reverse=True)


def test_explicit_region_overrides_home_region(ml_pipeline, ml_dataset):
    result = ml_pipeline.recommend(RecommendRequest("196", 40, region="intl"))
    assert {i.item_id for i in result.items} <= eligible_items(ml_dataset, "196", "intl")


PERSONAL = {"als", "quorum", "i2i_als", "i2i_npmi", "i2i_content", "business"}


def test_sources_are_attributed_and_union_is_kept(ml_pipeline):
    result = ml_pipeline.recommend(RecommendRequest("196", 200))
    sources = [set(i.sources) for i in result.items]
    configured = set(ml_pipeline.config.generators)
    assert all(s and s <= configured for s in sources)
    assert any(len(s) >= 3 for s in sources), "an item found by several must list them all"
    assert set().union(*sources) & PERSONAL, "a known user gets personal candidates"


def test_each_generator_stays_within_its_budget(ml_pipeline):
    ctx = ml_pipeline.context(RecommendRequest("196", 10))
    for generator in ml_pipeline.generators:
        budget = ml_pipeline.config.budget_of(generator.name)
        answer = generator.generate(ctx, budget)
        assert len(answer) <= budget, generator.name
        assert len(np.unique(answer.item_ids)) == len(answer), generator.name


def test_unknown_user_gets_cold_start_tops(ml_pipeline, ml_dataset):
    result = ml_pipeline.recommend(RecommendRequest("no-such-user", 10, region="us-9"))
    assert result.cold_start and len(result.items) == 10
    assert all(set(i.sources).isdisjoint(PERSONAL) for i in result.items)
    assert {i.item_id for i in result.items} <= eligible_items(ml_dataset, "no-such-user", "us-9")


def test_favourites_and_basket_bring_business_candidates_for_a_cold_user(ml_pipeline):
    request = RecommendRequest(
        "no-such-user", 100, favorite_item_ids=("50",), basket_item_ids=("181",)
    )
    sources = {s for item in ml_pipeline.recommend(request).items for s in item.sources}
    assert "business" in sources and "quorum" in sources  # quorum: UF from basket/favourites


def test_no_short_list_backfills_from_tops(ml_pipeline, ml_dataset):
    k = ml_pipeline.config.max_k  # more than the generators' budget can cover after filtering
    result = ml_pipeline.recommend(RecommendRequest("405", k))
    ids = [i.item_id for i in result.items]
    assert len(ids) == k and len(set(ids)) == k
    assert set(ids) <= eligible_items(ml_dataset, "405", home_region(ml_dataset, "405"))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (RecommendRequest("1", 0), "k must be positive, got 0"),
        (RecommendRequest("1", -3), "k must be positive"),
        (RecommendRequest("1", 10**6), "k=1000000 exceeds the maximum of 500"),
        (RecommendRequest("", 10), "user_id must not be empty"),
    ],
)
def test_malformed_requests_say_what_is_wrong(ml_pipeline, request_, message):
    with pytest.raises(RequestError, match=message):
        ml_pipeline.recommend(request_)


def test_rank_agrees_with_recommend_and_puts_unknown_items_last(ml_pipeline):
    top = ml_pipeline.recommend(RecommendRequest("196", 10)).items
    shuffled = (*(i.item_id for i in reversed(top)), "nope")
    ranked = ml_pipeline.rank("196", shuffled)
    assert ranked[-1].item_id == "nope" and ranked[-1].score == 0 and ranked[-1].sources == ()
    # the same features and the same cascade: the same order and scores as Recommend's
    assert [i.item_id for i in ranked[:-1]] == [i.item_id for i in top]
    np.testing.assert_allclose([i.score for i in ranked[:-1]], [i.score for i in top], rtol=1e-5)
    assert [i.sources for i in ranked[:-1]] == [i.sources for i in top]


def test_rank_without_rankers_uses_the_ials_score_where_the_bundle_chose_it(ml_pipeline):
    import dataclasses

    from serving.pipeline import RecommendPipeline

    bundle = ml_pipeline.bundle
    chosen = RecommendPipeline.candidate_stage(bundle, load_config())
    placed_by = {"als": "als_dot"}.get(bundle.rankers.rank_order, bundle.rankers.rank_order)
    assert {item.stage for item in chosen.rank("196", ("1", "50", "181"))} == {placed_by}
    als = bundle.replaced(rankers=dataclasses.replace(bundle.rankers, rank_order="als"))
    plain = RecommendPipeline.candidate_stage(als, load_config())
    ranked = plain.rank("196", ("1", "nope", "50", "181", "100"))
    assert ranked[-1].item_id == "nope" and ranked[-1].score == 0 and ranked[-1].sources == ()
    known = ranked[:-1]
    assert [i.score for i in known] == sorted((i.score for i in known), reverse=True)
    model = ml_pipeline.bundle.als.model
    user = ml_pipeline.bundle.users.index_of("196")
    item = ml_pipeline.bundle.items.index_of(known[0].item_id)
    assert known[0].score == pytest.approx(
        float(model.item_factors[item] @ model.user_factors[user]), rel=1e-5
    )


def test_similar_items_by_cosine(ml_pipeline):
    similar = ml_pipeline.similar_items("50", 5)
    assert len(similar) == 5 and "50" not in {i.item_id for i in similar}
    vectors = ml_pipeline.bundle.als.model.item_factors
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    query = ml_pipeline.bundle.items.index_of("50")
    cosine = unit @ unit[query]
    cosine[query] = -2
    expected = ml_pipeline.bundle.items.to_external(np.argsort(-cosine)[:5])
    assert [i.item_id for i in similar] == list(expected)
    with pytest.raises(NotFoundError, match="item 'zzz' is not in the catalog"):
        ml_pipeline.similar_items("zzz", 5)


def test_blocked_categories_from_config_never_reach_the_list(ml_pipeline, ml_dataset):
    from serving.pipeline import RecommendPipeline

    config = load_config().replace(
        serving={
            "filters": [*ml_pipeline.config.filters, "blocked_categories"],
            "blocked_categories": ["Drama", "Comedy"],
        }
    )
    pipeline = RecommendPipeline(ml_pipeline.bundle, config)
    result = pipeline.recommend(RecommendRequest("196", 100))
    genres = ml_dataset.items.set_index("item_id")["categories"]
    assert len(result.items) == 100  # backfill walks past blocked items too
    for item in result.items:
        assert not {"Drama", "Comedy"} & set(genres[item.item_id].split("|")), item.item_id
    assert result.removed_by_filter["blocked_categories"] > 0


def test_without_rankers_the_ials_dot_product_places_items(ml_pipeline):
    from serving.pipeline import RecommendPipeline

    plain = RecommendPipeline.candidate_stage(ml_pipeline.bundle, load_config())
    result = plain.recommend(RecommendRequest("196", 20))
    assert {item.stage for item in result.items} == {"als_dot"}
    cascaded = ml_pipeline.recommend(RecommendRequest("196", 20))
    assert {item.stage for item in cascaded.items} == {"dlrm"}


def _with_rules(pipeline, config, **rules) -> RecommendPipeline:
    return RecommendPipeline(pipeline.bundle, config.replace(rules=rules))


def test_a_pin_in_its_window_takes_its_slot_and_says_so(ml_pipeline, ml_config):
    plain = ml_pipeline.recommend(RecommendRequest("196", 20)).items
    promoted = plain[14].item_id
    promotion = {"name": "promo", "kind": "pin", "items": [promoted], "position": 1}
    pinned = _with_rules(ml_pipeline, ml_config, promotions=[promotion])
    items = pinned.recommend(RecommendRequest("196", 20)).items
    assert items[0].item_id == promoted and "pin:promo" in items[0].explanations
    assert items[0].score == pytest.approx(plain[14].score)  # still the ranker's own score
    others = [i.item_id for i in plain if i.item_id != promoted]
    assert [i.item_id for i in items[1:]] == others[:19]

    expired = {**promotion, "starts": "2020-01-01T00:00:00Z", "ends": "2021-01-01T00:00:00Z"}
    lapsed = _with_rules(ml_pipeline, ml_config, promotions=[expired])
    assert lapsed.recommend(RecommendRequest("196", 20)).items == plain


def test_a_category_cap_spreads_the_answer_over_genres(ml_pipeline, ml_config):
    capped = _with_rules(ml_pipeline, ml_config, category_cap=2)
    items = capped.recommend(RecommendRequest("196", 10)).items
    catalog = ml_pipeline.bundle.catalog
    rows = ml_pipeline.bundle.items.to_index([i.item_id for i in items])
    per_category = np.asarray(catalog.item_categories[rows].sum(axis=0)).ravel()
    assert len(items) == 10 and per_category.max() <= 2
    assert any("category_cap" in i.explanations for i in items)
