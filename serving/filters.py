"""Early filters (seed 004: "критически важно фильтровать кандидатов на ранних стадиях").

Each filter says which candidates it keeps; the pipeline records what each removed.
They run on the union before any ranking, so rankers never spend time on items that
could not be shown, and the list is never cut short by a late filter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from candidates.base import RequestContext
from serving.catalog import ItemCatalog, UserProfiles


class Filter(Protocol):
    name: str

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray: ...  # bool mask


@dataclass(frozen=True)
class RequestExclusions:
    """Items the caller excluded, and items already in the basket."""

    name = "request_exclusions"

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        return ~np.isin(items, ctx.exclude) & ~np.isin(items, ctx.basket)


@dataclass(frozen=True)
class AlreadyInteracted:
    name = "already_interacted"
    profiles: UserProfiles

    def keep(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray:
        return ~np.isin(items, self.profiles.seen_items(ctx.user_index))


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


FILTER_FACTORIES: dict[str, Callable[[ItemCatalog, UserProfiles], Filter]] = {
    "request_exclusions": lambda catalog, profiles: RequestExclusions(),
    "already_interacted": lambda catalog, profiles: AlreadyInteracted(profiles),
    "in_stock": lambda catalog, profiles: InStock(catalog),
    "sold_in_region": lambda catalog, profiles: SoldInRegion(catalog),
}


def apply_filters(
    filters: tuple[Filter, ...], ctx: RequestContext, items: np.ndarray
) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of items every filter keeps, and how many each filter removed (in order)."""
    kept = np.ones(len(items), dtype=bool)
    removed: dict[str, int] = {}
    for flt in filters:
        before = int(kept.sum())
        kept[kept] = flt.keep(ctx, items[kept])
        removed[flt.name] = before - int(kept.sum())
    return kept, removed
