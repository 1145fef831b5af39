"""Wall time and peak memory of building every candidate artifact (issue target: a 1M users x
100k items x 20M events shop in under 20 minutes and 12 GB on this 2-core machine).

.venv/bin/python bench/bench_build.py                                 # the full-size target
.venv/bin/python bench/bench_build.py --users 200000 --items 20000 --events 4000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from shop_scale import add_shop_size_arguments, peak_rss_bytes

from pipelines.build import build_bundle
from pipelines.synthetic import generate_synthetic
from recsys.config import load_config

TARGET_SECONDS = 20 * 60.0
TARGET_BYTES = 12 * 1024**3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shop_size_arguments(parser)
    parser.add_argument("--config", help="TOML overriding the defaults (e.g. ALS factors)")
    parser.add_argument("--save", action="store_true", help="also write the bundle to a temp dir")
    args = parser.parse_args(argv)
    config = load_config(args.config)

    started = time.perf_counter()
    dataset = generate_synthetic(
        args.users, args.items, args.events, n_categories=args.categories, show_progress=True
    )
    generated = time.perf_counter() - started
    before_build = peak_rss_bytes()
    started = time.perf_counter()
    built = build_bundle(dataset, config, show_progress=True)
    build_seconds = time.perf_counter() - started
    if args.save:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            built.bundle.save(Path(tmp) / "bundle")
            size = sum(f.stat().st_size for f in (Path(tmp) / "bundle").rglob("*") if f.is_file())
            print(f"save         {time.perf_counter() - start:.1f} s, {size / 1024**2:.0f} MiB")
    peak = peak_rss_bytes()

    print(
        f"size         {args.users:,} users x {args.items:,} items x {len(dataset.events):,} events"
    )
    print(
        f"generate     {generated:.1f} s (not part of the build), "
        f"peak RSS then {before_build / 1024**3:.2f} GiB"
    )
    for step, seconds in built.seconds.items():
        print(f"  {step:<22} {seconds:8.1f} s")
    print(
        f"build        {build_seconds:.1f} s = {build_seconds / TARGET_SECONDS:.2f} of the "
        f"{TARGET_SECONDS / 60:.0f} min target"
    )
    print(
        f"peak RSS     {peak / 1024**3:.2f} GiB = {peak / TARGET_BYTES:.2f} of the "
        f"{TARGET_BYTES / 1024**3:.0f} GiB target (includes the generated dataset)"
    )
    return 0 if build_seconds <= TARGET_SECONDS and peak <= TARGET_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
