"""The seed's routes under ``/apps/WebHostTaskManagement/api/v1/jobs``, served by the new system.

Shapes follow the seed (``{success, timestamp, …}``, camelCase), with its bugs fixed:
lists are always arrays and counts are real. Errors use the one error shape of the API.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from jobhost.catalog.definition import parse_job_id
from jobhost.errors import BadRequest, NotFound, PermissionDenied
from jobhost.models import Action, Execution, ExecutionStatus, HistoryQuery, iso, utcnow
from jobhost.security import can
from jobhost.server import cluster
from jobhost.server.adhoc import AdhocRunner
from jobhost.server.auth import CurrentIdentity, client_address, engine_of
from jobhost.server.routes.jobs import Scalar, stopper
from jobhost.server.schemas import (
    LegacyCatalog,
    LegacyJobs,
    LegacyOutput,
    LegacyResults,
    LegacyStarted,
    LegacyStopped,
    LegacySubmitted,
    answers,
)

PREFIX = "/apps/WebHostTaskManagement/api/v1/jobs"
router = APIRouter(prefix=PREFIX, tags=["legacy"])

_STATES = {
    ExecutionStatus.SCHEDULED: "NotStarted",
    ExecutionStatus.QUEUED: "NotStarted",
    ExecutionStatus.STARTING: "Running",
    ExecutionStatus.RUNNING: "Running",
    ExecutionStatus.STOPPING: "Stopping",
    ExecutionStatus.SUCCEEDED: "Completed",
    ExecutionStatus.FAILED: "Failed",
    ExecutionStatus.TIMED_OUT: "Failed",
    ExecutionStatus.LOST: "Failed",
    ExecutionStatus.REJECTED: "Failed",
    ExecutionStatus.STOPPED: "Stopped",
}
MODES = ("MainLoop", "Runspace", "BackgroundJob")


class LegacyStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobId: str = Field(max_length=201)
    variables: dict[str, Scalar] | None = None


class LegacyStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobId: str = Field(max_length=201)


class LegacySubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobName: str = Field(min_length=1, max_length=200)
    command: str = Field(min_length=1, max_length=10_000)
    description: str = Field(default="", max_length=2000)
    executionMode: str = "BackgroundJob"


def _now() -> str | None:
    return iso(utcnow())


def _legacy_job(execution: Execution) -> dict[str, Any]:
    app, _, name = execution.job_id.partition("/")
    return {
        "id": execution.id,
        "name": name,
        "state": _STATES[execution.status],
        "hasMoreData": execution.output_bytes > 0,
        "location": execution.host,
        "command": execution.job_id,
        "startTime": iso(execution.started_at),
        "runningTime": execution.duration_seconds,
        "taskName": execution.job_id,
        "appName": app,
        "childJobs": [],
    }


@router.get("", **answers(LegacyJobs))
async def jobs(identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    """Running executions and the most recent ended ones the user may view."""
    engine = engine_of(request)
    running = engine.running(identity.principal)
    recent = await engine.history(HistoryQuery(limit=50), identity.principal)
    seen = {e.id for e in running}
    executions = running + [e for e in recent.items if e.id not in seen]
    entries = [_legacy_job(e) for e in executions]
    states = [entry["state"] for entry in entries]
    return {
        "success": True,
        "timestamp": _now(),
        "jobs": entries,
        "count": len(entries),
        "running": states.count("Running"),
        "completed": states.count("Completed"),
        "failed": states.count("Failed"),
    }


@router.get("/catalog", **answers(LegacyCatalog))
async def catalog(identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    principal = identity.principal
    entries = []
    for job in engine.visible_jobs(principal):
        d = job.definition
        entries.append(
            {
                "jobId": job.id,
                "appName": job.app,
                "jobName": job.name,
                "displayName": d.Name if d and d.Name else job.name,
                "description": d.Description if d else "",
                "schedule": d.default_schedule if d else None,
                "hasInitScript": job.init_script is not None,
                "templateVariables": [
                    {"name": spec.name, "description": spec.description}
                    for spec in (d.template_variables.values() if d else ())
                ],
                "permissions": {
                    "canStart": can(principal, job, Action.START),
                    "canStop": can(principal, job, Action.STOP),
                    "canRestart": can(principal, job, Action.RESTART),
                },
                "roles": {
                    "start": (d.roles_for(Action.START) or []) if d else [],
                    "stop": (d.roles_for(Action.STOP) or []) if d else [],
                    "restart": (d.roles_for(Action.RESTART) or []) if d else [],
                },
            }
        )
    return {
        "success": True,
        "timestamp": _now(),
        "jobs": entries,
        "count": len(entries),
        "userRoles": sorted(principal.roles),
    }


@router.post("/start", **answers(LegacyStarted))
async def start(body: LegacyStart, identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    parse_job_id(body.jobId)
    execution = await engine_of(request).start(
        body.jobId, body.variables, identity.principal, address=client_address(request)
    )
    return {
        "success": True,
        "timestamp": _now(),
        "message": "Job started successfully",
        "jobId": body.jobId,
        "executionId": execution.id,
        "status": _STATES[execution.status],
    }


@router.post("/stop", **answers(LegacyStopped))
async def stop(body: LegacyStop, identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    parse_job_id(body.jobId)
    stopped = await engine_of(request).stop(
        identity.principal,
        job_id=body.jobId,
        address=client_address(request),
        by=stopper(identity),
    )
    return {
        "success": True,
        "timestamp": _now(),
        "message": "Job stop command queued successfully",
        "jobId": body.jobId,
        "executionIds": [e.id for e in stopped],
        "status": "StopQueued",
    }


def _runner(request: Request) -> AdhocRunner:
    runner: AdhocRunner = request.app.state.adhoc
    return runner


@router.get("/results", **answers(LegacyResults))
async def results(
    identity: CurrentIdentity,
    request: Request,
    max_results: Annotated[int, Query(alias="maxResults", ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Ended executions the user may view, and their ad-hoc commands, newest first."""
    engine = engine_of(request)
    principal = identity.principal
    ended = tuple(s for s in ExecutionStatus if s.terminal)
    page = await engine.history(HistoryQuery(statuses=ended, limit=max_results), principal)
    items: list[dict[str, Any]] = [
        {
            "jobId": e.id,
            "jobName": e.job_id,
            "executionMode": "BackgroundJob",
            "userId": e.user,
            "state": _STATES[e.status],
            "success": e.status is ExecutionStatus.SUCCEEDED,
            "exitCode": e.exit_code,
            "startTime": iso(e.started_at),
            "endTime": iso(e.ended_at),
            "runtime": e.duration_seconds,
        }
        for e in page.items
    ]
    adhoc = [
        r.to_result()
        for r in _runner(request).visible(principal.username, principal.superuser)
        if r.ended_at is not None
    ]
    merged = sorted(items + adhoc, key=lambda r: r["endTime"] or "", reverse=True)[:max_results]
    return {"success": True, "timestamp": _now(), "results": merged, "count": len(merged)}


@router.get("/output", **answers(LegacyOutput))
async def output(
    identity: CurrentIdentity,
    request: Request,
    job_id: Annotated[str, Query(alias="jobId", min_length=1, max_length=64)],
) -> dict[str, Any]:
    """Output of an ad-hoc command, or of an execution (the first 1 MiB)."""
    principal = identity.principal
    run = _runner(request).runs.get(job_id)
    runtime: float | None
    if run is not None and (principal.superuser or run.user == principal.username):
        text = run.output.decode("utf-8", errors="replace")
        state, runtime = run.state, run.runtime_seconds
    elif run is not None:
        raise NotFound(f"No job {job_id!r}")
    else:
        engine = engine_of(request)
        execution = await engine.status(job_id, principal)
        page = await cluster.read_page(engine, request, execution, principal, 0, 1024 * 1024)
        text = page["output"]
        state, runtime = _STATES[execution.status], execution.duration_seconds
    return {
        "success": True,
        "timestamp": _now(),
        "jobId": job_id,
        "output": text,
        "runtime": runtime,
        "state": state,
        "message": "",
    }


@router.post("/submit", **answers(LegacySubmitted))
async def submit(body: LegacySubmit, identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    """Run an ad-hoc command as its own process (off unless ``adhoc_enabled``)."""
    engine = engine_of(request)
    settings = engine.settings
    principal = identity.principal
    if body.executionMode == "MainLoop":
        raise BadRequest(
            "MainLoop mode ran code inside the server and is not supported; use BackgroundJob"
        )
    if body.executionMode not in MODES:
        raise BadRequest(
            f"Unknown executionMode {body.executionMode!r}: use BackgroundJob (or Runspace)"
        )
    held = {r.casefold() for r in principal.roles}
    allowed_role = any(r.casefold() in held for r in settings.adhoc_roles)
    if not settings.adhoc_enabled or not allowed_role:
        reason = (
            "Ad-hoc commands are disabled on this server (settings.adhoc_enabled)"
            if not settings.adhoc_enabled
            else f"Ad-hoc commands need one of the roles {', '.join(settings.adhoc_roles)}"
        )
        await engine.audit(
            "adhoc.submit",
            principal,
            body.jobName,
            outcome="denied",
            address=client_address(request),
            details={"reason": reason},
        )
        raise PermissionDenied(reason)
    try:
        argv = shlex.split(body.command)
    except ValueError as exc:
        raise BadRequest(f"Cannot split the command {body.command!r}: {exc}") from None
    if not argv:
        raise BadRequest("The command is empty")
    run = await _runner(request).submit(
        body.jobName, argv, principal.username, body.description, body.executionMode
    )
    await engine.audit(
        "adhoc.submit",
        principal,
        body.jobName,
        address=client_address(request),
        details={"job": run.id, "argv": argv, "pid": run.pid},
    )
    return {
        "success": True,
        "timestamp": _now(),
        "jobId": run.id,
        "message": "Job submitted successfully",
        "executionMode": body.executionMode,
        "status": run.state,
    }
