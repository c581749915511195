"""The catalog as a status board in the terminal: one table for the local and the remote
``jobhost catalog`` (last run, running now, next fire), and the local status read from
the store and the schedules without an engine."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from jobhost.catalog.discovery import Job
from jobhost.config import Settings
from jobhost.models import TERMINAL_STATUSES, iso, utcnow
from jobhost.schedule_plan import build_entry
from jobhost.store import schedules as schedule_store
from jobhost.store.recent import recent_outcomes
from jobhost.store.sql import SqlStore

OUTCOMES = 10  # as many recent runs as the server's catalog entry carries


def last_run_text(run: dict[str, Any] | None) -> str:
    """ "failed 2026-12-01T19:36:00Z (0.4 s): the reason" for the catalog table."""
    if not run:
        return "never"
    when = run.get("ended_at") or run.get("created_at") or ""
    duration = run.get("duration_seconds")
    took = f" ({duration:.1f} s)" if isinstance(duration, int | float) else ""
    status = str(run.get("status"))
    colour = "green" if status == "succeeded" else "red" if status != "stopped" else "yellow"
    reason = f": {escape(str(run['error']))}" if run.get("error") and status != "succeeded" else ""
    return f"[{colour}]{status}[/{colour}] {when}{took}{reason}"


def catalog_table(jobs: Iterable[dict[str, Any]], *, problems: bool = False) -> Table:
    """Catalog entries (the API's shape, with ``last_run``, ``active``, ``next_fire``)."""
    table = Table("Job", "Name", "Last run", "Running", "Next fire", "Valid")
    table.add_column("Problems" if problems else "You may")
    for job in jobs:
        if problems:
            last = "; ".join(str(e) for e in job.get("errors") or [])
        else:
            permissions = job.get("permissions") or {}
            allowed = [a for a, ok in permissions.items() if ok]
            if allowed and len(allowed) == len(permissions):
                allowed = ["everything"]
            last = ", ".join(allowed)
        table.add_row(
            escape(str(job["id"])),
            escape(str(job.get("name") or "")),
            last_run_text(job.get("last_run")),
            ", ".join(str(e["id"]) for e in job.get("active") or []),
            str(job.get("next_fire") or ("" if job.get("schedule") else "not scheduled")),
            "[green]yes[/green]" if job.get("valid") else "[red]no[/red]",
            escape(last),
        )
    return table


def local_entries(
    settings: Settings, jobs: list[Job], store: SqlStore, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The catalog entries with the status a server would add, read from the store:
    the newest finished runs, the runs recorded as active, and the next fire of the
    schedule in force (job.json's, changed by a stored override)."""
    now = now or utcnow()
    recent = recent_outcomes(store, [job.id for job in jobs], OUTCOMES)
    live: dict[str, list[dict[str, Any]]] = {}
    for execution in store.active_executions():
        if execution.status not in TERMINAL_STATUSES and not execution.test:
            live.setdefault(execution.job_id, []).append(execution.to_api())
    overrides = schedule_store.load_overrides(store)
    entries = []
    for job in jobs:
        entry = job.to_api()
        plan = build_entry(
            job,
            overrides.get(job.id),
            default_timezone=settings.default_timezone,
            default_grace=settings.misfire_grace_seconds,
        )
        when = plan.schedule.next_after(now) if plan.active and plan.schedule else None
        entry["next_fire"] = iso(when) if when is not None else None
        entry["timezone"] = plan.tz
        outcomes = [e.to_api() for e in recent.get(job.id, [])]
        entry["last_run"] = outcomes[0] if outcomes else None
        entry["outcomes"] = outcomes
        entry["active"] = sorted(live.get(job.id, []), key=lambda e: str(e["created_at"]))
        entries.append(entry)
    return entries
