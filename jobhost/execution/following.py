"""A run's output as callers read it: chunks that end on a character boundary (with
the character ranges that came from stderr), read off the event loop, and a live run
followed until its last byte (woken by new output, never polled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from jobhost.config import Settings
from jobhost.execution.launch import log_path
from jobhost.execution.output import read_text, text_spans
from jobhost.execution.supervisor import Supervisor
from jobhost.models import OutputChunk

DEFAULT_READ = 64 * 1024
MAX_READ = 1024 * 1024


async def read_chunk(
    settings: Settings, execution_id: str, offset: int, limit: int, *, live: bool
) -> OutputChunk:
    """A read that ends on a UTF-8 character boundary, done off the event loop; ``done``
    as soon as an ended run's last byte has been returned."""
    path = str(log_path(settings, execution_id))
    read = await asyncio.to_thread(read_text, path, offset, limit, live=live)
    spans = text_spans(read.data, read.offset, read.stderr) if read.stderr else ()
    return OutputChunk(
        data=read.data,
        offset=read.offset,
        next_offset=read.next_offset,
        done=read.at_end,
        stderr=spans,
    )


async def follow_output(
    settings: Settings, supervisor: Supervisor, execution_id: str, offset: int
) -> AsyncGenerator[OutputChunk]:
    """Output as it is produced, until the run ends; the last chunk has ``done``."""
    while True:
        live = execution_id in supervisor.live
        # Registered before the read: output written while the read runs on its thread
        # sets it, so the wait below cannot miss it (and hang on a quiet run).
        woken = supervisor.next_output(execution_id)
        try:
            chunk = await read_chunk(settings, execution_id, offset, DEFAULT_READ, live=live)
            if chunk.data:
                offset = chunk.next_offset
            elif live:
                await woken
                continue
        finally:
            supervisor.forget_output(execution_id, woken)
        if not chunk.data:
            yield OutputChunk(data=b"", offset=offset, next_offset=offset, done=True)
            return
        yield chunk
        if chunk.done:
            return
