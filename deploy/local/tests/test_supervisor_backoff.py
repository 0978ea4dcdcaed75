"""The local stack's supervisor restarts a process that exited: at once the first time, then
with a backoff that grows while it keeps exiting soon after its start, and starts over once it
has run healthily for a while."""

from __future__ import annotations

from ticketing_local.supervisor import HEALTHY_RUN_S, RESTART_DELAY_MAX_S, restart_backoff


def _delays(uptimes: list[float]) -> list[float]:
    exits, delays = 0, []
    for uptime in uptimes:
        exits, delay = restart_backoff(exits, uptime)
        delays.append(delay)
    return delays


def test_a_killed_process_is_restarted_at_once() -> None:
    assert restart_backoff(0, 1.0) == (1, 0.0)  # even if it had only just started
    assert restart_backoff(0, 3600.0) == (1, 0.0)


def test_a_process_that_keeps_exiting_waits_longer_each_time_up_to_a_bound() -> None:
    assert _delays([1.0] * 9) == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert max(_delays([0.1] * 50)) == RESTART_DELAY_MAX_S


def test_the_backoff_starts_over_once_the_process_ran_healthily() -> None:
    crashing = [1.0] * 6
    assert _delays([*crashing, HEALTHY_RUN_S, 1.0]) == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 0.0, 0.5]
    # short of healthy, it still counts as one more exit in a row
    assert _delays([*crashing, HEALTHY_RUN_S - 1])[-1] == 15.0
