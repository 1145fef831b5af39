"""`recsys tune`: choose settings on validation users only, through the served path.

A grid file names config keys and the values to try; every combination is a trial. Each
trial trains what nightly trains (every component and the rankers of its `ranking.stages`,
no stage gate: each stage's figure is reported) on the validation split's training side and
serves the validation users, exactly the split whose figures `recsys evaluate` reports as
"validation": the protocol's test users are held out first and never seen here. The report
lists every trial, best final NDCG@10 first, and names the choice (issue "Ranking that earns
its place": defaults chosen on validation, the grid and the choice recorded).

    # tune.toml: every leaf is a list of values to try
    [grid.als]
    factors = [16, 64]
    regularization = [1.0, 5.0]
"""

from __future__ import annotations

import itertools
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipelines.nightly import bundle_with_rankers
from pipelines.protocols import Holdout, holdout
from pipelines.report import new_report_dir
from pipelines.served_evaluation import ServedEvaluation, evaluate_served
from recsys.config import Config, ConfigError
from recsys.dataset import Dataset

Overrides = dict[str, dict[str, Any]]  # section -> key -> value, as Config.replace takes


@dataclass(frozen=True)
class Trial:
    overrides: Overrides
    evaluation: ServedEvaluation  # the validation users, every served variant
    requests: int  # ranker training requests
    seconds: float

    @property
    def final_ndcg(self) -> tuple[float, float]:
        return self.evaluation.metrics[self.evaluation.final]["NDCG@10"]


@dataclass(frozen=True)
class TuningResult:
    dataset: str
    protocol: str
    trials: tuple[Trial, ...]  # best final NDCG@10 first

    @property
    def choice(self) -> Trial:
        return self.trials[0]


def read_grid(path: str | Path) -> list[Overrides]:
    """The trials of a grid file: every combination of its `[grid]` values, in file order."""
    path = Path(path)
    try:
        grid = tomllib.loads(path.read_text()).get("grid")
    except FileNotFoundError:
        raise ConfigError(f"grid file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: needs a [grid] table of config keys and values to try")
    try:
        return grid_trials(grid)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def grid_trials(grid: dict[str, Any]) -> list[Overrides]:
    """{"als": {"factors": [16, 64]}, ...} -> one Overrides per combination."""
    axes: list[tuple[str, str, list]] = []
    for section, keys in grid.items():
        if not isinstance(keys, dict):
            raise ConfigError(f"grid.{section} must be a table of keys, got {keys!r}")
        for key, values in keys.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{section}.{key} must be a non-empty list of values")
            axes.append((section, key, values))
    trials = []
    for chosen in itertools.product(*(values for _, _, values in axes)):
        overrides: Overrides = {}
        for (section, key, _), value in zip(axes, chosen, strict=True):
            overrides.setdefault(section, {})[key] = value
        trials.append(overrides)
    return trials


def tuning_split(dataset: Dataset, config: Config, protocol: str) -> Holdout:
    """The validation split of `recsys evaluate`: the protocol applied to the training side of
    the test split, so that no trial ever sees a test user's held-out events."""
    test = holdout(dataset, protocol, config)
    return holdout(test.train, protocol, config, seed=1)


def tune(
    dataset: Dataset,
    config: Config,
    trials: list[Overrides],
    *,
    protocol: str | None = None,
    show_progress: bool = False,
) -> TuningResult:
    protocol = protocol or config.evaluation.protocol
    configs = [config.replace(**overrides) for overrides in trials]  # refuse bad keys first
    valid = tuning_split(dataset, config, protocol)
    done = []
    for overrides, chosen in tqdm(
        list(zip(trials, configs, strict=True)),
        desc="tune",
        unit="trial",
        disable=not show_progress,
    ):
        start = time.perf_counter()
        trained = bundle_with_rankers(valid.train, chosen, chosen.ranking.stages, False)
        evaluation = evaluate_served(
            trained.bundle,
            chosen,
            valid,
            "validation",
            baselines=False,
            max_users=chosen.evaluation.max_users,
        )
        requests = trained.counts.get("training requests", 0)
        done.append(Trial(overrides, evaluation, requests, time.perf_counter() - start))
    ranked = sorted(done, key=lambda t: -t.final_ndcg[0])  # stable: file order on ties
    return TuningResult(dataset.name, protocol, tuple(ranked))


def format_tuning_report(result: TuningResult, title: str) -> str:
    choice = result.choice
    users = choice.evaluation.users
    lines = [
        f"# {title}",
        "",
        f"{len(result.trials)} trials on {result.dataset}, {result.protocol} validation split "
        f"({users} users; the test users are held out first and never seen). NDCG@10, mean ± "
        "standard error; `served:` columns are the union in iALS order and each ranking stage "
        "added in turn, the last one the final list. Best final NDCG@10 first.",
        "",
        f"**Choice:** `{_settings(choice.overrides)}`: final NDCG@10 "
        f"{choice.final_ndcg[0]:.4f} ± {choice.final_ndcg[1]:.4f}.",
        "",
    ]
    variants = list(dict.fromkeys(v for t in result.trials for v in t.evaluation.served))
    lines.append(
        "| settings | " + " | ".join(variants) + " | final HR@50 | training requests | seconds |"
    )
    lines.append("|---|" + "---:|" * (len(variants) + 3))
    for trial in result.trials:
        metrics = trial.evaluation.metrics
        cells = [
            f"{metrics[v]['NDCG@10'][0]:.4f} ± {metrics[v]['NDCG@10'][1]:.4f}"
            if v in metrics
            else "—"
            for v in variants
        ]
        hr50 = metrics[trial.evaluation.final]["HR@50"][0]
        lines.append(
            f"| `{_settings(trial.overrides)}` | {' | '.join(cells)} | {hr50:.4f} | "
            f"{trial.requests} | {trial.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_tuning_report(result: TuningResult, directory: str | Path, title: str) -> Path:
    out = new_report_dir(directory)
    (out / "tuning.json").write_text(
        json.dumps(
            {
                "dataset": result.dataset,
                "protocol": result.protocol,
                "choice": result.choice.overrides,
                "trials": [
                    {
                        "overrides": t.overrides,
                        "users": t.evaluation.users,
                        "metrics": {
                            m: {n: list(v) for n, v in vs.items()}
                            for m, vs in t.evaluation.metrics.items()
                        },
                        "training_requests": t.requests,
                        "seconds": round(t.seconds, 1),
                    }
                    for t in result.trials
                ],
            },
            indent=2,
        )
    )
    (out / "tuning.md").write_text(format_tuning_report(result, title))
    return out


def _settings(overrides: Overrides) -> str:
    return ", ".join(
        f"{section}.{key} = {json.dumps(value)}"
        for section, keys in overrides.items()
        for key, value in keys.items()
    )
