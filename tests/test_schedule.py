"""`recsys schedule`: when the nightly runs, and that the loop survives a failed run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.schedule import next_run, run_schedule
from recsys.config import ConfigError, load_config


def test_next_run_is_today_if_still_ahead_else_tomorrow():
    morning = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
    assert next_run(morning, "03:15") == datetime(2026, 12, 5, 3, 15, tzinfo=UTC)
    exactly = datetime(2026, 12, 5, 3, 15, tzinfo=UTC)  # just ran: not again at once
    assert next_run(exactly, "03:15") == datetime(2026, 12, 6, 3, 15, tzinfo=UTC)
    evening = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert next_run(evening, "00:00") == datetime(2027, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["3:15", "24:00", "12:60", "noon", ""])
def test_a_bad_time_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="schedule.nightly_at must be HH:MM"):
        load_config().replace(schedule={"nightly_at": bad})


def test_the_loop_runs_the_nightly_each_day_and_goes_on_after_a_failure():
    """A clock that jumps to each due time instead of waiting for it."""
    now = [datetime(2026, 12, 5, 2, 0, tzinfo=UTC)]
    commands: list[list[str]] = []
    stop = threading.Event()
    codes = iter([1, 0, 3])  # a crash, a publish, a run the gate kept aside

    def run(command: list[str]) -> int:
        commands.append(command)
        now[0] += timedelta(minutes=40)  # a nightly takes a while
        if len(commands) == 3:
            stop.set()
        return next(codes)

    class JumpingStop(threading.Event):
        def wait(self, timeout=None):
            if stop.is_set():
                return True
            now[0] += timedelta(seconds=timeout or 0)
            return False

    runs = run_schedule(
        "03:15", ["--config", "x.toml"], JumpingStop(), clock=lambda: now[0], run=run
    )
    assert runs == 3
    assert [c[3:] for c in commands] == [["nightly", "--config", "x.toml"]] * 3
    assert [c[1:3] for c in commands] == [["-m", "recsys_cli"]] * 3  # a process each
    assert now[0] == datetime(2026, 12, 7, 3, 55, tzinfo=UTC)  # 3 days at 03:15, + 40 min
