"""Scheduler benchmark: fire lateness (scheduled time → process started) and idle CPU.

``python -m bench.bench_scheduler`` prints a JSON report. ``BENCH_SCHEDULER_SECONDS``
(default 30) sets how long each lateness run lasts.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import tempfile
from pathlib import Path
from typing import Any

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import HistoryQuery

SCRIPT = "pass\n"


def _write_jobs(root: Path, count: int, schedule: str) -> None:
    for index in range(count):
        folder = root / "Bench" / "jobs" / f"J{index:05d}"
        folder.mkdir(parents=True)
        spec = {"Name": f"J{index}", "ScriptRelativePath": "run.py", "max_concurrent": 0}
        (folder / "job.json").write_text(json.dumps({**spec, "default_schedule": schedule}))
        (folder / "run.py").write_text(SCRIPT)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _lateness(jobs: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        apps = Path(tmp) / "apps"
        _write_jobs(apps, jobs, "* * * * * *")
        settings = Settings(apps_roots=[apps], data_dir=Path(tmp) / "data", watch=False)
        async with JobHost(settings) as engine:
            await asyncio.sleep(seconds)
            page = await engine.history(HistoryQuery(limit=1000))
            items = list(page.items)
            while page.next_cursor is not None:
                page = await engine.history(HistoryQuery(limit=1000, cursor=page.next_cursor))
                items += page.items
    late = [
        (e.started_at - e.scheduled_for).total_seconds()
        for e in items
        if e.started_at is not None and e.scheduled_for is not None
    ]
    if not late:
        return {"jobs": jobs, "fires": 0}
    return {
        "jobs": jobs,
        "fires": len(late),
        "lateness_p50_s": round(statistics.median(late), 4),
        "lateness_p99_s": round(_percentile(late, 0.99), 4),
        "lateness_max_s": round(max(late), 4),
    }


async def _idle_cpu(jobs: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        apps = Path(tmp) / "apps"
        _write_jobs(apps, jobs, "0 3 * * *")
        settings = Settings(apps_roots=[apps], data_dir=Path(tmp) / "data", watch=False)
        async with JobHost(settings) as engine:
            assert engine.scheduler is not None
            before = resource.getrusage(resource.RUSAGE_SELF)
            await asyncio.sleep(seconds)
            after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"jobs": jobs, "idle_seconds": seconds, "cpu_seconds": round(cpu, 4)}


async def _run() -> dict[str, Any]:
    seconds = float(os.environ.get("BENCH_SCHEDULER_SECONDS", "30"))
    return {
        "one_job": await _lateness(1, seconds),
        "hundred_jobs": await _lateness(100, seconds),
        "idle": await _idle_cpu(10_000, 10.0),
    }


def run() -> dict[str, Any]:
    return asyncio.run(_run())


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
