"""The contract every candidate generator keeps, and the registry that names them.

A generator module registers a factory under its name (or a name prefix, for families such
as the tops "top_<metric>_<window>" and the i2i kinds "i2i_<kind>"); `serving.generators`
in the config picks by name. The name is also the `source` an item carries in the response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from recsys.components import add_once
from recsys.config import Config
from recsys.context import Candidates, RequestContext


class Generator(Protocol):
    name: str  # travels to the response as the source of each item

    def generate(self, ctx: RequestContext, budget: int) -> Candidates: ...


# (bundle, config, the configured name) -> the generator over that bundle
GeneratorFactory = Callable[[Any, Config, str], Generator]


@dataclass(frozen=True)
class GeneratorKind:
    name: str  # the generator's name, or the prefix of a family's names
    make: GeneratorFactory
    prefix: bool = False  # a family: every name that starts with `name`
    example: str = ""  # a valid name of a family, for error messages


GENERATORS: dict[str, GeneratorKind] = {}


def register_generator(
    name: str, make: GeneratorFactory, *, prefix: bool = False, example: str = ""
) -> None:
    add_once(GENERATORS, name, GeneratorKind(name, make, prefix, example), "generator")


def make_generator(name: str, bundle: Any, config: Config) -> Generator:
    """The generator `name` over `bundle`; an unknown name is a ValueError listing the
    known ones."""
    kind = GENERATORS.get(name)
    if kind is None:
        kind = next((k for k in GENERATORS.values() if k.prefix and name.startswith(k.name)), None)
    if kind is None:
        known = [k.example or f"{k.name}..." if k.prefix else k.name for k in GENERATORS.values()]
        raise ValueError(
            f"serving.generators: unknown generator {name!r}; known: {', '.join(known)}"
        )
    return kind.make(bundle, config, name)
