"""SSRM's network and its training (seed 003 §II.B-C), in torch.

§II.B.1: item ids (one-hot, i.e. an embedding row) through a one-layer GRU give the hidden
states h_1..h_t; the attention weights are the softmax over the session's items of the MF
scores ⟨u, v_j⟩ (§II.B.2, "индикатор важности"); the session is c = [Σ_j a_j h_j ; h_t]
(§II.B.1.c). §II.B.3: an item's score mixes its closeness to the session, (B c)ᵀ e_i with B
the transformation matrix, and to the user, ⟨u, v_i⟩, by the weight w:

    r_i = w (B c)ᵀ e_i + (1 - w) τ ⟨u, v_i⟩

u and v are our iALS vectors, held fixed (the seed's "модуль коллаборативной фильтрации");
τ is one learnt scale: iALS scores lie near [0, 1] while the session scores are logits, and
without it the MF half would vanish in the softmax. §II.C: cross-entropy over the catalogue,
Adam, every prefix of a session a sample of its own (data augmentation, Fig. 5).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from candidates.session.sessions import Sessions
from recsys.config import SSRMConfig

log = logging.getLogger(__name__)

PAD = 0  # item i is row i + 1 of the embedding; row 0 pads short sessions
RECALL_AT = 20  # validation recall@20, which picks the epoch kept


class SSRMNet(nn.Module):
    def __init__(self, mf_items: np.ndarray, config: SSRMConfig) -> None:
        super().__init__()
        n_items = len(mf_items)
        self.embedding = nn.Embedding(n_items + 1, config.embedding_dim, padding_idx=PAD)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
        self.gru = nn.GRU(config.embedding_dim, config.hidden, batch_first=True)
        self.transform = nn.Linear(2 * config.hidden, config.embedding_dim, bias=False)  # B
        self.mf_scale = nn.Parameter(torch.tensor(5.0))  # τ
        self.dropout = nn.Dropout(config.dropout)
        self.mix = config.mix
        self.register_buffer("mf_items", torch.as_tensor(mf_items, dtype=torch.float32))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, users: torch.Tensor):
        """inputs (B, L) item ids + 1, right-padded; lengths (B,); users (B, f) MF vectors.
        Returns (B, n_items) scores r."""
        embedded = self.dropout(self.embedding(inputs))
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        states, last = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=inputs.shape[1])
        mf_of_session = (self.mf_items[(inputs - 1).clamp(min=0)] * users[:, None, :]).sum(-1)
        mf_of_session = mf_of_session.masked_fill(inputs == PAD, float("-inf"))
        attention = torch.softmax(mf_of_session, dim=1)  # §II.B.2
        session = torch.cat([(attention[..., None] * states).sum(1), last[0]], dim=1)
        query = self.transform(self.dropout(session))
        session_scores = query @ self.embedding.weight[1:].T
        mf_scores = users @ self.mf_items.T
        return self.mix * session_scores + (1 - self.mix) * self.mf_scale * mf_scores


@dataclass(frozen=True)
class Samples:
    """Every prefix of every session with the item that followed it (§II.C, Fig. 5)."""

    inputs: np.ndarray  # int64 (n, max_length - 1): the prefix's ids + 1, right-padded
    lengths: np.ndarray  # int64 (n,)
    targets: np.ndarray  # int64 (n,): the next item
    session: np.ndarray  # int64 (n,): the sample's session, for its user vector

    @classmethod
    def of(cls, sessions: Sessions, width: int) -> Samples:
        lengths = sessions.lengths
        per_session = np.maximum(lengths - 1, 0)
        session = np.repeat(np.arange(len(sessions)), per_session)
        position = np.arange(per_session.sum()) - np.repeat(
            np.cumsum(per_session) - per_session, per_session
        )
        prefix = position + 1  # items before the target
        start = sessions.offsets[session]
        targets = sessions.items[start + prefix]
        keep = np.maximum(prefix - width, 0)  # a prefix longer than width keeps its newest
        columns = np.arange(width)
        take = (start + keep)[:, None] + columns[None, :]
        valid = columns[None, :] < (prefix - keep)[:, None]
        inputs = np.where(valid, sessions.items[np.minimum(take, len(sessions.items) - 1)] + 1, PAD)
        return cls(inputs.astype(np.int64), (prefix - keep).astype(np.int64), targets, session)

    def __len__(self) -> int:
        return len(self.targets)

    def prefixes(self, rows: np.ndarray) -> list[np.ndarray]:
        """The item indices of these samples' prefixes, oldest first (unpadded)."""
        return [self.inputs[r, : self.lengths[r]] - 1 for r in rows]


def train(
    net: SSRMNet,
    train_samples: Samples,
    train_users: np.ndarray,
    config: SSRMConfig,
    *,
    epochs: int,
    valid: tuple[Samples, np.ndarray] | None = None,
    seed: int = 0,
) -> list[dict]:
    """Adam on the cross-entropy of the next item over the catalogue. With `valid`, the
    epoch with the best validation recall@20 is kept. Returns one row per epoch."""
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    users = torch.as_tensor(train_users, dtype=torch.float32)
    random = np.random.default_rng(seed)
    history: list[dict] = []
    best, best_state = -1.0, None
    for epoch in range(epochs):
        net.train()
        total = 0.0
        order = random.permutation(len(train_samples))
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            total += gradient_step(net, optimizer, train_samples, users, batch) * len(batch)
        row = {"epoch": epoch + 1, "loss": total / max(len(order), 1)}
        if valid is not None and len(valid[0]):
            row["valid_recall"] = recall(net, *valid)
            if row["valid_recall"] > best:
                best, best_state = row["valid_recall"], copy.deepcopy(net.state_dict())
        history.append(row)
        log.info("ssrm epoch %s", row)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history


def gradient_step(
    net: SSRMNet,
    optimizer: torch.optim.Optimizer,
    samples: Samples,
    users: torch.Tensor,
    rows: np.ndarray,
) -> float:
    """One optimizer step on the cross-entropy of these samples' next items; the loss."""
    net.train()
    scores = net(
        torch.as_tensor(samples.inputs[rows]),
        torch.as_tensor(samples.lengths[rows]),
        users[samples.session[rows]],
    )
    loss = nn.functional.cross_entropy(scores, torch.as_tensor(samples.targets[rows]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def recall(net: SSRMNet, samples: Samples, users: np.ndarray, batch_size: int = 1024) -> float:
    """Share of samples whose next item is among the net's RECALL_AT best scores."""
    net.eval()
    hits = 0
    user_rows = torch.as_tensor(users, dtype=torch.float32)
    for start in range(0, len(samples), batch_size):
        rows = slice(start, start + batch_size)
        scores = net(
            torch.as_tensor(samples.inputs[rows]),
            torch.as_tensor(samples.lengths[rows]),
            user_rows[samples.session[rows]],
        )
        best = torch.topk(scores, min(RECALL_AT, scores.shape[1]), dim=1).indices
        hits += int((best == torch.as_tensor(samples.targets[rows])[:, None]).any(1).sum())
    return hits / max(len(samples), 1)
