"""Live executions: dispatch, the state machine, the queue, and the bookkeeping of an end.

The supervisor owns every execution that is not finished. It is the executor's
``ExecutionEvents``: transitions are applied in memory at once (so decisions never
see stale state), written through the journal, and announced only after the write
commits. It knows nothing of users or permissions: the engine checks those first.

The decisions are elsewhere, as pure functions over small values: whether a run may
start (``admission``), what an exit means (``exits``), the result file (``results``),
when a run is restarted (``restart``, timers per run lineage).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from jobhost.abc import Executor, Hook
from jobhost.catalog.discovery import Job
from jobhost.config import Settings
from jobhost.errors import Conflict, TooManyRequests
from jobhost.execution.admission import (
    FREE,
    Admission,
    Decision,
    Policy,
    Queue,
    Reject,
    admit,
)
from jobhost.execution.concurrency import Slot, Slots, admission_of, slot_of
from jobhost.execution.exits import exit_status, timeout_message
from jobhost.execution.journal import Journal
from jobhost.execution.launch import Launcher
from jobhost.execution.live import Launch, LiveRuns
from jobhost.execution.restart import RestartTimers
from jobhost.execution.results import parse_result, read_result_bytes
from jobhost.execution.retry import next_attempt, retry_delay
from jobhost.execution.subscriptions import Subscription, Watchers
from jobhost.models import (
    AuditEvent,
    Execution,
    ExecutionStatus,
    ExitInfo,
    Trigger,
    iso,
    new_id,
    utcnow,
)
from jobhost.redact import mask_execution

__all__ = ["Launch", "Supervisor"]  # Launch: imported from here by the engine

log = logging.getLogger(__name__)

RECENT_KEPT = 10_000
# Queued runs whose changing queue position is written and announced as it changes; the
# ones further back keep the (larger) position they had until they come this near, so a
# release costs a bounded number of updates however long the queue (bench due).
LIVE_POSITIONS = 100
FINAL_WRITE_ATTEMPTS = 8


class Supervisor:
    """Executions in flight. All methods run on the event loop."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        executor_factory: Callable[[Supervisor], Executor],
        *,
        hooks: Sequence[Hook] = (),
        clock: Callable[[], Any] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        journal.secrets_of = self.secret_values  # redact: stored texts never hold secrets
        self.owner: str | None = None  # this instance's id, recorded on every run it starts
        self._launcher = Launcher(settings)
        self.executor = executor_factory(self)
        self._hooks = hooks  # the engine's list: a hook added after (the notifier) is told too
        self._clock = clock
        self.runs = LiveRuns()
        self.live = self.runs.runs  # by ID, read by the engine
        # Who holds a process and who waits, per job and concurrency key and per group.
        self.slots = Slots(lambda: settings.groups)
        # Where a retry's next attempt goes until it is due (the engine's DueRuns.add):
        # called with the recorded ``scheduled`` row and the launch to reuse, or None.
        self.later: Callable[[Execution, Launch | None], None] | None = None
        self._rng = rng or random.Random()
        self._launches = self.runs.launches
        self._watchers = Watchers()
        self._tasks: set[asyncio.Future[Any]] = set()  # bookkeeping in flight
        self._unannounced = 0  # transitions recorded, announced once committed
        self._results_read: set[str] = set()  # result files removed once the end commits
        self._restarts = RestartTimers(rng or random.Random())
        self.last_finished: dict[str, Execution] = {}
        # Recently ended runs as stored: an ended run no longer changes, so status reads of
        # it (a UI or a script polling a run that just finished) need no database trip.
        self.recent: OrderedDict[str, Execution] = OrderedDict()
        self.finished_counts: dict[str, int] = {}
        self.duration_sum = 0.0

    # ----------------------------------------------------------------- starting
    async def submit(
        self,
        launch: Launch,
        *,
        user: str | None,
        trigger: Trigger,
        test: bool = False,
        idempotency_key: str | None = None,
        request_fingerprint: str | None = None,
        restart_count: int = 0,
        scheduled_for: Any = None,
        redacted: dict[str, Any] | None = None,
        audit: Callable[[Execution], AuditEvent] | None = None,
        lineage: str | None = None,
        planned: Execution | None = None,
        triggered_by: str | None = None,
        dry_run: bool = False,
    ) -> Execution:
        """Record a new execution and dispatch it now, queue it, or refuse it (409/429).

        ``lineage`` is the first run of the restart chain this one continues. ``planned``
        is the ``scheduled`` row (a due retry or run-at start) this run continues: its ID,
        attempt and links are kept.

        ``audit`` makes the event that explains the start; it is committed in the same
        transaction as the execution's first record."""
        job = launch.job
        slot, decision = self._admit(launch, test)
        if isinstance(decision, Reject):
            if decision.full:
                raise TooManyRequests(decision.reason)
            raise Conflict(decision.reason, details={"running": list(decision.running)})
        status = ExecutionStatus.STARTING
        replace: tuple[str, ...] = ()
        if isinstance(decision, Queue):
            status = ExecutionStatus.QUEUED
            replace = decision.replace
        execution = Execution(
            id=new_id(),
            job_id=job.id,
            status=status,
            trigger=trigger,
            user=user,
            variables=redacted if redacted is not None else dict(launch.variables),
            test=test,
            created_at=self._clock(),
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
            restart_count=restart_count,
            scheduled_for=scheduled_for,
            owner=self.owner,
            triggered_by=triggered_by,
            dry_run=dry_run,
        )
        if planned is not None:
            execution = continued(execution, planned)
        self.runs.add(execution, launch)
        if slot is not None and status is ExecutionStatus.QUEUED:
            self.slots.wait(execution.id, slot)
            execution = execution.evolve(queue_position=self.slots.position(execution.id))
            self.live[execution.id] = execution
        elif slot is not None:
            self.slots.hold(execution.id, slot)
        if lineage is not None:
            self._restarts.link(execution.id, lineage)
        # A start the executor reports at once (a local spawn) folds its first record into
        # the next one, ``running`` with the pid: one commit (``Journal`` docstring).
        fold = status is ExecutionStatus.STARTING and getattr(self.executor, "fold_start", False)
        write = self.journal.record(execution, *([audit(execution)] if audit else []), fold=fold)
        if status is ExecutionStatus.STARTING:
            # The spawn overlaps the commit of the first record: nothing is announced
            # before that commit, and a failed commit ends the process it described.
            await self._dispatch(execution)
        try:
            await write
        except BaseException:
            # Not recorded, so it must not exist: end the process it started and forget
            # it here, so it neither counts against max_concurrent nor runs from the queue.
            if execution.id in self.live:
                self._forget(execution)
                await self.executor.stop(execution.id, 0)
            raise
        self._announce(execution)
        self._tell_hooks(lambda hook: hook.execution_started(execution), execution.id)
        for old in replace:
            await self.stop(old, by="replaced by a newer run")
        return self.live.get(execution.id, execution)

    def _admit(self, launch: Launch, test: bool) -> tuple[Slot | None, Decision]:
        """The slot a new run of ``launch`` takes (none for a test run), and whether it may
        start now, must wait or may not run (``admission.admit``)."""
        job = launch.job
        definition = job.definition
        assert definition is not None
        slot = None if test else slot_of(job.id, definition, launch.variables)
        policy = Policy.of(definition)
        request = Admission(job.id, policy, test) if slot is None else admission_of(slot, policy)
        if slot is None or not request.limited:
            # The answer does not depend on the holders: an unlimited job has many in a
            # burst, and listing them for each start made a burst's starts quadratic.
            return slot, admit(request, FREE)
        return slot, admit(request, self.slots.occupancy(slot, self.settings.max_queue))

    def _forget(self, execution: Execution) -> None:
        """Drop a run from memory without a record (its first write failed)."""
        self.runs.forget(execution)
        self.slots.release(execution.id)
        self._restarts.forget(execution.id)
        self._watchers.ended(execution)

    async def _dispatch(self, execution: Execution) -> None:
        launch = self._launches[execution.id]
        try:
            spec = self._launcher.spec(
                launch.job,
                execution,
                launch.rendered,
                launch.variables,
                launch.roles,
            )
        except OSError as exc:
            self.on_exited(execution.id, ExitInfo(None, None, error=f"Cannot prepare run: {exc}"))
            return
        await self.executor.start(spec)

    async def adopt(self, execution: Execution, job: Job | None) -> bool:
        """Take over a run an expired instance left running (``Executor.adopt``); True when
        the executor follows it from now on, and it is live here, owned by this instance."""
        adopted = execution.evolve(owner=self.owner)
        # Live before the executor is asked: it may report the exit at once (a process
        # that ended while no server was up).
        launch = None
        if job is not None:
            launch = Launch(
                job=job, variables=dict(adopted.variables), rendered=None, roles=frozenset()
            )
        self.runs.add(adopted, launch)
        try:
            attached = await self.executor.adopt(execution)
        except Exception:
            log.exception("adopting %s failed", execution.id)
            attached = False
        if attached and adopted.id in self._launches:
            launch = self._launches[adopted.id]
            secrets = self.executor.adopted_secrets(adopted.id)
            self._launches[adopted.id] = dataclasses.replace(launch, secrets=secrets)
        if not attached:
            self.runs.forget(adopted)
            return False
        current = self.live.get(adopted.id)
        if current is not None and not current.status.terminal:
            definition = job.definition if job is not None else None
            if definition is not None and not current.test:
                self.slots.hold(current.id, slot_of(current.job_id, definition, current.variables))
            self._persist_and_announce(current)
        return True

    def active_of(self, job_id: str) -> list[Execution]:
        """The job's runs that hold (or are getting) a process; test runs do not count."""
        return self.runs.active_of(job_id)

    def queued_total(self) -> int:
        return self.slots.waiting()

    # ----------------------------------------------------------------- stopping
    async def stop(self, execution_id: str, *, by: str | None = None) -> Execution:
        """Ask a live execution to stop; a queued one ends at once as ``stopped``.
        ``by`` names who or what asked (kept as the run's ``stopped_by``)."""
        execution = self.live.get(execution_id)
        if execution is None or execution.status.terminal:
            # Ended meanwhile (its bookkeeping may still be in flight): nothing to stop.
            return execution or await self._stored(execution_id)
        if execution.status is ExecutionStatus.QUEUED:
            self.slots.release(execution_id)
            final = execution.evolve(
                status=ExecutionStatus.STOPPED,
                ended_at=self._clock(),
                error="Stopped while queued; it never ran",
                stopped_by=by,
            )
            await self._finish(final)
            return final
        if execution.status is ExecutionStatus.STOPPING:
            return execution
        stopping = execution.evolve(status=ExecutionStatus.STOPPING, stopped_by=by)
        self._set(stopping)
        await self.journal.record(stopping)
        self._announce(stopping)
        launch = self._launches.get(execution_id)
        definition = launch.job.definition if launch else None
        grace = definition.stop_grace_seconds if definition else 10.0
        await self.executor.stop(execution_id, grace)
        return self.live.get(execution_id, stopping)

    async def _stored(self, execution_id: str) -> Execution:
        stored = await self.journal.call(self.journal.store.get_execution, execution_id)
        if stored is None:
            raise KeyError(execution_id)
        return stored

    def restart_pending(self) -> list[str]:
        """The jobs with a restart timer set."""
        return self._restarts.pending()

    def cancel_restart(self, job_id: str) -> bool:
        """Cancel every pending restart of the job; True if there was one."""
        return self._restarts.cancel(job_id)

    # ----------------------------------------------------------------- executor events
    def on_started(self, execution_id: str, pid: int | None, host: str) -> None:
        execution = self.live.get(execution_id)
        if execution is None or execution.status.terminal:
            return
        status = execution.status
        if status is ExecutionStatus.STARTING:
            status = ExecutionStatus.RUNNING
        updated = execution.evolve(status=status, pid=pid, host=host, started_at=self._clock())
        self._set(updated)
        self._persist_and_announce(updated)
        self._tell_hooks(lambda hook: hook.execution_running(updated), execution_id)

    def on_output(self, execution_id: str, total_bytes: int) -> None:
        execution = self.live.get(execution_id)
        if execution is not None:
            self.live[execution_id] = execution.evolve(output_bytes=total_bytes)
        self._watchers.wake_output(execution_id)

    def on_progress(self, execution_id: str, fraction: float | None, message: str | None) -> None:
        execution = self.live.get(execution_id)
        if execution is None:
            return
        updated = execution.evolve(progress=fraction, progress_message=message)
        updated = mask_execution(updated, self.secret_values(execution_id))  # redact
        self._set(updated)
        self.journal.record_soon(updated)
        self._announce(updated)

    def on_exited(self, execution_id: str, info: ExitInfo) -> None:
        execution = self.live.get(execution_id)
        if execution is None:
            return
        status = exit_status(info)
        result, result_error = self._read_result(execution_id)
        error = info.error or result_error
        launch = self._launches.get(execution_id)
        if status is ExecutionStatus.TIMED_OUT and error is None and launch is not None:
            definition = launch.job.definition
            limit = self._launcher.timeout(definition) if definition else None
            error = timeout_message(limit)
        final = execution.evolve(
            status=status,
            ended_at=self._clock(),
            exit_code=info.exit_code,
            exit_signal=info.exit_signal,
            cpu_seconds=info.cpu_seconds,
            peak_rss_bytes=info.peak_rss_bytes,
            output_bytes=max(info.output_bytes, execution.output_bytes),
            result=result,
            error=error,
            stopped_by=execution.stopped_by
            or ("timeout" if status is ExecutionStatus.TIMED_OUT else None),
        )
        final = mask_execution(final, self.secret_values(execution_id))  # redact
        self._spawn(self._finish(final))

    # ----------------------------------------------------------------- finishing
    async def _finish(self, final: Execution) -> None:
        launch = self._launches.get(final.id)
        retry = await self._record_retry(final, launch.job if launch is not None else None)
        if retry is not None:
            final = final.evolve(next_attempt=retry.id)
        self._set(final)
        try:
            await self.journal.record(final)
        except Exception:
            # The run has ended whether or not its record says so: finish it here (so
            # wait() returns and its slot frees) and keep trying to store the end.
            log.exception("recording the end of %s failed; retrying in the background", final.id)
            self._spawn(self._record_until_stored(final))
        else:
            self._forget_exit(final.id)
        self.runs.unindex(final)
        freed = self.slots.release(final.id)
        self.remember(final)
        previous = self.last_finished.get(final.job_id)
        if not final.test:
            self.last_finished[final.job_id] = final
        self.finished_counts[final.status.value] = self.finished_counts.get(final.status, 0) + 1
        self.duration_sum += final.duration_seconds or 0.0
        self._announce(final)
        self._watchers.ended(final)
        self._tell_hooks(lambda hook: hook.execution_finished(final, previous), final.id)
        self._launches.pop(final.id, None)
        if launch is not None:
            self._maybe_restart(final, launch)
        if retry is not None and self.later is not None:
            self._announce(retry)
            self.later(retry, launch if launch is not None and launch.rendered else None)
        if freed or final.queue_position is not None:
            await self._admit_waiting()

    async def retry_lost(self, lost: Execution, job: Job | None) -> Execution:
        """A run reconciliation recorded ``lost`` (its server died, its process could not
        be re-adopted) gets its next attempt like a run lost here; returns it as stored."""
        retry = await self._record_retry(lost, job)
        if retry is None or self.later is None:
            return lost
        linked = lost.evolve(next_attempt=retry.id)
        await self.journal.record(linked)
        self.remember(linked)
        self._announce(linked)
        self._announce(retry)
        self.later(retry, None)
        return linked

    async def _record_retry(self, final: Execution, job: Job | None) -> Execution | None:
        """The recorded ``scheduled`` row of ``final``'s next attempt (job.json ``retry``),
        or None when ``final`` is its run's last attempt."""
        definition = job.definition if job is not None else None
        if definition is None or definition.retry is None or self.later is None:
            return None
        delay = retry_delay(definition.retry, final, self._rng)
        if delay is None:
            return None
        retry = next_attempt(final, delay, self._clock(), self.owner)
        audit = AuditEvent(
            action="job.retry",
            user=final.user,
            target=final.job_id,
            details={
                "execution": retry.id,
                "attempt": retry.attempt,
                "after": final.id,
                "status": final.status.value,
                "due_at": iso(retry.due_at),
            },
            at=self._clock(),
        )
        try:
            await self.journal.record(retry, audit)
        except Exception:  # no row, no retry: the run ends as it is, and says so
            log.exception("recording the next attempt of %s failed; no retry", final.id)
            return None
        return retry

    async def record_unstarted(self, final: Execution) -> None:
        """A run refused before it had a process (``rejected``): recorded, counted,
        announced and told to the hooks exactly like a run that finished."""
        await self._finish(final)

    async def _record_until_stored(self, final: Execution) -> None:
        for attempt in range(FINAL_WRITE_ATTEMPTS):
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
            try:
                await self.journal.record(final)
            except Exception as exc:
                log.warning("recording the end of %s failed again: %s", final.id, exc)
            else:
                self._forget_exit(final.id)
                return
        log.error("gave up recording the end of %s; the next server will reconcile it", final.id)

    async def _admit_waiting(self) -> None:
        """Start the waiting runs that fit now (a slot or a group's share was freed), then
        tell the others their new place in the queue."""
        for execution_id in self.slots.ready():
            execution = self.live.get(execution_id)
            if execution is None or execution.status is not ExecutionStatus.QUEUED:
                self.slots.release(execution_id)
                continue
            starting = execution.evolve(status=ExecutionStatus.STARTING, queue_position=None)
            self._set(starting)
            await self.journal.record(starting)
            self._announce(starting)
            await self._dispatch(starting)
        for execution_id, position in self.slots.positions():
            if position > LIVE_POSITIONS:
                continue  # far back: told once it comes near (the number only falls)
            waiting = self.live.get(execution_id)
            if waiting is not None and waiting.queue_position != position:
                moved = waiting.evolve(queue_position=position)
                self._set(moved)
                self.journal.record_soon(moved)
                self._announce(moved)

    def _maybe_restart(self, final: Execution, launch: Launch) -> None:
        def fire(lineage: str) -> None:
            self._spawn(self._restart(final, launch, lineage))

        braked = self._restarts.after_end(final, launch.job.definition, self._clock(), fire)
        if braked is not None:
            note = (
                f"Restart given up: {braked.burst} quick failures within "
                f"{braked.window_seconds:g} s"
            )
            noted = final.evolve(error=note)
            self.remember(noted)
            self._persist_and_announce(noted)

    async def _restart(self, final: Execution, launch: Launch, lineage: str) -> None:
        try:
            await self.submit(
                launch,
                user=final.user,
                trigger=Trigger.RESTART,
                test=final.test,
                restart_count=final.restart_count + 1,
                redacted=final.variables,
                lineage=lineage,
                dry_run=final.dry_run,
            )
        except Conflict:
            self._restarts.give_up(lineage)
            log.info("restart of %s skipped: another execution is active", final.job_id)

    def secret_values(self, execution_id: str) -> list[str]:
        """The clear values of a live run's secret variables, for scrubbing text that is
        about to leave the host (notifications). Kept in memory only, never stored."""
        return self.runs.secret_values(execution_id)

    # ----------------------------------------------------------------- watching
    async def wait(self, execution_id: str) -> Execution | None:
        """The execution once it has ended; None when it is not live here."""
        if execution_id not in self.live:
            return None
        return await self._watchers.wait(execution_id)

    def next_output(self, execution_id: str) -> asyncio.Future[None]:
        """Set when more output arrives or the run ends; registered at the call (take it
        before reading, so nothing written during the read is missed). Already set for a
        run that is not live."""
        if execution_id in self.live:
            return self._watchers.next_output(execution_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def forget_output(self, execution_id: str, future: asyncio.Future[None]) -> None:
        self._watchers.forget_output(execution_id, future)

    def changes(self) -> Subscription:
        """Every transition announced from this call on (bounded: a slow reader loses the
        oldest); subscribed at once, so nothing between this call and the first read is
        missed."""
        return self._watchers.changes()

    # ----------------------------------------------------------------- internals
    def _tell_hooks(self, call: Callable[[Hook], None], execution_id: str) -> None:
        for hook in self._hooks:
            try:
                call(hook)
            except Exception:  # a hook must never break the run's bookkeeping
                log.exception("hook %r failed for %s", hook, execution_id)

    def _set(self, execution: Execution) -> None:
        if execution.id in self.live:
            self.live[execution.id] = execution

    def remember(self, ended: Execution) -> None:
        """Keep an ended run for status reads (bounded: the oldest go first)."""
        self.recent[ended.id] = ended
        self.recent.move_to_end(ended.id)
        if len(self.recent) > RECENT_KEPT:
            self.recent.popitem(last=False)

    def _persist_and_announce(self, execution: Execution) -> None:
        """Announce ``execution`` once its record commits: called by the journal as it
        settles the batch, so a transition costs no future and no extra loop iteration."""
        self.journal.record_then(execution, functools.partial(self._announce_committed, execution))
        self._unannounced += 1

    def _announce_committed(self, execution: Execution, error: BaseException | None) -> None:
        self._unannounced -= 1
        if error is None:
            self._announce(execution)
        else:
            log.error("recording %s failed", execution.id, exc_info=error)

    def announce(self, execution: Execution) -> None:
        """Tell every subscriber about a change recorded elsewhere (reconciliation)."""
        self._announce(execution)

    def listen(self, listener: Callable[[Execution], None]) -> None:
        """Call ``listener`` with every change announced from now on (on the loop)."""
        self._watchers.listeners.append(listener)

    def _announce(self, execution: Execution) -> None:
        self._watchers.announce(execution)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor task failed", exc_info=task.exception())

    def _forget_exit(self, execution_id: str) -> None:
        """The end is committed: the executor's exit record and the result file can go
        (not before: see ``Executor.exit_recorded``)."""
        self.executor.exit_recorded(execution_id)
        if execution_id in self._results_read:
            self._results_read.discard(execution_id)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._launcher.result_path(execution_id))

    def _read_result(self, execution_id: str) -> tuple[Any, str | None]:
        """The run's result, its file left in place: it is removed once the run's end is
        committed (``_forget_exit``), so a server that dies before that leaves the file
        to the server that re-adopts the exit."""
        raw, error = read_result_bytes(self._launcher.result_path(execution_id), remove=False)
        if raw is None and error is None:  # most jobs write no result
            return None, None
        self._results_read.add(execution_id)
        return (None, error) if error is not None else parse_result(raw)

    async def drain(self) -> None:
        """Wait for every pending bookkeeping task (used at shutdown and by tests)."""
        while self._tasks or self._unannounced:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            elif self.journal.running:
                await self.journal.flush()  # the announcements follow their commits
            else:
                return  # nothing will commit them any more

    async def aclose(self, *, stop_running: bool, stopped_by: str = "server shutdown") -> None:
        for job_id in self.restart_pending():
            self.cancel_restart(job_id)
        if stop_running:
            waits = []
            for execution_id in list(self.live):
                waits.append(asyncio.ensure_future(self.wait(execution_id)))
                await self.stop(execution_id, by=stopped_by)
            if waits:
                await asyncio.gather(*waits, return_exceptions=True)
        await self.drain()
        await self.executor.aclose()


def continued(execution: Execution, planned: Execution) -> Execution:
    """``execution`` as the run that its ``scheduled`` row ``planned`` stood for: the same
    ID, creation time, attempt, links and idempotency key."""
    return dataclasses.replace(
        execution,
        id=planned.id,
        created_at=planned.created_at,
        attempt=planned.attempt,
        retry_of=planned.retry_of,
        due_at=planned.due_at,
        triggered_by=planned.triggered_by,
        idempotency_key=planned.idempotency_key,
        request_fingerprint=planned.request_fingerprint,
    )
