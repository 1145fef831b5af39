"""MGIA SSRS (seed 003 §IV): the global transition graph on a hand-worked example, that the
network learns a session pattern, and that an update learns a new one and grows the graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from candidates.base import make_generator
from candidates.session.gag import GAG_SELECTIONS, update_gag
from candidates.session.mgia import MGIAModel, fit_mgia
from candidates.session.mgia_net import GlobalGraph
from candidates.session.reservoir import Reservoir
from candidates.session.updates import SeenSession
from ranking.features import FeatureBuilder
from recsys.config import load_config
from recsys.context import union
from serving.pipeline import RecommendPipeline, RecommendRequest
from tests.test_gag import next_item_hits, walks

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


def test_mgia_learns_a_pattern_and_an_update_learns_a_new_one():
    model = fit_mgia(walks(20, 300, 1, 0), 20, 7, CONFIG, max_length=20)
    assert next_item_hits(model, stride=1) >= 16  # chance: 1 in 20
    assert model.graph.weights[0, 1] > 0 and model.graph.weights[0, 3] == 0
    before = next_item_hits(model, stride=3)
    new = [
        SeenSession(s, np.zeros(4, np.float32), user=1)
        for s in walks(20, 100, 3, 1).items.reshape(-1, 5)
    ]
    for selection in GAG_SELECTIONS:
        reservoir: Reservoir[SeenSession] = Reservoir(50, seed=0)
        updated = update_gag(
            model, new, reservoir, CONFIG, selection=selection, sample_size=64, steps=60,
            random=np.random.default_rng(0),
        )  # fmt: skip
        assert isinstance(updated, MGIAModel)
        assert next_item_hits(updated, stride=3) >= before + 8, selection
        assert updated.graph.weights[0, 3] > 0  # the new transitions joined the global graph
    assert next_item_hits(model, stride=3) == before  # the model given is unchanged
    assert model.graph.weights[0, 3] == 0


def test_a_saved_mgia_loads_to_the_same_scores_and_bad_files_are_refused(tmp_path):
    model = fit_mgia(walks(20, 60, 1, 0), 20, 7, dataclasses.replace(CONFIG, epochs=1), 20)
    model.save(tmp_path)
    loaded = MGIAModel.load(tmp_path)
    session = np.array([3, 4, 5])
    np.testing.assert_allclose(loaded.session_scores(session, 2), model.session_scores(session, 2))
    assert MGIAModel.load(tmp_path / "nowhere") is None
    with np.load(tmp_path / "mgia.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["graph_to"] = arrays["graph_to"] + 100
    np.savez(tmp_path / "mgia.npz", **arrays)
    with pytest.raises(ValueError, match="graph edges outside"):
        MGIAModel.load(tmp_path)
    del arrays["graph_weight"]
    np.savez(tmp_path / "mgia.npz", **arrays)
    with pytest.raises(ValueError, match="missing arrays"):
        MGIAModel.load(tmp_path)


def test_the_session_mgia_generator_serves_the_bundles_mgia(shop_bundle):
    """The nightly's component trains MGIA; session_mgia scores the live session with it,
    and mgia_score is the same score as a ranking feature."""
    bundle, config, dataset = shop_bundle
    model = bundle.mgia
    assert isinstance(model, MGIAModel) and model.graph.weights.nnz > 0
    generator = make_generator("session_mgia", bundle, config)
    pipeline = RecommendPipeline.candidate_stage(bundle, config)
    user = str(dataset.events["user_id"].iloc[-1])
    ctx = pipeline.context(RecommendRequest(user_id=user, k=10))
    found = generator.generate(ctx, 40)
    assert len(found) == 40 and not set(found.item_ids) & set(ctx.sequence.tolist())
    session = ctx.sequence[: model.max_length][::-1]
    expected = model.scores([session], np.array([ctx.user_index]))[0]
    np.testing.assert_allclose(found.scores, expected[found.item_ids], rtol=1e-5)
    frame = FeatureBuilder(bundle, ("session_mgia",), config.sequence).build(ctx, union([found]))
    column = frame.dense[:, frame.dense_names.index("mgia_score")]
    np.testing.assert_allclose(column, expected[union([found]).items], rtol=1e-5)
