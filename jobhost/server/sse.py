"""Server-sent events: framing, and heartbeats merged into any async stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

HEARTBEAT_SECONDS = 15.0
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
}


def frame(event: str, data: Any, event_id: str | int | None = None) -> bytes:
    """One SSE message; ``data`` is JSON-encoded (one line, so no ``data:`` splitting)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


HEARTBEAT = b": heartbeat\n\n"


async def with_heartbeats(
    events: AsyncIterator[bytes], interval: float = HEARTBEAT_SECONDS
) -> AsyncIterator[bytes]:
    """Yield ``events`` as they come, and a comment line whenever ``interval`` passes quietly.

    Keeps idle connections alive through proxies; the source is closed when the client
    goes away (the response cancels this generator) or when it ends.
    """
    iterator = aiter(events)
    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield HEARTBEAT
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            await closer()
