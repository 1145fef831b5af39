"""Imports run one way (DESIGN.md §2): a package never imports one above it.

Floors, from the ground up: the core (`recsys`: typed config, bundle format, ids, schemas,
request context and candidate sets, array helpers, metrics) and the generated stubs; the
candidate generators; the rankers; serving (the funnel and the runtime); the offline jobs;
the command on the top floor. Every import counts, at the top of a module or inside a
function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {
    "recsys": 0,
    "protos": 0,
    "candidates": 1,
    "ranking": 2,
    "serving": 3,
    "pipelines": 4,
    "recsys_cli": 5,
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every import of one of ours in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
    return {(package, line) for package, line in found if package in FLOORS}


def upward_imports(root: Path = ROOT) -> list[str]:
    wrong = []
    for package, floor in FLOORS.items():
        for path in sorted((root / package).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            for imported, line in sorted(imported_packages(path)):
                if FLOORS[imported] > floor:
                    wrong.append(f"{path.relative_to(root)}:{line} imports {imported}")
    return wrong


def test_no_package_imports_one_above_it() -> None:
    assert upward_imports() == []


def test_the_walk_sees_an_upward_import(tmp_path) -> None:
    """The test above can fail: a core module importing a generator is caught, and so is
    a lazy import inside a function."""
    fake = tmp_path / "recsys"
    fake.mkdir()
    (fake / "bad.py").write_text(
        "import numpy\nfrom recsys.ids import IdMap\n\n"
        "def f():\n    from candidates.als import ALSGenerator\n"
    )
    assert upward_imports(tmp_path) == ["recsys/bad.py:5 imports candidates"]


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_every_floor_exists(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists() or package == "protos"
