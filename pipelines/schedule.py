"""`recsys schedule`: run `recsys nightly` every day at `schedule.nightly_at` (UTC), for a
machine without cron or systemd (deploy/ has a crontab line and a systemd timer).

Each run is a process of its own: a nightly that crashes or leaks memory takes nothing with
it, and the loop goes on to the next day. The nightly's own lock refuses a run while another
(from cron, a person) is still going.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

# `recsys nightly` exit codes (recsys_cli.main): 0 published, 3 kept aside by the gate
NIGHTLY_OUTCOMES = {0: "published", 3: "not published (regression gate)"}


def next_run(now: datetime, at: str) -> datetime:
    """The first moment at `at` ("HH:MM" UTC) strictly after `now`."""
    hour, minute = (int(part) for part in at.split(":"))
    today = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return today if today > now else today + timedelta(days=1)


def run_schedule(
    at: str,
    nightly_args: Sequence[str],
    stop: threading.Event,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    run: Callable[[list[str]], int] = subprocess.call,
) -> int:
    """Start the nightly at every `at` until `stop` is set; returns how many runs started."""
    runs = 0
    while True:
        when = next_run(clock(), at)
        log.info("schedule: next nightly at %s", when.isoformat())
        if stop.wait(max(0.0, (when - clock()).total_seconds())):
            return runs
        runs += 1
        code = run([sys.executable, "-m", "recsys_cli", "nightly", *nightly_args])
        outcome = NIGHTLY_OUTCOMES.get(code, f"FAILED with exit code {code}")
        (log.info if code in NIGHTLY_OUTCOMES else log.error)("schedule: nightly %s", outcome)
