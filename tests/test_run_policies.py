"""Run policies end to end on an engine: keyed concurrency, concurrency groups, retries,
run-at, chains. Real job folders, real processes, a real SQLite store."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobhost.catalog.discovery import scan
from jobhost.engine import JobHost
from jobhost.errors import BadRequest, Conflict
from jobhost.execution.admission import Admission, Occupancy, Policy, Queue, Reject, Start, admit
from jobhost.execution.concurrency import Slot, Slots
from jobhost.execution.subscriptions import Subscription
from jobhost.models import (
    AuditQuery,
    Execution,
    ExecutionStatus,
    HistoryQuery,
    Principal,
    Trigger,
)
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"
WAIT = 60.0

# Past admission: starting, or already running when the spawn was quick.
ADMITTED = (ExecutionStatus.STARTING, ExecutionStatus.RUNNING)


async def until(changes: Subscription, test: Callable[[Execution], bool]) -> Execution:
    """The first announced change that passes ``test`` (generous timeout: a busy machine)."""

    async def first() -> Execution:
        async for execution in changes:
            if test(execution):
                return execution
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(first(), WAIT)


async def until_both(
    changes: Subscription, first: Callable[[Execution], bool], second: Callable[[Execution], bool]
) -> tuple[Execution, Execution]:
    """The first changes that pass ``first`` and ``second``, in whatever order they come."""
    found: dict[int, Execution] = {}

    async def both() -> tuple[Execution, Execution]:
        async for execution in changes:
            for index, test in enumerate((first, second)):
                if index not in found and test(execution):
                    found[index] = execution
            if len(found) == 2:
                return found[0], found[1]
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(both(), WAIT)


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
        assert a1.status in ADMITTED  # admitted (a fast spawn may be running already)
        assert b1.status in ADMITTED
        assert (a2.status, a2.queue_position) == (ExecutionStatus.QUEUED, 1)
        assert (a3.status, a3.queue_position) == (ExecutionStatus.QUEUED, 2)
        assert (await engine.status(a3.id)).to_api()["queue_position"] == 2

        assert (await stop_and_wait(engine, a1.id)).status is ExecutionStatus.STOPPED
        await until(changes, lambda e: e.id == a2.id and e.status in ADMITTED)
        await until(changes, lambda e: e.id == a3.id and e.queue_position == 1)
        assert (await engine.status(b1.id)).status.active  # untouched by the other key
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
        assert shop1.status in ADMITTED
        assert blog1.status in ADMITTED
        assert (shop2.status, shop2.queue_position) == (ExecutionStatus.QUEUED, 1)
        assert (blog2.status, blog2.queue_position) == (ExecutionStatus.QUEUED, 2)
        # Test runs take no share of the group.
        tested = await engine.test("Blog/Reindex")
        assert tested.status in ADMITTED

        await stop_and_wait(engine, blog1.id)  # a Blog share frees: the first waiter goes
        await until(changes, lambda e: e.id == shop2.id and e.status in ADMITTED)
        await until(changes, lambda e: e.id == blog2.id and e.queue_position == 1)
        assert (await engine.status(blog2.id)).status is ExecutionStatus.QUEUED
        # A queued run that is stopped never runs, and the one behind it moves up.
        assert (await stop_and_wait(engine, blog2.id)).started_at is None
        for run in (shop1, shop2, tested):
            await stop_and_wait(engine, run.id)


# A job that fails with exit code 75 until its Nth attempt (counted in its state dir).
FLAKY = """
import os, sys, time
path = os.path.join(os.environ["JOBHOST_STATE_DIR"], "count")
count = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(count))
print("attempt", count, flush=True)
if count == int(os.environ["JOBHOST_VAR_HangAt"]):
    time.sleep(600)
sys.exit(0 if count >= int(os.environ["JOBHOST_VAR_SucceedAt"]) else 75)
"""


def flaky_job(apps: Path, **retry: object) -> None:
    write_job(
        apps,
        "Demo",
        "Flaky",
        {
            "Name": "Flaky",
            "template_variables": {
                "SucceedAt": {"description": "n", "type": "integer", "default": 3},
                "HangAt": {"description": "n", "type": "integer", "default": 0},
            },
            "retry": {"attempts": 3, "backoff_seconds": 0.2, "on_exit_codes": [75], **retry},
            "stop_grace_seconds": 1,
        },
        script_text=FLAKY,
    )


async def attempts_of(engine: JobHost, first: str) -> list[Execution]:
    """Every attempt of the run ``first``, oldest first, as stored."""
    page = await engine.history(HistoryQuery(job_id="Demo/Flaky", limit=100))
    runs = [e for e in page.items if first in (e.id, e.retry_of)]
    return sorted(runs, key=lambda e: e.attempt)


async def final_attempt(engine: JobHost, changes: Subscription, first: str) -> Execution:
    """The attempt of ``first`` that ended without a next attempt."""
    return await until(
        changes,
        lambda e: first in (e.id, e.retry_of) and e.status.terminal and e.next_attempt is None,
    )


async def test_a_failed_run_is_retried_as_new_attempts(
    apps: Path, engine_factory: EngineFactory
) -> None:
    flaky_job(apps)
    async with engine_factory() as engine:
        changes = engine.changes()
        first = await engine.start("Demo/Flaky")
        last = await final_attempt(engine, changes, first.id)
        runs = await attempts_of(engine, first.id)
        audit = await engine.audit_log(AuditQuery(action="job.retry"))
    assert last.status is ExecutionStatus.SUCCEEDED
    assert [(r.attempt, r.status, r.trigger) for r in runs] == [
        (1, ExecutionStatus.FAILED, Trigger.USER),
        (2, ExecutionStatus.FAILED, Trigger.RETRY),
        (3, ExecutionStatus.SUCCEEDED, Trigger.RETRY),
    ]
    assert [r.retry_of for r in runs] == [None, first.id, first.id]
    assert [r.next_attempt for r in runs] == [runs[1].id, runs[2].id, None]
    assert all(r.due_at is not None for r in runs[1:])
    assert [(a.details["attempt"], a.details["after"]) for a in reversed(audit.items)] == [
        (2, runs[0].id),
        (3, runs[1].id),
    ]


async def test_attempts_stop_at_the_limit_and_at_other_exit_codes(
    apps: Path, engine_factory: EngineFactory
) -> None:
    flaky_job(apps, attempts=2)
    async with engine_factory() as engine:
        changes = engine.changes()
        first = await engine.start("Demo/Flaky", {"SucceedAt": 5})
        last = await final_attempt(engine, changes, first.id)
        assert (last.attempt, last.status, last.exit_code) == (2, ExecutionStatus.FAILED, 75)
    write_job(
        apps,
        "Demo",
        "Other",
        {"Name": "O", "retry": {"attempts": 3, "on_exit_codes": [75]}},
        script_text="import sys\nsys.exit(3)\n",
    )
    async with engine_factory() as engine:
        ended = await engine.wait((await engine.start("Demo/Other")).id)
        assert (ended.status, ended.exit_code, ended.next_attempt) == (
            ExecutionStatus.FAILED,
            3,
            None,
        )


async def test_a_stop_of_any_attempt_ends_the_retries(
    apps: Path, engine_factory: EngineFactory
) -> None:
    flaky_job(apps, backoff_seconds=0.2)
    async with engine_factory() as engine:
        changes = engine.changes()
        first = await engine.start("Demo/Flaky", {"HangAt": 2})
        second = await until(
            changes, lambda e: e.retry_of == first.id and e.status is ExecutionStatus.RUNNING
        )
        assert (await stop_and_wait(engine, second.id)).status is ExecutionStatus.STOPPED
        runs = await attempts_of(engine, first.id)
        assert [(r.attempt, r.status) for r in runs] == [
            (1, ExecutionStatus.FAILED),
            (2, ExecutionStatus.STOPPED),
        ]
        assert engine.scheduled() == []

    # A scheduled attempt is stopped before it is due: nothing more runs.
    flaky_job(apps, backoff_seconds=300, max_backoff_seconds=300)
    async with engine_factory() as engine:
        changes = engine.changes()
        first = await engine.start("Demo/Flaky", {"SucceedAt": 9})
        pending = await until(changes, lambda e: e.status is ExecutionStatus.SCHEDULED)
        assert [e.id for e in engine.scheduled()] == [pending.id]
        [stopped] = await engine.stop(execution_id=pending.id)
        assert stopped.status is ExecutionStatus.STOPPED
        assert stopped.error == "Cancelled before it was due; it never ran"
        assert engine.scheduled() == []


async def test_a_pending_retry_survives_a_restart(
    apps: Path, engine_factory: EngineFactory
) -> None:
    flaky_job(apps, attempts=2, backoff_seconds=2, max_backoff_seconds=2)
    async with engine_factory() as engine:
        changes = engine.changes()
        first = await engine.start("Demo/Flaky", {"SucceedAt": 2})
        pending = await until(changes, lambda e: e.status is ExecutionStatus.SCHEDULED)
    # The engine closed with the attempt still due: the next one takes it over.
    async with engine_factory() as engine:
        changes = engine.changes()
        assert [e.id for e in engine.scheduled()] == [pending.id]
        last = await final_attempt(engine, changes, first.id)
    assert (last.id, last.attempt, last.status) == (pending.id, 2, ExecutionStatus.SUCCEEDED)


async def test_a_run_at_start_is_scheduled_then_starts_when_due(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_job(apps, "Demo", "Once", {"Name": "Once"}, script_text="print('once')\n")
    async with engine_factory() as engine:
        changes = engine.changes()
        due = engine.clock() + timedelta(seconds=0.5)
        planned = await engine.start("Demo/Once", at=due)
        assert (planned.status, planned.due_at) == (ExecutionStatus.SCHEDULED, due)
        stored = await engine.journal.call(engine.store.get_execution, planned.id)
        assert stored is not None
        assert stored.status is ExecutionStatus.SCHEDULED  # durable before it is due
        ran = await until(changes, lambda e: e.id == planned.id and e.status.terminal)
    assert ran.status is ExecutionStatus.SUCCEEDED
    assert ran.started_at is not None
    assert ran.started_at >= due


async def test_a_run_at_start_is_checked_now_and_can_be_cancelled(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_job(apps, "Demo", "Once", {"Name": "Once"}, script_text="print('once')\n")
    async with engine_factory() as engine:
        now = engine.clock()
        with pytest.raises(BadRequest, match="at must be in the future"):
            await engine.start("Demo/Once", at=now - timedelta(seconds=5))
        with pytest.raises(BadRequest, match="at must carry a UTC offset"):
            await engine.start("Demo/Once", at=datetime(2030, 1, 1, 6, 0))
        with pytest.raises(BadRequest, match="at must be within a year"):
            await engine.start("Demo/Once", at=now + timedelta(days=400))
        edge = datetime.fromisoformat("9999-12-31T23:00:00-05:00")  # past year 9999 in UTC
        with pytest.raises(BadRequest, match="at must be within a year"):
            await engine.start("Demo/Once", at=edge)
        planned = await engine.start("Demo/Once", at=now + timedelta(hours=1))
        assert [e.id for e in engine.scheduled()] == [planned.id]
        [stopped] = await engine.stop(execution_id=planned.id)
        assert (stopped.status, stopped.started_at) == (ExecutionStatus.STOPPED, None)
        assert engine.scheduled() == []
        with pytest.raises(Conflict, match="has already ended"):
            await engine.stop(execution_id=planned.id)


async def test_a_run_at_start_obeys_concurrency_when_it_fires(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_job(apps, "Demo", "Busy", {"Name": "Busy", "stop_grace_seconds": 1}, script_text=SLEEPER)
    async with engine_factory() as engine:
        changes = engine.changes()
        running = await engine.start("Demo/Busy")
        planned = await engine.start("Demo/Busy", at=engine.clock() + timedelta(seconds=0.3))
        refused = await until(changes, lambda e: e.id == planned.id and e.status.terminal)
        assert refused.status is ExecutionStatus.REJECTED
        assert refused.error is not None
        assert refused.error.startswith("Not started when due: Job 'Demo/Busy' already has 1")
        await stop_and_wait(engine, running.id)


EXTRACT = """
import json, os, sys
with open(os.environ["JOBHOST_RESULT_PATH"], "w") as fh:
    json.dump({"path": "/data/" + os.environ["JOBHOST_VAR_Period"] + ".csv", "rows": 3}, fh)
sys.exit(int(os.environ["JOBHOST_VAR_Code"]))
"""
LOAD = """
import json, os
keys = ("Path", "Period", "Rows")
with open(os.environ["JOBHOST_RESULT_PATH"], "w") as fh:
    json.dump({k: os.environ["JOBHOST_VAR_" + k] for k in keys}, fh)
"""
ALICE = Principal("alice", frozenset({"operator"}))


def chained_jobs(apps: Path, load_roles: list[str] | None = None) -> None:
    link = {
        "job": "Reports/Load",
        "variables": {"Path": "{{result.path}}", "Period": "{{Period}}", "Rows": "{{result.rows}}"},
    }
    write_job(
        apps,
        "Reports",
        "Extract",
        {
            "Name": "Extract",
            "template_variables": {
                "Period": {"description": "p", "required": True},
                "Code": {"description": "exit code", "type": "integer", "default": 0},
            },
            "on_success": [link],
            "on_failure": [{"job": "Reports/Cleanup"}],
        },
        script_text=EXTRACT,
    )
    write_job(
        apps,
        "Reports",
        "Load",
        {
            "Name": "Load",
            "template_variables": {
                "Path": {"description": "file"},
                "Period": {"description": "p"},
                "Rows": {"description": "n", "type": "integer"},
            },
            "roles_start": load_roles or [],
        },
        script_text=LOAD,
    )
    write_job(apps, "Reports", "Cleanup", {"Name": "Cleanup"}, script_text="print('clean')\n")


async def test_a_chain_passes_variables_and_result_values_on(
    apps: Path, engine_factory: EngineFactory
) -> None:
    chained_jobs(apps)
    async with engine_factory() as engine:
        changes = engine.changes()
        extract = await engine.start("Reports/Extract", {"Period": "2026-11"}, ALICE)
        load, linked = await until_both(
            changes,
            lambda e: e.triggered_by == extract.id and e.status.terminal,
            lambda e: e.id == extract.id and bool(e.chained),
        )
        stored = await engine.status(extract.id)
    assert (load.job_id, load.status, load.trigger) == (
        "Reports/Load",
        ExecutionStatus.SUCCEEDED,
        Trigger.CHAIN,
    )
    assert load.user == "alice"  # as the user who started the first run
    assert load.result == {"Path": "/data/2026-11.csv", "Period": "2026-11", "Rows": "3"}
    assert linked.chained == (load.id,)
    assert stored.chained == (load.id,)
    assert stored.to_api()["chained"] == [load.id]
    assert load.to_api()["triggered_by"] == extract.id


async def test_on_failure_and_the_first_users_permissions(
    apps: Path, engine_factory: EngineFactory
) -> None:
    chained_jobs(apps, load_roles=["loaders"])
    async with engine_factory() as engine:
        changes = engine.changes()
        failed = await engine.start("Reports/Extract", {"Period": "x", "Code": 2}, ALICE)
        cleanup = await until(changes, lambda e: e.triggered_by == failed.id and e.status.terminal)
        assert (cleanup.job_id, cleanup.status) == ("Reports/Cleanup", ExecutionStatus.SUCCEEDED)

        # Alice may start Extract but not Load: the chain acts as Alice, so Load is refused.
        extract = await engine.start("Reports/Extract", {"Period": "y"}, ALICE)
        refused = await until(changes, lambda e: e.triggered_by == extract.id and e.status.terminal)
    assert refused.job_id == "Reports/Load"
    assert refused.status is ExecutionStatus.REJECTED
    assert refused.error == (
        f"Not started by on_success[0] of Reports/Extract ({extract.id}): 'alice' may not "
        "start 'Reports/Load': requires one of the roles loaders"
    )


def test_chain_cycles_and_secret_references_are_refused(apps: Path) -> None:
    write_job(apps, "A", "One", {"Name": "1", "on_success": [{"job": "A/Two"}]})
    write_job(apps, "A", "Two", {"Name": "2", "on_failure": [{"job": "A/One"}]})
    write_job(apps, "A", "Three", {"Name": "3", "on_success": [{"job": "A/One"}]})
    write_job(
        apps,
        "A",
        "Secret",
        {
            "Name": "s",
            "template_variables": {"Key": {"description": "k", "secret": True}},
            "on_success": [{"job": "A/Three", "variables": {"K": "{{Key}}"}}],
        },
    )
    catalog = scan([apps])
    assert catalog["A/One"].errors == (
        f"{apps.name}/A/jobs/One/job.json: on_success/on_failure form a cycle: "
        "A/One → A/Two → A/One; a chain must end",
    )
    assert not catalog["A/Two"].valid
    assert catalog["A/Three"].valid  # leads into the cycle, but is not on it
    assert catalog["A/Secret"].errors == (
        f"{apps.name}/A/jobs/Secret/job.json: on_success[0].variables.K refers to the secret "
        "variable {{Key}}; secret values are not kept, so a chain cannot pass them on",
    )


# ------------------------------------------------------------------ admission, pure


def test_admission_counts_per_key_and_queues_on_a_full_group() -> None:
    reject = Policy(1, "reject")
    request = Admission("Sites/Backup", reject, key="a", group="db-heavy")
    busy = admit(request, Occupancy(active=("r1",), max_queue=10))
    assert isinstance(busy, Reject)
    assert busy.reason.startswith(
        "Job 'Sites/Backup' already has 1 active execution(s) for concurrency_key 'a' "
        "(max_concurrent=1, on_conflict=reject): r1."
    )
    # The job's own limit is free, the group's is not: it waits, whatever on_conflict says.
    group_full = Occupancy(max_queue=10, group_active=2, group_limit=2)
    assert admit(request, group_full) == Queue(position=1)
    assert admit(request, Occupancy(max_queue=10, group_active=1, group_limit=2)) == Start()
    unlimited_job = Admission("Shop/Reindex", Policy(0, "reject"), group="db-heavy")
    assert admit(unlimited_job, group_full) == Queue(position=1)
    assert admit(dataclasses.replace(unlimited_job, test=True), group_full) == Start()


def test_slots_admit_waiters_in_order_as_holders_leave() -> None:
    slots = Slots(lambda: {"g": 1})
    a, b = Slot("J", "a", "g", 1), Slot("K", None, "g", 0)
    slots.hold("r1", a)
    slots.wait("r2", a)
    slots.wait("r3", b)
    assert list(slots.positions()) == [("r2", 1), ("r3", 2)]  # both wait for group g
    assert slots.ready() == []
    assert slots.release("r1") is True
    assert slots.ready() == ["r2"]  # the first in line takes the group's one share
    assert list(slots.positions()) == [("r3", 1)]
    assert slots.release("r3") is False  # it never held one
    assert slots.waiting() == 0


async def test_a_run_lost_with_its_server_is_retried(
    apps: Path, engine_factory: EngineFactory
) -> None:
    flaky_job(apps, on=["lost"])
    async with engine_factory() as engine:
        # A run recorded running by a server that died (no such instance any more) on this
        # host, whose process is gone: reconciliation records it lost, and retries it.
        orphan = Execution(
            id="0" * 32,
            job_id="Demo/Flaky",
            status=ExecutionStatus.RUNNING,
            trigger=Trigger.USER,
            user="alice",
            variables={"SucceedAt": 1, "HangAt": 0},
            owner="dead-instance",
            host=socket.gethostname(),
            created_at=engine.clock(),
        )
        await engine.journal.call(engine.store.save_executions, [orphan])
        changes = engine.changes()
        [lost] = await engine.reconcile()
        assert lost.status is ExecutionStatus.LOST
        assert lost.next_attempt is not None
        retried = await until(changes, lambda e: e.id == lost.next_attempt and e.status.terminal)
    assert (retried.status, retried.attempt, retried.retry_of) == (
        ExecutionStatus.SUCCEEDED,
        2,
        orphan.id,
    )
