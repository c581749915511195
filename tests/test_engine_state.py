"""Engine state that stays consistent: admission (pure, and as the supervisor applies it),
exit mapping, restarts per run lineage, test restarts, changes()
subscribed at call time, failed writes visible to their own caller only, idempotency keys
bound to their request. The state machine runs against an in-memory executor (no
processes: each test takes milliseconds) over a real SQLite store."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobhost.catalog.definition import JobDefinition
from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.errors import Conflict, IdempotencyKeyReused
from jobhost.execution.admission import Admission, Occupancy, Policy, Queue, Reject, Start, admit
from jobhost.execution.exits import exit_status
from jobhost.execution.restart import RestartTimers
from jobhost.models import AuditEvent, Execution, ExecutionStatus, ExitInfo, Trigger
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
    write_job(apps, "Demo", "Other", {"Name": "Other", "timeout_seconds": 5})
    write_job(apps, "Demo", "Queued", {"Name": "Queued", "on_conflict": "queue"})
    write_job(apps, "Demo", "Replaced", {"Name": "Replaced", "on_conflict": "replace"})
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


# ----------------------------------------------------------------- admission (pure)
DAEMON = Policy(max_concurrent=2, on_conflict="queue")


def test_admission_starts_below_the_limit_and_ignores_it_for_test_runs() -> None:
    assert admit(Admission("J", DAEMON), Occupancy(active=("a",))) == Start()
    full = Occupancy(active=("a", "b"), max_queue=10)
    assert admit(Admission("J", DAEMON, test=True), full) == Start()
    assert admit(Admission("J", Policy(0, "reject")), full) == Start()  # 0: no limit


def test_admission_queues_behind_the_waiting_runs_at_the_next_position() -> None:
    occupancy = Occupancy(active=("a", "b"), queued=3, queued_total=7, max_queue=10)
    assert admit(Admission("J", DAEMON), occupancy) == Queue(position=4)


def test_admission_replace_queues_and_names_the_runs_to_stop() -> None:
    policy = Policy(max_concurrent=1, on_conflict="replace")
    occupancy = Occupancy(active=("a",), max_queue=10)
    assert admit(Admission("J", policy), occupancy) == Queue(position=1, replace=("a",))


def test_admission_rejects_with_the_reason_a_caller_sees() -> None:
    policy = Policy(max_concurrent=1, on_conflict="reject")
    decision = admit(Admission("Demo/Quick", policy), Occupancy(active=("e1",), max_queue=10))
    assert decision == Reject(
        "Job 'Demo/Quick' already has 1 active execution(s) (max_concurrent=1, "
        "on_conflict=reject): e1. Stop it first, or restart it.",
        running=("e1",),
    )
    full = admit(Admission("J", DAEMON), Occupancy(active=("a", "b"), queued_total=5, max_queue=5))
    assert isinstance(full, Reject)
    assert full.full
    assert full.reason == "The queue is full (5 waiting executions); try again later"


# ----------------------------------------------------------------- exit mapping (pure)
@pytest.mark.parametrize(
    ("info", "status"),
    [
        (ExitInfo(0, None), ExecutionStatus.SUCCEEDED),
        (ExitInfo(3, None), ExecutionStatus.FAILED),
        (ExitInfo(None, 9), ExecutionStatus.FAILED),
        (ExitInfo(None, 15, stopped=True), ExecutionStatus.STOPPED),
        (ExitInfo(None, 9, stopped=True, timed_out=True), ExecutionStatus.TIMED_OUT),
        (ExitInfo(None, None, error="Cannot start x", timed_out=True), ExecutionStatus.FAILED),
        (ExitInfo(None, None, error="worker gone", lost=True), ExecutionStatus.LOST),
    ],
)
def test_an_exit_maps_to_one_status_first_match_wins(info: ExitInfo, status: str) -> None:
    assert exit_status(info) is status


# ----------------------------------------------------------------- the state machine
async def test_a_queued_run_starts_when_a_slot_frees(engine: JobHost) -> None:
    one = await engine.start("Demo/Queued")
    two = await engine.start("Demo/Queued")
    assert two.status is ExecutionStatus.QUEUED
    await engine.supervisor.drain()
    assert two.id not in fake(engine).running
    fake(engine).exit(one.id, 0)
    assert await asyncio.wait_for(fake(engine).started.get(), 30) == one.id
    assert await asyncio.wait_for(fake(engine).started.get(), 30) == two.id
    await engine.supervisor.drain()
    assert (await engine.status(two.id)).status is ExecutionStatus.RUNNING


async def test_replace_stops_the_active_run_and_starts_the_new_one(engine: JobHost) -> None:
    old = await engine.start("Demo/Replaced")
    await engine.supervisor.drain()
    new = await engine.start("Demo/Replaced")
    assert (await engine.wait(old.id)).status is ExecutionStatus.STOPPED
    await engine.supervisor.drain()
    assert (await engine.status(new.id)).status is ExecutionStatus.RUNNING
    assert fake(engine).running == {new.id}


async def test_reject_refuses_with_409_naming_the_running_one(engine: JobHost) -> None:
    first = await engine.start("Demo/Quick", {"Day": "mon"})
    with pytest.raises(Conflict) as refused:
        await engine.start("Demo/Quick", {"Day": "tue"})
    assert refused.value.status_code == 409
    assert first.id in refused.value.message
    assert [e.id for e in engine.running()] == [first.id]


async def test_a_timeout_is_recorded_with_its_limit(engine: JobHost) -> None:
    execution = await engine.start("Demo/Other")
    await engine.supervisor.drain()
    fake(engine).end(execution.id, ExitInfo(None, 9, stopped=True, timed_out=True))
    final = await engine.wait(execution.id)
    assert final.status is ExecutionStatus.TIMED_OUT
    assert final.error == "Timed out after 5.0 s"
    assert final.exit_signal == 9


async def test_a_malformed_result_file_is_named_in_the_error(engine: JobHost) -> None:
    execution = await engine.start("Demo/Other")
    await engine.supervisor.drain()
    spec = fake(engine).specs[execution.id]
    assert spec.result_path is not None
    Path(spec.result_path).write_text("{not json")
    fake(engine).exit(execution.id, 0)
    final = await engine.wait(execution.id)
    assert final.status is ExecutionStatus.SUCCEEDED
    assert final.error is not None
    assert final.error.startswith("Result ignored: not valid JSON")
    assert not Path(spec.result_path).exists()


# ----------------------------------------------------------------- restart lineage
def crashed(execution_id: str) -> Execution:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return Execution(
        id=execution_id,
        job_id="Demo/Daemon",
        status=ExecutionStatus.FAILED,
        trigger=Trigger.USER,
        user=None,
        variables={},
        created_at=start,
        started_at=start,
        ended_at=start + timedelta(seconds=1),
        exit_code=1,
    )


async def test_the_brake_counts_quick_failures_per_lineage_not_per_job() -> None:
    definition = JobDefinition.model_validate(
        {"ScriptRelativePath": "d.sh", "restart": "always", "restart_burst": 3}
    )
    timers = RestartTimers(random.Random(1))
    now = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    fired: list[str] = []  # no await below: no timer can fire during the test

    def end(execution_id: str, lineage: str | None = None) -> bool:
        """True when the brake gave up on the run's lineage."""
        if lineage is not None:
            timers.link(execution_id, lineage)
        return timers.after_end(crashed(execution_id), definition, now, fired.append) is not None

    # Lineage "a" crashes three times quickly (a, its restart a2, then a3): braked at 3.
    assert not end("a")
    assert not end("a2", "a")
    # Lineage "b" of the same job crashes twice meanwhile: counted apart, never braked.
    assert not end("b")
    assert not end("b2", "b")
    assert end("a3", "a")
    assert timers.pending() == ["Demo/Daemon"]
    assert timers.cancel("Demo/Daemon") is True
    assert timers.pending() == []
    assert timers.cancel("Demo/Daemon") is False
    assert fired == []


async def test_a_stopped_run_is_not_restarted(engine: JobHost) -> None:
    execution = await engine.start("Demo/Daemon")
    await engine.supervisor.drain()
    await engine.stop(execution_id=execution.id)
    assert (await engine.wait(execution.id)).status is ExecutionStatus.STOPPED
    assert engine.supervisor.restart_pending() == []


async def test_output_written_while_a_follower_reads_wakes_it(
    engine: JobHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower that found nothing new must still hear of output that arrived during
    its read (on a thread): before, it waited for the next output, which a quiet run never
    writes, and an SSE client saw nothing until the run ended."""
    from jobhost.execution import following
    from jobhost.execution.launch import log_path

    execution = await engine.start("Demo/Other")
    await engine.supervisor.drain()
    path = log_path(engine.settings, execution.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    original = following.read_chunk
    calls = 0

    async def read_then_output_lands(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        chunk = await original(*args, **kwargs)
        if calls == 1:  # the job prints just after the read found nothing
            with path.open("ab") as log:
                log.write(b"ready\n")
            engine.supervisor.on_output(execution.id, 6)
        return chunk

    monkeypatch.setattr(following, "read_chunk", read_then_output_lands)
    stream = following.follow_output(engine.settings, engine.supervisor, execution.id, 0)
    first = await asyncio.wait_for(anext(stream), 30)
    assert first.data == b"ready\n"
    await stream.aclose()
    await engine.stop(execution_id=execution.id)


def test_a_host_that_was_not_opened_says_so(tmp_path: Path) -> None:
    settings = Settings(apps_roots=[tmp_path], data_dir=tmp_path / "data", watch=False)
    host = JobHost(settings, store=SqlStore(f"sqlite:///{tmp_path / 'jobhost.db'}"))
    for part in ("supervisor", "journal", "forwarding", "instance_id"):
        with pytest.raises(RuntimeError, match=r"JobHost.open\(\) was not awaited"):
            getattr(host, part)
    assert host.instance_id_or_none is None
    host.store.close()
