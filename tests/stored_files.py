"""Saved files rewritten the way an older version or a damaged disk leaves them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def resave_npz(
    path: Path,
    drop: tuple[str, ...] = (),
    **change: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Rewrite the .npz at `path` without the arrays named in `drop`, and with each array
    named in `change` replaced by the function's result on it."""
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files if name not in drop}
    for name, changed in change.items():
        arrays[name] = changed(arrays[name])
    np.savez(path, **arrays)
