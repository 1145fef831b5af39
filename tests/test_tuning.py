"""`recsys tune`: a grid of settings tried on validation users only, through the served path."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.loaders import load_dataset_dir
from pipelines.protocols import holdout
from pipelines.served_evaluation import UNION
from pipelines.tuning import grid_trials, read_grid, tune, tuning_split, write_tuning_report
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
    assert result.choice.final_ndcg[0] == max(scores)
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
