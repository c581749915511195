"""``/healthz`` and ``/metrics`` (no sign-in; counts only, never job variables)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from jobhost.models import ExecutionStatus
from jobhost.server.auth import engine_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    catalog = engine.catalog
    return {
        "status": "ok",
        "jobs": len(catalog),
        "invalid_jobs": len(catalog.invalid()),
        "running": len(engine.supervisor.live),
    }


def _line(name: str, value: float | int, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text exposition format, version 0.0.4."""
    engine = engine_of(request)
    supervisor = engine.supervisor
    finished = supervisor.finished_counts
    live = list(supervisor.live.values())
    catalog = engine.catalog
    invalid = len(catalog.invalid())
    lines = [
        "# HELP jobhost_executions_finished_total Executions that ended, by final status.",
        "# TYPE jobhost_executions_finished_total counter",
    ]
    for status in sorted(s.value for s in ExecutionStatus if s.terminal):
        lines.append(
            _line("jobhost_executions_finished_total", finished.get(status, 0), {"status": status})
        )
    lines += [
        "# HELP jobhost_executions_running Executions holding a process now.",
        "# TYPE jobhost_executions_running gauge",
        _line("jobhost_executions_running", sum(1 for e in live if e.status.active)),
        "# HELP jobhost_queue_depth Executions waiting for a free slot.",
        "# TYPE jobhost_queue_depth gauge",
        _line("jobhost_queue_depth", supervisor.queued_total()),
        "# HELP jobhost_execution_duration_seconds Run time of ended executions.",
        "# TYPE jobhost_execution_duration_seconds summary",
        _line("jobhost_execution_duration_seconds_sum", round(supervisor.duration_sum, 6)),
        _line("jobhost_execution_duration_seconds_count", sum(finished.values())),
        "# HELP jobhost_jobs Jobs in the catalog, by validity.",
        "# TYPE jobhost_jobs gauge",
        _line("jobhost_jobs", len(catalog.valid()), {"valid": "true"}),
        _line("jobhost_jobs", invalid, {"valid": "false"}),
    ]
    return PlainTextResponse(
        "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
    )
