"""State-machine figures: the host's own CPU per run, without processes.

1,000 starts → running → exit over the in-memory executor of the tests, through the real
journal and SQLite store: what the engine and supervisor cost per run, apart from the
runner and the kernel (``bench engine`` measures the whole path). Three rounds.
Run: ``python -m bench state``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from jobhost.config import Settings
from jobhost.engine import JobHost
from tests.fakeexecutor import FakeExecutor

RUNS = 1000
ROUNDS = 3


async def _measure(root: Path) -> list[float]:
    folder = root / "apps" / "Bench" / "jobs" / "Fake"
    folder.mkdir(parents=True)
    definition = {"Name": "Fake", "ScriptRelativePath": "run.sh", "max_concurrent": 0}
    (folder / "job.json").write_text(json.dumps(definition))
    (folder / "run.sh").write_text("true\n")
    settings = Settings(
        apps_roots=[root / "apps"],
        data_dir=root / "data",
        watch=False,
        scheduler_enabled=False,
        notifications_enabled=False,
    )
    settings.data_dir.mkdir(parents=True)
    cpu_ms: list[float] = []
    async with JobHost(settings, executor_factory=FakeExecutor) as host:
        fake = host.supervisor.executor
        assert isinstance(fake, FakeExecutor)
        for _ in range(ROUNDS):
            begun = time.process_time()
            ids = [(await host.start("Bench/Fake")).id for _ in range(RUNS)]
            await host.supervisor.drain()
            for execution_id in ids:
                fake.exit(execution_id, 0)
            for execution_id in ids:
                await host.supervisor.wait(execution_id)
            await host.supervisor.drain()
            cpu_ms.append((time.process_time() - begun) * 1000 / RUNS)
    return cpu_ms


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cpu_ms = asyncio.run(_measure(Path(tmp)))
    figures = {
        "host_cpu_ms_per_run_median": statistics.median(cpu_ms),
        "host_cpu_ms_per_run_min": min(cpu_ms),
    }
    for name, value in figures.items():
        print(f"state   {name:<45}{value:>8.3f}")
    return figures


if __name__ == "__main__":
    run()
