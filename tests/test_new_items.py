"""Items only the event log knows join a bundle in serving, and the whole cascade serves them
(recsys/new_items.py; issue "Near-realtime ALS steps")."""

from __future__ import annotations

import gc
import time
import weakref

import numpy as np
import pytest

from candidates.live_tops import attach_live_tops
from candidates.tops import COUNTS
from recsys.components import COMPONENTS
from recsys.loaded_bundle import LoadedBundle
from recsys.new_items import NewItems
from serving.events import Event
from serving.pipeline import RecommendPipeline, RecommendRequest
from serving.sessions import Session
from serving.tops_feed import TopsFeed

JOINED = int(time.time())


def _clone_of_best_item(bundle, user: str, copies: int = 1) -> tuple[int, NewItems]:
    """New items whose vectors equal the iALS favourite of `user` among the items they have
    not touched: the ANN index must find them for that user as it finds the favourite."""
    model, row = bundle.als.model, bundle.users.index_of(user)
    scores = model.item_factors @ model.user_factors[row]
    scores[bundle.profiles.seen_items(row)] = -np.inf
    best = int(np.argmax(scores))
    ids = np.array([f"new-{i}" for i in range(copies)], dtype=object)
    vectors = np.repeat(model.item_factors[[best]], copies, axis=0)
    return best, NewItems(ids, vectors, first=len(bundle.items), joined=JOINED)


def test_a_grown_bundle_serves_a_new_item_through_the_whole_cascade(ml_pipeline, ml_config):
    bundle = ml_pipeline.bundle
    user = str(bundle.users.ids[0])
    best, new = _clone_of_best_item(bundle, user)
    grown = bundle.grown(new)
    index = grown.items.index_of("new-0")
    assert index == len(bundle.items) and len(grown.items) == len(bundle.items) + 1
    assert len(bundle.items) == bundle.als.index.size  # the bundle in service is untouched
    assert grown.items_at_nightly is bundle.items and grown.version == bundle.version

    pipeline = RecommendPipeline(grown, ml_config)
    assert pipeline.cascade is not None
    ctx = pipeline.context(RecommendRequest(user, 50))
    found, _ = pipeline.candidates(ctx)
    row = int(np.flatnonzero(found.items == index)[0])  # the ANN index found it
    assert "als" in found.sources[row]
    frame = pipeline.features.build(ctx, found)
    values = dict(zip(frame.dense_names, frame.dense[row], strict=True))
    best_row = int(np.flatnonzero(found.items == best)[0])
    favourite = dict(zip(frame.dense_names, frame.dense[best_row], strict=True))
    # what it is: the favourite's iALS vector; what it is not: anything else learnt
    assert values["als_dot"] == pytest.approx(favourite["als_dot"])
    assert np.isnan(values["item_price"]) and np.isnan(values["ease_score"])
    assert bundle.stats.now < JOINED and values["item_age_days"] == 0  # new, not negative
    assert values["item_clicks_7d"] == 0
    ranked = pipeline.cascade.rank(frame)
    assert np.isfinite(ranked.scores).all()
    # Rank places it with the cascade's stages, not as an unknown item
    placed = {i.item_id: i for i in pipeline.rank(user, ("new-0", str(bundle.items.ids[best])))}
    assert placed["new-0"].stage in ml_config.ranking.stages
    unknown = ml_pipeline.rank(user, ("new-0",))[0]  # the nightly's bundle does not know it
    assert (unknown.stage, unknown.score) == ("", 0.0)
    # a session that holds it (the sequence features and i2i seeds read its row)
    session = Session(recent=("new-0",), never_again=("new-0",))
    listed = pipeline.recommend(RecommendRequest(user, 20, session=session)).items
    assert len(listed) == 20 and "new-0" not in {i.item_id for i in listed}
    # and its neighbours by iALS cosine are the favourite's
    similar = pipeline.similar_items("new-0", 5)
    assert similar[0].item_id == str(bundle.items.ids[best])


def test_every_component_of_a_bundle_grows(shop_bundle):
    """Every generator, every feature and the session models over a grown bundle with every
    component (the shop's), for a user whose session holds the new items."""
    bundle, config, _ = shop_bundle
    assert set(bundle.parts) <= {name for name, c in COMPONENTS.items() if c.grow is not None}
    user = str(bundle.users.ids[3])
    _, new = _clone_of_best_item(bundle, user, copies=2)
    grown = bundle.grown(new)
    generators = (
        *config.serving.generators,
        "ease",
        "recent_ease",
        "session_ssrm",
        "session_gag",
        "session_mgia",
    )
    config = config.replace(
        serving={"generators": list(dict.fromkeys(generators))},
        sequence={"ease_features": True},
    )
    pipeline = RecommendPipeline(grown, config)
    session = Session(recent=("new-1", "new-0", str(bundle.items.ids[0])), never_again=())
    ctx = pipeline.context(RecommendRequest(user, 30, session=session))
    assert list(ctx.sequence[:2]) == [new.first + 1, new.first]
    found, _ = pipeline.candidates(ctx)
    frame = pipeline.features.build(ctx, found)
    assert frame.dense.shape[0] == len(found)
    assert len(pipeline.recommend(RecommendRequest(user, 30, session=session)).items) == 30
    # what minimal item files give an item: in stock, sold everywhere, no title
    catalog, items = grown.catalog, np.arange(new.first, new.end)
    assert catalog.in_stock[items].all() and catalog.sold_in("anywhere", items).all()
    assert list(catalog.titles[items]) == ["", ""]
    assert (grown.stats.item_created[items] == min(JOINED, bundle.stats.now)).all()


def test_growing_refuses_what_does_not_fit(ml_pipeline):
    bundle = ml_pipeline.bundle
    known = str(bundle.items.ids[0])
    vectors = np.ones((1, bundle.als.model.item_factors.shape[1]), np.float32)
    with pytest.raises(ValueError, match="repeat"):
        bundle.grown(NewItems(np.array([known], object), vectors, len(bundle.items), JOINED))
    with pytest.raises(ValueError, match="start at"):
        bundle.grown(NewItems(np.array(["x"], object), vectors, 5, JOINED))
    with pytest.raises(ValueError, match="finite"):
        NewItems(np.array(["x"], object), vectors * np.nan, len(bundle.items), JOINED)


def test_primed_live_tops_count_every_event_once(shop_bundle, tmp_path):
    """The events of a new item logged before it joined count in the grown bundle's live
    tops, once, whether they came before the priming, between it and the swap, or after."""
    bundle, config, _ = shop_bundle
    config = config.replace(tops={"live": True})
    in_service = {"bundle": bundle}
    attach_live_tops(bundle, config)
    feed = TopsFeed(lambda: in_service["bundle"], config)
    now = bundle.tops.now
    buyers = [str(user) for user in bundle.users.ids[:30]]

    def bought(users) -> list[Event]:
        return [Event(user, "new-0", "purchase", 1.0, now + 10) for user in users]

    feed(bought(buyers[:10]))  # the bundle in service cannot count them: it lacks the item
    _, new = _clone_of_best_item(bundle, buyers[0])
    grown = bundle.grown(new)
    live = attach_live_tops(grown, config)
    feed.prime(live, grown)
    feed(bought(buyers[10:20]))  # after the priming, before the swap
    in_service["bundle"] = grown
    feed(bought(buyers[20:30]))  # after the swap
    window = live.windows[7]
    purchases = live.counts[window, COUNTS.index("purchases"), new.first]
    assert purchases == 30


def test_a_grown_bundle_with_live_tops_dies_by_reference_counting(shop_bundle):
    """Serving freezes its heap (serving/holder.py): a reference cycle is never collected,
    so a bundle swapped out by a join (every few seconds) must die by reference counting,
    its live tops with it."""
    bundle, config, _ = shop_bundle
    _, new = _clone_of_best_item(bundle, str(bundle.users.ids[0]))
    grown = bundle.grown(new)
    live = attach_live_tops(grown, config.replace(tops={"live": True}))
    assert live is not None and grown.tops.live is live
    gone = [weakref.ref(grown), weakref.ref(grown.tops), weakref.ref(live)]
    gc.disable()
    try:
        del grown, live
        assert [ref() for ref in gone] == [None, None, None]
    finally:
        gc.enable()


def test_stepped_vectors_of_known_items_replace_the_bundles(ml_pipeline):
    """The worker steps hot items again; a join takes their new vectors: the model, the
    ANN index (a copy) and the unit vectors of seed diversity."""
    bundle = ml_pipeline.bundle
    user = str(bundle.users.ids[0])
    best, clone = _clone_of_best_item(bundle, user)
    model = bundle.als.model
    hot = int(np.argmin(model.item_factors @ model.user_factors[bundle.users.index_of(user)]))
    stepped = NewItems(
        np.empty(0, object),
        np.empty((0, model.item_factors.shape[1]), np.float32),
        first=len(bundle.items),
        joined=JOINED,
        stepped=np.array([hot]),
        stepped_vectors=clone.vectors,  # the user's least liked item becomes their favourite
    )
    grown = bundle.grown(stepped)
    assert len(grown.items) == len(bundle.items)
    np.testing.assert_array_equal(grown.als.model.item_factors[hot], model.item_factors[best])
    assert not np.array_equal(model.item_factors[hot], model.item_factors[best])  # untouched
    vector = model.user_factors[bundle.users.index_of(user)][np.newaxis, :]
    assert hot in grown.als.index.search(vector, 5)[0][0]
    assert hot not in bundle.als.index.search(vector, 5)[0][0]
    unit = grown.i2i.unit_factors[hot]
    np.testing.assert_allclose(unit, grown.i2i.unit_factors[best], rtol=1e-6)
    with pytest.raises(ValueError, match="distinct items the bundle knows"):
        NewItems(
            stepped.ids,
            stepped.vectors,
            len(bundle.items),
            JOINED,
            np.array([len(bundle.items)]),
            clone.vectors,
        )


def test_a_component_without_grow_stops_a_join(ml_pipeline):
    bundle = ml_pipeline.bundle
    toy = LoadedBundle(bundle.version, bundle.users, bundle.items, {**bundle.parts, "toy": 1})
    assert bundle.cannot_grow() is None and toy.cannot_grow() == "toy"
    _, new = _clone_of_best_item(bundle, str(bundle.users.ids[0]))
    with pytest.raises(ValueError, match="'toy' cannot take new items"):
        toy.grown(new)
