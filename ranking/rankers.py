"""The ranker contract and registry: a cascade stage is a registered ranker kind, named in
`ranking.stages` (issue "One-way layers"; the registries of `implicit` and product-mixer).

A ranker scores every row of a frame and never drops one (the cascade decides how many rows
the next stage sees, from the kind's `keep`). A stage trained after another may read the
earlier stage's score as one more dense column, `<stage>_score` (it re-orders that stage's
head, so it starts from that order and learns what to change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

import ranking
from ranking.frame import RankingFrame
from recsys.components import add_once, import_modules
from recsys.config import Config, RankingConfig


class Ranker(Protocol):
    feature_names: tuple[str, ...]  # the dense columns it reads, in order

    def predict(self, frame: RankingFrame) -> np.ndarray: ...  # one finite float32 per row

    def save(self, directory: Path) -> None: ...


@dataclass(frozen=True)
class RankerFit:
    """What a ranker's training sees: frames of point-in-time requests (a fifth of the users
    held out for early stopping), the config, and the newest iALS item factors."""

    train: RankingFrame
    valid: RankingFrame
    config: Config
    item_factors: np.ndarray
    show_progress: bool = False


@dataclass(frozen=True)
class RankerKind:
    name: str  # the stage name in ranking.stages, and the ranker's sub-directory
    fit: Callable[[RankerFit], Ranker]
    load: Callable[[Path], Ranker]
    # the form that serves (compiled, quantized, ...), from a loaded ranker; cache_dir keeps
    # compiled code between processes
    serving: Callable[[Ranker, RankingConfig, Path | None], Ranker] = lambda r, c, d: r
    keep: Callable[[RankingConfig], int] | None = None  # rows the next stage sees; None: all

    def rows_kept(self, config: RankingConfig) -> int | None:
        """How many rows of each request the next stage sees; None: all of them."""
        return self.keep(config) if self.keep else None


RANKERS: dict[str, RankerKind] = {}


def register_ranker(kind: RankerKind) -> None:
    add_once(RANKERS, kind.name, kind, "ranker")


def ranker_kind(name: str) -> RankerKind:
    """The registered kind `name`; an unknown one is a ValueError listing the known."""
    import_modules((ranking,))  # the rankers register themselves on import
    if name not in RANKERS:
        raise ValueError(f"ranking.stages: unknown ranker {name!r}; known: {', '.join(RANKERS)}")
    return RANKERS[name]


def score_column(stage: str) -> str:
    """The dense column holding an earlier stage's score."""
    return f"{stage}_score"


def stage_read_by(ranker: Ranker) -> str | None:
    """The earlier stage whose head `ranker` was trained on and whose score it reads."""
    import_modules((ranking,))
    return next((s for s in RANKERS if score_column(s) in ranker.feature_names), None)


def with_stage_score(frame: RankingFrame, scores: np.ndarray, stage: str) -> RankingFrame:
    """`frame` with one more dense column: an earlier stage's score of each row."""
    return RankingFrame(
        dense=np.column_stack([frame.dense, np.asarray(scores, dtype=np.float32)]),
        dense_names=(*frame.dense_names, score_column(stage)),
        sparse=frame.sparse,
        sparse_names=frame.sparse_names,
        sparse_cardinalities=frame.sparse_cardinalities,
        groups=frame.groups,
        labels=frame.labels,
    )
