"""Session models on a stream (seed 003 §V.E), part of `recsys evaluate --stage streaming`.

The protocol: a session is one user's events with short gaps (candidates.session.sessions,
[sessions]); sessions ordered by their end time, the first 60% pre-train every model, the
other 40% are cut into five chronological blocks. In each block every prefix of every
session asks for its next item: Recall@K and MRR@K of that item among all items. After a
block, the models that update learn from its sessions before the next one is measured.

What is compared (issue "Streaming session recommenders"):

- POP: the most frequent items of the sessions seen so far;
- S-POP: the prefix's own items by their count in it, then POP;
- SKNN: session item-kNN (Jannach & Ludewig 2017): the 100 past sessions most similar to
  the prefix (cosine of item sets) vote for their items with their similarity;
- iALS u·v: our iALS (trained before the first block) for the session's user, the vector
  stepped from the user's events before the session (seed 004 "Пошагаем"): the order-blind
  funnel's first stage, without session generators;
- SSRM without updates, with updates whose samples are drawn by active sampling (§II.D), and
  with uniformly drawn ones from the same reservoir.

POP and SKNN count every session seen before the block; the update cost is the CPU time of
an SSRM update (all threads).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from candidates.als import ALSModel
from candidates.session.gag import WASSERSTEIN, GAGModel, fit_gag, update_gag
from candidates.session.mgia import fit_mgia
from candidates.session.reservoir import Reservoir
from candidates.session.sessions import Sessions, target_ranks
from candidates.session.ssrm import (
    SSRMModel,
    fit_ssrm_on,
    net_of,
    training_sessions,
    user_vectors_at_starts,
)
from candidates.session.ssrm_net import Samples
from candidates.session.updates import ACTIVE, UNIFORM, SeenSession, update_ssrm
from pipelines.training_data import build_training_data
from recsys.config import Config
from recsys.dataset import Dataset

POP, SPOP, SKNN, IALS = "POP", "S-POP", "SKNN", "iALS u·v"
SSRM_STATIC, SSRM_ACTIVE, SSRM_UNIFORM = (
    "SSRM, no updates",
    "SSRM, active sampling",
    "SSRM, uniform sampling",
)
GAG_STATIC, GAG_WASSERSTEIN, GAG_UNIFORM = (
    "GAG, no updates",
    "GAG, Wasserstein selection",
    "GAG, uniform sampling",
)
MGIA_STATIC, MGIA_WASSERSTEIN, MGIA_UNIFORM = (
    "MGIA, no updates",
    "MGIA, Wasserstein selection",
    "MGIA, uniform sampling",
)
METHODS = (
    POP,
    SPOP,
    SKNN,
    IALS,
    SSRM_STATIC,
    SSRM_ACTIVE,
    SSRM_UNIFORM,
    GAG_STATIC,
    GAG_WASSERSTEIN,
    GAG_UNIFORM,
    MGIA_STATIC,
    MGIA_WASSERSTEIN,
    MGIA_UNIFORM,
)
NEIGHBOUR_SESSIONS = 100
TRAIN_SHARE = 0.6


@dataclass(frozen=True)
class PrefixScore:
    predictions: int  # prefixes asked in the block
    recall: float
    mrr: float
    recall_se: float
    update_seconds: float  # CPU seconds of the update before this block (0 for the first)


@dataclass
class SessionStreamResult:
    dataset: str
    k: int
    blocks: int
    sessions: int  # in the stream, after the length filter
    pretrain_seconds: float = 0.0  # SSRM's pre-training, wall clock
    scores: dict[str, list[PrefixScore]] = field(default_factory=dict)

    def mean_recall(self, method: str) -> float:
        return float(np.mean([s.recall for s in self.scores[method]]))

    def mean_mrr(self, method: str) -> float:
        return float(np.mean([s.mrr for s in self.scores[method]]))


def evaluate_session_streaming(
    dataset: Dataset,
    config: Config,
    *,
    k: int = 20,
    n_blocks: int = 5,
    show_progress: bool = False,
) -> SessionStreamResult:
    data = build_training_data(dataset, config)
    found = training_sessions(data, config.sessions)
    stream = found.take(np.lexsort((np.arange(len(found)), found.ends)))  # by end time
    n_train = round(len(stream) * TRAIN_SHARE)
    if n_train < 2 or len(stream) - n_train < n_blocks:
        raise ValueError(f"{len(stream)} sessions are too few for a streaming evaluation")
    bounds = np.linspace(n_train, len(stream), n_blocks + 1).round().astype(np.int64)
    first_block_start = int(stream.starts[n_train:].min())
    before = data.event_times < first_block_start
    history = sp.csr_matrix(
        (data.event_weights[before], (data.event_users[before], data.event_items[before])),
        shape=data.interactions.shape,
    )
    ials = ALSModel.fit(history.tocsr(), config.als)
    users = user_vectors_at_starts(data, stream, ials.item_factors, config.als)
    n_items = len(data.items)
    result = SessionStreamResult(dataset.name, k, n_blocks, len(stream))
    progress = tqdm(
        total=len(METHODS) * n_blocks, desc="sessions", unit="block", disable=not show_progress
    )

    def blocks(method: str, scorer) -> None:
        rows = []
        for b in range(n_blocks):
            progress.set_postfix_str(f"{method}, block {b + 1}")
            rows.append(scorer(b))
            progress.update()
        result.scores[method] = rows

    seen = lambda b: stream.take(np.arange(bounds[b]))  # noqa: E731 - sessions before block b
    block = lambda b: np.arange(bounds[b], bounds[b + 1])  # noqa: E731
    width = max(int(stream.lengths.max()) - 1, 1)
    asked = [Samples.of(stream.take(block(b)), width) for b in range(n_blocks)]  # every method's
    blocks(POP, lambda b: _score(asked[b], block(b), _popularity_scorer(seen(b), n_items), k))
    blocks(
        SPOP, lambda b: _score(asked[b], block(b), _session_popularity_scorer(seen(b), n_items), k)
    )
    blocks(SKNN, lambda b: _score(asked[b], block(b), _sknn_scorer(seen(b), n_items), k))
    blocks(IALS, lambda b: _score(asked[b], block(b), _ials_scorer(users, ials.item_factors), k))

    started = time.perf_counter()
    pretrain = np.arange(n_train)
    ssrm = fit_ssrm_on(stream.take(pretrain), users[pretrain], ials.item_factors, config.sessions)
    result.pretrain_seconds = time.perf_counter() - started
    blocks(
        SSRM_STATIC,
        lambda b: _score(
            asked[b], block(b), _ssrm_scorer(ssrm, users, ials.item_factors, config), k
        ),
    )
    sessions = config.sessions

    def updating(method: str, model, scorer_of, update, seed: int) -> None:
        """Score each block with the model so far, then update it on the block: the CPU
        time of the update made before a block is that block's cost."""
        reservoir: Reservoir[SeenSession] = Reservoir(sessions.reservoir_size, seed=0)
        reservoir.extend(_seen(stream, users, pretrain))
        random, cost, rows = np.random.default_rng(seed), 0.0, []
        for b in range(n_blocks):
            progress.set_postfix_str(f"{method}, block {b + 1}")
            score = _score(asked[b], block(b), scorer_of(model), k)
            rows.append(dataclasses.replace(score, update_seconds=cost))
            progress.update()
            if b == n_blocks - 1:
                break
            clock = time.process_time()
            new = _seen(stream, users, block(b))
            model = update(model, new, reservoir.held, random)
            reservoir.extend(new)  # after the update (its pool has the new ones already)
            cost = time.process_time() - clock
        result.scores[method] = rows

    def ssrm_scorer(model: SSRMModel):
        return _ssrm_scorer(model, users, ials.item_factors, config)

    for method, selection in ((SSRM_ACTIVE, ACTIVE), (SSRM_UNIFORM, UNIFORM)):
        updating(
            method,
            ssrm,
            ssrm_scorer,
            lambda model, new, held, random, selection=selection: update_ssrm(
                model,
                new,
                held,
                ials.item_factors,
                sessions.ssrm,
                selection=selection,
                sample_size=sessions.update_sample,
                steps=sessions.update_steps,
                random=random,
            ),
            sessions.ssrm.random_state,
        )

    graph_models = (
        (fit_gag, sessions.gag, (GAG_STATIC, GAG_WASSERSTEIN, GAG_UNIFORM)),
        (fit_mgia, sessions.mgia, (MGIA_STATIC, MGIA_WASSERSTEIN, MGIA_UNIFORM)),
    )
    for fit, settings, (static, wasserstein, uniform) in graph_models:
        model = fit(stream.take(pretrain), n_items, len(data.users), settings, sessions.max_length)
        blocks(static, lambda b, m=model: _score(asked[b], block(b), _gag_scorer(m, stream), k))
        for method, selection in ((wasserstein, WASSERSTEIN), (uniform, UNIFORM)):
            updating(
                method,
                model,
                lambda m: _gag_scorer(m, stream),
                lambda m, new, held, random, selection=selection, settings=settings: update_gag(
                    m,
                    new,
                    held,
                    settings,
                    selection=selection,
                    sample_size=sessions.update_sample,
                    steps=sessions.update_steps,
                    random=random,
                ),
                settings.random_state,
            )
    progress.close()
    return result


def _gag_scorer(model: GAGModel, stream: Sessions):
    def score(samples: Samples, chosen: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return model.scores(samples.prefixes(rows), stream.users[chosen[samples.session[rows]]])

    return score


def _seen(stream: Sessions, users: np.ndarray, chosen: np.ndarray) -> list[SeenSession]:
    return [SeenSession(stream[s], users[s], int(stream.users[s])) for s in chosen]


def _score(samples: Samples, chosen: np.ndarray, scorer, k: int) -> PrefixScore:
    """Recall@k and MRR@k of each prefix's next item, the samples of the sessions `chosen`;
    `scorer(samples, chosen, rows)` gives (len(rows), n_items) scores for a chunk of them."""
    hits, reciprocal = np.zeros(len(samples)), np.zeros(len(samples))
    for start in range(0, len(samples), 512):
        rows = np.arange(start, min(start + 512, len(samples)))
        scores = np.asarray(scorer(samples, chosen, rows), dtype=np.float64)
        rank = target_ranks(scores, samples.targets[rows])
        hits[rows] = rank <= k
        reciprocal[rows] = np.where(rank <= k, 1.0 / rank, 0.0)
    n = len(samples)
    return PrefixScore(
        predictions=n,
        recall=float(hits.mean()) if n else 0.0,
        mrr=float(reciprocal.mean()) if n else 0.0,
        recall_se=float(hits.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        update_seconds=0.0,
    )


def _prefix_matrix(samples: Samples, rows: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(len(rows), n_items): how often each item occurs in each prefix."""
    inputs = samples.inputs[rows]
    r, c = np.nonzero(inputs)
    return sp.csr_matrix(
        (np.ones(len(r), np.float32), (r, inputs[r, c] - 1)), shape=(len(rows), n_items)
    )


def _popularity(seen: Sessions, n_items: int) -> np.ndarray:
    return np.bincount(seen.items, minlength=n_items).astype(np.float64)


def _popularity_scorer(seen: Sessions, n_items: int):
    popularity = _popularity(seen, n_items)
    return lambda samples, chosen, rows: np.broadcast_to(popularity, (len(rows), n_items))


def _session_popularity_scorer(seen: Sessions, n_items: int):
    popularity = _popularity(seen, n_items)
    tie_break = popularity / (popularity.max() + 1)  # below one count in the prefix
    return lambda samples, chosen, rows: (
        _prefix_matrix(samples, rows, n_items).toarray() + tie_break[None, :]
    )


def _sknn_scorer(seen: Sessions, n_items: int):
    rows_of = np.repeat(np.arange(len(seen)), seen.lengths)
    past = sp.csr_matrix(
        (np.ones(len(seen.items), np.float32), (rows_of, seen.items)), shape=(len(seen), n_items)
    )
    past.data[:] = 1.0  # item sets
    past_norms = np.sqrt(np.asarray(past.sum(axis=1)).ravel()) + 1e-9

    def score(samples: Samples, chosen: np.ndarray, rows: np.ndarray) -> np.ndarray:
        prefix = _prefix_matrix(samples, rows, n_items)
        prefix.data[:] = 1.0
        norms = np.sqrt(np.asarray(prefix.sum(axis=1)).ravel()) + 1e-9
        similarity = (prefix @ past.T).toarray() / norms[:, None] / past_norms[None, :]
        if similarity.shape[1] > NEIGHBOUR_SESSIONS:
            cut = np.argpartition(-similarity, NEIGHBOUR_SESSIONS - 1, axis=1)[
                :, NEIGHBOUR_SESSIONS:
            ]
            np.put_along_axis(similarity, cut, 0.0, axis=1)
        return np.asarray(past.T @ similarity.T).T  # Σ over neighbours of similarity · items

    return score


def _ials_scorer(users: np.ndarray, item_factors: np.ndarray):
    def score(samples: Samples, chosen: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return users[chosen[samples.session[rows]]] @ item_factors.T

    return score


def _ssrm_scorer(model: SSRMModel, users: np.ndarray, item_factors: np.ndarray, config: Config):
    net = net_of(model, item_factors, config.sessions.ssrm)
    net.eval()

    @torch.no_grad()
    def score(samples: Samples, chosen: np.ndarray, rows: np.ndarray) -> np.ndarray:
        inputs, lengths = samples.inputs[rows], samples.lengths[rows]
        vectors = torch.as_tensor(users[chosen[samples.session[rows]]], dtype=torch.float32)
        return net(torch.as_tensor(inputs), torch.as_tensor(lengths), vectors).numpy()

    return score
