"""Bundle components: each part of a bundle says how it is fitted, saved and loaded, so that
adding one (a new generator's model, say) touches the one file that registers it (issue
"One-way layers"; the registries of `implicit` and product-mixer).

The core only keeps the registry: the components live on the floors above and register
themselves when their module is imported (`import_modules`). A bundle is built by fitting
every registered component in dependency order (`fit_order`) and loaded by loading every
saved one from its sub-directory.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from recsys.config import Config
from recsys.dataset import Dataset
from recsys.interactions import TrainingData
from recsys.new_items import NewItems

T = TypeVar("T")


@dataclass(frozen=True)
class FitInputs:
    """What a component's fit sees: the dataset, its arrays, the config, and the components
    fitted before it (those it names in `after`, by name)."""

    dataset: Dataset
    data: TrainingData
    config: Config
    built: Mapping[str, Any]


def holds_no_items(value: T, new: NewItems) -> T:
    """`Component.grow` of a component with nothing to append for new items."""
    return value


def _save(value: Any, directory: Path) -> None:
    value.save(directory)


@dataclass(frozen=True)
class Component:
    """One part of a bundle. `load` returns what `fit` returned after a save; a component
    with `saved=False` is fitted for the components after it and never stored (the iALS
    model inside the ANN-indexed generator, for instance)."""

    name: str  # the bundle attribute (`bundle.<name>`); also the sub-directory by default
    fit: Callable[[FitInputs], Any]
    load: Callable[[Path, Config], Any] | None = None
    save: Callable[[Any, Path], None] = _save
    after: tuple[str, ...] = ()  # components whose fitted value fit() reads from `built`
    saved: bool = True
    directory: str = ""  # the bundle's sub-directory; "" = name
    step: str = ""  # the build step's name in progress bars and timings; "" = name
    # what a bundle built before this component existed holds instead (an optional model,
    # e.g. a session model nobody asked for); None: such a bundle is refused, rebuild it
    absent: Callable[[], Any] | None = None
    # the value with the items the event log brought since the bundle appended (serving grows
    # a bundle between nightlies: recsys.new_items); None: the component cannot, and a
    # bundle holding it is not grown. `holds_no_items` for those with nothing per item
    grow: Callable[[Any, NewItems], Any] | None = None

    @property
    def subdirectory(self) -> str:
        return self.directory or self.name

    @property
    def step_name(self) -> str:
        return self.step or self.name


COMPONENTS: dict[str, Component] = {}


def add_once(registry: dict[str, T], name: str, entry: T, what: str) -> None:
    """Put `entry` in one of the registries (components, generators, rankers) under `name`.
    The same entry again is harmless; another one is an error: two modules must not silently
    fight over one name."""
    known = registry.get(name)
    if known is not None and known != entry:
        raise ValueError(f"{what} {name!r} is registered twice")
    registry[name] = entry


def register_component(component: Component) -> Component:
    if component.saved and component.load is None:
        raise ValueError(f"bundle component {component.name!r} is saved but has no load")
    add_once(COMPONENTS, component.name, component, "bundle component")
    return component


def fit_order() -> list[Component]:
    """Every registered component, each after those it reads; otherwise in registration
    order. A missing or circular dependency is a ValueError naming it."""
    ordered: list[Component] = []
    state: dict[str, str] = {}

    def visit(name: str, wanted_by: str) -> None:
        if name not in COMPONENTS:
            raise ValueError(
                f"bundle component {wanted_by!r} reads {name!r}, which no module registers"
            )
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"bundle components depend on each other in a circle at {name!r}")
        state[name] = "visiting"
        for dependency in COMPONENTS[name].after:
            visit(dependency, name)
        state[name] = "done"
        ordered.append(COMPONENTS[name])

    for name in list(COMPONENTS):
        visit(name, name)
    return ordered


def saved_components() -> list[Component]:
    return [component for component in fit_order() if component.saved]


_WALKED: set[str] = set()  # packages whose modules are all imported: no second disk walk


def import_modules(packages: Iterable[ModuleType], extra: Iterable[str] = ()) -> None:
    """Import every module of `packages` (their registrations run on import) and the
    extension modules named in the config (`[extensions] modules`). Called whenever a
    pipeline, a bundle or a cascade is made, so each package is walked once per process."""
    for package in packages:
        if package.__name__ in _WALKED:
            continue
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
        _WALKED.add(package.__name__)
    for name in extra:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"extensions.modules: cannot import {name!r}: {err}") from err
