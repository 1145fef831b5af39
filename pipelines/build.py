"""Build every artifact of a bundle from a dataset: the one path for nightly and evaluation.

Each registered component (`recsys.components`) trains offline here, in dependency order,
and answers at runtime from the arrays it saves (DESIGN.md §2: a stage package owns its
models; pipelines only orchestrates).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from tqdm import tqdm

from pipelines.training_data import build_training_data
from recsys.components import FitInputs, fit_order
from recsys.config import Config
from recsys.dataset import Dataset
from recsys.loaded_bundle import LoadedBundle
from serving.runtime import import_components

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BuiltBundle:
    bundle: LoadedBundle
    seconds: dict[str, float]  # wall time per step, in build order


def build_bundle(dataset: Dataset, config: Config, *, show_progress: bool = False) -> BuiltBundle:
    """Train every component on `dataset` and return the in-memory bundle (version "")."""
    import_components(config)
    components = fit_order()
    seconds: dict[str, float] = {}
    steps = tqdm(total=1 + len(components), desc="build", unit="step", disable=not show_progress)

    def timed(name: str, make: Callable[[], T]) -> T:
        steps.set_postfix_str(name)
        start = time.perf_counter()
        value = make()
        seconds[name] = time.perf_counter() - start
        log.info("built %s in %.1f s", name, seconds[name])
        steps.update()
        return value

    data = timed("training data", lambda: build_training_data(dataset, config))
    built: dict[str, Any] = {}
    for component in components:
        given = FitInputs(dataset=dataset, data=data, config=config, built=dict(built))
        built[component.name] = timed(component.step_name, partial(component.fit, given))
    steps.close()
    parts = {c.name: built[c.name] for c in components if c.saved}
    bundle = LoadedBundle(version="", users=data.users, items=data.items, parts=parts)
    return BuiltBundle(bundle=bundle, seconds=seconds)
