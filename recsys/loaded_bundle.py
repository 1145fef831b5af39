"""A loaded, read-only model bundle: everything one request needs, swapped whole.

What a bundle holds is the set of registered components (`recsys.components`): each model's
module registers how it is fitted, saved and loaded, and `bundle.<name>` is its value (for
example `bundle.als`, `bundle.i2i`, `bundle.rankers`). Nothing here lists them by hand. The
modules that register components sit on higher floors: `serving.runtime.load_bundle` imports
them before it loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.components import COMPONENTS, Component, saved_components
from recsys.config import Config
from recsys.ids import IdMap
from recsys.new_items import NewItems

IDS_DIR = "ids"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"


@dataclass(frozen=True)
class LoadedBundle:
    version: str
    users: IdMap  # the models' users
    items: IdMap
    parts: Mapping[str, Any]  # component name -> its fitted value
    # the items the nightly built it with, where serving has grown it since by items the
    # event log brought (`grown`); None: `items` are the nightly's
    nightly_items: IdMap | None = None

    def __getattr__(self, name: str) -> Any:
        parts = self.__dict__.get("parts", {})  # absent while pickle rebuilds an instance
        if name in parts:
            return parts[name]
        raise AttributeError(f"the bundle has no component {name!r}")

    def replaced(self, **parts: Any) -> LoadedBundle:
        """A copy with some components replaced (the rankers, after nightly trains them)."""
        unknown = sorted(set(parts) - set(self.parts))
        if unknown:
            raise ValueError(f"the bundle has no component {unknown[0]!r} to replace")
        return LoadedBundle(
            self.version, self.users, self.items, {**self.parts, **parts}, self.nightly_items
        )

    @property
    def items_at_nightly(self) -> IdMap:
        return self.nightly_items if self.nightly_items is not None else self.items

    def cannot_grow(self) -> str | None:
        """The first component that cannot take new items (it registers no `grow`)."""
        for name in self.parts:
            component = COMPONENTS.get(name)
            if component is None or component.grow is None:
                return name
        return None

    def grown(self, new: NewItems) -> LoadedBundle:
        """A copy that knows `new` items as indices new.first.. (recsys.new_items): every
        component appends what it holds per item. A ValueError names a component that
        cannot, or ids the bundle already knows; this bundle is left as it was."""
        if new.first != len(self.items):
            raise ValueError(f"new items start at {new.first}; the bundle has {len(self.items)}")
        items = IdMap.from_values(new.ids, base=self.items)
        if len(items) != new.end:
            raise ValueError("new items: ids repeat each other or items the bundle knows")
        unable = self.cannot_grow()
        if unable is not None:
            raise ValueError(f"the bundle component {unable!r} cannot take new items")
        parts = {
            name: None if value is None else COMPONENTS[name].grow(value, new)
            for name, value in self.parts.items()
        }
        return LoadedBundle(self.version, self.users, items, parts, self.items_at_nightly)

    @classmethod
    def load(cls, directory: Path, version: str, config: Config) -> LoadedBundle:
        """Every registered component from its sub-directory (their modules imported)."""
        users, items = load_ids(directory)
        return cls(
            version=version,
            users=users,
            items=items,
            parts={
                component.name: _load(component, directory, config)
                for component in saved_components()
            },
        )

    def save(self, directory: Path) -> None:
        (directory / IDS_DIR).mkdir(parents=True)
        self.users.save(directory / IDS_DIR / USERS_FILE)
        self.items.save(directory / IDS_DIR / ITEMS_FILE)
        for component in saved_components():
            value = self.parts[component.name]
            (directory / component.subdirectory).mkdir(parents=True)
            if value is not None:  # a component that did not apply (EASE on no items)
                component.save(value, directory / component.subdirectory)


def load_ids(directory: Path) -> tuple[IdMap, IdMap]:
    """A bundle's user and item id maps alone (what a worker that needs no model reads)."""
    return (
        IdMap.load(directory / IDS_DIR / USERS_FILE),
        IdMap.load(directory / IDS_DIR / ITEMS_FILE),
    )


def _load(component: Component, directory: Path, config: Config) -> Any:
    where = directory / component.subdirectory
    if not where.is_dir() and component.absent is not None:
        return component.absent()
    if not where.is_dir():
        raise FileNotFoundError(
            f"{directory.name}: no {component.subdirectory}/ for the bundle component "
            f"{component.name!r} (a bundle built before it was added: run `recsys nightly`)"
        )
    return component.load(where, config)
