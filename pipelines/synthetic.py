"""A seeded synthetic e-commerce dataset with the structure recommenders feed on.

What is planted, so that each stage has something real to find:

- taste: users and categories get latent vectors; each user prefers a few categories,
  drawn without replacement from softmax(log prior + strength * user·category) by the
  Gumbel-top-k trick, and splits most of their activity between them by the same softmax;
  the rest is exploration by global category popularity;
- popularity: within a category items are picked by a Zipf law over a random rank, so
  a few items take a large share of all events; user activity is lognormal;
- drift: the window is split into `windows` equal slices and every item has a trend, so
  its log-weight moves linearly from the first slice to the last;
- catalog: lognormal prices per category, some items out of stock (stock == 0), some
  sold only in a subset of regions, some created during the window;
- funnel: every pick is a view; a share become a cart, a share of those a purchase, both
  more likely the more the user likes the category, a few minutes later.

Guarantees (tests rely on them): events are sorted by timestamp and lie in
[end - days, end) with end = 2026-01-01 UTC; no event precedes its item's created_at;
every event's item is sold in the user's home region; every purchase follows a cart and
every cart a view of the same (user, item); the same seed gives the same frames bit for
bit, and the catalog and users do not depend on n_events.

Ids are categorical-backed strings: events.user_id / events.item_id are pandas
Categoricals (int32 codes into the "u0", "u1", ... / "i0", "i1", ... string ids of the
users and items frames), because 20M Python strings would cost minutes and gigabytes.
`.astype(str)` (as in `recsys.dataset.normalize_events`) materialises plain strings
where a caller needs them. The other event columns have the canonical dtypes of
`recsys.dataset`; the items and users frames use plain string columns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.dataset import (
    ALL_REGIONS,
    EVENT_COLUMNS,
    EVENT_TYPE_DTYPE,
    ITEM_COLUMNS,
    LIST_SEPARATOR,
    USER_COLUMNS,
    Dataset,
)

log = logging.getLogger(__name__)

END_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed end keeps timestamps seed-determined
SECONDS_PER_DAY = 86_400
CHUNK_PICKS = 1 << 20  # picks per chunk: bounds the temporaries to a few tens of MB
USER_CHUNK = 1 << 16  # users per Gumbel-top-k block: a (block, n_categories) float32 matrix
MAX_REGION_BITS = 63  # item regions are a bit mask in an int64
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
SEGMENTS = ("bargain", "mainstream", "premium", "new")

VIEW, CART, PURCHASE = (
    EVENT_TYPE_DTYPE.categories.get_loc(t) for t in ("view", "cart", "purchase")
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Every knob of the generator; the defaults give a plausible mid-size shop."""

    n_users: int
    n_items: int
    n_events: int
    n_categories: int = 200
    n_regions: int = 8
    days: int = 90
    seed: int = 0
    latent_dim: int = 16
    taste_strength: float = 2.0  # scale of user·category in the preference logits
    preferred_categories: int = 5  # k of the Gumbel-top-k draw per user
    explore_share: float = 0.15  # picks whose category follows global popularity instead
    category_zipf: float = 0.8  # exponent of the category popularity law
    item_zipf: float = 1.0  # exponent of the within-category popularity law
    activity_sigma: float = 1.0  # lognormal spread of user activity
    windows: int = 12  # drift slices of the time window
    drift: float = 0.5  # std of the per-item log-weight change from middle to either end
    traffic_growth: float = 0.3  # log-traffic gained from the first slice to the last
    cart_rate: float = 0.08  # view -> cart probability at affinity 0.25
    purchase_rate: float = 0.3  # cart -> purchase probability at affinity 0.5
    out_of_stock_share: float = 0.08
    regional_item_share: float = 0.3
    new_item_share: float = 0.1  # items created during the window
    second_category_share: float = 0.15  # items also listed in their nearest category
    region_retries: int = 3  # redraws of an item not sold in the user's region

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1 or self.n_events < 0:
            raise ValueError("need n_users >= 1, n_items >= 1 and n_events >= 0")
        if not 1 <= self.n_categories <= self.n_items:
            raise ValueError(f"n_categories={self.n_categories} must be in [1, n_items]")
        if not 1 <= self.n_regions <= MAX_REGION_BITS:
            raise ValueError(f"n_regions={self.n_regions} must be in [1, {MAX_REGION_BITS}]")
        if self.days < 1 or self.windows < 1:
            raise ValueError("days and windows must be >= 1")


@dataclass(frozen=True)
class _Catalog:
    """Items in slot order: slots are grouped by category, the first slot of a category is
    its most popular item (always old and sold everywhere: the region fallback)."""

    slot_item: np.ndarray  # int32 item index of each slot
    slot_category: np.ndarray  # int32
    category_start: np.ndarray  # int64 first slot of each category
    base_weight: np.ndarray  # float64 Zipf weight per slot
    trend: np.ndarray  # float64 per slot
    created_at: np.ndarray  # int64 per item
    region_mask: np.ndarray  # int64 bit mask per item
    frame: pd.DataFrame


@dataclass(frozen=True)
class _Users:
    activity_cdf: np.ndarray  # float64 cumulative user activity
    region: np.ndarray  # int64 home region
    categories: np.ndarray  # int32 (n_users, k) preferred categories
    weights: np.ndarray  # float32 (n_users, k) share of the user's non-exploring picks
    frame: pd.DataFrame


@dataclass(frozen=True)
class _Table:
    """Per (window, category) item CDFs, concatenated and offset by window * C + category,
    so that one searchsorted over (offset + uniform) picks an item for every event."""

    cdf: np.ndarray  # float64, windows * n_items
    last_slot: np.ndarray  # int64 last positive-weight slot of each (window, category)
    window_cdf: np.ndarray  # float64 traffic per window
    bounds: np.ndarray  # int64 windows + 1 boundaries, Unix seconds


def generate_synthetic(
    n_users: int,
    n_items: int,
    n_events: int,
    *,
    n_categories: int = 200,
    n_regions: int = 8,
    days: int = 90,
    seed: int = 0,
    show_progress: bool = False,
) -> Dataset:
    """A synthetic shop with `n_events` events; see the module docstring for what it holds."""
    spec = SyntheticSpec(
        n_users=n_users,
        n_items=n_items,
        n_events=n_events,
        n_categories=n_categories,
        n_regions=n_regions,
        days=days,
        seed=seed,
    )
    return generate_from_spec(spec, show_progress=show_progress)


def generate_from_spec(spec: SyntheticSpec, *, show_progress: bool = False) -> Dataset:
    """`generate_synthetic` with every knob of `SyntheticSpec` exposed."""
    log.info("generating synthetic dataset %s", asdict(spec))
    # One stream per part, so the catalog and users stay the same when only n_events changes.
    catalog_rng, user_rng, event_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(3)
    )
    category_latent = catalog_rng.standard_normal((spec.n_categories, spec.latent_dim))
    # Zipf over categories in a random order, so category 0 is not always the biggest.
    category_prior = _zipf(catalog_rng.permutation(spec.n_categories) + 1, spec.category_zipf)
    catalog = _catalog(spec, catalog_rng, category_latent, category_prior)
    users = _users(spec, user_rng, category_latent, category_prior)
    table = _table(spec, catalog)
    events = _events(spec, event_rng, catalog, users, table, category_prior, show_progress)
    return Dataset(events=events, items=catalog.frame, users=users.frame, name="synthetic")


def _zipf(ranks: np.ndarray, exponent: float) -> np.ndarray:
    weights = ranks.astype(np.float64) ** -exponent
    return weights / weights.sum()


def _catalog(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    category_latent: np.ndarray,
    category_prior: np.ndarray,
) -> _Catalog:
    n, n_cat = spec.n_items, spec.n_categories
    start = END_EPOCH - spec.days * SECONDS_PER_DAY
    # Popular categories hold more items (sqrt: sizes are less skewed than traffic); the
    # first n_cat items cover every category so none is empty.
    size_p = np.sqrt(category_prior) / np.sqrt(category_prior).sum()
    item_category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, n - n_cat, p=size_p)])
    item_category = rng.permutation(item_category).astype(np.int32)
    # Slots: grouped by category, random order inside it (the order is the Zipf rank).
    slot_item = np.lexsort((rng.random(n), item_category)).astype(np.int32)
    slot_category = item_category[slot_item]
    category_start = np.searchsorted(slot_category, np.arange(n_cat)).astype(np.int64)
    rank = np.arange(n) - category_start[slot_category] + 1
    base_weight = rank.astype(np.float64) ** -spec.item_zipf
    trend = rng.normal(0.0, spec.drift, n)

    is_top = np.zeros(n, dtype=bool)
    is_top[slot_item[category_start]] = True
    # Old items came in up to two years before the window; new ones arrive inside it.
    is_new = (rng.random(n) < spec.new_item_share) & ~is_top
    created_at = np.where(
        is_new,
        start + rng.integers(0, spec.days * SECONDS_PER_DAY, n),
        start - rng.integers(1, 730 * SECONDS_PER_DAY, n),
    ).astype(np.int64)

    all_regions = (1 << spec.n_regions) - 1
    regional = (rng.random(n) < spec.regional_item_share) & ~is_top
    bits = rng.random((n, spec.n_regions)) < 0.5
    mask = (bits.astype(np.int64) << np.arange(spec.n_regions, dtype=np.int64)).sum(axis=1)
    # A regional item is sold somewhere: an empty draw falls back to one random region.
    mask = np.where(mask == 0, np.int64(1) << rng.integers(0, spec.n_regions, n), mask)
    region_mask = np.where(regional, mask, all_regions).astype(np.int64)

    # Prices: lognormal with a median and a spread per category.
    mu = rng.normal(3.0, 0.7, n_cat)
    sigma = rng.uniform(0.2, 0.6, n_cat)
    price = np.exp(mu[item_category] + sigma[item_category] * rng.standard_normal(n))
    price = np.maximum(np.round(price, 2), 0.01)
    stock = np.where(rng.random(n) < spec.out_of_stock_share, 0, rng.integers(1, 500, n))

    # A second category, when listed, is the nearest one in taste space, so it is coherent.
    similarity = category_latent @ category_latent.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1) if n_cat > 1 else np.zeros(1, dtype=np.int64)
    second = (rng.random(n) < spec.second_category_share) & (n_cat > 1)
    category_names = np.array([f"c{c}" for c in range(n_cat)], dtype=object)
    categories = category_names[item_category]
    categories[second] = (
        categories[second] + LIST_SEPARATOR + category_names[nearest[item_category[second]]]
    )

    frame = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)],
            "categories": categories,
            "price": price,
            "stock": stock.astype(np.int64),
            "regions": _region_lists(region_mask, spec.n_regions, all_regions),
            "created_at": created_at,
            "title": [f"{category_names[c]} item {i}" for i, c in enumerate(item_category)],
        },
        columns=list(ITEM_COLUMNS),
    ).astype({"item_id": "str", "categories": "str", "regions": "str", "title": "str"})
    return _Catalog(
        slot_item=slot_item,
        slot_category=slot_category,
        category_start=category_start,
        base_weight=base_weight,
        trend=trend,
        created_at=created_at,
        region_mask=region_mask,
        frame=frame,
    )


def _region_lists(mask: np.ndarray, n_regions: int, all_regions: int) -> np.ndarray:
    """Each item's region list ("r0|r3"; "*" for all), built once per distinct mask."""
    unique, inverse = np.unique(mask, return_inverse=True)
    texts = [
        ALL_REGIONS
        if m == all_regions
        else LIST_SEPARATOR.join(f"r{r}" for r in range(n_regions) if (int(m) >> r) & 1)
        for m in unique
    ]
    return np.array(texts, dtype=object)[inverse]


def _users(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    category_latent: np.ndarray,
    category_prior: np.ndarray,
) -> _Users:
    n, k = spec.n_users, min(spec.preferred_categories, spec.n_categories)
    activity = rng.lognormal(0.0, spec.activity_sigma, n)
    activity_cdf = np.cumsum(activity / activity.sum())
    region_p = _zipf(np.arange(1, spec.n_regions + 1), 0.7)
    region = rng.choice(spec.n_regions, n, p=region_p).astype(np.int64)

    # Unit-variance dot products: scale both sides by dim^-1/4.
    scale = spec.latent_dim**-0.25
    cat_vectors = (category_latent * scale).astype(np.float32)
    log_prior = np.log(category_prior).astype(np.float32)
    categories = np.empty((n, k), dtype=np.int32)
    weights = np.empty((n, k), dtype=np.float32)
    for lo in range(0, n, USER_CHUNK):
        m = min(USER_CHUNK, n - lo)
        user_vectors = rng.standard_normal((m, spec.latent_dim), dtype=np.float32) * scale
        logits = log_prior + spec.taste_strength * (user_vectors @ cat_vectors.T)
        # Gumbel-top-k: the k largest of logits + Gumbel noise are a draw without
        # replacement from softmax(logits) (Kool et al. 2019, "Stochastic Beams").
        with np.errstate(divide="ignore"):
            gumbel = -np.log(-np.log(rng.random((m, spec.n_categories), dtype=np.float32)))
        top = np.argpartition(-(logits + gumbel), k - 1, axis=1)[:, :k]
        chosen = np.take_along_axis(logits, top, axis=1)
        # Shares among the chosen follow the same softmax, restricted to them.
        shares = np.exp(chosen - chosen.max(axis=1, keepdims=True))
        categories[lo : lo + m] = top
        weights[lo : lo + m] = shares / shares.sum(axis=1, keepdims=True)

    ids = pd.Index([f"u{u}" for u in range(n)], dtype="str")
    attribute_texts = np.array(
        [json.dumps({"age_band": a, "segment": s}) for a in AGE_BANDS for s in SEGMENTS],
        dtype=object,
    )
    frame = pd.DataFrame(
        {
            "user_id": ids,
            "region": np.array([f"r{r}" for r in range(spec.n_regions)], dtype=object)[region],
            "attributes": attribute_texts[rng.integers(0, len(attribute_texts), n)],
        },
        columns=list(USER_COLUMNS),
    ).astype({"region": "str", "attributes": "str"})
    return _Users(activity_cdf, region, categories, weights, frame)


def _table(spec: SyntheticSpec, catalog: _Catalog) -> _Table:
    n, n_cat, n_win = spec.n_items, spec.n_categories, spec.windows
    start = END_EPOCH - spec.days * SECONDS_PER_DAY
    # Views stop 2 s before the end so the cart and purchase that follow still fit.
    bounds = start + (np.arange(n_win + 1) * (spec.days * SECONDS_PER_DAY - 2)) // n_win
    position = np.linspace(-1.0, 1.0, n_win) if n_win > 1 else np.zeros(1)
    traffic = np.exp(spec.traffic_growth * (position + 1) / 2)
    window_cdf = np.cumsum(traffic / traffic.sum())

    created = catalog.created_at[catalog.slot_item]
    slot = np.arange(n)
    cdf = np.empty(n_win * n, dtype=np.float64)
    last_slot = np.empty(n_win * n_cat, dtype=np.int64)
    for w in range(n_win):
        lo, hi = bounds[w], bounds[w + 1]
        # An item weighs in proportion to the part of the window it exists in; 0 before.
        alive = np.clip((hi - created) / (hi - lo), 0.0, 1.0)
        weight = catalog.base_weight * np.exp(catalog.trend * position[w]) * alive
        cumulative = np.cumsum(weight)
        before = np.concatenate([[0.0], cumulative])[catalog.category_start]
        total = np.add.reduceat(weight, catalog.category_start)
        within = (cumulative - before[catalog.slot_category]) / total[catalog.slot_category]
        cdf[w * n : (w + 1) * n] = within + (w * n_cat + catalog.slot_category)
        last_slot[w * n_cat : (w + 1) * n_cat] = w * n + np.maximum.reduceat(
            np.where(weight > 0, slot, -1), catalog.category_start
        )
    return _Table(cdf=cdf, last_slot=last_slot, window_cdf=window_cdf, bounds=bounds)


def _events(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    catalog: _Catalog,
    users: _Users,
    table: _Table,
    category_prior: np.ndarray,
    show_progress: bool,
) -> pd.DataFrame:
    total = spec.n_events
    out_user = np.empty(total, dtype=np.int32)
    out_item = np.empty(total, dtype=np.int32)
    out_type = np.empty(total, dtype=np.int8)
    out_time = np.empty(total, dtype=np.int64)
    category_cdf = np.cumsum(category_prior)
    filled = 0
    with tqdm(total=total, unit="event", unit_scale=True, disable=not show_progress) as bar:
        while filled < total:
            # Each pick yields 1 to 3 events, so `total - filled` picks always suffice.
            picks = min(CHUNK_PICKS, total - filled)
            chunk = _sample_chunk(spec, rng, catalog, users, table, category_cdf, picks)
            filled = _write_chunk(
                chunk, total - filled, filled, out_user, out_item, out_type, out_time
            )
            bar.update(filled - bar.n)

    order = np.argsort(out_time, kind="stable")
    user_dtype = pd.CategoricalDtype(users.frame["user_id"], ordered=False)
    item_dtype = pd.CategoricalDtype(catalog.frame["item_id"], ordered=False)
    events = pd.DataFrame(
        {
            "user_id": pd.Categorical.from_codes(out_user[order], dtype=user_dtype, validate=False),
            "item_id": pd.Categorical.from_codes(out_item[order], dtype=item_dtype, validate=False),
            "event_type": pd.Categorical.from_codes(
                out_type[order], dtype=EVENT_TYPE_DTYPE, validate=False
            ),
            "value": np.ones(total, dtype=np.float32),
            "timestamp": out_time[order],
        },
        columns=list(EVENT_COLUMNS),
        copy=False,
    )
    return events


@dataclass(frozen=True)
class _Chunk:
    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    cart_time: np.ndarray
    purchase_time: np.ndarray
    is_cart: np.ndarray
    is_purchase: np.ndarray


def _sample_chunk(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    catalog: _Catalog,
    users: _Users,
    table: _Table,
    category_cdf: np.ndarray,
    m: int,
) -> _Chunk:
    n_cat, k = spec.n_categories, users.categories.shape[1]
    user = np.minimum(
        np.searchsorted(users.activity_cdf, rng.random(m), side="right"), spec.n_users - 1
    )

    # Category: one of the user's preferred ones by their shares, or exploration.
    user_categories = users.categories[user]
    user_weights = users.weights[user]
    choice = (rng.random(m)[:, None] >= np.cumsum(user_weights, axis=1)).sum(axis=1)
    choice = np.minimum(choice, k - 1)[:, None]
    category = np.take_along_axis(user_categories, choice, axis=1)[:, 0]
    explore = rng.random(m) < spec.explore_share
    explored = np.minimum(np.searchsorted(category_cdf, rng.random(m), side="right"), n_cat - 1)
    category = np.where(explore, explored, category).astype(np.int64)
    # Affinity: the user's share of the picked category (0 when it is not a preferred one).
    affinity = (user_weights * (user_categories == category[:, None])).sum(axis=1)

    window = np.minimum(
        np.searchsorted(table.window_cdf, rng.random(m), side="right"), spec.windows - 1
    )
    group = window * n_cat + category
    slot = _pick_slots(spec, rng, catalog, table, group, category, window)
    item = catalog.slot_item[slot]

    # Items not sold in the user's region are redrawn; the rest fall back to the category's
    # top item, which is sold everywhere and exists all along.
    home = users.region[user]
    for _ in range(spec.region_retries):
        unsold = np.flatnonzero(((catalog.region_mask[item] >> home) & 1) == 0)
        if len(unsold) == 0:
            break
        redrawn = _pick_slots(
            spec, rng, catalog, table, group[unsold], category[unsold], window[unsold]
        )
        item[unsold] = catalog.slot_item[redrawn]
    unsold = ((catalog.region_mask[item] >> home) & 1) == 0
    item[unsold] = catalog.slot_item[catalog.category_start[category[unsold]]]

    lo, hi = table.bounds[window], table.bounds[window + 1]
    time = lo + (rng.random(m) * (hi - lo)).astype(np.int64)
    # In its creation window an item exists from created_at on: redraw uniformly there.
    created = catalog.created_at[item]
    early = time < created
    span = hi[early] - created[early]
    time[early] = created[early] + (rng.random(int(early.sum())) * span).astype(np.int64)

    # Funnel: cart and purchase grow with affinity (0.5x when exploring, ~1.5x at share 0.5).
    end = table.bounds[-1] + 2
    is_cart = rng.random(m) < np.minimum(spec.cart_rate * (0.5 + 2.0 * affinity), 0.9)
    is_purchase = is_cart & (rng.random(m) < np.minimum(spec.purchase_rate * (0.5 + affinity), 0.9))
    cart_time = np.minimum(time + 1 + rng.exponential(120.0, m).astype(np.int64), end - 2)
    purchase_time = np.minimum(cart_time + 1 + rng.exponential(600.0, m).astype(np.int64), end - 1)
    return _Chunk(user.astype(np.int32), item, time, cart_time, purchase_time, is_cart, is_purchase)


def _pick_slots(
    spec: SyntheticSpec,
    rng: np.random.Generator,
    catalog: _Catalog,
    table: _Table,
    group: np.ndarray,
    category: np.ndarray,
    window: np.ndarray,
) -> np.ndarray:
    """Slot per event from its (window, category) CDF by one searchsorted call."""
    found = np.searchsorted(table.cdf, group + rng.random(len(group)), side="right")
    # Clamp into the group: float rounding can leave a CDF a hair off 1 at either end, and
    # the top slot of every category always has weight (it is old), the last positive one
    # is recorded per group.
    first = window * spec.n_items + catalog.category_start[category]
    found = np.clip(found, first, table.last_slot[group])
    return found - window * spec.n_items


def _write_chunk(
    chunk: _Chunk,
    room: int,
    filled: int,
    out_user: np.ndarray,
    out_item: np.ndarray,
    out_type: np.ndarray,
    out_time: np.ndarray,
) -> int:
    """Append the chunk's views, carts and purchases; trim the last pick to fit `room`."""
    is_cart, is_purchase = chunk.is_cart.copy(), chunk.is_purchase.copy()
    per_pick = 1 + is_cart.astype(np.int64) + is_purchase
    cumulative = np.cumsum(per_pick)
    keep = len(per_pick)
    if cumulative[-1] > room:
        # The pick that crosses `room` keeps its view (and cart) and loses what follows,
        # so a purchase never lacks its cart.
        keep = int(np.searchsorted(cumulative, room)) + 1
        left = room - (int(cumulative[keep - 2]) if keep > 1 else 0)
        is_purchase[keep - 1] &= left >= 3
        is_cart[keep - 1] &= left >= 2
    parts = (
        (slice(0, keep), chunk.time, VIEW),
        (np.flatnonzero(is_cart[:keep]), chunk.cart_time, CART),
        (np.flatnonzero(is_purchase[:keep]), chunk.purchase_time, PURCHASE),
    )
    for rows, times, code in parts:
        users = chunk.user[rows]
        n = len(users)
        out_user[filled : filled + n] = users
        out_item[filled : filled + n] = chunk.item[rows]
        out_time[filled : filled + n] = times[rows]
        out_type[filled : filled + n] = code
        filled += n
    return filled
