"""Business rules (serving/rules.py) on tiny hand-computed lists, and their [rules] config."""

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import ConfigError, load_config
from recsys.ids import IdMap
from serving.rules import BusinessRules, ItemAttributes

DAY = 86_400.0
NOW = 1000 * DAY
CATEGORIES = ("Comedy", "Drama", "Kids")


def attributes(item_categories, created=None, group=None, vectors=None) -> ItemAttributes:
    """Items i0..i{n-1}; item_categories[i] lists the category names of item i."""
    n = len(item_categories)
    rows = [i for i, names in enumerate(item_categories) for _ in names]
    cols = [CATEGORIES.index(c) for names in item_categories for c in names]
    matrix = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(n, len(CATEGORIES)))
    return ItemAttributes(
        item_ids=IdMap.from_values([f"i{i}" for i in range(n)]),
        categories=matrix,
        category_names=CATEGORIES,
        created=np.zeros(n) if created is None else np.asarray(created, dtype=float),
        group=None if group is None else np.asarray(group),
        unit_vectors=None if vectors is None else np.asarray(vectors, dtype=np.float32),
    )


def rules(attrs: ItemAttributes, **keys) -> BusinessRules:
    """Rules with everything off but the keys given (validated like a config file)."""
    off = {"category_cap": 0, "mmr_lambda": 1.0, "fresh_quota": 0, "promotions": []}
    return BusinessRules(load_config().replace(rules={**off, **keys}).rules, attrs)


def ranked(n):
    """Items 0..n-1 as candidates, scored so that item i ranks i-th."""
    return np.arange(n, dtype=np.int64), np.linspace(1.0, 0.0, n).astype(np.float32)


def shown_items(result, items):
    return items[result.order].tolist()


def test_all_rules_off_keep_the_ranked_order_and_cut_at_k():
    items = np.array([3, 1, 0, 2], dtype=np.int64)
    scores = np.array([0.2, 0.9, 0.5, -1.0], dtype=np.float32)
    result = rules(attributes([["Comedy"]] * 4)).apply(items, scores, k=3, now=NOW)
    assert result.order.tolist() == [1, 2, 0]  # rows of the input, best first
    # min-max within the request: (s - (-1)) / (0.9 - (-1))
    np.testing.assert_allclose(result.scores, [1.0, 1.5 / 1.9, 1.2 / 1.9], rtol=1e-6)
    assert result.explanations == ((), (), ())


def test_k_larger_than_the_list_returns_the_whole_list():
    items, scores = ranked(3)
    result = rules(attributes([["Comedy"]] * 3), category_cap=1).apply(items, scores, 10, NOW)
    assert sorted(result.order.tolist()) == [0, 1, 2]


def test_empty_input_or_zero_k_returns_empty():
    rule_set = rules(attributes([["Comedy"]] * 3))
    empty = rule_set.apply(np.empty(0, np.int64), np.empty(0, np.float32), 5, NOW)
    assert len(empty.order) == 0 and empty.explanations == ()
    items, scores = ranked(3)
    assert len(rule_set.apply(items, scores, 0, NOW).order) == 0


@pytest.mark.parametrize(
    ("items", "scores", "k", "message"),
    [
        ([0, 1], [1.0, np.nan], 2, "NaN"),
        ([0, 1], [1.0], 2, "one length"),
        ([0, 1], [1.0, 0.5], -1, "k must be >= 0"),
        ([0, 7], [1.0, 0.5], 2, r"item indices must be in \[0, 3\)"),
    ],
)
def test_bad_requests_are_value_errors(items, scores, k, message):
    rule_set = rules(attributes([["Comedy"]] * 3))
    with pytest.raises(ValueError, match=message):
        rule_set.apply(np.asarray(items), np.asarray(scores, dtype=np.float32), k, NOW)


def test_dedup_keeps_the_best_ranked_item_of_each_group():
    items, scores = ranked(5)
    attrs = attributes([["Comedy"]] * 5, group=[-1, 7, 7, -1, 7])
    assert shown_items(rules(attrs).apply(items, scores, 5, NOW), items) == [0, 1, 3]
    off = rules(attrs, dedup_groups=False).apply(items, scores, 5, NOW)
    assert shown_items(off, items) == [0, 1, 2, 3, 4]


# MMR example: A=(1,0), B=(1,0) (a copy of A), C=(0,1), D=(0.6,0.8); raw scores 1, .9, .5, .7
# -> rel A=1, B=.8, C=0, D=.4. With lambda = .5, key = .5 rel - .5 max sim:
#   step 1: S={}      -> A (rel 1)
#   step 2: S={A}     -> B .4-.5=-.1, C 0-0=0, D .2-.3=-.1     -> C (not B: "mmr")
#   step 3: S={A,C}   -> B .4-.5=-.1, D .2-.5*max(.6,.8)=-.2   -> B
MMR_VECTORS = [[1, 0], [1, 0], [0, 1], [0.6, 0.8]]
MMR_SCORES = np.array([1.0, 0.9, 0.5, 0.7], dtype=np.float32)


def test_mmr_picks_the_hand_computed_second_item():
    attrs = attributes([["Comedy"]] * 4, vectors=MMR_VECTORS)
    items = np.arange(4, dtype=np.int64)
    result = rules(attrs, mmr_lambda=0.5).apply(items, MMR_SCORES, 4, NOW)
    assert shown_items(result, items) == [0, 2, 1, 3]
    assert result.explanations[1] == ("mmr",)
    assert result.explanations[0] == result.explanations[2] == ()


def test_mmr_lambda_one_is_the_ranked_order():
    attrs = attributes([["Comedy"]] * 4, vectors=MMR_VECTORS)
    items = np.arange(4, dtype=np.int64)
    result = rules(attrs, mmr_lambda=1.0).apply(items, MMR_SCORES, 4, NOW)
    assert shown_items(result, items) == [0, 1, 3, 2]


def test_mmr_only_reorders_within_its_depth():
    attrs = attributes([["Comedy"]] * 4, vectors=MMR_VECTORS)
    items = np.arange(4, dtype=np.int64)
    # depth 2 = {A, B}: C cannot be lifted, the rest follows in ranked order (D before C)
    result = rules(attrs, mmr_lambda=0.5, mmr_depth=2).apply(items, MMR_SCORES, 4, NOW)
    assert shown_items(result, items) == [0, 1, 3, 2]


def test_category_cap_moves_the_third_comedy_down():
    items, scores = ranked(5)
    attrs = attributes([["Comedy"], ["Comedy"], ["Comedy"], ["Drama"], ["Drama"]])
    cut = rules(attrs, category_cap=2).apply(items, scores, 4, NOW)
    assert shown_items(cut, items) == [0, 1, 3, 4]  # the list is long enough: comedy 3 is out
    whole = rules(attrs, category_cap=2).apply(items, scores, 5, NOW)
    assert shown_items(whole, items) == [0, 1, 3, 4, 2]  # moved down, not dropped
    assert whole.explanations == ((), (), ("category_cap",), ("category_cap",), ("category_cap",))


def test_an_item_counts_toward_each_of_its_categories():
    items, scores = ranked(4)
    attrs = attributes([["Comedy"], ["Comedy", "Drama"], ["Drama"], ["Kids"]])
    # cap 1: item 0 fills Comedy, so item 1 waits; item 2 fills Drama; item 1 comes last
    result = rules(attrs, category_cap=1).apply(items, scores, 4, NOW)
    assert shown_items(result, items) == [0, 2, 3, 1]


def test_boost_multiplies_the_normalised_relevance():
    items = np.arange(4, dtype=np.int64)
    scores = np.array([1.0, 0.8, 0.6, 0.0], dtype=np.float32)  # rel 1, .8, .6, 0
    attrs = attributes([["Comedy"], ["Comedy"], ["Kids"], ["Kids"]])
    boost = {"name": "kids", "kind": "boost", "categories": ["Kids"], "factor": 2.0}
    result = rules(attrs, promotions=[boost]).apply(items, scores, 4, NOW)
    assert shown_items(result, items) == [2, 0, 1, 3]  # .6 * 2 = 1.2 > 1; 0 * 2 stays 0
    np.testing.assert_allclose(result.scores, [1.2, 1.0, 0.8, 0.0], rtol=1e-6)
    assert result.explanations == (("boost:kids",), (), (), ("boost:kids",))


def pin(position=2, **window):
    return {"name": "sale", "kind": "pin", "items": ["i4"], "position": position, **window}


def test_a_pin_inside_its_window_lands_in_its_slot_and_is_explained():
    items, scores = ranked(5)
    window = {"starts": "1970-01-01T00:00:00Z", "ends": "2100-01-01T00:00:00+02:00"}
    result = rules(attributes([["Comedy"]] * 5), promotions=[pin(**window)]).apply(
        items, scores, 3, NOW
    )
    assert shown_items(result, items) == [0, 4, 1]
    assert result.explanations == ((), ("pin:sale",), ())


@pytest.mark.parametrize(
    "window",
    [
        {"starts": "1980-01-01T00:00:00Z"},  # not yet: NOW is 1000 days after the epoch
        {"ends": "1971-01-01T00:00:00Z"},  # over
        {"starts": "1970-01-01T00:00:00Z", "ends": "1972-09-27T00:00:00Z"},  # ends == NOW
    ],
)
def test_a_pin_outside_its_window_does_nothing(window):
    items, scores = ranked(5)
    rule_set = rules(attributes([["Comedy"]] * 5), promotions=[pin(**window)])
    result = rule_set.apply(items, scores, 3, NOW)
    assert shown_items(result, items) == [0, 1, 2] and result.explanations == ((), (), ())


def test_a_pin_is_only_applied_to_candidates_and_slots_within_k():
    items = np.array([0, 1, 2], dtype=np.int64)  # i4 was filtered out: it is not inserted
    scores = np.array([1.0, 0.5, 0.0], dtype=np.float32)
    rule_set = rules(attributes([["Comedy"]] * 5), promotions=[pin(position=1)])
    assert rule_set.apply(items, scores, 2, NOW).order.tolist() == [0, 1]
    items, scores = ranked(5)
    beyond_k = rules(attributes([["Comedy"]] * 5), promotions=[pin(position=4)])
    assert shown_items(beyond_k.apply(items, scores, 3, NOW), items) == [0, 1, 2]
    # a slot beyond a short list puts the pinned item last
    short = beyond_k.apply(np.array([0, 4]), np.array([1.0, 0.0], np.float32), 10, NOW)
    assert short.order.tolist() == [0, 1] and short.explanations[1] == ("pin:sale",)


def test_a_pinned_item_wins_its_group_and_counts_toward_the_caps():
    items, scores = ranked(5)
    attrs = attributes(
        [["Comedy"], ["Comedy"], ["Drama"], ["Kids"], ["Comedy"]], group=[3, -1, -1, -1, 3]
    )
    rule_set = rules(attrs, category_cap=1, promotions=[pin(position=3)])
    # i4 pinned at slot 3 removes i0 (same group, better ranked) and fills Comedy, so i1
    # waits behind i2 and i3
    result = rule_set.apply(items, scores, 4, NOW)
    assert shown_items(result, items) == [2, 3, 4, 1]
    assert result.explanations == (
        ("category_cap",),
        ("category_cap",),
        ("pin:sale",),
        ("category_cap",),
    )


def test_fresh_quota_promotes_the_best_fresh_deep_items_over_the_last_stale_ones():
    items, scores = ranked(7)
    created = [0, 0, 0, 0, 0, NOW - 2 * DAY, NOW - DAY]  # only items 5 and 6 are fresh
    attrs = attributes([["Comedy"]] * 7, created=created)
    one = rules(attrs, fresh_quota=1, fresh_days=10.0).apply(items, scores, 3, NOW)
    assert shown_items(one, items) == [0, 1, 5]
    assert one.explanations == ((), (), ("fresh_quota",))
    two = rules(attrs, fresh_quota=2, fresh_days=10.0).apply(items, scores, 3, NOW)
    assert shown_items(two, items) == [0, 5, 6]
    too_old = rules(attrs, fresh_quota=2, fresh_days=0.5).apply(items, scores, 3, NOW)
    assert shown_items(too_old, items) == [0, 1, 2]


def test_unknown_promotion_ids_and_categories_warn_but_do_not_fail(caplog):
    boost = {"name": "b", "kind": "boost", "items": ["nope"], "categories": ["Horror"]}
    with caplog.at_level(logging.WARNING, logger="serving.rules"):
        rule_set = rules(attributes([["Comedy"]] * 3), promotions=[boost])
    assert "unknown items" in caplog.text and "Horror" in caplog.text
    items, scores = ranked(3)
    assert rule_set.apply(items, scores, 3, NOW).order.tolist() == [0, 1, 2]


def test_default_rules_load():
    config = load_config().rules
    assert config.dedup_groups and config.promotions == ()
    assert 0.0 <= config.mmr_lambda <= 1.0


def test_promotions_load_from_a_toml_array_of_tables(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(
        "[rules]\nmmr_lambda = 0.7\n"
        '[[rules.promotions]]\nname = "winter-sale"\nkind = "boost"\ncategories = ["Comedy"]\n'
        'factor = 2\nstarts = "2026-11-01T00:00:00Z"\nends = "2026-12-01T00:00:00Z"\n'
        '[[rules.promotions]]\nname = "hero"\nkind = "pin"\nitems = ["i1"]\nposition = 1\n'
    )
    config = load_config(path).rules
    sale, hero = config.promotions
    assert (sale.factor, sale.items, hero.position, hero.starts) == (2.0, (), 1, "")
    # 2026-11-01T00:00:00Z = 20758 days after the epoch
    assert sale.window() == (20758 * DAY, 20788 * DAY)
    assert hero.window() == (float("-inf"), float("inf"))


def write_promotion(tmp_path, body: str):
    path = tmp_path / "bad.toml"
    path.write_text('[[rules.promotions]]\nname = "x"\n' + body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('kind = "bury"\nitems = ["i1"]\n', r"promotions\[0\] \('x'\)\.kind 'bury' unknown"),
        ('kind = "boost"\nitems = ["i1"]\nfactor = 0\n', r"\('x'\)\.factor must be positive"),
        ('kind = "boost"\nitems = ["i1"]\nfactor = -2.0\n', r"\.factor must be positive"),
        ('kind = "pin"\nitems = ["i1"]\n', r"\('x'\)\.position must be a 1-based slot"),
        ('kind = "pin"\nitems = ["i1"]\nposition = 0\n', r"\.position must be a 1-based slot"),
        ('kind = "boost"\n', r"\('x'\): items and categories are both empty"),
        (
            'kind = "boost"\nitems = ["i1"]\nstarts = "2026-12-01T00:00:00Z"\n'
            'ends = "2026-11-01T00:00:00Z"\n',
            r"\('x'\)\.ends .* must be after starts",
        ),
        (
            'kind = "boost"\nitems = ["i1"]\nstarts = "2026-12-01T00:00:00Z"\n'
            'ends = "2026-12-01T00:00:00Z"\n',
            r"must be after starts",
        ),
        ('kind = "boost"\nitems = ["i1"]\nstarts = "tomorrow"\n', r"\.starts 'tomorrow' is not"),
        ('kind = "boost"\nitems = ["i1"]\nends = "2026-12-01T00:00"\n', r"\.ends .* no time zone"),
        ('kind = "boost"\nitems = ["i1"]\nstarts = 2026-12-01\n', r"starts' must be str"),
        (
            'kind = "boost"\nitems = ["i1"]\nboost = 2\n',
            r"unknown key 'rules.promotions\[0\]\.boost'",
        ),
        ('kind = "boost"\nitems = [1]\n', r"promotions\[0\]\.items' must be a list of str"),
        ('kind = "boost"\nitems = ["i1"]\nfactor = nan\n', r"'factor' is NaN"),
    ],
)
def test_bad_promotions_name_the_rule_and_the_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_promotion(tmp_path, body))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rules]\nmmr_lambda = 1.5\n", r"rules.mmr_lambda must be in \[0, 1\]"),
        ("[rules]\nmmr_lambda = -0.1\n", r"rules.mmr_lambda must be in \[0, 1\]"),
        ("[rules]\nmmr_depth = 0\n", r"rules.mmr_depth must be positive"),
        ("[rules]\ncategory_cap = -1\n", r"rules.category_cap must be >= 0"),
        ("[rules]\nfresh_quota = -1\n", r"rules.fresh_quota must be >= 0"),
        ("[rules]\nfresh_days = 0\n", r"rules.fresh_days must be positive"),
        ('[rules]\ndedup_groups = "yes"\n', r"'rules.dedup_groups' must be bool"),
        ("[rules]\npromotions = [1]\n", r"'rules.promotions' must be an array of tables"),
        (
            '[[rules.promotions]]\nname = "a"\nkind = "pin"\nitems = ["i"]\nposition = 1\n'
            '[[rules.promotions]]\nname = "a"\nkind = "pin"\nitems = ["j"]\nposition = 2\n',
            r"rules.promotions: name 'a' is used twice",
        ),
        ('[[rules.promotions]]\nname = ""\nkind = "pin"\n', r"promotions\[0\]\.name must not be"),
    ],
)
def test_bad_rules_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_pinned_items_count_as_already_shown_for_mmr():
    # A (pinned at slot 1) = (1, 0), B = (1, 0), C = (0, 1); rel A=0, B=1, C=.6; lambda .5:
    # with S = {A}: B .5 - .5 * 1 = 0, C .3 - 0 = .3 -> C before B
    attrs = attributes([["Comedy"]] * 3, vectors=[[1, 0], [1, 0], [0, 1]])
    items = np.arange(3, dtype=np.int64)
    scores = np.array([0.0, 1.0, 0.6], dtype=np.float32)
    pinned = {"name": "a", "kind": "pin", "items": ["i0"], "position": 1}
    result = rules(attrs, mmr_lambda=0.5, promotions=[pinned]).apply(items, scores, 3, NOW)
    assert shown_items(result, items) == [0, 2, 1]
    assert result.explanations == (("pin:a",), ("mmr",), ())


def naive_mmr(relevance, vectors, lam, k):
    """MMR written out with Python loops, in float64: the reference."""
    chosen, rest = [], list(np.argsort(-relevance, kind="stable"))
    while rest and len(chosen) < k:

        def key(i):
            similarity = max((float(vectors[i] @ vectors[j]) for j in chosen), default=0.0)
            return lam * relevance[i] - (1 - lam) * similarity

        best = max(rest, key=key)
        chosen.append(best)
        rest.remove(best)
    return chosen


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8])
def test_mmr_matches_a_loop_reference(lam):
    rng = np.random.default_rng(7)
    n, d = 40, 8
    vectors = rng.normal(size=(n, d))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = rng.normal(size=n).astype(np.float32)
    relevance = (scores - scores.min()) / (scores.max() - scores.min())
    attrs = attributes([["Comedy"]] * n, vectors=vectors)
    items = np.arange(n, dtype=np.int64)
    result = rules(attrs, mmr_lambda=lam, mmr_depth=n).apply(items, scores, 10, NOW)
    assert result.order.tolist() == naive_mmr(relevance, vectors, lam, 10)


def naive_caps(ranked_items, item_categories, cap, k):
    """Caps by one scan in ranked order: take an item if none of its categories is full,
    else defer it; deferred items fill what is left, in ranked order."""
    counts, taken, deferred = {}, [], []
    for item in ranked_items:
        if all(counts.get(c, 0) < cap for c in item_categories[item]):
            taken.append(item)
            for c in item_categories[item]:
                counts[c] = counts.get(c, 0) + 1
        else:
            deferred.append(item)
    return (taken + deferred)[:k]


def test_category_caps_match_a_loop_reference():
    rng = np.random.default_rng(3)
    n = 60
    item_categories = [
        list(rng.choice(CATEGORIES, size=rng.integers(0, 3), replace=False)) for _ in range(n)
    ]
    scores = rng.normal(size=n).astype(np.float32)
    items = np.arange(n, dtype=np.int64)
    ranked_items = np.argsort(-scores, kind="stable").tolist()
    for cap, k in [(1, 10), (2, 10), (5, 30), (3, 60)]:
        result = rules(attributes(item_categories), category_cap=cap).apply(items, scores, k, NOW)
        assert result.order.tolist() == naive_caps(ranked_items, item_categories, cap, k)


def test_all_rules_together_keep_the_answer_well_formed():
    rng = np.random.default_rng(11)
    n = 80
    item_categories = [
        list(rng.choice(CATEGORIES, size=rng.integers(1, 3), replace=False)) for _ in range(n)
    ]
    group = np.where(rng.random(n) < 0.5, rng.integers(0, 15, n), -1)
    attrs = attributes(
        item_categories,
        created=NOW - rng.uniform(0, 60, n) * DAY,
        group=group,
        vectors=rng.normal(size=(n, 6)),
    )
    promotions = [
        {"name": "kids", "kind": "boost", "categories": ["Kids"], "factor": 1.5},
        {"name": "hero", "kind": "pin", "items": ["i3", "i9"], "position": 2},
        {"name": "drama", "kind": "pin", "categories": ["Drama"], "position": 2},
    ]
    rule_set = rules(
        attrs,
        category_cap=3,
        mmr_lambda=0.6,
        mmr_depth=30,
        fresh_quota=3,
        fresh_days=5.0,
        promotions=promotions,
    )
    for _ in range(20):
        items = rng.choice(n, size=50, replace=False).astype(np.int64)
        scores = rng.normal(size=50).astype(np.float32)
        result = rule_set.apply(items, scores, 12, NOW)
        shown = items[result.order]
        assert len(set(shown.tolist())) == len(shown) == 12
        grouped = group[shown][group[shown] >= 0]
        assert len(set(grouped.tolist())) == len(grouped)  # one item per product group
        # both pins ask for slot 2: "hero" (first in the config, if i3 or i9 is a candidate)
        # gets it, "drama" the next free slot
        pins = [names[-1] for names in result.explanations if names and "pin:" in names[-1]]
        hero = bool(np.isin([3, 9], items).any())
        assert pins == (["pin:hero", "pin:drama"] if hero else ["pin:drama"])
        assert result.explanations[1][-1] == ("pin:hero" if hero else "pin:drama")
        fresh = attrs.created >= NOW - 5 * DAY
        if fresh[shown].sum() < 3:  # the quota may only miss for want of fresh candidates:
            left_out = np.setdiff1d(items[fresh[items]], shown)  # dedup removed the rest
            assert np.isin(group[left_out], group[shown][group[shown] >= 0]).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"created": np.zeros(2)}, r"created must hold one value per item \(3\)"),
        ({"created": np.array([0.0, np.nan, 0.0])}, "created holds NaN"),
        ({"group": np.zeros(4, np.int64)}, "group must hold one value per item"),
        ({"unit_vectors": np.ones((2, 4))}, r"unit_vectors must be \(3, d\)"),
        ({"unit_vectors": np.full((3, 4), np.nan)}, "unit_vectors hold NaN"),
        ({"categories": sp.csr_matrix((3, 2), dtype=bool)}, r"categories must be \(3, 3\)"),
    ],
)
def test_bad_item_attributes_are_value_errors(change, message):
    good = attributes([["Comedy"]] * 3, vectors=np.eye(3, 4))
    bad = ItemAttributes(**{**good.__dict__, **change})
    with pytest.raises(ValueError, match=message):
        rules(bad, mmr_lambda=0.5)


def test_now_must_be_finite():
    items, scores = ranked(3)
    with pytest.raises(ValueError, match="now must be a finite Unix time"):
        rules(attributes([["Comedy"]] * 3)).apply(items, scores, 3, float("nan"))


def test_items_topped_up_after_the_rules_skip_groups_already_shown() -> None:
    attrs = attributes([["Comedy"]] * 5, group=[5, 5, -1, 7, 7])
    picked = rules(attrs, dedup_groups=True).top_up(np.array([1, 2, 3, 4]), np.array([0]), 9)
    assert picked.tolist() == [1, 2]  # item 1 repeats 0's group; 4 repeats 3's (just taken)
    off = rules(attrs, dedup_groups=False).top_up(np.array([1, 2, 3, 4]), np.array([0]), 3)
    assert off.tolist() == [0, 1, 2]  # no rule: simply the first 3


def test_items_topped_up_after_the_rules_keep_the_category_cap() -> None:
    genres = [["Comedy"], ["Comedy", "Drama"], ["Drama"], ["Drama"], ["Kids"], ["Comedy"]]
    capped = rules(attributes(genres), category_cap=2)
    # shown: item 0 (Comedy). Item 1 -> Comedy 2, Drama 1; item 2 -> Drama 2; item 3 would be
    # Drama 3: skipped; item 4 Kids; item 5 would be Comedy 3: skipped.
    picked = capped.top_up(np.array([1, 2, 3, 4, 5]), np.array([0]), 9)
    assert picked.tolist() == [0, 1, 3]
    assert capped.top_up(np.array([1, 2, 3, 4, 5]), np.array([0]), 2).tolist() == [0, 1]
    assert capped.top_up(np.array([1, 2]), np.array([0]), 0).tolist() == []


def test_the_configured_order_decides_between_a_pin_and_its_product_group():
    """Pins before dedup (the default): the pinned i4 wins its group and i0 goes. Dedup
    first: i0, the group's best, stays and the pin finds no candidate of its own."""
    items, scores = ranked(5)
    attrs = attributes([["Comedy"]] * 5, group=[3, -1, -1, -1, 3])
    default = rules(attrs, promotions=[pin(position=1)]).apply(items, scores, 3, NOW)
    assert shown_items(default, items) == [4, 1, 2]
    dedup_first = rules(
        attrs, promotions=[pin(position=1)], order=["dedup", "boosts", "pins", "diversity"]
    )
    result = dedup_first.apply(items, scores, 3, NOW)
    assert shown_items(result, items) == [0, 1, 2] and result.explanations == ((), (), ())
    # a rule left out never runs: without dedup the pinned i4 and i0, one group, both show
    no_dedup = rules(attrs, promotions=[pin(position=1)], order=["pins", "diversity"])
    assert shown_items(no_dedup.apply(items, scores, 3, NOW), items) == [4, 0, 1]


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["boosts", "shuffle"], "'shuffle' unknown; known: boosts, pins"),
        (["pins", "pins"], "'pins' is listed twice"),
        (["diversity", "dedup"], "'dedup' must come before 'diversity'"),
        (["fresh_quota", "diversity"], "'diversity' must come before 'fresh_quota'"),
        (["boosts", "fresh_quota"], "'fresh_quota' edits the list 'diversity' picks"),
    ],
)
def test_a_rule_order_that_cannot_work_is_refused(order, message):
    with pytest.raises(ConfigError, match=message):
        load_config().replace(rules={"order": order})
