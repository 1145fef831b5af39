"""Build every artifact of a bundle from a dataset: the one path for nightly and evaluation.

Each component trains offline here and answers at runtime from the arrays it saves
(DESIGN.md §2: a stage package owns its models; pipelines only orchestrates).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tqdm import tqdm

from candidates.als import ALSGenerator, ALSModel
from candidates.eals import EALSModel
from candidates.ease import EASEModel
from candidates.i2i import I2IModel
from candidates.popularity import PopularityTop
from candidates.quorum import QuorumModel
from candidates.tops import TopsModel
from pipelines.rating_evaluation import explicit_ratings
from pipelines.training_data import build_training_data
from ranking.cascade import TrainedRankers
from ranking.features import UserItemStats
from recsys.config import Config
from recsys.dataset import Dataset
from serving.catalog import ItemCatalog, UserProfiles
from serving.runtime import LoadedBundle

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BuiltBundle:
    bundle: LoadedBundle
    seconds: dict[str, float]  # wall time per step, in build order


def build_bundle(dataset: Dataset, config: Config, *, show_progress: bool = False) -> BuiltBundle:
    """Train every component on `dataset` and return the in-memory bundle (version "")."""
    seconds: dict[str, float] = {}
    steps = tqdm(total=11, desc="build", unit="step", disable=not show_progress)

    def timed(name: str, make: Callable[[], T]) -> T:
        steps.set_postfix_str(name)
        start = time.perf_counter()
        value = make()
        seconds[name] = time.perf_counter() - start
        log.info("built %s in %.1f s", name, seconds[name])
        steps.update()
        return value

    data = timed("training data", lambda: build_training_data(dataset, config))
    als_model = timed("ials", lambda: ALSModel.fit(data.interactions, config.als))
    als = timed("ann index", lambda: ALSGenerator.build(als_model, config.ann))
    popularity = timed("popularity", lambda: PopularityTop.fit(data, config.popularity))
    tops = timed("tops", lambda: TopsModel.fit(data, config))
    quorum = timed("quorums", lambda: QuorumModel.fit(data, config.quorum))
    i2i = timed("i2i lists", lambda: I2IModel.build(data, als_model.item_factors, config.i2i))
    eals = timed(
        "eals",
        lambda: EALSModel.fit(
            explicit_ratings(dataset, data.users, data.items, config), config.eals
        ),
    )
    ease = timed("ease", lambda: EASEModel.fit(data.interactions, config.ease))
    recent = max(config.i2i.recent, config.business.history_items)
    catalog, profiles = timed(
        "catalog and profiles",
        lambda: (
            ItemCatalog.build(dataset, data),
            UserProfiles.build(dataset, data, recent, config.sequence.length),
        ),
    )
    stats = timed("ranking stats", lambda: UserItemStats.fit(data))
    steps.close()
    bundle = LoadedBundle(
        version="",
        users=data.users,
        items=data.items,
        als=als,
        popularity=popularity,
        tops=tops,
        quorum=quorum,
        i2i=i2i,
        eals=eals,
        catalog=catalog,
        profiles=profiles,
        stats=stats,
        rankers=TrainedRankers(),  # trained afterwards from this code's candidates
        ease=ease,
    )
    return BuiltBundle(bundle=bundle, seconds=seconds)
