"""Sessions: one user's events with short gaps between them (seed 003 §II).

"В SSRM рассматривается работа с ... короткими, средними и длинными сессиями – за
исключением аномальных сессий, включающих только 1 или более 20 взаимодействий": a gap
longer than the timeout starts a new session, and sessions outside [min_length, max_length]
are left out of training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.arrays import run_positions


@dataclass(frozen=True)
class Sessions:
    """Sessions in the order they started (a stream), each its items in time order."""

    items: np.ndarray  # int64: every session's items, concatenated
    offsets: np.ndarray  # int64 (n + 1,): session s is items[offsets[s]:offsets[s + 1]]
    users: np.ndarray  # int64 per session
    starts: np.ndarray  # int64 per session: Unix seconds of its first event
    ends: np.ndarray  # int64 per session: Unix seconds of its last event

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, s: int) -> np.ndarray:
        return self.items[self.offsets[s] : self.offsets[s + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def of(cls, item_lists: list[np.ndarray], users: np.ndarray, starts: np.ndarray) -> Sessions:
        """Sessions from their item arrays, in the order given (each ends as it starts)."""
        lengths = np.array([len(items) for items in item_lists], dtype=np.int64)
        items = np.concatenate(item_lists).astype(np.int64) if item_lists else np.empty(0, np.int64)
        return cls(
            items,
            np.r_[0, np.cumsum(lengths)].astype(np.int64),
            np.asarray(users, np.int64),
            np.asarray(starts, np.int64),
            np.asarray(starts, np.int64),
        )

    def take(self, chosen: np.ndarray) -> Sessions:
        """The sessions at these positions (an index array or a bool mask), in that order."""
        chosen = np.arange(len(self))[chosen]
        lengths = self.lengths[chosen]
        items = self.items[run_positions(self.offsets[chosen], lengths)]
        return Sessions(
            items,
            np.r_[0, np.cumsum(lengths)],
            self.users[chosen],
            self.starts[chosen],
            self.ends[chosen],
        )


def split_sessions(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    timeout_seconds: int,
    min_length: int = 2,
    max_length: int = 20,
) -> Sessions:
    """Cut each user's events (any order in; ties in time keep their input order) into
    sessions at gaps longer than `timeout_seconds`, keep those of min_length..max_length
    events, and return them ordered by start time (then user)."""
    users, items, times = (np.asarray(a, dtype=np.int64) for a in (users, items, times))
    if not len(users):
        empty = np.empty(0, np.int64)
        return Sessions(empty, np.zeros(1, np.int64), empty, empty, empty)
    order = np.lexsort((np.arange(len(users)), times, users))
    users, items, times = users[order], items[order], times[order]
    new = np.r_[True, (users[1:] != users[:-1]) | (np.diff(times) > timeout_seconds)]
    first = np.flatnonzero(new)
    lengths = np.diff(np.r_[first, len(users)])
    keep = (lengths >= min_length) & (lengths <= max_length)
    first, lengths = first[keep], lengths[keep]
    by_start = np.lexsort((users[first], times[first]))
    first, lengths = first[by_start], lengths[by_start]
    return Sessions(
        items=items[run_positions(first, lengths)],
        offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        users=users[first],
        starts=times[first],
        ends=times[first + lengths - 1],
    )


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(B,) 1-based rank of each row's target item among its scores; ties count against
    the target, so a model with no opinion (all scores equal) ranks it last."""
    target = scores[np.arange(len(scores)), targets]
    return (scores >= target[:, None]).sum(axis=1)
