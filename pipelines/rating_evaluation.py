"""What eALS learns from, and its pointwise evaluation on a time-based holdout (RMSE, MAE).

seed 004, "ALS": eALS fits "известные оценки", the observed explicit ratings. Datasets
without ratings (implicit shops) get a stand-in, log1p of the pair's summed event weight:
eALS then models how strong an interaction is given that there is one, which is what the
ranking feature needs (how much the user will engage with a candidate), not whether it
happens (iALS' job).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from candidates.eals import RATING, EALSModel, explicit_ratings
from pipelines.splits import chronological_split
from recsys.config import Config
from recsys.dataset import Dataset
from recsys.ids import IdMap
from recsys.metrics import mae, rmse

MODELS = ("global_mean", "biases", "eals")


@dataclass(frozen=True)
class RatingEvaluation:
    metrics: dict[str, dict[str, float]]  # model -> rmse, mae, rmse_warm, mae_warm
    counts: dict[str, int]  # train / test ratings, warm test pairs, users, items
    cutoff: int  # first test timestamp

    def format_table(self) -> str:
        columns = sorted({name for values in self.metrics.values() for name in values})
        lines = [f"{'model':<12}" + "".join(f"{c:>11}" for c in columns)]
        for model, values in self.metrics.items():
            cells = "".join(f"{values.get(c, float('nan')):>11.4f}" for c in columns)
            lines.append(f"{model:<12}{cells}")
        lines.append(", ".join(f"{name}={count}" for name, count in self.counts.items()))
        return "\n".join(lines)


def has_ratings(dataset: Dataset) -> bool:
    return bool((dataset.events["event_type"] == RATING).any())


def evaluate_explicit(dataset: Dataset, config: Config) -> RatingEvaluation | None:
    """RMSE and MAE on the held-out ratings of a chronological split, for the global mean,
    biases only (eALS with 0 factors, same λ_bias) and eALS (config [eals]); "_warm"
    metrics keep test pairs whose user and item both have a train rating.

    None when the dataset has no rating events: there is nothing explicit to score (the
    implicit stand-in of `explicit_ratings` has no ground truth worth an RMSE)."""
    if not has_ratings(dataset):
        return None
    split = chronological_split(dataset, config.evaluation.holdout_fraction)
    for part, side in ((split.train, "train"), (split.test, "test")):
        if not has_ratings(part):
            raise ValueError(f"the {side} side of the chronological split has no rating events")
    train_ratings = split.train.events[split.train.events["event_type"] == RATING]
    users = IdMap.from_values(train_ratings["user_id"])
    items = IdMap.from_values(train_ratings["item_id"])
    train = explicit_ratings(split.train, users, items, config)

    # Test ids unseen in train are appended to the maps, then mapped back to -1 (unknown).
    test_ratings = split.test.events[split.test.events["event_type"] == RATING]
    test = explicit_ratings(
        split.test,
        IdMap.from_values(test_ratings["user_id"], base=users),
        IdMap.from_values(test_ratings["item_id"], base=items),
        config,
    ).tocoo()
    test_users = np.where(test.row < len(users), test.row, -1)
    test_items = np.where(test.col < len(items), test.col, -1)
    warm = (test_users >= 0) & (test_items >= 0)

    biases = EALSModel.fit(train, dataclasses.replace(config.eals, factors=0))
    eals = EALSModel.fit(train, config.eals)
    predictions = {
        "global_mean": np.full(test.nnz, biases.global_mean, np.float32),
        "biases": biases.predict(test_users, test_items),
        "eals": eals.predict(test_users, test_items),
    }
    metrics = {}
    for model, predicted in predictions.items():
        metrics[model] = {"rmse": rmse(test.data, predicted), "mae": mae(test.data, predicted)}
        if warm.any():
            metrics[model]["rmse_warm"] = rmse(test.data[warm], predicted[warm])
            metrics[model]["mae_warm"] = mae(test.data[warm], predicted[warm])
    counts = {
        "train_ratings": train.nnz,
        "test_ratings": test.nnz,
        "warm_test_ratings": int(warm.sum()),
        "train_users": len(users),
        "train_items": len(items),
    }
    return RatingEvaluation(metrics=metrics, counts=counts, cutoff=split.cutoff)
