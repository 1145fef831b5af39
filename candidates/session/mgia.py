"""MGIA SSRS's model, fitting and online update (seed 003 §IV.C-D) over
candidates.session.mgia_net: trained like GAG (§IV.C: "одинаково с моделями GAG и SSRM"),
updated "полностью аналогично GAG" (§IV.C) by candidates.session.gag.update_gag, with one
addition: every session that arrives joins the global transition graph first, and the
items' global embeddings are recomputed over it (§IV.B.1.b-c).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from candidates.session.gag import GAGModel, fit_graph_model, read_graph_model, save_graph_model
from candidates.session.mgia_net import (
    GlobalGraph,
    MGIANet,
    numpy_session_vector,
    serving_weights,
)
from candidates.session.sessions import Sessions
from candidates.session.ssrm import training_sessions
from recsys.config import MGIAConfig, SessionsConfig
from recsys.interactions import TrainingData

log = logging.getLogger(__name__)

FILE = "mgia.npz"


@dataclass
class MGIAModel(GAGModel):
    net: MGIANet
    graph: GlobalGraph = field(default=None)  # type: ignore[assignment]  # set by of()

    @classmethod
    def of(cls, net: MGIANet, n_users: int, max_length: int) -> MGIAModel:
        n_items = net.items.weight.shape[0]
        model = cls(net, np.zeros(n_items, bool), np.zeros(n_users, bool), max_length)
        model.graph = GlobalGraph(n_items)
        net.set_graph(model.graph)
        return model

    def absorb(self, sessions: list[np.ndarray]) -> None:
        """§IV.B.1.b: the sessions join the global graph; global embeddings follow it."""
        self.graph.add(sessions)
        self.net.set_graph(self.graph)

    def copy(self) -> MGIAModel:
        model = dataclasses.replace(
            self,
            net=copy.deepcopy(self.net),
            known_items=self.known_items.copy(),
            known_users=self.known_users.copy(),
            graph=self.graph.copy(),
        )
        model.net.set_graph(model.graph)
        return model

    def item_vectors(self) -> np.ndarray:
        return self.net.item_vectors()

    def scoring(self, session: np.ndarray, user: int) -> tuple[np.ndarray, np.ndarray]:
        """As GAG's (session_scores is the product): the net's forward pass in numpy (tests
        hold it to torch's scores), over the global embeddings computed once; the table is
        local + global."""
        global_items, scoring_items = self._item_tables
        graph, row = self._served_input(session, user)
        return scoring_items, numpy_session_vector(self._served_weights, global_items, graph, row)

    @functools.cached_property
    def _served_weights(self) -> dict[str, np.ndarray]:
        return serving_weights(self._weights)

    @functools.cached_property
    def _item_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(global embeddings, local + global): fixed while the model serves (updates train
        a copy)."""
        self.net.eval()
        with torch.no_grad():
            global_items = self.net.global_embeddings().numpy()
        return global_items, self.net.item_vectors()

    def save(self, directory: Path) -> None:
        """The net's arrays and the global graph's edges (gag.save_graph_model)."""
        save_graph_model(self, directory / FILE, **self.graph.arrays())

    @classmethod
    def load(cls, directory: Path) -> MGIAModel | None:
        graph_arrays = tuple(GlobalGraph(0).arrays())
        saved = read_graph_model(directory / FILE, "local.weight", graph_arrays)
        if saved is None:
            return None  # none trained: sessions.models did not name it
        n_items, arrays = saved.n_items, saved.arrays
        edges = np.concatenate([arrays["graph_from"], arrays["graph_to"]])
        if len(edges) and (edges.min() < 0 or edges.max() >= n_items):
            raise ValueError(f"{directory / FILE}: graph edges outside the {n_items} items")
        dim = saved.state["local.weight"].shape[1]
        net = MGIANet(n_items, saved.n_users, dim, dropout=0.0)
        net.load_state_dict(saved.state)  # refuses missing, extra or misshapen weights
        net.eval()
        model = cls(net, saved.known_items, saved.known_users, saved.max_length)
        model.graph = GlobalGraph.of_arrays(n_items, arrays)
        net.set_graph(model.graph)
        return model


def fit_mgia(
    sessions: Sessions, n_items: int, n_users: int, config: MGIAConfig, max_length: int
) -> MGIAModel:
    """Train on these sessions (in time order) as GAG is trained (fit_graph_model)."""

    def fresh() -> MGIAModel:
        return MGIAModel.of(
            MGIANet(n_items, n_users, config.embedding_dim, config.dropout), n_users, max_length
        )

    return fit_graph_model(fresh, sessions, config, "mgia")


def fit_mgia_on(data: TrainingData, config: SessionsConfig) -> MGIAModel | None:
    """MGIA trained on the data's sessions (as the nightly cuts them); None, with a log
    line, if there are too few."""
    sessions = training_sessions(data, config)
    if len(sessions) < 2:
        log.warning("mgia: %d training sessions; none trained (see [sessions])", len(sessions))
        return None
    return fit_mgia(sessions, len(data.items), len(data.users), config.mgia, config.max_length)
