"""Engine figures: start-to-running latency, completed executions per second, host memory.

Every run is durably recorded in the embedded SQLite store, exactly as in production.
Run: ``python -m bench.bench_engine`` (or ``make bench`` for every benchmark).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import Execution, ExecutionStatus


def _job(root: Path, name: str, script: str, text: str, **extra: object) -> None:
    folder = root / "Bench" / "jobs" / name
    folder.mkdir(parents=True)
    definition = {"Name": name, "ScriptRelativePath": script, "max_concurrent": 0, **extra}
    (folder / "job.json").write_text(json.dumps(definition))
    path = folder / script
    path.write_text(text)
    path.chmod(0o755)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def _latency(engine: JobHost, job_id: str, runs: int) -> tuple[float, float]:
    """Milliseconds from the start call to the durable ``running`` record being announced."""
    samples = []
    changes = engine.changes()
    for _ in range(runs):
        begun = time.perf_counter()
        execution = await engine.start(job_id)
        async for change in changes:
            if change.id == execution.id and change.status is not ExecutionStatus.STARTING:
                break
        samples.append((time.perf_counter() - begun) * 1000)
        await engine.wait(execution.id)
    await changes.aclose()  # type: ignore[attr-defined]
    return statistics.median(samples), _percentile(samples, 99)


def _host_processes(data_dir: Path) -> list[psutil.Process]:
    """This process and the data dir's runner (``python -m jobhost.runner DIR/runner``):
    the jobs are the runner's children when the local executor runs them through it."""
    found = [psutil.Process()]
    folder = str(data_dir.resolve())
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "jobhost.runner" in cmdline and any(arg.startswith(folder) for arg in cmdline):
            found.append(process)
    return found


def _cpu(processes: list[psutil.Process]) -> tuple[list[float], float]:
    """CPU seconds of each of ``processes`` itself, and of their reaped children."""
    own: list[float] = []
    jobs = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            own.append(0.0)
            continue
        own.append(times.user + times.system)
        jobs += times.children_user + times.children_system
    return own, jobs


async def _throughput(
    engine: JobHost, job_id: str, count: int, data_dir: Path, split: list[float] | None = None
) -> tuple[float, float, float]:
    """``count`` starts submitted at once (as a burst of API calls would), all awaited.

    Returns executions per second, then the host's (this process and the runner's) and the
    jobs' CPU milliseconds per execution: the CPU figures hardly move with other load on
    the machine, the rate does. ``split`` gets the host's share of each process (this one,
    then the runner).
    """
    processes = _host_processes(data_dir)
    host_before, jobs_before = _cpu(processes)
    commits_before = engine.journal.batches
    begun = time.perf_counter()

    async def one() -> Execution:
        return await engine.wait((await engine.start(job_id)).id)

    finals = await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - begun
    host_after, jobs_after = _cpu(processes)
    assert all(f.status is ExecutionStatus.SUCCEEDED for f in finals)
    shares = [
        (after - before) * 1000 / count
        for before, after in zip(host_before, host_after, strict=True)
    ]
    if split is not None:
        split[:] = shares
        split.append((engine.journal.batches - commits_before) / count)
    jobs = jobs_after - jobs_before
    return count / elapsed, sum(shares), jobs * 1000 / count


async def _memory(engine: JobHost, job_id: str, count: int) -> float:
    started = [await engine.start(job_id) for _ in range(count)]
    while sum(1 for e in engine.running() if e.status is ExecutionStatus.RUNNING) < count:
        await asyncio.sleep(0.05)
    rss = psutil.Process().memory_info().rss / 2**20
    await engine.stop(job_id=job_id)
    for execution in started:
        await engine.wait(execution.id)
    return rss


async def _run(root: Path) -> dict[str, float]:
    apps = root / "apps"
    _job(apps, "True", "run", "#!/bin/sh\n:\n")
    _job(apps, "Python", "run.py", "pass\n")
    _job(apps, "Sleep", "run", "#!/bin/sh\nexec sleep 600\n", stop_grace_seconds=2)
    settings = Settings(
        apps_roots=[apps], data_dir=root / "data", watch=False, scheduler_enabled=False
    )
    async with JobHost(settings) as engine:
        figures: dict[str, float] = {}
        await _latency(engine, "Bench/True", 20)  # warm-up
        (
            figures["start_to_running_true_p50_ms"],
            figures["start_to_running_true_p99_ms"],
        ) = await _latency(engine, "Bench/True", 300)
        (
            figures["start_to_running_python_p50_ms"],
            figures["start_to_running_python_p99_ms"],
        ) = await _latency(engine, "Bench/Python", 100)
        split: list[float] = []
        (
            figures["completed_per_second_1000_true"],
            figures["host_cpu_ms_per_execution_1000_true"],
            figures["job_cpu_ms_per_execution_1000_true"],
        ) = await _throughput(engine, "Bench/True", 1000, settings.data_dir, split)
        # The host's CPU per run, the server's and the runner's apart.
        *shares, commits = split
        for name, share in zip(("server", "runner"), shares, strict=False):
            figures[f"{name}_cpu_ms_per_execution_1000_true"] = share
        figures["journal_commits_per_execution_1000_true"] = commits
        figures["host_rss_mb_1000_running_sleep"] = await _memory(engine, "Bench/Sleep", 1000)
        figures["journal_rows_per_batch"] = engine.journal.rows / max(1, engine.journal.batches)
        return figures


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(_run(Path(tmp)))
    for name, value in figures.items():
        print(f"engine  {name:40s} {value:10.2f}")
    return figures


if __name__ == "__main__":
    run()
