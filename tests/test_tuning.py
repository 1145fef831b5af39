"""`recsys tune`: a grid of settings tried on validation users only, through the served path."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.loaders import load_dataset_dir
from pipelines.protocols import holdout
from pipelines.served_evaluation import UNION, ServedEvaluation
from pipelines.tuning import (
    Trial,
    TuningResult,
    format_tuning_report,
    grid_trials,
    read_grid,
    settings_of,
    tune,
    tuning_split,
    write_tuning_report,
)
from recsys.config import ConfigError
from recsys_cli.main import main
from tests.conftest import shop_config


@pytest.fixture(scope="module")
def shop(shop_dir, tmp_path_factory):
    config = shop_config(tmp_path_factory.mktemp("tuning"), shop_dir)
    return load_dataset_dir(shop_dir), config.replace(ranking={"stages": []})


def test_a_grid_is_every_combination_of_its_values():
    trials = grid_trials({"als": {"factors": [8, 16], "alpha": [1.0]}, "ranking": {"stages": [[]]}})
    assert trials == [
        {"als": {"factors": 8, "alpha": 1.0}, "ranking": {"stages": []}},
        {"als": {"factors": 16, "alpha": 1.0}, "ranking": {"stages": []}},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[grid]\n", "needs a \\[grid\\] table"),
        ("[grid]\nals = 3\n", "grid.als must be a table"),
        ("[grid.als]\nfactors = 8\n", "grid.als.factors must be a non-empty list"),
        ("[grid.als]\nfactors = []\n", "grid.als.factors must be a non-empty list"),
        ("[grid.als\n", "not valid TOML"),
    ],
)
def test_a_bad_grid_file_is_refused_naming_it(tmp_path, text, message):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as refused:
        read_grid(path)
    assert str(path) in str(refused.value)


def test_an_unknown_key_is_refused_before_anything_trains(shop, monkeypatch):
    dataset, config = shop

    def train(*args):
        raise AssertionError("a trial trained before every trial's settings were checked")

    monkeypatch.setattr("pipelines.tuning.bundle_with_rankers", train)
    with pytest.raises(ConfigError, match="no_such_key"):
        tune(dataset, config, [{"als": {"factors": 8}}, {"als": {"no_such_key": 1}}])


def test_no_trial_sees_a_test_users_held_out_events(shop):
    dataset, config = shop
    test = holdout(dataset, "leave_last_out", config)
    valid = tuning_split(dataset, config, "leave_last_out")

    def rows(events: pd.DataFrame) -> set[tuple]:
        columns = ["user_id", "item_id", "event_type", "timestamp"]
        return set(map(tuple, events[columns].astype(str).to_numpy()))

    # validation trains on less than the test split's train, which lacks the test's events
    assert rows(valid.train.events) < rows(test.train.events) < rows(dataset.events)
    events = test.train.events
    pairs = set(zip(events["user_id"], events["item_id"], strict=True))
    validated = {
        (u, i) for u, items in zip(valid.users, valid.relevant, strict=True) for i in items
    }
    assert validated and validated <= pairs  # validation targets come from the train side


def test_tune_ranks_trials_by_served_ndcg_and_writes_the_grid(shop, tmp_path):
    dataset, config = shop
    trials = grid_trials({"als": {"factors": [2, 16]}})
    result = tune(dataset, config, trials, protocol="leave_last_out")
    scores = [t.final_ndcg[0] for t in result.trials]
    assert scores == sorted(scores, reverse=True) and len(scores) == 2
    assert result.choice.mean_ndcg == max(scores) and len(result.choice.trials) == 1
    assert {t.overrides["als"]["factors"] for t in result.trials} == {2, 16}
    assert all(t.evaluation.served == (UNION,) for t in result.trials)
    out = write_tuning_report(result, tmp_path, "shop")
    text = (out / "tuning.md").read_text()
    choice = result.choice.overrides["als"]["factors"]
    assert f"**Choice:** `als.factors = {choice}`" in text
    assert text.count("| `als.factors = ") == 2
    saved = json.loads((out / "tuning.json").read_text())
    assert saved["choice"] == result.choice.overrides and len(saved["trials"]) == 2


def test_the_tune_command_writes_its_report(shop_dir, tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid.ranking]\nstages = [[]]\n[grid.als]\nfactors = [4]\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[data]\nsource = "{shop_dir}"\n[evaluation]\nreport_dir = "{tmp_path / "reports"}"\n'
        f"max_users = 50\n[als]\niterations = 2\n"
    )
    assert main(["tune", "--config", str(config), "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "**Choice:** `ranking.stages = [], als.factors = 4`" in out
    assert len(list((tmp_path / "reports").glob("*/tuning.md"))) == 1
    assert (
        pd.read_json(next((tmp_path / "reports").glob("*/tuning.json")), typ="series")["protocol"]
        == "leave_last_out"
    )


def _trial(overrides: dict, ndcg: float) -> Trial:
    evaluation = ServedEvaluation(
        protocol="leave_last_out",
        split="validation",
        users=10,
        metrics={UNION: {"NDCG@10": (ndcg, 0.01), "HR@50": (0.5, 0.01)}},
        served=(UNION,),
        per_user_ndcg={},
        beyond={},
    )
    return Trial(overrides, evaluation, requests=0, seconds=0.0)


def test_a_setting_is_chosen_on_its_mean_over_seeds_not_on_its_luckiest_seed():
    # setting A wins with one lucky seed; B is better on average
    grid = grid_trials(
        {"ranking": {"later_positives": [0, 20]}, "lightgbm": {"random_state": [1, 2, 3]}}
    )
    scores = {(0, 1): 0.30, (0, 2): 0.20, (0, 3): 0.20, (20, 1): 0.26, (20, 2): 0.25, (20, 3): 0.24}
    trials = [
        _trial(o, scores[o["ranking"]["later_positives"], o["lightgbm"]["random_state"]])
        for o in grid
    ]
    settings = settings_of(trials)
    assert [s.overrides for s in settings] == [
        {"ranking": {"later_positives": 20}},
        {"ranking": {"later_positives": 0}},
    ]
    assert settings[0].scores == (0.26, 0.25, 0.24)
    assert settings[0].mean_ndcg == pytest.approx(0.25)
    ranked = sorted(trials, key=lambda t: -t.final_ndcg[0])
    result = TuningResult("shop", "leave_last_out", tuple(ranked))
    assert result.trials[0].overrides["ranking"]["later_positives"] == 0  # the lucky seed
    assert result.choice.overrides == {"ranking": {"later_positives": 20}}
    text = format_tuning_report(result, "shop")
    assert (
        "**Choice:** `ranking.later_positives = 20`: mean final NDCG@10 0.2500 over 3 seeds "
        "(0.2400-0.2600)" in text
    )
    assert "| `ranking.later_positives = 0` | 3 | 0.3000 / 0.2000 / 0.2000 | 0.2333 |" in text


def test_a_grid_of_seeds_alone_is_one_setting():
    trials = [
        _trial(o, 0.1 * (i + 1))
        for i, o in enumerate(grid_trials({"lightgbm": {"random_state": [1, 2]}}))
    ]
    (setting,) = settings_of(trials)
    assert setting.overrides == {} and setting.mean_ndcg == pytest.approx(0.15)
    result = TuningResult("shop", "leave_last_out", tuple(trials))
    assert "**Choice:** `the config as given`: mean final NDCG@10 0.1500 over 2 seeds" in (
        format_tuning_report(result, "shop")
    )
