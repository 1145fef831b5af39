"""Generator names -> runtime generator objects of one bundle.

Every name in `serving.generators` must resolve here; the name is also the `source` an
item carries in the response. Tops have a grammar (candidates.tops), the rest fixed names.
"""

from __future__ import annotations

from collections.abc import Callable

from candidates.base import Generator
from candidates.business import BusinessGenerator
from candidates.ease import EASEGenerator
from candidates.i2i import I2IGenerator
from candidates.quorum import QuorumGenerator
from candidates.sequence import LastItemsGenerator
from recsys.config import I2I_KINDS, Config
from serving.runtime import LoadedBundle


def make_generators(
    bundle: LoadedBundle, config: Config, names: tuple[str, ...]
) -> list[Generator]:
    """The generators named, in order; an unknown name is a ValueError listing known ones."""
    fixed: dict[str, Callable[[], Generator]] = {
        "als": lambda: bundle.als,
        "popularity": lambda: bundle.popularity,
        "quorum": lambda: QuorumGenerator(bundle.quorum, config.quorum),
        "business": lambda: BusinessGenerator(bundle.i2i, config.business),
        "last_items": lambda: LastItemsGenerator(bundle.i2i, config.sequence),
        "ease": lambda: EASEGenerator.of(bundle.ease, bundle.profiles),
        **{f"i2i_{kind}": _i2i(bundle, kind, config) for kind in I2I_KINDS},
    }
    generators = []
    for name in names:
        if name in fixed:
            generators.append(fixed[name]())
        elif name.startswith("top_"):
            generators.append(bundle.tops.generator(name))  # ValueError names the valid ones
        else:
            raise ValueError(
                f"serving.generators: unknown generator {name!r}; known: "
                f"{', '.join(fixed)}, or a top such as {', '.join(bundle.tops.names()[:3])}"
            )
    return generators


def _i2i(bundle: LoadedBundle, kind: str, config: Config) -> Callable[[], Generator]:
    return lambda: I2IGenerator(bundle.i2i, kind, config.i2i)
