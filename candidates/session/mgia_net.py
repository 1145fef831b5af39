"""MGIA SSRS (seed 003 §IV, "Multi Global Information Assisted"), in torch: GAG's session
graph plus a global item-transition graph, with the two fixes of Table 3.

§IV.B.1 (item encoding), per step of the text:
a) the session graph, as GAG's (candidates.session.gag_net.Graphs);
b) the global graph: every session's transitions merged into one weighted directed graph
   over the catalogue, an edge's weight the sum of its weights over all sessions, divided
   by the largest weight (`GlobalGraph`); a new session joins it on arrival;
c) every item has a local embedding and a global one: its global one comes from a one-layer
   gated graph network (GGNN, as SR-GNN) over the global graph, a = [A_out H W_out ‖
   A_in H W_in] + b, z = σ(W_z a + U_z h), r = σ(W_r a + U_r h), h̃ = tanh(W_h a + U_h (r ⊙
   h)), h' = (1 − z) ⊙ h + z ⊙ h̃; recomputed whenever the global graph changes;
d) every user has an embedding;
e) each session item's importance for the user, from its global embedding g_i and the
   user's u: α_i = σ(qᵀ LeakyReLU(W_g g_i + W_u u));
f) the item's combined representation: e_i = l_i + α_i g_i (local + importance · global);
g) one layer of BA-GCN over the session graph: for each node, its in-neighbours and its
   out-neighbours each attended by scaled dot products (W_Q e_i)ᵀ(W_K e_j) / √d, weighted
   by the edge weights (softmax of score + log w), over W_V e_j; then each direction's
   result joins the user by attention over the user's features (Table 3, fix 2):
   h_in' = h_in + u ⊙ σ(W_f [h_in ‖ u]); then h_i = tanh(W [e_i ‖ h_in' ‖ h_out'] + b).
§IV.B.2 (session encoding): self-attention on the last item, β_i = qᵀσ(W₁ h_last + W₂ h_i +
W₃ g_i + W₄ u), s = tanh(W_s [Σ softmax(β)_i h_i ‖ h_last ‖ u]).
§IV.B.3: item i scores sᵀ(l_i + g_i); softmax, cross-entropy, Adam, as GAG (§IV.C).

The text lost every formula's symbols in our copy: these are our readings of it (SR-GNN's
GGNN, which it names, and scaled dot-product attention, which its "√d" suggests).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from candidates.session.gag_net import PAD, Graphs


class GlobalGraph:
    """§IV.B.1.b: the transitions of every session seen, summed per directed edge."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.weights = sp.csr_matrix((n_items, n_items), dtype=np.float64)  # [from, to]

    def add(self, sessions: list[np.ndarray]) -> None:
        sources, targets = [], []
        for items in sessions:
            items = np.asarray(items, dtype=np.int64)
            sources.append(items[:-1])
            targets.append(items[1:])
        if not sources:
            return
        source, target = np.concatenate(sources), np.concatenate(targets)
        moved = source != target  # a repeated item is one node: no self-loop
        added = sp.csr_matrix(
            (np.ones(int(moved.sum())), (source[moved], target[moved])),
            shape=(self.n_items, self.n_items),
        )
        self.weights = (self.weights + added).tocsr()

    def copy(self) -> GlobalGraph:
        graph = GlobalGraph(self.n_items)
        graph.weights = self.weights.copy()
        return graph

    def normalized(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(A_out, A_in): the weights divided by the largest (§IV.B.1.b), A_out[i, j] the
        edge i -> j, A_in[i, j] the edge j -> i."""
        top = self.weights.max() if self.weights.nnz else 1.0
        out = (self.weights / top).tocsr().astype(np.float32)
        return out, out.T.tocsr()

    def arrays(self) -> dict[str, np.ndarray]:
        coo = self.weights.tocoo()
        return {"graph_from": coo.row, "graph_to": coo.col, "graph_weight": coo.data}

    @classmethod
    def of_arrays(cls, n_items: int, arrays: dict[str, np.ndarray]) -> GlobalGraph:
        graph = cls(n_items)
        graph.weights = sp.csr_matrix(
            (arrays["graph_weight"], (arrays["graph_from"], arrays["graph_to"])),
            shape=(n_items, n_items),
        )
        return graph


def _sparse(matrix: sp.csr_matrix) -> torch.Tensor:
    coo = matrix.tocoo()
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        indices, torch.as_tensor(coo.data), coo.shape, check_invariants=True
    ).coalesce()


class MGIANet(nn.Module):
    def __init__(self, n_items: int, n_users: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.local = nn.Embedding(n_items + 1, dim, padding_idx=PAD)  # row i + 1: item i
        self.items = nn.Embedding(n_items, dim)  # the global embeddings' starting point
        self.users = nn.Embedding(n_users + 1, dim, padding_idx=PAD)
        for table in (self.local, self.items, self.users):
            nn.init.normal_(table.weight, std=0.1)
        with torch.no_grad():
            self.local.weight[PAD].zero_()
            self.users.weight[PAD].zero_()
        # c) the GGNN over the global graph
        self.ggnn_out = nn.Linear(dim, dim, bias=False)
        self.ggnn_in = nn.Linear(dim, dim, bias=False)
        self.ggnn_bias = nn.Parameter(torch.zeros(2 * dim))
        self.gates = nn.Linear(2 * dim, 3 * dim)  # W_z, W_r, W_h over a
        self.gates_hidden = nn.Linear(dim, 2 * dim, bias=False)  # U_z, U_r over h
        self.candidate_hidden = nn.Linear(dim, dim, bias=False)  # U_h over r ⊙ h
        # e) importance of a session item for the user
        self.importance_item = nn.Linear(dim, dim)
        self.importance_user = nn.Linear(dim, dim, bias=False)
        self.importance = nn.Linear(dim, 1, bias=False)
        # g) BA-GCN: attention over in- and out-neighbours, then each joins the user
        self.query = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(2))
        self.key = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(2))
        self.value = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(2))
        self.user_gate = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(2))
        self.node = nn.Linear(3 * dim, dim)
        # §IV.B.2: the session's self-attention on its last item
        self.attend_last = nn.Linear(dim, dim, bias=False)
        self.attend_node = nn.Linear(dim, dim)
        self.attend_global = nn.Linear(dim, dim, bias=False)
        self.attend_user = nn.Linear(dim, dim, bias=False)
        self.attention = nn.Linear(dim, 1, bias=False)
        self.session = nn.Linear(3 * dim, dim)
        self.dropout = nn.Dropout(dropout)
        self._adjacency: tuple[torch.Tensor, torch.Tensor] | None = None
        self._global_cache: torch.Tensor | None = None  # eval mode: G for a fixed graph

    def set_graph(self, graph: GlobalGraph) -> None:
        """Use the global graph as it is now (after sessions joined it)."""
        out, into = graph.normalized()
        self._adjacency = (_sparse(out), _sparse(into))
        self._global_cache = None

    def train(self, mode: bool = True) -> MGIANet:
        if mode:
            self._global_cache = None  # the weights may move until eval() again
        return super().train(mode)

    def global_embeddings(self) -> torch.Tensor:
        """(n_items, d): §IV.B.1.c, one GGNN step over the global graph."""
        if not self.training and self._global_cache is not None:
            return self._global_cache
        if self._adjacency is None:
            raise ValueError("MGIA: no global graph set (set_graph)")
        out, into = self._adjacency
        h = self.items.weight
        a = torch.cat(
            [torch.sparse.mm(out, self.ggnn_out(h)), torch.sparse.mm(into, self.ggnn_in(h))], dim=1
        )
        a = a + self.ggnn_bias
        w_z, w_r, w_h = self.gates(a).chunk(3, dim=1)
        u_z, u_r = self.gates_hidden(h).chunk(2, dim=1)
        z, r = torch.sigmoid(w_z + u_z), torch.sigmoid(w_r + u_r)
        candidate = torch.tanh(w_h + self.candidate_hidden(r * h))
        g = (1 - z) * h + z * candidate
        if not self.training:
            self._global_cache = g.detach()
        return g

    def forward(self, graphs: Graphs, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores of every item for each graph; `users` (B,) user ids + 1."""
        g_all = self.global_embeddings()
        nodes = torch.as_tensor(graphs.nodes)
        mask = (nodes != PAD).float()
        padded_global = torch.cat([torch.zeros(1, self.dim), g_all])
        g = padded_global[nodes]  # (B, n, d), zeros at padding
        local = self.dropout(self.local(nodes))
        u = self.users(users)  # (B, d)
        alpha = torch.sigmoid(
            self.importance(
                nn.functional.leaky_relu(self.importance_item(g) + self.importance_user(u)[:, None])
            )
        )  # e)
        e = (local + alpha * g) * mask[..., None]  # f)
        incoming, outgoing = torch.as_tensor(graphs.incoming), torch.as_tensor(graphs.outgoing)
        directions = []
        for k, weights in enumerate((incoming, outgoing)):  # g) in-, then out-neighbours
            scores = self.query[k](e) @ self.key[k](e).transpose(1, 2) / np.sqrt(self.dim)
            scores = scores + torch.log(weights.clamp_min(1e-12))  # softmax ∝ w · exp(score)
            has = weights > 0
            attention = torch.softmax(scores.masked_fill(~has, float("-inf")), dim=2)
            attention = torch.nan_to_num(attention) * has  # a node with no such neighbours
            h = attention @ self.value[k](e)
            h = h + u[:, None] * torch.sigmoid(
                self.user_gate[k](torch.cat([h, u[:, None].expand_as(h)], dim=-1))
            )
            directions.append(h)
        h = torch.tanh(self.node(torch.cat([e, *directions], dim=-1))) * mask[..., None]
        last = torch.as_tensor(graphs.last)
        h_last = h[torch.arange(len(h)), last]
        beta = self.attention(
            torch.sigmoid(
                self.attend_last(h_last)[:, None]
                + self.attend_node(h)
                + self.attend_global(g)
                + self.attend_user(u)[:, None]
            )
        ).squeeze(-1)
        beta = torch.softmax(beta.masked_fill(mask == 0, float("-inf")), dim=1)
        pooled = (beta[..., None] * h).sum(1)
        session = torch.tanh(self.session(torch.cat([pooled, h_last, u], dim=-1)))
        return self.dropout(session) @ (self.local.weight[1:] + g_all).T  # §IV.B.3

    def item_vectors(self) -> np.ndarray:
        """(n_items, d): what scores an item (local + global): the Wasserstein ground space."""
        with torch.no_grad():
            return (self.local.weight[1:] + self.global_embeddings()).numpy()


def serving_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The net's state dict as arrays, with the products numpy_session_vector runs per request
    fused: the queries, keys and values of both directions as one matrix, and each user gate
    split into its h and u halves (per request the u half is one vector product)."""
    served = dict(weights)
    dim = weights["local.weight"].shape[1]
    served["qkv.weight"] = np.concatenate(
        [weights[f"{name}.{k}.weight"] for k in range(2) for name in ("query", "key", "value")]
    )
    for k in range(2):
        gate = weights[f"user_gate.{k}.weight"]
        served[f"user_gate.{k}.h"] = np.ascontiguousarray(gate[:, :dim].T)
        served[f"user_gate.{k}.u"] = np.ascontiguousarray(gate[:, dim:].T)
    return served


def numpy_session_vector(
    weights: dict[str, np.ndarray], global_items: np.ndarray, graph: Graphs, user_row: int
) -> np.ndarray:
    """MGIANet.forward in eval mode (no dropout) for one graph, in numpy, up to the session's
    vector: the items' scores are the scoring table (local + global, item_vectors()) times
    it. `weights` is the net's state dict as arrays through serving_weights, `global_items`
    its global_embeddings() (n_items, d), `user_row` the user's row (0: none). (d,) float32."""

    def linear(name: str, inputs: np.ndarray) -> np.ndarray:
        out = inputs @ weights[f"{name}.weight"].T
        bias = weights.get(f"{name}.bias")
        return out if bias is None else out + bias

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    size = int((graph.nodes[0] != PAD).sum())
    nodes = graph.nodes[0, :size]
    g = global_items[nodes - 1]
    u = weights["users.weight"][user_row]
    hidden = linear("importance_item", g) + linear("importance_user", u)
    alpha = sigmoid(linear("importance", np.where(hidden > 0, hidden, 0.01 * hidden)))  # e)
    e = weights["local.weight"][nodes] + alpha * g  # f)
    dim = e.shape[1]
    qkv = e @ weights["qkv.weight"].T  # (size, 6d): query, key, value of each direction
    directions = []
    for k, edges in enumerate((graph.incoming[0], graph.outgoing[0])):  # g)
        edges = edges[:size, :size]
        has = edges > 0
        query, key, value = (qkv[:, (3 * k + j) * dim : (3 * k + j + 1) * dim] for j in range(3))
        scores = query @ key.T / math.sqrt(dim)
        scores = np.where(has, scores + np.log(np.maximum(edges, 1e-12)), -np.inf)
        top = np.where(has.any(axis=1, keepdims=True), scores.max(axis=1, keepdims=True), 0.0)
        attention = np.where(has, np.exp(scores - top), 0.0)
        total = attention.sum(axis=1, keepdims=True)
        attention = np.divide(attention, total, out=np.zeros_like(attention), where=total > 0)
        h = attention @ value
        gate = h @ weights[f"user_gate.{k}.h"] + (
            u @ weights[f"user_gate.{k}.u"] + weights[f"user_gate.{k}.bias"]
        )
        directions.append(h + u * sigmoid(gate))
    h = np.tanh(linear("node", np.concatenate([e, *directions], axis=1)))
    h_last = h[int(graph.last[0])]
    gate = linear("attend_last", h_last) + linear("attend_node", h) + linear("attend_global", g)
    beta = linear("attention", sigmoid(gate + linear("attend_user", u)))[:, 0]
    beta = np.exp(beta - beta.max())
    pooled = (beta / beta.sum()) @ h
    session = np.tanh(linear("session", np.concatenate([pooled, h_last, u])))
    # in the tables' float32: a float64 vector would copy the whole item table per request
    return session.astype(np.float32)
