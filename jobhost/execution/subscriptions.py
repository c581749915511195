"""Subscriptions to announced transitions that register when created, not when first read.

A subscriber made before ``start()`` must see that run's ``running``: an async generator
would register only at its first ``__anext__``, after the transition may have gone by.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from jobhost.models import Execution

SUBSCRIBER_QUEUE = 1000


class Subscription(AsyncIterator[Execution]):
    """Every transition announced after this was created (bounded: a slow reader loses
    the oldest). Iterate it; ``close()`` (or leaving an ``async with``) unsubscribes."""

    def __init__(self, subscribers: set[Subscription]) -> None:
        self._subscribers = subscribers
        self._queue: asyncio.Queue[Execution] = asyncio.Queue(SUBSCRIBER_QUEUE)
        subscribers.add(self)

    def put(self, execution: Execution) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(execution)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Execution:
        return await self._queue.get()

    def close(self) -> None:
        self._subscribers.discard(self)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._subscribers.discard(self)
