"""The serving cascade: each stage re-orders the head the previous one kept."""

from types import SimpleNamespace

import numpy as np
import pytest

from ranking.cascade import Cascade, TrainedRankers
from ranking.frame import RankingFrame
from recsys.config import load_config


class ByColumn:
    """A stand-in ranker scoring rows by one dense column, recording what it was asked."""

    def __init__(self, column: int) -> None:
        self.column = column
        self.seen: list[int] = []
        self.spec = SimpleNamespace(sparse_cardinalities=(10,))
        self.feature_names = ("light", "heavy")

    def predict(self, frame: RankingFrame) -> np.ndarray:
        self.seen.append(len(frame))
        self.max_id = int(frame.sparse.max())
        return frame.dense[:, self.column].astype(np.float32)


def frame() -> RankingFrame:
    light = [0.9, 0.1, 0.8, 0.7, 0.2, 0.3]
    heavy = [0.1, 0.9, 0.2, 0.8, 0.5, 0.0]
    return RankingFrame(
        dense=np.array([light, heavy], np.float32).T,
        dense_names=("light", "heavy"),
        sparse=np.array([[1], [2], [3], [4], [5], [99]]),  # 99: newer than the tables
        sparse_names=("item",),
        sparse_cardinalities=(100,),
        groups=np.zeros(6, np.int64),
    )


def config(stages, keep=3):
    return (
        load_config()
        .replace(
            ranking={
                "stages": stages,
                "lightgbm_keep": keep,
                "dlrm_serving": "eager",
                "lightgbm_serving": "booster",
            }
        )
        .ranking
    )


def test_light_keeps_its_best_and_heavy_orders_them():
    light, heavy = ByColumn(0), ByColumn(1)
    ranked = Cascade(
        TrainedRankers({"lightgbm": light, "dlrm": heavy}), config(["lightgbm", "dlrm"])
    ).rank(frame())
    # light order: 0 (.9), 2 (.8), 3 (.7) | 5 (.3), 4 (.2), 1 (.1); heavy orders the head
    assert ranked.order.tolist() == [3, 2, 0, 5, 4, 1]
    assert ranked.stages.tolist() == ["dlrm"] * 3 + ["lightgbm"] * 3
    np.testing.assert_allclose(ranked.scores, [0.8, 0.2, 0.1, 0.3, 0.2, 0.1])
    assert light.seen == [6] and heavy.seen == [3]  # the heavy stage sees only the head


def test_single_stage_and_unknown_ids():
    heavy = ByColumn(1)
    ranked = Cascade(TrainedRankers({"dlrm": heavy}), config(["dlrm"])).rank(frame())
    assert ranked.order.tolist() == [1, 3, 4, 2, 0, 5]
    assert set(ranked.stages) == {"dlrm"}
    assert heavy.max_id < 10  # id 99 is past its 10-row tables: sent as 0, "unknown"


def test_a_configured_stage_the_bundle_lacks_is_refused():
    with pytest.raises(ValueError, match="no trained dlrm ranker"):
        Cascade(TrainedRankers({"lightgbm": ByColumn(0)}), config(["lightgbm", "dlrm"]))


def test_the_gates_decisions_are_saved_with_the_rankers(tmp_path) -> None:
    decided = TrainedRankers(
        dropped={"dlrm": "worse"}, rank_dropped={"lightgbm": "worse by Rank"}, rank_order="ease"
    )
    decided.save(tmp_path)
    loaded = TrainedRankers.load(tmp_path)
    assert loaded.dropped == decided.dropped and loaded.rank_dropped == decided.rank_dropped
    assert loaded.rank_order == "ease"
    assert loaded.for_rank().dropped == {"dlrm": "worse", "lightgbm": "worse by Rank"}
    assert loaded.served_stages(("lightgbm", "dlrm")) == ("lightgbm",)
    assert loaded.for_rank().served_stages(("lightgbm", "dlrm")) == ()
    (tmp_path / "rank_dropped.json").unlink()  # a bundle from before Rank's own pass
    assert TrainedRankers.load(tmp_path).rank_dropped == {}
    (tmp_path / "rank_dropped.json").write_text('["lightgbm"]')
    with pytest.raises(ValueError, match="rank_dropped.json"):
        TrainedRankers.load(tmp_path)
    (tmp_path / "rank_dropped.json").unlink()
    (tmp_path / "rank_order.json").write_text('"bpr"')
    with pytest.raises(ValueError, match="rank_order.json: expected one of als, ease"):
        TrainedRankers.load(tmp_path)
    (tmp_path / "rank_order.json").unlink()  # a bundle from before Rank's order was chosen
    assert TrainedRankers.load(tmp_path).rank_order == "als"
