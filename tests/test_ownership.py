"""Ownership: every run has an owner instance with a lease, and nothing that opens the
store (the local CLI, a second engine) changes, stops or kills a run whose owner is alive."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import Execution, ExecutionStatus, Trigger, utcnow
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job
from tests.test_cli_local import cli_env, jobhost_argv

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"


def write_jobs(apps: Path) -> None:
    write_job(apps, "Demo", "Sleeper", {"Name": "Sleeper"}, script_text=SLEEPER)
    write_job(apps, "Demo", "Quick", {"Name": "Quick"}, script_text="print('quick')\n")


async def started_and_printing(engine: JobHost, job_id: str) -> Execution:
    changes = engine.changes()
    execution = await engine.start(job_id)
    async with changes:
        while execution.pid is None:
            change = await asyncio.wait_for(anext(changes), 60)
            if change.id == execution.id:
                execution = change
    async for chunk in engine.follow(execution.id):
        if b"sleeping" in chunk.data:
            break
    return execution


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_runs_record_their_owner_and_instances_are_listed(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    async with engine_factory() as engine:
        execution = await engine.start("Demo/Quick")
        final = await engine.wait(execution.id)
        found = await engine.instances()
    assert final.owner == engine.instance_id
    (me,) = [i for i in found if i.id == engine.instance_id]
    assert me.kind == "server"
    assert me.alive(utcnow())


@pytest.mark.timeout(900)  # nine CLI processes: slow on a busy machine
async def test_a_second_engine_and_the_local_cli_leave_a_live_owners_run_alone(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    data = tmp_path / "data"
    async with engine_factory() as owner:
        execution = await started_and_printing(owner, "Demo/Sleeper")
        assert execution.pid is not None
        async with engine_factory() as second:  # reconciles on open: must skip this run
            seen = await second.status(execution.id)
        assert seen.status is ExecutionStatus.RUNNING
        assert seen.owner == owner.instance_id

        where = ["--apps", str(apps), "--data-dir", str(data)]
        for verb in (
            ["history", "--json"],
            ["status", execution.id, "--json"],
            ["output", execution.id],
            ["catalog"],
            ["validate"],
            ["instances", "--json"],
            ["run", "Demo/Quick"],
            ["test", "Demo/Quick"],
            ["prune"],
        ):
            done = await asyncio.to_thread(  # the loop keeps the owner's heartbeat going
                subprocess.run,
                [*jobhost_argv(), *where, *verb],
                cwd=tmp_path,
                env=cli_env(tmp_path),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (verb, done.stdout, done.stderr)
            if verb[0] == "output":
                assert done.stdout == "sleeping\n"
            if verb[0] == "instances":
                listed = {item["id"]: item for item in json.loads(done.stdout)}
                assert listed[owner.instance_id]["alive"] is True
            stored = await owner.status(execution.id)
            assert stored.status is ExecutionStatus.RUNNING, verb
            assert alive(execution.pid), verb
        await owner.stop(execution_id=execution.id)
        await owner.wait(execution.id)


def later() -> datetime:
    return utcnow() + timedelta(minutes=5)


async def test_shutdown_leaves_runs_running_and_the_next_server_takes_them_over(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    async with engine_factory() as first:
        execution = await started_and_printing(first, "Demo/Sleeper")
    assert execution.pid is not None
    try:
        assert alive(execution.pid)  # the default shutdown_policy leaves it running
        async with engine_factory() as second:
            taken = await second.status(execution.id)
            assert taken.owner == second.instance_id
            if taken.status is ExecutionStatus.LOST:  # the executor could not re-adopt it
                assert taken.error is not None
                assert f"server {first.instance_id[:8]}" in taken.error
            else:
                assert taken.status is ExecutionStatus.RUNNING
                await second.stop(execution_id=execution.id)
                await second.wait(execution.id)
    finally:
        if alive(execution.pid):
            psutil.Process(execution.pid).kill()


async def test_shutdown_policy_stop_stops_the_runs(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    async with engine_factory(shutdown_policy="stop") as engine:
        execution = await started_and_printing(engine, "Demo/Sleeper")
    async with engine_factory() as after:
        stopped = await after.status(execution.id)
    assert stopped.status is ExecutionStatus.STOPPED


async def test_the_runs_of_an_owner_on_another_host_are_lost_after_its_lease(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    async with engine_factory() as engine:
        record = Execution(
            id="0" * 32,
            job_id="Demo/Sleeper",
            status=ExecutionStatus.RUNNING,
            trigger=Trigger.USER,
            user="alice",
            pid=4242,
            host="elsewhere",
            started_at=utcnow(),
            owner=engine.instance_id,
        )
        await engine.journal.record(record)
    settings = Settings(
        apps_roots=[apps], data_dir=tmp_path / "data", watch=False, scheduler_enabled=False
    )
    async with JobHost(settings, clock=later) as successor:
        lost = await successor.status(record.id)
    assert lost.status is ExecutionStatus.LOST
    assert lost.error is not None
    assert lost.error.startswith(f"Its owner, server {engine.instance_id[:8]} (pid ")
    assert lost.error.endswith(
        "stopped during this run on host elsewhere; this server on "
        f"{socket.gethostname()} cannot follow it there"
    )


async def test_a_local_schedule_change_is_refused_while_a_server_serves_the_store(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    write_jobs(apps)
    where = ["--apps", str(apps), "--data-dir", str(tmp_path / "data")]

    def cli(*verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*jobhost_argv(), *where, *verb],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )

    async with engine_factory() as server:
        change = ("schedule", "set", "Demo/Quick", "--cron", "0 4 * * *")
        refused = await asyncio.to_thread(cli, *change)
        shown = await asyncio.to_thread(cli, "schedule", "show", "Demo/Quick", "--json")
    assert refused.returncode == 6, (refused.stdout, refused.stderr)
    said = " ".join((refused.stdout + refused.stderr).split())
    assert f"A JobHost server serves this data dir (instance {server.instance_id[:8]}" in said
    assert "Change it through the server: jobhost --server URL schedule" in said
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["schedule"] is None  # nothing was changed
    # With no server alive the same change is made locally.
    done = await asyncio.to_thread(cli, *change)
    assert done.returncode == 0, done.stderr
