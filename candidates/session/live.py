"""Session model weights that move between nightlies (issue "Streaming session
recommenders", §V.A: "offline + online training").

The nightly's bundle holds SSRM as trained, with a reservoir sample of its training sessions.
The session updater (pipelines.session_updater) trains further on new sessions and
publishes each new set of weights the way bundles are published, in a root of its own per
bundle version, `<artifacts>/session_models/<bundle version>/`: a staged directory with a
manifest of checksums, renamed into place, then the `current` pointer moved atomically.
Serving processes poll that pointer with the bundle's and swap the weights in (`LiveSSRM`):
plain numpy arrays, so a damaged file is refused with a message, never a crash, and the
weights in service stay.
"""

from __future__ import annotations

import logging
from pathlib import Path

from candidates.session.reservoir import SavedReservoir
from candidates.session.ssrm import SSRMModel
from recsys.bundle import BundleError, Manifest, current_version, verify_bundle

log = logging.getLogger(__name__)

SESSION_MODELS_DIR = "session_models"
MODEL_DIR = "ssrm"  # inside a published version


def session_models_root(artifacts_root: str | Path, bundle_version: str) -> Path:
    return Path(artifacts_root) / SESSION_MODELS_DIR / bundle_version


def read_published(directory: Path, n_items: int) -> tuple[Manifest, SSRMModel]:
    """A publication's manifest and weights, verified against its checksums and the bundle's
    catalogue (`n_items`); BundleError or ValueError naming what is wrong."""
    manifest = verify_bundle(directory)
    model = SSRMModel.load(directory / MODEL_DIR)
    if model is None or model.n_items != n_items:
        raise BundleError(
            f"{directory}: weights for {model.n_items if model else 0} items, the bundle has "
            f"{n_items}"
        )
    return manifest, model


class LiveSSRM:
    """The bundle's SSRM, replaced by the updater's newest published weights. Readers take
    `.model` once per use (a reference swap: a request never sees half a model)."""

    def __init__(self, model: SSRMModel | None, reservoir: SavedReservoir | None = None) -> None:
        self.model = model
        self.reservoir = reservoir
        self.published: str | None = None  # the published version in service; None: the bundle's
        self._refused: set[str] = set()
        self._bad_pointer: str | None = None  # the last unusable `current`, logged once

    def save(self, directory: Path) -> None:
        if self.model is not None:
            self.model.save(directory)
        if self.reservoir is not None:
            self.reservoir.save(directory)

    @classmethod
    def load(cls, directory: Path) -> LiveSSRM:
        return cls(SSRMModel.load(directory), SavedReservoir.load(directory))

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
            _, model = read_published(root / version, self.model.n_items)
        except Exception as err:  # whatever is wrong with the files: keep the weights in service
            self._refused.add(version)
            log.error("refusing session weights %s, keeping %s: %s", version, self.published, err)
            return False
        self.model, self.published = model, version
        log.info("serving session weights %s of bundle %s", version, bundle_version)
        return True
