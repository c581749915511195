"""Group commit of execution transitions and audit events.

Every transition must be durable before it is announced, but writing once per event
caps throughput at the disk's fsync rate. The journal collects what arrives while a
write is in flight and writes it as one batch: one transaction for many executions
(the newest state of each wins), so callers await durability without serialising on
each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jobhost.abc import Store
from jobhost.models import AuditEvent, Execution

log = logging.getLogger(__name__)
T = TypeVar("T")


class Journal:
    """The one write path to the store; ``record``/``audit`` return once the row is committed."""

    def __init__(self, store: Store, pool: ThreadPoolExecutor) -> None:
        self.store = store
        self._pool = pool
        self._executions: dict[str, Execution] = {}
        self._audit: list[AuditEvent] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0  # for metrics and benchmarks
        self.rows = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="jobhost-journal")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on the bounded database pool (reads use this too)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def record(self, execution: Execution, *audit: AuditEvent) -> None:
        """Make ``execution`` (and the audit events that explain it) durable in one
        transaction; returns after the batch holding them is committed."""
        self._executions[execution.id] = execution
        self._audit.extend(audit)
        await self._wait()

    def record_soon(self, execution: Execution) -> None:
        """Queue a write nobody waits for (progress updates): coalesced with the next batch."""
        self._executions[execution.id] = execution
        self._wake.set()

    async def audit(self, event: AuditEvent) -> None:
        self._audit.append(event)
        await self._wait()

    async def flush(self) -> None:
        if self._executions or self._audit:
            await self._wait()

    async def aclose(self) -> None:
        await self.flush()
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _wait(self) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("the journal is not running (JobHost.open() was not awaited)")
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not (self._executions or self._audit):
                if self._closing:
                    return
                continue
            executions = list(self._executions.values())
            audit = self._audit
            waiters = self._waiters
            self._executions, self._audit, self._waiters = {}, [], []
            try:
                await self.call(self._write, executions, audit)
            except Exception as exc:  # surface the failure to every waiter, keep serving
                log.exception("writing %d executions failed", len(executions))
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(executions) + len(audit)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _write(self, executions: list[Execution], audit: list[AuditEvent]) -> None:
        if executions:
            self.store.save_executions(executions)
        if audit:
            self.store.add_audit(audit)
