"""DLRMRanker: fits a DLRM (ranking.dlrm.training), predicts with it, exports it
(ranking.dlrm.export) and stores it as its weights and a JSON meta (ranking.dlrm.model's
DLRMSpec).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ranking.dlrm import training
from ranking.dlrm.export import compile_dlrm, inference_copy, quiet_deprecations
from ranking.dlrm.model import DLRM, PREDICT_BATCH, DLRMSpec, init_from_mf, predict_probabilities
from ranking.frame import RankingFrame
from ranking.rankers import RankerFit, RankerKind, register_ranker
from recsys.config import DLRMConfig, RankingConfig
from recsys.torch_runs import seeded
from recsys.torch_runs import threads as torch_threads

log = logging.getLogger(__name__)

STATE_FILE = "dlrm_state.pt"
META_FILE = "dlrm_meta.json"
FORMAT_VERSION = 1


class DLRMRanker:
    """Fits, predicts, exports and stores a DLRM; `variant` says which inference form it is."""

    name = "dlrm"

    def __init__(
        self,
        model: nn.Module,
        spec: DLRMSpec,
        variant: str = "float32",
        device: torch.device | None = None,
        history: list[dict[str, float]] | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.variant = variant  # float32 | int8 | torchscript | torchscript-int8 | compiled
        self.device = device or torch.device("cpu")
        self.history = history or []

    @classmethod
    def fit(
        cls,
        train: RankingFrame,
        valid: RankingFrame | None,
        config: DLRMConfig,
        pretrained: dict[str, np.ndarray] | None = None,
        device: str | None = None,
        threads: int | None = None,
        show_progress: bool = False,
    ) -> DLRMRanker:
        """Train on `train`, keep the epoch with the best NDCG@10 on `valid` (AUC breaks ties;
        the last epoch without `valid`).

        `pretrained` maps sparse column names (e.g. "user", "item") to ALS factor matrices
        (row r = id r + 1); used when `config.pretrained_mf`. `device` defaults to CUDA when
        available. Bit-for-bit repeatable on CPU for a given `config.random_state`.
        """
        spec = training.spec_for(train, config)
        training.check_training_frames(train, valid, spec, config)
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with seeded(config.random_state, target), torch_threads(threads):
            model = DLRM(spec)
            if pretrained and config.pretrained_mf:
                init_from_mf(model, spec, pretrained)
            elif pretrained:
                log.info("dlrm: pretrained factors given but pretrained_mf is off; ignored")
            model.to(target)
            history = training.train(model, train, valid, config, target, show_progress)
        return cls(model, spec, device=target, history=history)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.dense_names

    def predict(self, frame: RankingFrame, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """Probability per row, float32 (n,)."""
        self.spec.check(frame, "predict")
        return predict_probabilities(self.model, frame.dense, frame.sparse, self.device, batch_size)

    def quantized(self) -> DLRMRanker:
        """INT8 dynamic quantization of every Linear, formula (4) (CPU): weights stored as int8,
        activations quantized per batch; embedding tables stay float32."""
        if self.variant != "float32":
            raise ValueError(f"quantize the float32 model, this one is {self.variant}")
        with quiet_deprecations():
            model = torch.ao.quantization.quantize_dynamic(
                inference_copy(self.model), {nn.Linear}, dtype=torch.qint8
            )
        return DLRMRanker(model, self.spec, "int8", torch.device("cpu"), self.history)

    def scripted(self) -> DLRMRanker:
        """TorchScript static graph G(θ) of the eval model (CPU), frozen so the weights are
        constants the graph optimiser can fold; works on the int8 model too."""
        if self.variant == "float32":
            model, variant = inference_copy(self.model), "torchscript"
        elif self.variant == "int8":
            model, variant = self.model, "torchscript-int8"
        else:
            raise ValueError(f"script the float32 or int8 model, this one is {self.variant}")
        with quiet_deprecations():
            frozen = torch.jit.freeze(torch.jit.script(model.eval()))
        return DLRMRanker(frozen, self.spec, variant, torch.device("cpu"), self.history)

    def compiled(self, cache_dir: Path | None = None) -> DLRMRanker:
        """The eval model compiled to native code (ranking.dlrm.export), cached under
        `cache_dir`: the same scores (checked on load) for a fraction of TorchScript's
        per-request cost. Without a compiler, or if compiling fails, the TorchScript model
        serves and the reason is logged: serving slower beats not serving."""
        if self.variant != "float32":
            raise ValueError(f"compile the float32 model, this one is {self.variant}")
        try:
            with quiet_deprecations():
                forward = compile_dlrm(inference_copy(self.model), self._probe(), cache_dir)
        except Exception as error:  # an optional speed-up must never refuse a good bundle
            log.warning("dlrm: serving TorchScript, not compiled code: %s", error)
            return self.scripted()
        return DLRMRanker(forward, self.spec, "compiled", torch.device("cpu"), self.history)

    def _probe(self, rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """A few made-up rows in the model's input space, some values missing."""
        rng = np.random.default_rng(0)
        stats = self.spec.stats
        dense = rng.normal(stats.mean, stats.std, (rows, len(stats.mean))).astype(np.float32)
        dense[rng.random(dense.shape) < 0.1] = np.nan
        sparse = np.stack([rng.integers(0, n, rows) for n in self.spec.sparse_cardinalities], 1)
        return torch.from_numpy(dense), torch.from_numpy(sparse.astype(np.int64))

    def save(self, directory: Path) -> None:
        """Weights (tensors only, loadable with weights_only=True) and JSON meta."""
        if self.variant != "float32":
            raise ValueError(f"save the float32 model and export after load, not {self.variant}")
        directory = Path(directory)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, directory / STATE_FILE)
        meta = {"format": FORMAT_VERSION, **self.spec.to_json(), "history": self.history}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> DLRMRanker:
        directory = Path(directory)
        for file in (META_FILE, STATE_FILE):
            if not (directory / file).is_file():
                raise FileNotFoundError(f"DLRM model file {directory / file} is missing")
        try:
            meta = json.loads((directory / META_FILE).read_text())
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
            spec = DLRMSpec.from_json(meta)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{directory / META_FILE} is not a DLRM meta file: {error}") from error
        target = torch.device(device or "cpu")
        model = DLRM(spec)
        try:
            state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as error:  # torch raises several kinds for a damaged archive
            raise ValueError(f"{directory / STATE_FILE} is not a DLRM state: {error}") from error
        return cls(model.to(target).eval(), spec, device=target, history=meta.get("history"))


def without_user_ids(frame: RankingFrame) -> RankingFrame:
    """Every user as the unknown id 0 with a one-row table: each period bundle numbers its
    users its own way, so a user id means nothing across them; DLRM knows a user by the
    dense features (history, session, ALS) instead, and serving maps every id to 0
    (`KnownIds`)."""
    sparse = frame.sparse.copy()
    sparse[:, frame.sparse_names.index("user")] = 0
    cardinalities = list(frame.sparse_cardinalities)
    cardinalities[frame.sparse_names.index("user")] = 1
    return dataclasses.replace(frame, sparse=sparse, sparse_cardinalities=tuple(cardinalities))


class KnownIds:
    """The serving form's adapter: ids newer than the DLRM's tables (users who arrived after
    it was trained) -> 0, the "unknown" row every table has."""

    def __init__(self, ranker: DLRMRanker) -> None:
        self.ranker = ranker
        self.feature_names = ranker.feature_names
        self.limits = np.asarray(ranker.spec.sparse_cardinalities)

    def predict(self, frame: RankingFrame) -> np.ndarray:
        sparse = np.where(frame.sparse < self.limits, frame.sparse, 0)
        known = dataclasses.replace(
            frame, sparse=sparse, sparse_cardinalities=tuple(int(c) for c in self.limits)
        )
        return self.ranker.predict(known)

    def save(self, directory: Path) -> None:
        raise ValueError("save the trained DLRM, not its serving form")


def _fit(given: RankerFit) -> DLRMRanker:
    # DLRM sees what serving gives it: the previous stage's head (the caller's frames)
    return DLRMRanker.fit(
        without_user_ids(given.train),
        without_user_ids(given.valid),
        given.config.dlrm,
        pretrained={"item": given.item_factors},  # every period bundle shares the items
        threads=1,
        show_progress=given.show_progress,
    )


def _serving(ranker: DLRMRanker, config: RankingConfig, cache_dir: Path | None) -> KnownIds:
    """DESIGN.md §4: native code compiled ahead of time, INT8 dynamic quantization or
    TorchScript for inference; "eager" serves the float32 model as trained."""
    variants = {
        "compiled": lambda: ranker.compiled(cache_dir),
        "int8": lambda: ranker.quantized(),
        "torchscript": lambda: ranker.scripted(),
        "eager": lambda: ranker,
    }
    return KnownIds(variants[config.dlrm_serving]())


register_ranker(
    RankerKind(
        "dlrm",
        fit=_fit,
        load=lambda directory: DLRMRanker.load(directory, device="cpu"),
        serving=_serving,
    )
)
