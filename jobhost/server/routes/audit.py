"""The audit trail (superusers only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from jobhost.models import AuditQuery
from jobhost.server.auth import SuperIdentity, engine_of
from jobhost.server.routes.jobs import parse_time
from jobhost.server.schemas import AuditPage, answers

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", **answers(AuditPage))
async def audit(
    identity: SuperIdentity,
    request: Request,
    user: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target: Annotated[str | None, Query(max_length=500)] = None,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    query = AuditQuery(
        user=user,
        action=action,
        target=target,
        since=parse_time("since", since),
        until=parse_time("until", until),
        limit=limit,
        cursor=cursor or None,
    )
    page = await engine_of(request).audit_log(query)
    return {"events": [e.to_api() for e in page.items], "next_cursor": page.next_cursor}
