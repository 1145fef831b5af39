"""Ranking features for (user, item, request): one code path for training and serving.

`FeatureBuilder.build(ctx, candidates)` turns one request's filtered candidate set into a
`RankingFrame`; the training-data builder calls exactly this per request, so the values a
ranker learns from are the values it is served (tests/test_features.py checks both paths).

Every feature is computed from the bundle, i.e. from events before the bundle's newest
event ("now" below); a bundle built on events before a cut-off therefore cannot leak what
happened after it. Missing values are NaN, never 0 (a generator that did not find an item
says nothing about it).

Dense features (DESIGN.md §4; seed 004 "В ранжировании": the ALS dot product as a feature,
norms as popularity / "hotness" proxies; seed 004 "Когда и какой ALS жжет": eALS in features):
- als_dot, als_user_norm, als_item_norm; eals_prediction, eals_item_bias;
- gen_<g>_score, gen_<g>_rank for every configured generator g, n_sources;
- item_<metric>_<window>: every global statistic of the tops (counts, CTR, pCTR, ...);
- item_age_days, item_price, price_to_user_mean (the user's mean price of positives);
- quorum_affinity: Σ_c TF(item, c)·UF(user, c)·IDF(c) (seed 004 "Кворумы");
- category_recency_days: days since the user last touched any of the item's categories;
- user_events, user_distinct_items, user_positives, user_days_since_last;
- sequence (the user's latest items of any event type, the session's first): seq_cosine_<r>,
  the item-kNN cosine of the candidate to the r-th newest item (r = 1..SEQUENCE_POSITIONS;
  0 outside that item's list, NaN past the sequence's end), seq_decayed_cosine
  (Σ_r decay^r · cosine over the newest sequence.last_items: the last_items score for every
  candidate), seq_als_cosine (mean iALS cosine to the newest sequence.last_items), seq_length;
  seq_covisit_1 and seq_decayed_covisit: the same from the "covisit" lists (co-occurrence
  within short windows of users' sequences: items met close together), the decayed sum over
  the newest sequence.covisit_items at covisit_decay (SequenceConfig.depth);
- ease_score: x_u B of EASE over the user's seen and session items (NaN without EASE);
  seq_decayed_ease (with sequence.ease_features): Σ_r ease_decay^r · B[r-th newest item]
  over the sequence (the "recent_ease" generator's score for every candidate; NaN without a
  sequence);
- <model>_score for each session model whose generator "session_<model>" is served (ssrm,
  gag, mgia): its score of the candidate for the live session (NaN without a session).
Sparse features (DLRM embedding tables; 0 = unknown): user, item, category (the item's
first), region (the request's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from candidates.ease import EASEGenerator, RecentEASEGenerator
from candidates.sequence import decayed_neighbors, sequence_weights, similarity_to_sequence
from candidates.session.generator import served_session_generators
from ranking.frame import RankingFrame
from recsys.arrays import row_entries, rows_max_of
from recsys.components import Component, register_component
from recsys.config import SequenceConfig
from recsys.context import CandidateSet, RequestContext
from recsys.interactions import TrainingData
from recsys.loaded_bundle import LoadedBundle

STATS_FILE = "ranking_stats.npz"
SECONDS_PER_DAY = 86_400.0
SPARSE_NAMES = ("user", "item", "category", "region")
SEQUENCE_POSITIONS = 3
COVISIT = "covisit"  # the i2i lists of items met close together in users' sequences
COVISIT_FEATURES = ("seq_covisit_1", "seq_decayed_covisit")


@dataclass(frozen=True)
class UserItemStats:
    """Per-user and per-item facts the features need beyond the generators' own models."""

    now: int  # Unix seconds of the newest event the bundle saw
    item_price: np.ndarray  # float32 per item
    item_created: np.ndarray  # int64 per item
    user_events: np.ndarray  # float32 per user: events of any type
    user_distinct_items: np.ndarray  # float32 per user
    user_positives: np.ndarray  # float32 per user: positive events
    user_mean_price: np.ndarray  # float32 per user: mean item price over positives, NaN none
    user_last_time: np.ndarray  # int64 per user
    category_last_time: sp.csr_matrix  # int64 (n_users, n_categories): last event time

    @classmethod
    def fit(cls, data: TrainingData) -> UserItemStats:
        n_users = len(data.users)
        users, items, times = data.event_users, data.event_items, data.event_times
        positive = data.event_positive
        positives = np.bincount(users[positive], minlength=n_users).astype(np.float32)
        price_sum = np.bincount(
            users[positive], weights=data.item_price[items[positive]], minlength=n_users
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_price = np.where(positives > 0, price_sum / positives, np.nan)
        last = np.zeros(n_users, dtype=np.int64)
        np.maximum.at(last, users, times)
        return cls(
            now=data.newest_time,
            item_price=data.item_price,
            item_created=data.item_created.astype(np.int64),
            user_events=np.bincount(users, minlength=n_users).astype(np.float32),
            user_distinct_items=np.diff(data.interactions.indptr).astype(np.float32),
            user_positives=positives,
            user_mean_price=mean_price.astype(np.float32),
            user_last_time=last,
            category_last_time=_category_last_time(data),
        )

    def save(self, directory: Path) -> None:
        np.savez(
            directory / STATS_FILE,
            now=np.int64(self.now),
            item_price=self.item_price,
            item_created=self.item_created,
            user_events=self.user_events,
            user_distinct_items=self.user_distinct_items,
            user_positives=self.user_positives,
            user_mean_price=self.user_mean_price,
            user_last_time=self.user_last_time,
            cat_data=self.category_last_time.data,
            cat_indices=self.category_last_time.indices,
            cat_indptr=self.category_last_time.indptr,
            cat_shape=np.array(self.category_last_time.shape),
        )

    @classmethod
    def load(cls, directory: Path) -> UserItemStats:
        with np.load(directory / STATS_FILE) as stored:
            arrays = {name: stored[name] for name in stored.files}
        matrix = sp.csr_matrix(
            (arrays.pop("cat_data"), arrays.pop("cat_indices"), arrays.pop("cat_indptr")),
            shape=tuple(arrays.pop("cat_shape")),
        )
        return cls(now=int(arrays.pop("now")), category_last_time=matrix, **arrays)


def _category_last_time(data: TrainingData) -> sp.csr_matrix:
    """(n_users, n_categories) newest event time of the user in the category (0 = never)."""
    n_items, n_categories = data.item_categories.shape
    keys = data.event_users * n_items + data.event_items
    # events are in time order: a pair's last occurrence is its newest event
    pair_keys, last = np.unique(keys[::-1], return_index=True)
    pair_time = data.event_times[::-1][last]
    pair_user, pair_item = pair_keys // n_items, pair_keys % n_items
    categories = data.item_categories.tocsr()
    positions, repeat = row_entries(categories, pair_item)
    cats = categories.indices[positions].astype(np.int64)
    users, times = np.repeat(pair_user, repeat), np.repeat(pair_time, repeat)
    cell = users * n_categories + cats
    order = np.lexsort((-times, cell))  # newest first within each (user, category)
    cell, times = cell[order], times[order]
    first = np.r_[True, cell[1:] != cell[:-1]][: len(cell)]  # [] without categories
    cell, times = cell[first], times[first]
    return sp.csr_matrix(
        (times.astype(np.int64), (cell // n_categories, cell % n_categories)),
        shape=(len(data.users), n_categories),
    )


class FeatureBuilder:
    """Builds one request's features from a loaded bundle; created once per bundle."""

    def __init__(
        self,
        bundle: LoadedBundle,
        generator_names: tuple[str, ...],
        sequence_config: SequenceConfig | None = None,
        session_timeout_seconds: int = 0,
    ) -> None:
        """`sequence_config` ([sequence]) sets the decay and depth of the sequence features;
        None: no sequence features beyond the cosines (they stay NaN).
        `session_timeout_seconds` (sessions.timeout_seconds) cuts the session the session
        models' scores read, as their generators do."""
        self.bundle = bundle
        self.sequence_config = sequence_config
        self.has_cosine_lists = "cosine" in bundle.i2i.kinds
        self.has_covisit_lists = COVISIT in bundle.i2i.kinds  # bundles from before lack them
        self.ease = (
            EASEGenerator(bundle.ease, bundle.profiles.seen_items)
            if getattr(bundle, "ease", None) is not None
            else None
        )
        self.recent_ease = (
            RecentEASEGenerator.of(bundle.ease, bundle.profiles, sequence_config.ease_decay)
            if self.ease is not None
            and sequence_config is not None
            and sequence_config.ease_features
            else None
        )
        # each session model's score of every candidate, where the funnel serves its
        # generator (the config picks them); bundles from before session models have none
        self.session_models = served_session_generators(
            bundle, generator_names, session_timeout_seconds
        )
        self.generator_names = generator_names
        self.stats: UserItemStats = bundle.stats
        als = bundle.als.model
        self.als = als
        self.user_factors, self.item_factors = als.user_factors, als.item_factors
        self.user_norms = np.linalg.norm(self.user_factors, axis=1)
        self.item_norms = np.linalg.norm(self.item_factors, axis=1)
        self.item_stats = bundle.tops.item_stats
        categories = bundle.catalog.item_categories.tocsr()
        has = np.diff(categories.indptr) > 0
        first = np.zeros(categories.shape[0], dtype=np.int64)
        first[has] = categories.indices[categories.indptr[:-1][has]] + 1
        self.first_category = first
        self.categories = categories
        self.dense_names = (
            "als_dot",
            "als_user_norm",
            "als_item_norm",
            "eals_prediction",
            "eals_item_bias",
            *(f"gen_{g}_{kind}" for g in generator_names for kind in ("score", "rank")),
            "n_sources",
            *(f"item_{name}" for name in bundle.tops.stat_names()),
            "item_age_days",
            "item_price",
            "price_to_user_mean",
            "quorum_affinity",
            "category_recency_days",
            "user_events",
            "user_distinct_items",
            "user_positives",
            "user_days_since_last",
            *(f"seq_cosine_{r + 1}" for r in range(SEQUENCE_POSITIONS)),
            "seq_decayed_cosine",
            "seq_als_cosine",
            "seq_covisit_1",
            "seq_decayed_covisit",
            "seq_length",
            "ease_score",
            *(("seq_decayed_ease",) if self.recent_ease is not None else ()),
            *(f"{model}_score" for model in self.session_models),
        )
        self.column = {name: i for i, name in enumerate(self.dense_names)}
        self._static_tables(bundle)
        self.cardinalities = (
            len(self.user_factors) + 1,
            len(self.item_factors) + 1,
            categories.shape[1] + 1,
            len(bundle.tops.region_names) + 1,
        )

    def build(self, ctx: RequestContext, found: CandidateSet, group: int = 0) -> RankingFrame:
        if found.names != self.generator_names:
            raise ValueError(
                f"candidates come from {found.names}, features expect {self.generator_names}"
            )
        items, n = found.items, len(found)
        user = ctx.user_index if 0 <= ctx.user_index < len(self.user_factors) else -1
        column = self.column
        # One gather per side instead of one per feature: a request pays a few dozen numpy
        # calls, not a hundred (serving runs this once per request, DESIGN.md §5 budgets).
        dense = np.empty((n, len(self.dense_names)), dtype=np.float32)
        dense[:, self.item_columns] = self.item_table[items]
        dense[:, self.user_columns] = self.user_table[user] if user >= 0 else np.nan
        if found.names:  # score and rank of each generator, interleaved
            first = column[f"gen_{found.names[0]}_score"]
            dense[:, first : first + 2 * len(found.names) : 2] = found.scores
            dense[:, first + 1 : first + 2 * len(found.names) : 2] = found.ranks
        dense[:, column["n_sources"]] = np.isfinite(found.scores).sum(axis=1)
        vector = self.als.vector_of(ctx)  # the nearline's fresher one when there is one
        dense[:, column["als_dot"]] = (
            self.item_factors[items] @ vector if vector is not None else np.nan
        )
        if ctx.user_vector is not None:
            dense[:, column["als_user_norm"]] = np.linalg.norm(ctx.user_vector)
        eals = self.bundle.eals
        eals_user = user if user < len(eals.user_bias) else -1
        dense[:, column["eals_prediction"]] = eals.predict(np.int64(eals_user), items)
        mean_price = self.stats.user_mean_price[user] if user >= 0 else np.float32(np.nan)
        dense[:, column["price_to_user_mean"]] = dense[:, column["item_price"]] / mean_price
        dense[:, column["quorum_affinity"]] = self.bundle.quorum.affinity(ctx, items)
        dense[:, column["category_recency_days"]] = self._category_recency(user, items)
        self._sequence_features(ctx, items, dense)
        if self.ease is not None:
            dense[:, column["ease_score"]] = self.ease.user_scores(ctx)[0][items]
        else:
            dense[:, column["ease_score"]] = np.nan
        if self.recent_ease is not None:
            dense[:, column["seq_decayed_ease"]] = (
                self.recent_ease.user_scores(ctx)[0][items] if len(ctx.sequence) else np.nan
            )
        for model, generator in self.session_models.items():
            dense[:, column[f"{model}_score"]] = generator.scores_of(ctx, items)
        region = self.bundle.tops.region_code(ctx.region)
        sparse = np.empty((n, len(SPARSE_NAMES)), dtype=np.int64)
        sparse[:, 0] = user + 1
        sparse[:, 1] = items + 1
        sparse[:, 2] = self.first_category[items]
        sparse[:, 3] = region
        return RankingFrame(
            dense=dense,
            dense_names=self.dense_names,
            sparse=sparse,
            sparse_names=SPARSE_NAMES,
            sparse_cardinalities=self.cardinalities,
            groups=np.full(n, group, dtype=np.int64),
        )

    def _sequence_features(self, ctx: RequestContext, items: np.ndarray, dense: np.ndarray) -> None:
        """The candidate against the user's latest items (issue "Ranking that earns its
        place": a user's last items beat every order-blind model on next-item protocols)."""
        column, sequence = self.column, ctx.sequence
        first = column["seq_cosine_1"]
        dense[:, column["seq_length"]] = len(sequence)
        if self.has_cosine_lists:
            dense[:, first : first + SEQUENCE_POSITIONS] = similarity_to_sequence(
                self.bundle.i2i, sequence, items, SEQUENCE_POSITIONS
            )
        else:
            dense[:, first : first + SEQUENCE_POSITIONS] = np.nan
        config = self.sequence_config
        if config is None or not len(sequence):
            for name in ("seq_decayed_cosine", "seq_als_cosine", *COVISIT_FEATURES):
                dense[:, column[name]] = np.nan
            return
        if self.has_covisit_lists and config.covisit_features:
            i2i = self.bundle.i2i
            dense[:, column["seq_covisit_1"]] = similarity_to_sequence(
                i2i, sequence, items, 1, COVISIT
            )[:, 0]
            found, scores = decayed_neighbors(ctx, i2i, config, COVISIT)
            dense[:, column["seq_decayed_covisit"]] = _lookup(found, scores, items)
        else:
            for name in COVISIT_FEATURES:
                dense[:, column[name]] = np.nan
        if self.has_cosine_lists:  # the same vector the last_items generator computed
            found, scores = decayed_neighbors(ctx, self.bundle.i2i, config, "cosine")
            dense[:, column["seq_decayed_cosine"]] = _lookup(found, scores, items)
        else:
            dense[:, column["seq_decayed_cosine"]] = np.nan
        unit = self.bundle.i2i.unit_factors
        if unit is None:
            dense[:, column["seq_als_cosine"]] = np.nan
            return
        seeds = sequence[: config.last_items]
        weights = sequence_weights(len(seeds), config.decay)
        dense[:, column["seq_als_cosine"]] = (unit[items] @ unit[seeds].T) @ weights / weights.sum()

    def _static_tables(self, bundle: LoadedBundle) -> None:
        """Per-item and per-user features that do not depend on the request, one row each,
        computed once per bundle ("now" is the bundle's newest event, so ages are fixed)."""
        stats = self.stats
        item = {
            "als_item_norm": self.item_norms,
            "eals_item_bias": bundle.eals.item_bias,
            **{
                f"item_{name}": row
                for name, row in zip(bundle.tops.stat_names(), self.item_stats, strict=True)
            },
            "item_age_days": (stats.now - stats.item_created) / SECONDS_PER_DAY,
            "item_price": stats.item_price,
        }
        user = {
            "als_user_norm": self.user_norms,
            "user_events": stats.user_events,
            "user_distinct_items": stats.user_distinct_items,
            "user_positives": stats.user_positives,
            "user_days_since_last": (stats.now - stats.user_last_time) / SECONDS_PER_DAY,
        }
        self.item_columns = np.array([self.column[name] for name in item])
        self.item_table = np.column_stack([np.asarray(v, np.float32) for v in item.values()])
        self.user_columns = np.array([self.column[name] for name in user])
        self.user_table = np.column_stack([np.asarray(v, np.float32) for v in user.values()])

    def _category_recency(self, user: int, items: np.ndarray) -> np.ndarray:
        """Days since the user's newest event in any of each item's categories; NaN never."""
        last = self.stats.category_last_time
        if user < 0 or user >= last.shape[0] or not len(items):
            return np.full(len(items), np.nan, dtype=np.float32)
        row = np.zeros(last.shape[1], dtype=np.float64)
        start, end = last.indptr[user], last.indptr[user + 1]
        row[last.indices[start:end]] = last.data[start:end]
        newest = rows_max_of(self.categories, items, row)
        days = (self.stats.now - newest) / SECONDS_PER_DAY
        return np.where(newest > 0, days, np.nan).astype(np.float32)


def _lookup(found: np.ndarray, scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """float32 score of each item among the sorted `found` ones, 0 for the others."""
    result = np.zeros(len(items), dtype=np.float32)
    if len(found):
        at = np.minimum(np.searchsorted(found, items), len(found) - 1)
        hit = found[at] == items
        result[hit] = scores[at[hit]]
    return result


register_component(
    Component(
        "stats",
        fit=lambda given: UserItemStats.fit(given.data),
        load=lambda directory, config: UserItemStats.load(directory),
        directory="ranking_stats",
        step="ranking stats",
        # price unknown (NaN, as in minimal item files); created when it joined, which is
        # after the bundle's newest event ("now"), so recorded as now: age 0, as new as an
        # item can be. A negative age would put it beside the only training rows with one:
        # catalogue items dated after a period bundle's cut-off, which no one could touch
        # yet (MovieLens: 18k of 9M rows, 2 positives)
        grow=lambda stats, new: dataclasses.replace(
            stats,
            item_price=new.rows(stats.item_price, np.nan),
            item_created=new.rows(stats.item_created, min(new.joined, stats.now)),
        ),
    )
)
