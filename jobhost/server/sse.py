"""Server-sent events: framing, and heartbeats merged into any async stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
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


async def paced(
    events: AsyncIterator[bytes], interval: float, stop: asyncio.Future[Any] | None = None
) -> AsyncGenerator[bytes | None, None]:
    """``events`` as they come, and None whenever ``interval`` passes without one; ends
    when ``events`` does or ``stop`` completes. Closes ``events`` when it ends or is closed
    (use it under ``contextlib.aclosing`` when leaving the loop early)."""
    iterator = aiter(events)
    pending: asyncio.Future[bytes] | None = None
    waiting = set() if stop is None else {stop}
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait(
                {pending, *waiting}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            if stop is not None and stop in done:
                return
            if not done:
                yield None
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


async def with_heartbeats(
    events: AsyncIterator[bytes], interval: float = HEARTBEAT_SECONDS
) -> AsyncIterator[bytes]:
    """Yield ``events`` as they come, and a comment line whenever ``interval`` passes quietly.

    Keeps idle connections alive through proxies; the source is closed when the client
    goes away (the response cancels this generator) or when it ends.
    """
    async with contextlib.aclosing(paced(events, interval)) as items:
        async for item in items:
            yield HEARTBEAT if item is None else item
