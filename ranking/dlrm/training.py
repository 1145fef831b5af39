"""Training a DLRM lives apart from the model (`train`): Adam on the dense weights, SparseAdam
on the tables at their own learning rate (only the looked-up rows move, so a step does not touch
1M-row tables); BCE on the labels, BPR on (positive, negative) pairs of one request, or
ListNet's softmax cross-entropy over each request's rows; the epoch with the best validation
NDCG@10 (the metric the cascade is judged by) is kept.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ranking.dlrm.model import DLRM, DenseStats, DLRMSpec, predict_probabilities
from ranking.frame import RankingFrame, top_lists
from recsys.config import DLRMConfig
from recsys.metrics import auc, logloss, ndcg_at_k

log = logging.getLogger(__name__)

LOSSES = ("bce", "bpr", "listwise")
VALID_K = 10  # the epoch kept is the one with the best validation NDCG at this cut-off


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


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Taken up or not: graded labels (ranking.later_positives grades 1 and up) count as 1."""
    return F.binary_cross_entropy_with_logits(logits, labels.clamp(max=1.0))


def _loss(loss: str, logits: torch.Tensor, labels: torch.Tensor, batch: _Batch) -> torch.Tensor:
    if loss == "bce":
        return bce_loss(logits, labels)
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


def train(
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
            probabilities = predict_probabilities(model, valid.dense, valid.sparse, device)
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


# ---------------------------------------------------------------- the training frames


def spec_for(train: RankingFrame, config: DLRMConfig) -> DLRMSpec:
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


def check_training_frames(
    train: RankingFrame, valid: RankingFrame | None, spec: DLRMSpec, config: DLRMConfig
) -> None:
    for frame, what in ((train, "train"), (valid, "valid")):
        if frame is None:
            continue
        spec.check(frame, what)
        if frame.labels is None:
            raise ValueError(f"{what} has no labels")
        # grades (ranking.later_positives): BCE and the best-epoch metrics count any
        # grade > 0.5 as taken up, the listwise loss weighs the request's items by them
        if not np.isfinite(frame.labels).all() or (frame.labels < 0).any():
            raise ValueError(f"{what} labels must be finite and >= 0")
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
