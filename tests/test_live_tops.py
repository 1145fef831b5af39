"""Live tops: the events logged since the bundle move its windowed global, category and region
lists, in every serving process, and a new bundle does not count them twice."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from candidates.live_tops import LiveTops, attach_live_tops
from candidates.popularity import PopularityTop
from candidates.tops import TopsModel
from pipelines.nightly import run_nightly
from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.context import RequestContext
from recsys.dataset import normalize_events
from serving.catalog import UserProfiles
from serving.events import Event
from serving.filters import apply_filters
from serving.grpc.client import RecommenderClient
from serving.grpc.server import start_server
from serving.pipeline import RecommendRequest
from serving.tops_feed import TopsFeed, count_into
from tests.conftest import shop_config
from tests.test_tops import DAY, T0, TOPS, fit, shop

# after the bundle's "now" (day 10); no (user, item) pair the bundle has seen
LATER = [
    ("u4", "B", "purchase", 11.0),
    ("u5", "B", "view", 11.1),
    ("u5", "D", "purchase", 11.2),
    ("u4", "D", "click", 11.5),
    ("u4", "D", "click", 11.6),  # the same user again: one more event, not one more user
    ("u1", "nowhere", "purchase", 11.7),  # an item the bundle does not know: not counted
]
EXACT = ("clicks", "purchases", "weighted", "ctr", "wctr")  # scores of untouched items fixed


def later_events() -> list[Event]:
    return [Event(u, i, kind, 1.0, T0 + round(day * DAY)) for u, i, kind, day in LATER]


def refit_with_later():
    """The tops a nightly would build over the bundle's events and LATER."""
    config = load_config().replace(tops=TOPS)
    data = build_training_data(shop().with_events(refit_events()), config)
    return TopsModel.fit(data, config)


def refit_events() -> pd.DataFrame:
    """The bundle's events and LATER's (those of known items), as a nightly would read them."""
    dataset = shop()
    users, items, kinds, days = zip(*(e for e in LATER if e[1] != "nowhere"), strict=True)
    later = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "event_type": kinds,
            "value": 1.0,
            "timestamp": [T0 + round(d * DAY) for d in days],
        }
    )
    return normalize_events(pd.concat([dataset.events, later], ignore_index=True))


def shop_view(config, **parts):
    """What count_into reads of a serving bundle: the item ids and the users' home regions."""
    data = build_training_data(shop(), config)
    profiles = UserProfiles.build(shop(), data, recent_limit=10)
    return SimpleNamespace(items=data.items, profiles=profiles, **parts)


@pytest.fixture
def live():
    config = load_config().replace(tops=TOPS)
    model = fit()  # the model outlives its live tops, as a bundle's does
    live = LiveTops(model, config.tops)
    count_into(live, shop_view(config), later_events(), config)
    yield live


def test_counts_since_the_bundle_give_the_lists_of_a_refit_over_all_history(live):
    refit = refit_with_later()
    for metric in EXACT:
        assert_same_list(live.top(metric, 0), refit.top(metric, 0), metric)
        for category in range(len(refit.category_names)):
            assert_same_list(
                live.top(metric, 0, "category", category),
                refit.top(metric, 0, "category", category),
                f"{metric} in category {category}",
            )
        for region in range(len(refit.region_names)):  # each event in its user's home region
            assert_same_list(
                live.top(metric, 0, "region", region),
                refit.top(metric, 0, "region", region),
                f"{metric} in region {refit.region_names[region]}",
            )
    south = refit.region_index("south")
    assert live.top("purchases", 0, "region", south)[0].tolist() != (
        live.model.top("purchases", 0, "region", south)[0].tolist()
    )  # u4 (south) bought B: the region's list moved
    # pCTR: touched items get a refit's score (the moved prior included); untouched keep theirs
    ids, scores = live.top("pctr", 0)
    refit_ids, refit_scores = refit.top("pctr", 0)
    for item in (1, 3):  # B, D
        assert scores[ids == item] == pytest.approx(refit_scores[refit_ids == item])
    assert live.events == 5  # the unknown item's event is skipped


def assert_same_list(got, want, what):
    assert got[0].tolist() == want[0].tolist(), what
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, err_msg=what)


def test_windows_grow_from_the_bundle_while_new_stays(live):
    model = live.model
    # D had no event at all: now it tops the 3-day clicks list (u4) and purchases (u5)
    assert 3 not in model.top("clicks", 3)[0] and live.top("clicks", 3)[0][0] in (0, 3)
    assert 3 in live.top("purchases", 3)[0]
    # B's impressions grew in the window: it trends up against the window before
    before = dict(zip(*(a.tolist() for a in model.top("trending", 3)), strict=True))
    after = dict(zip(*(a.tolist() for a in live.top("trending", 3)), strict=True))
    assert after[1] > before.get(1, 0.0)
    # the 3-day clicks of u4's region (south) grew; u5 has no home region: no region moves
    south = live.model.region_index("south")
    assert 3 in live.top("clicks", 3, "region", south)[0]
    assert 3 not in live.model.top("clicks", 3, "region", south)[0]
    for key in (("clicks", 3, "region", live.model.region_index("north")), ("new", 0)):
        assert_same_list(live.top(*key), live.model.top(*key), key)
    for key in (("clicks", 7),):  # 7d: not built
        assert_same_list(live.top(*key), model.top(*key), key)


def test_the_generators_answer_from_the_live_lists_once_attached(live):
    model = live.model
    generator = model.generator("top_purchases_all")
    before = generator.generate(RequestContext(0), 5).item_ids.tolist()
    model.serve_from(live)
    after = generator.generate(RequestContext(0), 5).item_ids.tolist()
    assert 3 not in before and 3 in after


def test_an_item_bought_all_morning_climbs_the_list_every_process_serves(tmp_path, shop_dir):
    """Through two real servers: purchases logged through one are counted into the top the
    other serves; the next bundle folds them in and does not count them again."""
    config = shop_config(tmp_path, shop_dir).replace(
        ranking={"stages": []},
        serving={
            "generators": ["top_purchases_all"],
            "generator_budgets": {},
            "candidate_budget": 10,
        },
    )
    run_nightly(config, show_progress=False)
    one, two = start_server(config, watch=False), start_server(config, watch=False)
    try:
        shopper = "u1"
        pipeline = two.holder.pipeline()
        bundle = pipeline.bundle
        # an item outside the top that the filters let through to this shopper
        outside = np.setdiff1d(np.arange(len(bundle.items)), bundle.tops.top("purchases", 0)[0])
        ctx = pipeline.context(RecommendRequest(shopper, 10))
        kept, _ = apply_filters(pipeline.filters, ctx, outside)
        item = str(bundle.items.to_external(outside[kept][:1])[0])
        now = int(time.time())
        buyers = [f"u{i}" for i in range(100, 130)]
        with (
            RecommenderClient(f"127.0.0.1:{one.port}") as writer,
            RecommenderClient(f"127.0.0.1:{two.port}") as reader,
        ):
            assert item not in {s.item_id for s in reader.recommend(shopper, 10).items}
            events = [Event(user, item, "purchase", 1.0, now - 60) for user in buyers]
            assert writer.log_events(events) == len(events)
            served = reader.recommend(shopper, 10).items
            mine = [s for s in served if s.item_id == item]
            assert mine and "top_purchases_all" in mine[0].sources

        run_nightly(config, force=True, show_progress=False)  # folds the purchases in
        assert two.holder.refresh()
        two.servicer.sessions.catch_up()
        tops = two.holder.pipeline().bundle.tops
        index = tops.top("purchases", 0)
        assert_same_list(tops.current_top("purchases", 0), index, "after the swap")
        position = np.flatnonzero(index[0] == two.holder.pipeline().bundle.items.index_of(item))
        assert index[1][position] >= len(buyers)  # counted by the nightly, once
    finally:
        one.stop(grace=0)
        two.stop(grace=0)


def test_old_bundles_without_counts_are_refused_a_live_view():
    model = fit()
    object.__setattr__(model, "item_counts", None)
    with pytest.raises(ValueError, match="no item counts"):
        LiveTops(model, load_config().replace(tops=TOPS).tops)


def test_the_popularity_generator_follows_the_live_weighted_list_of_its_window():
    config = load_config().replace(tops=TOPS, popularity={"window_days": 0})
    data = build_training_data(shop(), config)
    bundle = shop_view(config, tops=fit(), popularity=PopularityTop.fit(data, config.popularity))
    live = attach_live_tops(bundle, config)
    count_into(live, bundle, later_events(), config)
    served = bundle.popularity.generate(RequestContext(0), 4)
    refit = build_training_data(shop().with_events(refit_events()), config)
    want = PopularityTop.fit(refit, config.popularity).generate(RequestContext(0), 4)
    assert served.item_ids.tolist() == want.item_ids.tolist()
    np.testing.assert_allclose(served.scores, want.scores)
    # a window the tops do not keep: the bundle's popularity, unmoved
    config = config.replace(popularity={"window_days": 5})
    bundle.popularity = PopularityTop.fit(data, config.popularity)
    attach_live_tops(bundle, config)
    assert bundle.popularity._live is None


def test_a_process_remembers_the_latest_pairs_only():
    config = load_config().replace(tops={**TOPS, "live_events_kept": 2})
    model = fit()
    live = LiveTops(model, config.tops)
    # new3 pushes new1 out, so new1 counts again (and pushes new2 out); new3 is remembered
    users = np.array(["new1", "new2", "new3", "new1", "new3"])
    n = len(users)
    item_d = np.full(n, 3)
    live.add(users, item_d, np.zeros(n, bool), np.ones(n), np.ones(n, bool), np.zeros(n, bool))
    impressions = live.counts[:, 0, 3] - live.model.item_counts[:, 0, 3]  # COUNTS[0]: users
    assert impressions.tolist() == [4.0, 4.0]


def test_a_failure_to_count_never_fails_the_request_catching_up(caplog, monkeypatch):
    config = load_config().replace(tops=TOPS)
    model = fit()
    live = LiveTops(model, config.tops)
    model.serve_from(live)
    bundle = SimpleNamespace(tops=model, items=build_training_data(shop(), config).items)
    feed = TopsFeed(lambda: bundle, config)

    def broken(*args, **kwargs):
        raise RuntimeError("a counting bug")

    monkeypatch.setattr("serving.tops_feed.count_into", broken)
    feed(later_events())  # no exception reaches the caller
    feed(later_events())
    assert caplog.text.count("live tops: could not count") == 1  # logged once per bundle
    assert live.events == 0 and len(feed.kept) == 2 * len(LATER)
