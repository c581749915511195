"""The composition root: a start-up that fails part-way closes every part that had
started (no task, thread, runner connection or file handle left, the lease ended, the
store released) and leaves the runs it had adopted running for the next server."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from jobhost.config import Settings
from jobhost.errors import BadRequest
from jobhost.models import ExecutionStatus, utcnow
from jobhost.scheduler import Scheduler
from jobhost.store import SqlStore, instances
from tests.enginefixtures import EngineFactory
from tests.test_ownership import alive, started_and_printing, write_jobs


def open_files() -> dict[int, str]:
    """This process's file descriptors and what each points at."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
    return found


def threads() -> set[threading.Thread]:
    """Threads but the event loop's default pool (``asyncio.to_thread``, kept for reuse)."""
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


def snapshot() -> tuple[dict[int, str], set[threading.Thread]]:
    return open_files(), threads()


async def assert_nothing_left(
    before: tuple[dict[int, str], set[threading.Thread]], data: Path
) -> None:
    files, running = before
    left = {fd: target for fd, target in open_files().items() if files.get(fd) != target}
    assert left == {}
    assert {t.name for t in threads() - running} == set()
    assert not [t for t in open_files().values() if t.startswith(str(data))]


async def test_a_notifier_that_fails_at_start_closes_store_journal_and_lease(
    apps: Path, tmp_path: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    before = snapshot()
    broken = {"ops": {"type": "pager"}}
    with pytest.raises(BadRequest) as failed:
        async with engine_factory(notifications_enabled=True, channels=broken):
            pytest.fail("the engine opened with an invalid channel")
    assert "channels.ops.type must be 'email' or 'webhook'" in failed.value.message
    await assert_nothing_left(before, tmp_path / "data")
    store = SqlStore(Settings(apps_roots=[apps], data_dir=tmp_path / "data").db_url)
    try:
        (registered,) = instances.list_instances(store)
    finally:
        store.close()
    assert not registered.alive(utcnow())  # its lease was ended, not left to expire


async def test_a_scheduler_that_fails_at_start_closes_the_runner_connection_and_leaves_runs(
    apps: Path, tmp_path: Path, engine_factory: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jobs(apps)
    async with engine_factory() as first:  # leaves its run running when it closes
        execution = await started_and_printing(first, "Demo/Sleeper")
    assert execution.pid is not None
    before = snapshot()

    async def broken(self: Scheduler) -> None:
        raise OSError("the schedule store is unreadable")

    with monkeypatch.context() as patch:
        patch.setattr(Scheduler, "start", broken)
        with pytest.raises(OSError, match="unreadable"):
            # Reconciles first: adopts the run, over a connection to the runner.
            async with engine_factory(scheduler_enabled=True):
                pytest.fail("the engine opened with a broken scheduler")
    await assert_nothing_left(before, tmp_path / "data")
    assert alive(execution.pid)  # a failed start-up leaves runs to the next server
    async with engine_factory() as after:
        adopted = await after.status(execution.id)
        assert adopted.status is ExecutionStatus.RUNNING
        assert adopted.owner == after.instance_id
        await after.stop(execution_id=execution.id)
        final = await after.wait(execution.id)
    assert final.status is ExecutionStatus.STOPPED
