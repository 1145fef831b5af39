"""Training data for the rankers: served-path requests at per-user cut-offs, each seeing only
what existed before it (DESIGN.md §4; issue "Ranking that earns its place").

The last `ranking.label_share` of the events is cut into `ranking.periods` equal periods
(by event count). For period j a bundle is built with the nightly code on the events before
its start t_j: the candidate models of the matching period. Requests are drawn from every
user with a positive in the period, up to `ranking.requests_per_user` per user and period,
`ranking.max_requests` in all: a request is the moment s of one such positive, and it sees

- the period's bundle (everything before t_j: the user's long-past history, or nothing for a
  user the bundle never saw), and
- the user's own events in [t_j, s) as the serving session (`serving.sessions.Session`,
  exactly what `LogEvents` gives a live request: the latest items, and the bought, carted and
  rated ones not to offer again),

through the serving pipeline's own candidate stage and `FeatureBuilder`: the values a ranker
learns from are the values it is served. The label is the item of that positive. So requests
come from the whole population at every stage of its life (long-inactive users returning,
new users mid-session, regulars), not from the few users active right after one cut. Only a
user's first event with an item labels a request (`first_touches`).

Those are "moments" (`ranking.requests`): what the user takes up next. A "horizons" request
asks what a chronological split asks: one per user with a labelling event in period j, at
t_j itself (the period's bundle, no session: the user as a nightly finds them), labelled by
every item the user takes up in [t_j, t_j+1). `Config.request_kind` picks one from the
nightly's validation protocol unless the configuration names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from candidates.als_steps import solve_rows, warm
from pipelines.build import build_bundle
from ranking.frame import RankingFrame
from recsys.arrays import is_member
from recsys.config import Config
from recsys.context import CandidateSet
from recsys.dataset import Dataset
from recsys.ids import IdMap
from recsys.interactions import event_weights, is_positive
from serving.filters import apply_filters
from serving.pipeline import RecommendPipeline, RecommendRequest
from serving.sessions import NEVER_AGAIN, Session


@dataclass(frozen=True)
class Request:
    """One training request: user `user` at event row `row` of the dataset (time order)."""

    user: str
    row: int  # the labelling positive's row in dataset.events (horizons: the period's first)
    period: int
    horizon: bool = False  # asked at the period's start, of the whole period (`horizons`)


@dataclass(frozen=True)
class RankingData:
    frame: RankingFrame
    requests: tuple[Request, ...]  # one per group, in group order
    sessions: tuple[Session | None, ...]  # each request's serving session, in group order
    # each request's stepped iALS user vector (`stepped_user_vectors`); None: the bundle's
    vectors: tuple[np.ndarray | None, ...]
    pipelines: tuple[RecommendPipeline, ...]  # one per period, each on events before it
    cutoffs: tuple[int, ...]  # each period's start (Unix seconds)
    drawn: int  # requests drawn; those whose positive no generator found teach nothing

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(r.user for r in self.requests)


def period_cutoffs(times: np.ndarray, label_share: float, periods: int) -> tuple[int, ...]:
    """The start of each period: event-count quantiles over the last `label_share`."""
    shares = 1.0 - label_share * (1.0 - np.arange(periods) / periods)
    positions = np.minimum((shares * len(times)).astype(np.int64), len(times) - 1)
    return tuple(int(t) for t in np.sort(times)[positions])


def event_periods(times: np.ndarray, cutoffs: tuple[int, ...]) -> np.ndarray:
    """The period of each event: j where t_j <= time < t_j+1, -1 before the first."""
    return np.searchsorted(np.asarray(cutoffs), times, side="right") - 1


def draw_requests(
    dataset: Dataset,
    config: Config,
    cutoffs: tuple[int, ...],
    seed: int,
    labelling: np.ndarray | None = None,
) -> list[Request]:
    """Up to requests_per_user positives per user and period, max_requests in all.
    `labelling`: `labelling_events` of the dataset, where the caller has it already."""
    events = dataset.events
    period = event_periods(events["timestamp"].to_numpy(), cutoffs)
    if labelling is None:
        labelling = labelling_events(events, config)
    eligible = np.flatnonzero(labelling & (period >= 0))
    rng = np.random.default_rng(seed)
    horizons = config.request_kind == "horizons"
    if not horizons:
        eligible = rng.permutation(eligible)
    frame = pd.DataFrame(
        {"user": events["user_id"].to_numpy()[eligible], "period": period[eligible]}
    )
    # moments: a random `requests_per_user` of each user's positives in each period;
    # horizons: each user's first in each period, which stands for the whole period
    keep = frame.groupby(["user", "period"], sort=False).cumcount().to_numpy()
    chosen = eligible[keep < (1 if horizons else config.ranking.requests_per_user)]
    if config.ranking.max_requests and len(chosen) > config.ranking.max_requests:
        chosen = rng.choice(chosen, size=config.ranking.max_requests, replace=False)
    chosen = np.sort(chosen)
    users = events["user_id"].to_numpy()
    return [Request(str(users[row]), int(row), int(period[row]), horizons) for row in chosen]


def labelling_events(events: pd.DataFrame, config: Config) -> np.ndarray:
    """bool per event: it may label a request (`ranking.label_events`)."""
    first = first_touches(events)
    if config.ranking.label_events == "positives":  # first touches of items it converts on
        pairs = events["user_id"].astype(str) + "\x00" + events["item_id"].astype(str)
        converted = set(pairs[is_positive(events, config)])
        first &= pairs.isin(converted).to_numpy()
    return first


def first_touches(events: pd.DataFrame) -> np.ndarray:
    """bool per event: the user's first event with the item. Only such an event labels a
    request: serving never offers what the user already touched (`already_interacted`), so
    a purchase of an item viewed a minute before teaches a ranker nothing it can serve
    (on the synthetic shop such re-engagements were most labels, and the ranker learnt to
    pick the session's own items: NDCG@10 0.009 against 0.071 for its input)."""
    pairs = events["user_id"].astype(str) + "\x00" + events["item_id"].astype(str)
    return ~pairs.duplicated().to_numpy()


def build_ranking_data(
    dataset: Dataset,
    config: Config,
    *,
    seed: int = 0,
    show_progress: bool = False,
) -> RankingData:
    """The frame of every drawn request whose labelling item the candidate stage found."""
    times = dataset.events["timestamp"].to_numpy()
    cutoffs = period_cutoffs(times, config.ranking.label_share, config.ranking.periods)
    pipelines = tuple(
        RecommendPipeline.candidate_stage(
            build_bundle(dataset.with_events(dataset.events[times < t]), config).bundle, config
        )
        for t in tqdm(cutoffs, desc="period bundles", unit="bundle", disable=not show_progress)
    )
    grades = LabelGrades(dataset, config, cutoffs)
    requests = draw_requests(dataset, config, cutoffs, seed, grades.labelling)
    sessions = SessionBuilder(dataset, cutoffs, config.events.session_items)
    vectors = (
        stepped_user_vectors(dataset, config, requests, sessions, pipelines)
        if config.ranking.nearline_vectors
        else {}
    )
    rng = np.random.default_rng(seed + 1)
    frames, labels, kept, kept_sessions, kept_vectors = [], [], [], [], []
    for request in tqdm(requests, desc="ranking data", unit="request", disable=not show_progress):
        pipeline = pipelines[request.period]
        session = sessions.before(request)
        ctx = pipeline.context(RecommendRequest(user_id=request.user, k=1, session=session))
        if request.row in vectors:
            ctx = dataclasses.replace(ctx, user_vector=vectors[request.row])
        found, _ = pipeline.candidates(ctx)
        found = with_random_negatives(pipeline, ctx, found, config.ranking.random_negatives, rng)
        label = grades.of(request, found.items, pipeline.bundle.items)
        if not label.any():
            continue  # nothing to learn from a request whose positive was not found
        frame = pipeline.features.build(ctx, found, group=len(frames))
        rows = _sampled_rows(label, config.ranking.negatives_per_request, rng)
        frame, label = frame.take(rows), label[rows]
        frames.append(frame)
        labels.append(label)
        kept.append(request)
        kept_sessions.append(session)
        kept_vectors.append(vectors.get(request.row))
    if not frames:
        raise ValueError("no training request has its positive among its candidates")
    return RankingData(
        frame=_concat(frames, np.concatenate(labels)),
        requests=tuple(kept),
        sessions=tuple(kept_sessions),
        vectors=tuple(kept_vectors),
        pipelines=pipelines,
        cutoffs=cutoffs,
        drawn=len(requests),
    )


def _sampled_rows(label: np.ndarray, negatives: int, rng: np.random.Generator) -> np.ndarray:
    """Every positive and at most `negatives` negatives drawn at random (0: all), in row
    order: a request's hundreds of candidates cost rows, not information."""
    negative = np.flatnonzero(label == 0)
    if not negatives or len(negative) <= negatives:
        return np.arange(len(label))
    chosen = rng.choice(negative, size=negatives, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(label > 0), chosen]))


def stepped_user_vectors(
    dataset: Dataset,
    config: Config,
    requests: list[Request],
    sessions: SessionBuilder,
    pipelines: tuple[RecommendPipeline, ...],
) -> dict[int, np.ndarray]:
    """The iALS vector of each request's user that the nearline worker would hold at its
    moment (keyed by the request's row), for requests whose user acted since the period's
    bundle: one least-squares step (seed 004, "Пошагаем", `candidates.als_steps`) from the
    bundle's item vectors over R's row of every event of the user before the request. The
    bundle's own vector misses the whole session (a user new in it has none), where a
    served request with `recsys nearline` running, or a leave-last-out evaluation, sees
    the user's latest events in the vector: a ranker taught on stale vectors learns to
    distrust the iALS score (alone it ordered training requests 3x worse than served ones)."""
    events = dataset.events
    weights = event_weights(events, config)
    item_ids = events["item_id"].astype(str).to_numpy()
    by_period: dict[int, list[Request]] = {}
    for request in requests:
        if sessions.has_session(request):
            by_period.setdefault(request.period, []).append(request)
    vectors: dict[int, np.ndarray] = {}
    for period, stepped in by_period.items():
        pipeline = pipelines[period]
        rows = [sessions.rows_before(r) for r in stepped]
        every = np.concatenate(rows)
        items = pipeline.bundle.items.to_index(item_ids[every])
        owner = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        known = items >= 0  # items new since the bundle have no vector to step through
        factors = pipeline.bundle.als.model.item_factors
        matrix = sp.csr_matrix(
            (weights[every][known], (owner[known], items[known])),
            shape=(len(rows), len(factors)),
        )
        matrix.sum_duplicates()
        # through the warmed item vectors only, as the worker steps (seed 004, "Пошагаем")
        usable = warm(factors, config.nearline.warm_quantile)
        solved = solve_rows(
            factors, matrix, config.als.alpha, config.als.regularization, usable=usable
        )
        vectors.update((r.row, solved[i]) for i, r in enumerate(stepped))
    return vectors


class LabelGrades:
    """A request's labels: its own item, and with `ranking.later_positives` = n > 0 the
    user's next n labelling items too. A chronological split asks for the set of items a
    user takes up over the coming weeks, where the request's own item alone teaches the
    next one; so its item is graded `ranking.next_item_grade` and each later one 1
    (LightGBM's default label gain 2^grade - 1: 7 against 1 for grade 3). A horizon request's
    labels are the user's labelling items of its whole period, each grade 1."""

    def __init__(self, dataset: Dataset, config: Config, cutoffs: tuple[int, ...]) -> None:
        events = dataset.events
        self.period = event_periods(events["timestamp"].to_numpy(), cutoffs)
        self.later = config.ranking.later_positives
        self.next_item_grade = float(config.ranking.next_item_grade)
        self.item_ids = events["item_id"].astype(str).to_numpy()
        self.labelling = labelling_events(events, config)  # bool per event
        rows = np.flatnonzero(self.labelling)
        users = pd.Series(events["user_id"].astype(str).to_numpy()[rows])
        self.rows_of = {
            user: rows[at] for user, at in users.groupby(users, sort=False).indices.items()
        }

    def of(self, request: Request, candidates: np.ndarray, items: IdMap) -> np.ndarray:
        """float32 per candidate: its grade (0: not taken up)."""
        if request.horizon:  # every item the user takes up in the period, alike
            rows = self.rows_of[request.user]
            rows = rows[self.period[rows] == request.period]
            return is_member(candidates, items.to_index(self.item_ids[rows])).astype(np.float32)
        own = candidates == items.index_of(self.item_ids[request.row])
        if not self.later or not own.any():
            return own.astype(np.float32)
        rows = self.rows_of[request.user]
        later = rows[rows > request.row][: self.later]
        label = is_member(candidates, items.to_index(self.item_ids[later])).astype(np.float32)
        label[own] = self.next_item_grade
        return label


class SessionBuilder:
    """A request's serving session: the user's events from its period's start until just
    before it (strictly earlier rows of the time-ordered log), as `SessionStore` keeps them."""

    def __init__(self, dataset: Dataset, cutoffs: tuple[int, ...], items_per_user: int) -> None:
        events = dataset.events
        self.items_per_user = items_per_user
        self.cutoffs = cutoffs
        self.times = events["timestamp"].to_numpy()
        self.items = events["item_id"].astype(str).to_numpy()
        self.never = events["event_type"].astype(str).isin(NEVER_AGAIN).to_numpy()
        # each user's rows in time order (the log is time-ordered)
        self.rows_of = events.groupby(events["user_id"].astype(str), sort=False).indices

    def rows_before(self, request: Request) -> np.ndarray:
        """The user's event rows before the request, of any time (a horizon request is at
        its period's start)."""
        rows = self.rows_of[request.user]
        if request.horizon:
            return rows[self.times[rows] < self.cutoffs[request.period]]
        return rows[rows < request.row]

    def has_session(self, request: Request) -> bool:
        rows = self.rows_before(request)
        return bool(len(rows)) and self.times[rows[-1]] >= self.cutoffs[request.period]

    def before(self, request: Request) -> Session | None:
        rows = self.rows_before(request)
        rows = rows[self.times[rows] >= self.cutoffs[request.period]]
        if not len(rows):
            return None
        latest: dict[str, bool] = {}  # item -> never again, newest first
        times: dict[str, int] = {}  # item -> its latest event's time
        for row in rows[::-1]:
            item = self.items[row]
            latest[item] = latest.get(item, False) or bool(self.never[row])
            times.setdefault(item, int(self.times[row]))
        recent = tuple(latest)[: self.items_per_user]
        return Session(
            recent=recent,
            never_again=tuple(i for i in recent if latest[i]),
            times=tuple(times[i] for i in recent),
        )


def with_random_negatives(
    pipeline: RecommendPipeline, ctx, found: CandidateSet, count: int, rng: np.random.Generator
) -> CandidateSet:
    """Add up to `count` random eligible items the generators did not propose (NaN scores)."""
    if count <= 0:
        return found
    n_items = len(pipeline.bundle.items)
    sample = np.unique(rng.integers(0, n_items, size=2 * count))
    sample = sample[~is_member(sample, found.items)]
    kept, _ = apply_filters(pipeline.filters, ctx, sample)
    extra = sample[kept][:count]
    items = np.concatenate([found.items, extra])
    order = np.argsort(items, kind="stable")
    width = len(found.names)
    missing = np.full((len(extra), width), np.nan, dtype=np.float32)
    sources = np.empty(len(extra), dtype=object)
    sources[:] = [()] * len(extra)
    return CandidateSet(
        items[order],
        found.names,
        np.vstack([found.scores, missing])[order],
        np.vstack([found.ranks, missing])[order],
        np.concatenate([found.sources, sources])[order],
    )


def _concat(frames: list[RankingFrame], labels: np.ndarray) -> RankingFrame:
    first = frames[0]
    return RankingFrame(
        dense=np.concatenate([f.dense for f in frames]),
        dense_names=first.dense_names,
        sparse=np.concatenate([f.sparse for f in frames]),
        sparse_names=first.sparse_names,
        sparse_cardinalities=first.sparse_cardinalities,
        groups=np.concatenate([f.groups for f in frames]),
        labels=labels,
    )
