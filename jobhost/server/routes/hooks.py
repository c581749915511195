"""The webhook routes: the hook URL itself (no session or token: the URL is the secret),
and creating, rotating and showing a job's hook (the job's start right).

Thin: the rules live in ``jobhost.hooks``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request

from jobhost.hooks import Webhooks
from jobhost.server.auth import CurrentIdentity, client_address, engine_of
from jobhost.server.routes.jobs import job_id_of
from jobhost.server.schemas import ExecutionOut, HookOut, NewHookOut, answers

router = APIRouter(tags=["hooks"])
JOB_HOOK = "/api/v1/jobs/catalog/{app}/{job}/hook"


def webhooks_of(request: Request) -> Webhooks:
    """The app's webhooks service (it holds the per-hook rate limits)."""
    engine = engine_of(request)
    service: Webhooks | None = getattr(request.app.state, "webhooks", None)
    if service is None or service.engine is not engine:
        service = Webhooks(engine)
        request.app.state.webhooks = service
    return service


@router.post("/api/v1/hooks/{token}", **answers(ExecutionOut, 202))
async def call_hook(
    request: Request,
    token: Annotated[str, Path(max_length=100)],
    x_hub_signature_256: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Start the hook's job; the JSON body's fields named in its template_variables become
    variables. With a signature rule, ``X-Hub-Signature-256: sha256=<hex HMAC>`` is
    required. 429 with Retry-After past the hook's rate."""
    body = await request.body()
    execution = await webhooks_of(request).call(
        token, body, x_hub_signature_256, address=client_address(request)
    )
    return execution.to_api()


@router.get(JOB_HOOK, **answers(HookOut))
async def show_hook(
    app: str, job: str, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    return await webhooks_of(request).show(
        job_id_of(app, job), identity.principal, address=client_address(request)
    )


@router.post(JOB_HOOK, **answers(NewHookOut, 201))
async def create_hook(
    app: str, job: str, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    """A new hook; its URL (and signing secret) are in this answer only."""
    return await webhooks_of(request).create(
        job_id_of(app, job), identity.principal, rotate=False, address=client_address(request)
    )


@router.post(f"{JOB_HOOK}/rotate", **answers(NewHookOut, 201))
async def rotate_hook(
    app: str, job: str, identity: CurrentIdentity, request: Request
) -> dict[str, Any]:
    """A new URL (and signing secret) for the hook; the old ones stop working now."""
    return await webhooks_of(request).create(
        job_id_of(app, job), identity.principal, rotate=True, address=client_address(request)
    )
