"""Start-once semantics for ``Idempotency-Key``: a retried request never runs a job twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobhost.models import Execution

Lookup = Callable[[str | None, str], Awaitable[Execution | None]]


class IdempotencyKeys:
    """Concurrent requests with one (user, key) share the first one's execution; keys of
    earlier process lifetimes are answered by the store (``lookup``)."""

    def __init__(self, lookup: Lookup, *, remembered: int = 10_000) -> None:
        self._lookup = lookup
        self._remembered = remembered
        self._futures: dict[tuple[str | None, str], asyncio.Future[Execution]] = {}

    async def once(
        self, user: str | None, key: str, create: Callable[[], Awaitable[Execution]]
    ) -> Execution:
        pending = self._futures.get((user, key))
        if pending is not None:
            return await asyncio.shield(pending)
        # Registered before the first await, so concurrent retries wait for this one.
        future: asyncio.Future[Execution] = asyncio.get_running_loop().create_future()
        self._futures[(user, key)] = future
        try:
            execution = await self._lookup(user, key) or await create()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: the caller gets it from the raise
            del self._futures[(user, key)]
            raise
        future.set_result(execution)
        if len(self._futures) > self._remembered:  # the store answers for older keys
            self._futures.clear()
        return execution
