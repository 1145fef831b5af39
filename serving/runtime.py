"""Loading bundles in a serving process: the registered components' modules are imported
first (the stage packages and the config's extensions), then every component is loaded."""

from __future__ import annotations

from pathlib import Path

import candidates
import ranking
import serving.catalog  # noqa: F401  (registers the catalog and profile components)
from recsys.components import import_modules
from recsys.config import Config
from recsys.loaded_bundle import LoadedBundle


def import_components(config: Config) -> None:
    """Import every module that registers bundle components or generators: the stage
    packages and the config's extension modules."""
    import_modules((candidates, ranking), config.extensions.modules)


def load_bundle(directory: Path, version: str, config: Config) -> LoadedBundle:
    import_components(config)
    return LoadedBundle.load(directory, version, config)
