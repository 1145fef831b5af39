"""Where evaluation reports go: a fresh timestamped directory per run."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # every report's plot is drawn without a screen (servers, CI)


def new_report_dir(directory: str | Path) -> Path:
    """A fresh timestamped directory under `directory` (a second run never overwrites)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(directory) / stamp
    suffix = 1
    while out.exists():
        out, suffix = Path(directory) / f"{stamp}-{suffix}", suffix + 1
    out.mkdir(parents=True)
    return out
