"""`recsys evaluate --stage ranking` end to end on the small synthetic shop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.loaders import load_dataset_dir
from pipelines.ranking_evaluation import K, _cascade, evaluate_ranking_stage
from pipelines.ranking_report import write_ranking_report
from tests.conftest import shop_config


def test_cascade_lets_the_heavy_ranker_order_only_the_light_rankers_top():
    groups = np.array([0, 0, 0, 1, 1])
    light = np.array([3.0, 2.0, 1.0, 5.0, 4.0])
    heavy = np.array([0.1, 0.9, 0.99, 0.2, 0.8])
    got = _cascade(groups, light, heavy, keep=2)
    # group 0: rows 0, 1 kept and ordered by heavy (1 before 0); row 2 (light's third) below
    assert np.argsort(-got[:3]).tolist() == [1, 0, 2]
    assert np.argsort(-got[3:]).tolist() == [1, 0]


@pytest.fixture(scope="module")
def result(shop_dir, tmp_path_factory):
    config = shop_config(tmp_path_factory.mktemp("ranking"), shop_dir).replace(
        evaluation={"holdout_fraction": 0.25, "max_users": 120},
        lightgbm={"num_trees": 60},
        dlrm={"epochs": 2},
    )
    return evaluate_ranking_stage(load_dataset_dir(shop_dir), config)


def test_every_stage_is_measured(result):
    assert set(result.metrics) == {
        "ials order",
        "lightgbm binary",
        "lightgbm lambdarank",
        "lightgbm + dlrm",
        "dlrm alone",
    }
    for stage, values in result.metrics.items():
        for name in (f"ndcg@{K}", f"recall@{K}", f"mrr@{K}", "auc"):
            assert 0.0 <= values[name] <= 1.0, (stage, name)
    assert "logloss" in result.metrics["lightgbm binary"]
    assert result.rows["train"] > 0 and result.rows["test"] > 0
    assert result.cutoffs[0] < result.cutoffs[1] < result.cutoffs[2]
    gains = [v["gain"] for v in result.importance.values()]
    assert gains == sorted(gains, reverse=True) and gains[0] > 0


def test_report_is_written(result, tmp_path):
    out = write_ranking_report(result, tmp_path, "shop")
    text = (out / "report.md").read_text()
    assert "| lightgbm lambdarank |" in text and "feature importance" in text
    assert (out / "ranking.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["metrics"]["ials order"]
