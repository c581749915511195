"""The restart policy's arithmetic, with explicit times (no waiting)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from jobhost.execution.restart import RestartTracker, wants_restart
from jobhost.models import Execution, ExecutionStatus, Trigger

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ended(status: ExecutionStatus, ran: float, at: datetime, *, test: bool = False) -> Execution:
    return Execution(
        id="e",
        job_id="A/B",
        status=status,
        trigger=Trigger.USER,
        user="u",
        test=test,
        started_at=at - timedelta(seconds=ran),
        ended_at=at,
    )


def test_which_endings_restart() -> None:
    failed = ended(ExecutionStatus.FAILED, 1, T0)
    ok = ended(ExecutionStatus.SUCCEEDED, 1, T0)
    stopped = ended(ExecutionStatus.STOPPED, 1, T0)
    assert wants_restart("on-failure", failed)
    assert wants_restart("on-failure", ended(ExecutionStatus.TIMED_OUT, 1, T0))
    assert not wants_restart("on-failure", ok)
    assert wants_restart("always", ok)
    assert not wants_restart("always", stopped)  # a person stopped it: stay stopped
    assert not wants_restart("never", failed)
    assert not wants_restart("always", ended(ExecutionStatus.FAILED, 1, T0, test=True))


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    tracker = RestartTracker(window_seconds=60, burst=100, max_backoff_seconds=10)
    rng = random.Random(1)
    delays = [
        tracker.next_delay(ended(ExecutionStatus.FAILED, 0.1, T0 + timedelta(seconds=i)), T0, rng)
        for i in range(8)
    ]
    uppers = [1, 2, 4, 8, 10, 10, 10, 10]
    for delay, upper in zip(delays, uppers, strict=True):
        assert delay is not None
        assert upper / 2 <= delay <= upper


def test_brake_gives_up_after_a_burst_within_the_window() -> None:
    tracker = RestartTracker(window_seconds=60, burst=3)
    rng = random.Random(0)
    at = [T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=10)]
    results = [tracker.next_delay(ended(ExecutionStatus.FAILED, 1, t), t, rng) for t in at]
    assert results[0] is not None
    assert results[1] is not None
    assert results[2] is None


def test_failures_spread_beyond_the_window_do_not_trip_the_brake() -> None:
    tracker = RestartTracker(window_seconds=60, burst=3)
    rng = random.Random(0)
    for minute in range(10):
        t = T0 + timedelta(minutes=minute)
        assert tracker.next_delay(ended(ExecutionStatus.FAILED, 1, t), t, rng) is not None


def test_a_stable_run_resets_the_backoff() -> None:
    tracker = RestartTracker(window_seconds=60, burst=10, max_backoff_seconds=300)
    rng = random.Random(0)
    for i in range(5):
        t = T0 + timedelta(seconds=i)
        tracker.next_delay(ended(ExecutionStatus.FAILED, 1, t), t, rng)
    later = T0 + timedelta(hours=1)
    delay = tracker.next_delay(ended(ExecutionStatus.FAILED, 3600, later), later, rng)
    assert delay is not None
    assert delay <= 1.0
    assert tracker.consecutive == 0
