"""GAG (seed 003 §III, "Global Attributed Graph Neural Network"), in torch.

§III.B.1: a session is a weighted directed graph, its items the nodes (a repeated item is
one node), its transitions the edges (weight: how often the user went from one to the
other), and its user the graph's global attribute. Each layer of the graph network:

1. every node's vector is concatenated with the global attribute, x_i ‖ u;
2. an update function runs along every edge in both directions, for the receiver from its
   sender and for the sender from its receiver, scaled by the edge's (scalar, fixed) weight;
3. each node sums what its incoming and what its outgoing edges bring, each sum normalised
   by the node's weighted in- and out-degree;
4. the node's new vector comes from its old one and the two sums;
5. the global attribute is updated by self-attention on the session's last item: weights
   from an MLP over each node, the last node and the attribute, pooled over the nodes and
   combined with the last node and the attribute;
6. and summed with the user's own vector.

The final attribute scores every item by its dot product with the item's vector; softmax
and cross-entropy as SSRM (§III.C), Adam. The seed's formulas for steps 2, 4 and 5 lost
their symbols in our copy; we take one-layer MLPs (tanh) for the edge and node updates and
SR-GNN's attention (qᵀσ(W₁ x_last + W₂ x_i + W₃ u)) for step 5, which fit the text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

PAD = 0  # item i is row i + 1 of the item table, user u row u + 1 of the user table; 0 = none


@dataclass(frozen=True)
class Graphs:
    """A batch of session prefixes as graphs (§III.B.1.b), padded to the batch's largest."""

    nodes: np.ndarray  # int64 (B, n): the node's item id + 1, 0 = padding
    incoming: np.ndarray  # float32 (B, n, n): [r, s] = w(s -> r) / weighted in-degree of r
    outgoing: np.ndarray  # float32 (B, n, n): [s, r] = w(s -> r) / weighted out-degree of s
    last: np.ndarray  # int64 (B,): the node of the prefix's last item

    @classmethod
    def of(cls, prefixes: list[np.ndarray]) -> Graphs:
        """Nodes in order of first appearance in each prefix; one numpy pass over the whole
        batch (a loop per prefix cost 5x as much on batches of 256)."""
        batch = len(prefixes)
        lengths = np.array([len(p) for p in prefixes], np.int64)
        width = max(int(lengths.max(initial=1)), 1)
        valid = np.arange(width) < lengths[:, None]
        rows, positions = np.nonzero(valid)
        items = np.concatenate(prefixes).astype(np.int64) if batch else np.empty(0, np.int64)
        # each (prefix, item) is one node; its first position orders the prefix's nodes
        order = np.lexsort((positions, items, rows))
        row, item, position = rows[order], items[order], positions[order]
        first = np.r_[True, (row[1:] != row[:-1]) | (item[1:] != item[:-1])][: len(row)]
        group = np.cumsum(first) - 1
        node_row, node_item, node_position = row[first], item[first], position[first]
        by_appearance = np.lexsort((node_position, node_row))
        starts = np.searchsorted(node_row[by_appearance], np.arange(batch))
        node_of_group = np.empty(len(node_row), np.int64)
        node_of_group[by_appearance] = np.arange(len(node_row)) - starts[node_row[by_appearance]]
        size = max(int(np.bincount(node_row, minlength=batch).max(initial=1)), 1)
        nodes = np.zeros((batch, size), np.int64)
        nodes[node_row, node_of_group] = node_item + 1
        node_at = np.full((batch, width), -1, np.int64)
        node_at[rows[order], positions[order]] = node_of_group[group]
        weights = np.zeros((batch, size, size), np.float32)  # [s, r]
        sender, receiver = node_at[:, :-1], node_at[:, 1:]
        edge = (sender >= 0) & (receiver >= 0)
        np.add.at(weights, (np.nonzero(edge)[0], sender[edge], receiver[edge]), 1.0)
        last = node_at[np.arange(batch), np.maximum(lengths - 1, 0)]
        out_degree = weights.sum(axis=2, keepdims=True)
        in_degree = weights.sum(axis=1, keepdims=True)
        outgoing = np.divide(weights, out_degree, out=np.zeros_like(weights), where=out_degree > 0)
        incoming_t = np.divide(weights, in_degree, out=np.zeros_like(weights), where=in_degree > 0)
        return cls(nodes, np.ascontiguousarray(incoming_t.transpose(0, 2, 1)), outgoing, last)

    @classmethod
    def one(cls, prefix: np.ndarray) -> Graphs:
        """Graphs.of([prefix]) for a single prefix, as serving asks per request: the batch
        path's sorts and padding cost a fifth of a request's forward pass."""
        items = np.asarray(prefix, np.int64)
        if not len(items):
            return cls.of([items])
        unique, first, inverse = np.unique(items, return_index=True, return_inverse=True)
        by_appearance = np.argsort(first)
        node_of_unique = np.empty(len(unique), np.int64)
        node_of_unique[by_appearance] = np.arange(len(unique))
        node_at = node_of_unique[inverse.reshape(-1)]
        size = len(unique)
        edges = np.bincount(node_at[:-1] * size + node_at[1:], minlength=size * size)
        weights = edges.reshape(size, size).astype(np.float32)  # [s, r]
        out_degree = weights.sum(axis=1, keepdims=True)
        in_degree = weights.sum(axis=0, keepdims=True)
        outgoing = np.divide(weights, out_degree, out=np.zeros_like(weights), where=out_degree > 0)
        incoming_t = np.divide(weights, in_degree, out=np.zeros_like(weights), where=in_degree > 0)
        return cls(
            (unique[by_appearance] + 1)[None],
            np.ascontiguousarray(incoming_t.T)[None],
            outgoing[None],
            np.array([node_at[-1]], np.int64),
        )


class GAGLayer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.to_receiver = nn.Linear(2 * dim, dim)  # step 2, along an edge's direction
        self.to_sender = nn.Linear(2 * dim, dim)  # step 2, against it
        self.node = nn.Linear(3 * dim, dim)  # step 4
        self.attend_last = nn.Linear(dim, dim, bias=False)  # step 5: W1
        self.attend_node = nn.Linear(dim, dim)  # W2
        self.attend_global = nn.Linear(dim, dim, bias=False)  # W3
        self.attention = nn.Linear(dim, 1, bias=False)  # q
        self.pool = nn.Linear(3 * dim, dim)  # pooled ‖ last ‖ attribute -> attribute

    def forward(self, x, attribute, user, incoming, outgoing, mask, last):
        joined = torch.cat([x, attribute[:, None, :].expand_as(x)], dim=-1)  # step 1
        from_senders = incoming @ torch.tanh(self.to_receiver(joined))  # steps 2-3
        from_receivers = outgoing @ torch.tanh(self.to_sender(joined))
        x = torch.tanh(self.node(torch.cat([x, from_senders, from_receivers], dim=-1)))  # 4
        x = x * mask[..., None]
        last_x = x[torch.arange(len(x)), last]
        logits = self.attention(
            torch.sigmoid(
                self.attend_last(last_x)[:, None, :]
                + self.attend_node(x)
                + self.attend_global(attribute)[:, None, :]
            )
        ).squeeze(-1)
        weights = torch.softmax(logits.masked_fill(mask == 0, float("-inf")), dim=1)
        pooled = (weights[..., None] * x).sum(1)  # step 5
        attribute = torch.tanh(self.pool(torch.cat([pooled, last_x, attribute], dim=-1)))
        return x, attribute + user  # step 6


class GAGNet(nn.Module):
    def __init__(self, n_items: int, n_users: int, dim: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.users = nn.Embedding(n_users + 1, dim, padding_idx=PAD)
        for table in (self.items, self.users):
            nn.init.normal_(table.weight, std=0.1)
            with torch.no_grad():
                table.weight[PAD].zero_()
        self.layers = nn.ModuleList(GAGLayer(dim) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, graphs: Graphs, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of every item for each graph; `users` (B,) user ids + 1."""
        nodes = torch.as_tensor(graphs.nodes)
        mask = (nodes != PAD).float()
        x = self.dropout(self.items(nodes))
        user = self.users(users)
        attribute = user
        incoming, outgoing = torch.as_tensor(graphs.incoming), torch.as_tensor(graphs.outgoing)
        last = torch.as_tensor(graphs.last)
        for layer in self.layers:
            x, attribute = layer(x, attribute, user, incoming, outgoing, mask, last)
        return self.dropout(attribute) @ self.items.weight[1:].T


def numpy_session_vector(
    weights: dict[str, np.ndarray], graph: Graphs, user_row: int
) -> np.ndarray:
    """GAGNet.forward in eval mode (no dropout) for one graph (a batch of one), in numpy, up
    to the session's vector: the items' scores are `items.weight[1:]` times it. `weights` is
    the net's state dict as arrays, `user_row` the user's row (0: none). (d,) float32."""
    size = int((graph.nodes[0] != PAD).sum())
    x = weights["items.weight"][graph.nodes[0, :size]]
    incoming, outgoing = graph.incoming[0, :size, :size], graph.outgoing[0, :size, :size]
    last = int(graph.last[0])
    user = weights["users.weight"][user_row]
    attribute = user
    layers = len({name.split(".")[1] for name in weights if name.startswith("layers.")})
    for k in range(layers):

        def linear(name: str, inputs: np.ndarray, k: int = k) -> np.ndarray:
            out = inputs @ weights[f"layers.{k}.{name}.weight"].T
            bias = weights.get(f"layers.{k}.{name}.bias")
            return out if bias is None else out + bias

        joined = np.concatenate([x, np.broadcast_to(attribute, x.shape)], axis=1)  # step 1
        from_senders = incoming @ np.tanh(linear("to_receiver", joined))  # steps 2-3
        from_receivers = outgoing @ np.tanh(linear("to_sender", joined))
        x = np.tanh(linear("node", np.concatenate([x, from_senders, from_receivers], axis=1)))
        last_x = x[last]
        gate = linear("attend_last", last_x) + linear("attend_node", x)
        gate = gate + linear("attend_global", attribute)
        logits = linear("attention", 1.0 / (1.0 + np.exp(-gate)))[:, 0]
        attention = np.exp(logits - logits.max())
        pooled = (attention / attention.sum()) @ x  # step 5
        attribute = np.tanh(linear("pool", np.concatenate([pooled, last_x, attribute])))
        attribute = attribute + user  # step 6
    return attribute.astype(np.float32)
