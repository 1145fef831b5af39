"""A loaded, read-only model bundle: everything one request needs, swapped whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from candidates.als import ALSGenerator
from candidates.eals import EALSModel
from candidates.ease import EASEModel
from candidates.i2i import I2IModel
from candidates.popularity import PopularityTop
from candidates.quorum import QuorumModel
from candidates.tops import TopsModel
from ranking.cascade import TrainedRankers
from ranking.features import UserItemStats
from recsys.config import Config
from recsys.ids import IdMap
from serving.catalog import ItemCatalog, UserProfiles

# Sub-directories of a bundle, one per component that owns its files.
ALS_DIR, POPULARITY_DIR, TOPS_DIR, QUORUM_DIR, I2I_DIR, EALS_DIR = (
    "als",
    "popularity",
    "tops",
    "quorum",
    "i2i",
    "eals",
)
CATALOG_DIR, PROFILES_DIR, IDS_DIR, STATS_DIR = "catalog", "profiles", "ids", "ranking_stats"
EASE_DIR = "ease"
RANKERS_DIR = "rankers"
SUBDIRS = (
    ALS_DIR,
    POPULARITY_DIR,
    TOPS_DIR,
    QUORUM_DIR,
    I2I_DIR,
    EALS_DIR,
    EASE_DIR,
    CATALOG_DIR,
    PROFILES_DIR,
    IDS_DIR,
    STATS_DIR,
    RANKERS_DIR,
)


@dataclass(frozen=True)
class LoadedBundle:
    version: str
    users: IdMap  # the models' users
    items: IdMap
    als: ALSGenerator
    popularity: PopularityTop
    tops: TopsModel
    quorum: QuorumModel
    i2i: I2IModel
    eals: EALSModel  # a ranking feature (seed 004: eALS "в фичах модели"), not a generator
    catalog: ItemCatalog
    profiles: UserProfiles
    stats: UserItemStats  # what ranking features read beyond the generators' models
    rankers: TrainedRankers  # the cascade's trained stages (empty when none configured)
    ease: EASEModel | None = None  # None: a bundle from before every catalogue had one

    @classmethod
    def load(cls, directory: Path, version: str, config: Config) -> LoadedBundle:
        return cls(
            version=version,
            users=IdMap.load(directory / IDS_DIR / "users.parquet"),
            items=IdMap.load(directory / IDS_DIR / "items.parquet"),
            als=ALSGenerator.load(directory / ALS_DIR, config.ann),
            popularity=PopularityTop.load(directory / POPULARITY_DIR),
            tops=TopsModel.load(directory / TOPS_DIR),
            quorum=QuorumModel.load(directory / QUORUM_DIR),
            i2i=I2IModel.load(directory / I2I_DIR),
            eals=EALSModel.load(directory / EALS_DIR),
            catalog=ItemCatalog.load(directory / CATALOG_DIR),
            profiles=UserProfiles.load(directory / PROFILES_DIR),
            stats=UserItemStats.load(directory / STATS_DIR),
            rankers=TrainedRankers.load(directory / RANKERS_DIR),
            ease=EASEModel.load(directory / EASE_DIR),
        )

    def save(self, directory: Path) -> None:
        for sub in SUBDIRS:
            (directory / sub).mkdir(parents=True)
        self.users.save(directory / IDS_DIR / "users.parquet")
        self.items.save(directory / IDS_DIR / "items.parquet")
        self.als.save(directory / ALS_DIR)
        self.popularity.save(directory / POPULARITY_DIR)
        self.tops.save(directory / TOPS_DIR)
        self.quorum.save(directory / QUORUM_DIR)
        self.i2i.save(directory / I2I_DIR)
        self.eals.save(directory / EALS_DIR)
        self.catalog.save(directory / CATALOG_DIR)
        self.profiles.save(directory / PROFILES_DIR)
        self.stats.save(directory / STATS_DIR)
        self.rankers.save(directory / RANKERS_DIR)
        if self.ease is not None:
            self.ease.save(directory / EASE_DIR)
