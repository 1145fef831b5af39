"""GAG (seed 003 §III): the session graph, the Wasserstein selection of online updates on
hand-computed examples, and that the network learns a session pattern."""

from __future__ import annotations

import numpy as np
import pytest

from candidates.base import make_generator
from candidates.session.gag import GAG_SELECTIONS, WASSERSTEIN, GAGModel, fit_gag, update_gag
from candidates.session.gag_net import Graphs
from candidates.session.generator import live_session
from candidates.session.sampling import wasserstein_selection, wasserstein_to_items
from candidates.session.sessions import Sessions
from candidates.session.updates import SeenSession
from ranking.features import FeatureBuilder
from recsys.config import load_config
from recsys.context import RequestContext, union
from serving.pipeline import RecommendPipeline, RecommendRequest
from serving.sessions import Session
from tests.stored_files import resave_npz

CONFIG = (
    load_config()
    .replace(sessions={"gag": {"epochs": 6, "dropout": 0.0, "learning_rate": 0.01}})
    .sessions.gag
)


def test_a_session_is_a_weighted_graph_of_its_transitions() -> None:
    # items 7 -> 3 -> 7 -> 5: nodes in order of first appearance 7, 3, 5
    graphs = Graphs.of([np.array([7, 3, 7, 5]), np.array([2])])
    assert graphs.nodes.tolist() == [[8, 4, 6], [3, 0, 0]]
    assert graphs.last.tolist() == [2, 0]
    # edges 7->3, 3->7, 7->5 (weight 1 each); node 7 has out-degree 2, in-degree 1
    outgoing = graphs.outgoing[0]  # [sender, receiver] / weighted out-degree
    np.testing.assert_allclose(outgoing, [[0, 0.5, 0.5], [1, 0, 0], [0, 0, 0]])
    incoming = graphs.incoming[0]  # [receiver, sender] / weighted in-degree
    np.testing.assert_allclose(incoming, [[0, 1, 0], [1, 0, 0], [1, 0, 0]])
    assert not graphs.incoming[1].any() and not graphs.outgoing[1].any()
    # a repeated transition weighs more: 1 -> 2 twice, 1 -> 3 once
    repeated = Graphs.of([np.array([1, 2, 1, 2, 1, 3])]).outgoing[0]
    np.testing.assert_allclose(repeated[0], [0, 2 / 3, 1 / 3])


def test_one_session_makes_the_graph_a_batch_of_one_makes() -> None:
    """Serving's single-session path (Graphs.one) and the batch path agree on every prefix,
    repeated items and one-item prefixes included."""
    random = np.random.default_rng(0)
    prefixes = [np.array([5]), np.array([1, 2, 1, 2, 1, 3]), np.array([7, 3, 7, 5])]
    prefixes += [random.integers(0, 12, size=random.integers(1, 21)) for _ in range(200)]
    for prefix in prefixes:
        one, batch = Graphs.one(prefix), Graphs.of([prefix])
        for field in ("nodes", "incoming", "outgoing", "last"):
            np.testing.assert_array_equal(getattr(one, field), getattr(batch, field), field)


def test_the_wasserstein_distance_to_the_real_next_item() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # all mass on the target: 0; on an orthogonal item: 1; on the 45° item: 1 - cos 45°
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    distances = wasserstein_to_items(p, np.array([0, 0, 0, 1]), vectors)
    np.testing.assert_allclose(distances, [0.0, 1.0, 1 - np.sqrt(0.5), 0.5], atol=1e-12)


def test_new_sessions_are_always_taken_and_the_rest_drawn_by_distance() -> None:
    random = np.random.default_rng(0)
    is_new = np.array([False, True, False, False, False])
    distances = np.array([0.0, 0.3, 0.1, 0.3, 0.6])  # others: p = 0, 0.1, 0.3, 0.6
    draws = np.zeros(5)
    for _ in range(3000):
        chosen = wasserstein_selection(is_new, distances, 1, random)
        assert 1 in chosen and len(chosen) == 2
        draws[chosen[chosen != 1]] += 1
    np.testing.assert_allclose(draws / 3000, [0.0, 0.0, 0.1, 0.3, 0.6], atol=0.03)
    assert wasserstein_selection(is_new, distances, 10, random).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="finite"):
        wasserstein_selection(is_new, np.array([0.1, np.nan, 0, 0, 0]), 1, random)


def walks(n_items: int, count: int, stride: int, seed: int) -> Sessions:
    random = np.random.default_rng(seed)
    lists = [(random.integers(n_items) + stride * np.arange(5)) % n_items for _ in range(count)]
    return Sessions.of(lists, np.arange(count) % 7, np.arange(count))


def next_item_hits(model, stride: int, n_items: int = 20) -> int:
    prefixes = [(start + stride * np.arange(4)) % n_items for start in range(n_items)]
    scores = model.scores(prefixes, np.full(n_items, -1))
    targets = [(start + 4 * stride) % n_items for start in range(n_items)]
    return int((scores.argmax(axis=1) == targets).sum())


def test_gag_learns_a_pattern_and_an_update_learns_a_new_one() -> None:
    learns_a_pattern_and_updates_learn_a_new_one(fit_gag, CONFIG)


def learns_a_pattern_and_updates_learn_a_new_one(fit, config) -> tuple:
    """GAG's and MGIA's shared check: trained on walks of stride 1 it predicts them; an
    update on walks of stride 3, by either selection, learns those; the model given is not
    changed. Returns the model and the updated ones."""
    model = fit(walks(20, 300, 1, 0), 20, 7, config, max_length=20)
    assert next_item_hits(model, stride=1) >= 16  # chance: 1 in 20
    before = next_item_hits(model, stride=3)
    new = [
        SeenSession(s, np.zeros(4, np.float32), user=1)
        for s in walks(20, 100, 3, 1).items.reshape(-1, 5)
    ]
    updated = []
    for selection in GAG_SELECTIONS:
        step = update_gag(
            model, new, [], config, selection=selection, sample_size=64, steps=60,
            random=np.random.default_rng(0),
        )  # fmt: skip
        updated.append(step)
        assert next_item_hits(updated[-1], stride=3) >= before + 8, selection
    assert next_item_hits(model, stride=3) == before  # the model given is unchanged
    with pytest.raises(ValueError, match="selection"):
        update_gag(model, new, [], config, selection="best", sample_size=1, steps=1,
                   random=np.random.default_rng(0))  # fmt: skip
    assert WASSERSTEIN in GAG_SELECTIONS
    return model, updated


def latest_session(ctx, bundle, max_length: int, timeout: int) -> np.ndarray:
    """The user's latest session as the bundle's profile holds it, oldest first: back from
    the newest item to a gap longer than the timeout (a loop, beside live_session's arrays)."""
    times, session = bundle.profiles.sequence_times_of(ctx.user_index), [ctx.sequence[0]]
    for r in range(1, min(len(ctx.sequence), max_length)):
        if times[r - 1] - times[r] > timeout:
            break
        session.append(ctx.sequence[r])
    return np.array(session[::-1])


@pytest.mark.parametrize("name", ["gag", "mgia"])
def test_a_graph_models_generator_serves_the_bundles_model_on_the_live_session(shop_bundle, name):
    """The bundle's GAG or MGIA (trained by the nightly's component) scores the live session
    with the net it trained (serving's numpy forward pass gives torch's scores); its score
    of each candidate is the ranking feature <name>_score."""
    bundle, config, dataset = shop_bundle
    model = getattr(bundle, name).model
    assert isinstance(model, GAGModel)  # MGIAModel is one
    generator = make_generator(f"session_{name}", bundle, config)
    pipeline = RecommendPipeline.candidate_stage(bundle, config)
    user = str(dataset.events["user_id"].iloc[-1])
    plain = pipeline.context(RecommendRequest(user_id=user, k=10))
    found = generator.generate(plain, 40)
    assert len(found) == 40 and not set(found.item_ids) & set(plain.sequence.tolist())
    session = latest_session(plain, bundle, model.max_length, config.sessions.timeout_seconds)
    expected = model.scores([session], np.array([plain.user_index]))[0]
    np.testing.assert_allclose(found.scores, expected[found.item_ids], rtol=1e-5)
    live = tuple(str(i) for i in bundle.items.ids[found.item_ids[:3]])
    with_session = pipeline.context(
        RecommendRequest(user_id=user, k=10, session=Session(recent=live, never_again=()))
    )
    proposable = generator._proposable  # the learnt rows, copied once per model
    moved = generator.generate(with_session, 40)
    assert moved.item_ids.tolist() != found.item_ids.tolist()
    assert generator._proposable is proposable
    # logged ten days after the bundle's newest event: the live session is those three alone
    now = int(bundle.profiles.sequence_times.max()) + 10 * 86_400
    timed = Session(recent=live, never_again=(), times=(now, now - 10, now - 20))
    ctx = pipeline.context(RecommendRequest(user_id=user, k=10, session=timed))
    alone = bundle.items.to_index(live)[::-1]  # oldest first
    every = np.arange(model.n_items)
    np.testing.assert_allclose(
        generator.scores_of(ctx, every), model.session_scores(alone, ctx.user_index), rtol=1e-5
    )
    features = FeatureBuilder(
        bundle, (f"session_{name}",), config.sequence, config.sessions.timeout_seconds
    )
    frame = features.build(with_session, union([moved]))
    assert "ssrm_score" not in frame.dense_names  # only the served session models
    column = frame.dense[:, frame.dense_names.index(f"{name}_score")]
    items = union([moved]).items
    np.testing.assert_allclose(column, generator.scores_of(with_session, items))
    nobody = pipeline.context(RecommendRequest(user_id="never-seen", k=10))
    assert len(generator.generate(nobody, 40)) == 0


def test_a_saved_gag_loads_to_the_same_scores_and_bad_files_are_refused(shop_bundle, tmp_path):
    bundle, _, _ = shop_bundle
    model = bundle.gag.model
    model.save(tmp_path)
    loaded = GAGModel.load(tmp_path)
    session = np.array([3, 5, 8, 5])
    np.testing.assert_array_equal(
        loaded.session_scores(session, 2), model.session_scores(session, 2)
    )
    np.testing.assert_array_equal(loaded.known_items, model.known_items)
    assert GAGModel.load(tmp_path / "nothing-here") is None  # not trained: no model
    one_item_short = {"net.items.weight": lambda table: table[:-1]}
    resave_npz(tmp_path / "gag.npz", **one_item_short)
    with pytest.raises(ValueError, match="tables of"):
        GAGModel.load(tmp_path)
    resave_npz(tmp_path / "gag.npz", drop=("known_users",))
    with pytest.raises(ValueError, match="missing arrays"):
        GAGModel.load(tmp_path)


def test_the_live_session_is_the_users_latest_session() -> None:
    """Items newest first with their times: the session models read back to the first gap
    longer than the timeout, oldest first, at most max_length, only items the model knows."""
    sequence = np.array([5, 4, 3, 2, 1, 0])
    times = np.array([1000, 990, 950, 300, 290, 280])  # a 650 s gap after item 3
    ctx = RequestContext(0, sequence=sequence, sequence_times=times)
    assert live_session(ctx, 20, 10, timeout_seconds=60).tolist() == [3, 4, 5]
    assert live_session(ctx, 20, 10, timeout_seconds=1000).tolist() == [0, 1, 2, 3, 4, 5]
    assert live_session(ctx, 2, 10, timeout_seconds=60).tolist() == [4, 5]  # max_length
    assert live_session(ctx, 20, 5, timeout_seconds=60).tolist() == [3, 4]  # 5 is unknown
    untimed = RequestContext(0, sequence=sequence)  # a bundle from before the times
    assert live_session(untimed, 20, 10, timeout_seconds=60).tolist() == [0, 1, 2, 3, 4, 5]
    assert live_session(RequestContext(0), 20, 10, 60) is None
