"""Business rules on the ranked candidates, before the cut to k (DESIGN.md §5).

seed 004, "Флоу работы типичного рекомендера": candidates -> rankers -> "Накручиваем
бизнес-логику" -> the answer; this module is that last step. MMR serves the "Diversity"
goal of seed 002's behavioural metrics; its formula is Carbonell & Goldstein (1998).

`BusinessRules` is built once per bundle from `[rules]` and the catalog; `apply` takes one
request's ranked candidates and returns the rows to show, best first, with the names of
the rules that touched each of them. Each rule is a registered step (`RULES`) and
`rules.order` says which run and in what order; config validation keeps the steps that
rely on others after them. The default order, and why:

1. boosts: relevance = ranker score min-max normalised within the request, times the
   factor of every active boost naming the item (or one of its categories). Scores first,
   so every later step sees the promoted order.
2. pins are chosen (not yet placed): each active pin takes its best-ranked matching
   candidate. Chosen before dedup so a pinned item wins its product group, and before the
   caps so it counts toward them; placed last because a pin promises a slot.
3. dedup: only the best-ranked item of each product group stays (removed items vanish,
   unexplained).
4. MMR and category caps, one greedy pass (caps are constraints, MMR the objective):
   MMR picks argmax lambda * rel - (1 - lambda) * max cosine to the items picked so far
   (Carbonell & Goldstein 1998) among the top `mmr_depth` items; deeper items follow in
   ranked order. An item whose category is full waits; it comes back, in ranked order,
   only when nothing else is left, so a cap never makes the list short.
5. freshness quota: too few items created within `fresh_days`? The best-ranked fresh
   items not picked replace the lowest-placed stale ones. After the caps, so the quota
   (a promise of a count) may exceed a cap.
6. pins are placed into their 1-based slots; a slot beyond the list puts the item last.

Pins and boosts only act on the candidates given: a pinned item that a filter removed
(out of stock, not sold in the region, already bought) is not inserted, because the
filters state what must never be shown and a promotion does not override them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from recsys.arrays import checked_item_vectors, is_member, row_entries, unit_rows
from recsys.config import RULE_NAMES, PromotionRule, RulesConfig
from recsys.ids import IdMap

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0
# Explanation labels; promotions add "boost:<name>" and "pin:<name>".
CATEGORY_CAP, MMR, FRESH_QUOTA = "category_cap", "mmr", "fresh_quota"
NO_GROUP = -1


@dataclass(frozen=True)
class ItemAttributes:
    """What the rules know about every item of the bundle, indexed like `item_ids`."""

    item_ids: IdMap  # resolves promotion item ids to indices
    categories: sp.csr_matrix  # bool (n_items, n_categories)
    category_names: tuple[str, ...]
    created: np.ndarray  # float64 Unix seconds per item
    group: np.ndarray | None = None  # int64 product group per item, -1 = none; None = no groups
    unit_vectors: np.ndarray | None = None  # float32 (n_items, d); None = MMR off


@dataclass(frozen=True)
class RuledList:
    order: np.ndarray  # int64 rows of the input, best first, at most k
    scores: np.ndarray  # float32 relevance after boosts, per shown item (pins break monotony)
    explanations: tuple[tuple[str, ...], ...]  # per shown item, the rules that touched it


@dataclass(frozen=True)
class _Promotion:
    name: str
    kind: str
    members: np.ndarray  # bool per item: the rule names it or one of its categories
    factor: float
    position: int
    starts: float
    ends: float

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends


@dataclass
class RuleState:
    """One request's list as the rules pass it along: rows of the request's items."""

    items: np.ndarray  # int64 item indices
    relevance: np.ndarray  # float64 per row: min-max normalised scores, boosted
    k: int
    now: float
    pool: np.ndarray  # rows still to place, ranked: pinned and deduplicated ones leave it
    active: list[_Promotion]  # promotions live at `now`
    boosts: list[_Promotion] = field(default_factory=list)  # applied, for explanations
    pinned: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    slots: list[int] = field(default_factory=list)  # each pinned row's 0-based slot
    pin_names: list[str] = field(default_factory=list)
    picked: np.ndarray | None = None  # the list around the pins; None: the pool's head
    notes: dict[int, list[str]] = field(default_factory=dict)  # row -> rules that moved it


class Rule(Protocol):
    """One business rule: moves, removes or promotes rows of the state, never adds an item
    that is not a candidate."""

    name: str

    def apply(self, rules: BusinessRules, state: RuleState) -> None: ...


class Boosts:
    """relevance *= the factor of every active boost naming the item (or its category)."""

    name = "boosts"

    def apply(self, rules: BusinessRules, state: RuleState) -> None:
        state.boosts = [p for p in state.active if p.kind == "boost"]
        if not state.boosts:
            return
        for boost in state.boosts:
            members = boost.members[state.items]
            state.relevance = np.where(members, state.relevance * boost.factor, state.relevance)
        order = np.argsort(-state.relevance, kind="stable")
        in_pool = np.zeros(len(state.items), dtype=bool)
        in_pool[state.pool] = True
        state.pool = order[in_pool[order]]


class Pins:
    """Each active pin takes its best-ranked matching row of the pool; placed at the end."""

    name = "pins"

    def apply(self, rules: BusinessRules, state: RuleState) -> None:
        pins = [p for p in state.active if p.kind == "pin"]
        pinned, slots, names = _choose_pins(pins, state.items, state.pool, state.k)
        if not len(pinned):
            return
        state.pinned, state.slots, state.pin_names = pinned, slots, names
        is_pinned = np.zeros(len(state.items), dtype=bool)
        is_pinned[pinned] = True
        state.pool = state.pool[~is_pinned[state.pool]]


class Dedup:
    """Only the best-ranked (or pinned) row of each product group stays."""

    name = "dedup"

    def apply(self, rules: BusinessRules, state: RuleState) -> None:
        if rules.group is not None:
            state.pool = _dedup(rules.group[state.items], state.pinned, state.pool)


class Diversity:
    """MMR and category caps, one greedy pass, pick the list around the pins."""

    name = "diversity"

    def apply(self, rules: BusinessRules, state: RuleState) -> None:
        budget = state.k - len(state.pinned)
        state.picked = rules._pick(
            state.items, state.relevance, state.pool, state.pinned, budget, state.notes
        )


class FreshQuota:
    """Too few fresh items? The best-ranked fresh rows replace the lowest-placed stale."""

    name = "fresh_quota"

    def apply(self, rules: BusinessRules, state: RuleState) -> None:
        if rules.config.fresh_quota and state.picked is not None:
            state.picked = rules._fresh_quota(
                state.items, state.pool, state.picked, state.pinned, state.now, state.notes
            )


RULES: dict[str, type[Rule]] = {
    rule.name: rule for rule in (Boosts, Pins, Dedup, Diversity, FreshQuota)
}
assert tuple(RULES) == RULE_NAMES, "recsys.config.RULE_NAMES lists the rules of this module"


class BusinessRules:
    """The rules of one bundle; immutable, shared by all requests."""

    name = "rules"

    def __init__(self, config: RulesConfig, attributes: ItemAttributes) -> None:
        self.config = config
        n_items = len(attributes.item_ids)
        self.categories = _checked_categories(attributes, n_items)
        self.created = _checked_per_item(attributes.created, n_items, "created", np.float64)
        self.group = (
            _checked_per_item(attributes.group, n_items, "group", np.int64)
            if attributes.group is not None and config.dedup_groups
            else None
        )
        self.unit_vectors = None
        if attributes.unit_vectors is not None and config.mmr_lambda < 1.0:
            self.unit_vectors = _checked_vectors(attributes.unit_vectors, n_items)
        elif config.mmr_lambda < 1.0:
            log.warning("rules: mmr_lambda=%s but no item vectors; MMR is off", config.mmr_lambda)
        self.promotions = tuple(
            _resolve(rule, attributes, n_items, self.categories) for rule in config.promotions
        )
        self.rules = tuple(RULES[name]() for name in config.order)  # validated with the config

    def top_up(self, items: np.ndarray, shown: np.ndarray, needed: int) -> np.ndarray:
        """Positions in `items` of the first `needed` that may follow `shown` (item indices,
        already in the list) without a second item of a product group or a category past
        `category_cap`: for lists topped up after the rules (a short head, the backfill).
        Each accepted item counts for the next, so the loop runs in order; it stops once
        `needed` are found, which is a handful of items in practice."""
        items, shown = np.asarray(items, dtype=np.int64), np.asarray(shown, dtype=np.int64)
        cap = self.config.category_cap
        if needed <= 0:
            return np.empty(0, dtype=np.int64)
        if self.group is None and cap <= 0:
            return np.arange(min(needed, len(items)), dtype=np.int64)
        groups = set(self.group[shown].tolist()) - {NO_GROUP} if self.group is not None else None
        counts: dict[int, int] = {}
        if cap > 0:
            for item in shown.tolist():
                for column in self._categories_of(item):
                    counts[column] = counts.get(column, 0) + 1
        chosen: list[int] = []
        for position, item in enumerate(items.tolist()):
            group = NO_GROUP if groups is None else int(self.group[item])
            if group != NO_GROUP and group in groups:
                continue
            columns = self._categories_of(item) if cap > 0 else []
            if any(counts.get(column, 0) >= cap for column in columns):
                continue
            for column in columns:
                counts[column] = counts.get(column, 0) + 1
            if group != NO_GROUP:
                groups.add(group)
            chosen.append(position)
            if len(chosen) == needed:
                break
        return np.asarray(chosen, dtype=np.int64)

    def _categories_of(self, item: int) -> list[int]:
        start, end = self.categories.indptr[item], self.categories.indptr[item + 1]
        return self.categories.indices[start:end].tolist()

    def apply(self, items: np.ndarray, scores: np.ndarray, k: int, now: float) -> RuledList:
        """Rows of (items, scores) to show, best first, at most k; `now` is Unix seconds
        (promotion windows and freshness are judged against it). The rules of
        `rules.order` pass one state along, in that order."""
        items, relevance = self._checked_request(items, scores, k, now)
        if not len(items) or k == 0:
            return RuledList(np.empty(0, np.int64), np.empty(0, np.float32), ())
        active = [p for p in self.promotions if p.active(now)]
        state = RuleState(items, relevance, k, now, np.argsort(-relevance, kind="stable"), active)
        for rule in self.rules:
            rule.apply(self, state)
        picked = state.picked if state.picked is not None else state.pool[: k - len(state.pinned)]
        pinned = state.pinned
        shown = _place(picked, pinned, state.slots, k) if len(pinned) else picked
        pin_of = dict(zip(pinned.tolist(), state.pin_names, strict=True))
        explanations = _explain(shown, items, state.boosts, state.notes, pin_of)
        return RuledList(shown, state.relevance[shown].astype(np.float32), explanations)

    def _checked_request(
        self, items: np.ndarray, scores: np.ndarray, k: int, now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        if items.ndim != 1 or scores.shape != items.shape:
            raise ValueError(
                f"items and scores must be 1-d of one length: {items.shape}, {scores.shape}"
            )
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite Unix time, got {now}")
        if not len(items):
            return items, scores
        if items.min() < 0 or items.max() >= len(self.created):
            raise ValueError(f"item indices must be in [0, {len(self.created)})")
        low, high = scores.min(), scores.max()
        if not (math.isfinite(low) and math.isfinite(high)):  # NaN or inf reach min or max
            raise ValueError("scores hold NaN or infinite values")
        # relevance: the ranker's scores min-max normalised within the request; all equal ->
        # all 1, so that a boost still acts
        if high == low:
            return items, np.ones_like(scores)
        return items, (scores - low) / (high - low)

    def _pick(
        self,
        items: np.ndarray,
        relevance: np.ndarray,
        pool: np.ndarray,
        pinned: np.ndarray,
        budget: int,
        notes: dict[int, list[str]],
    ) -> np.ndarray:
        """Up to `budget` rows of `pool` (ranked), by MMR under the category caps.

        k greedy steps of a few numpy calls each. `taken` and `allowed` (not taken, not
        capped) are Python lists: they only lose items, so the first free position moves
        forward, and scalar list reads cost far less than numpy calls at this size."""
        budget = min(budget, len(pool))
        cap, mmr = self.config.category_cap, self.unit_vectors is not None
        if budget <= 0 or not (cap or mmr):
            return pool[: max(budget, 0)]
        size = len(pool)
        taken = [False] * size
        allowed = [True] * size
        diversity = _MMRState(self, items, relevance, pool, pinned) if mmr else None
        caps = _CapState(self.categories, items[pool], items[pinned], cap) if cap else None
        if caps is not None:
            _block(caps.initially_blocked, allowed, diversity)
        picks = np.empty(budget, dtype=np.int64)
        first_taken = first_allowed = 0  # first position not taken / allowed
        for step in range(budget):
            while taken[first_taken]:
                first_taken += 1
            while first_allowed < size and not allowed[first_allowed]:
                first_allowed += 1
            if first_allowed == size:  # only capped items are left: no short list
                pick = first_taken
                _note(notes, pool[pick], CATEGORY_CAP)
            else:
                pick = first_allowed
                if diversity is not None and pick < diversity.depth:
                    pick = diversity.best()
                    if pick != first_allowed:
                        _note(notes, pool[pick], MMR)
                if first_taken < first_allowed:  # better items wait: their category is full
                    _note(notes, pool[pick], CATEGORY_CAP)
            taken[pick] = True
            allowed[pick] = False
            picks[step] = pick
            if diversity is not None:
                diversity.picked(pick)
            if caps is not None:
                _block(caps.add(pick), allowed, diversity)
        return pool[picks]

    def _fresh_quota(
        self,
        items: np.ndarray,
        pool: np.ndarray,
        picked: np.ndarray,
        pinned: np.ndarray,
        now: float,
        notes: dict[int, list[str]],
    ) -> np.ndarray:
        """The best-ranked fresh rows not picked replace the lowest-placed stale picks."""
        fresh = self.created[items] >= now - self.config.fresh_days * SECONDS_PER_DAY
        missing = self.config.fresh_quota - int(fresh[pinned].sum() + fresh[picked].sum())
        if missing <= 0:
            return picked
        is_picked = np.zeros(len(items), dtype=bool)
        is_picked[picked] = True
        fresh_pool = pool[fresh[pool]]
        promoted = fresh_pool[~is_picked[fresh_pool]][:missing]
        stale_places = np.flatnonzero(~fresh[picked])
        swaps = min(len(promoted), len(stale_places))
        if swaps == 0:
            return picked
        for row in promoted[:swaps].tolist():
            _note(notes, row, FRESH_QUOTA)
        kept = np.delete(picked, stale_places[len(stale_places) - swaps :])
        return np.concatenate([kept, promoted[:swaps]])


class _MMRState:
    """MMR over the top `mmr_depth` of the pool: a running max-similarity vector, so each
    greedy step costs one (depth, d) @ (d,) product (O(k * depth * d) per request)."""

    def __init__(
        self,
        rules: BusinessRules,
        items: np.ndarray,
        relevance: np.ndarray,
        pool: np.ndarray,
        pinned: np.ndarray,
    ) -> None:
        lam = np.float32(rules.config.mmr_lambda)
        self.depth = min(len(pool), rules.config.mmr_depth)
        self.vectors = rules.unit_vectors[items[pool[: self.depth]]]
        self.weighted = (1 - lam) * self.vectors  # (1 - lambda) folded into one side of sim
        # lambda * rel, -inf where an item may not be picked (taken or capped)
        self.gain = lam * relevance[pool[: self.depth]].astype(np.float32)
        # S starts with the pinned items: they will be shown, so others should differ from them
        self.penalty = (
            (self.weighted @ rules.unit_vectors[items[pinned]].T).max(axis=1)
            if len(pinned)
            else None
        )
        # Carbonell & Goldstein: key(i) = lambda * rel(i) - (1 - lambda) * max_{j in S} sim(i, j);
        # S empty -> lambda * rel alone
        self.key = self.gain.copy() if self.penalty is None else self.gain - self.penalty

    def best(self) -> int:
        return int(self.key.argmax())

    def picked(self, pick: int) -> None:
        if pick >= self.depth:  # the window has no allowed item left: MMR is done
            return
        self.gain[pick] = -np.inf
        similarity = self.weighted @ self.vectors[pick]
        if self.penalty is None:
            self.penalty = similarity
        else:
            np.maximum(self.penalty, similarity, out=self.penalty)
        np.subtract(self.gain, self.penalty, out=self.key)

    def block(self, positions: np.ndarray) -> None:
        inside = positions[positions < self.depth]
        self.gain[inside] = -np.inf
        self.key[inside] = -np.inf


class _CapState:
    """Per-category counts of the answer so far; says which pool positions a pick blocks.

    Counts live in a dict: a pick touches a handful of categories, and scalar Python
    arithmetic beats numpy calls at that size."""

    def __init__(
        self, categories: sp.csr_matrix, pool_items: np.ndarray, pinned_items: np.ndarray, cap: int
    ) -> None:
        self.cap = cap
        # the pool's (position, category) pairs, gathered from the CSR arrays
        # (scipy's fancy row indexing costs ~100 us per call)
        positions, lengths = row_entries(categories, pool_items)
        ends = np.cumsum(lengths)
        self.owner = np.repeat(np.arange(len(pool_items)), lengths)
        self.category = categories.indices[positions]
        self.category_list = self.category.tolist()
        self.starts = [0, *ends.tolist()]  # position i: category_list[starts[i]:starts[i + 1]]
        self.counts: dict[int, int] = {}
        for item in pinned_items.tolist():  # pinned items are shown: they count
            for column in categories.indices[categories.indptr[item] : categories.indptr[item + 1]]:
                self.counts[int(column)] = self.counts.get(int(column), 0) + 1
        self.initially_blocked = self._holding([c for c, n in self.counts.items() if n >= cap])

    def add(self, pick: int) -> np.ndarray:
        """Counts a picked pool position; returns the positions its pick blocks."""
        filled = []
        for column in self.category_list[self.starts[pick] : self.starts[pick + 1]]:
            count = self.counts.get(column, 0) + 1
            self.counts[column] = count
            if count == self.cap:
                filled.append(column)
        return self._holding(filled)

    def _holding(self, columns: list[int]) -> np.ndarray:
        if not columns:
            return np.empty(0, dtype=np.int64)
        if len(columns) == 1:
            return self.owner[self.category == columns[0]]
        return self.owner[is_member(self.category, np.asarray(columns))]


def _choose_pins(
    pins: list[_Promotion], items: np.ndarray, order: np.ndarray, k: int
) -> tuple[np.ndarray, list[int], list[str]]:
    """Rows pinned (each active pin's best-ranked matching row of `order`, the pool), their
    0-based slots and the pins' names; a pin whose slot lies beyond k is not applied."""
    rows: list[int] = []
    slots: list[int] = []
    names: list[str] = []
    for pin in pins:
        if pin.position > k or len(rows) >= k:
            continue
        # the first len(rows) + 1 matches hold one that no earlier pin took, if any
        matching = order[pin.members[items[order]]][: len(rows) + 1].tolist()
        free = [row for row in matching if row not in rows]
        if free:
            rows.append(free[0])
            slots.append(pin.position - 1)
            names.append(pin.name)
    return np.asarray(rows, dtype=np.int64), slots, names


def _dedup(groups: np.ndarray, pinned: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """The pool without rows whose product group a pinned or better-ranked row holds."""
    ranked = np.concatenate([pinned, pool])
    group = groups[ranked]
    _, first = np.unique(group, return_index=True)
    keep = group == NO_GROUP
    keep[first] = True
    return pool[keep[len(pinned) :]]


def _block(positions: np.ndarray, allowed: list[bool], diversity: _MMRState | None) -> None:
    """Pool positions a full category holds back: MMR no longer considers them."""
    if not len(positions):
        return
    for position in positions.tolist():
        allowed[position] = False
    if diversity is not None:
        diversity.block(positions)


def _place(picked: np.ndarray, pinned: np.ndarray, slots: list[int], k: int) -> np.ndarray:
    """Pins into their slots (taken -> the next free one; beyond the list -> last), the
    picks around them in order."""
    length = min(k, len(picked) + len(pinned))
    shown = np.empty(length, dtype=np.int64)
    free = np.ones(length, dtype=bool)
    for row, slot in zip(pinned.tolist(), slots, strict=True):
        later = np.flatnonzero(free[slot:]) if slot < length else np.empty(0, np.int64)
        place = slot + int(later[0]) if len(later) else int(np.flatnonzero(free)[-1])
        shown[place] = row
        free[place] = False
    shown[free] = picked[: int(free.sum())]
    return shown


def _explain(
    shown: np.ndarray,
    items: np.ndarray,
    boosts: list[_Promotion],
    notes: dict[int, list[str]],
    pins: dict[int, str],
) -> tuple[tuple[str, ...], ...]:
    if not (boosts or notes or pins):
        return ((),) * len(shown)
    boosted = [(f"boost:{b.name}", b.members[items[shown]].tolist()) for b in boosts]
    explained = []
    for place, row in enumerate(shown.tolist()):
        names = [label for label, hit in boosted if hit[place]]
        names += notes.get(row, [])
        if row in pins:
            names.append(f"pin:{pins[row]}")
        explained.append(tuple(dict.fromkeys(names)))  # a rule named once per item
    return tuple(explained)


def _note(notes: dict[int, list[str]], row: int, label: str) -> None:
    notes.setdefault(int(row), []).append(label)


def _resolve(
    rule: PromotionRule, attributes: ItemAttributes, n_items: int, categories: sp.csr_matrix
) -> _Promotion:
    """A promotion's items and categories as one bool mask over the bundle's items.

    Unknown ids or category names only warn: catalogs change nightly, and a rule written
    for tomorrow's catalog must not stop today's server."""
    members = np.zeros(n_items, dtype=bool)
    indices = attributes.item_ids.to_index(np.asarray(rule.items, dtype=object))
    members[indices[indices >= 0]] = True
    unknown = [item for item, index in zip(rule.items, indices.tolist(), strict=True) if index < 0]
    if unknown:
        log.warning(
            "rules: promotion %r names %d unknown items, e.g. %r",
            rule.name,
            len(unknown),
            unknown[0],
        )
    columns = [
        attributes.category_names.index(c)
        for c in rule.categories
        if c in attributes.category_names
    ]
    missing = [c for c in rule.categories if c not in attributes.category_names]
    if missing:
        log.warning("rules: promotion %r names unknown categories %s", rule.name, missing)
    if columns:
        members |= categories[:, columns].getnnz(axis=1) > 0
    starts, ends = rule.window()
    return _Promotion(rule.name, rule.kind, members, rule.factor, rule.position, starts, ends)


def _checked_categories(attributes: ItemAttributes, n_items: int) -> sp.csr_matrix:
    # a copy: canonicalising must not touch the catalog's matrix, which others share
    categories = sp.csr_matrix(attributes.categories, dtype=bool, copy=True)
    if categories.shape != (n_items, len(attributes.category_names)):
        raise ValueError(
            f"categories must be ({n_items}, {len(attributes.category_names)}), "
            f"got {categories.shape}"
        )
    categories.sum_duplicates()  # one stored True per (item, category): counts are per item
    categories.eliminate_zeros()
    return categories


def _checked_per_item(values: np.ndarray, n_items: int, name: str, dtype: type) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.shape != (n_items,):
        raise ValueError(f"{name} must hold one value per item ({n_items}), got {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def _checked_vectors(vectors: np.ndarray, n_items: int) -> np.ndarray:
    array = checked_item_vectors(vectors, n_items, "unit_vectors")
    norms = np.linalg.norm(array, axis=1)
    if np.all((np.abs(norms - 1) < 1e-3) | (norms == 0)):  # already unit: share, don't copy
        return array
    return unit_rows(array)  # cosine needs unit rows (zero rows stay zero)
