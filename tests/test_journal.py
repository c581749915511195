"""The journal: group commit, and a run's first record folded into its next one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobhost.execution.journal import Journal
from jobhost.models import AuditEvent, AuditQuery, Execution, ExecutionStatus, Trigger
from jobhost.store import SqlStore


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    store = SqlStore(f"sqlite:///{tmp_path / 'jobhost.db'}")
    store.migrate()
    pool = ThreadPoolExecutor(2)
    journal = Journal(store, pool)
    journal.start()
    try:
        yield journal
    finally:
        await journal.aclose()
        pool.shutdown()
        store.close()


def starting(execution_id: str) -> Execution:
    return Execution(
        id=execution_id,
        job_id="Demo/Job",
        status=ExecutionStatus.STARTING,
        trigger=Trigger.USER,
        user="alice",
        created_at=datetime.now(UTC),
    )


def started(execution: Execution) -> AuditEvent:
    return AuditEvent(action="job.start", user="alice", target=execution.job_id)


async def test_a_first_record_and_its_running_one_are_one_commit(journal: Journal) -> None:
    journal.fold_seconds = 60.0  # the spawn below may take long on a busy machine
    first = starting("fold1")
    written = journal.record(first, started(first), fold=True)
    await asyncio.sleep(0.01)  # the spawn: without folding, the first record commits now
    assert not written.done()
    running = first.evolve(status=ExecutionStatus.RUNNING, pid=4242)
    await asyncio.wait_for(asyncio.gather(written, journal.record(running)), 60)
    assert journal.batches == 1
    stored = journal.store.get_execution("fold1")
    assert stored is not None
    assert stored.status is ExecutionStatus.RUNNING
    assert stored.pid == 4242
    assert [e.action for e in journal.store.audit(AuditQuery()).items] == ["job.start"]


async def test_a_folded_record_nobody_follows_is_committed_all_the_same(
    journal: Journal,
) -> None:
    journal.fold_seconds = 0.05
    first = starting("fold2")
    await asyncio.wait_for(journal.record(first, started(first), fold=True), 60)
    stored = journal.store.get_execution("fold2")
    assert stored is not None
    assert stored.status is ExecutionStatus.STARTING
    assert len(journal.store.audit(AuditQuery()).items) == 1


async def test_flush_commits_folded_records_at_once(journal: Journal) -> None:
    journal.fold_seconds = 3600.0
    first = starting("fold3")
    written = journal.record(first, fold=True)
    await asyncio.wait_for(journal.flush(), 60)
    assert written.done()
    assert journal.store.get_execution("fold3") is not None


class HeldStore(SqlStore):
    """The real store, but each batch waits for ``release`` (the write in flight)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writing = threading.Event()
        self.release = threading.Event()

    def save_batch(self, executions: Sequence[Execution], audit: Sequence[AuditEvent]) -> None:
        self.writing.set()
        self.release.wait(60)
        super().save_batch(executions, audit)


async def test_flush_waits_for_the_batch_in_flight(tmp_path: Path) -> None:
    store = HeldStore(f"sqlite:///{tmp_path / 'jobhost.db'}")
    store.migrate()
    pool = ThreadPoolExecutor(2)
    journal = Journal(store, pool)
    journal.start()
    try:
        written = journal.record(starting("held"))
        assert await asyncio.to_thread(store.writing.wait, 60)  # the writer has the batch
        flushed = asyncio.ensure_future(journal.flush())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not flushed.done()  # it returned before the row was committed
        store.release.set()
        await asyncio.wait_for(flushed, 60)
        assert written.done()
        assert store.get_execution("held") is not None
    finally:
        store.release.set()
        await journal.aclose()
        pool.shutdown()
        store.close()


async def test_record_then_is_told_once_the_row_is_committed(journal: Journal) -> None:
    told: list[tuple[bool, BaseException | None]] = []
    row = starting("then1")

    def then(error: BaseException | None) -> None:
        told.append((journal.store.get_execution("then1") is not None, error))

    journal.record_then(row, then)
    await asyncio.wait_for(journal.flush(), 60)
    assert told == [(True, None)]


async def test_record_then_is_told_the_error_of_a_row_that_failed(journal: Journal) -> None:
    told: list[BaseException | None] = []
    bad = starting("then2").evolve(created_at=datetime(2026, 1, 1))  # naive: refused
    journal.record_then(bad, told.append)
    await asyncio.wait_for(journal.flush(), 60)
    assert len(told) == 1
    assert told[0] is not None
    assert journal.store.get_execution("then2") is None
