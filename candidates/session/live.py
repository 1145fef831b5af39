"""Session model weights that move between nightlies (issue "Streaming session
recommenders", §V.A: "offline + online training").

The nightly's bundle holds each session model (SSRM, GAG, MGIA) as trained, and a reservoir
sample of its training sessions. The session updater (pipelines.session_updater) trains
every one of them further on new sessions and publishes each new set of weights the way
bundles are published, in a root of its own per bundle version,
`<artifacts>/session_models/<bundle version>/`: a staged directory (one sub-directory per
model, and the reservoir) with a manifest of checksums, renamed into place, then the
`current` pointer moved atomically. Serving processes poll that pointer with the bundle's
and swap the weights in (`LiveModel`): plain numpy arrays, so a damaged file is refused
with a message, never a crash, and the weights in service stay.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys.bundle import BundleError, Manifest, current_version, verify_bundle

log = logging.getLogger(__name__)

SESSION_MODELS_DIR = "session_models"


def session_models_root(artifacts_root: str | Path, bundle_version: str) -> Path:
    return Path(artifacts_root) / SESSION_MODELS_DIR / bundle_version


@functools.lru_cache(maxsize=8)
def verified_publication(directory: Path) -> Manifest:
    """A publication's manifest, its files checked against their checksums once per process
    (BundleError naming what is wrong, raised again on every call): a publication never
    changes once in place (staged, then renamed), so each session model of a serving
    process, and a resuming updater, read it without hashing every model's files again."""
    return verify_bundle(directory)


def read_published(
    directory: Path, name: str, load: Callable[[Path], Any], n_items: int
) -> tuple[Manifest, Any]:
    """A publication's manifest and the weights of model `name` (None if the publication has
    none), verified against its checksums and the bundle's catalogue (`n_items`);
    BundleError or ValueError naming what is wrong."""
    manifest = verified_publication(directory)
    if not (directory / name).is_dir():
        return manifest, None
    model = load(directory / name)
    if model is None or model.n_items != n_items:
        raise BundleError(
            f"{directory}: {name} weights for {model.n_items if model else 0} items, the "
            f"bundle has {n_items}"
        )
    return manifest, model


class LiveModel:
    """A bundle's session model, replaced by the updater's newest published weights. Readers
    take `.model` once per use (a reference swap: a request never sees half a model)."""

    def __init__(self, name: str, model: Any, load: Callable[[Path], Any]) -> None:
        self.name = name  # the model's sub-directory in a publication
        self.model = model
        self.load_model = load  # directory -> model, or None where there is no file
        self.published: str | None = None  # the published version in service; None: the bundle's
        self._refused: set[str] = set()
        self._bad_pointer: str | None = None  # the last unusable `current`, logged once

    def save(self, directory: Path) -> None:
        if self.model is not None:
            self.model.save(directory)

    def refresh(self, artifacts_root: str | Path, bundle_version: str) -> bool:
        """Swap in the newest weights published for this bundle, if new and sound. True if
        a swap happened; a bad version is logged once and never retried."""
        if self.model is None:
            return False  # nothing trained in the bundle: nothing to update
        root = session_models_root(artifacts_root, bundle_version)
        try:
            version = current_version(root)
        except BundleError as err:
            if str(err) != self._bad_pointer:  # logged once, not on every poll
                self._bad_pointer = str(err)
                log.error("session models: %s", err)
            return False
        if version is None or version == self.published or version in self._refused:
            return False
        try:
            _, model = read_published(
                root / version, self.name, self.load_model, self.model.n_items
            )
        except Exception as err:  # whatever is wrong with the files: keep the weights in service
            self._refused.add(version)
            log.error(
                "refusing %s session weights %s, keeping %s: %s",
                self.name,
                version,
                self.published,
                err,
            )
            return False
        if model is None:  # an updater that does not update this model
            self._refused.add(version)
            return False
        self.model, self.published = model, version
        log.info("serving %s session weights %s of bundle %s", self.name, version, bundle_version)
        return True
