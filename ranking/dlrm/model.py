"""The heavy ranker's model: DLRM (seed 000, "Описание базовой модели ...": Naumov et al.'s DLRM,
"Рисунок 5. Архитектура DLRM") with the seed's improvements ("Описание улучшенной модели ...").

Model, in the composed parts of torchrec's `models/dlrm.py`:
- DenseArch: dense features, NaN imputed and flagged, standardised, through the bottom MLP
  (Linear, optional BatchNorm, ReLU, optional Dropout) down to `embedding_dim`;
- SparseArch: one embedding table per sparse column ("эмбеддинг-таблицы"), row 0 = unknown;
- InteractionArch: the dot products of every pair of {bottom output, each embedding} (the
  "машины факторизации" second-order terms, upper triangle without the diagonal) next to the
  bottom output;
- OverArch: the top MLP down to one logit; probability = sigmoid(logit).

The seed's improvements: Dropout, formula (1), and BatchNorm, formulas (2)-(3), from the
config; the hybrid with matrix factorisation, formula (5) R ≈ P Qᵀ: ALS factors initialise the
user and item tables (`mf_embeddings`). The exported forms are in ranking.dlrm.export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ranking.frame import RankingFrame
from recsys.config import DLRMConfig

PREDICT_BATCH = 65_536  # rows per forward pass in predict; bounds the activations' memory


# ------------------------------------------------------------------------------ the model


def _mlp(
    width_in: int, hidden: tuple[int, ...], dropout: float, batch_norm: bool
) -> tuple[list[nn.Module], int]:
    """Hidden layers: Linear, BatchNorm (formulas (2)-(3)), ReLU, Dropout (formula (1))."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(width_in, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width_in = width
    return layers, width_in


class DenseArch(nn.Module):
    """Bottom MLP over the dense features, ending in `embedding_dim` (ReLU, as in Naumov's)."""

    def __init__(
        self, stats: DenseStats, hidden: tuple[int, ...], dim: int, dropout: float, bn: bool
    ) -> None:
        super().__init__()
        # Non-persistent: the statistics travel in the JSON meta, the state holds weights only.
        self.register_buffer("mean", torch.tensor(stats.mean), persistent=False)
        self.register_buffer("std", torch.tensor(stats.std), persistent=False)
        self.register_buffer("flagged", torch.tensor(stats.flagged, dtype=torch.int64), False)
        layers, width = _mlp(len(stats.mean) + len(stats.flagged), hidden, dropout, bn)
        self.mlp = nn.Sequential(*layers, nn.Linear(width, dim), nn.ReLU())

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(dense)
        # Counts, prices and ages are heavy-tailed; DLRM's reference pipeline feeds log(x + 1)
        # of its dense counts. The signed form also keeps negative scores (ALS dot) usable.
        dense = torch.sign(dense) * torch.log1p(torch.abs(dense))
        # A missing value becomes the training mean (0 after standardising) and its own 0/1
        # flag says it was missing, so the net can tell "missing" from "equal to the mean".
        standard = torch.where(missing, torch.zeros_like(dense), (dense - self.mean) / self.std)
        flags = missing[:, self.flagged].to(dense.dtype)
        return self.mlp(torch.cat([standard, flags], dim=1))


class SparseArch(nn.Module):
    """One table per sparse column; `sparse=True` gradients touch only the looked-up rows."""

    def __init__(self, cardinalities: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, dim, sparse=True) for n in cardinalities)
        for table in self.tables:
            # Unit-scale rows would make the initial dot products O(√dim); 1/√dim keeps them O(1).
            nn.init.normal_(table.weight, std=dim**-0.5)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        embedded = [table(sparse[:, i]) for i, table in enumerate(self.tables)]
        return torch.stack(embedded, dim=1)  # (batch, columns, dim)


class StackedSparseArch(nn.Module):
    """SparseArch for inference: the tables stacked into one, each column's ids shifted by
    its table's offset, so a batch's lookups are one gather instead of one per column (at
    serving batch sizes each op's fixed cost outweighs its arithmetic)."""

    def __init__(self, sparse_arch: SparseArch) -> None:
        super().__init__()
        weights = [table.weight.detach() for table in sparse_arch.tables]
        sizes = torch.tensor([0] + [len(w) for w in weights[:-1]], dtype=torch.int64)
        self.register_buffer("offsets", torch.cumsum(sizes, 0))
        self.table = nn.Parameter(torch.cat(weights), requires_grad=False)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(sparse + self.offsets, self.table)  # (batch, columns, dim)


class InteractionArch(nn.Module):
    """Naumov's "dot" interaction: ⟨x_i, x_j⟩ for i < j over {bottom output, embeddings}."""

    def __init__(self, n_sparse: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(n_sparse + 1, n_sparse + 1, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    @staticmethod
    def width(n_sparse: int, dim: int) -> int:
        return dim + (n_sparse + 1) * n_sparse // 2

    def forward(self, bottom: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        vectors = torch.cat([bottom.unsqueeze(1), embedded], dim=1)
        dots = torch.bmm(vectors, vectors.transpose(1, 2))
        return torch.cat([bottom, dots[:, self.rows, self.cols]], dim=1)


class OverArch(nn.Module):
    """Top MLP down to one logit."""

    def __init__(self, width_in: int, hidden: tuple[int, ...], dropout: float, bn: bool) -> None:
        super().__init__()
        layers, width = _mlp(width_in, hidden, dropout, bn)
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).squeeze(1)


class DLRM(nn.Module):
    """Scores only: (dense (n, F) float32 with NaN, sparse (n, S) int64) -> logits (n,)."""

    def __init__(self, spec: DLRMSpec) -> None:
        super().__init__()
        c = spec.config
        dim = c.embedding_dim
        self.dense_arch = DenseArch(spec.stats, c.bottom_mlp, dim, c.dropout, c.batch_norm)
        self.sparse_arch = SparseArch(spec.sparse_cardinalities, dim)
        self.interaction_arch = InteractionArch(len(spec.sparse_names))
        width = InteractionArch.width(len(spec.sparse_names), dim)
        self.over_arch = OverArch(width, c.top_mlp, c.dropout, c.batch_norm)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        bottom = self.dense_arch(dense)
        embedded = self.sparse_arch(sparse)
        return self.over_arch(self.interaction_arch(bottom, embedded))


# --------------------------------------------------------------------- what the model knows


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) log(1 + |x|): the dense inputs' compression (DenseArch.forward does the same)."""
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass(frozen=True)
class DenseStats:
    """Training statistics of the dense features, part of the model (serving uses them)."""

    mean: list[float]  # over the present values
    std: list[float]  # 1 where a feature is constant or never present
    flagged: list[int]  # features with a NaN in training: each gets an "is missing" input

    @classmethod
    def of(cls, dense: np.ndarray, block: int = 1 << 20) -> DenseStats:
        # Two passes over row blocks in float64: exact enough, and no (n, F) float64 copy.
        count = np.zeros(dense.shape[1], dtype=np.int64)
        total = np.zeros(dense.shape[1])
        for start in range(0, len(dense), block):
            part = signed_log1p(dense[start : start + block].astype(np.float64))
            present = ~np.isnan(part)
            count += present.sum(axis=0)
            total += np.where(present, part, 0.0).sum(axis=0, dtype=np.float64)
        mean = total / np.maximum(count, 1)
        squares = np.zeros(dense.shape[1])
        for start in range(0, len(dense), block):
            part = signed_log1p(dense[start : start + block].astype(np.float64))
            squares += (np.nan_to_num(part - mean, nan=0.0) ** 2).sum(axis=0)
        std = np.sqrt(squares / np.maximum(count, 1))
        std = np.where(std > 1e-12, std, 1.0)
        return cls(
            mean=[float(v) for v in mean.astype(np.float32)],
            std=[float(v) for v in std.astype(np.float32)],
            flagged=[int(v) for v in np.flatnonzero(count < len(dense))],
        )


@dataclass(frozen=True)
class DLRMSpec:
    """Everything needed to rebuild the network, besides the weights."""

    dense_names: tuple[str, ...]
    sparse_names: tuple[str, ...]
    sparse_cardinalities: tuple[int, ...]
    config: DLRMConfig
    stats: DenseStats

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, meta: dict) -> DLRMSpec:
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
        # Models saved before the tables had their own rate: a training setting, not needed to
        # rebuild the network, so such models still load.
        config.setdefault("embedding_learning_rate", config.get("learning_rate"))
        return cls(
            dense_names=tuple(meta["dense_names"]),
            sparse_names=tuple(meta["sparse_names"]),
            sparse_cardinalities=tuple(int(n) for n in meta["sparse_cardinalities"]),
            config=DLRMConfig(**config),
            stats=DenseStats(**meta["stats"]),
        )

    def check(self, frame: RankingFrame, what: str) -> None:
        """`frame` has this model's columns, finite dense values and ids inside the tables."""
        if frame.dense_names != self.dense_names:
            raise ValueError(
                f"{what}: dense features {list(frame.dense_names)} differ from the model's "
                f"{list(self.dense_names)}"
            )
        if frame.sparse_names != self.sparse_names:
            raise ValueError(
                f"{what}: sparse features {list(frame.sparse_names)} differ from the model's "
                f"{list(self.sparse_names)}"
            )
        if not len(frame):
            return
        if np.isinf(frame.dense).any():
            raise ValueError(f"{what}: dense features hold ±inf (use NaN for missing)")
        if self.sparse_names:
            low, high = frame.sparse.min(axis=0), frame.sparse.max(axis=0)
            bad = (low < 0) | (high >= np.asarray(self.sparse_cardinalities))
            if bad.any():
                column = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{what}: sparse column {self.sparse_names[column]!r} holds ids in "
                    f"[{low[column]}, {high[column]}], the table has "
                    f"{self.sparse_cardinalities[column]} rows"
                )


# ------------------------------------------------------------------- hybrid with MF


def mf_embeddings(factors: dict[str, np.ndarray], dim: int) -> dict[str, np.ndarray]:
    """ALS factors as `dim`-wide embedding rows (seed 000, hybrid filtering with matrix
    factorisation, formula (5) R ≈ P Qᵀ), keeping the dot products P Qᵀ the tables start from.

    f ≤ dim: zero-pad, dot products unchanged. f > dim, the pair (P, Q): the best rank-`dim`
    factorisation of P Qᵀ (Eckart–Young): P = Q_p R_p, Q = Q_q R_q (thin QR), R_p R_qᵀ = A S Bᵀ
    (SVD of the small core), P' = Q_p A_d √S_d, Q' = Q_q B_d √S_d. f > dim, one table Q (the
    rankers learn without user ids): its projection on the top `dim` right singular vectors,
    Q' = Q V_d, the best rank-`dim` approximation of its dot products Q Qᵀ.
    """
    widths = {name: f.shape[1] for name, f in factors.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"pretrained factors differ in width: {widths}")
    if not factors or next(iter(widths.values())) <= dim:
        return {name: _pad(f.astype(np.float64), dim) for name, f in factors.items()}
    if len(factors) == 1:
        ((name, q),) = factors.items()
        _, _, vt = np.linalg.svd(q.astype(np.float64), full_matrices=False)
        return {name: q.astype(np.float64) @ vt[:dim].T}
    if len(factors) != 2:
        raise ValueError(
            f"factors wider than embedding_dim={dim} are reduced alone or as a pair (P, Q) of "
            f"R ≈ P Qᵀ; got {len(factors)} tables: {sorted(factors)}"
        )
    (name_p, p), (name_q, q) = factors.items()
    basis_p, core_p = np.linalg.qr(p.astype(np.float64))
    basis_q, core_q = np.linalg.qr(q.astype(np.float64))
    a, s, bt = np.linalg.svd(core_p @ core_q.T, full_matrices=False)
    root = np.sqrt(s[:dim])
    return {
        name_p: _pad(basis_p @ (a[:, :dim] * root), dim),
        name_q: _pad(basis_q @ (bt[:dim].T * root), dim),
    }


def _pad(matrix: np.ndarray, dim: int) -> np.ndarray:
    return np.pad(matrix, ((0, 0), (0, dim - matrix.shape[1])))


def init_from_mf(model: DLRM, spec: DLRMSpec, pretrained: dict[str, np.ndarray]) -> None:
    """Row r + 1 of a table gets factor row r (row 0 is "unknown" and stays zero); rows past
    the factors (ids newer than the ALS model) keep their random start."""
    unknown = sorted(set(pretrained) - set(spec.sparse_names))
    if unknown:
        raise ValueError(f"pretrained names {unknown} are not sparse columns {spec.sparse_names}")
    for name, factors in pretrained.items():
        if factors.ndim != 2 or not np.isfinite(factors).all():
            raise ValueError(f"pretrained[{name!r}] must be a finite 2-d array")
    rows = mf_embeddings(pretrained, spec.config.embedding_dim)
    for name, values in rows.items():
        column = spec.sparse_names.index(name)
        table = model.sparse_arch.tables[column].weight
        if len(values) + 1 > len(table):
            raise ValueError(
                f"pretrained[{name!r}] has {len(values)} rows, the {name!r} table only "
                f"{len(table) - 1} besides the unknown row"
            )
        with torch.no_grad():
            table[0].zero_()
            table[1 : len(values) + 1] = torch.from_numpy(values.astype(np.float32))


# ---------------------------------------------------------------------- probabilities


def predict_probabilities(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    dense: np.ndarray,
    sparse: np.ndarray,
    device: torch.device,
    batch: int = PREDICT_BATCH,
) -> np.ndarray:
    out = np.empty(len(dense), dtype=np.float32)
    dense_t = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
    sparse_t = torch.from_numpy(np.ascontiguousarray(sparse, dtype=np.int64))
    with torch.inference_mode():
        for start in range(0, len(dense), batch):
            stop = start + batch
            logits = model(dense_t[start:stop].to(device), sparse_t[start:stop].to(device))
            out[start:stop] = torch.sigmoid(logits).cpu().numpy()
    return out
