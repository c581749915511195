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

A run's first record (``starting``) may be *folded* (``record(..., fold=True)``): it waits,
for at most ``FOLD_SECONDS``, for the run's next record (``running`` with the pid, which
a local spawn reports within a millisecond or two) and goes in the same commit, so a
start costs one commit instead of two. Its caller's future resolves with that commit. The
process may exist before either is durable, as it already could while the first commit
was in flight: a run the runner holds that no store knows is ended at reconciliation.

A record whose announcement is all that follows its commit (``record_then``) takes a plain
callback instead of a future: it is called in the loop callback that settles the batch,
so the announcement is neither a future with its callbacks nor a loop iteration later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from jobhost.abc import Store
from jobhost.models import AuditEvent, Execution
from jobhost.redact import mask_execution

log = logging.getLogger(__name__)
T = TypeVar("T")
FOLD_SECONDS = 0.005  # how long a folded first record waits for the next one
# Folded at once, at most: in a burst the later spawns wait behind the earlier ones and
# would not report within FOLD_SECONDS, so their records go straight to the next batch.
FOLD_MAX = 4


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
        # Each waiter with what it asked to write (an execution ID and audit events), so a
        # failed batch can be retried row by row and fail only the caller of the bad row.
        self._waiters: list[_Waiter] = []
        self._closing = False
        self._kick_scheduled = False
        # Folded first records (loop thread only): execution ID → the row and its waiter.
        self._folded: dict[str, tuple[Execution, _Waiter]] = {}
        self._fold_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # redact: the clear secret values of a live run (set by the supervisor); every
        # stored text (error, result, progress message) is masked with them.
        self.secrets_of: Callable[[str], Sequence[str]] = lambda _execution_id: ()
        self.fold_seconds = FOLD_SECONDS  # 0: never fold
        self.batches = 0  # for metrics and benchmarks
        self.rows = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="jobhost-journal", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether records are taken (between ``start`` and ``aclose``)."""
        return self._thread is not None and not self._closing

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on the bounded database pool (reads use this too)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def record(
        self, execution: Execution, *audit: AuditEvent, fold: bool = False
    ) -> asyncio.Future[None]:
        """Make ``execution`` (and the audit events that explain it) durable in one
        transaction; the returned future resolves once the batch holding them is committed.

        ``fold``: a run's first record, which may wait for its next one (module docstring).

        A plain function rather than a coroutine, so that callers can chain the
        announcement to the commit without a task per transition."""
        if (
            fold
            and self.fold_seconds > 0
            and len(self._folded) < FOLD_MAX
            and self._loop is not None
            and not self._closing
        ):
            return self._fold(execution, audit)
        return self._submit(execution, audit)

    def record_then(
        self, execution: Execution, then: Callable[[BaseException | None], None]
    ) -> None:
        """As ``record``, but ``then`` is called (on the loop) once the batch is committed,
        with None, or with the error that kept the row from being stored."""
        self._enqueue(execution, (), _Waiter(None, execution.id, (), then))

    def record_soon(self, execution: Execution) -> None:
        """Queue a write nobody waits for (progress updates): coalesced with the next batch."""
        execution = mask_execution(execution, self.secrets_of(execution.id))  # redact
        folded = self._folded.pop(execution.id, None) if self._folded else None
        with self._lock:
            if folded is not None:
                self._unfold(folded[1])
            self._executions[execution.id] = execution
            self._pending.notify()

    def _fold(self, execution: Execution, audit: Sequence[AuditEvent]) -> asyncio.Future[None]:
        loop = self._loop
        assert loop is not None
        execution = mask_execution(execution, self.secrets_of(execution.id))  # redact
        future = loop.create_future()
        self._folded[execution.id] = (execution, _Waiter(future, execution.id, tuple(audit)))
        if self._fold_timer is None:
            self._fold_timer = loop.call_later(self.fold_seconds, self._unfold_all)
        return future

    def _unfold(self, waiter: _Waiter) -> None:
        """Queue a folded record's audit and waiter (under the lock); its row is superseded
        by the newer record of the same run being queued with it."""
        self._audit.extend(waiter.audit)
        self._waiters.append(waiter)

    def _unfold_all(self) -> None:
        """Time is up: folded records go in the next batch as they are."""
        self._fold_timer = None
        folded, self._folded = self._folded, {}
        if not folded:
            return
        with self._lock:
            for execution, waiter in folded.values():
                self._executions[execution.id] = execution
                self._unfold(waiter)
            self._pending.notify()

    def audit(self, event: AuditEvent) -> asyncio.Future[None]:
        return self._submit(None, (event,))

    async def flush(self) -> None:
        """Return once everything recorded so far is committed."""
        if self._fold_timer is not None:
            self._fold_timer.cancel()
            self._unfold_all()
        if self.running:
            # Settled after every batch before it, the one in flight included.
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
        if loop is None:
            raise RuntimeError("the journal is not running (JobHost.open() was not awaited)")
        future = loop.create_future()
        audit = tuple(audit)
        self._enqueue(execution, audit, _Waiter(future, execution.id if execution else None, audit))
        return future

    def _enqueue(
        self, execution: Execution | None, audit: Sequence[AuditEvent], waiter: _Waiter
    ) -> None:
        loop = self._loop
        if loop is None or self._thread is None or self._closing:
            raise RuntimeError("the journal is not running (JobHost.open() was not awaited)")
        folded = None
        if execution is not None:
            execution = mask_execution(execution, self.secrets_of(execution.id))  # redact
            if self._folded:
                folded = self._folded.pop(execution.id, None)
        with self._lock:
            if folded is not None:  # the run's first record: this newer one replaces it
                self._unfold(folded[1])
            if execution is not None:
                self._executions[execution.id] = execution
            self._audit.extend(audit)
            self._waiters.append(waiter)
        if not self._kick_scheduled:
            # Wake the writer once per loop iteration, not once per record: everything
            # recorded in this iteration then goes into one batch (waking it at once would
            # let it commit a batch of one while the loop is still producing the rest).
            self._kick_scheduled = True
            loop.call_soon(self._kick)

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
            errors: dict[int, BaseException] = {}
            try:
                self._write(executions, audit)
            except Exception:
                if len(executions) + len(audit) <= 1:
                    log.exception("writing %d executions failed", len(executions))
                errors = self._write_one_by_one(executions, waiters)
            if executions or audit:
                self.batches += 1
                self.rows += len(executions) + len(audit)
            self._settle_soon(waiters, errors)

    def _write(self, executions: list[Execution], audit: list[AuditEvent]) -> None:
        self.store.save_batch(executions, audit)

    def _write_one_by_one(
        self, executions: list[Execution], waiters: list[_Waiter]
    ) -> dict[int, BaseException]:
        """After a failed batch: each caller's rows in a transaction of their own, so a bad
        row fails its own caller only. Returns the failures by waiter index."""
        by_id = {e.id: e for e in executions}
        failed: dict[str, BaseException] = {}
        written: set[str] = set()
        errors: dict[int, BaseException] = {}
        for index, waiter in enumerate(waiters):
            own = by_id.get(waiter.execution_id or "")
            if own is not None and own.id in failed:
                errors[index] = failed[own.id]
                continue
            rows = [own] if own is not None and own.id not in written else []
            if not rows and not waiter.audit:
                continue
            try:
                self._write(rows, list(waiter.audit))
            except Exception as exc:
                log.exception("writing execution %s failed", waiter.execution_id)
                errors[index] = exc
                if own is not None:
                    failed[own.id] = exc
            else:
                written.update(e.id for e in rows)
        for execution in executions:  # rows nobody waits for (record_soon)
            if execution.id not in written and execution.id not in failed:
                try:
                    self._write([execution], [])
                except Exception:
                    log.exception("writing execution %s failed", execution.id)
        return errors

    def _settle_soon(self, waiters: list[_Waiter], errors: dict[int, BaseException]) -> None:
        if not waiters or self._loop is None:
            return
        # A closed loop raises RuntimeError: nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, waiters, errors)


@dataclass(frozen=True, slots=True)
class _Waiter:
    """Who waits for a record: a future (``record``) or a callback (``record_then``)."""

    future: asyncio.Future[None] | None
    execution_id: str | None
    audit: tuple[AuditEvent, ...]
    then: Callable[[BaseException | None], None] | None = None


def _settle(waiters: list[_Waiter], errors: dict[int, BaseException]) -> None:
    for index, waiter in enumerate(waiters):
        error = errors.get(index)
        future = waiter.future
        if future is None:
            assert waiter.then is not None
            try:
                waiter.then(error)
            except Exception:  # one caller's bookkeeping must not keep the others waiting
                log.exception("after recording %s", waiter.execution_id)
            continue
        if future.done():  # its caller was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
