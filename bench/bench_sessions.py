"""What the session models cost: SSRM's, GAG's and MGIA's training, one online update of each
(as `recsys session-updater` runs it, by the model's own selection rule), and the serving CPU
each generator (and its ranking feature, the same memoised scores) adds to a request with a
50-item session.

.venv/bin/python bench/bench_sessions.py                    # MovieLens-100k (1682 items)
.venv/bin/python bench/bench_sessions.py --items 100000     # scoring a larger catalogue

Budget (issue "Streaming session recommenders"): at most 1 ms of CPU per request at p99.
Serving reads the newest sessions.max_length (20) items of the session.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from candidates.als import ALSModel
from candidates.session.gag import WASSERSTEIN, fit_gag_on, update_gag
from candidates.session.generator import MODEL_LOADERS, SESSION_GENERATORS, ssrm_generator
from candidates.session.live import LiveModel
from candidates.session.mgia import MGIAModel, fit_mgia_on
from candidates.session.mgia_net import GlobalGraph, MGIANet
from candidates.session.reservoir import Reservoir
from candidates.session.ssrm import fit_ssrm, training_sessions, user_vectors_at_starts
from candidates.session.updates import ACTIVE, SeenSession, update_ssrm
from pipelines.movielens import load_movielens_100k
from pipelines.training_data import build_training_data
from recsys.config import load_config
from recsys.context import RequestContext

BUDGET_MS = 1.0


def percentiles(values_ms: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(values_ms, [50, 90, 99])
    return f"p50 {p50:.3f} ms, p90 {p90:.3f} ms, p99 {p99:.3f} ms, max {values_ms.max():.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--session", type=int, default=50, help="items in each request's session")
    parser.add_argument("--items", type=int, default=0, help="widen the catalogue to this many")
    parser.add_argument("--updates", type=int, default=5)
    args = parser.parse_args()

    config = load_config()
    data = build_training_data(load_movielens_100k(config.data.cache_dir), config)
    als = ALSModel.fit(data.interactions, config.als)
    started = time.perf_counter()
    model = fit_ssrm(data, als.item_factors, config.sessions, config.als)
    print(f"training: {time.perf_counter() - started:.1f} s wall for {len(model.history)} epochs")

    sessions = training_sessions(data, config.sessions)
    users = user_vectors_at_starts(data, sessions, als.item_factors, config.als)
    seen = [
        SeenSession(sessions[s], users[s], int(sessions.users[s])) for s in range(len(sessions))
    ]
    budget = {"sample_size": config.sessions.update_sample, "steps": config.sessions.update_steps}

    def ssrm_update(new, held, random):
        return update_ssrm(
            model, new, held, als.item_factors, config.sessions.ssrm, selection=ACTIVE,
            random=random, **budget,
        )  # fmt: skip

    update_costs("SSRM", ssrm_update, seen, args.updates, config)

    item_factors = als.item_factors
    if args.items > model.n_items:  # a wider catalogue: random rows beside the trained ones
        extra = args.items - model.n_items
        grow = np.random.default_rng(1).standard_normal((extra, model.embedding.shape[1]))
        model = dataclasses.replace(
            model, embedding=np.vstack([model.embedding, grow * 0.1]).astype(np.float32)
        )
        more = np.random.default_rng(2).standard_normal((extra, item_factors.shape[1]))
        item_factors = np.vstack([item_factors, more * 0.1]).astype(np.float32)
    bundle = SimpleNamespace(
        ssrm=LiveModel("ssrm", model, MODEL_LOADERS["ssrm"]),
        als=SimpleNamespace(model=ALSModel(als.user_factors, item_factors)),
    )
    serving_cost(
        "session_ssrm", ssrm_generator(bundle), model.n_items, len(als.user_factors), args, config
    )

    started = time.perf_counter()
    gag = fit_gag_on(data, config.sessions)
    print(
        f"GAG training: {time.perf_counter() - started:.1f} s wall, "
        f"{config.sessions.gag.epochs} epochs"
    )
    update_costs("GAG", graph_update(gag, config.sessions.gag, budget), seen, args.updates, config)
    if args.items > gag.n_items:  # the same widening of its item table
        extra = args.items - gag.n_items
        grow = torch.as_tensor(
            np.random.default_rng(3).standard_normal((extra, gag.net.items.weight.shape[1])) * 0.1,
            dtype=torch.float32,
        )
        gag.net.items.weight = torch.nn.Parameter(torch.cat([gag.net.items.weight.detach(), grow]))
        gag = dataclasses.replace(gag, known_items=np.ones(args.items, bool))
    generator = SESSION_GENERATORS["gag"](SimpleNamespace(gag=LiveModel("gag", gag, None)))
    serving_cost("session_gag", generator, gag.n_items, len(als.user_factors), args, config)

    started = time.perf_counter()
    mgia = fit_mgia_on(data, config.sessions)
    print(
        f"MGIA training: {time.perf_counter() - started:.1f} s wall, "
        f"{config.sessions.mgia.epochs} epochs"
    )
    mgia_update = graph_update(mgia, config.sessions.mgia, budget)
    update_costs("MGIA", mgia_update, seen, args.updates, config)
    if args.items > mgia.n_items:
        mgia = widened_mgia(mgia, args.items)
    generator = SESSION_GENERATORS["mgia"](SimpleNamespace(mgia=LiveModel("mgia", mgia, None)))
    serving_cost("session_mgia", generator, mgia.n_items, len(als.user_factors), args, config)


def update_costs(name: str, update, seen: list[SeenSession], updates: int, config) -> None:
    """CPU of `updates` online updates, each on the next block of the later half of the
    sessions, with a reservoir of the earlier half (as the updater holds one)."""
    random = np.random.default_rng(0)
    reservoir: Reservoir[SeenSession] = Reservoir(config.sessions.reservoir_size, seed=0)
    reservoir.extend(seen[: len(seen) // 2])
    block = len(seen) // 2 // updates
    costs = []
    for u in range(updates):
        new = seen[len(seen) // 2 + u * block : len(seen) // 2 + (u + 1) * block]
        clock = time.process_time()
        update(new, list(reservoir.held), random)
        costs.append(time.process_time() - clock)
        reservoir.extend(new)
    print(
        f"{name} online update ({config.sessions.update_steps} steps of "
        f"{config.sessions.update_sample} sessions, {block} new + {len(reservoir)} in the "
        "reservoir): CPU " + ", ".join(f"{c:.2f}" for c in costs) + " s"
    )


def graph_update(model, settings, budget: dict):
    """GAG's or MGIA's update as the updater runs it (the Wasserstein selection)."""

    def update(new, held, random):
        return update_gag(
            model, new, held, settings, selection=WASSERSTEIN, random=random, **budget
        )

    return update


def widened_mgia(model: MGIAModel, n_items: int) -> MGIAModel:
    """The model over a wider catalogue: random local and starting global rows for the
    added items, the same global graph's edges (its GGNN runs over every item)."""
    state = model.net.state_dict()
    random = np.random.default_rng(5)
    for name in ("local.weight", "items.weight"):
        extra = n_items - model.n_items
        grow = random.standard_normal((extra, state[name].shape[1])) * 0.1
        state[name] = torch.cat([state[name], torch.as_tensor(grow, dtype=torch.float32)])
    net = MGIANet(n_items, len(model.known_users), state["local.weight"].shape[1], dropout=0.0)
    net.load_state_dict(state)
    graph = GlobalGraph(n_items)
    weights = model.graph.weights.tocoo()
    graph.weights = sp.csr_matrix((weights.data, (weights.row, weights.col)), shape=(n_items,) * 2)
    wide = MGIAModel(net, np.ones(n_items, bool), model.known_users, model.max_length, graph)
    net.set_graph(graph)
    net.eval()
    return wide


def serving_cost(name, generator, n_items: int, n_users: int, args, config) -> None:
    """CPU of the generator's answer and its ranking feature (the same memoised scores), on
    one torch and one BLAS thread as a serving worker runs (serving/grpc/server.py)."""
    torch.set_num_threads(1)
    random = np.random.default_rng(4)
    cpu = np.empty(args.requests)
    with threadpool_limits(1):
        for r in range(args.requests):
            session = random.choice(n_items, args.session, replace=False).astype(np.int64)
            ctx = RequestContext(user_index=int(random.integers(n_users)), sequence=session)
            clock = time.thread_time()
            generator.generate(ctx, config.serving.candidate_budget)
            generator.session_scores(ctx)  # the ranking feature: memoised, as in serving
            cpu[r] = (time.thread_time() - clock) * 1000
    p99 = np.percentile(cpu, 99)
    print(
        f"{name} serving CPU per request ({args.session}-item sessions, {n_items} items, "
        f"budget {config.serving.candidate_budget}): {percentiles(cpu)}; "
        f"p99 / budget {BUDGET_MS} ms = {p99 / BUDGET_MS:.2f}"
    )


if __name__ == "__main__":
    main()
