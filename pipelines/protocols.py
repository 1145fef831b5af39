"""Held-out protocols every quality figure is measured on (issue "Ranking that earns its
place"), each a split of a dataset into what the models train on and what each evaluated
user did next:

- "chronological": the last `evaluation.holdout_fraction` of events by time is held out;
  a user's relevant items are their positives after the cut not seen before it;
- "leave_last_out": each user's latest event (any type: a low rating was still watched next)
  is held out, and the full catalogue is ranked;
- "sampled": the leave-last-out split, but the held-out item is ranked among 99 items the
  user never interacted with, sampled uniformly (a fixed seed), through `Rank`.

Validation applies the same protocol once more to the training side, so tuning and the
nightly's stage gate never see the test users' held-out items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.splits import chronological_split, leave_last_out
from recsys.config import Config
from recsys.dataset import Dataset
from recsys.ids import UNKNOWN, IdMap
from recsys.interactions import is_positive

PROTOCOLS = ("chronological", "leave_last_out", "sampled")
SAMPLED_NEGATIVES = 99


@dataclass(frozen=True)
class Holdout:
    protocol: str
    train: Dataset
    users: tuple[str, ...]  # evaluated users, sorted
    relevant: tuple[tuple[str, ...], ...]  # per user: held-out item ids
    candidates: tuple[tuple[str, ...], ...] | None = None  # "sampled": the 100 items to rank


def holdout(dataset: Dataset, protocol: str, config: Config, seed: int = 0) -> Holdout:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if protocol == "chronological":
        split = chronological_split(dataset, config.evaluation.holdout_fraction)
        test = split.test.events[is_positive(split.test.events, config)]
        seen = set(zip(split.train.events["user_id"], split.train.events["item_id"], strict=True))
        pairs = [
            (user, item)
            for user, item in zip(test["user_id"], test["item_id"], strict=True)
            if (user, item) not in seen
        ]
        return _holdout(protocol, split.train, pairs)
    split = leave_last_out(dataset)
    pairs = list(zip(split.test.events["user_id"], split.test.events["item_id"], strict=True))
    result = _holdout(protocol, split.train, pairs)
    if protocol == "leave_last_out":
        return result
    return _with_sampled_candidates(result, dataset, seed)


def validation_holdout(dataset: Dataset, protocol: str, config: Config) -> Holdout:
    """The protocol applied to the training side of the test split: never the test users'
    held-out items."""
    return holdout(holdout(dataset, protocol, config).train, protocol, config, seed=1)


def _holdout(protocol: str, train: Dataset, pairs: list[tuple[str, str]]) -> Holdout:
    by_user: dict[str, list[str]] = {}
    for user, item in pairs:
        items = by_user.setdefault(str(user), [])
        if item not in items:
            items.append(str(item))
    if not by_user:
        raise ValueError(f"the {protocol} protocol holds out nothing on this dataset")
    users = tuple(sorted(by_user))
    return Holdout(protocol, train, users, tuple(tuple(by_user[u]) for u in users))


def _with_sampled_candidates(result: Holdout, dataset: Dataset, seed: int) -> Holdout:
    """Each user's held-out item plus 99 items they never interacted with (whole data),
    drawn uniformly without replacement from the user's never-touched items in id order.
    A boolean row per user, not a set difference of id strings: 100k users x 10k items took
    minutes per split that way, for the same draws."""
    items = IdMap.from_values(np.unique(dataset.items["item_id"].astype(str)))  # id order
    users = IdMap.from_values(dataset.events["user_id"])
    item = items.to_index(dataset.events["item_id"])
    owner = users.to_index(dataset.events["user_id"])[item >= 0]
    item = item[item >= 0]
    by_owner = np.argsort(owner, kind="stable")
    owner, item = owner[by_owner], item[by_owner]
    bounds = np.searchsorted(owner, np.arange(len(users) + 1))  # user u's rows: u to u + 1
    rng = np.random.default_rng(seed)
    candidates = []
    for user, held in zip(result.users, result.relevant, strict=True):
        untouched = np.ones(len(items), dtype=bool)
        u = users.index_of(user)
        if u != UNKNOWN:
            untouched[item[bounds[u] : bounds[u + 1]]] = False
        never = np.flatnonzero(untouched)
        if len(never) < SAMPLED_NEGATIVES:
            raise ValueError(
                f"user {user!r} touched all but {len(never)} items; the sampled protocol "
                f"needs {SAMPLED_NEGATIVES} never-interacted items"
            )
        drawn = never[rng.choice(len(never), size=SAMPLED_NEGATIVES, replace=False)]
        negatives = items.to_external(drawn)
        candidates.append((held[0], *(str(n) for n in negatives)))
    return Holdout(result.protocol, result.train, result.users, result.relevant, tuple(candidates))
