"""Due runs: ``scheduled`` executions (a retry's next attempt, a run-at start) that start
when their ``due_at`` comes.

The row in the store is what makes a due run durable: it is written before it is added
here, and a server that starts later takes over the rows of a server that stopped (see
``JobHost._adopt``). In memory there is one timer, for the earliest due run, re-armed
whenever that changes: no polling loop. A timer is never set further than
``MAX_WAIT_SECONDS`` ahead, so a wall clock that jumps (a suspended VM, an NTP step) is
caught up with within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from jobhost.errors import BadRequest
from jobhost.models import Execution, ExecutionStatus, Trigger, iso, new_id

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 300.0

MAX_AHEAD_SECONDS = 366 * 24 * 3600.0

Fire = Callable[[Execution, Any], Awaitable[None]]


def check_due_time(at: datetime, now: datetime, *, test: bool = False) -> None:
    """A run-at time must be aware, in the future, and within a year; test runs run now."""
    if test:
        raise BadRequest("A test run starts at once; 'at' and 'delay_seconds' are for starts")
    if at.tzinfo is None or at.utcoffset() is None:
        raise BadRequest(
            f"at must carry a UTC offset (e.g. '2026-12-24T06:00:00+01:00'), got {at.isoformat()!r}"
        )
    try:
        ahead = (at - now).total_seconds()
        iso(at)  # representable in UTC (year 9999 at -05:00 is not)
    except OverflowError:
        raise BadRequest(f"at must be within a year from now, got {at.isoformat()!r}") from None
    if ahead <= 0:
        raise BadRequest(f"at must be in the future, got {iso(at)} (now is {iso(now)})")
    if ahead > MAX_AHEAD_SECONDS:
        raise BadRequest(f"at must be within a year from now, got {iso(at)}")


def planned_start(
    job_id: str,
    trigger: Trigger,
    user: str | None,
    variables: dict[str, Any],
    *,
    now: datetime,
    due_at: datetime,
    owner: str | None,
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Execution:
    """The ``scheduled`` row of a run-at start."""
    return Execution(
        id=new_id(),
        job_id=job_id,
        status=ExecutionStatus.SCHEDULED,
        trigger=trigger,
        user=user,
        variables=variables,
        created_at=now,
        due_at=due_at,
        owner=owner,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
    )


class DueRuns:
    """Scheduled runs by due time; ``fire(run, payload)`` is awaited for each when due."""

    def __init__(self, clock: Callable[[], datetime], fire: Fire) -> None:
        self._clock = clock
        self._fire = fire
        self._runs: dict[str, tuple[Execution, Any]] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def add(self, run: Execution, payload: Any = None) -> None:
        """Start ``run`` when its ``due_at`` comes (at once when that is past). ``payload``
        is what the caller keeps in memory for it (the resolved launch), or None."""
        if run.due_at is None:
            raise ValueError(f"execution {run.id} has no due_at")
        self._runs[run.id] = (run, payload)
        heapq.heappush(self._heap, (run.due_at, run.id))
        self._arm()

    def cancel(self, execution_id: str) -> Execution | None:
        """Take a run out before it is due; None when it is not waiting here."""
        entry = self._runs.pop(execution_id, None)
        self._arm()
        return None if entry is None else entry[0]

    def pending(self) -> list[Execution]:
        """The runs waiting here, earliest first."""
        return sorted(
            (run for run, _ in self._runs.values()), key=lambda r: r.due_at or r.created_at
        )

    def get(self, execution_id: str) -> Execution | None:
        entry = self._runs.get(execution_id)
        return None if entry is None else entry[0]

    def _arm(self) -> None:
        while self._heap and self._heap[0][1] not in self._runs:
            heapq.heappop(self._heap)  # cancelled or fired
        if self._closed or not self._heap:
            self._disarm()
            return
        due = self._heap[0][0]
        if self._timer is not None and self._armed_for == due:
            return
        self._disarm()
        delay = (due - self._clock()).total_seconds()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, min(delay, MAX_WAIT_SECONDS)), self._wake)
        self._armed_for = due

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._armed_for = None

    def _wake(self) -> None:
        self._timer = None
        self._armed_for = None
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            _, execution_id = heapq.heappop(self._heap)
            entry = self._runs.pop(execution_id, None)
            if entry is not None:
                task = asyncio.get_running_loop().create_task(self._run(*entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self._arm()

    async def _run(self, run: Execution, payload: Any) -> None:
        try:
            await self._fire(run, payload)
        except Exception:
            log.exception("starting due run %s of %s failed", run.id, run.job_id)

    async def aclose(self) -> None:
        """Stop the timer; runs still waiting stay ``scheduled`` in the store, for the next
        server to take over."""
        self._closed = True
        self._disarm()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
