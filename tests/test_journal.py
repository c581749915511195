"""The journal: group commit, and a run's first record folded into its next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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
