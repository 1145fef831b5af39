"""The heavy ranker: DLRM (seed 000, "Описание базовой модели ...": Naumov et al.'s DLRM,
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
user and item tables (`mf_embeddings`); INT8 dynamic quantization, formula (4) Q(x) =
round(x / Δ) Δ (`DLRMRanker.quantized`); TorchScript's static graph G(θ) with BatchNorm folded
into the preceding Linear ("слияние слоев", `DLRMRanker.scripted`).

Training lives apart from the model (`_train`): Adam on the dense weights, SparseAdam on the
tables at their own learning rate (only the looked-up rows move, so a step does not touch
1M-row tables); BCE on the labels, BPR on (positive, negative) pairs of one request, or
ListNet's softmax cross-entropy over each request's rows; the epoch with the best validation
NDCG@10 (the metric the cascade is judged by) is kept.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval
from tqdm.auto import tqdm

from ranking.frame import RankingFrame, top_lists
from recsys.config import DLRMConfig
from recsys.metrics import auc, logloss, ndcg_at_k

log = logging.getLogger(__name__)

STATE_FILE = "dlrm_state.pt"
META_FILE = "dlrm_meta.json"
FORMAT_VERSION = 1
PREDICT_BATCH = 65_536  # rows per forward pass in predict; bounds the activations' memory
LOSSES = ("bce", "bpr", "listwise")
VALID_K = 10  # the epoch kept is the one with the best validation NDCG at this cut-off
# How far exported models may drift from float32 eager, in probabilities (tests hold them).
# Dynamic int8 quantizes each Linear's input per batch with one scale; the top MLP's input
# mixes bottom outputs (~0.1) with dot products (~10), so a few rows move by a few hundredths
# while the mean drift and the ranking barely change (measured: max 0.06, mean 0.005).
INT8_MAX_DRIFT = 0.1
INT8_MEAN_DRIFT = 0.01
SCRIPT_MAX_DRIFT = 1e-5  # folding BatchNorm into the Linear reorders float32 sums


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


def _init_from_mf(model: DLRM, spec: DLRMSpec, pretrained: dict[str, np.ndarray]) -> None:
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


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class _Tensors:
    dense: torch.Tensor
    sparse: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, frame: RankingFrame) -> _Tensors:
        return cls(
            torch.from_numpy(np.ascontiguousarray(frame.dense, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(frame.sparse, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(frame.labels, dtype=np.float32)),
        )


def bpr_pairs(
    groups: np.ndarray, positive: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each positive row, one negative row of the same request drawn uniformly; positives
    of requests without negatives are left out. Vectorised over all requests at once."""
    pos_rows = np.flatnonzero(positive)
    neg_rows = np.flatnonzero(~positive)
    # groups are non-decreasing, so each request's negatives are one contiguous run
    neg_groups = groups[neg_rows]
    start = np.searchsorted(neg_groups, groups[pos_rows], side="left")
    count = np.searchsorted(neg_groups, groups[pos_rows], side="right") - start
    has = count > 0
    draw = (rng.random(int(has.sum())) * count[has]).astype(np.int64)
    return pos_rows[has], neg_rows[start[has] + draw]


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    # Near-equal batches, never a lone row (BatchNorm cannot normalise a batch of one).
    count = max(1, min(math.ceil(n / batch_size), n // 2))
    return np.array_split(rng.permutation(n), count)


def request_batches(
    groups: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Row indices of whole requests in random order, packed into batches of about
    `batch_size` rows: a batch takes the requests that start within its `batch_size` rows."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[starts, len(groups)])
    order = rng.permutation(len(starts))
    placed = np.cumsum(sizes[order]) - sizes[order]  # where each request starts in the epoch
    rows = np.repeat(starts[order] - placed, sizes[order]) + np.arange(len(groups))
    cuts = placed[np.flatnonzero(np.diff(placed // batch_size)) + 1]
    return np.split(rows, cuts)


@dataclass(frozen=True)
class _Batch:
    rows: torch.Tensor  # into the training tensors
    n_pairs: int = 0  # BPR: the first n_pairs rows are positives, the rest their negatives
    request: torch.Tensor | None = None  # listwise: each row's request, numbered 0.. in batch


def _batches_of(
    loss: str, groups: np.ndarray, labels: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[_Batch]:
    """One epoch of batches: random rows (BCE), (positive, negative) pairs (BPR) or whole
    requests (listwise)."""
    if loss == "bce":
        for rows in _batches(len(labels), batch_size, rng):
            yield _Batch(torch.from_numpy(rows))
    elif loss == "bpr":
        pos, neg = bpr_pairs(groups, labels > 0.5, rng)
        for pairs in _batches(len(pos), batch_size, rng):
            yield _Batch(torch.from_numpy(np.concatenate([pos[pairs], neg[pairs]])), len(pairs))
    else:
        for rows in request_batches(groups, batch_size, rng):
            if len(rows) < 2:
                continue  # a lone row: zero loss (softmax over one), and BatchNorm cannot take it
            request = np.unique(groups[rows], return_inverse=True)[1].ravel()
            yield _Batch(torch.from_numpy(rows), request=torch.from_numpy(request))


def listwise_loss(
    logits: torch.Tensor, labels: torch.Tensor, request: torch.Tensor
) -> torch.Tensor:
    """ListNet's top-one cross-entropy (Cao et al., 2007) per request, -Σ_i (y_i / Σ_j y_j)
    log softmax(s)_i with the softmax over the request's rows; the mean over the requests with
    a positive. Only differences within a request matter, as for LambdaMART."""
    n = int(request.max()) + 1
    zeros = torch.zeros(n, dtype=logits.dtype, device=logits.device)
    # log Σ_j exp(s_j) per request, shifted by the request's max for stability
    top = torch.full_like(zeros, -torch.inf).scatter_reduce(0, request, logits.detach(), "amax")
    shifted = logits - top[request]
    log_norm = zeros.index_add(0, request, torch.exp(shifted)).log()
    mass = zeros.index_add(0, request, labels)
    target = labels / mass.clamp_min(1e-12)[request]
    per_request = zeros.index_add(0, request, -target * (shifted - log_norm[request]))
    has = mass > 0
    return per_request[has].sum() / has.sum().clamp_min(1)


def _loss(loss: str, logits: torch.Tensor, labels: torch.Tensor, batch: _Batch) -> torch.Tensor:
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, labels)
    if loss == "bpr":
        # -log σ(s_pos - s_neg), the first half of the batch are the positives
        return -F.logsigmoid(logits[: batch.n_pairs] - logits[batch.n_pairs :]).mean()
    return listwise_loss(logits, labels, batch.request.to(logits.device))


def _optimizers(model: DLRM, config: DLRMConfig) -> list[torch.optim.Optimizer]:
    tables = list(model.sparse_arch.parameters())
    table_ids = {id(p) for p in tables}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.Adam(dense, lr=config.learning_rate, weight_decay=config.weight_decay)
    ]
    if tables:
        # SparseAdam has no weight decay, so weight_decay regularises the MLPs only; decaying
        # every row of a 1M-row table each step would undo the point of sparse updates.
        optimizers.append(torch.optim.SparseAdam(tables, lr=config.embedding_learning_rate))
    return optimizers


def grouped_ndcg(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean NDCG@k over the requests with a positive, each request's rows ordered by score."""
    _, request = np.unique(groups, return_inverse=True)
    request = request.ravel()
    lists = top_lists(request, scores, np.arange(len(groups)), k, request.max() + 1)
    positive = np.flatnonzero(labels > 0.5)
    relevant = sp.csr_matrix(
        (np.ones(len(positive), np.float32), (request[positive], positive)),
        shape=(len(lists), len(groups)),
    )
    return ndcg_at_k(lists, relevant, k)


def _validation_row(frame: RankingFrame, probabilities: np.ndarray) -> dict[str, float]:
    binary = (frame.labels > 0.5).astype(np.float64)
    return {
        f"valid_ndcg@{VALID_K}": grouped_ndcg(frame.groups, binary, probabilities, VALID_K),
        "valid_auc": auc(binary, probabilities),
        "valid_logloss": logloss(binary, probabilities),
    }


def _train(
    model: DLRM,
    train: RankingFrame,
    valid: RankingFrame | None,
    config: DLRMConfig,
    device: torch.device,
    show_progress: bool,
) -> list[dict[str, float]]:
    """Mini-batch Adam over `config.epochs`; the model ends with the best validation epoch."""
    rng = np.random.default_rng(config.random_state)
    data = _Tensors.of(train)
    optimizers = _optimizers(model, config)
    history: list[dict[str, float]] = []
    best_key, best_state = None, None
    for epoch in tqdm(range(config.epochs), desc="dlrm", unit="epoch", disable=not show_progress):
        model.train()
        total, batches = torch.zeros((), device=device), 0
        for batch in _batches_of(config.loss, train.groups, train.labels, config.batch_size, rng):
            logits = model(data.dense[batch.rows].to(device), data.sparse[batch.rows].to(device))
            loss = _loss(config.loss, logits, data.labels[batch.rows].to(device), batch)
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            total, batches = total + loss.detach(), batches + 1  # no GPU sync per step
        row = {"epoch": epoch + 1, "train_loss": total.item() / max(batches, 1)}
        if valid is not None:
            model.eval()
            probabilities = _probabilities(model, valid.dense, valid.sparse, device)
            row |= _validation_row(valid, probabilities)
            key = (row[f"valid_ndcg@{VALID_K}"], row["valid_auc"])
            if best_key is None or key > best_key:
                best_key, best_state = key, copy.deepcopy(model.state_dict())
        history.append(row)
        log.info("dlrm epoch %s", row)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _probabilities(
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


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global RNG seeded for the block and restored after, so fitting a model neither
    depends on nor disturbs the caller's random state."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------- export helpers


def _folded(sequential: nn.Sequential) -> nn.Sequential:
    """Inference copy: BatchNorm folded into the Linear before it (W' = W γ/√(σ²+ε),
    b' = (b - μ) γ/√(σ²+ε) + β, the running statistics of formula (2)), Dropout dropped."""
    layers: list[nn.Module] = []
    for layer in sequential:
        if isinstance(layer, nn.BatchNorm1d):
            layers[-1] = fuse_linear_bn_eval(layers[-1], layer)
        elif not isinstance(layer, nn.Dropout):
            layers.append(layer)
    return nn.Sequential(*layers)


def _inference_copy(model: DLRM) -> DLRM:
    """A CPU eval-mode copy with BatchNorm folded ("слияние слоев") and the embedding
    tables stacked (StackedSparseArch)."""
    copied = copy.deepcopy(model).cpu().eval()
    copied.dense_arch.mlp = _folded(copied.dense_arch.mlp)
    copied.over_arch.mlp = _folded(copied.over_arch.mlp)
    copied.sparse_arch = StackedSparseArch(copied.sparse_arch)
    return copied


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # torch 2.13 marks torch.ao.quantization and torch.jit as deprecated in favour of torchao
    # and torch.export; both still work and are what the seed names, so say it once here.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning
        )
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*quantize.*deprecated", UserWarning)
        warnings.filterwarnings("ignore", r".*treespec.*deprecated", FutureWarning)  # export
        yield


# ------------------------------------------------------------------------- the ranker


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
        spec = _spec_for(train, config)
        _check_training_frames(train, valid, spec, config)
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with _seeded(config.random_state, target), _threads(threads):
            model = DLRM(spec)
            if pretrained and config.pretrained_mf:
                _init_from_mf(model, spec, pretrained)
            elif pretrained:
                log.info("dlrm: pretrained factors given but pretrained_mf is off; ignored")
            model.to(target)
            history = _train(model, train, valid, config, target, show_progress)
        return cls(model, spec, device=target, history=history)

    def predict(self, frame: RankingFrame, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """Probability per row, float32 (n,)."""
        self.spec.check(frame, "predict")
        return _probabilities(self.model, frame.dense, frame.sparse, self.device, batch_size)

    def quantized(self) -> DLRMRanker:
        """INT8 dynamic quantization of every Linear, formula (4) (CPU): weights stored as int8,
        activations quantized per batch; embedding tables stay float32."""
        if self.variant != "float32":
            raise ValueError(f"quantize the float32 model, this one is {self.variant}")
        with _quiet_deprecations():
            model = torch.ao.quantization.quantize_dynamic(
                _inference_copy(self.model), {nn.Linear}, dtype=torch.qint8
            )
        return DLRMRanker(model, self.spec, "int8", torch.device("cpu"), self.history)

    def scripted(self) -> DLRMRanker:
        """TorchScript static graph G(θ) of the eval model (CPU), frozen so the weights are
        constants the graph optimiser can fold; works on the int8 model too."""
        if self.variant == "float32":
            model, variant = _inference_copy(self.model), "torchscript"
        elif self.variant == "int8":
            model, variant = self.model, "torchscript-int8"
        else:
            raise ValueError(f"script the float32 or int8 model, this one is {self.variant}")
        with _quiet_deprecations():
            frozen = torch.jit.freeze(torch.jit.script(model.eval()))
        return DLRMRanker(frozen, self.spec, variant, torch.device("cpu"), self.history)

    def compiled(self, cache_dir: Path | None = None) -> DLRMRanker:
        """The eval model compiled to native code (ranking.compiled_dlrm), cached under
        `cache_dir`: the same scores (checked on load) for a fraction of TorchScript's
        per-request cost. Without a compiler, or if compiling fails, the TorchScript model
        serves and the reason is logged: serving slower beats not serving."""
        if self.variant != "float32":
            raise ValueError(f"compile the float32 model, this one is {self.variant}")
        from ranking.compiled_dlrm import compile_dlrm

        try:
            with _quiet_deprecations():
                forward = compile_dlrm(_inference_copy(self.model), self._probe(), cache_dir)
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


def _spec_for(train: RankingFrame, config: DLRMConfig) -> DLRMSpec:
    if config.loss not in LOSSES:
        raise ValueError(f"dlrm.loss {config.loss!r} unknown; known: {', '.join(LOSSES)}")
    if not train.dense_names:
        raise ValueError("DLRM needs at least one dense feature for its bottom MLP")
    return DLRMSpec(
        dense_names=train.dense_names,
        sparse_names=train.sparse_names,
        sparse_cardinalities=tuple(int(n) for n in train.sparse_cardinalities),
        config=config,
        stats=DenseStats.of(train.dense),
    )


def _check_training_frames(
    train: RankingFrame, valid: RankingFrame | None, spec: DLRMSpec, config: DLRMConfig
) -> None:
    for frame, what in ((train, "train"), (valid, "valid")):
        if frame is None:
            continue
        spec.check(frame, what)
        if frame.labels is None:
            raise ValueError(f"{what} has no labels")
        if (
            not np.isfinite(frame.labels).all()
            or (frame.labels < 0).any()
            or (frame.labels > 1).any()
        ):
            raise ValueError(f"{what} labels must be finite and in [0, 1]")
    if len(train) < 2:
        raise ValueError(f"train has {len(train)} rows; DLRM needs at least 2")
    if valid is not None and len(np.unique(valid.labels > 0.5)) < 2:
        raise ValueError("valid must hold positives and negatives to pick the best epoch")
    if config.loss == "bpr":
        pos, _ = bpr_pairs(train.groups, train.labels > 0.5, np.random.default_rng(0))
        if not len(pos):
            raise ValueError("BPR needs requests with both a positive and a negative row")
    if config.loss == "listwise" and not (train.labels > 0).any():
        raise ValueError("listwise needs a request with a positive row")
