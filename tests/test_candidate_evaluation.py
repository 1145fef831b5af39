"""`recsys evaluate --stage candidates`: the budget-proportional union and its report."""

import json

import numpy as np
import pytest

from pipelines.candidate_evaluation import UNION, _union_recall
from pipelines.candidate_report import write_candidate_report
from tests.conftest import shop_config


def test_union_interleaves_in_proportion_to_budgets():
    a = np.array([10, 11, 12, 13])
    b = np.array([20, 11, 21, 22])
    relevant = np.array([12, 21])
    # shares 2/3 and 1/3: stream keys a: 1.5, 3, 4.5, 6; b: 3, 6, 9, 12
    # merged (stable): 10, 11(a), 20, 12, 13, 11(b, dup), 21, 22 -> distinct 10 11 20 12 13 21 22
    both = _union_recall(
        [a, b], np.array([200.0, 100.0]), np.array([True, True]), relevant, (3, 4, 6)
    )
    np.testing.assert_allclose(both, [0.0, 0.5, 1.0])
    only_b = _union_recall(
        [a, b], np.array([200.0, 100.0]), np.array([False, True]), relevant, (3,)
    )
    np.testing.assert_allclose(only_b, [0.5])  # 20, 11, 21


def test_union_of_one_generator_is_its_own_top_k():
    items = np.array([5, 3, 9, 1])
    got = _union_recall(
        [items, np.array([7])],
        np.array([1.0, 1.0]),
        np.array([True, False]),
        np.array([9, 1]),
        (2, 3, 4),
    )
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0])


@pytest.fixture(scope="module")
def shop_result(shop_dir, tmp_path_factory):
    from pipelines.candidate_evaluation import evaluate_candidate_stage
    from pipelines.loaders import load_dataset_dir

    config = shop_config(tmp_path_factory.mktemp("cand"), shop_dir).replace(
        evaluation={"candidate_cutoffs": [10, 50, 200], "max_users": 150}
    )
    return evaluate_candidate_stage(load_dataset_dir(shop_dir), config), config


def test_stage_table_is_consistent(shop_result):
    result, config = shop_result
    assert result.generators == config.serving.generators
    assert result.users["evaluated"] == min(150, result.users["eligible"])
    for name, curve in result.recall.items():
        values = [curve[k] for k in result.cutoffs]
        assert all(0.0 <= v <= 1.0 for v in values), name
        assert values == sorted(values), f"{name}: recall must not drop as K grows"
    # the union of everything at the largest K finds at least what any member finds at K/n
    k = max(result.cutoffs)
    assert result.recall[UNION][k] >= max(result.recall[g][10] for g in result.generators)
    for name in result.generators:
        assert result.marginal(name, k) == pytest.approx(
            result.recall[UNION][k] - result.without[name][k]
        )
    assert result.ratings is None  # the shop has no explicit ratings
    assert result.recall["als"][k] > 0 and result.mean_returned["als"] > 0


def test_report_has_the_table_verdicts_and_plots(shop_result, tmp_path):
    result, _ = shop_result
    out = write_candidate_report(result, tmp_path, "shop")
    text = (out / "report.md").read_text()
    assert "| **union** |" in text and "marginal@50" in text and "best single generator" in text
    for name in result.generators:
        assert f"| {name} |" in text
    assert (out / "recall_at_k.png").stat().st_size > 1000
    assert (out / "marginal_recall.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["recall"]["union"]
