"""Seed 003 §V.E for the session models: the stream, the baselines, SSRM with and without
updates, and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from candidates.session.sessions import split_sessions
from pipelines.session_streaming import (
    GAG_STATIC,
    GAG_WASSERSTEIN,
    METHODS,
    POP,
    SKNN,
    SPOP,
    SSRM_ACTIVE,
    SSRM_STATIC,
    evaluate_session_streaming,
)
from pipelines.streaming_report import write_streaming_report
from pipelines.synthetic_sessions import SessionStreamSpec, generate_session_stream
from recsys.config import load_config

SPEC = SessionStreamSpec(n_users=300, n_items=240, n_sessions=2500, seed=4)


@pytest.fixture(scope="module")
def session_stream():
    config = load_config().replace(
        als={"iterations": 5},
        sessions={
            "update_steps": 10,
            "ssrm": {"epochs": 8, "learning_rate": 0.01},
            "gag": {"epochs": 8, "learning_rate": 0.01, "batch_size": 64},
        },
    )
    return evaluate_session_streaming(generate_session_stream(SPEC), config)


def test_the_synthetic_stream_has_sessions_drift_and_new_items() -> None:
    dataset = generate_session_stream(SPEC)
    events = dataset.events
    users, items = events["user_id"].factorize()[0], events["item_id"].factorize()[0]
    sessions = split_sessions(users, items, events["timestamp"].to_numpy(), 60, 2, 20)
    assert len(sessions) > 0.8 * SPEC.n_sessions
    created = dataset.items.set_index("item_id")["created_at"]
    middle = events["timestamp"].quantile(0.5)
    late_items = set(created[created > middle].index)
    assert late_items and not late_items & set(events.loc[events["timestamp"] < middle, "item_id"])
    first_half = events.loc[events["timestamp"] < middle, "item_id"].value_counts()
    second_half = events.loc[events["timestamp"] >= middle, "item_id"].value_counts()
    common = first_half.index.intersection(second_half.index)
    ranks = np.corrcoef(first_half[common].rank(), second_half[common].rank())[0, 1]
    assert ranks < 0.9  # popularity moved


def test_session_models_beat_popularity_and_updates_help(session_stream) -> None:
    result = session_stream
    assert list(result.scores) == list(METHODS)
    assert all(len(scores) == result.blocks for scores in result.scores.values())
    recall = {m: result.mean_recall(m) for m in METHODS}
    # sessions walk series of items: what came last says most
    assert recall[SKNN] > recall[POP] + 0.1 and recall[SSRM_STATIC] > recall[POP] + 0.1
    assert recall[SPOP] < recall[SKNN]
    # new items appear in the second half: an updated SSRM can learn them, the static cannot
    assert recall[SSRM_ACTIVE] > recall[SSRM_STATIC]
    assert result.scores[SSRM_ACTIVE][0].update_seconds == 0.0
    assert all(s.update_seconds > 0 for s in result.scores[SSRM_ACTIVE][1:])
    # GAG too learns the walks, and its updates (new items are always taken) keep up
    assert recall[GAG_STATIC] > recall[POP] + 0.1
    assert recall[GAG_WASSERSTEIN] > recall[GAG_STATIC]


def test_the_report_has_the_session_table_and_plot(session_stream, tmp_path) -> None:
    out = write_streaming_report([], tmp_path, "stream", [session_stream])
    text = (out / "report.md").read_text()
    assert "# Session models on a stream" in text and f"| {SSRM_ACTIVE} |" in text
    assert f"| {GAG_WASSERSTEIN} |" in text
    assert (out / "sessions.png").stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sessions"][0]["blocks"][SKNN][0]["predictions"] > 0
