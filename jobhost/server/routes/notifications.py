"""Notification deliveries of an execution: who was told what, and whether it arrived."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from jobhost.server.auth import CurrentPrincipal, engine_of
from jobhost.server.schemas import DeliveryList, answers

router = APIRouter(prefix="/api/v1/jobs", tags=["notifications"])


@router.get("/status/{execution_id}/notifications", **answers(DeliveryList))
async def execution_notifications(
    execution_id: str, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    """``{deliveries: [...]}`` for an execution the caller may view (404 otherwise); empty
    when notifications are off on this host."""
    engine = engine_of(request)
    await engine.status(execution_id, principal)
    if engine.notifier is None:
        return {"deliveries": []}
    deliveries = await engine.notifier.deliveries(execution_id)
    return {"deliveries": [delivery.to_api() for delivery in deliveries]}
