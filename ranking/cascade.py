"""The ranking cascade of serving (DESIGN.md §1): candidates -> LightGBM keeps the best
`lightgbm_keep` -> DLRM orders those. Stages are configuration; each placed item says which
stage placed it, and its score is that stage's score (comparable within a stage only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ranking.dlrm.ranker import DLRMRanker
from ranking.frame import RankingFrame
from ranking.gbdt import GBDTRanker
from recsys.components import Component, register_component
from recsys.config import RankingConfig

log = logging.getLogger(__name__)

LIGHTGBM_DIR, DLRM_DIR = "lightgbm", "dlrm"
# A later stage trained after LightGBM sees LightGBM's score as one more dense feature (it
# re-orders LightGBM's head, so it starts from that order and learns what to change).
LIGHTGBM_SCORE = "lightgbm_score"
DROPPED_FILE = "dropped.json"


@dataclass(frozen=True)
class TrainedRankers:
    """The rankers nightly trained into a bundle; a stage not trained is None. `dropped`
    names the configured stages the nightly's stage gate left out, and why: the cascade
    skips them (their input's order is served)."""

    lightgbm: GBDTRanker | None = None
    dlrm: DLRMRanker | None = None
    dropped: dict[str, str] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        for name, ranker in ((LIGHTGBM_DIR, self.lightgbm), (DLRM_DIR, self.dlrm)):
            if ranker is not None:
                (directory / name).mkdir()
                ranker.save(directory / name)
        (directory / DROPPED_FILE).write_text(json.dumps(self.dropped, indent=2))

    @classmethod
    def load(cls, directory: Path) -> TrainedRankers:
        light, heavy = directory / LIGHTGBM_DIR, directory / DLRM_DIR
        dropped_file = directory / DROPPED_FILE
        dropped = json.loads(dropped_file.read_text()) if dropped_file.exists() else {}
        if not isinstance(dropped, dict) or not all(isinstance(v, str) for v in dropped.values()):
            raise ValueError(f"{dropped_file}: expected an object of stage -> reason")
        return cls(
            lightgbm=GBDTRanker.load(light) if light.is_dir() else None,
            dlrm=DLRMRanker.load(heavy, device="cpu") if heavy.is_dir() else None,
            dropped=dropped,
        )

    def served_stages(self, configured: tuple[str, ...]) -> tuple[str, ...]:
        """The configured stages this bundle serves: those its stage gate kept."""
        return tuple(stage for stage in configured if stage not in self.dropped)


@dataclass(frozen=True)
class Ranked:
    order: np.ndarray  # row indices of the frame, best first
    scores: np.ndarray  # float32, the placing stage's score, aligned with `order`
    stages: np.ndarray  # object: name of the stage that placed each row, aligned with `order`
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage


class Cascade:
    """The configured stages over one bundle's rankers; built once per bundle."""

    def __init__(
        self, rankers: TrainedRankers, config: RankingConfig, cache_dir: Path | None = None
    ) -> None:
        """`cache_dir` keeps compiled rankers between processes (see
        ranking.native_cache); None compiles in memory each time."""
        served = rankers.served_stages(config.stages)
        for stage in set(config.stages) - set(served):
            log.info(
                "ranking stage %s left out by the stage gate: %s", stage, rankers.dropped[stage]
            )
        config = dataclasses.replace(config, stages=served)
        missing = [s for s in config.stages if getattr(rankers, s) is None]
        if missing:
            raise ValueError(
                f"ranking.stages names {missing[0]!r} but the bundle has no trained {missing[0]} "
                "ranker; run `recsys nightly` with this configuration"
            )
        self.config = config
        self.lightgbm = None
        if "lightgbm" in config.stages:
            self.lightgbm = rankers.lightgbm
            if config.lightgbm_serving == "compiled":
                self.lightgbm = rankers.lightgbm.compiled(cache_dir)
        self.dlrm = None
        if "dlrm" in config.stages:
            self.dlrm = _dlrm_variant(rankers.dlrm, config.dlrm_serving, cache_dir)
            self.dlrm_cardinalities = np.asarray(rankers.dlrm.spec.sparse_cardinalities)
            self.dlrm_reads_lightgbm = reads_lightgbm(rankers.dlrm)
            if self.dlrm_reads_lightgbm and config.stages[:1] != ("lightgbm",):
                raise ValueError(
                    "the bundle's DLRM re-orders LightGBM's head (it reads lightgbm_score); "
                    "ranking.stages must run lightgbm before dlrm"
                )

    @property
    def stages(self) -> tuple[str, ...]:
        return self.config.stages

    def rank(self, frame: RankingFrame) -> Ranked:
        """Order every row: each stage re-orders the head the previous stage kept."""
        n = len(frame)
        order = np.arange(n)
        scores = np.zeros(n, dtype=np.float32)
        stages = np.empty(n, dtype=object)
        head = n
        seconds = {}
        for stage in self.stages:
            start = time.perf_counter()
            rows = order[:head]
            # the first stage sees every row in frame order: no copy of the frame
            part = frame if head == n and stage == self.stages[0] else frame.take(rows)
            if stage == "lightgbm":
                stage_scores = self.lightgbm.predict(part)
                head = min(head, self.config.lightgbm_keep)
            else:
                if self.dlrm_reads_lightgbm:
                    part = with_stage_score(part, scores[: len(rows)], LIGHTGBM_SCORE)
                stage_scores = self.dlrm.predict(with_known_ids(part, self.dlrm_cardinalities))
            best = np.argsort(-stage_scores, kind="stable")
            order[: len(rows)] = rows[best]
            scores[: len(rows)] = stage_scores[best]
            stages[: len(rows)] = stage
            seconds[stage] = time.perf_counter() - start
        return Ranked(order=order, scores=scores, stages=stages, seconds=seconds)


def _dlrm_variant(dlrm: DLRMRanker, variant: str, cache_dir: Path | None) -> DLRMRanker:
    """DESIGN.md §4: INT8 dynamic quantization or TorchScript for inference, or native code
    compiled ahead of time (ranking.dlrm.export)."""
    if variant == "compiled":
        return dlrm.compiled(cache_dir)
    if variant == "int8":
        return dlrm.quantized()
    if variant == "torchscript":
        return dlrm.scripted()
    return dlrm


def reads_lightgbm(ranker) -> bool:
    """Whether a ranker was trained on LightGBM's head and reads its score."""
    spec = getattr(ranker, "spec", None)
    return LIGHTGBM_SCORE in getattr(spec, "dense_names", ())


def with_stage_score(frame: RankingFrame, scores: np.ndarray, name: str) -> RankingFrame:
    """`frame` with one more dense column: an earlier stage's score of each row."""
    return RankingFrame(
        dense=np.column_stack([frame.dense, np.asarray(scores, dtype=np.float32)]),
        dense_names=(*frame.dense_names, name),
        sparse=frame.sparse,
        sparse_names=frame.sparse_names,
        sparse_cardinalities=frame.sparse_cardinalities,
        groups=frame.groups,
        labels=frame.labels,
    )


def with_known_ids(frame: RankingFrame, cardinalities) -> RankingFrame:
    """Ids newer than the DLRM's tables (users who arrived after it was trained) -> 0, the
    "unknown" row every table has."""
    sparse = np.where(frame.sparse < cardinalities, frame.sparse, 0)
    return RankingFrame(
        dense=frame.dense,
        dense_names=frame.dense_names,
        sparse=sparse,
        sparse_names=frame.sparse_names,
        sparse_cardinalities=tuple(int(c) for c in cardinalities),
        groups=frame.groups,
        labels=frame.labels,
    )


# Trained after the rest of the bundle, from that bundle's own candidates (nightly); a
# freshly built bundle holds none.
register_component(
    Component(
        "rankers",
        fit=lambda given: TrainedRankers(),
        load=lambda directory, config: TrainedRankers.load(directory),
    )
)
