"""What the early filters consult: item stock and regions, user home regions and history."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.components import Component, register_component
from recsys.dataset import ALL_REGIONS, ITEM_GROUP, Dataset, list_membership
from recsys.ids import IdMap
from recsys.interactions import TrainingData, recent_items, recent_positives
from recsys.new_items import NewItems
from serving.rules import NO_GROUP

CATALOG_FILE = "catalog.npz"
REGIONS_FILE = "regions.json"
CATEGORIES_FILE = "item_categories.npz"
CATEGORY_NAMES_FILE = "categories.json"
RECENT_FILE = "recent.npz"
SEEN_FILE = "seen.npz"
PROFILE_IDS_FILE = "profile_users.parquet"
TITLES_FILE = "titles.parquet"


@dataclass(frozen=True)
class ItemCatalog:
    in_stock: np.ndarray  # bool per item
    sold_everywhere: np.ndarray  # bool per item (regions "*")
    region_names: tuple[str, ...]
    sold_in_region: np.ndarray  # bool (n_regions, n_items)
    category_names: tuple[str, ...]
    item_categories: sp.csr_matrix  # bool (n_items, n_categories)
    group: np.ndarray  # int64 product group per item (dense codes), NO_GROUP = none
    # object (str) per item: the catalog title, "" if none; answers carry it so that a
    # person reading a list knows what each item is
    titles: np.ndarray

    @classmethod
    def build(cls, dataset: Dataset, data: TrainingData) -> ItemCatalog:
        frame = dataset.items.drop_duplicates("item_id").set_index("item_id").loc[data.items.ids]
        regions, names = list_membership(frame["regions"])
        everywhere = (
            regions[:, names.index(ALL_REGIONS)].toarray().ravel()
            if ALL_REGIONS in names
            else np.zeros(len(frame), dtype=bool)
        )
        named = [i for i, name in enumerate(names) if name != ALL_REGIONS]
        return cls(
            in_stock=frame["stock"].to_numpy() > 0,
            sold_everywhere=everywhere,
            region_names=tuple(names[i] for i in named),
            sold_in_region=regions[:, named].T.toarray().astype(bool),
            category_names=data.category_names,
            item_categories=data.item_categories,
            group=_group_codes(frame),
            titles=data.item_text,
        )

    def items_in_categories(self, names: tuple[str, ...]) -> np.ndarray:
        """Bool mask of items in any of the named categories (unknown names match nothing)."""
        columns = [self.category_names.index(n) for n in names if n in self.category_names]
        if not columns:
            return np.zeros(self.item_categories.shape[0], dtype=bool)
        return np.asarray(self.item_categories[:, columns].sum(axis=1)).ravel() > 0

    def sold_in(self, region: str, items: np.ndarray) -> np.ndarray:
        """Bool mask: items sold in `region`; a region no item names sees only '*' items."""
        everywhere = self.sold_everywhere[items]
        try:
            row = self.region_names.index(region)
        except ValueError:
            return everywhere
        return everywhere | self.sold_in_region[row, items]

    def grown(self, new: NewItems) -> ItemCatalog:
        """New items as minimal item files give them: in stock, sold everywhere, no
        categories, no product group, no title."""
        return dataclasses.replace(
            self,
            in_stock=new.rows(self.in_stock, True),
            sold_everywhere=new.rows(self.sold_everywhere, True),
            sold_in_region=new.rows(self.sold_in_region, False, axis=1),
            item_categories=new.csr_rows(self.item_categories),
            group=new.rows(self.group, NO_GROUP),
            titles=new.rows(self.titles, ""),
        )

    def save(self, directory: Path) -> None:
        np.savez(
            directory / CATALOG_FILE,
            in_stock=self.in_stock,
            sold_everywhere=self.sold_everywhere,
            sold_in_region=self.sold_in_region,
            group=self.group,
        )
        sp.save_npz(directory / CATEGORIES_FILE, self.item_categories)
        (directory / REGIONS_FILE).write_text(json.dumps(list(self.region_names)))
        (directory / CATEGORY_NAMES_FILE).write_text(json.dumps(list(self.category_names)))
        pd.DataFrame({"title": self.titles.astype(str)}).to_parquet(directory / TITLES_FILE)

    @classmethod
    def load(cls, directory: Path) -> ItemCatalog:
        with np.load(directory / CATALOG_FILE) as data:
            in_stock = data["in_stock"]
            # bundles from before product groups have none
            group = (
                data["group"]
                if "group" in data.files
                else np.full(len(in_stock), NO_GROUP, dtype=np.int64)
            )
            titles_file = directory / TITLES_FILE
            titles = (
                pd.read_parquet(titles_file)["title"].to_numpy(dtype=object)
                if titles_file.exists()  # bundles from before titles have none
                else np.full(len(in_stock), "", dtype=object)
            )
            if len(titles) != len(in_stock):
                raise ValueError(
                    f"{titles_file} has {len(titles)} titles for {len(in_stock)} items"
                )
            return cls(
                in_stock=in_stock,
                sold_everywhere=data["sold_everywhere"],
                region_names=tuple(json.loads((directory / REGIONS_FILE).read_text())),
                sold_in_region=data["sold_in_region"],
                category_names=tuple(json.loads((directory / CATEGORY_NAMES_FILE).read_text())),
                item_categories=sp.load_npz(directory / CATEGORIES_FILE).tocsr(),
                group=group,
                titles=titles,
            )


def _group_codes(items: pd.DataFrame) -> np.ndarray:
    """Dense int64 codes of the optional group column (sorted names), NO_GROUP where it is
    missing or empty, or for every item when the catalog has no such column."""
    if ITEM_GROUP not in items.columns:
        return np.full(len(items), NO_GROUP, dtype=np.int64)
    names = items[ITEM_GROUP].astype(object)
    names = names.where(names.notna(), "").astype(str).str.strip()
    codes, _ = pd.factorize(names.where(names != ""), sort=True)  # missing -> -1
    return np.where(codes < 0, NO_GROUP, codes).astype(np.int64)


@dataclass(frozen=True)
class UserProfiles:
    """Home regions of every known user (from the user table), each user's seen items,
    recent positives (most recent first: the history i2i and business generators start from)
    and latest items of any event type (the sequence the sequence-aware stages read).
    """

    users: IdMap  # users of the user table
    home_region: np.ndarray  # object array of str per user in `users`
    seen: sp.csr_matrix  # bool (n_model_users, n_items), rows indexed like the models' users
    recent_indptr: np.ndarray  # int64 (n_model_users + 1,): CSR offsets into recent_items
    recent_items: np.ndarray  # int64 item indices, most recent first within each user
    sequence_indptr: np.ndarray  # int64 (n_model_users + 1,): CSR offsets into sequence_items
    sequence_items: np.ndarray  # int64: latest distinct items of any event, newest first
    # int64 per sequence item: Unix seconds of its latest event (where live sessions are cut);
    # None in bundles from before them
    sequence_times: np.ndarray | None = None

    @classmethod
    def build(
        cls, dataset: Dataset, data: TrainingData, recent_limit: int, sequence_limit: int = 20
    ) -> UserProfiles:
        users = IdMap.from_values(dataset.users["user_id"])
        regions = (
            dataset.users.drop_duplicates("user_id")["region"].astype(str).to_numpy(dtype=object)
        )
        seen = data.interactions.astype(bool).tocsr()
        indptr, recent = recent_positives(data, recent_limit)
        sequence_indptr, sequence, sequence_times = recent_items(data, sequence_limit)
        return cls(
            users=users,
            home_region=regions,
            seen=seen,
            recent_indptr=indptr,
            recent_items=recent,
            sequence_indptr=sequence_indptr,
            sequence_items=sequence,
            sequence_times=sequence_times,
        )

    def recent_of(self, user_index: int) -> np.ndarray:
        """The user's recent positives, most recent first (empty for unknown users)."""
        if user_index < 0 or user_index + 1 >= len(self.recent_indptr):
            return np.empty(0, dtype=np.int64)
        return self.recent_items[
            self.recent_indptr[user_index] : self.recent_indptr[user_index + 1]
        ]

    def sequence_of(self, user_index: int) -> np.ndarray:
        """The user's latest distinct items of any event type, newest first."""
        if user_index < 0 or user_index + 1 >= len(self.sequence_indptr):
            return np.empty(0, dtype=np.int64)
        return self.sequence_items[
            self.sequence_indptr[user_index] : self.sequence_indptr[user_index + 1]
        ]

    def sequence_times_of(self, user_index: int) -> np.ndarray | None:
        """The times of `sequence_of(user_index)`'s items; None where the bundle has none."""
        if self.sequence_times is None:
            return None
        if user_index < 0 or user_index + 1 >= len(self.sequence_indptr):
            return np.empty(0, dtype=np.int64)
        return self.sequence_times[
            self.sequence_indptr[user_index] : self.sequence_indptr[user_index + 1]
        ]

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
        np.savez(
            directory / RECENT_FILE,
            indptr=self.recent_indptr,
            items=self.recent_items,
            sequence_indptr=self.sequence_indptr,
            sequence_items=self.sequence_items,
            **({} if self.sequence_times is None else {"sequence_times": self.sequence_times}),
        )

    @classmethod
    def load(cls, directory: Path) -> UserProfiles:
        with np.load(directory / RECENT_FILE) as recent:
            if "sequence_items" not in recent.files:
                raise ValueError(
                    f"{directory / RECENT_FILE}: no user sequences (a bundle older than this "
                    "code); run `recsys nightly` to build a new one"
                )
            indptr, items = recent["indptr"], recent["items"]
            sequence_indptr, sequence = recent["sequence_indptr"], recent["sequence_items"]
            times = recent["sequence_times"] if "sequence_times" in recent.files else None
            if times is not None and len(times) != len(sequence):
                raise ValueError(f"{directory / RECENT_FILE}: sequence times do not fit")
        return cls(
            users=IdMap.load(directory / PROFILE_IDS_FILE),
            home_region=np.load(directory / "home_region.npy").astype(object),
            seen=sp.load_npz(directory / SEEN_FILE).tocsr(),
            recent_indptr=indptr,
            recent_items=items,
            sequence_indptr=sequence_indptr,
            sequence_items=sequence,
            sequence_times=times,
        )


register_component(
    Component(
        "catalog",
        fit=lambda given: ItemCatalog.build(given.dataset, given.data),
        load=lambda directory, config: ItemCatalog.load(directory),
        grow=ItemCatalog.grown,
    )
)
register_component(
    Component(
        "profiles",
        fit=lambda given: UserProfiles.build(
            given.dataset,
            given.data,
            max(given.config.i2i.recent, given.config.business.history_items),
            given.config.sequence.length,
        ),
        # what the bundle saw its users do: none of it with a new item
        grow=lambda profiles, new: dataclasses.replace(
            profiles, seen=new.csr_columns(profiles.seen)
        ),
        load=lambda directory, config: UserProfiles.load(directory),
    )
)
