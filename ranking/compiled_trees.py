"""LightGBM trees compiled to native code for serving (lleaves, through LLVM).

LightGBM's own predict converts every row to a sparse feature vector before it walks the
trees: about 1 µs per row on this machine, 0.5 ms for a request's 330 candidates x 33 trees.
The compiled forest reads the dense rows directly: 0.04 ms for the same call, with raw
scores equal to LightGBM's bit for bit (same float64 thresholds, same NaN routing).

Compiling takes seconds (1.6 s for 33 trees, 5 s for 102); the machine code is cached
between processes (ranking.native_cache) under a key of the model text, the lleaves
version and the host CPU.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ranking.native_cache import cache_key, cached_build, host_cpu

Predict = Callable[[np.ndarray], np.ndarray]


def compile_forest(model_text: str, cache_dir: Path | None) -> Predict:
    """A function (n, F) float array -> (n,) float64 raw scores, for the LightGBM model in
    `model_text` (the text `Booster.model_to_string` writes)."""
    import lleaves

    with tempfile.TemporaryDirectory(prefix="recsys-forest-") as scratch:
        model_file = Path(scratch) / "model.txt"
        model_file.write_text(model_text)
        model = lleaves.Model(model_file=str(model_file))
        if cache_dir is None:
            model.compile(raw_score=True)
        else:
            key = cache_key(model_text, version("lleaves"), host_cpu())
            cached = cached_build(
                Path(cache_dir) / f"forest-{key}.o",
                lambda partial: model.compile(cache=str(partial), raw_score=True),
                "compiled LightGBM forest",
            )
            model.compile(cache=str(cached), raw_score=True)  # loads the cached machine code

    def predict(dense: np.ndarray) -> np.ndarray:
        return model.predict(dense, n_jobs=1)  # one thread: serving runs one per request

    return predict
