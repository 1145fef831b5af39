"""What the scale benchmarks share: the synthetic shop's size flags and peak memory."""

from __future__ import annotations

import argparse
import resource
import sys


def add_shop_size_arguments(parser: argparse.ArgumentParser) -> None:
    """--users/--items/--events/--categories, defaulting to the 1M x 100k x 20M target."""
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--categories", type=int, default=200)


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )
