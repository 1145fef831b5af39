"""`recsys evaluate --stage streaming`: how iALS keeps up with a stream of new events.

seed 003, §V.E (pipelines.splits.streaming_split): pre-train on the first 60% of sessions,
cut the other 40% into five chronological blocks, and for each block recommend, measure
Recall@K and MRR@K on what its users did in the block, then update before the next one.
Four ways to update (issue "Near-realtime ALS steps"):

- "no updates": the pre-trained vectors all along;
- "ALS steps": after each block, vectors for the items new in it and the hot ones (an item
  step with the user vectors fixed; nearline.item_step_events), then for the users who acted
  (a user step with the item vectors fixed), as the nearline worker does
  (candidates.als_steps, seed 004 "Пошагаем"); "new items only" never steps an item that
  has a vector (item_step_events = 0), the lecture's minimum;
- "steps + retrain": the steps, and a full retrain every `retrain_every` blocks (seed 004,
  "Перестанем шагать": the two pipelines of practice);
- "full retrain": iALS refitted on everything before each block.

What is measured is the iALS generator's order (u·v over the items that have a vector, the
user's seen items excluded), the list the als generator serves with an exact index: the
stage these updates change. A user without a vector (new since the last fit) gets the most
popular items of the history, the same for every strategy. The update cost is the CPU time
(all threads) of the update itself: the steps or the fit; R is kept up to date outside the
timing, as the event log keeps it for both.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from candidates.als import ALSModel
from candidates.als_steps import PendingItems, step_items_then_users
from pipelines.splits import StreamingSplit, streaming_split
from pipelines.synthetic import SyntheticSpec
from pipelines.training_data import build_training_data
from recsys.arrays import top_k_batch
from recsys.config import Config
from recsys.dataset import Dataset
from recsys.ids import IdMap
from recsys.interactions import is_positive

NO_UPDATES, STEPS, STEPS_NEW_ITEMS, STEPS_AND_RETRAIN, RETRAIN = (
    "no updates",
    "ALS steps",
    "ALS steps, new items only",
    "steps + retrain",
    "full retrain",
)
STRATEGIES = (NO_UPDATES, STEPS, STEPS_NEW_ITEMS, STEPS_AND_RETRAIN, RETRAIN)


# The synthetic stream of the report: a shop whose item popularity drifts (each item's
# log-weight moves by about one unit from the middle of the window to either end) and where
# a fifth of the catalogue appears during the window.
SYNTHETIC_STREAM = SyntheticSpec(
    n_users=20_000, n_items=5_000, n_events=400_000, drift=1.0, new_item_share=0.2, seed=3
)


@dataclass(frozen=True)
class BlockScore:
    users: int  # users with a new positive in the block
    recall: float
    mrr: float
    recall_se: float
    update_seconds: float  # CPU seconds of the update made before this block (0 for the first)


@dataclass
class StreamingResult:
    dataset: str
    k: int
    retrain_every: int
    blocks: int
    scores: dict[str, list[BlockScore]] = field(default_factory=dict)
    pretrain_seconds: float = 0.0

    def mean_recall(self, strategy: str) -> float:
        return float(np.mean([s.recall for s in self.scores[strategy]]))

    def mean_mrr(self, strategy: str) -> float:
        return float(np.mean([s.mrr for s in self.scores[strategy]]))

    def update_seconds(self, strategy: str) -> float:
        return float(sum(s.update_seconds for s in self.scores[strategy]))

    def steps_against_retrain(self) -> tuple[float, float]:
        """The issue's two ratios: ALS steps' mean Recall@K over full retrain's, and their
        update compute over full retrain's."""
        recall = self.mean_recall(STEPS) / max(self.mean_recall(RETRAIN), 1e-12)
        cost = self.update_seconds(STEPS) / max(self.update_seconds(RETRAIN), 1e-12)
        return recall, cost


@dataclass
class _Vectors:
    users: np.ndarray
    items: np.ndarray
    pending: PendingItems  # events per item since its last step (fit: none pending)


def evaluate_streaming(
    dataset: Dataset,
    config: Config,
    *,
    k: int = 20,
    retrain_every: int = 2,
    n_blocks: int = 5,
    show_progress: bool = False,
) -> StreamingResult:
    """Every strategy over the same split; see the module docstring."""
    split = streaming_split(dataset, n_blocks=n_blocks)
    users = IdMap.from_values(dataset.events["user_id"])
    items = IdMap.from_values(dataset.items["item_id"])
    stream = _Stream(split, users, items, config)
    result = StreamingResult(dataset.name, k, retrain_every, n_blocks)
    started = time.perf_counter()
    pretrained = stream.fit(0)
    result.pretrain_seconds = time.perf_counter() - started
    progress = tqdm(
        total=len(STRATEGIES) * n_blocks, desc="streaming", unit="block", disable=not show_progress
    )
    for strategy in STRATEGIES:
        vectors, scores, cost = (
            dataclasses.replace(pretrained, pending=stream.no_pending()),
            [],
            0.0,
        )
        for block in range(n_blocks):
            progress.set_postfix_str(f"{strategy}, block {block + 1}")
            scores.append(stream.score(block, vectors, k, cost))
            progress.update()
            if block == n_blocks - 1:
                break  # nothing is measured after the last block
            started = time.process_time()  # CPU seconds of every thread: the compute
            vectors = _UPDATES[strategy](stream, vectors, block, retrain_every)
            cost = time.process_time() - started
        result.scores[strategy] = scores
    progress.close()
    return result


class _Stream:
    """The split as matrices over one id space: R of the history before each block, and
    each block's new positives per user."""

    def __init__(self, split: StreamingSplit, users: IdMap, items: IdMap, config: Config) -> None:
        self.split, self.users, self.items, self.config = split, users, items, config
        self._histories = [self._history(b) for b in range(len(split.blocks) + 1)]
        self._transposed = [h.T.tocsr() for h in self._histories]

    def history(self, block: int) -> sp.csr_matrix:
        """R (seed 004 "ALS") over the events before blocks[block]. Made once, before any
        update is timed: a live system keeps R as events arrive, whichever way it updates."""
        return self._histories[block]

    def history_by_item(self, block: int) -> sp.csr_matrix:
        return self._transposed[block]

    def _history(self, block: int) -> sp.csr_matrix:
        history = self.split.history_before(block)
        return build_training_data(history, self.config, self.users).interactions

    def fit(self, block: int) -> _Vectors:
        model = ALSModel.fit(self.history(block), self.config.als)
        return _Vectors(model.user_factors, model.item_factors, self.no_pending())

    def no_pending(self) -> PendingItems:
        return PendingItems(len(self.items))

    def block_events(self, block: int):
        return self.split.blocks[block].events

    def score(self, block: int, vectors: _Vectors, k: int, cost: float) -> BlockScore:
        history = self.history(block)
        events = self.block_events(block)
        positive = events[is_positive(events, self.config)]
        user_index = self.users.to_index(positive["user_id"].to_numpy())
        item_index = self.items.to_index(positive["item_id"].to_numpy())
        wanted = sp.csr_matrix(
            (np.ones(len(user_index), np.float32), (user_index, item_index)), shape=history.shape
        )
        wanted.data[:] = 1.0
        wanted = (wanted - wanted.multiply(history != 0)).tocsr()  # new items for the user
        wanted.eliminate_zeros()
        evaluated = np.flatnonzero(np.diff(wanted.indptr) > 0)
        if not len(evaluated):
            return BlockScore(0, 0.0, 0.0, 0.0, cost)
        lists = _recommend(vectors, history, evaluated, k)
        hits = np.zeros(len(evaluated))
        reciprocal = np.zeros(len(evaluated))
        for row, user in enumerate(evaluated):
            relevant = wanted.indices[wanted.indptr[user] : wanted.indptr[user + 1]]
            found = np.isin(lists[row], relevant)
            hits[row] = found.sum() / len(relevant)
            if found.any():
                reciprocal[row] = 1.0 / (1 + int(np.argmax(found)))
        return BlockScore(
            users=len(evaluated),
            recall=float(hits.mean()),
            mrr=float(reciprocal.mean()),
            recall_se=float(hits.std(ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else 0.0,
            update_seconds=cost,
        )


def _recommend(vectors: _Vectors, history: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
    """Top-k by u·v among items with a vector, seen ones excluded; popularity for users
    without a vector."""
    seen = history[users]
    scores = vectors.users[users] @ vectors.items.T
    scores[:, ~np.any(vectors.items != 0, axis=1)] = -np.inf  # no vector: not servable
    cold = ~np.any(vectors.users[users] != 0, axis=1)
    popularity = np.asarray((history != 0).sum(axis=0), dtype=np.float32).ravel()
    scores[cold] = popularity
    return top_k_batch(scores, k, seen)


def _no_update(stream: _Stream, vectors: _Vectors, block: int, every: int) -> _Vectors:
    return vectors


def _steps(
    stream: _Stream, vectors: _Vectors, block: int, every: int, item_step_events: int = -1
) -> _Vectors:
    events = stream.block_events(block)
    acted = np.unique(stream.users.to_index(events["user_id"].to_numpy()))
    vectors.pending.add(stream.items.to_index(events["item_id"].to_numpy()))
    if item_step_events < 0:
        item_step_events = stream.config.nearline.item_step_events
    items = vectors.pending.due(vectors.items, item_step_events)
    als = stream.config.als
    user_factors, item_factors = vectors.users.copy(), vectors.items.copy()
    step_items_then_users(
        user_factors,
        item_factors,
        items,
        stream.history_by_item(block + 1)[items],
        acted,
        stream.history(block + 1)[acted],
        als.alpha,
        als.regularization,
        stream.config.nearline.warm_quantile,
    )
    return _Vectors(user_factors, item_factors, vectors.pending)


def _steps_new_items(stream: _Stream, vectors: _Vectors, block: int, every: int) -> _Vectors:
    return _steps(stream, vectors, block, every, item_step_events=0)


def _steps_and_retrain(stream: _Stream, vectors: _Vectors, block: int, every: int) -> _Vectors:
    if (block + 1) % every == 0:
        return stream.fit(block + 1)
    return _steps(stream, vectors, block, every)


def _retrain(stream: _Stream, vectors: _Vectors, block: int, every: int) -> _Vectors:
    return stream.fit(block + 1)


_UPDATES: dict[str, Callable[[_Stream, _Vectors, int, int], _Vectors]] = {
    NO_UPDATES: _no_update,
    STEPS: _steps,
    STEPS_NEW_ITEMS: _steps_new_items,
    STEPS_AND_RETRAIN: _steps_and_retrain,
    RETRAIN: _retrain,
}
