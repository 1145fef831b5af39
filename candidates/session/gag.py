"""GAG's training, scoring and online update (seed 003 §III.C-D) over candidates.session.gag_net.

Trained like SSRM (§III.C: cross-entropy, Adam; every prefix of a session a sample, so that
the two learn from the same samples), it keeps its own item and user tables; the items and
users it has learnt are marked, because an online update (§III.D) takes every new session
that holds a user or an item it has not, and draws the others by the Wasserstein distance
between its recommendation for the session and what the user did (sampling.py). The
reservoir is updated after the model, not before as in SSRM.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from candidates.session.gag_net import GAGNet, Graphs, numpy_session_vector
from candidates.session.sampling import wasserstein_selection, wasserstein_to_items
from candidates.session.sessions import Sessions, target_ranks
from candidates.session.ssrm import training_sessions
from candidates.session.ssrm_net import Samples
from candidates.session.updates import UNIFORM, SeenSession
from recsys.config import GAGConfig, GraphModelConfig, SessionsConfig
from recsys.interactions import TrainingData
from recsys.torch_runs import seeded

log = logging.getLogger(__name__)

FILE = "gag.npz"
NET = "net."  # the prefix of the net's weights among the saved arrays
WASSERSTEIN = "wasserstein"
GAG_SELECTIONS = (WASSERSTEIN, UNIFORM)


@dataclass
class GAGModel:
    net: GAGNet
    known_items: np.ndarray  # bool per item: learnt from at least one session
    known_users: np.ndarray  # bool per user
    max_length: int

    @property
    def n_items(self) -> int:
        return len(self.known_items)

    # What GAG and MGIA (candidates/session/mgia.py) differ in, for the fitting and the
    # online updates below: MGIA also keeps the global transition graph.

    def absorb(self, sessions: list[np.ndarray]) -> None:
        """Sessions (item arrays) arriving: nothing for GAG."""

    def copy(self) -> GAGModel:
        """A copy to train, leaving this one (perhaps in service) as it is."""
        return dataclasses.replace(
            self,
            net=copy.deepcopy(self.net),
            known_items=self.known_items.copy(),
            known_users=self.known_users.copy(),
        )

    def item_vectors(self) -> np.ndarray:
        """(n_items, d): the vectors that score the items (the Wasserstein ground space)."""
        return self.net.items.weight[1:].detach().numpy()

    def scores(self, prefixes: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        """(B, n_items) scores for each prefix (items oldest first) and its user (-1 or one
        the model has not learnt: none)."""
        self.net.eval()
        with torch.no_grad():
            return self.net(Graphs.of(prefixes), self._user_rows(users)).numpy()

    def session_scores(self, session: np.ndarray, user: int) -> np.ndarray:
        """(n_items,) float32 scores of one live session (items oldest first, the latest
        max_length kept) for its user: what serving asks, as `scoring` gives it."""
        table, vector = self.scoring(session, user)
        return table @ vector

    def scoring(self, session: np.ndarray, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(the item table (n_items, d), the session's vector (d,)): item i scores
        table[i] · vector. The net's forward pass in numpy (gag_net.numpy_session_vector):
        torch's per-call overhead is most of a request this small (1.1 ms against 0.1);
        tests hold the two to the same scores."""
        vector = numpy_session_vector(self._weights, *self._served_input(session, user))
        return self._item_table, vector

    @functools.cached_property
    def _item_table(self) -> np.ndarray:
        """One array for every request: the generator keeps its learnt rows per table."""
        return self._weights["items.weight"][1:]

    def _served_input(self, session: np.ndarray, user: int) -> tuple[Graphs, int]:
        """One live session's graph (its latest max_length items) and its user's row in the
        user table (0: none, or a user the model has not learnt)."""
        session = np.asarray(session[-self.max_length :], dtype=np.int64)
        row = user + 1 if 0 <= user < len(self.known_users) and self.known_users[user] else 0
        return Graphs.one(session), row

    @functools.cached_property
    def _weights(self) -> dict[str, np.ndarray]:
        """The net's weights as arrays, read once: a served model is never trained in place
        (updates train a copy)."""
        return {name: value.detach().numpy() for name, value in self.net.state_dict().items()}

    def save(self, directory: Path) -> None:
        save_graph_model(self, directory / FILE)

    @classmethod
    def load(cls, directory: Path) -> GAGModel | None:
        saved = read_graph_model(directory / FILE, "items.weight")
        if saved is None:
            return None  # none trained: sessions.models did not name it
        items = saved.state["items.weight"]
        layers = len({k.split(".")[1] for k in saved.state if k.startswith("layers.")})
        net = GAGNet(saved.n_items, saved.n_users, items.shape[1], layers, dropout=0.0)
        net.load_state_dict(saved.state)  # refuses missing, extra or misshapen weights
        net.eval()
        return cls(net, saved.known_items, saved.known_users, saved.max_length)

    def _user_rows(self, users: np.ndarray) -> torch.Tensor:
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & self.known_users[np.maximum(users, 0)]
        return torch.as_tensor(np.where(known, users + 1, 0))


@dataclass(frozen=True)
class SavedGraphModel:
    """A GAG or MGIA file's arrays, checked: the net's weights and what the model knows."""

    arrays: dict[str, np.ndarray]
    state: dict[str, torch.Tensor]  # the net's state dict
    known_items: np.ndarray
    known_users: np.ndarray
    max_length: int

    @property
    def n_items(self) -> int:
        return len(self.known_items)

    @property
    def n_users(self) -> int:
        return len(self.known_users)


def save_graph_model(model: GAGModel, path: Path, **extra: np.ndarray) -> None:
    """Plain arrays (no pickle): a damaged file is refused with a message, never run."""
    state = {f"{NET}{name}": value.numpy() for name, value in model.net.state_dict().items()}
    np.savez(
        path,
        **state,
        **extra,
        known_items=model.known_items,
        known_users=model.known_users,
        max_length=np.int64(model.max_length),
    )


def read_graph_model(
    path: Path, item_table: str, needed: tuple[str, ...] = ()
) -> SavedGraphModel | None:
    """What save_graph_model wrote, or None if there is no file; ValueError naming what is
    missing or misshapen (`item_table`: the weight with a row per item + 1, `needed`: the
    model's own arrays)."""
    if not path.exists():
        return None
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    missing = {"known_items", "known_users", "max_length", *needed} - set(arrays)
    if missing:
        raise ValueError(f"{path}: missing arrays {sorted(missing)}")
    state = {k[len(NET) :]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith(NET)}
    known_items, known_users = arrays["known_items"], arrays["known_users"]
    items, users = state.get(item_table), state.get("users.weight")
    if items is None or users is None:
        raise ValueError(f"{path}: no item or user table")
    if items.shape[0] != len(known_items) + 1 or users.shape[0] != len(known_users) + 1:
        raise ValueError(
            f"{path}: tables of {items.shape[0]} items and {users.shape[0]} users for "
            f"{len(known_items)} and {len(known_users)} known"
        )
    return SavedGraphModel(
        arrays,
        state,
        known_items.astype(bool),
        known_users.astype(bool),
        int(arrays["max_length"]),
    )


def fit_gag_on(data: TrainingData, config: SessionsConfig) -> GAGModel | None:
    """GAG trained on the data's sessions (as the nightly cuts them for SSRM); None, with a
    log line, if there are too few."""
    sessions = training_sessions(data, config)
    if len(sessions) < 2:
        log.warning("gag: %d training sessions; none trained (see [sessions])", len(sessions))
        return None
    log.info("gag: %d sessions, %d events", len(sessions), len(sessions.items))
    return fit_gag(sessions, len(data.items), len(data.users), config.gag, config.max_length)


def samples_of(sessions: Sessions, max_length: int) -> tuple[Samples, np.ndarray]:
    """Every prefix of every session with its next item (as SSRM learns), and each sample's
    user."""
    samples = Samples.of(sessions, max_length - 1)
    return samples, sessions.users[samples.session]


def _step(model: GAGModel, optimizer, samples: Samples, users: np.ndarray, rows) -> float:
    model.net.train()
    scores = model.net(Graphs.of(samples.prefixes(rows)), model._user_rows(users[rows]))
    loss = nn.functional.cross_entropy(scores, torch.as_tensor(samples.targets[rows]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def fit_gag(
    sessions: Sessions, n_items: int, n_users: int, config: GAGConfig, max_length: int
) -> GAGModel:
    """Train on these sessions (in time order); the latest tenth picks the epoch kept (by
    the next item's mean reciprocal rank)."""

    def fresh() -> GAGModel:
        net = GAGNet(n_items, n_users, config.embedding_dim, config.layers, config.dropout)
        return GAGModel(net, np.zeros(n_items, bool), np.zeros(n_users, bool), max_length)

    return fit_graph_model(fresh, sessions, config, "gag")


def fit_graph_model(
    fresh: Callable[[], GAGModel], sessions: Sessions, config: GraphModelConfig, name: str
) -> GAGModel:
    """Train a fresh GAG or MGIA model (`fresh()`, made under the seed) on these sessions
    (in time order), as §III.C and §IV.C do; the latest tenth picks the epoch kept (by the
    next item's mean reciprocal rank), and joins the model (MGIA's global graph) only then."""
    cut = len(sessions) - len(sessions) // 10
    with seeded(config.random_state):
        model = fresh()
        net = model.net
        model.known_items[sessions.items[: sessions.offsets[cut]]] = True
        model.known_users[sessions.users[:cut]] = True
        model.absorb([sessions[s] for s in range(cut)])
        train, users = samples_of(sessions.take(np.arange(cut)), model.max_length)
        valid = samples_of(sessions.take(np.arange(cut, len(sessions))), model.max_length)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
        random = np.random.default_rng(config.random_state)
        best, best_state = -1.0, None
        for epoch in range(config.epochs):
            order = random.permutation(len(train))
            for start in range(0, len(order), config.batch_size):
                _step(model, optimizer, train, users, order[start : start + config.batch_size])
            mrr = _mrr(model, *valid) if len(valid[0]) else 0.0
            log.info("%s epoch %d: validation MRR %.4f", name, epoch + 1, mrr)
            if mrr > best:
                best, best_state = mrr, copy.deepcopy(net.state_dict())
        if best_state is not None:
            net.load_state_dict(best_state)
    model.known_items[sessions.items] = True
    model.known_users[sessions.users] = True
    model.absorb([sessions[s] for s in range(cut, len(sessions))])
    net.eval()
    return model


def _mrr(model: GAGModel, samples: Samples, users: np.ndarray) -> float:
    """Mean reciprocal rank of the next item over the whole catalogue (meaningful at any
    catalogue size, where recall@20 of a 20-item catalogue is always 1)."""
    total = 0.0
    for start in range(0, len(samples), 512):
        rows = np.arange(start, min(start + 512, len(samples)))
        scores = model.scores(samples.prefixes(rows), users[rows])
        total += float((1.0 / target_ranks(scores, samples.targets[rows])).sum())
    return total / max(len(samples), 1)


def update_gag(
    model: GAGModel,
    new: list[SeenSession],
    held: list[SeenSession],
    config: GraphModelConfig,
    *,
    selection: str,
    sample_size: int,
    steps: int,
    random: np.random.Generator,
) -> GAGModel:
    """§III.D's update: `steps` mini-batch steps of `sample_size` sessions chosen from the
    new ones and those the reservoir holds (`held`; _draws). The caller offers the new ones
    to the reservoir after the update (§III.D: "после, а не до, как в SSRM"). The model
    given is not changed."""
    if selection not in GAG_SELECTIONS:
        raise ValueError(f"selection {selection!r} unknown; known: {', '.join(GAG_SELECTIONS)}")
    model = model.copy()
    model.absorb([s.items for s in new])  # MGIA: new sessions join the global graph first
    pool = [*new, *held]
    if pool and steps > 0:
        draws = _draws(model, pool, selection, sample_size, steps, config.update_new_share, random)
        for chosen in draws:  # what the update learns from is learnt: it has vectors now
            for c in chosen:
                model.known_items[pool[c].items] = True
                if pool[c].user >= 0:
                    model.known_users[pool[c].user] = True
        sessions = Sessions.of(
            [s.items for s in pool], [s.user for s in pool], np.zeros(len(pool), np.int64)
        )
        optimizer = torch.optim.Adam(model.net.parameters(), lr=config.learning_rate)
        with seeded(int(random.integers(1 << 31))):
            for chosen in draws:
                samples, users = samples_of(sessions.take(chosen), model.max_length)
                _step(model, optimizer, samples, users, np.arange(len(samples)))
        model.net.eval()
    return model


def _distances(model: GAGModel, pool: list[SeenSession], block: int = 1024) -> np.ndarray:
    """Each session's Wasserstein distance between the model's recommendation distribution
    for its prefix and its last item, `block` sessions at a time: a pool of 16k sessions
    over 100k items would otherwise hold three 6.5 GB matrices at once (MGIA's net steps its
    global graph once per call, so not much smaller)."""
    item_vectors = model.item_vectors()
    distances = np.empty(len(pool))
    for start in range(0, len(pool), block):
        part = pool[start : start + block]
        scores = model.scores([s.items[:-1] for s in part], np.array([s.user for s in part]))
        probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        targets = np.array([s.items[-1] for s in part])
        distances[start : start + len(part)] = wasserstein_to_items(
            probabilities, targets, item_vectors
        )
    return distances


def _draws(
    model: GAGModel,
    pool: list[SeenSession],
    selection: str,
    size: int,
    steps: int,
    new_share: float,
    random: np.random.Generator,
) -> list[np.ndarray]:
    """The sessions of each of the update's `steps` mini-batches, `size` each, as SSRM's
    updates draw them (so both learn from the same budget). "wasserstein": every session
    with a user or item the model has not learnt goes into every batch (up to `new_share` of
    it, in turn), the rest of each batch is drawn by the distance (wasserstein_selection);
    "uniform": all alike."""
    if selection == UNIFORM:
        return [
            random.choice(len(pool), size=min(size, len(pool)), replace=False) for _ in range(steps)
        ]
    is_new = np.array(
        [
            not model.known_items[s.items].all() or (s.user >= 0 and not model.known_users[s.user])
            for s in pool
        ]
    )
    distances = _distances(model, pool)
    new = random.permutation(np.flatnonzero(is_new))
    # "сразу включаются в выборку": every batch takes the new ones, up to its share of new
    # ones; where there are more, each takes the next share of them, round the list (a
    # batch of new ones only would forget what the reservoir holds)
    share = max(int(size * new_share), 1)
    if len(new) <= share:
        chunks = [new] * steps
    else:
        windows = np.arange(steps)[:, None] * share + np.arange(share)
        chunks = list(np.take(new, windows, mode="wrap"))
    draws = []
    for chunk in chunks:  # this step's new ones, the rest by distance
        taken = np.zeros(len(pool), dtype=bool)
        taken[chunk] = True
        quota = max(size - len(chunk), 0)
        draws.append(wasserstein_selection(taken, np.where(is_new, 0.0, distances), quota, random))
    return draws
