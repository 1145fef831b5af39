"""A synthetic stream of sessions with drift and new items, for seed 003 §V.E.

The shop of `pipelines.synthetic` has no session structure (a user's events are spread over
days). Here the catalogue is cut into series of consecutive items (episodes, a collection's
pieces); a session starts at an item of one of the user's favourite series or at a popular
item and mostly steps to the next item of its series, sometimes jumps to a popular one. So
the order inside a session, the user's taste and popularity all carry signal. Over the
stream each item's popularity drifts (its log-weight moves linearly by up to ±`drift`), and
the last `new_item_share` of the catalogue is released during the second half: items a
pre-trained model has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.dataset import Dataset, normalize_events

END_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z, as pipelines.synthetic
SECONDS_BETWEEN_EVENTS = 30  # inside a session; sessions of one user are hours apart


@dataclass(frozen=True)
class SessionStreamSpec:
    n_users: int = 3000
    n_items: int = 2000
    n_sessions: int = 30_000
    series_length: int = 8
    favourite_series: int = 3
    follow: float = 0.7  # the next item is the next of the series with this probability
    from_taste: float = 0.5  # a session starts in one of the user's favourite series
    mean_length: float = 5.0  # session length: 2 + geometric, at most 20
    drift: float = 1.5
    new_item_share: float = 0.2
    days: int = 60
    seed: int = 0


def generate_session_stream(spec: SessionStreamSpec = SessionStreamSpec()) -> Dataset:
    rng = np.random.default_rng(spec.seed)
    n = spec.n_items
    series = np.arange(n) // spec.series_length
    n_series = int(series.max()) + 1
    span = spec.days * 86_400
    start = END_EPOCH - span
    released = np.zeros(n, np.int64)
    new = np.arange(n) >= n - int(n * spec.new_item_share)
    released[new] = rng.integers(span // 2, span, new.sum())
    base = np.log(rng.permutation(n) + 1.0) * -1.0  # Zipf-like popularity, in random order
    direction = rng.uniform(-spec.drift, spec.drift, n)
    taste = rng.integers(0, n_series, (spec.n_users, spec.favourite_series))
    session_times = np.sort(rng.integers(0, span - 3600, spec.n_sessions))
    session_users = rng.integers(0, spec.n_users, spec.n_sessions)
    lengths = np.minimum(2 + rng.geometric(1.0 / (spec.mean_length - 1), spec.n_sessions) - 1, 20)
    users, items, times = [], [], []
    for s in range(spec.n_sessions):
        t = int(session_times[s])
        available = released <= t
        weights = np.exp(base + direction * (t / span - 0.5)) * available
        popular = weights / weights.sum()
        if rng.random() < spec.from_taste:
            chosen_series = taste[session_users[s], rng.integers(spec.favourite_series)]
            members = np.flatnonzero((series == chosen_series) & available)
            item = int(rng.choice(members)) if len(members) else int(rng.choice(n, p=popular))
        else:
            item = int(rng.choice(n, p=popular))
        for j in range(int(lengths[s])):
            users.append(session_users[s])
            items.append(item)
            times.append(start + t + j * SECONDS_BETWEEN_EVENTS)
            following = item + 1
            if (
                rng.random() < spec.follow
                and following < n
                and series[following] == series[item]
                and available[following]
            ):
                item = following
            else:
                item = int(rng.choice(n, p=popular))
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": [f"u{u}" for u in users],
                "item_id": [f"i{i}" for i in items],
                "event_type": "click",
                "value": 1.0,
                "timestamp": np.asarray(times, np.int64),
            }
        )
    )
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)],
            "categories": [f"series{s}" for s in series],
            "price": 1.0,
            "stock": 1,
            "regions": "*",
            "created_at": start + released,
            "title": "",
        }
    )
    people = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(spec.n_users)], "region": "", "attributes": "{}"}
    )
    return Dataset(events, catalog, people, name="synthetic sessions")
