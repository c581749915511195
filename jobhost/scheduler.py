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
Every hook in ``hooks`` (the notifier's ``missed`` rules) hears of fires that did
not run: once per recorded batch of missed fires, and once per skipped fire or fire that
could not start (that one has no execution, so no run notification would tell of it).

The decisions (misfires, coalescing) are pure functions in ``jobhost.schedule_plan``;
the entries and overrides live in the schedules service (``jobhost.schedules``), which
the API and CLI use without a runner; a change there replans here, live.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobhost import cron
from jobhost.abc import Hook, JobStarter, Records
from jobhost.catalog.discovery import Catalog
from jobhost.clock import Clock
from jobhost.errors import Conflict, Draining, JobHostError, TooManyRequests
from jobhost.models import ExecutionStatus, FireOutcome, Trigger, iso
from jobhost.schedule_plan import MISSED_KEPT, Entry, due_from, due_since, settle_due
from jobhost.schedules import UNSET, Schedules
from jobhost.store import schedules as db

log = logging.getLogger(__name__)

FIRES_KEPT = 1000  # fire rows kept per job (pruned every FIRES_KEPT claims)
# Fires are claimed this long before they are due, so the claim's database round trip
# (and the cron maths) is done by the time they are: at the due time only the start is left.
CLAIM_AHEAD = timedelta(milliseconds=100)
LATENESS_KEPT = 10_000
__all__ = ["CLAIM_AHEAD", "MISSED_KEPT", "UNSET", "Scheduler"]


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


@dataclass(frozen=True, slots=True)
class _Fire:
    """One fire to claim and start."""

    job_id: str
    when: datetime
    variables: dict[str, Any]


class Scheduler:
    """Fires cron schedules through ``starter.start``; ``service`` holds the schedules.

    Built by ``jobhost.host.scheduler_for``, which also gives it catalog reloads."""

    def __init__(
        self,
        starter: JobStarter,
        service: Schedules,
        records: Records,
        *,
        hooks: Sequence[Hook],
        clock: Clock,
        claim_ahead: timedelta = CLAIM_AHEAD,
    ) -> None:
        self._starter = starter
        self._records = records
        self._hooks = hooks  # the engine's list: told of fires that did not run, and more
        self.clock = clock
        self._claim_ahead = claim_ahead
        self._store = service.store
        self.service = service
        self.service.listen(self._replan)
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
        # (due time, seconds from it to the ``starter.start`` call): the scheduler's own
        # share of each fire's lateness, newest last; for metrics and benchmarks.
        self.lateness: deque[tuple[datetime, float]] = deque(maxlen=LATENESS_KEPT)

    # ----------------------------------------------------------------- lifecycle
    @property
    def _entries(self) -> dict[str, Entry]:
        return self.service.entries

    async def load(self) -> None:
        """Read overrides and build every job's entry; no fires."""
        await self.service.load()

    async def start(self) -> None:
        """Load, catch up on fires missed while down, then run the loop."""
        await self.load()
        now = self.clock.now()
        last = await self._records.call(db.last_fires, self._store)
        fires: list[_Fire] = []
        memo: _Memo = {}
        for entry in self._entries.values():
            if entry.schedule is None or not entry.active:
                continue
            recorded = last.get(entry.job_id)
            try:
                if recorded is not None:
                    due = due_since(entry.schedule, recorded.scheduled_for, now)
                    fires += self._settle_due(entry, due, now)
                self._plan(entry, _next_after(entry.schedule, now, memo))
            except Exception as exc:  # one job's bad schedule never stops the others
                self._unusable(entry, exc)
        if fires:
            self._spawn_batch(fires)
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
                due, following = due_from(
                    entry.schedule, when, _next_after(entry.schedule, when, memo), now
                )
                if when > now:
                    fires.append(_Fire(entry.job_id, when, dict(entry.variables)))
                else:
                    fires += self._settle_due(entry, due, now)
                self._plan(entry, following)
            except Exception as exc:  # one job's bad schedule never stops the others
                self._unusable(entry, exc)
        return fires

    def _unusable(self, entry: Entry, exc: Exception) -> None:
        """A schedule whose fires cannot be computed: that job stops firing and says why."""
        log.error("schedule of %s cannot be computed; it does not fire", entry.job_id, exc_info=exc)
        entry.schedule, entry.next_fire = None, None
        entry.problem = (
            f"Schedule {entry.expr!r} cannot be computed ({type(exc).__name__}: {exc}); "
            "it does not fire until the schedule is changed"
        )

    def _plan(self, entry: Entry, when: datetime | None) -> None:
        entry.next_fire = when
        if when is not None:
            heapq.heappush(self._heap, (when, entry.job_id))

    def _settle_due(self, entry: Entry, due: list[datetime], now: datetime) -> list[_Fire]:
        """Run what ``settle_due`` says runs; record the rest (missed or coalesced)."""
        settled = settle_due(entry.grace, due, now)
        if settled.missed and settled.reason is not None and settled.outcome is not None:
            work = self._record_missed(
                entry.job_id, list(settled.missed), settled.reason, settled.outcome
            )
            self._spawn(work, now)
        if settled.run is None:
            return []
        return [_Fire(entry.job_id, settled.run, dict(entry.variables))]

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
            await self._records.call(fn, self._store, *args)
        except Exception:  # the loop goes on; the log says what was not recorded
            log.exception("schedule store call %s failed", getattr(fn, "__name__", fn))
            return False
        return True

    def _tell_hooks(self, job_id: str, when: datetime, reason: str) -> None:
        """A fire did not run: every hook (notifications) hears it once it is recorded."""
        for hook in self._hooks:
            try:
                hook.fire_missed(job_id, when, reason)
            except Exception:  # an observer's bug must not stop the schedule
                log.exception("hook %r failed on a missed fire of %s", hook, job_id)

    def _tell_settled(self, job_id: str, when: datetime, outcome: str, count: int = 1) -> None:
        """Every hook (metrics) hears what became of each fire."""
        for hook in self._hooks:
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
            won = await self._records.call(db.claim_fires, self._store, due, self.clock.now())
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
            execution = await self._starter.start(
                job_id, fire.variables, trigger=Trigger.SCHEDULE, scheduled_for=when
            )
        except Draining:
            outcome, reason = FireOutcome.SKIPPED, "draining"
        except (Conflict, TooManyRequests) as exc:
            outcome, reason = FireOutcome.SKIPPED, exc.message
        except JobHostError as exc:
            outcome, reason = FireOutcome.FAILED, exc.message
        except Exception as exc:
            log.exception("scheduled start of %s failed", job_id)
            outcome, reason = FireOutcome.FAILED, f"{type(exc).__name__}: {exc}"
        else:
            if execution.status is ExecutionStatus.REJECTED:
                # Refused before spawning: a history row of its own tells of it.
                return db.Outcome(job_id, when, FireOutcome.FAILED, execution.error, execution.id)
            return db.Outcome(job_id, when, FireOutcome.STARTED, None, execution.id)
        log.warning("scheduled fire of %s at %s %s: %s", job_id, iso(when), outcome, reason)
        return db.Outcome(job_id, when, outcome, reason)

    # ----------------------------------------------------------------- changes
    def _replan(self, job_id: str, new: Entry, old: Entry | None) -> None:
        """A rebuilt entry (an override, a catalog reload): a changed timing restarts from
        now (no backfill)."""
        if old is not None and old.same_timing(new):
            new.next_fire, new.claims = old.next_fire, old.claims
        elif new.active and new.schedule is not None:
            try:
                self._plan(new, new.schedule.next_after(self.clock.now()))
            except Exception as exc:  # one job's bad schedule never stops the others
                self._unusable(new, exc)
        self.wake()

    def catalog_changed(self, catalog: Catalog) -> None:
        """Rebuild the entries of a reloaded catalog (changed timings are replanned)."""
        if not self._closed:
            self.service.catalog_changed(catalog)
