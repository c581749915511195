"""Subscriptions to announced transitions that register when created, not when first read.

A subscriber made before ``start()`` must see that run's ``running``: an async generator
would register only at its first ``__anext__``, after the transition may have gone by.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

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


class Watchers:
    """Who waits on live runs: subscribers to every transition, listeners called with
    each (no queue: they must be quick), callers waiting for a run's end, and followers
    waiting for its next output. Runs on the event loop."""

    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()
        self.listeners: list[Callable[[Execution], None]] = []
        self._done: dict[str, list[asyncio.Future[Execution]]] = {}
        self._output: dict[str, list[asyncio.Future[None]]] = {}

    def changes(self) -> Subscription:
        return Subscription(self.subscribers)

    def announce(self, execution: Execution) -> None:
        for subscription in list(self.subscribers):
            subscription.put(execution)
        for listener in self.listeners:
            listener(execution)

    async def wait(self, execution_id: str) -> Execution:
        """The run once ``ended`` is called for it."""
        future: asyncio.Future[Execution] = asyncio.get_running_loop().create_future()
        self._done.setdefault(execution_id, []).append(future)
        return await future

    def next_output(self, execution_id: str) -> asyncio.Future[None]:
        """A future set at the run's next ``wake_output`` or ``ended``, registered now:
        take it before reading the log, so output written during the read wakes it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._output.setdefault(execution_id, []).append(future)
        return future

    def forget_output(self, execution_id: str, future: asyncio.Future[None]) -> None:
        """Drop a ``next_output`` future its caller no longer waits on."""
        waiters = self._output.get(execution_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._output[execution_id]

    def wake_output(self, execution_id: str) -> None:
        for future in self._output.pop(execution_id, []):
            if not future.done():
                future.set_result(None)

    def ended(self, execution: Execution) -> None:
        """Release everyone waiting on the run: ``wait`` returns ``execution``."""
        for waiter in self._done.pop(execution.id, []):
            if not waiter.done():
                waiter.set_result(execution)
        self.wake_output(execution.id)
