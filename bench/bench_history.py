"""Costs that must not grow with history: engine open, ``jobhost history`` and
``jobhost status`` with an empty store, 10,000 and 1,000,000 finished runs.

    python -m bench history      (BENCH_HISTORY_ROWS=0,10000,1000000 sets the sizes)

For each backend (SQLite in a temporary folder; PostgreSQL at ``JOBHOST_BENCH_POSTGRES_URL``,
default the test server, in a throwaway schema; skipped when unreachable) the rows are built
with one ``INSERT … SELECT`` over a generated series (not through the API), spread over the 20
jobs of the catalog, then it times, median of ``REPEATS``:

- ``open_ms``: ``JobHost(settings)`` opened and closed in this process (migrate, catalog
  scan, reconciliation, last run per job);
- ``cli_history_ms`` / ``cli_status_ms``: whole ``jobhost history --limit 50`` and
  ``jobhost status <id>`` commands, as a user runs them (interpreter start-up included);
  ``cli_history_cpu_ms`` / ``cli_status_cpu_ms``: the CPU time (user + system) of those
  processes, the steadier figure on a busy machine.

The target: every figure within 50 ms of its empty-store figure at 1,000,000 runs; the
``+…`` column is that difference.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import sqlalchemy as sa

from bench.bench_store import _postgres
from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.store import SqlStore

JOBS = 20  # the job IDs in _FILL are Bench/Job0 to Bench/Job19
REPEATS = 3
SIZES = [int(n) for n in os.environ.get("BENCH_HISTORY_ROWS", "0,10000,1000000").split(",")]
# One statement per backend: n from 1 to :rows, one run a second from 2026-01-01, job n % 20.
_FILL = {
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
        INSERT INTO executions (id, job_id, status, trigger, user, variables, test, created_at,
                                output_bytes, restart_count)
        SELECT printf('bench%09d', i), 'Bench/Job' || (i % 20), 'succeeded', 'user', 'bench',
               '{}', 0,
               strftime('%Y-%m-%d %H:%M:%S', '2026-01-01', '+' || i || ' seconds') || '.000000',
               0, 0
        FROM n
    """,
    "postgresql": """
        INSERT INTO executions (id, job_id, status, trigger, "user", variables, test, created_at,
                                output_bytes, restart_count)
        SELECT 'bench' || lpad(i::text, 9, '0'), 'Bench/Job' || (i % 20), 'succeeded', 'user',
               'bench', '{}'::json, false,
               timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', 0, 0
        FROM generate_series(1, :rows) AS i
    """,
}


def _apps(root: Path) -> Path:
    for n in range(JOBS):
        folder = root / "Bench" / "jobs" / f"Job{n}"
        folder.mkdir(parents=True)
        definition = {"Name": f"Job{n}", "ScriptRelativePath": "run"}
        (folder / "job.json").write_text(json.dumps(definition))
        (folder / "run").write_text("#!/bin/sh\n:\n")
        (folder / "run").chmod(0o755)
    return root


def _fill(url: str, rows: int) -> None:
    """Grow the store to ``rows`` executions (it holds ``bench`` rows 1..n already)."""
    store = SqlStore(url)
    try:
        with store.write() as conn:
            have = conn.execute(sa.text("SELECT count(*) FROM executions")).scalar_one()
            if rows > have:
                conn.execute(sa.text("DELETE FROM executions"))
                conn.execute(sa.text(_FILL[store.engine.dialect.name]), {"rows": rows})
        if store.engine.dialect.name == "sqlite":
            with store.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
        else:
            with store.write() as conn:
                conn.execute(sa.text("ANALYZE executions"))
    finally:
        store.close()


def _median_ms(action: Callable[[], None]) -> float:
    samples = []
    for _ in range(REPEATS):
        begun = time.perf_counter()
        action()
        samples.append((time.perf_counter() - begun) * 1000)
    return statistics.median(samples)


def _open(settings: Settings) -> None:
    async def go() -> None:
        async with JobHost(settings):
            pass

    asyncio.run(go())


def _median_cpu_ms(action: Callable[[], None]) -> float:
    """The median CPU time of the processes ``action`` runs (and waits for)."""
    samples = []
    for _ in range(REPEATS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        action()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        samples.append(used * 1000)
    return statistics.median(samples)


def _cli(settings: Settings, *verb: str, check: bool = True) -> None:
    argv = [sys.executable, "-m", "jobhost", "--data-dir", str(settings.data_dir)]
    argv += ["--apps", str(settings.apps_roots[0]), "--database-url", settings.db_url, *verb]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check and run.returncode != 0:
        raise RuntimeError(f"{' '.join(verb)} exited {run.returncode}: {run.stderr[-1000:]}")


def _measure(url: str, root: Path) -> dict[str, dict[str, float]]:
    settings = Settings(
        apps_roots=[_apps(root / "apps")],
        data_dir=root / "data",
        database_url=url,
        watch=False,
        scheduler_enabled=False,
    )
    _open(settings)  # migrate
    report: dict[str, dict[str, float]] = {}
    for rows in sorted(SIZES):
        _fill(url, rows)
        # With no rows the status lookup answers "not found": the same open and query.
        status = partial(_cli, settings, "status", "bench000000001", check=rows > 0)
        history = partial(_cli, settings, "history", "--limit", "50")
        report[f"{rows}_runs"] = {
            "open_ms": _median_ms(partial(_open, settings)),
            "cli_history_ms": _median_ms(history),
            "cli_status_ms": _median_ms(status),
            "cli_history_cpu_ms": _median_cpu_ms(history),
            "cli_status_cpu_ms": _median_cpu_ms(status),
        }
    return report


def _print(backend: str, report: dict[str, dict[str, float]]) -> None:
    first = next(iter(report.values()), {})
    for size, figures in report.items():
        for name, value in figures.items():
            base = first.get(name, value)
            print(f"history {backend:8} {size:14} {name:18} {value:9.1f}  +{value - base:7.1f}")


def run() -> dict[str, object]:
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = _measure(f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp) / "sqlite")
        _print("sqlite", sqlite)
        report["sqlite"] = sqlite
        try:
            with _postgres() as url:
                postgres = _measure(url, Path(tmp) / "postgres")
            _print("postgres", postgres)
            report["postgres"] = postgres
        except sa.exc.OperationalError as exc:
            print(f"history postgres skipped: {str(exc).splitlines()[0]}")
    return report


if __name__ == "__main__":
    run()
