"""Group commit of execution transitions and audit events.

Every transition must be durable before it is announced, but writing once per event
caps throughput at the disk's fsync rate. The journal collects what arrives while a
write is in flight and writes it as one batch: one transaction for many executions
(the newest state of each wins), so callers await durability without serialising on
each other.

The writes run on one dedicated thread fed under a lock, not on the shared database
pool: a transition then costs one thread wake-up and one loop callback (which settles
every waiter of the batch), instead of a hop through a journal task and an executor
future. Reads keep using the bounded pool (``call``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jobhost.abc import Store
from jobhost.models import AuditEvent, Execution
from jobhost.redact import mask_execution

log = logging.getLogger(__name__)
T = TypeVar("T")


class Journal:
    """The one write path to the store; ``record``/``audit`` resolve once the row is committed."""

    def __init__(self, store: Store, pool: ThreadPoolExecutor) -> None:
        self.store = store
        self._pool = pool
        self._lock = threading.Lock()
        self._pending = threading.Condition(self._lock)
        # Guarded by the lock: what the next batch will write, and who waits for it.
        self._executions: dict[str, Execution] = {}
        self._audit: list[AuditEvent] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._closing = False
        self._kick_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # redact: the clear secret values of a live run (set by the supervisor); every
        # stored text (error, result, progress message) is masked with them.
        self.secrets_of: Callable[[str], Sequence[str]] = lambda _execution_id: ()
        self.batches = 0  # for metrics and benchmarks
        self.rows = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="jobhost-journal", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on the bounded database pool (reads use this too)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def record(self, execution: Execution, *audit: AuditEvent) -> asyncio.Future[None]:
        """Make ``execution`` (and the audit events that explain it) durable in one
        transaction; the returned future resolves once the batch holding them is committed.

        A plain function rather than a coroutine, so that callers can chain the
        announcement to the commit without a task per transition."""
        return self._submit(execution, audit)

    def record_soon(self, execution: Execution) -> None:
        """Queue a write nobody waits for (progress updates): coalesced with the next batch."""
        execution = mask_execution(execution, self.secrets_of(execution.id))  # redact
        with self._lock:
            self._executions[execution.id] = execution
            self._pending.notify()

    def audit(self, event: AuditEvent) -> asyncio.Future[None]:
        return self._submit(None, (event,))

    async def flush(self) -> None:
        """Return once everything recorded so far is committed."""
        with self._lock:
            idle = not (self._executions or self._audit or self._waiters)
        if not idle:
            await self._submit(None, ())

    async def aclose(self) -> None:
        await self.flush()
        with self._lock:
            self._closing = True
            self._pending.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _submit(
        self, execution: Execution | None, audit: Sequence[AuditEvent]
    ) -> asyncio.Future[None]:
        loop = self._loop
        if loop is None or self._thread is None or self._closing:
            raise RuntimeError("the journal is not running (JobHost.open() was not awaited)")
        future = loop.create_future()
        if execution is not None:
            execution = mask_execution(execution, self.secrets_of(execution.id))  # redact
        with self._lock:
            if execution is not None:
                self._executions[execution.id] = execution
            self._audit.extend(audit)
            self._waiters.append(future)
        if not self._kick_scheduled:
            # Wake the writer once per loop iteration, not once per record: everything
            # recorded in this iteration then goes into one batch (waking it at once would
            # let it commit a batch of one while the loop is still producing the rest).
            self._kick_scheduled = True
            loop.call_soon(self._kick)
        return future

    def _kick(self) -> None:
        self._kick_scheduled = False
        with self._lock:
            self._pending.notify()

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._executions or self._audit or self._waiters or self._closing):
                    self._pending.wait()
                if self._closing and not (self._executions or self._audit or self._waiters):
                    return
                executions = list(self._executions.values())
                audit, waiters = self._audit, self._waiters
                self._executions, self._audit, self._waiters = {}, [], []
            error: BaseException | None = None
            try:
                self._write(executions, audit)
            except Exception as exc:  # surface the failure to every waiter, keep serving
                log.exception("writing %d executions failed", len(executions))
                error = exc
            else:
                if executions or audit:
                    self.batches += 1
                    self.rows += len(executions) + len(audit)
            self._settle_soon(waiters, error)

    def _write(self, executions: list[Execution], audit: list[AuditEvent]) -> None:
        self.store.save_batch(executions, audit)

    def _settle_soon(
        self, waiters: list[asyncio.Future[None]], error: BaseException | None
    ) -> None:
        if not waiters or self._loop is None:
            return
        # A closed loop raises RuntimeError: nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, waiters, error)


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():  # its caller was cancelled
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
