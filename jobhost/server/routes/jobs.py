"""The job routes: catalog, start/test/stop/restart, status, running, history, reload, samples."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from jobhost.catalog.definition import parse_job_id
from jobhost.catalog.discovery import Job
from jobhost.engine import JobHost
from jobhost.errors import BadRequest
from jobhost.execution.launch import state_dir
from jobhost.models import Execution, ExecutionStatus, HistoryQuery, Principal, Trigger, iso
from jobhost.server import cluster
from jobhost.server.auth import (
    CurrentIdentity,
    Identity,
    SuperIdentity,
    client_address,
    engine_of,
)
from jobhost.server.fastreads import executions_body, history_body
from jobhost.server.schemas import (
    CatalogOut,
    ExecutionList,
    ExecutionOut,
    HistoryPage,
    JobDetailOut,
    PlanOut,
    ReloadOut,
    SamplesOut,
    answers,
)
from jobhost.server.views import views_of
from jobhost.store.recent import recent_outcomes
from jobhost.store.sql import SqlStore

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

Scalar = str | int | float | bool
EXECUTION_ID = r"^[A-Za-z0-9_-]{1,64}$"
MAX_SAMPLES = 10_000
CATALOG_OUTCOMES = 10  # runs in a catalog entry's outcome strip


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(max_length=201)
    variables: dict[str, Scalar] | None = None
    dry_run: bool = Field(
        default=False, description="The script gets JOBHOST_DRY_RUN=1 and should change nothing"
    )


class StartLaterBody(StartBody):
    """A start, now or later: ``at`` (ISO 8601 with an offset) or ``delay_seconds``."""

    at: datetime | None = Field(
        default=None, description="Start then (ISO 8601 with offset); scheduled until then"
    )
    delay_seconds: float | None = Field(
        default=None, gt=0, le=366 * 24 * 3600, description="Start this many seconds from now"
    )

    def due_at(self, now: datetime) -> datetime | None:
        if self.at is not None and self.delay_seconds is not None:
            raise BadRequest("Give at or delay_seconds, not both")
        if self.delay_seconds is not None:
            return now + timedelta(seconds=self.delay_seconds)
        return self.at


class TargetBody(BaseModel):
    """A job or one execution of it (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")
    job_id: str | None = Field(default=None, max_length=201)
    execution_id: str | None = Field(default=None, pattern=EXECUTION_ID)

    def target(self) -> tuple[str | None, str | None]:
        if (self.job_id is None) == (self.execution_id is None):
            raise BadRequest("Give exactly one of job_id or execution_id")
        if self.job_id is not None:
            parse_job_id(self.job_id)
        return self.job_id, self.execution_id


class RestartBody(TargetBody):
    variables: dict[str, Scalar] | None = None


def job_id_of(app: str, job: str) -> str:
    """The job ID from path parts, validated (traversal and friends are a 400)."""
    parse_job_id(f"{app}/{job}")
    return f"{app}/{job}"


def stopper(identity: Identity) -> str:
    """How a run stopped through this request records who stopped it."""
    name = identity.principal.username
    return name if identity.token is None else f"{name} (token {identity.token.name})"


def _trigger(identity: Identity) -> Trigger:
    return Trigger.TOKEN if identity.token is not None else Trigger.USER


def _outcome(e: Execution) -> dict[str, Any]:
    """A finished run as the catalog's status fields show it."""
    return {
        "id": e.id,
        "status": e.status.value,
        "trigger": e.trigger.value,
        "user": e.user,
        "created_at": iso(e.created_at),
        "started_at": iso(e.started_at),
        "ended_at": iso(e.ended_at),
        "duration_seconds": e.duration_seconds,
        "exit_code": e.exit_code,
        "exit_signal": e.exit_signal,
        "error": e.error,
        "scheduled_for": iso(e.scheduled_for),
    }


def _live(e: Execution) -> dict[str, Any]:
    return {
        "id": e.id,
        "status": e.status.value,
        "test": e.test,
        "user": e.user,
        "trigger": e.trigger.value,
        "created_at": iso(e.created_at),
        "started_at": iso(e.started_at),
    }


def _zone(engine: JobHost, job: Job) -> str:
    """The zone the job's times are planned in: its schedule's (an override's zone
    included), else its job.json ``timezone``, else the server's default."""
    planned = engine.scheduler.service.entries.get(job.id) if engine.scheduler else None
    if planned is not None:
        return str(planned.tz)
    definition = job.definition
    return (definition.timezone if definition else None) or engine.settings.default_timezone


def catalog_entry(
    engine: JobHost,
    job: Job,
    principal: Principal,
    recent: list[Execution] | None = None,
    live: list[Execution] | None = None,
) -> dict[str, Any]:
    """The job's catalog entry plus its status: ``last_run`` (the newest finished real
    run), ``outcomes`` (the newest few, newest first), ``active`` (live runs, oldest
    first) and ``next_fire``."""
    entry = job.to_api(principal)
    when = engine.scheduler.service.next_fire(job.id) if engine.scheduler else None
    entry["next_fire"] = iso(when) if when is not None else None
    entry["timezone"] = _zone(engine, job)
    outcomes = [_outcome(e) for e in recent or ()]
    entry["last_run"] = outcomes[0] if outcomes else None
    entry["outcomes"] = outcomes
    entry["active"] = [_live(e) for e in live or ()]
    return entry


async def catalog_entries(
    engine: JobHost, jobs: list[Job], principal: Principal
) -> list[dict[str, Any]]:
    """Entries for many jobs: one store statement for their recent runs, the live ones
    from memory."""
    ids = [j.id for j in jobs]
    recent: dict[str, list[Execution]]
    if isinstance(engine.store, SqlStore):
        recent = await engine.journal.call(recent_outcomes, engine.store, ids, CATALOG_OUTCOMES)
    else:  # another Store: its newest run per job is all it promises
        last = await engine.journal.call(engine.store.last_executions, ids)
        recent = {job_id: [e] for job_id, e in last.items() if e.status.terminal}
    live: dict[str, list[Execution]] = {}
    for e in await cluster.running(engine, principal):  # other servers' runs too
        live.setdefault(e.job_id, []).append(e)
    return [catalog_entry(engine, j, principal, recent.get(j.id), live.get(j.id)) for j in jobs]


# The reads come first: routes are matched in order, and clients poll these most.
# Their common case is answered before routing (``jobhost.server.fastreads``); these
# routes answer the rest and document them.
@router.get("/status/{execution_id}", **answers(ExecutionOut))
async def status(execution_id: str, identity: CurrentIdentity, request: Request) -> Response:
    execution = await engine_of(request).status(execution_id, identity.principal)
    return Response(views_of(request).json(execution), media_type="application/json")


@router.get("/running", **answers(ExecutionList))
async def running(identity: CurrentIdentity, request: Request) -> Response:
    live = await cluster.running(engine_of(request), identity.principal)  # any server's
    return Response(executions_body(views_of(request), live), media_type="application/json")


@router.get("/scheduled", **answers(ExecutionList))
async def scheduled(identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    """Runs due later on this server (retries, run-at starts), soonest first."""
    due = engine_of(request).scheduled(identity.principal)
    return {"executions": [e.to_api() for e in due]}


def parse_time(name: str, value: str | None) -> datetime | None:
    """An ISO-8601 query value (``Z`` allowed; naive means UTC)."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise BadRequest(
            f"Invalid {name} {value!r}: use ISO-8601, e.g. 2024-05-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def parse_statuses(values: list[str]) -> tuple[ExecutionStatus, ...]:
    names = [part for value in values for part in value.split(",") if part]
    try:
        return tuple(ExecutionStatus(name) for name in names)
    except ValueError:
        known = ", ".join(s.value for s in ExecutionStatus)
        raise BadRequest(f"Invalid status in {names!r}: use one of {known}") from None


@router.get("/history", **answers(HistoryPage))
async def history(
    identity: CurrentIdentity,
    request: Request,
    job_id: str | None = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[list[str] | None, Query()] = None,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """``{"executions": [...], "next_cursor": ...}``, written as bytes: each finished run's
    JSON is built once (``ExecutionViews.json``), a page joins them."""
    if job_id is not None:
        parse_job_id(job_id)
    query = HistoryQuery(
        job_id=job_id,
        user=user,
        statuses=parse_statuses(status or []),
        since=parse_time("since", since),
        until=parse_time("until", until),
        limit=limit,
        cursor=cursor or None,
    )
    body = await history_body(engine_of(request), views_of(request), query, identity.principal)
    return Response(body, media_type="application/json")


@router.get("/catalog", **answers(CatalogOut))
async def catalog(identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    jobs = await catalog_entries(
        engine, engine.visible_jobs(identity.principal), identity.principal
    )
    return {"jobs": jobs, "count": len(jobs)}


@router.get("/catalog/{app}/{job}", **answers(JobDetailOut))
async def job_detail(
    app: str, job: str, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    engine = engine_of(request)
    found = engine.job(job_id_of(app, job), identity.principal)
    (entry,) = await catalog_entries(engine, [found], identity.principal)
    await engine.choices.for_api(found, entry["variables"])
    recent = await engine.history(HistoryQuery(job_id=found.id, limit=10), identity.principal)
    entry["recent"] = [e.to_api() for e in recent.items]
    return entry


@router.get("/catalog/{app}/{job}/samples", **answers(SamplesOut))
async def samples(
    app: str,
    job: str,
    identity: CurrentIdentity,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_SAMPLES)] = 100,
) -> dict[str, Any]:
    """The last ``limit`` JSON lines of the job's ``samples.jsonl`` (written by CollectMetrics)."""
    engine = engine_of(request)
    found = engine.job(job_id_of(app, job), identity.principal)
    path = state_dir(engine.settings, found.id) / "samples.jsonl"

    def tail() -> list[Any]:
        try:
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                lines = deque(handle, maxlen=limit)
        except FileNotFoundError:
            return []
        values = []
        for line in lines:
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written right now, or garbage: skip it
        return values

    return {"samples": await asyncio.to_thread(tail)}


def parse_var_query(items: list[str]) -> dict[str, str]:
    """``Name=Value`` query items as variables (the CLI's ``--var`` form)."""
    variables: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadRequest(f"Invalid var {item!r}: use var=NAME=VALUE")
        variables[name] = value
    return variables


@router.get("/catalog/{app}/{job}/plan", **answers(PlanOut))
async def plan(
    app: str,
    job: str,
    identity: CurrentIdentity,
    request: Request,
    var: Annotated[list[str] | None, Query(max_length=10_000)] = None,
) -> dict[str, Any]:
    """What a start now would do (next fires, argv, environment, init verdict, limits,
    start/queue/reject); needs the start right, since it shows what a start would pass."""
    from jobhost.plan import plan_on_engine

    return await plan_on_engine(
        engine_of(request),
        job_id_of(app, job),
        parse_var_query(var or []),
        identity.principal,
        address=client_address(request),
    )


@router.post("/start", **answers(ExecutionOut, 202))
async def start(
    body: StartLaterBody,
    identity: CurrentIdentity,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    engine = engine_of(request)
    parse_job_id(body.job_id)
    execution = await engine.start(
        body.job_id,
        body.variables,
        identity.principal,
        trigger=_trigger(identity),
        idempotency_key=idempotency_key or None,
        address=client_address(request),
        at=body.due_at(engine.clock()),
        dry_run=body.dry_run,
    )
    return execution.to_api()


@router.post("/test", **answers(ExecutionOut, 202))
async def test_run(body: StartBody, identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    parse_job_id(body.job_id)
    execution = await engine.start(
        body.job_id,
        body.variables,
        identity.principal,
        trigger=_trigger(identity),
        test=True,
        address=client_address(request),
        dry_run=body.dry_run,
    )
    return execution.to_api()


@router.post("/stop", **answers(ExecutionList, 202))
async def stop(body: TargetBody, identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    job_id, execution_id = body.target()
    stopped = await engine_of(request).stop(
        identity.principal,
        job_id=job_id,
        execution_id=execution_id,
        address=client_address(request),
        by=stopper(identity),
    )
    return {"executions": [e.to_api() for e in stopped]}


@router.post("/restart", **answers(ExecutionOut, 202))
async def restart(body: RestartBody, identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    job_id, execution_id = body.target()
    execution = await engine_of(request).restart(
        identity.principal,
        job_id=job_id,
        execution_id=execution_id,
        variables=body.variables,
        address=client_address(request),
    )
    return execution.to_api()


@router.post("/reload", **answers(ReloadOut))
async def reload(identity: SuperIdentity, request: Request) -> dict[str, Any]:
    catalog = await engine_of(request).reload(identity.principal, address=client_address(request))
    return {
        "count": len(catalog),
        "invalid": [{"id": j.id, "errors": list(j.errors)} for j in catalog.invalid()],
    }
