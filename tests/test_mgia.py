"""MGIA SSRS (seed 003 §IV): the global transition graph on a hand-worked example, that the
network learns a session pattern, and that an update learns a new one and grows the graph
(serving it: tests/test_gag.py, for both graph models)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from candidates.session.mgia import MGIAModel, fit_mgia
from candidates.session.mgia_net import GlobalGraph
from recsys.config import load_config
from tests.stored_files import resave_npz
from tests.test_gag import learns_a_pattern_and_updates_learn_a_new_one, walks

CONFIG = (
    load_config()
    .replace(sessions={"mgia": {"epochs": 6, "dropout": 0.0, "learning_rate": 0.01}})
    .sessions.mgia
)


def test_the_global_graph_sums_every_sessions_transitions_and_normalises_by_the_largest():
    graph = GlobalGraph(4)
    graph.add([np.array([0, 1, 2]), np.array([0, 1, 1, 3])])  # 1 -> 1: one node, no edge
    graph.add([np.array([2, 0, 1])])
    out, into = graph.normalized()
    # 0->1 three times (the largest), 1->2, 2->0, 1->3 once
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 2], expected[2, 0], expected[1, 3] = 1, 1 / 3, 1 / 3, 1 / 3
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-6)
    np.testing.assert_allclose(into.toarray(), expected.T, rtol=1e-6)
    again = GlobalGraph.of_arrays(4, graph.arrays())
    np.testing.assert_array_equal(again.weights.toarray(), graph.weights.toarray())


def test_mgia_learns_a_pattern_and_an_update_learns_a_new_one_and_grows_the_graph():
    model, updated = learns_a_pattern_and_updates_learn_a_new_one(fit_mgia, CONFIG)
    assert model.graph.weights[0, 1] > 0 and model.graph.weights[0, 3] == 0
    for each in updated:
        assert isinstance(each, MGIAModel)
        assert each.graph.weights[0, 3] > 0  # the new transitions joined the global graph
    assert model.graph.weights[0, 3] == 0  # not the given model's


def test_a_saved_mgia_loads_to_the_same_scores_and_bad_files_are_refused(tmp_path):
    model = fit_mgia(walks(20, 60, 1, 0), 20, 7, dataclasses.replace(CONFIG, epochs=1), 20)
    model.save(tmp_path)
    loaded = MGIAModel.load(tmp_path)
    session = np.array([3, 4, 5])
    np.testing.assert_allclose(loaded.session_scores(session, 2), model.session_scores(session, 2))
    assert MGIAModel.load(tmp_path / "nowhere") is None
    resave_npz(tmp_path / "mgia.npz", graph_to=lambda edges: edges + 100)
    with pytest.raises(ValueError, match="graph edges outside"):
        MGIAModel.load(tmp_path)
    resave_npz(tmp_path / "mgia.npz", drop=("graph_weight",))
    with pytest.raises(ValueError, match="missing arrays"):
        MGIAModel.load(tmp_path)
