"""Internal routes other servers on the same store call (``jobhost.server.cluster``).

Only requests signed with the cluster key pass; user sessions and tokens do not. The
server that proxies checked the user's right to view the run; these answer for the runs
whose logs are in this server's data dir, and 404 for the others.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from jobhost.engine import SYSTEM, JobHost
from jobhost.errors import ExecutionNotFound
from jobhost.server.cluster import is_here, verify
from jobhost.server.routes.output import output_frames
from jobhost.server.sse import HEADERS, with_heartbeats

router = APIRouter(
    prefix="/api/v1/cluster",
    tags=["cluster"],
    include_in_schema=False,
    dependencies=[Depends(verify)],
)


async def _here(request: Request, execution_id: str) -> JobHost:
    engine: JobHost = request.app.state.engine
    execution = await engine.status(execution_id, SYSTEM)
    if not is_here(engine, execution):
        raise ExecutionNotFound(f"The log of {execution_id!r} is not in this server's data dir")
    return engine


@router.get("/output/{execution_id}")
async def output(
    execution_id: str,
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1024 * 1024)] = 64 * 1024,
) -> dict[str, Any]:
    engine = await _here(request, execution_id)
    chunk = await engine.read_output(execution_id, SYSTEM, offset=offset, limit=limit)
    return chunk.to_api()


@router.get("/output/{execution_id}/stream")
async def output_stream(
    execution_id: str, request: Request, offset: Annotated[int, Query(ge=0)] = 0
) -> StreamingResponse:
    """The public stream's frames (``output`` with the next offset as id, then ``end``)."""
    engine = await _here(request, execution_id)
    return StreamingResponse(
        with_heartbeats(output_frames(engine, execution_id, SYSTEM, offset)),
        media_type="text/event-stream",
        headers=HEADERS,
    )
