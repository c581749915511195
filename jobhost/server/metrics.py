"""``/metrics``: the Prometheus exposition, built on prometheus-client.

Each app has its own ``CollectorRegistry`` (never the library's global one), holding:

- ``RunMetrics``, a ``jobhost.abc.Hook``: counters and histograms fed by events as they
  happen (runs recorded, running and finished; scheduled fires; notification attempts);
- ``EngineCollector``: values read from the engine at scrape time (running and queued
  runs, the catalog, each job's last finish and last success, its failure streak and
  its schedule's interval, whether the scheduler runs);
- sign-ins, counted by ``LoginCounter`` (ASGI middleware) from the answers of
  ``POST /api/v1/auth/login``, so the sign-in code needs no call of its own;
- ``jobhost_build_info`` and prometheus-client's process, platform and GC collectors.

Cardinality is bounded: the only open label is ``job``, and it only ever holds the ID of
a job in the catalog (anything else is counted as ``other``); variables never become labels.

Access: addresses in ``settings.metrics_allow`` read it without signing in (loopback by
default); anyone else needs a token or session of a superuser, or of a user holding one of
``settings.metrics_roles``. The list of metrics is in ``docs/monitoring/README.md``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobhost import __version__
from jobhost.abc import Hook
from jobhost.cron import CronSchedule
from jobhost.engine import JobHost
from jobhost.errors import PermissionDenied
from jobhost.models import Execution, ExecutionStatus, Trigger
from jobhost.server.auth import authenticator_of, client_address
from jobhost.store.finishes import last_finishes
from jobhost.store.sql import SqlStore

log = logging.getLogger(__name__)

OTHER = "other"  # the job label of a run whose job is no longer in the catalog
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
# Outcomes that count as a failure in a row (a rejected scheduled fire is one: it did not run).
FAILURES = frozenset(
    {
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.LOST,
        ExecutionStatus.REJECTED,
    }
)
INTERVAL_FIRES = 6  # a schedule's interval: the longest gap among its next fires
INTERVALS_KEPT = 10_000
LOGIN_PATH = "/api/v1/auth/login"


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


class RunMetrics(Hook):
    """Event-fed metrics: a hook of the engine (see ``jobhost.abc.Hook``)."""

    def __init__(self, registry: CollectorRegistry, jobs: Callable[[], Mapping[str, Any]]) -> None:
        self._jobs = jobs
        self.runs_started = Counter(
            "jobhost_runs_started",
            "Runs recorded (queued or starting), by job and trigger.",
            ["job", "trigger"],
            registry=registry,
        )
        self.runs_finished = Counter(
            "jobhost_runs_finished",
            "Runs that ended, by job and final status (lost: nobody can say how it ended).",
            ["job", "status"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "jobhost_run_duration_seconds",
            "Run time of ended runs (process start to end), by job.",
            ["job"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.lateness = Histogram(
            "jobhost_schedule_lateness_seconds",
            "Scheduled runs: from the fire's due time to the run recorded and handed to "
            "the executor (a wait for a free slot is in jobhost_queue_wait_seconds).",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.fires = Counter(
            "jobhost_schedule_fires",
            "Scheduled fires by outcome: started, skipped (overlap, full queue, draining), "
            "failed (refused before spawning), missed (beyond the misfire grace), "
            "coalesced (folded into a later fire).",
            ["job", "outcome"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "jobhost_queue_wait_seconds",
            "From a run being recorded to its process running (slot queue and spawn).",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.restarts = Counter(
            "jobhost_restarts",
            "Runs started by the restart policy or the restart action, by job.",
            ["job"],
            registry=registry,
        )
        self.notifications = Counter(
            "jobhost_notifications",
            "Notification delivery attempts by channel and outcome (sent, retrying, failed).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.logins = Counter(
            "jobhost_logins",
            "Sign-in answers by outcome (succeeded, failed, throttled, invalid, error).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("succeeded", "failed", "throttled"):
            self.logins.labels(outcome)  # present at 0, so increase() sees the first one
        # (job, status) → Unix time of the newest end with that status (tests excluded).
        self.last_finish: dict[tuple[str, str], float] = {}
        # job → failed/timed-out/lost/rejected runs in a row (stopped runs neither count nor
        # break it)
        self.failure_streak: dict[str, int] = {}

    def job_label(self, job_id: str) -> str:
        return job_id if job_id in self._jobs() else OTHER

    # ------------------------------------------------------------- the hook
    def execution_started(self, execution: Execution) -> None:
        job = self.job_label(execution.job_id)
        self.runs_started.labels(job, execution.trigger.value).inc()
        if execution.trigger is Trigger.RESTART:
            self.restarts.labels(job).inc()
        if execution.trigger is Trigger.SCHEDULE and execution.scheduled_for is not None:
            self.lateness.observe(_seconds(execution.created_at, execution.scheduled_for))

    def execution_running(self, execution: Execution) -> None:
        if execution.started_at is not None:
            self.queue_wait.observe(_seconds(execution.started_at, execution.created_at))

    def execution_finished(self, execution: Execution, previous: Execution | None) -> None:
        job = self.job_label(execution.job_id)
        status = execution.status
        self.runs_finished.labels(job, status.value).inc()
        duration = execution.duration_seconds
        if execution.started_at is not None and duration is not None:
            self.run_duration.labels(job).observe(duration)
        if execution.test or job == OTHER:
            return
        ended = (execution.ended_at or execution.created_at).timestamp()
        key = (job, status.value)
        self.last_finish[key] = max(ended, self.last_finish.get(key, 0.0))
        if status is ExecutionStatus.SUCCEEDED:
            self.failure_streak[job] = 0
        elif status in FAILURES:
            self.failure_streak[job] = self.failure_streak.get(job, 0) + 1

    def fire_settled(self, job_id: str, scheduled_for: datetime, outcome: str, count: int) -> None:
        self.fires.labels(self.job_label(job_id), outcome).inc(count)

    def notification_attempted(self, channel: str, outcome: str) -> None:
        self.notifications.labels(channel, outcome).inc()

    def seed(self, finishes: Mapping[tuple[str, str], datetime]) -> None:
        """Merge the store's newest ends (from before this process started)."""
        for (job_id, status), ended in finishes.items():
            key = (job_id, status)
            self.last_finish[key] = max(ended.timestamp(), self.last_finish.get(key, 0.0))


class EngineCollector(Collector):
    """Values read from the engine at scrape time. ``freeze()`` builds them on the event
    loop (the engine's state is only read there); the exposition is then formatted in a
    thread from what was frozen."""

    def __init__(self, engine: JobHost, runs: RunMetrics) -> None:
        self._engine = engine
        self._runs = runs
        self._intervals: dict[tuple[str, str], float | None] = {}
        self._frozen: list[Metric] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration; names are fixed below

    def collect(self) -> Iterable[Metric]:
        return self._frozen if self._frozen is not None else self._build()

    def freeze(self) -> None:
        self._frozen = self._build()

    def thaw(self) -> None:
        self._frozen = None

    def interval(self, schedule: CronSchedule) -> float | None:
        """Longest gap between the schedule's next fires, cached per expression and zone."""
        key = (schedule.expr, str(schedule.tz))
        if key not in self._intervals:
            if len(self._intervals) >= INTERVALS_KEPT:
                self._intervals.clear()
            fires = schedule.next_fires(self._engine.clock(), INTERVAL_FIRES)
            gaps = [_seconds(b, a) for a, b in itertools.pairwise(fires)]
            self._intervals[key] = max(gaps) if gaps else None
        return self._intervals[key]

    def _build(self) -> list[Metric]:
        engine, runs = self._engine, self._runs
        catalog = engine.catalog
        supervisor = engine.supervisor
        running = GaugeMetricFamily(
            "jobhost_runs_running", "Runs holding (or getting) a process now."
        )
        running.add_metric([], sum(1 for e in supervisor.live.values() if e.status.active))
        queued = GaugeMetricFamily("jobhost_runs_queued", "Runs waiting for a free slot.")
        queued.add_metric([], supervisor.queued_total())
        jobs = GaugeMetricFamily(
            "jobhost_jobs", "Jobs in the catalog, by validity.", labels=["valid"]
        )
        invalid = len(catalog.invalid())
        jobs.add_metric(["true"], len(catalog) - invalid)
        jobs.add_metric(["false"], invalid)
        success = GaugeMetricFamily(
            "jobhost_job_last_success_timestamp_seconds",
            "When the job's newest succeeded run ended (Unix time).",
            labels=["job"],
        )
        finish = GaugeMetricFamily(
            "jobhost_job_last_finish_timestamp_seconds",
            "When the job's newest run with this final status ended (Unix time).",
            labels=["job", "status"],
        )
        for (job, status), when in runs.last_finish.items():
            if job in catalog:
                finish.add_metric([job, status], when)
                if status == ExecutionStatus.SUCCEEDED.value:
                    success.add_metric([job], when)
        streak = GaugeMetricFamily(
            "jobhost_job_consecutive_failures",
            "Failed, timed-out or lost runs in a row, counted since this server started.",
            labels=["job"],
        )
        for job, count in runs.failure_streak.items():
            if job in catalog:
                streak.add_metric([job], count)
        families: list[Metric] = [running, queued, jobs, success, finish, streak]
        scheduler = engine.scheduler
        up = GaugeMetricFamily("jobhost_scheduler_up", "1 while the cron scheduler runs here.")
        up.add_metric([], 0 if scheduler is None else 1)
        families.append(up)
        interval = GaugeMetricFamily(
            "jobhost_job_schedule_interval_seconds",
            "The longest gap between the job's next scheduled fires (active schedules).",
            labels=["job"],
        )
        for job in catalog if scheduler is not None else ():
            schedule = scheduler.service.schedule_of(job) if scheduler is not None else None
            seconds = self.interval(schedule) if schedule is not None else None
            if seconds is not None:
                interval.add_metric([job], seconds)
        families.append(interval)
        return families


class Metrics:
    """Everything ``/metrics`` shows for one app: its registry, the hook, the collector."""

    def __init__(self, engine: JobHost) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.runs = RunMetrics(self.registry, lambda: engine.catalog)
        self.collector = EngineCollector(engine, self.runs)
        self.registry.register(self.collector)
        build = Gauge(
            "jobhost_build_info",
            "The running JobHost's version.",
            ["version"],
            registry=self.registry,
        )
        build.labels(__version__).set(1)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._lock = asyncio.Lock()
        self._seeded = False
        allowed = engine.settings.metrics_allow
        self.allow = [ipaddress.ip_network(entry, strict=False) for entry in allowed]

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        async with self._lock:
            if not self._seeded:
                await self._seed()
            self.collector.freeze()
            try:
                body = await asyncio.to_thread(encoder, self.registry)
            finally:
                self.collector.thaw()
        return body, content_type

    async def _seed(self) -> None:
        self._seeded = True
        store = self.engine.store
        if isinstance(store, SqlStore):
            try:
                self.runs.seed(await self.engine.journal.call(last_finishes, store))
            except Exception:  # metrics must not fail for it; the next finishes fill in
                log.exception("could not read the last finishes for metrics")

    def allowed_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allow)


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


class LoginCounter:
    """ASGI middleware: counts the answers of ``POST /api/v1/auth/login`` by outcome."""

    OUTCOMES = {200: "succeeded", 401: "failed", 429: "throttled", 503: "throttled"}

    def __init__(self, app: ASGIApp, logins: Counter) -> None:
        self.app = app
        self.logins = logins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != LOGIN_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                outcome = self.OUTCOMES.get(status, "error" if status >= 500 else "invalid")
                self.logins.labels(outcome).inc()
            await send(message)

        await self.app(scope, receive, counting)


router = APIRouter(tags=["health"])


async def _check_access(request: Request, metrics: Metrics) -> None:
    address = client_address(request)
    if metrics.allowed_address(address):
        return
    settings = metrics.engine.settings
    roles = sorted(settings.metrics_roles)
    identity = await authenticator_of(request).identify(request)  # 401 without a credential
    principal = identity.principal
    if principal.superuser or not principal.roles.isdisjoint(roles):
        return
    raise PermissionDenied(
        f"{principal.username!r} may not read /metrics: it needs a superuser or one of the "
        f"roles {', '.join(roles) or '(none configured)'} (settings.metrics_roles); "
        f"addresses in settings.metrics_allow ({', '.join(settings.metrics_allow)}) "
        "need no sign-in"
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition (OpenMetrics when the scraper asks for it). No sign-in
    from ``metrics_allow`` addresses; else a token of a superuser or a ``metrics_roles`` user."""
    state = metrics_of(request)
    await _check_access(request, state)
    body, content_type = await state.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
