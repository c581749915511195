"""Cron fires for every scheduled job: one asyncio task sleeping until the next fire.

Shape: a heap of (next fire, job) and one task that sleeps until the heap's head is due,
or until ``wake()`` (a schedule change, a catalog reload) — never a polling tick. The
clock is a dependency (``Clock``): tests drive a ``ManualClock`` and nothing waits.

On time: fires are claimed ``CLAIM_AHEAD`` before they are due, every fire due in that
window in one transaction, so the database round trip and the cron maths are done
before the due time; at the due time the fires due together start concurrently. (One
claim and one outcome write per fire, awaited in turn on the database pool, is what let
100 every-second jobs fall seconds behind.) A claim that is not yet due when the
scheduler closes is released, so the next start treats it as a fire missed while down.

Never twice: each fire is claimed in the store (``schedule_fires`` primary key) before
the run starts, so a restart or a second server process cannot run it again.
Never silently missed: after downtime (or a stall longer than a fire), the fires since
the newest recorded one coalesce into one run when the newest is within the job's
``misfire_grace_seconds``; the others (at most ``MISSED_KEPT`` per job) are recorded as
``missed``. A job seen for the first time starts from now. Overlap is the engine's
business (``max_concurrent``/``on_conflict``); a refusal is recorded as ``skipped``.
Every hook in ``engine.hooks`` (the notifier's ``missed`` rules) hears of fires that did
not run: once per recorded batch of missed fires, and once per skipped fire or fire that
could not start (that one has no execution, so no run notification would tell of it).

Overrides (``set_override``/``clear_override``) change a job's schedule, time zone,
enabled flag and variables live; they are stored, audited and need ``roles_schedule``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import heapq
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from jobhost import cron
from jobhost.catalog.discovery import Catalog, Job
from jobhost.catalog.templates import apply_defaults, check_variables
from jobhost.clock import Clock, SystemClock
from jobhost.errors import (
    Conflict,
    Draining,
    InvalidSchedule,
    JobHostError,
    PermissionDenied,
    TooManyRequests,
    VariableError,
)
from jobhost.models import Action, ExecutionStatus, Principal, Trigger, iso
from jobhost.security import can
from jobhost.store import schedules as db
from jobhost.store.sql import SqlStore

if TYPE_CHECKING:
    from jobhost.engine import JobHost

log = logging.getLogger(__name__)

MISSED_KEPT = 100  # missed fires recorded per job and downtime; older ones are not written
FIRES_KEPT = 1000  # fire rows kept per job (pruned every FIRES_KEPT claims)
PREVIEW_MAX = 100
# Fires are claimed this long before they are due, so the claim's database round trip
# (and the cron maths) is done by the time they are: at the due time only the start is left.
CLAIM_AHEAD = timedelta(milliseconds=100)
LATENESS_KEPT = 10_000


class _Unset(enum.Enum):
    token = 0


UNSET: Final = _Unset.token  # "not given" in set_override (None means "as in job.json")


@dataclass
class _Entry:
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

    def same_timing(self, other: _Entry) -> bool:
        return (self.expr, self.tz, self.active) == (other.expr, other.tz, other.active)


# (id of a parsed schedule, instant) → its next fire, for one pass over many jobs.
_Memo = dict[tuple[int, datetime], datetime | None]


def _next_after(schedule: cron.CronSchedule, after: datetime, memo: _Memo) -> datetime | None:
    """``schedule.next_after(after)``, once per pass: jobs sharing an expression share its
    parsed schedule (``cron.parse`` caches), and a cron step costs ~0.3 ms, which 100 jobs
    due together, or 10,000 at start-up, would otherwise pay each."""
    key = (id(schedule), after)
    if key not in memo:
        memo[key] = schedule.next_after(after)
    return memo[key]


def sql_store(engine: JobHost) -> SqlStore:
    store = engine.store
    if not isinstance(store, SqlStore):
        raise TypeError(f"schedules need the SQL store, got {type(store).__name__}")
    return store


@dataclass(frozen=True, slots=True)
class _Fire:
    """One fire to claim and start."""

    job_id: str
    when: datetime
    variables: dict[str, Any]


class Scheduler:
    """Fires cron schedules through ``engine.start``; the service behind the Schedules API."""

    def __init__(
        self,
        engine: JobHost,
        *,
        clock: Clock | None = None,
        claim_ahead: timedelta = CLAIM_AHEAD,
    ) -> None:
        self.engine = engine
        self.clock: Clock = clock if clock is not None else SystemClock(engine.clock)
        self._claim_ahead = claim_ahead
        self._store = sql_store(engine)
        self._entries: dict[str, _Entry] = {}
        self._overrides: dict[str, db.Override] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._closing = asyncio.Event()
        self._waiting: set[asyncio.Event] = set()  # batches waiting for their due time
        self._task: asyncio.Task[None] | None = None
        # In-flight work → (when it is due, set once its fires are claimed): ``settle``
        # waits for every claim, and for the rest of what is due by the clock's now.
        self._inflight: dict[asyncio.Task[None], tuple[datetime, asyncio.Event]] = {}
        self._closed = False
        self.fired = 0  # claims won, for metrics and benchmarks
        # (due time, seconds from it to the ``engine.start`` call): the scheduler's own
        # share of each fire's lateness, newest last; for metrics and benchmarks.
        self.lateness: deque[tuple[datetime, float]] = deque(maxlen=LATENESS_KEPT)

    # ----------------------------------------------------------------- lifecycle
    async def load(self) -> None:
        """Read overrides and build every job's entry; no fires (the CLI stops here)."""
        self._overrides = await self.engine.journal.call(db.load_overrides, self._store)
        for job in self.engine.catalog.values():
            self._entries[job.id] = self._entry(job)

    async def start(self) -> None:
        """Load, catch up on fires missed while down, then run the loop."""
        await self.load()
        now = self.clock.now()
        last = await self.engine.journal.call(db.last_fires, self._store)
        fires: list[_Fire] = []
        memo: _Memo = {}
        for entry in self._entries.values():
            if entry.schedule is None or not entry.active:
                continue
            recorded = last.get(entry.job_id)
            try:
                if recorded is not None:
                    due = entry.schedule.between(recorded.scheduled_for, now, MISSED_KEPT + 1)
                    fires += self._settle_due(entry, due, now)
                self._plan(entry, _next_after(entry.schedule, now, memo))
            except Exception as exc:  # one job's bad schedule never stops the others
                self._unusable(entry, exc)
        if fires:
            self._spawn_batch(fires)
        self.engine.on_catalog_change(self._catalog_changed)
        self._task = asyncio.create_task(self._run(), name="jobhost-scheduler")

    async def aclose(self) -> None:
        """Stop firing; fires already started finish recording their outcome, claims not
        yet due are released (the next start treats them as fires missed while down)."""
        self._closed = True
        self._closing.set()
        for woken in self._waiting:
            woken.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def wake(self) -> None:
        """Re-read the heap now (after a schedule change)."""
        self._idle.clear()
        self._wake.set()

    async def settle(self) -> None:
        """Return once every fire due by the clock's now has been claimed and recorded
        (tests and benchmarks: advance the clock, then settle)."""
        while True:
            self.wake()
            await self._idle.wait()
            for _, claimed in list(self._inflight.values()):
                await claimed.wait()
            now = self.clock.now()
            due = [task for task, (when, _) in self._inflight.items() if when <= now]
            if not due:
                return
            await asyncio.gather(*due, return_exceptions=True)

    # ----------------------------------------------------------------- the loop
    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now()
            fires = self._take_due(now)
            if fires:
                self._spawn_batch(fires)
            if not self._wake.is_set():
                self._idle.set()
            head = self._heap[0][0] - self._claim_ahead if self._heap else None
            await self.clock.sleep_until(head, self._wake)

    def _take_due(self, now: datetime) -> list[_Fire]:
        """Pop every fire due by ``now`` plus the claim-ahead window and plan each job's
        next one; fires already late go through the misfire rules."""
        fires: list[_Fire] = []
        horizon = now + self._claim_ahead
        memo: _Memo = {}
        while self._heap and self._heap[0][0] <= horizon:
            when, job_id = heapq.heappop(self._heap)
            entry = self._entries.get(job_id)
            if entry is None or entry.next_fire != when or entry.schedule is None:
                continue  # superseded by a change
            try:
                following = _next_after(entry.schedule, when, memo)
                if when > now:
                    fires.append(_Fire(entry.job_id, when, dict(entry.variables)))
                elif following is not None and following <= now:
                    # Late by more than one fire (a stall, a suspended machine): coalesce.
                    since = when - timedelta(microseconds=1)
                    due = entry.schedule.between(since, now, MISSED_KEPT + 1)
                    fires += self._settle_due(entry, due, now)
                    following = entry.schedule.next_after(now)
                else:
                    fires += self._settle_due(entry, [when], now)
                self._plan(entry, following)
            except Exception as exc:  # one job's bad schedule never stops the others
                self._unusable(entry, exc)
        return fires

    def _unusable(self, entry: _Entry, exc: Exception) -> None:
        """A schedule whose fires cannot be computed: that job stops firing and says why."""
        log.error("schedule of %s cannot be computed; it does not fire", entry.job_id, exc_info=exc)
        entry.schedule, entry.next_fire = None, None
        entry.problem = (
            f"Schedule {entry.expr!r} cannot be computed ({type(exc).__name__}: {exc}); "
            "it does not fire until the schedule is changed"
        )

    def _plan(self, entry: _Entry, when: datetime | None) -> None:
        entry.next_fire = when
        if when is not None:
            heapq.heappush(self._heap, (when, entry.job_id))

    def _settle_due(self, entry: _Entry, due: list[datetime], now: datetime) -> list[_Fire]:
        """The newest due fire, to run, if within grace; the rest are recorded as missed."""
        if not due:
            return []
        newest = due[-1]
        late = (now - newest).total_seconds()
        missed = due[:-1]
        fires: list[_Fire] = []
        if late <= entry.grace:
            fires.append(_Fire(entry.job_id, newest, dict(entry.variables)))
        else:
            missed = due
        if missed:
            if late <= entry.grace:
                reason = f"coalesced: only the newest missed fire ({iso(newest)}) runs"
            else:
                reason = (
                    f"missed: due {late:.0f} s ago, beyond the misfire grace of "
                    f"{entry.grace:g} s (JobHost was down or stalled)"
                )
            outcome = "coalesced" if late <= entry.grace else "missed"
            self._spawn(
                self._record_missed(entry.job_id, missed[-MISSED_KEPT:], reason, outcome), now
            )
        return fires

    def _spawn(
        self, work: Coroutine[Any, Any, None], due: datetime, claimed: asyncio.Event | None = None
    ) -> None:
        if claimed is None:
            claimed = asyncio.Event()
            claimed.set()
        task = asyncio.create_task(work)
        self._inflight[task] = (due, claimed)
        task.add_done_callback(self._forget)

    def _spawn_batch(self, fires: list[_Fire]) -> None:
        claimed = asyncio.Event()
        self._spawn(self._fire_batch(fires, claimed), max(f.when for f in fires), claimed)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> bool:
        """A schedule store call; False (and logged) when it failed."""
        try:
            await self.engine.journal.call(fn, self._store, *args)
        except Exception:  # the loop goes on; the log says what was not recorded
            log.exception("schedule store call %s failed", getattr(fn, "__name__", fn))
            return False
        return True

    def _tell_hooks(self, job_id: str, when: datetime, reason: str) -> None:
        """A fire did not run: every hook (notifications) hears it once it is recorded."""
        for hook in self.engine.hooks:
            try:
                hook.fire_missed(job_id, when, reason)
            except Exception:  # an observer's bug must not stop the schedule
                log.exception("hook %r failed on a missed fire of %s", hook, job_id)

    def _tell_settled(self, job_id: str, when: datetime, outcome: str, count: int = 1) -> None:
        """Every hook (metrics) hears what became of each fire."""
        for hook in self.engine.hooks:
            try:
                hook.fire_settled(job_id, when, outcome, count)
            except Exception:  # an observer's bug must not stop the schedule
                log.exception("hook %r failed on a fire of %s", hook, job_id)

    async def _record_missed(
        self, job_id: str, times: list[datetime], reason: str, outcome: str
    ) -> None:
        if not await self._call(db.record_missed, job_id, times, reason, self.clock.now()):
            return
        self._tell_settled(job_id, times[-1], outcome, len(times))
        # One notification per downtime, not one per fire: an every-minute job down for
        # a day would otherwise send a hundred mails.
        told = reason
        if len(times) > 1:
            told = f"{reason} ({len(times)} fires from {iso(times[0])} to {iso(times[-1])})"
        self._tell_hooks(job_id, times[-1], told)

    async def _fire_batch(self, fires: list[_Fire], claimed: asyncio.Event) -> None:
        """Claim the fires in one transaction (ahead of time), then start each at its due
        time, all fires due at one instant together, and record the outcomes at once."""
        try:
            mine = await self._claim(fires)
        finally:
            claimed.set()
        outcomes: list[db.Outcome] = []
        for index, fire in enumerate(mine):
            if index and fire.when == mine[index - 1].when:
                continue  # started with its group
            if not await self._until(fire.when):
                unstarted = [(f.job_id, f.when) for f in mine[index:]]
                await self._call(db.release_fires, unstarted)
                break
            group = [f for f in mine[index:] if f.when == fire.when]
            outcomes += await asyncio.gather(*(self._start(f) for f in group))
        if outcomes:
            await self._call(db.finish_fires, outcomes, self.clock.now())
            await self._after(outcomes)

    async def _claim(self, fires: list[_Fire]) -> list[_Fire]:
        """The fires this process won, soonest first."""
        due = [(f.job_id, f.when) for f in fires]
        try:
            won = await self.engine.journal.call(db.claim_fires, self._store, due, self.clock.now())
        except Exception:
            log.exception("could not claim %d fire(s); not running them", len(fires))
            return []
        for fire in fires:
            if (fire.job_id, fire.when) not in won:
                log.info("fire of %s at %s already claimed elsewhere", fire.job_id, iso(fire.when))
        mine = sorted((f for f in fires if (f.job_id, f.when) in won), key=lambda f: f.when)
        self.fired += len(mine)
        return mine

    async def _after(self, outcomes: list[db.Outcome]) -> None:
        """Tell the hooks of fires that did not start; prune each job's old fire rows."""
        for result in outcomes:
            self._tell_settled(result.job_id, result.scheduled_for, result.outcome)
            if result.outcome != "started" and result.execution_id is None:
                # A fire that could not start has no execution, so no run notification
                # would ever tell of it: it is reported as missed too.
                verb = "skipped" if result.outcome == "skipped" else "could not start"
                self._tell_hooks(result.job_id, result.scheduled_for, f"{verb}: {result.reason}")
            entry = self._entries.get(result.job_id)
            if entry is not None:
                entry.claims += 1
                if entry.claims % FIRES_KEPT == 0:
                    await self._call(db.prune_fires, result.job_id, FIRES_KEPT)

    async def _until(self, when: datetime) -> bool:
        """Wait for ``when``; False when the scheduler closes first."""
        while not self._closing.is_set():
            if self.clock.now() >= when:
                return True
            # An event of its own: a clock may set the event it is given (ManualClock
            # does on every move), which must not read as "closing".
            woken = asyncio.Event()
            self._waiting.add(woken)
            try:
                await self.clock.sleep_until(when, woken)
            finally:
                self._waiting.discard(woken)
        return False

    async def _start(self, fire: _Fire) -> db.Outcome:
        job_id, when = fire.job_id, fire.when
        self.lateness.append((when, (self.clock.now() - when).total_seconds()))
        try:
            execution = await self.engine.start(
                job_id, fire.variables, trigger=Trigger.SCHEDULE, scheduled_for=when
            )
        except Draining:
            outcome, reason = "skipped", "draining"
        except (Conflict, TooManyRequests) as exc:
            outcome, reason = "skipped", exc.message
        except JobHostError as exc:
            outcome, reason = "failed", exc.message
        except Exception as exc:
            log.exception("scheduled start of %s failed", job_id)
            outcome, reason = "failed", f"{type(exc).__name__}: {exc}"
        else:
            if execution.status is ExecutionStatus.REJECTED:
                # Refused before spawning: a history row of its own tells of it.
                return db.Outcome(job_id, when, "failed", execution.error, execution.id)
            return db.Outcome(job_id, when, "started", None, execution.id)
        log.warning("scheduled fire of %s at %s %s: %s", job_id, iso(when), outcome, reason)
        return db.Outcome(job_id, when, outcome, reason)

    # ----------------------------------------------------------------- entries
    def _entry(self, job: Job) -> _Entry:
        definition, override = job.definition, self._overrides.get(job.id)
        expr = definition.default_schedule if definition else None
        tz = (definition.timezone if definition else None) or self.engine.settings.default_timezone
        enabled = job.valid and definition is not None and definition.enabled
        variables: dict[str, Any] = {}
        if override is not None:
            expr = override.schedule or expr
            tz = override.timezone or tz
            if override.enabled is not None:
                enabled = enabled and override.enabled
            variables = dict(override.variables or {})
        source = "override" if override else ("job.json" if expr else "none")
        grace = self.engine.settings.misfire_grace_seconds
        if definition is not None and "misfire_grace_seconds" in definition.model_fields_set:
            grace = definition.misfire_grace_seconds
        entry = _Entry(job.id, expr, tz, enabled, source, variables, grace)
        if expr:
            try:
                entry.schedule = cron.parse(expr, tz)
            except InvalidSchedule as exc:
                entry.problem = exc.message
                log.warning("schedule of %s is not used: %s", job.id, exc.message)
        return entry

    def _refresh(self, job: Job) -> None:
        """Rebuild one job's entry; a changed timing restarts from now (no backfill)."""
        new = self._entry(job)
        old = self._entries.get(job.id)
        self._entries[job.id] = new
        if old is not None and old.same_timing(new):
            new.next_fire, new.claims = old.next_fire, old.claims
        elif new.active and new.schedule is not None:
            try:
                self._plan(new, new.schedule.next_after(self.clock.now()))
            except Exception as exc:  # one job's bad schedule never stops the others
                self._unusable(new, exc)
        self.wake()

    def _catalog_changed(self, catalog: Catalog) -> None:
        if self._closed:
            return
        for job_id in set(self._entries) - set(catalog):
            del self._entries[job_id]
        for job in catalog.values():
            self._refresh(job)

    # ----------------------------------------------------------------- service
    def next_fire(self, job_id: str) -> datetime | None:
        """The job's next fire time (for the catalog), or None."""
        entry = self._entries.get(job_id)
        return entry.next_fire if entry is not None and entry.active else None

    def schedule_of(self, job_id: str) -> cron.CronSchedule | None:
        """The job's schedule while it is active (for metrics), or None."""
        entry = self._entries.get(job_id)
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
        last = await self.engine.journal.call(db.last_fires, self._store)
        jobs = self.engine.visible_jobs(principal)
        return [self._describe(job, principal, last.get(job.id)) for job in jobs]

    async def get(self, job_id: str, principal: Principal) -> dict[str, Any]:
        """One job's schedule; JobNotFound when it is not visible."""
        job = self.engine.job(job_id, principal)
        recent = await self.engine.journal.call(db.fires, self._store, job.id, 1)
        return self._describe(job, principal, recent[0] if recent else None)

    async def fires(self, job_id: str, principal: Principal, limit: int = 20) -> list[db.Fire]:
        """The job's newest fires, newest first."""
        job = self.engine.job(job_id, principal)
        return await self.engine.journal.call(db.fires, self._store, job.id, limit)

    async def set_override(
        self,
        job_id: str,
        principal: Principal,
        *,
        schedule: str | _Unset | None = UNSET,
        enabled: bool | _Unset | None = UNSET,
        variables: Mapping[str, Any] | _Unset | None = UNSET,
        timezone: str | _Unset | None = UNSET,
        address: str | None = None,
    ) -> dict[str, Any]:
        """Change what is given (None: back to job.json's value), keep the rest; audited."""
        job = await self._editable(job_id, principal, address)
        current = self._overrides.get(job.id) or db.Override(job_id=job.id)
        changes: dict[str, Any] = {}
        if not isinstance(schedule, _Unset):
            changes["schedule"] = schedule.strip() if schedule is not None else None
        if not isinstance(enabled, _Unset):
            changes["enabled"] = enabled
        if not isinstance(timezone, _Unset):
            changes["timezone"] = timezone.strip() if timezone is not None else None
        if not isinstance(variables, _Unset):
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
        await self.engine.journal.call(db.save_override, self._store, override)
        self._overrides[job.id] = override
        self._refresh(job)
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
        removed = await self.engine.journal.call(db.delete_override, self._store, job.id)
        self._overrides.pop(job.id, None)
        self._refresh(job)
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

    def _describe(self, job: Job, principal: Principal, last: db.Fire | None) -> dict[str, Any]:
        """The API's schedule object (see the REST contract)."""
        entry = self._entries.get(job.id) or self._entry(job)
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
