"""Several servers on one PostgreSQL schema: neither touches the other's runs; an owner
killed for good has its runs resolved by the survivor once its lease expires."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import ExecutionStatus
from tests.jobfolders import write_job

pytestmark = pytest.mark.postgres

OWNER = """
import asyncio, json, sys
from jobhost.config import Settings
from jobhost.engine import JobHost

async def main():
    settings = Settings(apps_roots=[sys.argv[1]], data_dir=sys.argv[2], database_url=sys.argv[3],
                        watch=False, scheduler_enabled=False, notifications_enabled=False,
                        lease_heartbeat_seconds=0.5, lease_ttl_seconds=3)
    engine = await JobHost(settings).open()
    changes = engine.changes()
    execution = await engine.start("Demo/Sleeper")
    async for change in changes:
        if change.id == execution.id and change.pid is not None:
            break
    async for chunk in engine.follow(execution.id):
        if b"sleeping" in chunk.data:
            break
    print(json.dumps({"id": execution.id, "pid": change.pid, "owner": engine.instance_id}),
          flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(600)
async def test_a_dead_owners_runs_are_resolved_after_its_lease_and_not_before(
    tmp_path: Path, apps: Path, postgres_url: str
) -> None:
    write_job(
        apps,
        "Demo",
        "Sleeper",
        {"Name": "Sleeper"},
        script_text="import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n",
    )
    with subprocess.Popen(
        [sys.executable, "-c", OWNER, str(apps), str(tmp_path / "a"), postgres_url],
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            started = json.loads(owner.stdout.readline())
            settings = Settings(
                apps_roots=[apps],
                data_dir=tmp_path / "b",
                database_url=postgres_url,
                watch=False,
                scheduler_enabled=False,
                notifications_enabled=False,
                lease_heartbeat_seconds=0.5,
                lease_ttl_seconds=3,
            )
            async with JobHost(settings) as survivor:
                # The owner is alive: the second server answers for its run, changes nothing.
                seen = await survivor.status(started["id"])
                assert seen.status is ExecutionStatus.RUNNING
                assert seen.owner == started["owner"]
                listed = {i.id for i in await survivor.instances()}
                assert {started["owner"], survivor.instance_id} <= listed
                assert not gone(started["pid"])

                changes = survivor.changes()
                os.kill(owner.pid, signal.SIGKILL)  # the owner is gone for good
                owner.wait()

                async def resolved() -> None:
                    async for change in changes:
                        if change.id == started["id"] and change.status.terminal:
                            return

                await asyncio.wait_for(resolved(), 120)
                final = await survivor.status(started["id"])
        finally:
            if owner.poll() is None:
                owner.kill()
    assert final.status is ExecutionStatus.LOST
    assert final.owner == survivor.instance_id
    assert final.error is not None
    assert final.error.startswith(f"Its owner, server {started['owner'][:8]} (pid ")
    assert gone(started["pid"])  # same host: what could not be re-adopted was ended
