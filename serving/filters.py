"""Early filters (seed 004: "критически важно фильтровать кандидатов на ранних стадиях").

Each filter says which candidates it keeps; the pipeline records what each removed.
They run on the union before any ranking, so rankers never spend time on items that
could not be shown, and the list is never cut short by a late filter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recsys.arrays import is_member
from recsys.config import ServingConfig
from recsys.context import RequestContext
from serving.catalog import ItemCatalog, UserProfiles

log = logging.getLogger(__name__)


class Filter(Protocol):
    name: str

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray: ...  # bool mask


@dataclass(frozen=True)
class RequestExclusions:
    """Items the caller excluded, and items already in the basket."""

    name = "request_exclusions"

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        return ~is_member(items, np.concatenate([ctx.exclude, ctx.basket]))


@dataclass(frozen=True)
class AlreadyInteracted:
    name = "already_interacted"
    profiles: UserProfiles

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        return ~is_member(items, self.profiles.seen_items(ctx.user_index))


@dataclass(frozen=True)
class InStock:
    name = "in_stock"
    catalog: ItemCatalog

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        return self.catalog.in_stock[items]


@dataclass(frozen=True)
class SoldInRegion:
    """Items sold in the request's region; no region known -> no restriction."""

    name = "sold_in_region"
    catalog: ItemCatalog

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        if not ctx.region:
            return np.ones(len(items), dtype=bool)
        return self.catalog.sold_in(ctx.region, items)


@dataclass(frozen=True)
class BlockedCategories:
    """Items of the categories named in serving.blocked_categories (e.g. adult, tobacco)."""

    name = "blocked_categories"
    blocked: np.ndarray  # bool per item

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        return ~self.blocked[items]


def _blocked_categories(
    catalog: ItemCatalog, profiles: UserProfiles, config: ServingConfig
) -> BlockedCategories:
    unknown = [c for c in config.blocked_categories if c not in catalog.category_names]
    if unknown:  # a category may leave the catalog between bundles; not fatal, but say so
        log.warning("serving.blocked_categories: %s not in this bundle's catalog", unknown)
    return BlockedCategories(catalog.items_in_categories(config.blocked_categories))


FilterFactory = Callable[[ItemCatalog, UserProfiles, ServingConfig], Filter]
FILTER_FACTORIES: dict[str, FilterFactory] = {
    "request_exclusions": lambda catalog, profiles, config: RequestExclusions(),
    "already_interacted": lambda catalog, profiles, config: AlreadyInteracted(profiles),
    "in_stock": lambda catalog, profiles, config: InStock(catalog),
    "sold_in_region": lambda catalog, profiles, config: SoldInRegion(catalog),
    "blocked_categories": _blocked_categories,
}


def apply_filters(
    filters: tuple[Filter, ...], ctx: RequestContext, items: np.ndarray
) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of items every filter keeps, and how many each filter removed (in order).
    Each filter sees only the items the filters before it kept."""
    kept = np.ones(len(items), dtype=bool)
    remaining = items
    removed: dict[str, int] = {}
    for flt in filters:
        keep = flt.keep(ctx, remaining)
        removed[flt.name] = len(remaining) - int(np.count_nonzero(keep))
        if removed[flt.name]:  # a filter that removed nothing changes nothing
            kept[kept] = keep
            remaining = remaining[keep]
    return kept, removed
