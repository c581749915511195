"""A host process killed with SIGKILL mid-run: on restart nothing stays ``running``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from jobhost.models import ExecutionStatus, HistoryQuery
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job

HOST = """
import asyncio, json, sys
from jobhost.config import Settings
from jobhost.engine import JobHost

async def main():
    settings = Settings(apps_roots=[sys.argv[1]], data_dir=sys.argv[2], watch=False,
                        scheduler_enabled=False)
    engine = await JobHost(settings).open()
    execution = await engine.start("Demo/Sleeper")
    async for chunk in engine.follow(execution.id):
        if b"sleeping" in chunk.data:
            break
    print(json.dumps({"id": execution.id, "pid": engine.supervisor.live[execution.id].pid}),
          flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_sigkilled_host_leaves_no_running_record_and_no_process(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    write_job(
        apps,
        "Demo",
        "Sleeper",
        {"Name": "Sleeper"},
        script_text="import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n",
    )
    with subprocess.Popen(
        [sys.executable, "-c", HOST, str(apps), str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
    ) as host:
        try:
            assert host.stdout is not None
            started = json.loads(host.stdout.readline())
        finally:
            os.kill(host.pid, signal.SIGKILL)
            host.wait()
    assert psutil.pid_exists(started["pid"])  # the orphan outlived its host

    async with engine_factory() as engine:
        record = await engine.status(started["id"])
        page = await engine.history(HistoryQuery(statuses=(ExecutionStatus.RUNNING,)))
    assert record.status is ExecutionStatus.LOST
    assert record.error == (
        f"JobHost restarted during this run; its process {started['pid']} was ended"
    )
    assert page.items == []
    gone = not psutil.pid_exists(started["pid"]) or (
        psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert gone
