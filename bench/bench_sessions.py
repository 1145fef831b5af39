"""What the session models cost: SSRM's, GAG's and MGIA's training, one online update of each
(as `recsys session-updater` runs it, by the model's own selection rule), and the serving CPU
each generator (and its ranking feature, the same memoised scores) adds to a request with a
50-item session.

.venv/bin/python bench/bench_sessions.py                    # MovieLens-100k (1682 items)
.venv/bin/python bench/bench_sessions.py --items 100000     # the tables widened to 100k items
.venv/bin/python bench/bench_sessions.py --shop 100000 --epochs 2  # trained on a 100k-item shop

A generator proposes only the items its model learnt from a session (candidates/session/
generator.py). With --items, the widened rows are random and `--known-share` of the whole
catalogue counts as learnt (default 0.18: what a model trained with --shop 100000 learnt; 1.0:
every item, the worst case). With --shop the models are trained on a synthetic shop (30k
users, 1.5M events) and the bench also measures what proposing only learnt items costs in
quality: how often the session's next new item is among the top 300 proposed, against the
top 300 of the whole catalogue by the same scores.

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
from pipelines.synthetic import generate_synthetic
from pipelines.training_data import build_training_data
from recsys.arrays import top_k
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
    parser.add_argument("--known-share", type=float, default=0.18, help="with --items")
    parser.add_argument("--shop", type=int, default=0, help="train on a shop of this many items")
    parser.add_argument("--epochs", type=int, default=0, help="0: the config's")
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--models", default="ssrm,gag,mgia", help="which, comma-separated")
    args = parser.parse_args()

    config = load_config()
    if args.epochs:
        config = config.replace(
            sessions={name: {"epochs": args.epochs} for name in ("ssrm", "gag", "mgia")}
        )
    if args.shop:
        dataset = generate_synthetic(30_000, args.shop, 1_500_000, seed=3, show_progress=True)
    else:
        dataset = load_movielens_100k(config.data.cache_dir)
    data = build_training_data(dataset, config)
    als = ALSModel.fit(data.interactions, config.als)
    sessions = training_sessions(data, config.sessions)
    users = user_vectors_at_starts(data, sessions, als.item_factors, config.als)
    seen = [
        SeenSession(sessions[s], users[s], int(sessions.users[s])) for s in range(len(sessions))
    ]
    budget = {"sample_size": config.sessions.update_sample, "steps": config.sessions.update_steps}

    run = SimpleNamespace(
        data=data, als=als, sessions=sessions, users=users, seen=seen, budget=budget,
        config=config, args=args,
    )  # fmt: skip
    for name in args.models.split(","):
        BENCHES[name](run)


def bench_ssrm(run: SimpleNamespace) -> None:
    data, als, config, args = run.data, run.als, run.config, run.args
    sessions, users, seen, budget = run.sessions, run.users, run.seen, run.budget
    started = time.perf_counter()
    model = fit_ssrm(data, als.item_factors, config.sessions, config.als)
    print(f"training: {time.perf_counter() - started:.1f} s wall for {len(model.history)} epochs")

    def ssrm_update(new, held, random):
        return update_ssrm(
            model, new, held, als.item_factors, config.sessions.ssrm, selection=ACTIVE,
            random=random, **budget,
        )  # fmt: skip

    update_costs("SSRM", ssrm_update, seen, args.updates, config)

    print(f"SSRM learnt {model.known_items.sum()} of {model.n_items} items from sessions")
    item_factors = als.item_factors
    if args.items > model.n_items:  # a wider catalogue: random rows beside the trained ones
        extra = args.items - model.n_items
        grow = np.random.default_rng(1).standard_normal((extra, model.embedding.shape[1]))
        model = dataclasses.replace(
            model,
            embedding=np.vstack([model.embedding, grow * 0.1]).astype(np.float32),
            known_items=widened_known(model.known_items, args.items, args.known_share),
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
    if args.shop:
        proposal_quality("session_ssrm", ssrm_generator(bundle), sessions, users, als)


def bench_gag(run: SimpleNamespace) -> None:
    data, als, config, args = run.data, run.als, run.config, run.args
    sessions, users, seen, budget = run.sessions, run.users, run.seen, run.budget
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
        known = widened_known(gag.known_items, args.items, args.known_share)
        gag = dataclasses.replace(gag, known_items=known)
    print(f"GAG learnt {gag.known_items.sum()} of {gag.n_items} items from sessions")
    generator = SESSION_GENERATORS["gag"](SimpleNamespace(gag=LiveModel("gag", gag, None)))
    serving_cost("session_gag", generator, gag.n_items, len(als.user_factors), args, config)
    if args.shop:
        proposal_quality("session_gag", generator, sessions, users, als)


def bench_mgia(run: SimpleNamespace) -> None:
    data, als, config, args = run.data, run.als, run.config, run.args
    sessions, users, seen, budget = run.sessions, run.users, run.seen, run.budget
    started = time.perf_counter()
    mgia = fit_mgia_on(data, config.sessions)
    print(
        f"MGIA training: {time.perf_counter() - started:.1f} s wall, "
        f"{config.sessions.mgia.epochs} epochs"
    )
    mgia_update = graph_update(mgia, config.sessions.mgia, budget)
    update_costs("MGIA", mgia_update, seen, args.updates, config)
    if args.items > mgia.n_items:
        mgia = widened_mgia(mgia, args.items, args.known_share)
    print(f"MGIA learnt {mgia.known_items.sum()} of {mgia.n_items} items from sessions")
    generator = SESSION_GENERATORS["mgia"](SimpleNamespace(mgia=LiveModel("mgia", mgia, None)))
    serving_cost("session_mgia", generator, mgia.n_items, len(als.user_factors), args, config)
    if args.shop:
        proposal_quality("session_mgia", generator, sessions, users, als)


BENCHES = {"ssrm": bench_ssrm, "gag": bench_gag, "mgia": bench_mgia}


def widened_known(known: np.ndarray, n_items: int, share: float) -> np.ndarray:
    """The learnt items of a catalogue widened to n_items: the trained ones, then a random
    pick of the added ones up to `share` of the whole."""
    wide = np.zeros(n_items, bool)
    wide[: len(known)] = known
    more = max(int(share * n_items) - int(known.sum()), 0)
    added = np.arange(len(known), n_items)
    wide[np.random.default_rng(6).choice(added, min(more, len(added)), replace=False)] = True
    return wide


def proposal_quality(name, generator, sessions, users: np.ndarray, als) -> None:
    """Over the latest tenth of the sessions: how often the next item, where it is new to
    the session, is among the 300 the generator proposes (the learnt items), against the
    300 best of the whole catalogue by the same scores."""
    proposed = whole = cases = 0
    for s in range(len(sessions) - len(sessions) // 10, len(sessions)):
        items = sessions[s]
        for j in range(1, len(items)):
            if items[j] in items[:j]:
                continue
            ctx = RequestContext(
                user_index=int(sessions.users[s]),
                sequence=items[:j][::-1].astype(np.int64),
                user_vector=users[s],
            )
            scores = generator.scores_of(ctx, np.arange(len(als.item_factors)))
            scores[items[:j]] = -np.inf
            whole += int(items[j] in top_k(scores, 300))
            proposed += int(items[j] in generator.generate(ctx, 300).item_ids)
            cases += 1
    print(
        f"{name}: next new item among the top 300 in {cases} cases: proposed (learnt items) "
        f"{proposed / max(cases, 1):.3f}, whole catalogue {whole / max(cases, 1):.3f}"
    )


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


def widened_mgia(model: MGIAModel, n_items: int, known_share: float) -> MGIAModel:
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
    known = widened_known(model.known_items, n_items, known_share)
    wide = MGIAModel(net, known, model.known_users, model.max_length, graph)
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
            candidates = random.choice(n_items, 1000, replace=False)  # the union's size
            clock = time.thread_time()
            generator.generate(ctx, config.serving.candidate_budget)
            generator.scores_of(ctx, candidates)  # the ranking feature: memoised, as in serving
            cpu[r] = (time.thread_time() - clock) * 1000
    p99 = np.percentile(cpu, 99)
    print(
        f"{name} serving CPU per request ({args.session}-item sessions, {n_items} items, "
        f"budget {config.serving.candidate_budget}): {percentiles(cpu)}; "
        f"p99 / budget {BUDGET_MS} ms = {p99 / BUDGET_MS:.2f}"
    )


if __name__ == "__main__":
    main()
