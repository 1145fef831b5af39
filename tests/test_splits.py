import numpy as np
import pandas as pd
import pytest

from pipelines.protocols import holdout
from pipelines.splits import assign_sessions, chronological_split, leave_last_out, streaming_split
from recsys.config import load_config
from recsys.dataset import ITEM_COLUMNS, USER_COLUMNS, Dataset, normalize_events


def dataset(users, times, items="i") -> Dataset:
    events = normalize_events(
        pd.DataFrame(
            {
                "user_id": users,
                "item_id": items,
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


# --- reference-checked cases -------------------------------------------------------------


def planted_sessions(n_sessions: int = 50, seed: int = 0) -> Dataset:
    """Sessions planted by construction (each user's sessions are > 2 h apart, events inside
    one 600 s apart), overlapping in time across users. Each event's item_id is its planted
    session label, so a split's sessions can be read back from item_id."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        user = f"u{s % 7}"
        start = (s // 7) * 20_000 + int(rng.integers(0, 5_000))
        for k in range(int(rng.integers(1, 8))):
            rows.append((user, start + 600 * k, f"s{s}"))
    frame = pd.DataFrame(rows, columns=["user_id", "timestamp", "label"])
    return dataset(frame["user_id"], frame["timestamp"], frame["label"])


def sessions_of(part: Dataset) -> list[str]:
    return sorted(set(part.events["item_id"]))


def event_keys(frame: pd.DataFrame) -> list[tuple[str, int]]:
    return sorted(zip(frame["user_id"], frame["timestamp"], strict=True))


def test_chronological_fraction_is_close_and_sides_partition():
    rng = np.random.default_rng(0)
    data = dataset(rng.choice(["a", "b", "c"], 1000), rng.integers(0, 10**6, 1000))
    split = chronological_split(data, 0.2)
    assert abs(len(split.test.events) / 1000 - 0.2) < 0.01
    assert len(split.train.events) + len(split.test.events) == 1000
    assert split.train.events["timestamp"].max() < split.cutoff
    assert split.test.events["timestamp"].min() == split.cutoff


def test_chronological_refuses_empty_and_bad_fractions():
    with pytest.raises(ValueError, match="empty event log"):
        chronological_split(dataset([], []), 0.2)
    for fraction in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
            chronological_split(dataset(["a", "b"], [1, 2]), fraction)


def test_leave_last_out_matches_pandas_tail_reference():
    rng = np.random.default_rng(1)
    users = rng.choice(["a", "b", "c", "d"], 60)
    data = dataset(users, rng.integers(0, 20, 60))  # many ties
    events = data.events.assign(row=np.arange(60))
    for n_last in (1, 2, 3):
        split = leave_last_out(data, n_last)
        counts = events["user_id"].map(events["user_id"].value_counts())
        # events are already time-sorted (stable), so groupby.tail is "last n, ties in order"
        reference = events[counts > n_last].groupby("user_id").tail(n_last)
        got = split.test.events
        assert len(got) == len(reference)
        assert (got["item_id"].to_numpy() == reference["item_id"].to_numpy()).all()
        assert split.cutoff == -1
        assert len(split.train.events) + len(got) == 60


def test_leave_last_out_ties_keep_log_order_and_short_users_stay():
    data = dataset(["a", "a", "a", "a", "b", "b"], [1, 2, 2, 2, 3, 4])
    split = leave_last_out(data, 2)
    test = split.test.events
    assert list(test["user_id"]) == ["a", "a"]
    assert list(test["timestamp"]) == [2, 2]
    assert list(split.train.events["user_id"]) == ["a", "a", "b", "b"]  # b has only 2 events
    with pytest.raises(ValueError, match="n_last must be >= 1"):
        leave_last_out(data, 0)


def test_session_gap_is_exclusive_and_ids_are_int64():
    events = dataset(["a", "a", "a"], [0, 1800, 3601]).events
    sessions = assign_sessions(events, gap_seconds=1800)
    assert sessions.dtype == np.int64
    assert sessions[0] == sessions[1] != sessions[2]  # a gap of exactly 1800 s continues
    with pytest.raises(ValueError, match="gap_seconds must be >= 0"):
        assign_sessions(events, -1)


def test_assign_sessions_recovers_planted_sessions():
    data = planted_sessions()
    sessions = assign_sessions(data.events, gap_seconds=1800)
    # same partition of events: one derived id per planted label and vice versa
    pairs = pd.DataFrame({"derived": sessions, "planted": data.events["item_id"]})
    assert (pairs.groupby("planted")["derived"].nunique() == 1).all()
    assert (pairs.groupby("derived")["planted"].nunique() == 1).all()


def test_streaming_split_against_session_reference():
    data = planted_sessions(n_sessions=50)
    split = streaming_split(data)
    # reference, straight from the seed's steps, over the planted labels
    end = data.events.groupby("item_id")["timestamp"].max().sort_values(kind="stable")
    assert end.is_unique  # the planted example has no end-time ties
    ordered = list(end.index)
    train_sessions, candidate = ordered[:30], ordered[30:]
    assert len(train_sessions) / len(ordered) == pytest.approx(0.6)

    assert sessions_of(split.train) == sorted(train_sessions)
    sizes = [len(sessions_of(b)) for b in split.blocks]
    assert len(sizes) == 5 and sum(sizes) == 20 and max(sizes) - min(sizes) <= 1
    expected_blocks, start = [], 0
    for size in sizes:
        expected_blocks.append(sorted(candidate[start : start + size]))
        start += size
    assert [sessions_of(b) for b in split.blocks] == expected_blocks  # consecutive, in order
    block_ends = [end[sessions_of(b)].max() for b in (split.train, *split.blocks)]
    block_first_ends = [end[sessions_of(b)].min() for b in split.blocks]
    assert all(a < b for a, b in zip(block_ends, block_first_ends, strict=False))
    # disjoint, and together with D_train the whole log
    parts = [split.train, *split.blocks]
    assert sum(len(p.events) for p in parts) == len(data.events)
    assert event_keys(pd.concat([p.events for p in parts])) == event_keys(data.events)
    # validation = last 10% of D_train's sessions + D_test^1
    assert sessions_of(split.validation) == sorted(train_sessions[-3:] + expected_blocks[0])


def test_history_before_is_train_plus_earlier_blocks_in_time_order():
    data = planted_sessions(n_sessions=50)
    split = streaming_split(data)
    pd.testing.assert_frame_equal(split.history_before(0).events, split.train.events)
    two = split.history_before(2).events
    expected = pd.concat([split.train.events, *(b.events for b in split.blocks[:2])])
    # sessions overlap block boundaries, so plain concatenation is out of time order here
    assert not (np.diff(expected["timestamp"].to_numpy()) >= 0).all()
    assert event_keys(two) == event_keys(expected)
    assert (np.diff(two["timestamp"].to_numpy()) >= 0).all()  # the Dataset contract holds
    assert len(split.history_before(5).events) == len(data.events)
    with pytest.raises(ValueError, match=r"block must be in \[0, 5\]"):
        split.history_before(6)


def test_streaming_uses_a_session_column_when_present():
    data = dataset(["a", "b"] * 50, np.arange(100))  # by gap: only 2 sessions
    with_sessions = data.with_events(data.events.assign(session_id=np.arange(100) // 4))
    split = streaming_split(with_sessions)
    assert len(split.train.events) == 60  # 25 sessions of 4 events -> 15 in D_train
    assert [len(b.events) for b in split.blocks] == [8] * 5


def test_streaming_refuses_bad_parameters():
    data = dataset([f"u{i}" for i in range(100)], np.arange(100))
    with pytest.raises(ValueError, match="0 < train_share < 1"):
        streaming_split(data, train_share=1.0)
    with pytest.raises(ValueError, match="n_blocks >= 1"):
        streaming_split(data, n_blocks=0)
    with pytest.raises(ValueError, match="too few"):
        streaming_split(dataset([], []))


def test_sampled_protocol_ranks_the_held_out_item_among_99_never_touched():
    catalogue = [f"i{k:03d}" for k in range(150)]
    rng = np.random.default_rng(3)
    users, items, times = [], [], []
    for user, n in (("a", 5), ("b", 30), ("c", 50)):
        items += list(rng.choice(catalogue, n, replace=False))
        users += [user] * n
        times += list(range(n))
    data = dataset(users, times, items)
    catalog = pd.DataFrame({"item_id": catalogue}).reindex(columns=list(ITEM_COLUMNS))
    data = Dataset(data.events, catalog, data.users)
    config = load_config()
    held = holdout(data, "sampled", config)
    assert held.users == ("a", "b", "c")
    touched = data.events.groupby("user_id", observed=True)["item_id"].agg(set)
    for user, relevant, given in zip(held.users, held.relevant, held.candidates, strict=True):
        assert given[0] == relevant[0] and len(set(given)) == 100
        assert not set(given[1:]) & touched[user]  # never touched by the user, in all the data
    assert holdout(data, "sampled", config).candidates == held.candidates  # a fixed seed
    assert holdout(data, "sampled", config, seed=1).candidates != held.candidates
    # one who touched all but 98 items cannot be asked to rank one among 99 untouched
    greedy = dataset(["d"] * 52, list(range(52)), catalogue[:52]).events
    data = Dataset(pd.concat([data.events, greedy], ignore_index=True), data.items, data.users)
    with pytest.raises(ValueError, match="user 'd' touched all but 98 items"):
        holdout(data, "sampled", config)
