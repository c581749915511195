"""The schedule routes: list, read, change and clear per-job overrides, and preview.

Thin: parse the body, call the schedules service (``jobhost.schedules``), return its
JSON. The running scheduler's service, so a change replans at once; when this server
does not fire schedules itself (``scheduler_enabled = false``, e.g. a web-only process
next to the one that does), a service of its own serves the overrides.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from jobhost.models import iso
from jobhost.schedules import UNSET, Schedules
from jobhost.server.auth import CurrentIdentity, client_address, engine_of
from jobhost.server.routes.jobs import job_id_of
from jobhost.server.schemas import PreviewOut, ScheduleList, ScheduleOut, answers

router = APIRouter(prefix="/api/v1/jobs/schedules", tags=["schedules"])

Scalar = str | int | float | bool


class OverrideBody(BaseModel):
    """Any of the four; a field given as null goes back to job.json's value."""

    model_config = ConfigDict(extra="forbid")
    schedule: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None
    variables: dict[str, Scalar] | None = None
    timezone: str | None = Field(default=None, max_length=100)


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schedule: str = Field(max_length=200)
    timezone: str | None = Field(default=None, max_length=100)
    count: Annotated[int, Field(ge=1, le=100)] = 5


async def scheduler_of(request: Request) -> Schedules:
    engine = engine_of(request)
    if engine.scheduler is not None:
        return engine.scheduler.service
    own: Schedules | None = getattr(request.app.state, "schedules", None)
    if own is None or own.engine is not engine:
        own = Schedules(engine)
        await own.load()
        engine.on_catalog_change(own.catalog_changed)
        request.app.state.schedules = own
    return own


@router.get("", **answers(ScheduleList))
async def list_schedules(identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    scheduler = await scheduler_of(request)
    return {"schedules": await scheduler.list_schedules(identity.principal)}


@router.post("/preview", **answers(PreviewOut))
async def preview(body: PreviewBody, identity: CurrentIdentity, request: Request) -> dict[str, Any]:
    scheduler = await scheduler_of(request)
    fires = scheduler.preview(body.schedule, body.timezone, body.count)
    return {"next_fires": [iso(when) for when in fires]}


@router.get("/{app}/{job}", **answers(ScheduleOut))
async def get_schedule(
    app: str, job: str, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    scheduler = await scheduler_of(request)
    return await scheduler.get(job_id_of(app, job), identity.principal)


@router.put("/{app}/{job}", **answers(ScheduleOut))
async def put_schedule(
    app: str, job: str, body: OverrideBody, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    scheduler = await scheduler_of(request)
    given = body.model_fields_set
    return await scheduler.set_override(
        job_id_of(app, job),
        identity.principal,
        schedule=body.schedule if "schedule" in given else UNSET,
        enabled=body.enabled if "enabled" in given else UNSET,
        variables=body.variables if "variables" in given else UNSET,
        timezone=body.timezone if "timezone" in given else UNSET,
        address=client_address(request),
    )


@router.delete("/{app}/{job}", **answers(ScheduleOut))
async def delete_schedule(
    app: str, job: str, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    """Drop the override; answers with the schedule now in force (job.json's)."""
    scheduler = await scheduler_of(request)
    return await scheduler.clear_override(
        job_id_of(app, job), identity.principal, address=client_address(request)
    )
