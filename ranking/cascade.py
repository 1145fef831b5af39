"""The ranking cascade of serving (DESIGN.md §1): candidates -> LightGBM keeps the best
`lightgbm_keep` -> DLRM orders those. Stages are configuration (`ranking.stages`, each a
registered ranker kind, ranking.rankers); each placed item says which stage placed it, and
its score is that stage's score (comparable within a stage only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ranking.frame import RankingFrame
from ranking.rankers import Ranker, ranker_kind, stage_read_by, with_stage_score
from recsys.components import Component, holds_no_items, register_component
from recsys.config import RANK_ORDERS, RankingConfig

log = logging.getLogger(__name__)

DROPPED_FILE = "dropped.json"
RANK_DROPPED_FILE = "rank_dropped.json"
RANK_ORDER_FILE = "rank_order.json"


@dataclass(frozen=True)
class TrainedRankers:
    """The rankers nightly trained into a bundle, by stage name. `dropped` names the
    configured stages the nightly's stage gate left out, and why: the cascade skips them
    (their input's order is served). `rank_dropped` names those `Rank` alone leaves out:
    stages that order Recommend's candidates better than their input but a caller's items
    worse (the gate's second pass, on held-out item + 99 sampled). `rank_order` is the order
    of `Rank`'s input, chosen by the same pass (ranking/rank_orders.py): what `Rank` serves
    where it keeps no stage."""

    models: Mapping[str, Ranker] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    rank_dropped: dict[str, str] = field(default_factory=dict)
    rank_order: str = "als"

    def save(self, directory: Path) -> None:
        for name, ranker in self.models.items():
            (directory / name).mkdir()
            ranker.save(directory / name)
        (directory / DROPPED_FILE).write_text(json.dumps(self.dropped, indent=2))
        (directory / RANK_DROPPED_FILE).write_text(json.dumps(self.rank_dropped, indent=2))
        (directory / RANK_ORDER_FILE).write_text(json.dumps(self.rank_order))

    @classmethod
    def load(cls, directory: Path) -> TrainedRankers:
        models = {
            sub.name: ranker_kind(sub.name).load(sub)
            for sub in sorted(directory.iterdir())
            if sub.is_dir()
        }
        return cls(
            models=models,
            dropped=_read_reasons(directory / DROPPED_FILE),
            rank_dropped=_read_reasons(directory / RANK_DROPPED_FILE),
            rank_order=_read_order(directory / RANK_ORDER_FILE),
        )

    def served_stages(self, configured: tuple[str, ...]) -> tuple[str, ...]:
        """The configured stages this bundle serves: those its stage gate kept."""
        return tuple(stage for stage in configured if stage not in self.dropped)

    def for_rank(self) -> TrainedRankers:
        """The rankers as `Rank` serves them: the stages it leaves out are dropped too."""
        return dataclasses.replace(
            self, dropped={**self.dropped, **self.rank_dropped}, rank_dropped={}
        )


def _read_reasons(path: Path) -> dict[str, str]:
    """A stage -> reason file; absent (bundles from before it was written): none."""
    reasons = json.loads(path.read_text()) if path.exists() else {}
    if not isinstance(reasons, dict) or not all(isinstance(v, str) for v in reasons.values()):
        raise ValueError(f"{path}: expected an object of stage -> reason")
    return reasons


def _read_order(path: Path) -> str:
    """Rank's order; absent (bundles from before it was chosen): the iALS order."""
    order = json.loads(path.read_text()) if path.exists() else "als"
    if order not in RANK_ORDERS:
        raise ValueError(f"{path}: expected one of {', '.join(RANK_ORDERS)}, got {order!r}")
    return order


@dataclass(frozen=True)
class Ranked:
    order: np.ndarray  # row indices of the frame, best first
    scores: np.ndarray  # float32, the placing stage's score, aligned with `order`
    stages: np.ndarray  # object: name of the stage that placed each row, aligned with `order`
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage


@dataclass(frozen=True)
class _Stage:
    name: str
    ranker: Ranker  # the serving form
    keep: int | None  # rows the next stage sees; None: all
    reads: str | None  # the earlier stage whose score it reads, if any


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
        self.config = dataclasses.replace(config, stages=served)
        self._stages: list[_Stage] = []
        for position, name in enumerate(served):
            kind = ranker_kind(name)
            trained = rankers.models.get(name)
            if trained is None:
                raise ValueError(
                    f"ranking.stages names {name!r} but the bundle has no trained {name} "
                    "ranker; run `recsys nightly` with this configuration"
                )
            earlier = stage_read_by(trained)
            if earlier and served[position - 1 : position] != (earlier,):
                raise ValueError(
                    f"the bundle's {name} re-orders {earlier}'s head (it reads its score); "
                    f"ranking.stages must run {earlier} right before {name}"
                )
            self._stages.append(
                _Stage(
                    name=name,
                    ranker=kind.serving(trained, config, cache_dir),
                    keep=kind.rows_kept(config),
                    reads=earlier,
                )
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
        for position, stage in enumerate(self._stages):
            start = time.perf_counter()
            rows = order[:head]
            # the first stage sees every row in frame order: no copy of the frame
            part = frame if position == 0 else frame.take(rows)
            if stage.reads is not None:
                part = with_stage_score(part, scores[: len(rows)], stage.reads)
            stage_scores = stage.ranker.predict(part)
            best = np.argsort(-stage_scores, kind="stable")
            order[: len(rows)] = rows[best]
            scores[: len(rows)] = stage_scores[best]
            stages[: len(rows)] = stage.name
            if stage.keep is not None:
                head = min(head, stage.keep)
            seconds[stage.name] = time.perf_counter() - start
        return Ranked(order=order, scores=scores, stages=stages, seconds=seconds)


# Trained after the rest of the bundle, from that bundle's own candidates (nightly); a
# freshly built bundle holds none.
register_component(
    Component(
        "rankers",
        fit=lambda given: TrainedRankers(),
        load=lambda directory, config: TrainedRankers.load(directory),
        # they score features, not item ids; DLRM maps ids newer than its table to unknown
        grow=holds_no_items,
    )
)
