"""``/healthz`` (no sign-in; counts only, never job variables). ``/metrics`` is in
``jobhost.server.metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from jobhost.server.auth import engine_of
from jobhost.server.schemas import Health, answers

router = APIRouter(tags=["health"])


@router.get("/healthz", **answers(Health))
async def healthz(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    catalog = engine.catalog
    return {
        "status": "ok",
        "jobs": len(catalog),
        "invalid_jobs": len(catalog.invalid()),
        "running": len(engine.supervisor.live),
        "details": {"isolation": _isolation(engine.supervisor.executor)},
    }


def _isolation(executor: object) -> str:
    """How runs are confined (cgroup v2, v1 or rlimits), as the executor detected it."""
    describe = getattr(executor, "isolation_description", None)
    return str(describe()) if callable(describe) else "decided by each worker"
