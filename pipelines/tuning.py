"""`recsys tune`: choose settings on validation users only, through the served path.

A grid file names config keys and the values to try; every combination is a trial. Each
trial trains what nightly trains (every component and the rankers of its `ranking.stages`,
no stage gate: each stage's figure is reported) on the validation split's training side and
serves the validation users, exactly the split whose figures `recsys evaluate` reports as
"validation": the protocol's test users are held out first and never seen here. The report
lists every trial, best final NDCG@10 first, and names the choice (issue "Ranking that earns
its place": defaults chosen on validation, the grid and the choice recorded).

Keys named `random_state` are seeds, not settings: trials that differ only in them are one
setting, and the choice is the setting with the best mean over its seeds. A ranker's gain
can hold for one seed and not the next (on MovieLens-100k chronological validation LightGBM
beat its input for one `lightgbm.random_state` in five); a grid that lists several seeds
chooses on all of them.

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
from collections.abc import Sequence
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
SEED_KEY = "random_state"


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
class Setting:
    """The trials of one setting: the same overrides but for the seeds."""

    overrides: Overrides  # without the seed keys
    trials: tuple[Trial, ...]  # one per seed, in grid order

    @property
    def scores(self) -> tuple[float, ...]:
        """Each seed's final NDCG@10."""
        return tuple(t.final_ndcg[0] for t in self.trials)

    @property
    def mean_ndcg(self) -> float:
        return sum(self.scores) / len(self.scores)


@dataclass(frozen=True)
class TuningResult:
    dataset: str
    protocol: str
    trials: tuple[Trial, ...]  # best final NDCG@10 first

    @property
    def settings(self) -> tuple[Setting, ...]:
        """The trials grouped by setting, best mean over seeds first."""
        return settings_of(self.trials)

    @property
    def choice(self) -> Setting:
        return self.settings[0]

    @property
    def seeded(self) -> bool:
        """Some setting was tried with more than one seed."""
        return any(len(s.trials) > 1 for s in self.settings)


def without_seeds(overrides: Overrides) -> Overrides:
    """The overrides less every `random_state` key (a section left empty goes too)."""
    kept = {
        section: {k: v for k, v in keys.items() if k != SEED_KEY}
        for section, keys in overrides.items()
    }
    return {section: keys for section, keys in kept.items() if keys}


def settings_of(trials: Sequence[Trial]) -> tuple[Setting, ...]:
    """The trials grouped by setting, best mean first (on a tie, the setting that appears
    first in `trials`)."""
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        key = json.dumps(without_seeds(trial.overrides), sort_keys=True)
        groups.setdefault(key, []).append(trial)
    settings = [Setting(without_seeds(g[0].overrides), tuple(g)) for g in groups.values()]
    return tuple(sorted(settings, key=lambda s: -s.mean_ndcg))


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
    # each trial is the nightly of a deployment validated on `protocol` (Config.request_kind)
    config = config.replace(evaluation={"protocol": protocol})
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
    users = choice.trials[0].evaluation.users
    lines = [
        f"# {title}",
        "",
        f"{len(result.trials)} trials on {result.dataset}, {result.protocol} validation split "
        f"({users} users; the test users are held out first and never seen). NDCG@10, mean ± "
        "standard error; `served:` columns are the union in iALS order and each ranking stage "
        "added in turn, the last one the final list. Best final NDCG@10 first.",
        "",
        f"**Choice:** `{_settings(choice.overrides)}`: {_choice_figure(choice)}.",
        "",
    ]
    if result.seeded:
        lines += [
            "Trials that differ only in `random_state` keys are one setting, chosen on its "
            "mean over them:",
            "",
            "| setting | seeds | final NDCG@10 per seed | mean | min | max |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for setting in result.settings:
            scores = setting.scores
            lines.append(
                f"| `{_settings(setting.overrides)}` | {len(scores)} | "
                f"{' / '.join(f'{v:.4f}' for v in scores)} | {setting.mean_ndcg:.4f} | "
                f"{min(scores):.4f} | {max(scores):.4f} |"
            )
        lines.append("")
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
                "choice_mean_ndcg@10": round(result.choice.mean_ndcg, 6),
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


def _choice_figure(setting: Setting) -> str:
    if len(setting.trials) == 1:
        mean, error = setting.trials[0].final_ndcg
        return f"final NDCG@10 {mean:.4f} ± {error:.4f}"
    scores = setting.scores
    return (
        f"mean final NDCG@10 {setting.mean_ndcg:.4f} over {len(scores)} seeds "
        f"({min(scores):.4f}-{max(scores):.4f})"
    )


def _settings(overrides: Overrides) -> str:
    if not overrides:
        return "the config as given"
    return ", ".join(
        f"{section}.{key} = {json.dumps(value)}"
        for section, keys in overrides.items()
        for key, value in keys.items()
    )
