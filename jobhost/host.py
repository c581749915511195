"""The composition root: which executor runs the jobs, and how the parts of a ``JobHost``
come up and go down.

``Parts.start`` brings them up in order: the journal over the store (migrated), the lease,
the supervisor with its executor, the notifier, the catalog, reconciliation, the scheduler,
the catalog watcher. Each part's close is pushed on a stack the moment the part exists,
and ``Parts.aclose`` unwinds it in reverse. So when a part fails during start-up, the ones
before it are closed before the error propagates: no task, thread, runner connection or
file handle is left behind, the lease ends, and the store is released.

The order of the closes is deliberate: the heartbeat stops first (a tick must not
reconcile while the parts it uses close), the scheduler before the supervisor (no new
fires), the supervisor before the notifier (runs it stops at shutdown are still
notified), the lease before the journal that writes its end.

The Celery adapter is imported here, and only when ``executor = "celery"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

from jobhost.abc import Executor
from jobhost.catalog.discovery import scan
from jobhost.catalog.watch import watch_catalog
from jobhost.clock import Clock, SystemClock
from jobhost.execution.feed import ChangeFeed
from jobhost.execution.forwarding import (
    Forwarding,
    announce_changed,
    apply_request,
    listen_dsn,
)
from jobhost.execution.journal import Journal
from jobhost.execution.lease import Lease
from jobhost.execution.reconcile import reconcile
from jobhost.execution.supervisor import Supervisor
from jobhost.models import Execution
from jobhost.schedules import Schedules, sql_store
from jobhost.store import instances

if TYPE_CHECKING:
    from jobhost.engine import JobHost
    from jobhost.file_triggers import FileTriggers
    from jobhost.notify import Notifier
    from jobhost.scheduler import Scheduler

log = logging.getLogger(__name__)


def default_executor(events: Supervisor) -> Executor:
    """The executor ``settings.executor`` names: the data dir's runner, or Celery."""
    if events.settings.executor == "celery":
        from jobhost.executors.celery import CeleryExecutor

        return CeleryExecutor(events, events.settings)
    from jobhost.executors.runner import RunnerExecutor

    return RunnerExecutor(
        events,
        events.settings.data_dir,
        host=events.settings.node,
        isolation=events.settings.isolation,
    )


def scheduler_for(
    host: JobHost, *, clock: Clock | None = None, claim_ahead: timedelta | None = None
) -> Scheduler:
    """A scheduler firing through ``host``, its schedules following the host's catalog."""
    from jobhost.scheduler import CLAIM_AHEAD, Scheduler

    clock = clock if clock is not None else SystemClock(host.clock)
    service = Schedules(host, clock=clock)
    scheduler = Scheduler(
        host,
        service,
        host.journal,
        hooks=host.hooks,
        clock=clock,
        claim_ahead=claim_ahead if claim_ahead is not None else CLAIM_AHEAD,
    )
    host.on_catalog_change(scheduler.catalog_changed)
    return scheduler


def notifier_for(host: JobHost, supervisor: Supervisor) -> Notifier:
    """The notifications hook: told of every finished run, scrubbing its secret values."""
    from jobhost.notify import Notifier

    notifier = Notifier(
        host.settings,
        sql_store(host),
        host.journal,
        catalog=host,
        secrets=supervisor,
        hooks=host.hooks,
        clock=host.clock,
    )
    host.on_catalog_change(notifier.check_catalog)
    return notifier


class Parts:
    """The parts of one open ``JobHost``; ``None`` until started (and per settings)."""

    def __init__(self, executor_factory: Callable[[Supervisor], Executor] | None) -> None:
        self.executor_factory = executor_factory or default_executor
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobhost-db")
        self.journal: Journal | None = None
        self.lease: Lease | None = None
        self.forwarding: Forwarding | None = None
        self.supervisor: Supervisor | None = None
        self.notifier: Notifier | None = None
        self.scheduler: Scheduler | None = None
        self.file_triggers: FileTriggers | None = None
        self.watching: asyncio.Task[None] | None = None
        self._watch_stop = asyncio.Event()
        self._reconciling = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()

    async def start(self, host: JobHost) -> None:
        """Start every part, in order; on failure, close what started and re-raise."""
        try:
            await self._start(host)
        except BaseException:
            with contextlib.suppress(Exception):  # the start-up error is the one to see
                await self.aclose()
            raise

    async def _start(self, host: JobHost) -> None:
        settings, store, stack = host.settings, host.store, self._stack
        stack.callback(self.pool.shutdown, wait=True)
        stack.push_async_callback(asyncio.to_thread, store.close)
        journal = self.journal = Journal(store, self.pool)
        journal.start()
        stack.push_async_callback(journal.aclose)
        await journal.call(store.migrate)

        dsn = listen_dsn(getattr(store, "url", ""))
        # Made before the lease's heartbeat can tick (a tick reconciles through it); it
        # holds nothing until it is used, and its close is pushed once the lease's is.
        supervisor = self.supervisor = Supervisor(
            settings,
            journal,
            self.executor_factory,
            hooks=host.hooks,
            clock=host.clock,
            rng=host.rng,
        )
        supervisor.later = host.scheduled_runs.add  # a retry's next attempt, until due
        if dsn is not None:  # other servers on the store hear of our runs' changes
            feed = ChangeFeed(journal, lambda: host.instance_id_or_none, lambda: host.others_alive)
            supervisor.listen(feed.changed)
            stack.callback(feed.close)
        server = host.kind == "server"
        lease = self.lease = Lease(
            journal,
            kind=host.kind,
            heartbeat_seconds=settings.lease_heartbeat_seconds,
            ttl_seconds=settings.lease_ttl_seconds,
            clock=host.clock,
            on_tick=host.tick,
            host=settings.node,
            url=settings.cluster_url,
            data_dir=str(settings.data_dir.resolve()),
        )
        await lease.acquire()
        stack.push_async_callback(lease.release)
        supervisor.owner = lease.id
        forwarding = self.forwarding = Forwarding(
            journal,
            lease.id,
            lambda request: apply_request(host, request),
            host.clock,
            dsn=dsn,
            on_changed=lambda ids, progress: announce_changed(host, ids, progress),
            on_peer=host.peer_seen,
        )
        stack.push_async_callback(forwarding.aclose)
        await forwarding.start()
        await host.look_around()
        stack.push_async_callback(self._close_notifier)  # after the supervisor's runs end
        stack.push_async_callback(self._close_supervisor, host)
        stack.push_async_callback(host.scheduled_runs.aclose)  # no due run starts past here
        if settings.notifications_enabled:
            self.notifier = notifier_for(host, supervisor)
            await self.notifier.start()
            host.hooks.append(self.notifier)

        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        host.use_catalog(await asyncio.to_thread(scan, settings.apps_roots))
        if server:
            await host.reconcile()
            forwarding.wake()  # requests for the runs just adopted
        last = await journal.call(store.last_executions, list(host.catalog))
        supervisor.last_finished.update(last)

        if settings.scheduler_enabled:
            if server:
                released = await journal.call(
                    instances.release_abandoned_claims,
                    store,
                    lease.id,
                    host.clock(),
                    "claimed by a server that stopped before the fire was due",
                )
                if released:
                    log.warning("%d schedule fire(s) of a dead server recovered", len(released))
            self.scheduler = scheduler_for(host)
            stack.push_async_callback(self.scheduler.aclose)
            await self.scheduler.start()
            if server:  # file triggers (job.json "watch") fire where schedules fire
                from jobhost.file_triggers import FileTriggers

                self.file_triggers = FileTriggers(host)
                stack.push_async_callback(self.file_triggers.aclose)
                await self.file_triggers.start()

        if settings.watch:
            self.watching = asyncio.create_task(
                watch_catalog(
                    settings.apps_roots, lambda: host.catalog, host.use_catalog, self._watch_stop
                ),
                name="jobhost-catalog-watch",
            )
            stack.push_async_callback(self._stop_watching)
        stack.push_async_callback(forwarding.aclose)  # early at close: no request mid-close
        stack.push_async_callback(lease.stop_heartbeat)

    async def reconcile(self, host: JobHost) -> list[Execution]:
        """Re-adopt or resolve the runs of instances whose lease expired, one pass at a
        time (at start-up and on the heartbeat). Celery runs may be on any host."""
        supervisor, lease, journal = self.supervisor, self.lease, self.journal
        if supervisor is None or lease is None or journal is None:
            raise RuntimeError("JobHost.open() was not awaited")
        async with self._reconciling:
            return await reconcile(
                journal,
                supervisor.executor,
                lease.instance,
                host.clock,
                host.adopt_orphan,
                any_host=host.settings.executor == "celery",
                announce=supervisor.announce,
                inherited=lease.take_inherited(),
            )

    async def _close_supervisor(self, host: JobHost) -> None:
        if self.supervisor is not None:
            by = "server drain (shutdown_policy stop)" if host.draining else "server shutdown"
            await self.supervisor.aclose(stop_running=host.stops_runs_on_close, stopped_by=by)

    async def _close_notifier(self) -> None:
        if self.notifier is not None:
            await self.notifier.aclose()

    async def _stop_watching(self) -> None:
        self._watch_stop.set()
        if self.watching is not None:
            self.watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watching

    async def aclose(self) -> None:
        """Close every started part, newest first (each close runs even if one fails)."""
        await self._stack.aclose()
