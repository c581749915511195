"""Schedule planning, pure: a job's effective schedule, and what to do with fires that are
due, as functions of the entry, the due times and now. No clock, no store, no engine:
the runner (``jobhost.scheduler``) does the waiting and the writing.

Misfires: after downtime (or a stall longer than a fire), the fires since the newest
recorded one coalesce into one run when the newest is within the job's
``misfire_grace_seconds``; the others (at most ``MISSED_KEPT``) are recorded as missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobhost import cron
from jobhost.catalog.entry import Job
from jobhost.errors import InvalidSchedule
from jobhost.models import FireOutcome, Override, iso

MISSED_KEPT = 100  # missed fires recorded per job and downtime; older ones are not written


@dataclass
class Entry:
    """A job's effective schedule and its next fire."""

    job_id: str
    expr: str | None
    tz: str
    enabled: bool
    source: str  # "job.json" | "override" | "none"
    variables: dict[str, Any]
    grace: float
    schedule: cron.CronSchedule | None = None
    problem: str | None = None
    next_fire: datetime | None = None
    claims: int = field(default=0, compare=False)

    @property
    def active(self) -> bool:
        return self.enabled and self.schedule is not None

    def same_timing(self, other: Entry) -> bool:
        return (self.expr, self.tz, self.active) == (other.expr, other.tz, other.active)


def build_entry(
    job: Job, override: Override | None, *, default_timezone: str, default_grace: float
) -> Entry:
    """The schedule in force: job.json's, changed by the stored override; a schedule
    that cannot be parsed leaves the entry inactive with its ``problem``."""
    definition = job.definition
    expr = definition.default_schedule if definition else None
    tz = (definition.timezone if definition else None) or default_timezone
    enabled = job.valid and definition is not None and definition.enabled
    variables: dict[str, Any] = {}
    if override is not None:
        expr = override.schedule or expr
        tz = override.timezone or tz
        if override.enabled is not None:
            enabled = enabled and override.enabled
        variables = dict(override.variables or {})
    source = "override" if override else ("job.json" if expr else "none")
    grace = default_grace
    if definition is not None and "misfire_grace_seconds" in definition.model_fields_set:
        grace = definition.misfire_grace_seconds
    entry = Entry(job.id, expr, tz, enabled, source, variables, grace)
    if expr:
        try:
            entry.schedule = cron.parse(expr, tz)
        except InvalidSchedule as exc:
            entry.problem = exc.message
    return entry


@dataclass(frozen=True, slots=True)
class Settlement:
    """What to do with a job's due fires: ``run`` one (or none), record ``missed`` ones
    with ``reason`` under ``outcome`` (``coalesced`` when one of them runs)."""

    run: datetime | None
    missed: tuple[datetime, ...] = ()
    reason: str | None = None
    outcome: FireOutcome | None = None


def settle_due(grace: float, due: list[datetime], now: datetime) -> Settlement:
    """The newest due fire runs if it is within ``grace`` seconds of ``now``; the older
    ones (at most ``MISSED_KEPT``), or all when it is too late, are recorded."""
    if not due:
        return Settlement(None)
    newest = due[-1]
    late = (now - newest).total_seconds()
    if late <= grace:
        run: datetime | None = newest
        missed = due[:-1]
        reason = f"coalesced: only the newest missed fire ({iso(newest)}) runs"
        outcome = FireOutcome.COALESCED
    else:
        run, missed = None, due
        reason = (
            f"missed: due {late:.0f} s ago, beyond the misfire grace of {grace:g} s "
            "(JobHost was down or stalled)"
        )
        outcome = FireOutcome.MISSED
    if not missed:
        return Settlement(run)
    return Settlement(run, tuple(missed[-MISSED_KEPT:]), reason, outcome)


def due_since(schedule: cron.CronSchedule, recorded: datetime, now: datetime) -> list[datetime]:
    """The fires after the newest recorded one up to ``now`` (at most ``MISSED_KEPT + 1``):
    what a start-up catches up on."""
    return schedule.between(recorded, now, MISSED_KEPT + 1)


def due_from(
    schedule: cron.CronSchedule, when: datetime, following: datetime | None, now: datetime
) -> tuple[list[datetime], datetime | None]:
    """A fire ``when`` taken from the heap at ``now`` (its ``following`` fire computed):
    the fires due, and the job's next fire. Not yet due: just ``when``. Late by more than
    one fire (a stall, a suspended machine): every fire since ``when``, to coalesce."""
    if when > now or following is None or following > now:
        return [when], following
    since = when - timedelta(microseconds=1)
    return schedule.between(since, now, MISSED_KEPT + 1), schedule.next_after(now)
