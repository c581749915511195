"""Time as a dependency: the scheduler asks a ``Clock`` for the time and how to wait.

``SystemClock`` is the real time on the event loop's timer; ``ManualClock`` moves only
when told, so calendar logic is tested with explicit times and no waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from jobhost.models import utcnow

# Longest single sleep: the event loop's timer follows the monotonic clock, so a wall
# clock step (NTP, a suspended machine) is noticed after at most this long.
MAX_SLEEP_SECONDS = 300.0
SPIN_SECONDS = 0.001  # the end of a sleep that yields to the loop instead of a timer


class Clock(Protocol):
    """Where the scheduler gets the time and how it waits for it."""

    def now(self) -> datetime:
        """An aware UTC datetime."""
        ...

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """Return at ``when`` (never when None), or earlier once ``wake`` is set."""
        ...


class SystemClock:
    """The real time; sleeps on the event loop's timer."""

    def __init__(self, now: Callable[[], datetime] = utcnow) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now()

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        if wake.is_set():
            return
        delay = MAX_SLEEP_SECONDS
        if when is not None:
            # The wall-clock due time becomes a delay on the loop's monotonic timer right
            # here, so no time spent before this call makes the sleep too long.
            delay = min(delay, (when - self._now()).total_seconds())
        loop = asyncio.get_running_loop()
        if delay > SPIN_SECONDS:
            # ``timeout_at`` is one ``call_at`` on this task: no helper task to schedule.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(loop.time() + delay - SPIN_SECONDS):
                    await wake.wait()
        # The loop's timer wakes on whole milliseconds (epoll rounds its timeout up), so
        # the last one is spent yielding to the loop: a fire is on time to microseconds.
        while when is not None and not wake.is_set():
            left = (when - self._now()).total_seconds()
            if left <= 0 or left > 2 * SPIN_SECONDS:
                return  # due, or woken early by MAX_SLEEP_SECONDS: the caller looks again
            await asyncio.sleep(0)


class ManualClock:
    """A clock that moves only when told (tests, benchmarks): ``advance`` wakes sleepers."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._sleepers: set[asyncio.Event] = set()

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta | float) -> datetime:
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self.set(self._now + step)

    def set(self, when: datetime) -> datetime:
        self._now = when
        for event in self._sleepers:
            event.set()
        return when

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        if when is not None and when <= self._now:
            return
        self._sleepers.add(wake)
        try:
            await wake.wait()
        finally:
            self._sleepers.discard(wake)
