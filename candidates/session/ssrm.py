"""SSRM (seed 003 §II) as the bundle keeps and serves it: the trained network's weights as
arrays, scored in numpy (a 20-item session is a few hundred microseconds, no torch call on
the request path), and its fitting from the training data.

The MF half is our iALS (the "als" generator's vectors, held fixed): at training time each
session's user vector is the iALS step of the user's events before the session began
(candidates.als_steps, seed 004 "Пошагаем"), so no sample sees its own future; at serving,
the request's vector (the nearline's, when fresher).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import expit

from candidates.als_steps import solve_rows
from candidates.session.reservoir import Reservoir, SavedReservoir
from candidates.session.sessions import Sessions, split_sessions
from candidates.session.ssrm_net import Samples, SSRMNet, train
from recsys.arrays import run_positions
from recsys.config import ALSConfig, SessionsConfig, SSRMConfig
from recsys.interactions import TrainingData
from recsys.torch_runs import seeded

log = logging.getLogger(__name__)

FILE = "ssrm.npz"
META_FILE = "ssrm.json"
VALID_SHARE = 0.1  # the latest sessions, which pick the epoch kept
MIN_VALID_SESSIONS = 20
USER_HISTORY = 500  # a session's user vector is stepped from at most this many latest events
TIME_SHIFT = 1 << 34  # user * TIME_SHIFT + time orders events by user, then time
# SSRMModel's arrays and the torch net's state they come from (and go back to)
NET_STATE = {
    "embedding": "embedding.weight",
    "input_weights": "gru.weight_ih_l0",
    "hidden_weights": "gru.weight_hh_l0",
    "input_bias": "gru.bias_ih_l0",
    "hidden_bias": "gru.bias_hh_l0",
    "transform": "transform.weight",
}


@dataclass(frozen=True)
class SSRMModel:
    embedding: np.ndarray  # (n_items + 1, d): row i + 1 is item i; row 0 pads
    input_weights: np.ndarray  # (3h, d): the GRU's W_ir | W_iz | W_in (torch's layout)
    hidden_weights: np.ndarray  # (3h, h)
    input_bias: np.ndarray  # (3h,)
    hidden_bias: np.ndarray  # (3h,)
    transform: np.ndarray  # (d, 2h): B
    mf_scale: float  # τ
    mix: float  # w
    max_length: int  # the session's newest items read
    # bool per item: in a session the model learnt from (every item for models saved before
    # this was kept). The generator proposes only these: the other rows learnt nothing but
    # the softmax's push down.
    known_items: np.ndarray
    history: tuple[dict, ...] = ()  # per training epoch: loss, validation recall

    @functools.cached_property
    def _folded_bias(self) -> np.ndarray:
        size = self.hidden_weights.shape[1]
        folded = self.input_bias.copy()
        folded[: 2 * size] += self.hidden_bias[: 2 * size]
        return folded

    @property
    def n_items(self) -> int:
        return len(self.embedding) - 1

    @classmethod
    def of(
        cls, net: SSRMNet, max_length: int, history: list[dict], known_items: np.ndarray
    ) -> SSRMModel:
        arrays = {
            k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()
        }
        return cls(
            **{name: arrays[key] for name, key in NET_STATE.items()},
            mf_scale=float(arrays["mf_scale"]),
            mix=float(net.mix),
            max_length=max_length,
            history=tuple(history),
            known_items=known_items,
        )

    def query(
        self, session: np.ndarray, user: np.ndarray | None, mf_items: np.ndarray
    ) -> np.ndarray:
        """B c for a session (item indices, oldest first) and the user's MF vector (None:
        unknown, uniform attention): the vector the session scores items with."""
        size = self.hidden_weights.shape[1]
        # torch's GRU (r, z, n): the input side of all steps at once, with the hidden-side
        # biases of r and z folded in; per step one matrix-vector product and a few ufuncs
        # (a request's budget is a millisecond: this loop is most of it)
        gates_in = self.embedding[session + 1] @ self.input_weights.T + self._folded_bias
        hidden_n_bias = self.hidden_bias[2 * size :]
        h = np.zeros(size, np.float32)
        states = np.empty((len(session), size), np.float32)
        for j in range(len(session)):
            gates_h = self.hidden_weights @ h
            reset_update = expit(gates_in[j, : 2 * size] + gates_h[: 2 * size])
            new = np.tanh(
                gates_in[j, 2 * size :]
                + reset_update[:size] * (gates_h[2 * size :] + hidden_n_bias)
            )
            h = new + reset_update[size:] * (h - new)  # (1 - z) n + z h
            states[j] = h
        mf = mf_items[session] @ user if user is not None else np.zeros(len(session), np.float32)
        attention = np.exp(mf - mf.max())
        attention /= attention.sum()
        context = np.concatenate([attention @ states, h])
        return (self.transform @ context).astype(np.float32)

    def scores(
        self, session: np.ndarray, user: np.ndarray | None, mf_items: np.ndarray
    ) -> np.ndarray:
        """(n_items,) float32: r_i = w (B c)ᵀ e_i + (1 - w) τ ⟨u, v_i⟩ (§II.B.3)."""
        table, vector = self.scoring(session, user, mf_items)
        return table @ vector

    def scoring(
        self, session: np.ndarray, user: np.ndarray | None, mf_items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the item table, the session's vector): §II.B.3's score as one product of
        [e_i; v_i] with [w B c; (1 - w) τ u], one pass over the catalogue's rows, which is
        most of a request's cost on a large catalogue. An unknown user (None) has u = 0."""
        session = np.asarray(session[-self.max_length :], dtype=np.int64)
        query = self.query(session, user, mf_items) * np.float32(self.mix)
        if user is None:
            mf = np.zeros(mf_items.shape[1], np.float32)
        else:
            mf = np.asarray(user, np.float32) * np.float32((1 - self.mix) * self.mf_scale)
        return self._joined(mf_items), np.concatenate([query, mf])

    def _joined(self, mf_items: np.ndarray) -> np.ndarray:
        """[e_i; v_i] per item (n_items, d + f), kept for the MF table last asked with."""
        kept = self.__dict__.get("_joined_table")  # frozen: the cache lives beside the fields
        if kept is None or kept[0] is not mf_items:
            table = np.hstack([self.embedding[1:], mf_items[: self.n_items]]).astype(np.float32)
            kept = (mf_items, table)
            self.__dict__["_joined_table"] = kept
        return kept[1]

    def save(self, directory: Path) -> None:
        arrays = {name: getattr(self, name) for name in NET_STATE}
        np.savez(directory / FILE, **arrays, known_items=self.known_items)
        meta = {
            "mf_scale": self.mf_scale,
            "mix": self.mix,
            "max_length": self.max_length,
            "history": list(self.history),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> SSRMModel | None:
        if not (directory / FILE).exists():
            return None  # none trained: sessions.models did not name it
        meta = json.loads((directory / META_FILE).read_text())
        with np.load(directory / FILE) as saved:
            arrays = {name: saved[name] for name in saved.files}
        if "embedding" in arrays:  # models saved before known_items was kept knew every item
            arrays.setdefault("known_items", np.ones(len(arrays["embedding"]) - 1, bool))
        model = cls(
            **arrays,
            mf_scale=float(meta["mf_scale"]),
            mix=float(meta["mix"]),
            max_length=int(meta["max_length"]),
            history=tuple(meta.get("history", ())),
        )
        d, h = model.embedding.shape[1], model.hidden_weights.shape[1]
        shapes = {
            "input_weights": (3 * h, d),
            "hidden_weights": (3 * h, h),
            "input_bias": (3 * h,),
            "hidden_bias": (3 * h,),
            "transform": (d, 2 * h),
            "known_items": (model.n_items,),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{directory / FILE}: {name} is {arrays[name].shape}, not {shape}")
        return model


def training_sessions(data: TrainingData, config: SessionsConfig) -> Sessions:
    return split_sessions(
        data.event_users,
        data.event_items,
        data.event_times,
        config.timeout_seconds,
        config.min_length,
        config.max_length,
    )


def user_vectors_at_starts(
    data: TrainingData, sessions: Sessions, item_factors: np.ndarray, als: ALSConfig
) -> np.ndarray:
    """(n_sessions, f): each session's user vector from one iALS step over the user's events
    before the session began (at most USER_HISTORY latest), the item vectors fixed. A user
    with no earlier events gets zeros, as an unknown user gets at serving."""
    key = data.event_users * TIME_SHIFT + data.event_times
    order = np.argsort(key, kind="stable")
    key = key[order]
    end = np.searchsorted(key, sessions.users * TIME_SHIFT + sessions.starts, side="left")
    begin = np.maximum(
        np.searchsorted(key, sessions.users * TIME_SHIFT, side="left"), end - USER_HISTORY
    )
    counts = end - begin
    events = order[run_positions(begin, counts)]
    rows = sp.csr_matrix(
        (
            data.event_weights[events],
            (np.repeat(np.arange(len(sessions)), counts), data.event_items[events]),
        ),
        shape=(len(sessions), len(item_factors)),
    )
    rows.sum_duplicates()
    return solve_rows(item_factors, rows, als.alpha, als.regularization)


def fit_ssrm(
    data: TrainingData, item_factors: np.ndarray, config: SessionsConfig, als: ALSConfig
) -> SSRMModel | None:
    """Train SSRM on the data's sessions; None, with a log line, if there are too few."""
    sessions = training_sessions(data, config)
    if len(sessions) < 2:
        log.warning("ssrm: %d training sessions; none trained (see [sessions])", len(sessions))
        return None
    users = user_vectors_at_starts(data, sessions, item_factors, als)
    return fit_ssrm_on(sessions, users, item_factors, config)


def draw_reservoir(
    data: TrainingData, item_factors: np.ndarray, config: SessionsConfig, als: ALSConfig
) -> SavedReservoir | None:
    """The reservoir online updates of every session model start from: Algorithm R over the
    data's sessions in time order (§II.D.2), each held session with its user and the user's
    MF vector at its start; None if there are no sessions."""
    sessions = training_sessions(data, config)
    if not len(sessions):
        return None
    reservoir: Reservoir[int] = Reservoir(config.reservoir_size, seed=config.ssrm.random_state)
    reservoir.extend(range(len(sessions)))
    held = sessions.take(np.sort(np.asarray(reservoir.held, dtype=np.int64)))
    users = user_vectors_at_starts(data, held, item_factors, als)
    return SavedReservoir(held, users, seen=len(sessions))


def fit_ssrm_on(
    sessions: Sessions, users: np.ndarray, item_factors: np.ndarray, config: SessionsConfig
) -> SSRMModel:
    """Train SSRM on these sessions (in time order), each with its user's MF vector; the
    latest VALID_SHARE of them pick the epoch kept."""
    valid_share = VALID_SHARE if len(sessions) * VALID_SHARE >= MIN_VALID_SESSIONS else 0.0
    n_valid = int(len(sessions) * valid_share)
    cut = len(sessions) - n_valid
    width = config.max_length - 1
    valid = None
    if n_valid:
        valid = (Samples.of(sessions.take(np.arange(cut, len(sessions))), width), users[cut:])
    ssrm = config.ssrm
    log.info(
        "ssrm: %d sessions (%d for validation), %d events",
        len(sessions),
        n_valid,
        len(sessions.items),
    )
    with seeded(ssrm.random_state):
        net = SSRMNet(item_factors, ssrm)
        history = train(
            net,
            Samples.of(sessions.take(np.arange(cut)), width),
            users[:cut],
            ssrm,
            epochs=ssrm.epochs,
            valid=valid,
            seed=ssrm.random_state,
        )
    known = np.zeros(len(item_factors), bool)
    known[sessions.items] = True  # validation sessions too: updates will learn from them
    return SSRMModel.of(net, config.max_length, history, known)


def torch_scores(net: SSRMNet, session: np.ndarray, user: np.ndarray) -> np.ndarray:
    """The net's own scores of one session (tests compare the numpy serving path with it)."""
    net.eval()
    with torch.no_grad():
        inputs = torch.as_tensor(session[None, :] + 1)
        lengths = torch.as_tensor([len(session)])
        return net(inputs, lengths, torch.as_tensor(user[None, :], dtype=torch.float32))[0].numpy()


def net_of(model: SSRMModel, mf_items: np.ndarray, config: SSRMConfig) -> SSRMNet:
    """The torch net holding the model's weights, to train further (online updates); the
    dimensions come from the model, the training settings from `config`."""
    config = dataclasses.replace(
        config,
        embedding_dim=model.embedding.shape[1],
        hidden=model.hidden_weights.shape[1],
        mix=model.mix,
    )
    net = SSRMNet(mf_items[: model.n_items], config)
    state = {key: getattr(model, name) for name, key in NET_STATE.items()}
    state["mf_scale"] = np.float32(model.mf_scale)
    net.load_state_dict(
        {name: torch.as_tensor(np.asarray(value)) for name, value in state.items()}, strict=False
    )
    return net
