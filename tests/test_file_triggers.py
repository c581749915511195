"""``watch``: a file appearing in the app's folder starts the job with its path (a real
inotify watcher, a real run); files that do not match start nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jobhost.execution.subscriptions import Subscription
from jobhost.models import Execution, HistoryQuery
from tests.jobfolders import write_job
from tests.serverfixtures import make_settings, running_harness, write_apps

READS = (
    "import os\n"
    "path = os.environ['JOBHOST_VAR_File']\n"
    "print('imported', os.path.basename(path), open(path).read().strip(), flush=True)\n"
)


async def test_a_matching_file_starts_the_job_with_its_path(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_apps(apps)
    write_job(
        apps,
        "Files",
        "Import",
        {
            "Name": "Import",
            "watch": {"path": "incoming/*.csv", "debounce_seconds": 2},
            "template_variables": {"File": "the file that arrived"},
            "max_concurrent": 0,
        },
        script_text=READS,
    )
    incoming = apps / "Files" / "incoming"
    incoming.mkdir()
    async for h in running_harness(make_settings(tmp_path, scheduler_enabled=True)):
        assert h.engine.file_triggers is not None
        changes = h.engine.changes()

        async def finished(changes: Subscription) -> Execution:
            async for execution in changes:
                if execution.job_id == "Files/Import" and execution.status.terminal:
                    return execution
            raise AssertionError("the change stream ended")

        waiting = asyncio.ensure_future(finished(changes))
        await asyncio.sleep(0)
        # Written in two steps: the debounce makes it one run, after the last write.
        (incoming / "notes.txt").write_text("not a csv", encoding="utf-8")
        target = incoming / "orders.csv"
        with target.open("w", encoding="utf-8") as handle:
            handle.write("id,qty\n")
            handle.flush()
            handle.write("1,3\n")
        done = await asyncio.wait_for(waiting, timeout=90)
        assert done.status.value == "succeeded", done.error
        assert done.trigger.value == "watch"
        assert done.user == "watch"
        assert done.variables == {"File": os.path.realpath(target)}
        output = await h.engine.read_output(done.id)
        assert output.data.decode() == "imported orders.csv id,qty\n1,3\n"
        history = await h.engine.history(HistoryQuery(job_id="Files/Import"))
        assert [e.id for e in history.items] == [done.id]
        changes.close()


async def test_a_path_the_variable_refuses_is_a_rejected_run_in_history(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_apps(apps)
    write_job(
        apps,
        "Files",
        "Strict",
        {
            "Name": "Strict",
            "watch": {"path": "in/*.csv", "variable": "Path", "debounce_seconds": 0.5},
            "template_variables": {
                "Path": {"description": "a lower-case name", "pattern": ".*/[a-z]+[.]csv"}
            },
        },
        script_text=READS,
    )
    (apps / "Files" / "in").mkdir()
    async for h in running_harness(make_settings(tmp_path, scheduler_enabled=True)):
        changes = h.engine.changes()

        async def ended(changes: Subscription) -> Execution:
            async for execution in changes:
                if execution.job_id == "Files/Strict" and execution.status.terminal:
                    return execution
            raise AssertionError("the change stream ended")

        waiting = asyncio.ensure_future(ended(changes))
        await asyncio.sleep(0)
        (apps / "Files" / "in" / "Bad Name.csv").write_text("x", encoding="utf-8")
        refused = await asyncio.wait_for(waiting, timeout=90)
        assert refused.status.value == "rejected"
        assert refused.trigger.value == "watch"
        assert refused.error is not None
        assert "Path must match the pattern" in refused.error
        history = await h.engine.history(HistoryQuery(job_id="Files/Strict"))
        assert [e.status.value for e in history.items] == ["rejected"]
        changes.close()
