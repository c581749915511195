"""Due-run figures: how late run-at starts begin, and what a start through a
concurrency group costs.

``lateness``: 200 run-at starts due at one moment 2 s ahead, over the in-memory executor
of the tests and the real journal and SQLite store; each run's ``created_at`` of its
``starting`` record is compared with its ``due_at`` (the one timer wakes, and every run
is submitted through admission). ``group``: 1,000 starts of a job in a group of 50 (most
queue), CPU per run, beside the same starts with no group.
Run: ``python -m bench due``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import ExecutionStatus
from tests.fakeexecutor import FakeExecutor

DUE_RUNS = 200
GROUP_RUNS = 1000


def _job(root: Path, name: str, **extra: Any) -> None:
    folder = root / "apps" / "Bench" / "jobs" / name
    folder.mkdir(parents=True)
    definition = {"Name": name, "ScriptRelativePath": "run.sh", "max_concurrent": 0, **extra}
    (folder / "job.json").write_text(json.dumps(definition))
    (folder / "run.sh").write_text("true\n")


async def _finish_all(host: JobHost, fake: FakeExecutor) -> None:
    """End every run, the queued ones as they get their turn."""
    await host.supervisor.drain()
    while host.supervisor.live:
        for execution_id in list(fake.running):
            fake.exit(execution_id, 0)
        await host.supervisor.drain()


async def _measure(root: Path) -> dict[str, float]:
    _job(root, "Later")
    _job(root, "Grouped", concurrency_group="g")
    _job(root, "Free")
    settings = Settings(
        apps_roots=[root / "apps"],
        data_dir=root / "data",
        watch=False,
        scheduler_enabled=False,
        notifications_enabled=False,
        groups={"g": 50},
        max_queue=100_000,
    )
    settings.data_dir.mkdir(parents=True)
    figures: dict[str, float] = {}
    async with JobHost(settings, executor_factory=FakeExecutor) as host:
        fake = host.supervisor.executor
        assert isinstance(fake, FakeExecutor)
        changes = host.changes()
        due = host.clock() + timedelta(seconds=2)
        planned = {(await host.start("Bench/Later", at=due)).id for _ in range(DUE_RUNS)}
        late: list[float] = []
        async for execution in changes:
            if execution.id in planned and execution.status is ExecutionStatus.STARTING:
                late.append((host.clock() - due).total_seconds() * 1000)
                if len(late) == DUE_RUNS:
                    break
        changes.close()
        late.sort()
        figures["lateness_ms_p50"] = statistics.median(late)
        figures["lateness_ms_max"] = late[-1]
        await _finish_all(host, fake)
        for job, label in (("Bench/Free", "no_group"), ("Bench/Grouped", "group_of_50")):
            begun = time.process_time()
            for _ in range(GROUP_RUNS):
                await host.start(job)
            await _finish_all(host, fake)
            figures[f"{label}_cpu_ms_per_run"] = (time.process_time() - begun) * 1000 / GROUP_RUNS
    return figures


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(_measure(Path(tmp)))
    for name, value in figures.items():
        print(f"due     {name:<45}{value:>8.3f}")
    return figures


if __name__ == "__main__":
    run()
