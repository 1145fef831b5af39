"""Time and peak memory of the synthetic generator against its targets (3 min, 6 GB).

.venv/bin/python bench/bench_synthetic.py                      # 1M users, 100k items, 20M events
.venv/bin/python bench/bench_synthetic.py --events 2000000     # a quicker look
"""

from __future__ import annotations

import argparse
import time

from shop_scale import add_shop_size_arguments, peak_rss_bytes

from pipelines.synthetic import generate_synthetic

TARGET_SECONDS = 180.0
TARGET_BYTES = 6 * 1024**3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shop_size_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show the tqdm bar")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    dataset = generate_synthetic(
        args.users,
        args.items,
        args.events,
        n_categories=args.categories,
        seed=args.seed,
        show_progress=args.progress,
    )
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()

    events = dataset.events
    counts = events["event_type"].value_counts()
    print(f"size         {args.users:,} users x {args.items:,} items x {len(events):,} events")
    funnel = "  ".join(f"{name} {counts[name]:,}" for name in ("view", "cart", "purchase"))
    print(f"funnel       {funnel}")
    print(f"events frame {events.memory_usage(deep=False).sum() / 1024**2:,.0f} MiB")
    print(f"wall time    {seconds:.1f} s  ({seconds / TARGET_SECONDS:.2f} of the 180 s target)")
    print(f"peak RSS     {peak / 1024**3:.2f} GiB  ({peak / TARGET_BYTES:.2f} of the 6 GiB target)")
    print(f"throughput   {len(events) / seconds:,.0f} events/s")
    return 0 if seconds < TARGET_SECONDS and peak < TARGET_BYTES else 1


if __name__ == "__main__":
    raise SystemExit(main())
