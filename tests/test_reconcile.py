"""A host process killed with SIGKILL mid-run: the next server on this host sees that
its process is gone, ends its lease and takes its runs over at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import Execution, ExecutionStatus, HistoryQuery, Trigger, new_id
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
    changes = engine.changes()
    execution = await engine.start("Demo/Sleeper")
    async for change in changes:  # announced only once the running record is committed
        if change.id == execution.id and change.pid is not None:
            break
    # Then past its only write: an orphan that writes to its dead host's pipe dies of it.
    async for chunk in engine.follow(execution.id):
        if b"sleeping" in chunk.data:
            break
    print(json.dumps({"id": execution.id, "pid": change.pid}), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"


def first_line_then_sigkill(script: str, *args: Path) -> dict[str, Any]:
    """Run ``script`` as a host process, read the JSON line it prints, then SIGKILL it."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True
    ) as host:
        try:
            assert host.stdout is not None
            return dict(json.loads(host.stdout.readline()))
        finally:
            os.kill(host.pid, signal.SIGKILL)
            host.wait()


async def test_a_sigkilled_hosts_run_is_re_adopted_by_the_next_server_at_once(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    write_job(apps, "Demo", "Sleeper", {"Name": "Sleeper"}, script_text=SLEEPER)
    started = first_line_then_sigkill(HOST, apps, tmp_path / "data")
    assert psutil.pid_exists(started["pid"])  # the orphan outlived its host

    # Its lease has not run out, but its process is gone from this host: the next
    # server ends that lease at once rather than waiting out the TTL, and re-adopts the run.
    async with engine_factory() as engine:
        record = await engine.status(started["id"])
        assert record.status is ExecutionStatus.RUNNING
        assert record.owner == engine.instance_id
        running = await engine.history(HistoryQuery(statuses=(ExecutionStatus.RUNNING,)))
        assert [e.id for e in running.items] == [started["id"]]
        await engine.stop(execution_id=started["id"])
        final = await asyncio.wait_for(engine.wait(started["id"]), 60)
    assert final.status is ExecutionStatus.STOPPED
    gone = not psutil.pid_exists(started["pid"]) or (
        psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert gone


async def test_a_run_whose_pid_was_never_recorded_is_found_by_its_marker(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    """The host died between the spawn and the ``running`` commit: the record has no pid,
    but the orphan carries its execution ID in its environment."""
    write_job(apps, "Demo", "Sleeper", {"Name": "Sleeper"})
    async with engine_factory() as engine:
        record = Execution(
            id=new_id(),
            job_id="Demo/Sleeper",
            status=ExecutionStatus.STARTING,
            trigger=Trigger.USER,
            user="alice",
        )
        await engine.journal.record(record)
    env = {**os.environ, "JOBHOST_EXECUTION_ID": record.id}
    sleeper = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
    with subprocess.Popen(
        [sys.executable, "-c", sleeper],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    ) as orphan:
        assert orphan.stdout is not None
        assert orphan.stdout.readline() == "ready\n"  # running, its environment in place
        try:
            async with engine_factory() as engine:
                lost = await engine.status(record.id)
            assert lost.status is ExecutionStatus.LOST
            assert lost.error == (
                "Its owner, the JobHost process that started it (recorded before leases), "
                "stopped during this run; its process could not be re-adopted and was ended"
            )
            assert orphan.wait(timeout=30) == -signal.SIGKILL
        finally:
            if orphan.poll() is None:
                orphan.kill()


# A host that hears its run end and dies before the end is committed (its store stalls on
# that write): the exit and the result file must still be there for the next server.
HEARS_THE_END_AND_DIES = """
import asyncio, json, sys, threading
from jobhost.config import Settings
from jobhost.engine import JobHost

async def main():
    settings = Settings(apps_roots=[sys.argv[1]], data_dir=sys.argv[2], watch=False,
                        scheduler_enabled=False)
    engine = await JobHost(settings).open()
    save_batch = engine.store.save_batch
    def stalled(executions, audit):
        if any(execution.status.terminal for execution in executions):
            print(json.dumps({"id": executions[0].id}), flush=True)
            threading.Event().wait()  # the commit of the end never lands
        return save_batch(executions, audit)
    engine.store.save_batch = stalled
    await engine.start("Demo/Answer")
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_run_whose_end_was_heard_but_not_committed_is_finished_by_the_next_server(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    script = (
        "import json, os\njson.dump({'answer': 42}, open(os.environ['JOBHOST_RESULT_PATH'], 'w'))\n"
    )
    write_job(apps, "Demo", "Answer", {"Name": "Answer"}, script_text=script)
    heard = first_line_then_sigkill(HEARS_THE_END_AND_DIES, apps, tmp_path / "data")
    async with engine_factory() as engine:
        final = await asyncio.wait_for(engine.wait(heard["id"]), 60)
    # Not lost: the runner kept the exit until a commit, and the result file was kept too.
    assert final.status is ExecutionStatus.SUCCEEDED
    assert final.exit_code == 0
    assert final.result == {"answer": 42}


async def test_a_server_on_another_host_never_takes_a_run_the_restarted_server_re_adopts(
    tmp_path: Path, apps: Path
) -> None:
    """The restarted server on the dead host makes the dead server's runs its own in the
    same transaction that ends its lease, so a server on another host that reconciles in
    between (here: exactly then) finds nothing to record lost."""
    write_job(apps, "Demo", "Sleeper", {"Name": "Sleeper"}, script_text=SLEEPER)
    data = tmp_path / "data"
    started = first_line_then_sigkill(HOST, apps, data)
    common = {"apps_roots": [apps], "watch": False, "scheduler_enabled": False}
    elsewhere = Settings(
        **common,
        data_dir=tmp_path / "other",
        database_url=f"sqlite:///{(data / 'jobhost.db').resolve()}",
        node_name="another-host",
    )
    seen_elsewhere: list[Execution] = []

    class Restarted(JobHost):
        async def reconcile(self) -> list[Execution]:
            # Between this server's lease (which ended the dead one's) and its own
            # reconciliation, a server on another host reconciles.
            if not seen_elsewhere:
                async with JobHost(elsewhere) as other:
                    seen_elsewhere.append(await other.status(started["id"]))
            return await super().reconcile()

    async with Restarted(Settings(**common, data_dir=data)) as engine:
        record = await engine.status(started["id"])
        assert (record.status, record.owner) == (ExecutionStatus.RUNNING, engine.instance_id)
        assert seen_elsewhere[0].status is ExecutionStatus.RUNNING
        await engine.stop(execution_id=started["id"])
        final = await asyncio.wait_for(engine.wait(started["id"]), 60)
    assert final.status is ExecutionStatus.STOPPED
