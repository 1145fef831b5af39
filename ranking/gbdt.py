"""The light ranker (DESIGN.md §4): LightGBM over the dense ranking features.

Two objectives from the config: "binary" (pointwise logloss, early stopping on AUC) and
"lambdarank" (LambdaMART, each request's candidates one query group, early stopping on
NDCG@10). Trees see only `RankingFrame.dense`: the sparse user/item ids are for the DLRM's
embedding tables, and their useful statistics are dense features already. NaN is LightGBM's
native missing value, so "the generator did not find this item" needs no imputation.

The model keeps only the trees up to the best validation iteration, so the booster that
predicts after `fit` is the one `save` writes and `load` reads back.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from ranking.compiled_trees import compile_forest
from ranking.frame import RankingFrame
from ranking.rankers import RankerKind, register_ranker
from recsys.config import MAX_GRADE, LightGBMConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.txt"
META_FILE = "gbdt.json"
OBJECTIVES = ("binary", "lambdarank")
NDCG_AT = 10


@dataclass(frozen=True)
class ValidationCurve:
    """The early-stopping metric on the validation frame after each boosting round."""

    metric: str  # "auc" or "ndcg@10"
    values: tuple[float, ...]
    best_iteration: int  # 1-based: the number of trees kept


class GBDTRanker:
    name = "lightgbm"

    def __init__(
        self,
        booster: lgb.Booster,
        feature_names: tuple[str, ...],
        objective: str,
        curve: ValidationCurve,
    ) -> None:
        if booster.num_feature() != len(feature_names):
            raise ValueError(
                f"the model has {booster.num_feature()} features, "
                f"{len(feature_names)} names were given"
            )
        self.booster = booster
        self.feature_names = feature_names
        self.objective = objective
        self.curve = curve
        self.variant = "booster"  # or "compiled": see `compiled`
        self._raw_scores = functools.partial(booster.predict, raw_score=True, num_threads=1)

    @property
    def best_iteration(self) -> int:
        return self.curve.best_iteration

    @classmethod
    def fit(
        cls,
        train: RankingFrame,
        valid: RankingFrame,
        config: LightGBMConfig,
        num_threads: int = 1,
    ) -> GBDTRanker:
        """Boost up to `config.num_trees` rounds, stopping when the metric on `valid` (the
        caller's time-based validation frame) has not improved for `early_stopping_rounds`."""
        _check_config(config, num_threads)
        _check_training_frame(train, "train", config.objective)
        _check_training_frame(valid, "valid", config.objective)
        _check_names(valid.dense_names, train.dense_names, "valid")
        params = _params(config, num_threads)
        train_set = _dataset(train, config.objective)
        valid_set = _dataset(valid, config.objective, reference=train_set)
        history: dict[str, dict[str, list[float]]] = {}
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=config.num_trees,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(config.early_stopping_rounds, verbose=False),
                lgb.record_evaluation(history),
            ],
        )
        metric = "auc" if config.objective == "binary" else f"ndcg@{NDCG_AT}"
        curve = ValidationCurve(
            metric=metric,
            values=tuple(float(v) for v in history["valid"][metric]),
            best_iteration=int(booster.best_iteration),
        )
        log.info(
            "lightgbm %s: best iteration %d of %d, valid %s %.4f",
            config.objective,
            curve.best_iteration,
            len(curve.values),
            metric,
            curve.values[curve.best_iteration - 1],
        )
        # Drop the rounds after the best one; the string round trip is also exactly what
        # save/load does, so fit-time and loaded predictions come from the same trees.
        kept = booster.model_to_string(num_iteration=curve.best_iteration)
        return cls(lgb.Booster(model_str=kept), train.dense_names, config.objective, curve)

    def predict(self, frame: RankingFrame) -> np.ndarray:
        """float32 score per row, higher = better: the raw margin (log-odds for "binary"; the
        sigmoid would saturate to float32 ties at the top). The whole batch in one call on one
        thread: serving runs one thread per request."""
        _check_names(frame.dense_names, self.feature_names, "frame")
        if not len(frame):
            return np.empty(0, dtype=np.float32)
        scores = self._raw_scores(np.ascontiguousarray(frame.dense, dtype=np.float32))
        return np.asarray(scores, dtype=np.float32)

    def compiled(self, cache_dir: Path | None = None) -> GBDTRanker:
        """The same trees compiled to native code (ranking.compiled_trees): equal scores,
        about 10x faster at serving batch sizes. If the compiler is missing or fails, the
        booster keeps predicting and the reason is logged: serving slower beats not serving."""
        ranker = GBDTRanker(self.booster, self.feature_names, self.objective, self.curve)
        try:
            compiled = compile_forest(self.booster.model_to_string(), cache_dir)
            probe = _probe_rows(len(self.feature_names))
            # compared as served, in float32 (float64 sums may differ in the last bit)
            expected = np.asarray(self._raw_scores(probe), dtype=np.float32)
            got = np.asarray(compiled(probe), dtype=np.float32)
        except Exception as error:  # an optional speed-up must never refuse a good bundle
            log.warning("lightgbm: serving without compiled trees: %s", error)
            return ranker
        # The machine code comes from a cache on disk: it must be this model's, whatever
        # its checksum file says (a swapped forest once changed rankings for 17 of 40 users)
        if not np.array_equal(expected, got):
            log.error(
                "lightgbm: compiled trees disagree with the model on %d of %d probe rows; "
                "serving the model's own trees",
                int(np.sum(expected != got)),
                len(probe),
            )
            return ranker
        log.info("lightgbm: compiled trees match the model on %d probe rows", len(probe))
        ranker._raw_scores = compiled
        ranker.variant = "compiled"
        return ranker

    def feature_importance(self) -> dict[str, dict[str, float]]:
        """Total gain and split count per feature over the kept trees, by gain descending."""
        gain = self.booster.feature_importance("gain")
        split = self.booster.feature_importance("split")
        order = sorted(range(len(gain)), key=lambda i: (-gain[i], i))
        return {
            self.feature_names[i]: {"gain": float(gain[i]), "split": float(split[i])} for i in order
        }

    def save(self, directory: Path) -> None:
        model_path = directory / MODEL_FILE
        self.booster.save_model(str(model_path))
        meta = {
            "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
            "feature_names": list(self.feature_names),
            "objective": self.objective,
            "best_iteration": self.curve.best_iteration,
            "num_trees": self.booster.num_trees(),
            "metric": self.curve.metric,
            "validation_curve": list(self.curve.values),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> GBDTRanker:
        model_path, meta_path = directory / MODEL_FILE, directory / META_FILE
        for path in (model_path, meta_path):
            if not path.is_file():
                raise FileNotFoundError(f"LightGBM ranker file {path} is missing")
        try:
            meta = json.loads(meta_path.read_text())
            names = tuple(str(name) for name in meta["feature_names"])
            objective = str(meta["objective"])
            num_trees = int(meta["num_trees"])
            digest = str(meta["model_sha256"])
            curve = ValidationCurve(
                metric=str(meta["metric"]),
                values=tuple(float(v) for v in meta["validation_curve"]),
                best_iteration=int(meta["best_iteration"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{meta_path} is not a valid ranker description: {error}") from error
        if objective not in OBJECTIVES:
            raise ValueError(f"{meta_path}: unknown objective {objective!r}")
        # LightGBM parses trees in an OpenMP loop and aborts the whole process on a truncated
        # file instead of raising, so the text is checked before it reaches the parser.
        model_bytes = model_path.read_bytes()
        if hashlib.sha256(model_bytes).hexdigest() != digest:
            raise ValueError(f"{model_path} does not match the checksum in {meta_path}")
        try:
            booster = lgb.Booster(model_str=model_bytes.decode())
        except lgb.basic.LightGBMError as error:
            raise ValueError(f"{model_path} is not a LightGBM model: {error}") from error
        if booster.num_trees() != num_trees:
            raise ValueError(
                f"{model_path} has {booster.num_trees()} trees, {meta_path} says {num_trees}"
            )
        return cls(booster, names, objective, curve)


def _probe_rows(features: int, rows: int = 256) -> np.ndarray:
    """Rows that walk many paths of any forest: values over several magnitudes, both signs,
    zeros and a tenth missing (NaN takes each split's learned default branch)."""
    rng = np.random.default_rng(0)
    scale = 10.0 ** rng.integers(-2, 5, size=(rows, features))
    probe = (rng.standard_normal((rows, features)) * scale).astype(np.float32)
    probe[rng.random((rows, features)) < 0.1] = 0.0
    probe[rng.random((rows, features)) < 0.1] = np.nan
    return probe


def _params(config: LightGBMConfig, num_threads: int) -> dict:
    params = {
        "objective": config.objective,
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "seed": config.random_state,
        # Same seed + same data + deterministic => the same trees on every run and thread
        # count; force_row_wise pins the histogram layout LightGBM would otherwise time.
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "use_missing": True,  # NaN = missing, sent down the learned default branch
        "zero_as_missing": False,  # 0.0 is a real value (a count, a zero similarity)
        "first_metric_only": True,
        "verbosity": -1,
    }
    if config.objective == "binary":
        params["metric"] = "auc"
    else:
        params["metric"] = "ndcg"
        params["eval_at"] = [NDCG_AT]
    return params


def _dataset(frame: RankingFrame, objective: str, reference: lgb.Dataset | None = None):
    group = frame.group_sizes() if objective == "lambdarank" else None
    # binary: taken up or not, a graded label (ranking.later_positives) counts as 1
    labels = frame.labels if objective == "lambdarank" else np.minimum(frame.labels, 1.0)
    return lgb.Dataset(
        np.ascontiguousarray(frame.dense, dtype=np.float32),
        label=labels,
        group=group,
        # LightGBM rewrites some characters in names; ours live in the json instead.
        feature_name=[f"f{i}" for i in range(frame.dense.shape[1])],
        reference=reference,
        free_raw_data=True,
    )


def _check_config(config: LightGBMConfig, num_threads: int) -> None:
    if config.objective not in OBJECTIVES:
        raise ValueError(f"lightgbm objective {config.objective!r} is not one of {OBJECTIVES}")
    if config.num_trees < 1 or config.early_stopping_rounds < 1:
        raise ValueError("lightgbm num_trees and early_stopping_rounds must be >= 1")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")


def _check_training_frame(frame: RankingFrame, what: str, objective: str) -> None:
    if not len(frame):
        raise ValueError(f"{what} frame is empty")
    if not frame.dense.shape[1]:
        raise ValueError(f"{what} frame has no dense features")
    labels = frame.labels
    if labels is None:
        raise ValueError(f"{what} frame has no labels")
    if not np.all(np.isfinite(labels)):
        raise ValueError(f"{what} labels hold NaN or inf")
    if np.isinf(frame.dense).any():
        raise ValueError(f"{what} dense features hold inf (use NaN for missing)")
    if not (np.all(labels == np.round(labels)) and labels.min() >= 0 and labels.max() <= MAX_GRADE):
        raise ValueError(f"{what} labels must be integer grades 0..{MAX_GRADE}")
    # Early stopping on a metric that cannot move (AUC of one class, NDCG with no positive)
    # would silently keep a single tree.
    if labels.max() <= 0:
        raise ValueError(f"{what} frame has no positive labels")
    if objective == "binary" and labels.min() >= 1:
        raise ValueError(f"{what} frame has no negative labels")


def _check_names(got: tuple[str, ...], expected: tuple[str, ...], what: str) -> None:
    if tuple(got) == tuple(expected):
        return
    for position, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            raise ValueError(
                f"{what} dense feature {position} is {a!r}, the model was trained on {b!r}"
            )
    raise ValueError(
        f"{what} has {len(got)} dense features, the model was trained on {len(expected)}"
    )


register_ranker(
    RankerKind(
        "lightgbm",
        fit=lambda given: GBDTRanker.fit(given.train, given.valid, given.config.lightgbm),
        load=GBDTRanker.load,
        serving=lambda ranker, config, cache_dir: (
            ranker.compiled(cache_dir) if config.lightgbm_serving == "compiled" else ranker
        ),
        keep=lambda config: config.lightgbm_keep,
    )
)
