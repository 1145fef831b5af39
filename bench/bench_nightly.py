"""Wall time of `recsys nightly` on MovieLens-100k (data cached), best and median of N runs."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pipelines.nightly import run_nightly
from recsys.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--config", help="TOML overrides (e.g. data.source for your own files)")
    args = parser.parse_args()
    base = load_config(args.config)
    run_nightly(
        base.replace(artifacts={"root": tempfile.mkdtemp()}), show_progress=False
    )  # warm cache
    times = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as root:
            config = base.replace(
                artifacts={"root": root}, evaluation={"report_dir": str(Path(root) / "r")}
            )
            start = time.perf_counter()
            run_nightly(config, show_progress=False)
            times.append(time.perf_counter() - start)
    print(
        f"nightly on {base.data.source}: runs={args.runs} best={min(times):.2f}s "
        f"median={statistics.median(times):.2f}s worst={max(times):.2f}s"
    )


if __name__ == "__main__":
    main()
