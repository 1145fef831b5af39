"""The request pipeline: generators -> union with sources -> early filters -> rank -> top-k.

Plain objects in and out; nothing here knows about protobuf.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ranking.cascade import Cascade, TrainedRankers
from ranking.dot import DotProductRanker
from ranking.features import FeatureBuilder
from ranking.rank_orders import rank_order
from recsys.arrays import first_positions, is_member, top_k, unit_rows
from recsys.config import Config
from recsys.context import CandidateSet, RequestContext, union
from recsys.loaded_bundle import LoadedBundle
from serving.errors import NotFoundError, RequestError, check_external_id
from serving.fanout import GeneratorFanout, run_inline
from serving.filters import FILTER_FACTORIES, Filter, apply_filters
from serving.fresh_items import FreshItems
from serving.generators import make_generators
from serving.rules import BusinessRules, ItemAttributes
from serving.sessions import Session
from serving.user_vectors import UserVectors, checked_vector

log = logging.getLogger(__name__)

BACKFILL_SOURCE = "popularity"
BACKFILL_STAGE = "backfill"


@dataclass(frozen=True)
class RecommendRequest:
    user_id: str
    k: int
    region: str = ""
    exclude_item_ids: tuple[str, ...] = ()
    basket_item_ids: tuple[str, ...] = ()
    favorite_item_ids: tuple[str, ...] = ()
    request_id: str = ""
    session: Session | None = None  # what the user did since the bundle (the event log)
    deadline: float | None = None  # time.monotonic() by which the answer is due


@dataclass
class Trace:
    """What one request cost, stage by stage: the server turns it into metrics and logs."""

    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    generator_seconds: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # generator -> "deadline" | "error"
    counts: dict[str, int] = field(default_factory=dict)  # candidates after each stage


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float  # the placing stage's score
    sources: tuple[str, ...]
    stage: str = ""  # which stage placed it: a ranker's name, or "backfill"
    explanations: tuple[str, ...] = ()  # business rules that moved or placed it
    title: str = ""  # the catalog's title, "" if it has none


@dataclass(frozen=True)
class Recommendation:
    items: tuple[ScoredItem, ...]
    model_version: str
    cold_start: bool
    request_id: str = ""
    removed_by_filter: dict[str, int] = field(default_factory=dict)
    trace: Trace = field(default_factory=Trace)

    @property
    def degraded(self) -> bool:
        """Built without some generators (late or failed): fewer sources than usual."""
        return bool(self.trace.dropped)


class RecommendPipeline:
    """One bundle's request pipeline; built once per bundle, shared by all requests."""

    def __init__(
        self,
        bundle: LoadedBundle,
        config: Config,
        fanout: GeneratorFanout | None = None,
        user_vectors: UserVectors | None = None,
    ) -> None:
        serving = config.serving
        self.fanout = fanout  # None: generators run inline, one after another
        self.user_vectors = user_vectors  # the nearline's fresh iALS vectors; None: bundle's
        self.nearline = config.nearline
        self.fresh = (
            FreshItems(
                user_vectors, bundle.items_at_nightly, bundle.als.model.item_factors.shape[1]
            )
            if user_vectors is not None and config.nearline.fresh_slots
            else None
        )
        _check_names("serving.filters", serving.filters, FILTER_FACTORIES)
        self.bundle = bundle
        self.config = serving
        self.generators = tuple(make_generators(bundle, config, serving.generators))
        self.filters: tuple[Filter, ...] = tuple(
            FILTER_FACTORIES[name](bundle.catalog, bundle.profiles, serving)
            for name in serving.filters
        )
        self.ranker = DotProductRanker(bundle.als.model, bundle.popularity)
        # Rank's input: the order nightly's Rank pass chose (ranking/rank_orders.py)
        self.rank_input = rank_order(bundle.rankers.rank_order, bundle, config)
        self.titles = bundle.catalog.titles
        self.features = FeatureBuilder(
            bundle,
            tuple(g.name for g in self.generators),
            config.sequence,
            config.sessions.timeout_seconds,
        )
        self.cascade = _cascade(bundle.rankers, config)
        # Rank's: the same unless the stage gate left a stage out of Rank alone
        rank_rankers = bundle.rankers.for_rank()
        self.rank_cascade = (
            self.cascade
            if rank_rankers.dropped == bundle.rankers.dropped
            else _cascade(rank_rankers, config)
        )
        # Unit item vectors for SimilarItems and MMR: the bundle's i2i model already holds them.
        self.unit_item_vectors = (
            bundle.i2i.unit_factors
            if bundle.i2i.unit_factors is not None
            else unit_rows(bundle.als.model.item_factors)
        )
        self.rules = BusinessRules(
            config.rules,
            ItemAttributes(
                item_ids=bundle.items,
                categories=bundle.catalog.item_categories,
                category_names=bundle.catalog.category_names,
                created=bundle.stats.item_created.astype(np.float64),
                group=bundle.catalog.group if (bundle.catalog.group >= 0).any() else None,
                unit_vectors=self.unit_item_vectors,
            ),
        )

    @classmethod
    def candidate_stage(cls, bundle: LoadedBundle, config: Config) -> RecommendPipeline:
        """The pipeline without the ranking cascade: what offline jobs use to see the
        candidate stage of a bundle whose rankers are not trained yet."""
        return cls(bundle, config.replace(ranking={"stages": []}))

    @property
    def version(self) -> str:
        return self.bundle.version

    def warm_up(self, requests: int = 30) -> None:
        """Serve a few requests for known users before this pipeline takes traffic: the
        TorchScript DLRM specialises on its first calls, and every first call of a code
        path pays for caches; users would otherwise see it in p99 right after a swap."""
        users = self.bundle.users.ids
        for i in np.linspace(0, len(users) - 1, num=min(requests, len(users)), dtype=np.int64):
            # with a deadline like live traffic: a hung generator must not hold the swap
            deadline = time.monotonic() + self.config.deadline_ms / 1000
            self.recommend(RecommendRequest(user_id=str(users[i]), k=10, deadline=deadline))
            if self.rank_cascade is not self.cascade:  # Rank's own stages: warm them too
                items = tuple(str(item) for item in self.bundle.items.ids[:20])
                self.rank(str(users[i]), items, deadline=deadline)

    def recommend(self, request: RecommendRequest) -> Recommendation:
        self._check_k(request.k)
        check_external_id("user_id", request.user_id)
        trace = Trace()
        ctx = self.context(request)
        found, removed = self.candidates(ctx, request.deadline, trace)
        best, scores, stages, explanations = self._rank(ctx, found, request.k, trace)
        placed = found.items[best]
        chosen = [
            ScoredItem(item, float(score), source, stage, explained, title)
            for item, score, source, stage, explained, title in zip(
                self.bundle.items.to_external(placed),
                scores,
                found.sources[best],
                stages,
                explanations,
                self.titles[placed],
                strict=True,
            )
        ]
        if len(chosen) < request.k:
            floor = float(scores.min()) if len(scores) else 0.0
            chosen += self._backfill(ctx, request.k - len(chosen), found.items, placed, floor)
        if self.fresh is not None:
            chosen = self._with_fresh_items(ctx, request, chosen)
        trace.counts["returned"] = len(chosen)
        return Recommendation(
            items=tuple(chosen),
            model_version=self.version,
            cold_start=not ctx.known_user,
            request_id=request.request_id,
            removed_by_filter=removed,
            trace=trace,
        )

    def _with_fresh_items(
        self, ctx: RequestContext, request: RecommendRequest, chosen: list[ScoredItem]
    ) -> list[ScoredItem]:
        """Up to nearline.fresh_slots items new since the bundle at fresh_position: the
        ones iALS likes best for the user, if it likes them at all (serving/fresh_items.py)."""
        model = self.bundle.als.model
        vector = model.vector_of(ctx)
        if vector is None:
            return chosen
        # items the cascade placed already (new ones join the bundle: serving/holder.py)
        excluded = {*request.exclude_item_ids, *request.basket_item_ids}
        excluded.update(item.item_id for item in chosen)
        if request.session is not None:
            excluded.update(request.session.never_again)
        at = min(self.nearline.fresh_position, len(chosen) + 1) - 1
        picks = [
            ScoredItem(pick.item_id, pick.score, ("nearline",), "fresh", ("fresh",))
            for pick in self.fresh.pick(vector, self.nearline.fresh_slots, excluded)
        ]
        return (chosen[:at] + picks + chosen[at:])[: request.k]

    def _rank(
        self, ctx: RequestContext, found: CandidateSet, k: int, trace: Trace
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[tuple[str, ...], ...]]:
        """Rows of `found` to show (best first, at most k), their scores, placing stages and
        the business rules that moved each one."""
        if self.cascade is not None and len(found):
            start = time.perf_counter()
            frame = self.features.build(ctx, found)
            trace.seconds["features"] = time.perf_counter() - start
            ranked = self.cascade.rank(frame)
            trace.seconds.update(ranked.seconds)
            order, scores, stages = ranked.order, ranked.scores, ranked.stages
        else:
            scores = self.ranker.score(ctx, found.items)
            order = np.argsort(-scores, kind="stable")
            scores = scores[order]
            stages = np.full(len(order), self.ranker.name, dtype=object)
        return self._apply_rules(found, order, scores, stages, k, trace)

    def _apply_rules(
        self,
        found: CandidateSet,
        order: np.ndarray,
        scores: np.ndarray,
        stages: np.ndarray,
        k: int,
        trace: Trace,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[tuple[str, ...], ...]]:
        """Business rules over the ranked rows. MMR and boosts need one score scale, the last
        ranker's: the rows it did not score (the earlier stage's tail) follow in that stage's
        order, level with the last ranker's lowest, so product groups and category caps use
        them before a capped item of the head is moved down to fill the list."""
        start = time.perf_counter()
        head = int(np.count_nonzero(stages == stages[0])) if len(stages) else 0
        relevance = scores.copy()
        relevance[head:] = scores[head - 1] if head else 0.0
        ruled = self.rules.apply(found.items[order], relevance, k, time.time())
        trace.seconds["rules"] = time.perf_counter() - start
        # each item keeps the score of the ranker that placed it; rules show in explanations
        placed = ruled.order
        return order[placed], scores[placed], stages[placed], ruled.explanations

    def candidates(
        self, ctx: RequestContext, deadline: float | None = None, trace: Trace | None = None
    ) -> tuple[CandidateSet, dict[str, int]]:
        """Every generator within its budget, the union with sources, then the early filters;
        also how many items each filter removed."""
        trace = trace if trace is not None else Trace()
        found = self._generate(ctx, deadline, trace)
        start = time.perf_counter()
        kept, removed = apply_filters(self.filters, ctx, found.items)
        trace.seconds["filters"] = time.perf_counter() - start
        trace.counts["filtered"] = int(kept.sum())
        return found.take(kept), removed

    def _generate(
        self, ctx: RequestContext, deadline: float | None = None, trace: Trace | None = None
    ) -> CandidateSet:
        """Every generator within its budget, unioned with sources; nothing filtered yet.

        With a deadline, the ones that miss `deadline - serving.ranking_reserve_ms` are
        dropped for this request: run off the request thread by the fan-out, or inline
        without one."""
        trace = trace if trace is not None else Trace()
        start = time.perf_counter()
        if deadline is None:  # offline: every generator, and a failure is a failure
            answers = [g.generate(ctx, self.config.budget_of(g.name)) for g in self.generators]
        else:
            due = deadline - self.config.ranking_reserve_ms / 1000
            if self.fanout is None:
                ran = run_inline(self.generators, ctx, self.config.budget_of, due)
            else:
                ran = self.fanout.run(self.generators, ctx, self.config.budget_of, due)
            answers = ran.answers
            trace.generator_seconds.update(ran.seconds)
            trace.dropped.update(ran.dropped)
        found = union(answers)
        trace.seconds["candidates"] = time.perf_counter() - start
        trace.counts["generated"] = len(found)
        return found

    def rank(
        self,
        user_id: str,
        item_ids: tuple[str, ...],
        *,
        session: Session | None = None,
        deadline: float | None = None,
    ) -> list[ScoredItem]:
        """Caller-given items, best first, by Rank's cascade or input order.

        Without a cascade for Rank (none configured, or the stage gate kept none for Rank),
        they come in the order the bundle chose for Rank's input (`TrainedRankers.rank_order`).
        With one, each item gets the features a candidate would: the generators run as
        for Recommend and an item they also proposed keeps their scores and sources (missing
        otherwise); the cascade then orders all of them. Unknown items come last, score 0.
        An id given twice is ranked once: a list holds each item once."""
        check_external_id("user_id", user_id)
        if len(item_ids) > self.config.max_k:
            raise RequestError(f"item_ids has {len(item_ids)} items; at most {self.config.max_k}")
        for i, item_id in enumerate(item_ids):
            check_external_id(f"item_ids[{i}]", item_id)  # unknown ones are echoed back
        item_ids = tuple(dict.fromkeys(item_ids))
        indices = self.bundle.items.to_index(item_ids)
        known = np.flatnonzero(indices >= 0)
        ctx = self.context(RecommendRequest(user_id=user_id, k=1, session=session))
        if self.rank_cascade is not None and len(known):
            given = _restrict(self._generate(ctx, deadline), indices[known])
            ranked = self.rank_cascade.rank(self.features.build(ctx, given))
            rows = known[ranked.order]  # given row j is the caller's item known[j]
            placed = [
                ScoredItem(
                    item_ids[row],
                    float(score),
                    tuple(sources) or (stage,),
                    stage,
                    title=self.titles[indices[row]],
                )
                for row, score, stage, sources in zip(
                    rows, ranked.scores, ranked.stages, given.sources[ranked.order], strict=True
                )
            ]
        else:
            scores = self.rank_input.score(ctx, indices[known])
            order = np.argsort(-scores, kind="stable")
            name = self.rank_input.name
            placed = [
                ScoredItem(
                    item_ids[known[i]],
                    float(scores[i]),
                    (name,),
                    name,
                    title=self.titles[indices[known[i]]],
                )
                for i in order
            ]
        unknown = [ScoredItem(item_ids[i], 0.0, (), "") for i in np.flatnonzero(indices < 0)]
        return placed + unknown

    def servable(self, user_id: str) -> np.ndarray:
        """bool per bundle item: what this pipeline's filters let a plain `Recommend` of the
        user show (no exclusions, basket or session). Offline evaluation holds its baselines
        to it, so that every list competes for the same items."""
        ctx = self.context(RecommendRequest(user_id=user_id, k=1))
        kept, _ = apply_filters(self.filters, ctx, np.arange(len(self.bundle.items)))
        return kept

    def similar_items(self, item_id: str, k: int) -> list[ScoredItem]:
        """Nearest items by cosine of iALS item factors (exact: one matrix-vector product)."""
        self._check_k(k)
        check_external_id("item_id", item_id)  # before the id is echoed in an error
        index = self.bundle.items.index_of(item_id)
        if index < 0:
            raise NotFoundError(f"item {item_id!r} is not in the catalog")
        cosine = self.unit_item_vectors @ self.unit_item_vectors[index]
        cosine[index] = -np.inf
        best = top_k(cosine, k)
        best = best[np.isfinite(cosine[best])]
        return [
            ScoredItem(item, float(score), ("als_cosine",), "als_cosine", title=title)
            for item, score, title in zip(
                self.bundle.items.to_external(best), cosine[best], self.titles[best], strict=True
            )
        ]

    def _check_k(self, k: int) -> None:
        if k <= 0:
            raise RequestError(f"k must be positive, got {k}")
        if k > self.config.max_k:
            raise RequestError(f"k={k} exceeds the maximum of {self.config.max_k}")

    def context(self, request: RecommendRequest) -> RequestContext:
        """The request in dense indices, with the user's recent positives from the bundle."""
        items = self.bundle.items
        user_index = self.bundle.users.index_of(request.user_id)
        region = request.region or self.bundle.profiles.region_of(request.user_id)

        def known(ids: tuple[str, ...]) -> np.ndarray:
            indices = items.to_index(ids)
            return indices[indices >= 0]  # unknown exclusions cannot be recommended anyway

        history = self.bundle.profiles.recent_of(user_index)
        sequence = self.bundle.profiles.sequence_of(user_index)
        times = self.bundle.profiles.sequence_times_of(user_index)
        exclude = known(request.exclude_item_ids)
        if request.session is not None:  # the session's items are the most recent of all
            session = items.to_index(request.session.recent)
            known_items = session >= 0  # unknown items cannot be recommended anyway
            timed = len(request.session.times) == len(session) and times is not None
            if timed:
                session_times = np.asarray(request.session.times, np.int64)[known_items]
            session = session[known_items]
            history = np.concatenate([session, history])
            history = history[first_positions(history)]
            sequence = np.concatenate([session, sequence])
            kept = first_positions(sequence)
            sequence = sequence[kept]
            times = np.concatenate([session_times, times])[kept] if timed else None
            exclude = np.concatenate([exclude, known(request.session.never_again)])
        return RequestContext(
            user_index=user_index,
            region=region,
            exclude=exclude,
            basket=known(request.basket_item_ids),
            favorites=known(request.favorite_item_ids),
            history=history,
            sequence=sequence,
            sequence_times=times,
            request_id=request.request_id,
            user_vector=checked_vector(
                self.user_vectors, request.user_id, self.bundle.als.model.user_factors.shape[1]
            ),
        )

    def _backfill(
        self,
        ctx: RequestContext,
        needed: int,
        already: np.ndarray,
        shown: np.ndarray,
        floor: float,
    ) -> list[ScoredItem]:
        """No short lists: walk the popularity top past the candidates, filtering as we go
        (and skipping what would repeat a product group or pass a category cap)."""
        ranked = self.bundle.popularity.ranked
        chunk = max(4 * needed, 256)
        taken: list[np.ndarray] = []
        for start in range(0, len(ranked), chunk):
            window = ranked[start : start + chunk]
            window = window[~is_member(window, already)]
            kept, _ = apply_filters(self.filters, ctx, window)
            window = window[kept]
            missing = needed - sum(len(t) for t in taken)
            window = window[self.rules.top_up(window, np.concatenate([shown, *taken]), missing)]
            taken.append(window)
            if len(window) == missing:
                break
        fill = np.concatenate(taken)[:needed] if taken else np.empty(0, np.int64)
        # placed below every ranked item, keeping popularity order
        scores = floor - 1.0 - np.arange(len(fill), dtype=np.float32) / max(len(fill), 1)
        return [
            ScoredItem(item, float(score), (BACKFILL_SOURCE,), BACKFILL_STAGE, title=title)
            for item, score, title in zip(
                self.bundle.items.to_external(fill), scores, self.titles[fill], strict=True
            )
        ]


def _cascade(rankers: TrainedRankers, config: Config) -> Cascade | None:
    """The stages these rankers serve, or None where the gate left none."""
    if not rankers.served_stages(config.ranking.stages):
        return None
    return Cascade(rankers, config.ranking, Path(config.data.cache_dir) / "compiled")


def _restrict(found: CandidateSet, items: np.ndarray) -> CandidateSet:
    """`items` (caller-given, in their order) as a candidate set: a generator's score and
    rank where it proposed the item, NaN and no sources where none did."""
    items = np.asarray(items, dtype=np.int64)
    at = np.searchsorted(found.items, items)
    hit = (at < len(found.items)) & (found.items[np.minimum(at, len(found.items) - 1)] == items)
    width = len(found.names)
    scores = np.full((len(items), width), np.nan, dtype=np.float32)
    ranks = np.full((len(items), width), np.nan, dtype=np.float32)
    sources = np.empty(len(items), dtype=object)
    sources[:] = [()] * len(items)
    scores[hit], ranks[hit], sources[hit] = (
        found.scores[at[hit]],
        found.ranks[at[hit]],
        found.sources[at[hit]],
    )
    return CandidateSet(items, found.names, scores, ranks, sources)


def _check_names(key: str, names: tuple[str, ...], known: dict) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{key}: unknown name {unknown[0]!r}; known: {', '.join(known)}")
