"""Output of executions: by offset, live (SSE), and the stream of execution changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from jobhost.engine import JobHost
from jobhost.errors import BadRequest
from jobhost.models import Action, Principal
from jobhost.security import can_on_execution
from jobhost.server import cluster
from jobhost.server.auth import CurrentIdentity, authenticator_of, engine_of
from jobhost.server.contract import EventStream
from jobhost.server.schemas import OutputOut, answers
from jobhost.server.sse import HEADERS, frame, with_heartbeats
from jobhost.server.views import views_of

router = APIRouter(prefix="/api/v1/jobs", tags=["output"])


@router.get("/output/{execution_id}", **answers(OutputOut))
async def output(
    execution_id: str,
    identity: CurrentIdentity,
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1024 * 1024)] = 64 * 1024,
) -> dict[str, Any]:
    engine = engine_of(request)
    execution = await engine.status(execution_id, identity.principal)
    # A log in another server's data dir is read through that server (server.cluster).
    return await cluster.read_page(engine, request, execution, identity.principal, offset, limit)


async def output_frames(
    engine: JobHost, execution_id: str, principal: Principal, offset: int
) -> AsyncIterator[bytes]:
    """A run's output stream as SSE frames: ``output`` (its id the next offset) until the
    run has ended and all is read, then ``end`` with the run as recorded."""
    async for chunk in engine.follow(execution_id, principal, offset=offset):
        if chunk.data:
            data = chunk.to_api()
            data.pop("done", None)
            yield frame("output", data, chunk.next_offset)
        if chunk.done:
            break
    final = await engine.status(execution_id, principal)
    yield frame("end", final.to_api())


def _resume_offset(last_event_id: str | None, offset: int | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id)
        except ValueError:
            raise BadRequest(
                f"Invalid Last-Event-ID {last_event_id!r}: it must be the id of an output event"
            ) from None
        if value < 0:
            raise BadRequest(f"Invalid Last-Event-ID {last_event_id!r}: it must be 0 or more")
        return value
    return offset or 0


@router.get("/output/{execution_id}/stream", response_class=EventStream)
async def output_stream(
    execution_id: str,
    identity: CurrentIdentity,
    request: Request,
    offset: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """``output`` events as the run writes, then one ``end`` event with the execution."""
    engine = engine_of(request)
    principal = identity.principal
    start = _resume_offset(last_event_id, offset)
    execution = await engine.status(execution_id, principal)  # a 404 now, not in the stream
    peers = await cluster.peer(engine, request, execution)
    if peers:
        # The log is in another server's data dir: relay that server's frames.
        guarded = authenticator_of(request).until_revoked(
            identity, peers[0].stream(execution_id, start)
        )
        return StreamingResponse(
            with_heartbeats(guarded), media_type="text/event-stream", headers=HEADERS
        )

    # auth: the stream ends when its credential is revoked or its user disabled.
    frames = output_frames(engine, execution_id, principal, start)
    guarded = authenticator_of(request).until_revoked(identity, frames)
    return StreamingResponse(
        with_heartbeats(guarded), media_type="text/event-stream", headers=HEADERS
    )


@router.get("/events", response_class=EventStream)
async def execution_events(identity: CurrentIdentity, request: Request) -> StreamingResponse:
    """Every change of an execution the user may view, as ``execution`` events.

    Not resumable by ``Last-Event-ID`` (its events carry no ``id``): instead every
    connection starts with one ``snapshot`` event, ``{"executions": [...]}``, the live
    executions the user may view as of the subscription, then every change after it. A
    client that reconnects replaces its view with the snapshot; a run it knew as live
    that the snapshot lacks has ended meanwhile (``GET /status/{id}`` says how).
    """
    engine = engine_of(request)
    views = views_of(request)
    principal = identity.principal
    changes = engine.changes()

    async def events() -> AsyncIterator[bytes]:
        # Subscribe before the snapshot and before telling the client it is connected,
        # so no change made after the snapshot can be missed.
        pending = asyncio.ensure_future(anext(changes))
        try:
            await asyncio.sleep(0)
            yield b": connected\n\n"
            live = [views.api(execution) for execution in engine.running(principal)]
            yield frame("snapshot", {"executions": live})
            while True:
                execution = await pending
                pending = asyncio.ensure_future(anext(changes))
                job = engine.catalog.get(execution.job_id)
                if can_on_execution(principal, job, execution, Action.VIEW):
                    yield views.event(execution)
        finally:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
            closer = getattr(changes, "aclose", None)
            if closer is not None:
                await closer()

    # auth: the stream ends when its credential is revoked or its user disabled.
    guarded = authenticator_of(request).until_revoked(identity, events())
    return StreamingResponse(
        with_heartbeats(guarded), media_type="text/event-stream", headers=HEADERS
    )
