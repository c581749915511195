"""Schedule overrides and fire claims in SQL (SQLite and PostgreSQL), synchronous.

The scheduler calls these through ``engine.journal.call`` (the bounded database path),
so each function is one short transaction on the ``SqlStore``'s engine.

A fire is claimed by inserting ``(job_id, scheduled_for)``; the primary key makes the
insert fail for whoever comes second (another server process, or this one after a
restart), which is what keeps a fire from running twice. Fires due together are claimed,
and their outcomes written, in one transaction each: a round trip per fire is what made
100 every-second jobs fall seconds behind. ``outcome`` is NULL while the
claim is open and becomes ``started``/``skipped``/``failed`` (or ``missed`` for fires
that fell into downtime).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from jobhost.models import Fire, FireOutcome, FireResult, Override
from jobhost.store import tables as t
from jobhost.store.sql import SqlStore

OUTCOMES = tuple(FireOutcome)

schedule_overrides = sa.Table(
    "schedule_overrides",
    t.metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("schedule", sa.Text),  # NULL: job.json's default_schedule
    sa.Column("enabled", sa.Boolean),  # NULL: job.json's enabled
    sa.Column("variables", sa.JSON(none_as_null=True)),
    sa.Column("timezone", sa.Text),  # NULL: job.json's timezone, then the default
    sa.Column("updated_by", sa.Text),
    sa.Column("updated_at", t.UTCDateTime, nullable=False),
)

schedule_fires = sa.Table(
    "schedule_fires",
    t.metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("scheduled_for", t.UTCDateTime, primary_key=True),
    sa.Column("outcome", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("execution_id", sa.Text),
    sa.Column("recorded_at", t.UTCDateTime, nullable=False),
)


def _override(row: sa.RowMapping) -> Override:
    return t.from_row(Override, row)


def load_overrides(store: SqlStore) -> dict[str, Override]:
    with store.read() as conn:
        rows = conn.execute(sa.select(schedule_overrides)).mappings()
        return {row["job_id"]: _override(row) for row in rows}


def save_override(store: SqlStore, override: Override) -> None:
    """Insert or replace the override of ``override.job_id``."""
    row = {
        "job_id": override.job_id,
        "schedule": override.schedule,
        "enabled": override.enabled,
        "variables": override.variables,
        "timezone": override.timezone,
        "updated_by": override.updated_by,
        "updated_at": override.updated_at,
    }
    stmt = store.insert(schedule_overrides)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id"],
        set_={key: stmt.excluded[key] for key in row if key != "job_id"},
    )
    with store.write() as conn:
        conn.execute(stmt, [row])


def delete_override(store: SqlStore, job_id: str) -> bool:
    """Remove the override; False when there was none."""
    with store.write() as conn:
        result = conn.execute(
            sa.delete(schedule_overrides).where(schedule_overrides.c.job_id == job_id)
        )
    return result.rowcount > 0


CLAIM_CHUNK = 500  # rows per INSERT: SQLite caps the bound parameters of one statement


Outcome = FireResult  # the name the store functions use


def claim_fires(
    store: SqlStore, due: Sequence[tuple[str, datetime]], at: datetime
) -> set[tuple[str, datetime]]:
    """Claim every ``(job_id, scheduled_for)`` in one transaction; returns the ones won
    (a fire already claimed, by anyone, ever, is left out)."""
    won: set[tuple[str, datetime]] = set()
    if not due:
        return won
    c = schedule_fires.c
    with store.write() as conn:
        for start in range(0, len(due), CLAIM_CHUNK):
            rows = [
                {"job_id": job_id, "scheduled_for": when, "recorded_at": at}
                for job_id, when in due[start : start + CLAIM_CHUNK]
            ]
            stmt = (
                store.insert(schedule_fires)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["job_id", "scheduled_for"])
                .returning(c.job_id, c.scheduled_for)
            )
            won.update((row.job_id, row.scheduled_for) for row in conn.execute(stmt))
    return won


def release_fires(store: SqlStore, claimed: Sequence[tuple[str, datetime]]) -> None:
    """Drop claims that were never started (the host closed before they were due), so
    the next start decides about them as fires that fell into downtime."""
    if not claimed:
        return
    c = schedule_fires.c
    stmt = sa.delete(schedule_fires).where(
        c.job_id == sa.bindparam("b_job"),
        c.scheduled_for == sa.bindparam("b_when"),
        c.outcome.is_(None),
    )
    with store.write() as conn:
        conn.execute(stmt, [{"b_job": job_id, "b_when": when} for job_id, when in claimed])


def finish_fires(store: SqlStore, outcomes: Sequence[Outcome], at: datetime) -> None:
    """Record how claimed fires went, in one transaction."""
    if not outcomes:
        return
    c = schedule_fires.c
    stmt = (
        sa.update(schedule_fires)
        .where(c.job_id == sa.bindparam("b_job"), c.scheduled_for == sa.bindparam("b_when"))
        .values(
            outcome=sa.bindparam("b_outcome"),
            reason=sa.bindparam("b_reason"),
            execution_id=sa.bindparam("b_execution"),
            recorded_at=sa.bindparam("b_at"),
        )
    )
    rows = [
        {
            "b_job": o.job_id,
            "b_when": o.scheduled_for,
            "b_outcome": o.outcome,
            "b_reason": o.reason,
            "b_execution": o.execution_id,
            "b_at": at,
        }
        for o in outcomes
    ]
    with store.write() as conn:
        conn.execute(stmt, rows)


def record_missed(
    store: SqlStore, job_id: str, times: Sequence[datetime], reason: str, at: datetime
) -> None:
    """Record fires that fell into downtime as ``missed``; already-recorded ones are kept."""
    if not times:
        return
    rows = [
        {
            "job_id": job_id,
            "scheduled_for": when,
            "outcome": "missed",
            "reason": reason,
            "execution_id": None,
            "recorded_at": at,
        }
        for when in times
    ]
    stmt = store.insert(schedule_fires).on_conflict_do_nothing(
        index_elements=["job_id", "scheduled_for"]
    )
    with store.write() as conn:
        conn.execute(stmt, rows)


def _fires_query() -> sa.Select[Any]:
    """Fires joined with their execution's status."""
    f = schedule_fires.c
    return sa.select(schedule_fires, t.executions.c.status).select_from(
        schedule_fires.outerjoin(t.executions, t.executions.c.id == f.execution_id)
    )


def _fire(row: sa.RowMapping) -> Fire:
    return t.from_row(Fire, row)


def last_fires(store: SqlStore) -> dict[str, Fire]:
    """The newest recorded fire of every job, in one query."""
    f = schedule_fires.c
    newest = (
        sa.select(f.job_id, sa.func.max(f.scheduled_for).label("newest"))
        .group_by(f.job_id)
        .subquery()
    )
    stmt = _fires_query().join(
        newest, sa.and_(newest.c.job_id == f.job_id, newest.c.newest == f.scheduled_for)
    )
    with store.read() as conn:
        return {fire.job_id: fire for fire in map(_fire, conn.execute(stmt).mappings())}


def fires(store: SqlStore, job_id: str, limit: int = 50) -> list[Fire]:
    """The newest ``limit`` fires of one job, newest first."""
    f = schedule_fires.c
    stmt = _fires_query().where(f.job_id == job_id).order_by(f.scheduled_for.desc()).limit(limit)
    with store.read() as conn:
        return [_fire(row) for row in conn.execute(stmt).mappings()]


def prune_fires(store: SqlStore, job_id: str, keep: int) -> int:
    """Delete all but the newest ``keep`` fires of a job; returns how many went."""
    f = schedule_fires.c
    cutoff = (
        sa.select(f.scheduled_for)
        .where(f.job_id == job_id)
        .order_by(f.scheduled_for.desc())
        .offset(keep - 1)
        .limit(1)
        .scalar_subquery()
    )
    with store.write() as conn:
        result = conn.execute(
            sa.delete(schedule_fires).where(f.job_id == job_id, f.scheduled_for < cutoff)
        )
    return result.rowcount
