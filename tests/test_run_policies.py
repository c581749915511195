"""Run policies end to end on an engine: keyed concurrency, concurrency groups, retries,
run-at, chains. Real job folders, real processes, a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from jobhost.engine import JobHost
from jobhost.errors import Conflict
from jobhost.execution.subscriptions import Subscription
from jobhost.models import Execution, ExecutionStatus
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"
WAIT = 60.0


async def until(changes: Subscription, test: Callable[[Execution], bool]) -> Execution:
    """The first announced change that passes ``test`` (generous timeout: a busy machine)."""

    async def first() -> Execution:
        async for execution in changes:
            if test(execution):
                return execution
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(first(), WAIT)


async def stop_and_wait(engine: JobHost, execution_id: str) -> Execution:
    await engine.stop(execution_id=execution_id)
    return await asyncio.wait_for(engine.wait(execution_id), WAIT)


def backup_job(apps: Path, on_conflict: str) -> None:
    write_job(
        apps,
        "Sites",
        "Backup",
        {
            "Name": "Backup {{Site}}",
            "template_variables": {"Site": {"description": "site", "required": True}},
            "concurrency_key": "{{Site}}",
            "on_conflict": on_conflict,
            "stop_grace_seconds": 1,
        },
        script_text=SLEEPER,
    )


async def test_max_concurrent_applies_per_key_value(
    apps: Path, engine_factory: EngineFactory
) -> None:
    backup_job(apps, "queue")
    async with engine_factory() as engine:
        changes = engine.changes()
        a1 = await engine.start("Sites/Backup", {"Site": "a"})
        b1 = await engine.start("Sites/Backup", {"Site": "b"})  # another key: runs at once
        a2 = await engine.start("Sites/Backup", {"Site": "a"})
        a3 = await engine.start("Sites/Backup", {"Site": "a"})
        assert a1.status is ExecutionStatus.STARTING
        assert b1.status is ExecutionStatus.STARTING
        assert (a2.status, a2.queue_position) == (ExecutionStatus.QUEUED, 1)
        assert (a3.status, a3.queue_position) == (ExecutionStatus.QUEUED, 2)
        assert (await engine.status(a3.id)).to_api()["queue_position"] == 2

        assert (await stop_and_wait(engine, a1.id)).status is ExecutionStatus.STOPPED
        await until(changes, lambda e: e.id == a2.id and e.status is ExecutionStatus.STARTING)
        await until(changes, lambda e: e.id == a3.id and e.queue_position == 1)
        assert (await engine.status(b1.id)).status is ExecutionStatus.RUNNING
        for run in (a2, a3, b1):
            await stop_and_wait(engine, run.id)
        stored = await engine.journal.call(engine.store.get_execution, a3.id)
        assert stored is not None
        assert stored.status is ExecutionStatus.STOPPED


async def test_reject_names_the_key_that_is_busy(apps: Path, engine_factory: EngineFactory) -> None:
    backup_job(apps, "reject")
    async with engine_factory() as engine:
        a1 = await engine.start("Sites/Backup", {"Site": "a"})
        b1 = await engine.start("Sites/Backup", {"Site": "b"})
        with pytest.raises(Conflict, match=r"for concurrency_key 'a' \(max_concurrent=1"):
            await engine.start("Sites/Backup", {"Site": "a"})
        for run in (a1, b1):
            await stop_and_wait(engine, run.id)


async def test_a_group_is_shared_by_jobs_of_two_apps(
    apps: Path, engine_factory: EngineFactory
) -> None:
    for app in ("Shop", "Blog"):
        write_job(
            apps,
            app,
            "Reindex",
            {
                "Name": "Reindex",
                "max_concurrent": 0,
                "concurrency_group": "db-heavy",
                "stop_grace_seconds": 1,
            },
            script_text=SLEEPER,
        )
    async with engine_factory(groups={"db-heavy": 2}) as engine:
        changes = engine.changes()
        shop1 = await engine.start("Shop/Reindex")
        blog1 = await engine.start("Blog/Reindex")
        shop2 = await engine.start("Shop/Reindex")
        blog2 = await engine.start("Blog/Reindex")
        assert [r.status for r in (shop1, blog1)] == [ExecutionStatus.STARTING] * 2
        assert (shop2.status, shop2.queue_position) == (ExecutionStatus.QUEUED, 1)
        assert (blog2.status, blog2.queue_position) == (ExecutionStatus.QUEUED, 2)
        # Test runs take no share of the group.
        tested = await engine.test("Blog/Reindex")
        assert tested.status is ExecutionStatus.STARTING

        await stop_and_wait(engine, blog1.id)  # a Blog share frees: the first waiter goes
        await until(changes, lambda e: e.id == shop2.id and e.status is ExecutionStatus.STARTING)
        await until(changes, lambda e: e.id == blog2.id and e.queue_position == 1)
        assert (await engine.status(blog2.id)).status is ExecutionStatus.QUEUED
        # A queued run that is stopped never runs, and the one behind it moves up.
        assert (await stop_and_wait(engine, blog2.id)).started_at is None
        for run in (shop1, shop2, tested):
            await stop_and_wait(engine, run.id)
