"""The scheduler's decisions as tables: pure functions of the entry, the due times and now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobhost import cron
from jobhost.catalog.discovery import scan
from jobhost.models import FireOutcome, Override
from jobhost.schedule_plan import MISSED_KEPT, build_entry, due_from, settle_due
from tests.jobfolders import write_job

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("due_minutes", "now_minutes", "grace", "run", "missed", "outcome"),
    [
        ([], 0, 60, None, [], None),  # nothing due
        ([0], 0, 60, 0, [], None),  # on time
        ([0], 1, 60, 0, [], None),  # late within grace: runs
        ([0], 2, 60, None, [0], FireOutcome.MISSED),  # beyond grace: recorded
        ([0, 1, 2], 2, 60, 2, [0, 1], FireOutcome.COALESCED),  # downtime: newest runs
        ([0, 1, 2], 5, 60, None, [0, 1, 2], FireOutcome.MISSED),  # all too old
        ([0, 1], 1, 0, 1, [0], FireOutcome.COALESCED),  # grace 0, newest exactly now
    ],
)
def test_settle_due(
    due_minutes: list[int],
    now_minutes: int,
    grace: float,
    run: int | None,
    missed: list[int],
    outcome: FireOutcome | None,
) -> None:
    settled = settle_due(grace, [T0 + m * MIN for m in due_minutes], T0 + now_minutes * MIN)
    assert settled.run == (None if run is None else T0 + run * MIN)
    assert list(settled.missed) == [T0 + m * MIN for m in missed]
    assert settled.outcome == outcome
    if outcome is FireOutcome.COALESCED:
        assert settled.reason == f"coalesced: only the newest missed fire ({run_iso(run)}) runs"
    if outcome is FireOutcome.MISSED:
        assert settled.reason is not None
        assert "beyond the misfire grace of" in settled.reason


def run_iso(run: int | None) -> str:
    assert run is not None
    return (T0 + run * MIN).isoformat().replace("+00:00", "Z")


def test_settle_due_keeps_at_most_missed_kept() -> None:
    due = [T0 + m * MIN for m in range(MISSED_KEPT + 50)]
    settled = settle_due(0, due, due[-1] + timedelta(hours=1))
    assert len(settled.missed) == MISSED_KEPT
    assert settled.missed[-1] == due[-1]


EVERY_MINUTE = cron.parse("* * * * *", "UTC")


@pytest.mark.parametrize(
    ("when", "now", "due", "following"),
    [
        (1, 0, [1], 2),  # claimed ahead: not yet due
        (1, 1, [1], 2),  # due now
        (1, 3, [1, 2, 3], 4),  # a stall: every fire since, to coalesce; next after now
    ],
)
def test_due_from(when: int, now: int, due: list[int], following: int) -> None:
    got_due, got_following = due_from(
        EVERY_MINUTE, T0 + when * MIN, T0 + (when + 1) * MIN, T0 + now * MIN
    )
    assert got_due == [T0 + m * MIN for m in due]
    assert got_following == T0 + following * MIN


@pytest.mark.parametrize(
    ("fields", "override", "expr", "tz", "enabled", "source", "active"),
    [
        ({"default_schedule": "0 3 * * *"}, None, "0 3 * * *", "UTC", True, "job.json", True),
        ({}, None, None, "UTC", True, "none", False),
        (
            {"default_schedule": "0 3 * * *", "timezone": "Europe/Berlin"},
            Override("Lab/J", schedule="*/5 * * * *"),
            "*/5 * * * *",
            "Europe/Berlin",
            True,
            "override",
            True,
        ),
        (
            {"default_schedule": "0 3 * * *"},
            Override("Lab/J", enabled=False),
            "0 3 * * *",
            "UTC",
            False,
            "override",
            False,
        ),
        (
            {"default_schedule": "@daily", "enabled": False},
            None,
            "@daily",
            "UTC",
            False,
            "job.json",
            False,
        ),
    ],
)
def test_build_entry(
    tmp_path: Path,
    fields: dict[str, object],
    override: Override | None,
    expr: str | None,
    tz: str,
    enabled: bool,
    source: str,
    active: bool,
) -> None:
    write_job(tmp_path, "Lab", "J", {"Name": "J", **fields})
    [job] = scan([tmp_path]).values()
    entry = build_entry(job, override, default_timezone="UTC", default_grace=60)
    assert (entry.expr, entry.tz, entry.enabled, entry.source, entry.active) == (
        expr,
        tz,
        enabled,
        source,
        active,
    )


def test_build_entry_keeps_a_bad_override_as_a_problem(tmp_path: Path) -> None:
    write_job(tmp_path, "Lab", "J", {"Name": "J", "default_schedule": "@daily"})
    [job] = scan([tmp_path]).values()
    # An override stored before the parser refused its form: inactive, with the reason.
    entry = build_entry(
        job, Override("Lab/J", schedule="5-1 * * * *"), default_timezone="UTC", default_grace=60
    )
    assert entry.active is False
    assert entry.problem is not None
    assert "range '5-1' goes backwards" in entry.problem
