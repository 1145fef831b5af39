"""What the early filters consult: item stock and regions, user home regions and history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from candidates.base import TrainingData
from pipelines.dataset import ALL_REGIONS, Dataset, split_list
from pipelines.idmap import IdMap

CATALOG_FILE = "catalog.npz"
REGIONS_FILE = "regions.json"
SEEN_FILE = "seen.npz"
PROFILE_IDS_FILE = "profile_users.parquet"


@dataclass(frozen=True)
class ItemCatalog:
    in_stock: np.ndarray  # bool per item
    sold_everywhere: np.ndarray  # bool per item (regions "*")
    region_names: tuple[str, ...]
    sold_in_region: np.ndarray  # bool (n_regions, n_items)

    @classmethod
    def build(cls, dataset: Dataset, items: IdMap) -> ItemCatalog:
        frame = dataset.items.set_index("item_id").loc[items.ids]
        region_lists = [split_list(r) for r in frame["regions"]]
        names = tuple(sorted({r for rs in region_lists for r in rs} - {ALL_REGIONS}))
        position = {name: i for i, name in enumerate(names)}
        mask = np.zeros((len(names), len(items)), dtype=bool)
        for item, regions in enumerate(region_lists):
            mask[[position[r] for r in regions if r != ALL_REGIONS], item] = True
        return cls(
            in_stock=frame["stock"].to_numpy() > 0,
            sold_everywhere=np.array([ALL_REGIONS in rs for rs in region_lists]),
            region_names=names,
            sold_in_region=mask,
        )

    def sold_in(self, region: str, items: np.ndarray) -> np.ndarray:
        """Bool mask: items sold in `region`; a region no item names sees only '*' items."""
        everywhere = self.sold_everywhere[items]
        try:
            row = self.region_names.index(region)
        except ValueError:
            return everywhere
        return everywhere | self.sold_in_region[row, items]

    def save(self, directory: Path) -> None:
        np.savez(
            directory / CATALOG_FILE,
            in_stock=self.in_stock,
            sold_everywhere=self.sold_everywhere,
            sold_in_region=self.sold_in_region,
        )
        (directory / REGIONS_FILE).write_text(json.dumps(list(self.region_names)))

    @classmethod
    def load(cls, directory: Path) -> ItemCatalog:
        with np.load(directory / CATALOG_FILE) as data:
            return cls(
                in_stock=data["in_stock"],
                sold_everywhere=data["sold_everywhere"],
                region_names=tuple(json.loads((directory / REGIONS_FILE).read_text())),
                sold_in_region=data["sold_in_region"],
            )


@dataclass(frozen=True)
class UserProfiles:
    """Home regions of every known user (from the user table) and each user's seen items."""

    users: IdMap  # users of the user table
    home_region: np.ndarray  # object array of str per user in `users`
    seen: sp.csr_matrix  # bool (n_model_users, n_items), rows indexed like the models' users

    @classmethod
    def build(cls, dataset: Dataset, data: TrainingData) -> UserProfiles:
        users = IdMap.from_values(dataset.users["user_id"])
        regions = (
            dataset.users.drop_duplicates("user_id")["region"].astype(str).to_numpy(dtype=object)
        )
        seen = data.interactions.astype(bool).tocsr()
        return cls(users=users, home_region=regions, seen=seen)

    def region_of(self, user_id: str) -> str:
        index = self.users.index_of(user_id)
        return "" if index < 0 else str(self.home_region[index])

    def seen_items(self, user_index: int) -> np.ndarray:
        if user_index < 0 or user_index >= self.seen.shape[0]:
            return np.empty(0, dtype=np.int64)
        start, end = self.seen.indptr[user_index], self.seen.indptr[user_index + 1]
        return self.seen.indices[start:end].astype(np.int64)

    def save(self, directory: Path) -> None:
        self.users.save(directory / PROFILE_IDS_FILE)
        sp.save_npz(directory / SEEN_FILE, self.seen)
        np.save(directory / "home_region.npy", self.home_region.astype(str))

    @classmethod
    def load(cls, directory: Path) -> UserProfiles:
        return cls(
            users=IdMap.load(directory / PROFILE_IDS_FILE),
            home_region=np.load(directory / "home_region.npy").astype(object),
            seen=sp.load_npz(directory / SEEN_FILE).tocsr(),
        )
