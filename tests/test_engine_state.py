"""Engine state that stays consistent: restarts per run lineage, test restarts, changes()
subscribed at call time, failed writes visible to their own caller only, idempotency keys
bound to their request. The state machine runs against an in-memory executor (no
processes: each test takes milliseconds) over a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.errors import IdempotencyKeyReused
from jobhost.models import AuditEvent, Execution, ExecutionStatus, Trigger
from jobhost.store import SqlStore
from tests.fakeexecutor import FakeExecutor
from tests.jobfolders import write_job


class FailingStore(SqlStore):
    """The real store, but a batch holding a run of a job in ``fail_jobs`` fails."""

    fail_jobs: set[str]

    def save_batch(self, executions: Sequence[Execution], audit: Sequence[AuditEvent]) -> None:
        bad = [e.id for e in executions if e.job_id in self.fail_jobs]
        if bad:
            raise sa.exc.OperationalError("INSERT", {}, Exception(f"disk full for {bad}"))
        super().save_batch(executions, audit)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[JobHost]:
    apps = tmp_path / "apps"
    write_job(apps, "Demo", "Quick", {"Name": "Quick", "template_variables": {"Day": "day"}})
    write_job(apps, "Demo", "Other", {"Name": "Other"})
    write_job(
        apps,
        "Demo",
        "Daemon",
        {"Name": "Daemon", "max_concurrent": 2, "restart": "always"},
    )
    settings = Settings(
        apps_roots=[apps],
        data_dir=tmp_path / "data",
        watch=False,
        scheduler_enabled=False,
        notifications_enabled=False,
    )
    settings.data_dir.mkdir(parents=True)
    store = FailingStore(settings.db_url)
    store.fail_jobs = set()
    host = JobHost(settings, store=store, executor_factory=FakeExecutor)
    await host.open()
    try:
        yield host
    finally:
        await host.aclose()


def fake(engine: JobHost) -> FakeExecutor:
    executor = engine.supervisor.executor
    assert isinstance(executor, FakeExecutor)
    return executor


def failing(engine: JobHost) -> FailingStore:
    assert isinstance(engine.store, FailingStore)
    return engine.store


async def next_matching(changes: AsyncIterator[Execution], **wanted: Any) -> Execution:
    async def find() -> Execution:
        async for change in changes:
            if all(getattr(change, k) == v for k, v in wanted.items()):
                return change
        raise AssertionError("changes ended")

    return await asyncio.wait_for(find(), 30)


async def test_changes_subscribes_when_called_not_when_first_read(engine: JobHost) -> None:
    changes = engine.changes()
    execution = await engine.start("Demo/Other")
    await engine.supervisor.drain()  # the running transition is committed and announced
    running = await next_matching(changes, id=execution.id, status=ExecutionStatus.RUNNING)
    assert running.pid is not None


async def test_restart_of_a_test_run_is_a_test_run(engine: JobHost) -> None:
    first = await engine.test("Demo/Quick", {"Day": "mon"})
    again = await engine.restart(execution_id=first.id)
    assert again.test is True
    assert again.trigger is Trigger.RESTART
    assert fake(engine).specs[again.id].env["JOBHOST_TEST"] == "1"
    stopped = await engine.status(first.id)
    assert stopped.status is ExecutionStatus.STOPPED


async def test_two_crashing_runs_of_one_job_each_get_their_restart(engine: JobHost) -> None:
    changes = engine.changes()
    one = await engine.start("Demo/Daemon")
    two = await engine.start("Demo/Daemon")
    await engine.supervisor.drain()
    fake(engine).exit(one.id, 1)
    fake(engine).exit(two.id, 1)
    restarts = set()
    while len(restarts) < 2:
        change = await next_matching(changes, trigger=Trigger.RESTART)
        restarts.add(change.id)
    assert len(engine.supervisor.active_of("Demo/Daemon")) == 2
    await engine.stop(job_id="Demo/Daemon")


async def test_a_failed_first_write_leaves_no_run_in_memory(engine: JobHost) -> None:
    failing(engine).fail_jobs.add("Demo/Quick")
    with pytest.raises(sa.exc.OperationalError):
        await engine.start("Demo/Quick", {"Day": "mon"})
    assert engine.running() == []
    assert fake(engine).running == set()  # the process it had started was ended


async def test_one_bad_row_fails_only_its_own_caller(engine: JobHost) -> None:
    failing(engine).fail_jobs.add("Demo/Quick")
    bad, good = await asyncio.gather(
        engine.start("Demo/Quick", {"Day": "mon"}),
        engine.start("Demo/Other"),
        return_exceptions=True,
    )
    assert isinstance(bad, sa.exc.OperationalError)
    assert isinstance(good, Execution)
    stored = await engine.journal.call(engine.store.get_execution, good.id)
    assert stored is not None
    assert [e.id for e in engine.running()] == [good.id]


async def test_a_failed_final_write_does_not_leave_wait_hanging(engine: JobHost) -> None:
    execution = await engine.start("Demo/Quick", {"Day": "mon"})
    await engine.supervisor.drain()
    failing(engine).fail_jobs.add("Demo/Quick")
    waiting = asyncio.ensure_future(engine.wait(execution.id))
    fake(engine).exit(execution.id, 0)
    final = await asyncio.wait_for(waiting, 30)
    assert final.status is ExecutionStatus.SUCCEEDED
    assert engine.running() == []
    failing(engine).fail_jobs.clear()  # the background retry stores it once it can


async def test_an_idempotency_key_is_bound_to_its_request(engine: JobHost) -> None:
    first = await engine.start("Demo/Quick", {"Day": "mon"}, idempotency_key="k1")
    same = await engine.start("Demo/Quick", {"Day": "mon"}, idempotency_key="k1")
    assert same.id == first.id
    with pytest.raises(IdempotencyKeyReused) as other_job:
        await engine.start("Demo/Other", idempotency_key="k1")
    assert other_job.value.message.startswith(
        f"Idempotency-Key 'k1' was first used for another request (execution {first.id}); "
        "this one ('Demo/Other') differs in its job or variables"
    )
    assert other_job.value.status_code == 422
    with pytest.raises(IdempotencyKeyReused):
        await engine.start("Demo/Quick", {"Day": "tue"}, idempotency_key="k1")
