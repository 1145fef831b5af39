"""What live tops cost a serving process: counting a catch-up's events in, and the first
request after it re-merging a list (later requests read the cached list).

.venv/bin/python bench/bench_live_tops.py                 # synthetic 100k users x 100k items
.venv/bin/python bench/bench_live_tops.py --batch 50      # events per catch-up

The stream replays the shop's own events (popular items come up often, as in a real day)
by the shop's users (each counted in its home region too), as the log tail delivers them
(Event objects), in batches of --batch, each counted as serving counts it
(serving.tops_feed.count_into); after each batch the lists a default config asks for are
merged once (top_clicks_7d, popularity's weighted list, one category, one region), then
read again from the cache. Figures are printed per stage of the
day (how many items have been touched since the bundle), as percentiles in ms.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
from shop_scale import add_shop_size_arguments

from candidates.live_tops import LiveTops
from candidates.tops import TopsModel
from pipelines.synthetic import generate_synthetic
from pipelines.training_data import build_training_data
from recsys.config import EVENT_TYPES, load_config
from serving.catalog import UserProfiles
from serving.events import Event
from serving.tops_feed import count_into

LISTS = (
    ("clicks", 7, "global"),
    ("weighted", 0, "global"),
    ("clicks", 7, "category"),
    ("clicks", 30, "region"),
)


def percentiles(ms: list[float]) -> str:
    p50, p99 = np.percentile(ms, [50, 99])
    return f"p50 {p50:.3f} p99 {p99:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shop_size_arguments(parser)
    parser.set_defaults(users=100_000, events=3_000_000)
    parser.add_argument("--batch", type=int, default=20, help="events per catch-up")
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = load_config()
    began = time.perf_counter()
    dataset = generate_synthetic(
        args.users, args.items, args.events, n_categories=args.categories, seed=args.seed
    )
    data = build_training_data(dataset, config)
    model = TopsModel.fit(data, config)
    print(
        f"shop {args.users} users x {args.items} items x {args.events} events; "
        f"tops fitted in {time.perf_counter() - began:.1f} s"
    )
    live = LiveTops(model, config.tops)
    rng = np.random.default_rng(args.seed)
    replay = rng.integers(0, len(data.event_items), size=args.batch * args.batches)
    users = rng.integers(0, len(data.users), size=len(replay))
    user_ids, newest = data.users.ids, int(data.newest_time)
    events = [  # as the log tail delivers them: what serving counts from
        Event(str(user_ids[u]), str(data.items.ids[i]), EVENT_TYPES[t], 5.0, newest + 1)
        for u, i, t in zip(users, data.event_items[replay], data.event_types[replay], strict=True)
    ]
    profiles = UserProfiles.build(dataset, data, config.i2i.recent)
    bundle = SimpleNamespace(items=data.items, profiles=profiles)
    category = int(np.bincount(model.item_category_indices).argmax())
    region = int(np.bincount(model.region_keys // len(data.items)).argmax())

    stages = {args.batches // 10: [], args.batches // 2: [], args.batches: []}
    add_ms, merge_ms, hit_ms = [], {name: [] for name in LISTS}, []
    for b in range(args.batches):
        start = time.perf_counter()
        count_into(live, bundle, events[b * args.batch : (b + 1) * args.batch], config)
        add_ms.append((time.perf_counter() - start) * 1000)
        for key in LISTS:
            metric, window, scope = key
            value = {"category": category, "region": region}.get(scope, -1)
            start = time.perf_counter()
            live.top(metric, window, scope, value)
            merge_ms[key].append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        live.top("clicks", 7)
        hit_ms.append((time.perf_counter() - start) * 1000)
        if b + 1 in stages:
            touched = len(live.touched)
            print(
                f"after {b + 1} batches ({(b + 1) * args.batch} events, {touched} items, "
                f"{len(live.regions.slot_of)} (region, item) groups touched): counting "
                f"{percentiles(add_ms)} ms per batch of {args.batch}; "
                + "; ".join(
                    f"merge {m}_{w}d {s} {percentiles(ms)}" for (m, w, s), ms in merge_ms.items()
                )
                + f"; cached read {percentiles(hit_ms)}"
            )
            add_ms, hit_ms = [], []
            merge_ms = {name: [] for name in LISTS}


if __name__ == "__main__":
    main()
