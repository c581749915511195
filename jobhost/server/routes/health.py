"""``/healthz`` (no sign-in; counts only, never job variables). ``/metrics`` is in
``jobhost.server.metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from jobhost.server.auth import engine_of
from jobhost.server.schemas import Health, answers

router = APIRouter(tags=["health"])
HEALTH_ANSWERS = answers(Health)  # 503 while draining, with the same body


@router.get("/healthz", **HEALTH_ANSWERS)
async def healthz(request: Request) -> dict[str, Any] | JSONResponse:
    """200 ``ok``; 503 ``draining`` while a drain is under way, so a load balancer stops
    sending traffic here."""
    engine = engine_of(request)
    catalog = engine.catalog
    body = {
        "status": "draining" if engine.draining else "ok",
        "jobs": len(catalog),
        "invalid_jobs": len(catalog.invalid()),
        "running": len(engine.supervisor.live),
        "details": {"isolation": _isolation(engine.supervisor.executor)},
    }
    if engine.draining:
        return JSONResponse(body, status_code=503)
    return body


def _isolation(executor: object) -> str:
    """How runs are confined (cgroup v2, v1 or rlimits), as the executor detected it."""
    describe = getattr(executor, "isolation_description", None)
    return str(describe()) if callable(describe) else "decided by each worker"
