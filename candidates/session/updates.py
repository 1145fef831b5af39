"""Online updates of a session model between nightlies (seed 003 §II.D, §V.A).

"производить обновление модели (без полного переобучения модели) на основе выборки наиболее
информативных данных из комбинации: новых поступающих данных; выборки из исторических
данных, предварительно отобранных и сохраненных в резервуаре". One update (§II.D.4):

    for each new session: compute its prediction score;  for C ∪ R: the probabilities p_s
    while the update's budget lasts: draw a subset of C ∪ R by p_s, one mini-batch step
    the new sessions are offered to the reservoir (Algorithm R)

The budget is a number of mini-batch steps (a bounded time, as the seed's period T bounds
it). `selection` "active" draws by SSRM's active sampling; "uniform" draws every session of
C ∪ R alike, the reservoir-only baseline the seed compares with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from candidates.session.sampling import active_sample, prediction_scores
from candidates.session.sessions import Sessions
from candidates.session.ssrm import SSRMModel, net_of
from candidates.session.ssrm_net import Samples, gradient_step
from recsys.config import SSRMConfig
from recsys.torch_runs import seeded

ACTIVE, UNIFORM = "active", "uniform"
SELECTIONS = (ACTIVE, UNIFORM)


@dataclass(frozen=True, eq=False)  # arrays: identity, not element-wise ==
class SeenSession:
    """A finished session as the updater keeps it: its items (oldest first) and its user's
    MF vector when it was seen (zeros for a user without one)."""

    items: np.ndarray
    user_vector: np.ndarray
    user: int = -1  # the user's index, for models with user tables (GAG); -1 = unknown


def update_ssrm(
    model: SSRMModel,
    new: list[SeenSession],
    held: list[SeenSession],
    mf_items: np.ndarray,
    config: SSRMConfig,
    *,
    selection: str,
    sample_size: int,
    steps: int,
    random: np.random.Generator,
) -> SSRMModel:
    """The model after one update on the new sessions and those the reservoir holds
    (`held`); the caller offers the new ones to the reservoir after it (one reservoir may
    serve several models). The model given is not changed."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection {selection!r} unknown; known: {', '.join(SELECTIONS)}")
    pool = [*new, *held]
    if pool and steps > 0:
        sessions = Sessions.of(
            [s.items for s in pool], np.arange(len(pool)), np.zeros(len(pool), np.int64)
        )
        users = np.stack([s.user_vector for s in pool]).astype(np.float32)
        scores = prediction_scores(sessions, users, mf_items)
        net = net_of(model, mf_items, config)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
        user_rows = torch.as_tensor(users)
        known = model.known_items.copy()
        with seeded(int(random.integers(1 << 31))):  # dropout too: the same update every run
            for _ in range(steps):
                if selection == ACTIVE:
                    chosen = np.sort(active_sample(scores, sample_size, random))
                else:
                    size = min(sample_size, len(pool))
                    chosen = np.sort(random.choice(len(pool), size=size, replace=False))
                batch = sessions.take(chosen)
                samples = Samples.of(batch, model.max_length - 1)
                # each sample's row of `users`: its session's place in the pool
                samples = dataclasses.replace(samples, session=chosen[samples.session])
                gradient_step(net, optimizer, samples, user_rows, np.arange(len(samples)))
                known[batch.items] = True  # learnt from: proposed from now on
        net.eval()
        model = SSRMModel.of(net, model.max_length, list(model.history), known)
    return model
