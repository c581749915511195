"""Instances and drain (superusers only): who owns the runs, and upgrades without loss."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from jobhost.models import utcnow
from jobhost.server.auth import SuperIdentity, client_address, engine_of
from jobhost.server.schemas import Model, answers

router = APIRouter(tags=["admin"])


class InstanceOut(Model):
    """A process registered on the store, with its lease."""

    id: str
    host: str
    pid: int
    kind: str
    started_at: str
    lease_expires_at: str
    alive: bool
    draining: bool
    url: str | None = Field(
        default=None, description="Where other servers reach it (its runs' output)"
    )


class InstancesOut(Model):
    """The registered instances; ``current`` is the one answering."""

    current: str
    instances: list[InstanceOut]


class DrainOut(Model):
    """The drain has begun."""

    status: str
    running: int


class ResumeOut(Model):
    """The drain is over."""

    status: str


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_seconds: float | None = Field(default=None, ge=0)
    leave: bool = False


@router.get("/api/v1/instances", **answers(InstancesOut))
async def list_instances(identity: SuperIdentity, request: Request) -> dict[str, Any]:
    """Every registered instance, with its lease; ``current`` is the one answering."""
    engine = engine_of(request)
    now = utcnow()
    found = await engine.instances()
    return {
        "current": engine.instance_id,
        "instances": [instance.to_api(now) for instance in found],
    }


@router.post("/api/v1/admin/drain", **answers(DrainOut, 202))
async def drain(
    identity: SuperIdentity, request: Request, body: DrainRequest | None = None
) -> dict[str, Any]:
    """Start nothing new; exit once the running runs end (or ``wait_seconds`` pass), or at
    once with ``leave`` (the next server re-adopts them)."""
    engine = engine_of(request)
    body = body or DrainRequest()
    await engine.drain(
        identity.principal,
        wait_seconds=body.wait_seconds,
        leave=body.leave,
        address=client_address(request),
    )
    return {"status": "draining", "running": len(engine.running(identity.principal))}


@router.post("/api/v1/admin/resume", **answers(ResumeOut))
async def resume(identity: SuperIdentity, request: Request) -> dict[str, Any]:
    """End a drain: starts and schedules work again."""
    engine = engine_of(request)
    await engine.resume(identity.principal, address=client_address(request))
    return {"status": "ok"}
