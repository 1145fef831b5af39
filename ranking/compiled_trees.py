"""LightGBM trees compiled to native code for serving (lleaves, through LLVM).

LightGBM's own predict converts every row to a sparse feature vector before it walks the
trees: about 1 µs per row on this machine, 0.5 ms for a request's 330 candidates x 33 trees.
The compiled forest reads the dense rows directly: 0.04 ms for the same call, with raw
scores equal to LightGBM's bit for bit (same float64 thresholds, same NaN routing).

Compiling takes seconds (1.6 s for 33 trees, 5 s for 102), and every serving process loads
each bundle, so the machine code is cached on disk under a key of the model text, the
lleaves version and the host CPU: a second process, or a restart, loads it in milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]


def compile_forest(model_text: str, cache_dir: Path | None) -> Predict:
    """A function (n, F) float array -> (n,) float64 raw scores, for the LightGBM model in
    `model_text` (the text `Booster.model_to_string` writes)."""
    import lleaves
    import llvmlite.binding as llvm

    with tempfile.TemporaryDirectory(prefix="recsys-forest-") as scratch:
        model_file = Path(scratch) / "model.txt"
        model_file.write_text(model_text)
        model = lleaves.Model(model_file=str(model_file))
        if cache_dir is None:
            model.compile(raw_score=True)
        else:
            key = hashlib.sha256(
                "\n".join(
                    (
                        model_text,
                        version("lleaves"),
                        llvm.get_host_cpu_name(),
                        llvm.get_host_cpu_features().flatten(),
                    )
                ).encode()
            ).hexdigest()[:32]
            _compile_cached(model, Path(cache_dir) / f"forest-{key}.o")

    def predict(dense: np.ndarray) -> np.ndarray:
        return model.predict(dense, n_jobs=1)  # one thread: serving runs one per request

    return predict


def _compile_cached(model, cached: Path) -> None:
    """Load `cached` if it is intact; otherwise compile and publish it atomically (with its
    checksum beside it), so a process never loads a file another one is still writing, and
    a damaged file is compiled again rather than loaded as machine code."""
    digest_file = cached.with_suffix(".sha256")
    if cached.is_file() and digest_file.is_file():
        if _sha256(cached) == digest_file.read_text().strip():
            model.compile(cache=str(cached), raw_score=True)
            return
        log.warning("compiled forest %s does not match its checksum; compiling again", cached)
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=cached.parent, prefix=cached.name, suffix=".partial")
    os.close(fd)
    os.unlink(partial)  # lleaves writes the cache only where no file exists
    try:
        model.compile(cache=partial, raw_score=True)
        _replace_text(digest_file, _sha256(Path(partial)))
        os.replace(partial, cached)
    finally:
        Path(partial).unlink(missing_ok=True)
    log.info("compiled the LightGBM forest to %s", cached)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _replace_text(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)
