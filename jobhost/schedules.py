"""The schedules service: every job's schedule in force, and stored overrides of it.

The API's Schedules routes, the CLI's ``jobhost schedule`` verbs and the runner
(``jobhost.scheduler``) share this: it loads the overrides, builds each job's entry
(``schedule_plan.build_entry``), and lists, previews, changes and clears them, checking
``roles_schedule`` and auditing every change. It fires nothing; a runner that fires
listens to its changes (``listen``) to replan.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from jobhost import cron
from jobhost.catalog.discovery import Catalog, Job
from jobhost.catalog.templates import apply_defaults, check_variables
from jobhost.clock import Clock, SystemClock
from jobhost.errors import InvalidSchedule, PermissionDenied, VariableError
from jobhost.models import Action, Fire, Override, Principal, iso
from jobhost.schedule_plan import Entry, build_entry
from jobhost.security import can
from jobhost.store import schedules as db
from jobhost.store.sql import SqlStore

if TYPE_CHECKING:
    from jobhost.engine import JobHost

log = logging.getLogger(__name__)

PREVIEW_MAX = 100


class Unset(enum.Enum):
    token = 0


UNSET: Final = Unset.token  # "not given" in set_override (None means "as in job.json")

# (job id, the new entry, the entry it replaces or None): a runner replans on it.
Listener = Callable[[str, Entry, Entry | None], None]


def sql_store(engine: JobHost) -> SqlStore:
    store = engine.store
    if not isinstance(store, SqlStore):
        raise TypeError(f"schedules need the SQL store, got {type(store).__name__}")
    return store


class Schedules:
    """Every job's schedule entry and the overrides, for the API, the CLI and the runner."""

    def __init__(self, engine: JobHost, *, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock: Clock = clock if clock is not None else SystemClock(engine.clock)
        self.store = sql_store(engine)
        self.entries: dict[str, Entry] = {}
        self.overrides: dict[str, Override] = {}
        self._listeners: list[Listener] = []

    async def load(self) -> None:
        """Read the overrides and build every job's entry."""
        self.overrides = await self.engine.journal.call(db.load_overrides, self.store)
        for job in self.engine.catalog.values():
            self.entries[job.id] = self.entry(job)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def entry(self, job: Job) -> Entry:
        settings = self.engine.settings
        entry = build_entry(
            job,
            self.overrides.get(job.id),
            default_timezone=settings.default_timezone,
            default_grace=settings.misfire_grace_seconds,
        )
        if entry.problem is not None:
            log.warning("schedule of %s is not used: %s", job.id, entry.problem)
        return entry

    def refresh(self, job: Job) -> None:
        """Rebuild one job's entry and tell the listeners."""
        new = self.entry(job)
        old = self.entries.get(job.id)
        self.entries[job.id] = new
        for listener in self._listeners:
            listener(job.id, new, old)

    def catalog_changed(self, catalog: Catalog) -> None:
        for job_id in set(self.entries) - set(catalog):
            del self.entries[job_id]
        for job in catalog.values():
            self.refresh(job)

    def next_fire(self, job_id: str) -> datetime | None:
        """The job's next fire time (for the catalog), or None."""
        entry = self.entries.get(job_id)
        return entry.next_fire if entry is not None and entry.active else None

    def schedule_of(self, job_id: str) -> cron.CronSchedule | None:
        """The job's schedule while it is active (for metrics), or None."""
        entry = self.entries.get(job_id)
        return entry.schedule if entry is not None and entry.active else None

    def preview(self, expr: str, tz: str | None = None, count: int = 5) -> list[datetime]:
        """The next ``count`` fire times of ``expr`` from now; InvalidSchedule when bad."""
        count = max(1, min(PREVIEW_MAX, count))
        schedule = cron.parse(expr, tz or self.engine.settings.default_timezone)
        fires = schedule.next_fires(self.clock.now(), count)
        if not fires:
            raise InvalidSchedule(f"Cron expression {expr!r} never fires (no such date)")
        return fires

    async def list_schedules(self, principal: Principal) -> list[dict[str, Any]]:
        """Every job the principal may view, with its schedule (``source: none`` if unset)."""
        last = await self.engine.journal.call(db.last_fires, self.store)
        jobs = self.engine.visible_jobs(principal)
        return [self._describe(job, principal, last.get(job.id)) for job in jobs]

    async def get(self, job_id: str, principal: Principal) -> dict[str, Any]:
        """One job's schedule; JobNotFound when it is not visible."""
        job = self.engine.job(job_id, principal)
        recent = await self.engine.journal.call(db.fires, self.store, job.id, 1)
        return self._describe(job, principal, recent[0] if recent else None)

    async def fires(self, job_id: str, principal: Principal, limit: int = 20) -> list[Fire]:
        """The job's newest fires, newest first."""
        job = self.engine.job(job_id, principal)
        return await self.engine.journal.call(db.fires, self.store, job.id, limit)

    async def set_override(
        self,
        job_id: str,
        principal: Principal,
        *,
        schedule: str | Unset | None = UNSET,
        enabled: bool | Unset | None = UNSET,
        variables: Mapping[str, Any] | Unset | None = UNSET,
        timezone: str | Unset | None = UNSET,
        address: str | None = None,
    ) -> dict[str, Any]:
        """Change what is given (None: back to job.json's value), keep the rest; audited."""
        job = await self._editable(job_id, principal, address)
        current = self.overrides.get(job.id) or Override(job_id=job.id)
        changes: dict[str, Any] = {}
        if not isinstance(schedule, Unset):
            changes["schedule"] = schedule.strip() if schedule is not None else None
        if not isinstance(enabled, Unset):
            changes["enabled"] = enabled
        if not isinstance(timezone, Unset):
            changes["timezone"] = timezone.strip() if timezone is not None else None
        if not isinstance(variables, Unset):
            changes["variables"] = self._check_variables(job, variables)
        override = dataclasses.replace(
            current, **changes, updated_by=principal.username, updated_at=self.clock.now()
        )
        definition = job.definition
        expr = override.schedule or (definition.default_schedule if definition else None)
        tz = (
            override.timezone
            or (definition.timezone if definition else None)
            or self.engine.settings.default_timezone
        )
        cron.zone(tz)
        if expr:
            cron.parse(expr, tz)
        await self.engine.journal.call(db.save_override, self.store, override)
        self.overrides[job.id] = override
        self.refresh(job)
        # Secrets are refused in overrides, so the changes can be audited as given.
        await self.engine.audit(
            "schedule.update", principal, job.id, address=address, details=changes
        )
        return await self.get(job.id, principal)

    async def clear_override(
        self, job_id: str, principal: Principal, *, address: str | None = None
    ) -> dict[str, Any]:
        """Drop the override: job.json's schedule applies again; audited."""
        job = await self._editable(job_id, principal, address)
        removed = await self.engine.journal.call(db.delete_override, self.store, job.id)
        self.overrides.pop(job.id, None)
        self.refresh(job)
        await self.engine.audit(
            "schedule.update",
            principal,
            job.id,
            address=address,
            details={"cleared": True, "had_override": removed},
        )
        return await self.get(job.id, principal)

    async def _editable(self, job_id: str, principal: Principal, address: str | None) -> Job:
        job = self.engine.job(job_id, principal)
        if can(principal, job, Action.SCHEDULE):
            return job
        await self.engine.audit(
            "schedule.update", principal, job.id, outcome="denied", address=address
        )
        roles = job.definition.roles_schedule if job.definition else None
        need = f"one of the roles {', '.join(roles)}" if roles else "a superuser role"
        raise PermissionDenied(
            f"{principal.username!r} may not change the schedule of {job.id!r}: requires {need}"
        )

    def _check_variables(
        self, job: Job, variables: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """Variables a scheduled run will get, checked now so a bad one fails here."""
        if variables is None:
            return None
        definition = job.definition
        if definition is None:
            raise VariableError(f"Job {job.id!r} is invalid, so it takes no variables")
        secret = sorted(
            name
            for name in variables
            if name in definition.template_variables and definition.template_variables[name].secret
        )
        if secret:
            raise VariableError(
                f"Variables rejected: {', '.join(secret)} is secret, and secrets are never "
                "stored, so a schedule cannot carry it; give it a default in job.json or "
                "init-job instead",
                details={name: f"{name} is secret and cannot be stored" for name in secret},
            )
        checked = check_variables(definition, apply_defaults(definition, variables))
        return {name: checked[name] for name in variables if name in checked}

    def _describe(self, job: Job, principal: Principal, last: Fire | None) -> dict[str, Any]:
        """The API's schedule object (see the REST contract)."""
        entry = self.entries.get(job.id) or self.entry(job)
        upcoming: list[datetime] = []
        problem = entry.problem
        description = None
        if entry.schedule is not None:
            description = cron.describe(entry.expr or "", entry.tz)
            if entry.active:
                try:
                    upcoming = entry.schedule.next_fires(self.clock.now(), 5)
                except Exception as exc:
                    problem = f"Schedule {entry.expr!r} cannot be computed: {exc}"
        return {
            "job_id": job.id,
            "schedule": entry.expr,
            "description": description,
            "problem": problem,
            "timezone": entry.tz,
            "enabled": entry.enabled,
            "source": entry.source,
            "variables": entry.variables,
            "next_fires": [iso(when) for when in upcoming],
            "last_fire": None
            if last is None
            else {
                "scheduled_for": iso(last.scheduled_for),
                "execution_id": last.execution_id,
                "status": last.status,
                "outcome": last.outcome,
            },
            "can_edit": can(principal, job, Action.SCHEDULE),
        }
