"""A loaded, read-only model bundle: everything one request needs, swapped whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from candidates.als import ALSGenerator
from candidates.popularity import PopularityTop
from pipelines.idmap import IdMap
from recsys.config import Config
from serving.catalog import ItemCatalog, UserProfiles

# Sub-directories of a bundle, one per component that owns its files.
ALS_DIR, POPULARITY_DIR, CATALOG_DIR, PROFILES_DIR, IDS_DIR = (
    "als",
    "popularity",
    "catalog",
    "profiles",
    "ids",
)


@dataclass(frozen=True)
class LoadedBundle:
    version: str
    users: IdMap  # the models' users
    items: IdMap
    als: ALSGenerator
    popularity: PopularityTop
    catalog: ItemCatalog
    profiles: UserProfiles

    @classmethod
    def load(cls, directory: Path, version: str, config: Config) -> LoadedBundle:
        return cls(
            version=version,
            users=IdMap.load(directory / IDS_DIR / "users.parquet"),
            items=IdMap.load(directory / IDS_DIR / "items.parquet"),
            als=ALSGenerator.load(directory / ALS_DIR, config.ann),
            popularity=PopularityTop.load(directory / POPULARITY_DIR),
            catalog=ItemCatalog.load(directory / CATALOG_DIR),
            profiles=UserProfiles.load(directory / PROFILES_DIR),
        )

    def save(self, directory: Path) -> None:
        for sub in (ALS_DIR, POPULARITY_DIR, CATALOG_DIR, PROFILES_DIR, IDS_DIR):
            (directory / sub).mkdir(parents=True)
        self.users.save(directory / IDS_DIR / "users.parquet")
        self.items.save(directory / IDS_DIR / "items.parquet")
        self.als.save(directory / ALS_DIR)
        self.popularity.save(directory / POPULARITY_DIR)
        self.catalog.save(directory / CATALOG_DIR)
        self.profiles.save(directory / PROFILES_DIR)
