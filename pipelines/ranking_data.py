"""Training data for the rankers: what the candidate stage really proposed, labelled by what
happened after a cut-off (DESIGN.md §4; issue "Ranking": no leakage).

A bundle is built with the nightly code on the events before the cut-off only; for each
user with a positive after it, the serving pipeline's own candidate stage (generators,
union, early filters) proposes items, plus a share of random eligible items as extra
negatives, and `ranking.features.FeatureBuilder` computes their features — the same call
serving makes. Label 1: the user had a positive with the item in the label window.
Every feature therefore comes from events before the cut-off; the labels alone look past it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from candidates.union import CandidateSet
from pipelines.build import build_bundle
from pipelines.dataset import Dataset
from pipelines.training_data import positives_by_user
from ranking.frame import RankingFrame
from recsys.config import Config
from serving.filters import apply_filters
from serving.pipeline import RecommendPipeline, RecommendRequest


@dataclass(frozen=True)
class RankingData:
    frame: RankingFrame
    pipeline: RecommendPipeline  # the pre-cut-off bundle's pipeline the frame came from
    users: tuple[str, ...]  # one per group, in group order
    cutoff: int
    labels_by_user: dict[str, np.ndarray]  # every user's positives in the label window


def build_ranking_data(
    dataset: Dataset,
    config: Config,
    cutoff: int,
    label_end: int | None = None,
    *,
    label_start: int | None = None,
    random_negatives: int = 20,
    max_users: int = 0,
    seed: int = 0,
    pipeline: RecommendPipeline | None = None,
    keep_unlabelled: bool = False,
    show_progress: bool = False,
) -> RankingData:
    """Frame of (user, candidate) rows labelled by positives in [label_start, label_end)
    (label_start defaults to the cut-off; features only ever see events before it).

    `pipeline` reuses a bundle already built on the events before `cutoff`. Requests whose
    candidates hold no positive teach nothing and are dropped, unless `keep_unlabelled`
    (evaluation keeps them: their users still count)."""
    times = dataset.events["timestamp"].to_numpy()
    if pipeline is None:
        before = dataset.with_events(dataset.events[times < cutoff].reset_index(drop=True))
        pipeline = RecommendPipeline.candidate_stage(build_bundle(before, config).bundle, config)
    start = cutoff if label_start is None else label_start
    window = (times >= start) & (times < (label_end if label_end is not None else np.inf))
    labels = positives_by_user(dataset.events[window], config, pipeline.bundle.items)
    users = sorted(labels)
    rng = np.random.default_rng(seed)
    if max_users and len(users) > max_users:
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    frames, kept_users = [], []
    for user in tqdm(users, desc="ranking data", unit="user", disable=not show_progress):
        ctx = pipeline.context(RecommendRequest(user_id=user, k=1))
        found, _ = pipeline.candidates(ctx)
        found = with_random_negatives(pipeline, ctx, found, random_negatives, rng)
        frame = pipeline.features.build(ctx, found, group=len(frames))
        label = np.isin(found.items, labels[user]).astype(np.float32)
        if not len(label) or not (label.any() or keep_unlabelled):
            continue  # nothing to learn from a request whose positives were not found
        frames.append((frame, label))
        kept_users.append(user)
    if not frames:
        raise ValueError("no user after the cut-off has a positive among their candidates")
    return RankingData(
        frame=_concat([f for f, _ in frames], np.concatenate([lab for _, lab in frames])),
        pipeline=pipeline,
        users=tuple(kept_users),
        cutoff=cutoff,
        labels_by_user={user: labels[user] for user in users},
    )


def with_random_negatives(
    pipeline: RecommendPipeline, ctx, found: CandidateSet, count: int, rng: np.random.Generator
) -> CandidateSet:
    """Add up to `count` random eligible items the generators did not propose (NaN scores)."""
    if count <= 0:
        return found
    n_items = len(pipeline.bundle.items)
    sample = np.unique(rng.integers(0, n_items, size=2 * count))
    sample = sample[~np.isin(sample, found.items)]
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
