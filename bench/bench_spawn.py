"""Spawn latency, throughput and memory of the local executor.

    python -m bench.bench_spawn

- ``start_p50_ms`` / ``start_p99_ms``: ``executor.start()`` call to ``on_started``,
  over 500 sequential runs of ``/bin/true``;
- ``completed_per_second``: 1,000 ``/bin/true`` started at once, until the last exit;
- ``rss_mib_with_1000_running``: this process's RSS with 1,000 ``sleep`` jobs running.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from jobhost.executors.local import LocalExecutor
from jobhost.models import ExitInfo, LaunchSpec


class Timings:
    """ExecutionEvents that records when things happen."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.exited: dict[str, ExitInfo] = {}
        self._waiting: tuple[int, asyncio.Future[None]] | None = None

    def on_started(self, execution_id: str, pid: int | None, host: str) -> None:
        self.started[execution_id] = time.perf_counter()
        self._check()

    def on_output(self, execution_id: str, total_bytes: int) -> None:
        pass

    def on_progress(self, execution_id: str, fraction: float | None, message: str | None) -> None:
        pass

    def on_exited(self, execution_id: str, info: ExitInfo) -> None:
        self.exited[execution_id] = info
        self._check()

    def _check(self) -> None:
        if self._waiting is not None:
            count, future = self._waiting
            if len(self.exited) >= count and not future.done():
                future.set_result(None)

    async def exits(self, count: int) -> None:
        """Await until ``count`` executions have exited in total."""
        future = asyncio.get_running_loop().create_future()
        self._waiting = (count, future)
        self._check()
        await future


def spec(folder: Path, execution_id: str, argv: list[str]) -> LaunchSpec:
    return LaunchSpec(
        execution_id=execution_id,
        job_id="Bench/Spawn",
        argv=argv,
        cwd=str(folder),
        env={"PATH": os.environ.get("PATH", os.defpath)},
        log_path=str(folder / f"{execution_id}.log"),
        result_path=str(folder / f"{execution_id}.json"),
    )


async def _measure(folder: Path) -> dict[str, float]:
    events = Timings()
    executor = LocalExecutor(events)
    latencies = []
    for n in range(500):
        execution_id = f"latency-{n}"
        began = time.perf_counter()
        await executor.start(spec(folder, execution_id, ["/bin/true"]))
        while execution_id not in events.started:
            await asyncio.sleep(0)
        latencies.append((events.started[execution_id] - began) * 1000)
    await events.exits(500)

    began = time.perf_counter()
    for n in range(1000):
        await executor.start(spec(folder, f"burst-{n}", ["/bin/true"]))
    await events.exits(1500)
    per_second = 1000 / (time.perf_counter() - began)

    for n in range(1000):
        await executor.start(spec(folder, f"sleep-{n}", ["sleep", "30"]))
    while len(events.started) < 2500:
        await asyncio.sleep(0)
    rss = psutil.Process().memory_info().rss / (1024 * 1024)
    for n in range(1000):
        await executor.stop(f"sleep-{n}", 5)
    await events.exits(2500)
    await executor.aclose()

    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "start_p50_ms": statistics.median(latencies),
        "start_p99_ms": quantiles[98],
        "completed_per_second": per_second,
        "rss_mib_with_1000_running": rss,
    }


def run() -> dict[str, float]:
    """Run the measurements and print them; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="jobhost-bench-") as folder:
        figures = asyncio.run(_measure(Path(folder)))
    for name, value in figures.items():
        print(f"{name:>28}: {value:10.2f}")
    return figures


if __name__ == "__main__":
    run()
