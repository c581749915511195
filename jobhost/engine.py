"""The JobHost façade: every entry point (API, CLI, scheduler) goes through here.

A request becomes a run in one direction: permission check → variables (defaults →
init hook → checks → substitution) → record → dispatch. Permission is checked here,
for every caller, with the one rule in ``jobhost.security``.

The class is the public API, so it stays one piece: each method is a permission check
and a few lines over the parts that do the work (``Supervisor`` for live runs, the
``Journal`` and the store for records, the catalog, ``reconcile``, ``IdempotencyKeys``,
``Drain``, ``variables``). ``jobhost.host`` starts and closes those parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from jobhost.abc import Executor, Hook, Store
from jobhost.catalog.discovery import Catalog, Job, rescan
from jobhost.catalog.templates import redact, render
from jobhost.chains import Chains
from jobhost.config import Settings
from jobhost.errors import (
    BadRequest,
    Conflict,
    Draining,
    ExecutionNotFound,
    InitHookFailed,
    InvalidDefinition,
    JobNotFound,
    PermissionDenied,
    VariableError,
)
from jobhost.execution.choices import ChoiceLists
from jobhost.execution.drain import Drain
from jobhost.execution.due import check_due_time, planned_start
from jobhost.execution.following import DEFAULT_READ, MAX_READ, follow_output, read_chunk
from jobhost.execution.forwarding import (
    Forwarding,
    elsewhere_of_job,
    forward_restart,
    forward_stop,
    forward_stops,
    owned_elsewhere,
)
from jobhost.execution.idempotency import IdempotencyKeys, fingerprint
from jobhost.execution.journal import Journal
from jobhost.execution.output import remove_logs
from jobhost.execution.scheduled import ScheduledRuns
from jobhost.execution.subscriptions import Subscription
from jobhost.execution.supervisor import Launch, Supervisor
from jobhost.execution.variables import resolve_variables, reusable_variables, secret_names
from jobhost.host import Parts
from jobhost.models import (
    Action,
    AuditEvent,
    AuditQuery,
    Execution,
    ExecutionStatus,
    HistoryQuery,
    Instance,
    OutputChunk,
    Page,
    Principal,
    Trigger,
    iso,
    new_id,
    utcnow,
)
from jobhost.security import can, can_on_execution
from jobhost.store import instances

if TYPE_CHECKING:
    from jobhost.file_triggers import FileTriggers
    from jobhost.notify import Notifier
    from jobhost.scheduler import Scheduler

log = logging.getLogger(__name__)

SYSTEM = Principal(username="jobhost", roles=frozenset(), superuser=True)
P = TypeVar("P")


def _opened(part: P | None) -> P:
    """A part that exists while the host is open (``jobhost.host.Parts``)."""
    if part is None:
        raise RuntimeError("JobHost.open() was not awaited")
    return part


class JobHost:
    """Start, stop, restart, test and watch jobs; the one façade over catalog, store and runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        executor_factory: Callable[[Supervisor], Executor] | None = None,
        hooks: Sequence[Hook] = (),
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        kind: str = "server",
    ) -> None:
        """``kind`` "server" reconciles the runs of expired instances (at start-up and on
        every heartbeat); "cli" (a local ``jobhost run``) owns only its own runs.
        ``executor_factory`` defaults to the one ``settings.executor`` names."""
        if store is None:
            from jobhost.store import make_store

            store = make_store(settings)
        self.settings = settings
        self.store = store
        self.clock = clock
        self.rng = rng
        self.kind = kind
        self._parts = Parts(executor_factory)
        self._hooks = list(hooks)
        self._catalog = Catalog({})
        self._idempotency = IdempotencyKeys(
            lambda user, key: self.journal.call(self.store.find_by_idempotency_key, user, key)
        )
        self._opened = False
        # Whether another instance held a live lease at the last heartbeat: only then can
        # runs this one does not know be active (``server.cluster.running``).
        self.others_alive = False
        self._drain = Drain()
        self._catalog_listeners: list[Callable[[Catalog], None]] = []
        self.scheduled_runs = ScheduledRuns(self)  # retries and run-at starts, when due
        self.chains = Chains(self)  # on_success / on_failure: a hook on finished runs
        self._hooks.append(self.chains)
        self.choices = ChoiceLists()  # variables' choices_from lists, cached

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> JobHost:
        """Migrate the store, scan the catalog, reconcile orphans, start the watcher and
        the scheduler (each per settings: ``watch``, ``scheduler_enabled``); on failure,
        what did start is closed again (``jobhost.host.Parts``)."""
        await self._parts.start(self)
        self._opened = True
        return self

    async def reconcile(self) -> list[Execution]:
        """Re-adopt or resolve the runs of instances whose lease expired (see
        ``jobhost.execution.reconcile``); returns the runs recorded ``lost`` (those with a
        ``retry`` policy that allows it get their next attempt)."""
        lost = await self._parts.reconcile(self)
        return [await self.supervisor.retry_lost(e, self._catalog.get(e.job_id)) for e in lost]

    async def adopt_orphan(self, execution: Execution) -> bool:
        """Reconciliation's hand-over of an orphan: a ``scheduled`` run waits here for its
        due time, a run with a process is re-adopted by the supervisor."""
        if execution.status is ExecutionStatus.SCHEDULED:
            return self.scheduled_runs.take_over(execution)
        return await self.supervisor.adopt(execution, self._catalog.get(execution.job_id))

    async def tick(self) -> None:
        """Each lease heartbeat: resolve expired owners' runs (servers), and read the
        requests for our runs that a missed notification left waiting."""
        if self.kind == "server":
            await self.reconcile()
        await self.forwarding.sweep()
        await self.look_around()

    def peer_seen(self) -> None:
        """Another server said it started (before our next heartbeat would see it)."""
        self.others_alive = True

    async def look_around(self) -> None:
        """Note whether another instance holds a live lease (``others_alive``)."""
        found = await self.journal.call(instances.live_instances, self.store, self.clock())
        self.others_alive = any(i.id != self.instance_id for i in found)

    @property
    def forwarding(self) -> Forwarding:
        """Stops and restarts for runs that other servers own (``execution.forwarding``)."""
        return _opened(self._parts.forwarding)

    @property
    def instance_id_or_none(self) -> str | None:
        return self._parts.lease.id if self._parts.lease is not None else None

    async def advertise(self, url: str) -> None:
        """Where other servers reach this one (``jobhost serve`` calls it once bound),
        unless ``cluster_url`` says otherwise."""
        if self._parts.lease is not None and self.settings.cluster_url is None:
            await self._parts.lease.set_url(url)

    @property
    def instance_id(self) -> str:
        """This process's instance (the owner recorded on the runs it starts)."""
        return _opened(self._parts.lease).id

    @property
    def stops_runs_on_close(self) -> bool:
        """Whether closing stops the running runs (``shutdown_policy = "stop"``, unless a
        drain said leave); a start-up that failed leaves them for the next server."""
        return self._opened and self.settings.shutdown_policy == "stop" and not self._drain.leave

    async def aclose(self) -> None:
        """Stop (or leave, per ``shutdown_policy``) running jobs, flush, end the lease,
        release everything. Left runs are re-adopted by the next server on this host."""
        await self._drain.aclose()
        await self.chains.aclose()
        await self._parts.aclose()

    async def __aenter__(self) -> JobHost:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def supervisor(self) -> Supervisor:
        return _opened(self._parts.supervisor)

    @property
    def journal(self) -> Journal:
        return _opened(self._parts.journal)

    @property
    def scheduler(self) -> Scheduler | None:
        """The cron loop, when ``scheduler_enabled``."""
        return self._parts.scheduler

    @property
    def notifier(self) -> Notifier | None:
        """The notifications hook, when ``notifications_enabled``."""
        return self._parts.notifier

    @property
    def file_triggers(self) -> FileTriggers | None:
        """The ``watch`` file triggers, where the scheduler runs on a server."""
        return self._parts.file_triggers

    # ----------------------------------------------------------------- ownership, drain
    async def instances(self) -> list[Instance]:
        """Every registered instance (servers and local runs), alive or expired."""
        return await self.journal.call(instances.list_instances, self.store)

    @property
    def draining(self) -> bool:
        return self._drain.active

    @property
    def exit_requested(self) -> asyncio.Event:
        """Set when a drain is over: ``jobhost serve`` then exits (0)."""
        return self._drain.exit_requested

    async def drain(
        self,
        principal: Principal = SYSTEM,
        *,
        wait_seconds: float | None = None,
        leave: bool = False,
        address: str | None = None,
    ) -> None:
        """Start nothing new (starts answer 503 ``draining``, schedules are skipped), let
        the running runs finish for up to ``wait_seconds`` (no limit when None), then set
        ``exit_requested``. With ``leave``, exit at once and leave the runs running for
        the next server to re-adopt. Runs still going at the deadline are handled by
        ``shutdown_policy`` (default: left running)."""
        if not principal.superuser:
            raise PermissionDenied(
                f"{principal.username!r} may not drain the server: superusers only"
            )
        running = len(self.supervisor.live)
        await self._drain.begin(self.supervisor, self._parts.lease, wait_seconds, leave)
        details = {"wait_seconds": wait_seconds, "leave": leave, "running": running}
        await self.audit("server.drain", principal, None, address=address, details=details)

    async def resume(self, principal: Principal = SYSTEM, *, address: str | None = None) -> None:
        """End a drain: starts and schedules work again."""
        if not principal.superuser:
            raise PermissionDenied(
                f"{principal.username!r} may not resume the server: superusers only"
            )
        await self._drain.end(self._parts.lease)
        self.scheduled_runs.resume()
        await self.audit("server.resume", principal, None, address=address)

    # ----------------------------------------------------------------- catalog
    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def use_catalog(self, catalog: Catalog) -> None:
        """Make ``catalog`` the current one and tell the listeners."""
        self._catalog = catalog
        for listener in self._catalog_listeners:
            listener(catalog)

    def on_catalog_change(self, listener: Callable[[Catalog], None]) -> None:
        """Call ``listener`` with the new catalog after every reload (watcher or API)."""
        self._catalog_listeners.append(listener)

    async def reload(self, principal: Principal = SYSTEM, *, address: str | None = None) -> Catalog:
        """Rescan the apps roots now (the watcher does this by itself on changes)."""
        self.use_catalog(await asyncio.to_thread(rescan, self._catalog, self.settings.apps_roots))
        await self.audit("catalog.reload", principal, None, address=address)
        return self._catalog

    @property
    def hooks(self) -> list[Hook]:
        """The cross-cutting observers (notifications); the scheduler reports missed fires."""
        return self._hooks

    def visible_jobs(self, principal: Principal) -> list[Job]:
        return [job for job in self._catalog.values() if can(principal, job, Action.VIEW)]

    def job(self, job_id: str, principal: Principal) -> Job:
        """The job, if it exists and the principal may view it; else 404 (no existence leak)."""
        job = self._catalog.get(job_id)
        if job is None or not can(principal, job, Action.VIEW):
            raise JobNotFound(f"No job {job_id!r} in the catalog")
        return job

    async def _require(
        self, principal: Principal, job: Job, action: Action, address: str | None
    ) -> None:
        if can(principal, job, action):
            return
        await self.audit(
            f"job.{action.value}", principal, job.id, outcome="denied", address=address
        )
        roles = job.definition.roles_for(action) if job.definition else None
        need = f"one of the roles {', '.join(roles)}" if roles else "a superuser role"
        raise PermissionDenied(
            f"{principal.username!r} may not {action.value} {job.id!r}: requires {need}"
        )

    # ----------------------------------------------------------------- actions
    async def start(
        self,
        job_id: str,
        variables: Mapping[str, Any] | None = None,
        principal: Principal = SYSTEM,
        *,
        trigger: Trigger | None = None,
        test: bool = False,
        idempotency_key: str | None = None,
        scheduled_for: datetime | None = None,
        address: str | None = None,
        at: datetime | None = None,
        triggered_by: str | None = None,
        dry_run: bool = False,
    ) -> Execution:
        """Start (or, with ``test``, test-run) a job; returns the execution as recorded.
        ``dry_run``: the script gets ``JOBHOST_DRY_RUN=1`` and the run is recorded as one.

        With ``at`` (an aware time in the future) the run is recorded ``scheduled`` and
        starts then (``jobhost.execution.scheduled``); everything is checked now."""
        job = self.job(job_id, principal)
        await self._require(principal, job, Action.START, address)
        if at is not None:
            check_due_time(at, self.clock(), test=test)
        if idempotency_key is None:
            return await self._start(
                job,
                variables,
                principal,
                trigger,
                test,
                scheduled_for,
                address,
                due_at=at,
                triggered_by=triggered_by,
                dry_run=dry_run,
            )
        request = fingerprint(
            job.id, test, variables or {}, secret_names(job.definition), dry_run=dry_run
        )
        return await self._idempotency.once(
            principal.username,
            idempotency_key,
            lambda: self._start(
                job,
                variables,
                principal,
                trigger,
                test,
                scheduled_for,
                address,
                idempotency_key,
                request_fingerprint=request,
                due_at=at,
                triggered_by=triggered_by,
                dry_run=dry_run,
            ),
            job_id=job.id,
            request=request,
        )

    async def _start(
        self,
        job: Job,
        variables: Mapping[str, Any] | None,
        principal: Principal,
        trigger: Trigger | None,
        test: bool,
        scheduled_for: datetime | None,
        address: str | None,
        idempotency_key: str | None = None,
        restart_count: int = 0,
        *,
        request_fingerprint: str | None = None,
        due_at: datetime | None = None,
        triggered_by: str | None = None,
        dry_run: bool = False,
    ) -> Execution:
        if self._drain.active:
            raise Draining(
                f"This JobHost server is draining for an upgrade and starts nothing new; "
                f"{job.id!r} was not started. Start it on another server, or here after "
                "POST /api/v1/admin/resume"
            )
        definition = job.definition
        if definition is None or not job.valid:
            raise InvalidDefinition(
                f"Job {job.id!r} is invalid and cannot run: {'; '.join(job.errors)}",
                details={"errors": list(job.errors)},
            )
        if not definition.enabled and not test:
            raise Conflict(f'Job {job.id!r} is disabled ("enabled": false in its job.json)')
        try:
            values = await self.resolve_variables(job, variables or {})
        except (VariableError, InitHookFailed) as exc:
            if trigger not in (Trigger.SCHEDULE, Trigger.WATCH):  # no one to answer to
                raise
            return await self._reject(
                job, principal, variables, scheduled_for, exc.message, trigger
            )
        launch = Launch(
            job=job, variables=values, rendered=render(definition, values), roles=principal.roles
        )
        self.chains.saw(principal)
        action = "job.test" if test else "job.start"

        def audit(execution: Execution) -> AuditEvent:
            return AuditEvent(
                action=action,
                user=principal.username,
                target=job.id,
                address=address,
                details={"execution": execution.id, "trigger": execution.trigger.value}
                | ({"due_at": iso(execution.due_at)} if execution.due_at else {})
                | ({"dry_run": True} if dry_run else {}),
                at=self.clock(),
            )

        if due_at is not None:
            planned = planned_start(
                job.id,
                trigger or Trigger.USER,
                principal.username,
                redact(definition, values),
                now=self.clock(),
                due_at=due_at,
                owner=self.instance_id,
                idempotency_key=idempotency_key,
                request_fingerprint=request_fingerprint,
            )
            await self.journal.record(planned, audit(planned))
            self.supervisor.announce(planned)
            self.scheduled_runs.add(planned, launch)
            return planned
        return await self.supervisor.submit(
            launch,
            user=principal.username,
            trigger=trigger or Trigger.USER,
            test=test,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
            restart_count=restart_count,
            scheduled_for=scheduled_for,
            redacted=redact(definition, values),
            audit=audit,
            triggered_by=triggered_by,
            dry_run=dry_run,
        )

    async def _reject(
        self,
        job: Job,
        principal: Principal,
        variables: Mapping[str, Any] | None,
        scheduled_for: datetime | None,
        message: str,
        trigger: Trigger = Trigger.SCHEDULE,
    ) -> Execution:
        """A scheduled (or file-triggered) start refused before spawning becomes a
        ``rejected`` history row (counted, announced and notified as ``failed``), so the
        fire is not lost from view; the caller gets that row instead of an exception."""
        assert job.definition is not None
        now = self.clock()
        rejected = Execution(
            id=new_id(),
            job_id=job.id,
            status=ExecutionStatus.REJECTED,
            trigger=trigger,
            user=principal.username,
            variables=redact(job.definition, dict(variables or {})),
            created_at=now,
            ended_at=now,
            error=message,
            scheduled_for=scheduled_for,
        )
        await self.supervisor.record_unstarted(rejected)
        return rejected

    async def resolve_variables(self, job: Job, supplied: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults → init hook → required/unknown/type checks (the seed's order)."""
        return await resolve_variables(
            job, supplied, self.settings.init_timeout_seconds, self.choices
        )

    async def test(
        self,
        job_id: str,
        variables: Mapping[str, Any] | None = None,
        principal: Principal = SYSTEM,
        *,
        trigger: Trigger | None = None,
        address: str | None = None,
        dry_run: bool = False,
    ) -> Execution:
        """A test run: the script gets ``--test``; it ignores ``max_concurrent`` and restarts."""
        return await self.start(
            job_id,
            variables,
            principal,
            trigger=trigger,
            test=True,
            address=address,
            dry_run=dry_run,
        )

    async def stop(
        self,
        principal: Principal = SYSTEM,
        *,
        execution_id: str | None = None,
        job_id: str | None = None,
        address: str | None = None,
        by: str | None = None,
    ) -> list[Execution]:
        """Stop one execution, or every live execution of a job; ``by`` is how the run
        records who stopped it (the principal's name when not given)."""
        if execution_id is not None:
            execution = await self.status(execution_id, principal)
            job = self._catalog.get(execution.job_id)
            if not can_on_execution(principal, job, execution, Action.STOP):
                await self.audit(
                    "job.stop",
                    principal,
                    execution.job_id,
                    outcome="denied",
                    address=address,
                    details={"execution": execution.id},
                )
                raise PermissionDenied(
                    f"{principal.username!r} may not stop execution {execution.id!r} "
                    f"of {execution.job_id!r}"
                )
            if execution.status is ExecutionStatus.SCHEDULED:
                stopped = [await self.scheduled_runs.cancel(execution, by=by or principal.username)]
                details = {"executions": [execution.id], "scheduled": True}
                await self.audit(
                    "job.stop", principal, execution.job_id, address=address, details=details
                )
                return stopped
            if execution.id not in self.supervisor.live:
                if owned_elsewhere(self, execution):  # reaches the owner, wherever it is
                    who = by or principal.username
                    return [await forward_stop(self, principal, execution, address, who)]
                raise Conflict(
                    f"Execution {execution.id!r} has already ended ({execution.status.value})"
                )
            targets = [execution]
            target_job = execution.job_id
            elsewhere: list[Execution] = []
        elif job_id is not None:
            job = self.job(job_id, principal)
            await self._require(principal, job, Action.STOP, address)
            targets = [e for e in self.supervisor.live.values() if e.job_id == job.id]
            target_job = job.id
            cancelled = self.supervisor.cancel_restart(job.id)
            # A job's stop ends its retries too; its run-at starts are stopped one by one.
            for retry in self.scheduled_runs.pending():
                if retry.job_id == job.id and retry.trigger is Trigger.RETRY:
                    await self.scheduled_runs.cancel(retry, by=by or principal.username)
                    cancelled = True
            elsewhere = await elsewhere_of_job(self, job.id)  # other servers' runs of it
            if not targets and not cancelled and not elsewhere:
                raise Conflict(f"Job {job.id!r} has no running execution to stop")
        else:
            raise BadRequest("Give an execution_id or a job_id to stop")
        who = by or principal.username
        stopped = [await self.supervisor.stop(e.id, by=who) for e in targets]
        if targets or not elsewhere:
            await self.audit(
                "job.stop",
                principal,
                target_job,
                address=address,
                details={"executions": [e.id for e in stopped]},
            )
        return stopped + await forward_stops(self, principal, elsewhere, address, who)

    async def restart(
        self,
        principal: Principal = SYSTEM,
        *,
        execution_id: str | None = None,
        job_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
        address: str | None = None,
        audited: bool = True,
    ) -> Execution:
        """Stop the job's live run(s) and start it again with the same (or given) variables.
        A run another server owns is restarted there. ``audited`` False: a request from
        another server, which audited it."""
        previous: Execution | None = None
        if execution_id is not None:
            previous = await self.status(execution_id, principal)
            job_id = previous.job_id
            if owned_elsewhere(self, previous):
                await self._require(principal, self.job(job_id, principal), Action.RESTART, address)
                given = dict(variables) if variables is not None else None
                return await forward_restart(self, principal, previous, given, address)
        if job_id is None:
            raise BadRequest("Give an execution_id or a job_id to restart")
        job = self.job(job_id, principal)
        await self._require(principal, job, Action.RESTART, address)
        # A restart repeats the run it restarts: a test run's restart is a test run too.
        test = previous is not None and previous.test
        dry_run = previous is not None and previous.dry_run
        live = [
            e
            for e in self.supervisor.live.values()
            if e.job_id == job.id and (not e.test or e.id == execution_id)
        ]
        if previous is None:
            previous = max(live, key=lambda e: e.created_at) if live else None
        if previous is None:
            last = self.supervisor.last_finished.get(job.id)
            previous = last
        if variables is None:
            variables = reusable_variables(job, previous)
        self.supervisor.cancel_restart(job.id)
        targets = [e for e in live if execution_id is None or e.id == execution_id]
        waits = [asyncio.ensure_future(self.supervisor.wait(e.id)) for e in targets]
        for execution in targets:
            await self.supervisor.stop(execution.id, by=f"{principal.username} (restart)")
        await asyncio.gather(*waits)
        execution = await self._start(
            job,
            variables,
            principal,
            Trigger.RESTART,
            test,
            None,
            address,
            restart_count=(previous.restart_count + 1) if previous else 0,
            dry_run=dry_run,
        )
        if not audited:
            return execution
        await self.audit(
            "job.restart",
            principal,
            job.id,
            address=address,
            details={"execution": execution.id, "replaced": [e.id for e in targets]},
        )
        return execution

    # ----------------------------------------------------------------- reading
    async def status(self, execution_id: str, principal: Principal = SYSTEM) -> Execution:
        supervisor = self.supervisor
        execution = supervisor.live.get(execution_id) or supervisor.recent.get(execution_id)
        if execution is None:
            execution = await self.journal.call(self.store.get_execution, execution_id)
        if execution is None or not can_on_execution(
            principal, self._catalog.get(execution.job_id), execution, Action.VIEW
        ):
            raise ExecutionNotFound(f"No execution {execution_id!r}")
        return execution

    async def read_output(
        self,
        execution_id: str,
        principal: Principal = SYSTEM,
        *,
        offset: int = 0,
        limit: int = DEFAULT_READ,
    ) -> OutputChunk:
        """Output from ``offset`` (the seed's Receive-Job, but incremental and repeatable)."""
        if offset < 0:
            raise BadRequest(f"offset must be 0 or more, got {offset}")
        limit = max(1, min(limit, MAX_READ))
        execution = await self.status(execution_id, principal)
        live = execution.id in self.supervisor.live
        return await read_chunk(self.settings, execution.id, offset, limit, live=live)

    async def follow(
        self, execution_id: str, principal: Principal = SYSTEM, *, offset: int = 0
    ) -> AsyncIterator[OutputChunk]:
        """Output as it is produced, until the execution ends; the last chunk has ``done``."""
        execution = await self.status(execution_id, principal)
        chunks = follow_output(self.settings, self.supervisor, execution.id, offset)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def wait(self, execution_id: str, principal: Principal = SYSTEM) -> Execution:
        """The execution once it has ended."""
        execution = await self.status(execution_id, principal)
        finished = await self.supervisor.wait(execution.id)
        return finished or await self.status(execution_id, principal)

    def scheduled(self, principal: Principal = SYSTEM) -> list[Execution]:
        """Runs due later here (retries, run-at starts) the principal may view, soonest first."""
        return self.scheduled_runs.pending(principal)

    def running(self, principal: Principal = SYSTEM) -> list[Execution]:
        """Live executions (queued included) the principal may view, oldest first."""
        return sorted(
            (
                e
                for e in self.supervisor.live.values()
                if can_on_execution(principal, self._catalog.get(e.job_id), e, Action.VIEW)
            ),
            key=lambda e: e.created_at,
        )

    async def history(self, query: HistoryQuery, principal: Principal = SYSTEM) -> Page[Execution]:
        """Newest first; scoped to the jobs the principal may view and the runs they started."""
        if not principal.superuser:
            visible = frozenset(job.id for job in self.visible_jobs(principal))
            query = dataclasses.replace(
                query, visible_job_ids=visible, visible_user=principal.username
            )
        return await self.journal.call(self.store.history, query)

    async def audit_log(self, query: AuditQuery) -> Page[AuditEvent]:
        return await self.journal.call(self.store.audit, query)

    def changes(self) -> Subscription:
        """Transitions announced from this call on (subscribed now, not at the first read)."""
        return self.supervisor.changes()

    # ----------------------------------------------------------------- upkeep
    async def audit(
        self,
        action: str,
        principal: Principal | str | None,
        target: str | None,
        *,
        outcome: str = "ok",
        address: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append to the audit trail (durable when this returns)."""
        user = principal.username if isinstance(principal, Principal) else principal
        await self.journal.audit(
            AuditEvent(
                action=action,
                user=user,
                target=target,
                outcome=outcome,
                address=address,
                details=details or {},
                at=self.clock(),
            )
        )

    async def prune(self) -> list[str]:
        """Apply the retention settings; removes the runs' logs too."""
        settings = self.settings
        if settings.retention_days is None and settings.retention_per_job is None:
            return []
        deleted = await self.journal.call(
            lambda: self.store.prune(
                now=self.clock(), days=settings.retention_days, per_job=settings.retention_per_job
            )
        )
        for execution_id in deleted:
            self.supervisor.recent.pop(execution_id, None)
        await asyncio.to_thread(remove_logs, settings, deleted)  # file work: off the loop
        return deleted
