"""Identical reads in flight at once, made once."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class SharedReads:
    """Concurrent identical reads share one call, begun after each of them arrived.

    A call in flight may have begun before a newer request came in, and so miss a run
    committed just before that request: a request never joins it, but the next call of its
    key, which begins when the one in flight ends. With clients polling the same page, the
    store is read once per round instead of once per client. Holds only keys in flight."""

    def __init__(self) -> None:
        self._busy: set[Hashable] = set()
        self._next: dict[Hashable, tuple[asyncio.Future[Any], Callable[[], Awaitable[Any]]]] = {}

    async def read(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        queued = self._next.get(key)
        if queued is not None:
            future = queued[0]
        else:
            future = asyncio.get_running_loop().create_future()
            if key in self._busy:
                self._next[key] = (future, call)
            else:
                self._begin(key, future, call)
        # Shielded: one caller going away must not cancel the others' answer.
        return cast(T, await asyncio.shield(future))

    def _begin(
        self, key: Hashable, future: asyncio.Future[Any], call: Callable[[], Awaitable[Any]]
    ) -> None:
        self._busy.add(key)
        task = asyncio.ensure_future(call())
        task.add_done_callback(functools.partial(self._ended, key, future))

    def _ended(self, key: Hashable, future: asyncio.Future[Any], task: asyncio.Future[Any]) -> None:
        self._busy.discard(key)
        if task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            future.set_exception(error)
            future.exception()  # retrieved here: every caller may have gone
        else:
            future.set_result(task.result())
        queued = self._next.pop(key, None)
        if queued is not None:
            self._begin(key, *queued)
