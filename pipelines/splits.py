"""Evaluation splits: global time cut, per-user leave-last-out, seed 003's streaming protocol."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.dataset import Dataset

SESSION_COLUMN = "session_id"  # optional events column; sessions are derived when absent


@dataclass(frozen=True)
class TrainTest:
    train: Dataset
    test: Dataset
    cutoff: int  # first test timestamp; -1 when the split is not a global time cut


def chronological_split(dataset: Dataset, holdout_fraction: float) -> TrainTest:
    """The last `holdout_fraction` of events by time is the test set.

    The cut is a timestamp: events sharing the cut timestamp all go to test, so no test
    event is older than any train event.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    times = dataset.events["timestamp"].to_numpy()
    if len(times) == 0:
        raise ValueError("cannot split an empty event log")
    cutoff = int(np.sort(times)[min(int(len(times) * (1.0 - holdout_fraction)), len(times) - 1)])
    is_test = times >= cutoff
    if is_test.all() or not is_test.any():
        raise ValueError(
            f"holdout_fraction={holdout_fraction} leaves an empty side: "
            f"all {len(times)} events fall on one side of t={cutoff}"
        )
    return TrainTest(_take(dataset, ~is_test), _take(dataset, is_test), cutoff)


def leave_last_out(dataset: Dataset, n_last: int = 1) -> TrainTest:
    """Each user's last `n_last` events (by time, ties in log order) are test; users with
    at most `n_last` events stay wholly in train."""
    if n_last < 1:
        raise ValueError(f"n_last must be >= 1, got {n_last}")
    events = dataset.events
    order = np.lexsort((np.arange(len(events)), events["timestamp"].to_numpy()))
    users = events["user_id"].to_numpy()[order]
    from_end = pd.Series(users).groupby(users, sort=False).cumcount(ascending=False).to_numpy()
    counts = pd.Series(users).map(pd.Series(users).value_counts()).to_numpy()
    is_test = np.zeros(len(events), dtype=bool)
    is_test[order] = (from_end < n_last) & (counts > n_last)
    return TrainTest(_take(dataset, ~is_test), _take(dataset, is_test), -1)


def assign_sessions(events: pd.DataFrame, gap_seconds: int) -> np.ndarray:
    """Session id per event: a user's session ends after `gap_seconds` of inactivity."""
    if gap_seconds < 0:
        raise ValueError(f"gap_seconds must be >= 0, got {gap_seconds}")
    order = np.lexsort((events["timestamp"].to_numpy(), events["user_id"].to_numpy()))
    users = events["user_id"].to_numpy()[order]
    times = events["timestamp"].to_numpy()[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (users[1:] != users[:-1]) | (np.diff(times) > gap_seconds)
    sessions = np.empty(len(order), dtype=np.int64)
    sessions[order] = np.cumsum(starts) - 1
    return sessions


@dataclass(frozen=True)
class StreamingSplit:
    train: Dataset  # D_train: offline pre-training
    blocks: tuple[Dataset, ...]  # D_test^1..D_test^n, in time order
    validation: Dataset  # last share of D_train's sessions + D_test^1

    def history_before(self, block: int) -> Dataset:
        """What the model may have learned from before predicting blocks[block]: D_train and
        D_test^1..D_test^block, re-sorted by time (stable) to keep the Dataset contract — a
        block's long session can start before the previous block's last event."""
        if not 0 <= block <= len(self.blocks):
            raise ValueError(f"block must be in [0, {len(self.blocks)}], got {block}")
        parts = [self.train.events, *(b.events for b in self.blocks[:block])]
        events = pd.concat(parts, ignore_index=True)
        order = np.argsort(events["timestamp"].to_numpy(), kind="stable")
        return self.train.with_events(events.iloc[order].reset_index(drop=True))


def streaming_split(
    dataset: Dataset,
    train_share: float = 0.6,
    n_blocks: int = 5,
    validation_share: float = 0.1,
    session_gap_seconds: int = 1800,
) -> StreamingSplit:
    """seed 003, §V.E, "алгоритм эмуляции потокового сценария":
    1) sessions are ordered by their end time; 2) the first 60% are D_train, the other 40%
    D_candidate; 3) D_candidate is cut into 5 equal consecutive blocks D_test^1..5;
    4) 10% of D_train plus D_test^1 form the validation set; 5) blocks before the current
    one are used for online updates (`history_before`).
    Sessions come from a `session_id` events column when there is one, else from
    `assign_sessions` with `session_gap_seconds`; a session's end time is its last event."""
    if not 0.0 < train_share < 1.0 or n_blocks < 1 or not 0.0 <= validation_share < 1.0:
        raise ValueError("need 0 < train_share < 1, n_blocks >= 1, 0 <= validation_share < 1")
    events = dataset.events
    if SESSION_COLUMN in events.columns:
        sessions = pd.factorize(events[SESSION_COLUMN])[0].astype(np.int64)
        if (sessions < 0).any():
            raise ValueError(f"events column {SESSION_COLUMN!r} has missing values")
    else:
        sessions = assign_sessions(events, session_gap_seconds)
    session_end = pd.Series(events["timestamp"].to_numpy()).groupby(sessions).max()
    ordered = session_end.sort_values(kind="stable").index.to_numpy()
    n_train = round(len(ordered) * train_share)
    if n_train == 0 or len(ordered) - n_train < n_blocks:
        raise ValueError(
            f"{len(ordered)} sessions are too few for a {train_share:.0%} / {n_blocks}-block split"
        )
    rank = np.empty(sessions.max() + 1, dtype=np.int64)
    rank[ordered] = np.arange(len(ordered))
    position = rank[sessions]  # chronological session position of each event
    bounds = np.linspace(n_train, len(ordered), n_blocks + 1).round().astype(np.int64)
    train = _take(dataset, position < n_train)
    blocks = tuple(
        _take(dataset, (position >= lo) & (position < hi)) for lo, hi in itertools.pairwise(bounds)
    )
    n_validation = round(n_train * validation_share)
    validation = _take(dataset, (position >= n_train - n_validation) & (position < bounds[1]))
    return StreamingSplit(train=train, blocks=blocks, validation=validation)


def _take(dataset: Dataset, mask: np.ndarray) -> Dataset:
    return dataset.with_events(dataset.events[mask].reset_index(drop=True))
