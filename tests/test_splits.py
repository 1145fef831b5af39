import numpy as np
import pandas as pd
import pytest

from pipelines.dataset import ITEM_COLUMNS, USER_COLUMNS, Dataset, normalize_events
from pipelines.splits import assign_sessions, chronological_split, leave_last_out, streaming_split


def dataset(users, times) -> Dataset:
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": users,
                "item_id": "i",
                "event_type": "view",
                "value": 1.0,
                "timestamp": times,
            }
        )
    )
    return Dataset(
        events, pd.DataFrame(columns=list(ITEM_COLUMNS)), pd.DataFrame(columns=list(USER_COLUMNS))
    )


def test_chronological_cut_is_a_timestamp_and_ties_go_to_test():
    data = dataset(["a"] * 10, [1, 2, 3, 4, 5, 6, 7, 8, 8, 9])
    split = chronological_split(data, 0.25)  # index 7 of the sorted times -> t=8
    assert split.cutoff == 8
    assert split.train.events["timestamp"].max() < split.test.events["timestamp"].min()
    assert list(split.test.events["timestamp"]) == [8, 8, 9]


def test_chronological_errors():
    with pytest.raises(ValueError, match=r"holdout_fraction must be in \(0, 1\)"):
        chronological_split(dataset(["a"], [1]), 1.0)
    with pytest.raises(ValueError, match="leaves an empty side"):
        chronological_split(dataset(["a", "b"], [5, 5]), 0.5)


def test_leave_last_out_takes_each_users_last_events():
    data = dataset(["a", "b", "a", "a", "b", "c"], [1, 2, 3, 4, 5, 6])
    split = leave_last_out(data, 1)
    test = split.test.events
    assert sorted(zip(test["user_id"], test["timestamp"], strict=True)) == [("a", 4), ("b", 5)]
    assert "c" in set(split.train.events["user_id"])  # one event only: stays in train
    assert len(split.train.events) + len(test) == 6


def test_sessions_split_on_inactivity_gap():
    events = dataset(["a", "a", "a", "b", "a"], [0, 100, 5000, 50, 5100]).events
    sessions = assign_sessions(events, gap_seconds=1800)
    by_event = dict(
        zip(zip(events["user_id"], events["timestamp"], strict=True), sessions, strict=True)
    )
    assert (
        by_event[("a", 0)] == by_event[("a", 100)] != by_event[("a", 5000)] == by_event[("a", 5100)]
    )
    assert by_event[("b", 50)] not in {by_event[("a", 0)], by_event[("a", 5000)]}


def test_streaming_protocol_of_seed_003():
    # 100 one-event sessions (distinct users), session end = the event's time
    data = dataset([f"u{i}" for i in range(100)], np.arange(100) * 10)
    split = streaming_split(data)
    assert len(split.train.events) == 60
    assert [len(b.events) for b in split.blocks] == [8] * 5
    ends = [split.train.events["timestamp"].max()] + [
        b.events["timestamp"].max() for b in split.blocks
    ]
    starts = [b.events["timestamp"].min() for b in split.blocks]
    assert all(
        end < start for end, start in zip(ends, starts, strict=False)
    )  # chronological, disjoint
    assert len(split.validation.events) == 6 + 8  # last 10% of D_train + D_test^1
    assert split.history_before(0).events.equals(split.train.events)
    assert len(split.history_before(2).events) == 60 + 16


def test_streaming_refuses_too_few_sessions():
    with pytest.raises(ValueError, match="too few"):
        streaming_split(dataset(["a", "b"], [1, 2]))
