"""Generator names -> runtime generator objects of one bundle, through the registry every
generator module adds itself to (`candidates.base.register_generator`)."""

from __future__ import annotations

from candidates.base import Generator, make_generator
from recsys.config import Config
from recsys.loaded_bundle import LoadedBundle
from serving.runtime import import_components


def make_generators(
    bundle: LoadedBundle, config: Config, names: tuple[str, ...]
) -> list[Generator]:
    """The generators named, in order; an unknown name is a ValueError listing known ones."""
    import_components(config)
    return [make_generator(name, bundle, config) for name in names]
