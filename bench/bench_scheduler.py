"""Scheduler figures: fire lateness for 1 and 100 every-second jobs, and idle CPU.

Lateness is given in two parts, in milliseconds after each fire's scheduled time:

- ``scheduler``: until the scheduler calls ``engine.start`` (its own share);
- ``end_to_end``: until the process is spawned (the execution's ``started_at``, set
  when the executor reports the spawn), which adds the engine's dispatch.

``spread`` is, per fire instant of the 100-job run, the gap between the first and the
last of its 100 spawns. The first ``WARMUP_SECONDS`` are left out (imports, first
connections). The scripts are ``/bin/sh`` one-liners so the figures measure the host,
not the start-up of 100 Python interpreters a second.

``python -m bench scheduler`` (or ``python -m bench.bench_scheduler``).
``BENCH_SCHEDULER_SECONDS`` (default 12) sets how long each lateness run lasts; the
issue's figure is over a minute (60).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import tempfile
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import Execution, HistoryQuery, utcnow

SCRIPT = "#!/bin/sh\n:\n"
WARMUP_SECONDS = 2.0
IDLE_JOBS = 10_000
IDLE_SECONDS = 10.0


def _scratch() -> tempfile.TemporaryDirectory[str]:
    """Job folders go to tmpfs when there is one: deleting 10,000 folders on a busy disk
    takes longer than the whole measurement (the data dir stays on disk)."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None)


def _write_jobs(root: Path, count: int, schedule: str) -> None:
    for index in range(count):
        folder = root / "Bench" / "jobs" / f"J{index:05d}"
        folder.mkdir(parents=True)
        spec = {"Name": f"J{index}", "ScriptRelativePath": "run", "max_concurrent": 0}
        (folder / "job.json").write_text(json.dumps({**spec, "default_schedule": schedule}))
        script = folder / "run"
        script.write_text(SCRIPT)
        script.chmod(0o755)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _stats(prefix: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {f"{prefix}_count": 0.0}
    return {
        f"{prefix}_p50_ms": statistics.median(values),
        f"{prefix}_p99_ms": _percentile(values, 0.99),
        f"{prefix}_max_ms": max(values),
    }


async def _history(engine: JobHost, since: datetime, until: datetime) -> list[Execution]:
    items: list[Execution] = []
    cursor: str | None = None
    while True:
        page = await engine.history(HistoryQuery(limit=1000, cursor=cursor))
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return [e for e in items if e.scheduled_for is not None and since <= e.scheduled_for < until]


async def _lateness(jobs: int, seconds: float) -> dict[str, float]:
    with _scratch() as scratch, tempfile.TemporaryDirectory() as tmp:
        apps = Path(scratch) / "apps"
        _write_jobs(apps, jobs, "* * * * * *")
        # Runs still going at close are stopped: the folder is removed right after.
        settings = Settings(
            apps_roots=[apps], data_dir=Path(tmp) / "data", watch=False, shutdown_policy="stop"
        )
        async with JobHost(settings) as engine:
            scheduler = engine.scheduler
            assert scheduler is not None
            await asyncio.sleep(WARMUP_SECONDS)
            since = utcnow().replace(microsecond=0) + timedelta(seconds=1)
            whole = max(1, int(seconds))
            until = since + timedelta(seconds=whole)  # fires in [since, until) are counted
            await asyncio.sleep((until - utcnow()).total_seconds() + 1.0)
            expected = jobs * whole
            own = [late * 1000 for when, late in scheduler.lateness if since <= when < until]
            runs = await _history(engine, since, until)
    spawned = [
        (e.started_at - e.scheduled_for).total_seconds() * 1000
        for e in runs
        if e.started_at is not None and e.scheduled_for is not None
    ]
    figures = {"fires": float(len(runs)), "fires_expected": float(expected)}
    figures |= _stats("scheduler", own)
    figures |= _stats("end_to_end", spawned)
    if jobs > 1:
        by_instant: dict[datetime, list[float]] = defaultdict(list)
        for e in runs:
            if e.started_at is not None and e.scheduled_for is not None:
                by_instant[e.scheduled_for].append((e.started_at - e.scheduled_for).total_seconds())
        spreads = [(max(v) - min(v)) * 1000 for v in by_instant.values() if len(v) > 1]
        figures |= _stats("spread", spreads)
    return figures


async def _idle_cpu(jobs: int, seconds: float) -> dict[str, float]:
    with _scratch() as scratch, tempfile.TemporaryDirectory() as tmp:
        apps = Path(scratch) / "apps"
        _write_jobs(apps, jobs, "0 3 * * *")
        # Runs still going at close are stopped: the folder is removed right after.
        settings = Settings(
            apps_roots=[apps], data_dir=Path(tmp) / "data", watch=False, shutdown_policy="stop"
        )
        async with JobHost(settings) as engine:
            assert engine.scheduler is not None
            await asyncio.sleep(1.0)  # let start-up work (catalog hooks, first writes) end
            before = resource.getrusage(resource.RUSAGE_SELF)
            await asyncio.sleep(seconds)
            after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"jobs": float(jobs), "cpu_ms": cpu * 1000, "cpu_percent": cpu / seconds * 100}


async def _run(seconds: float) -> dict[str, dict[str, float]]:
    return {
        "one_job": await _lateness(1, seconds),
        "hundred_jobs": await _lateness(100, seconds),
        "idle_10000_jobs": await _idle_cpu(IDLE_JOBS, IDLE_SECONDS),
    }


def run() -> dict[str, dict[str, float]]:
    seconds = float(os.environ.get("BENCH_SCHEDULER_SECONDS", "12"))
    figures = asyncio.run(_run(seconds))
    for group, values in figures.items():
        for name, value in values.items():
            print(f"scheduler  {group:16s} {name:22s} {value:10.3f}")
    return figures


if __name__ == "__main__":
    run()
