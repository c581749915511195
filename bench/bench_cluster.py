"""Several servers on one PostgreSQL: how long a stop sent to one server takes to act on a
run another server owns (request row + NOTIFY → the owner stops the run → its answer).

Two engines (each its own data dir and runner) share one fresh schema; the timed span is
``other.stop(...)`` returning, which happens once the owner has sent SIGTERM to the run's
group and recorded ``stopping``. Needs PostgreSQL (``JOBHOST_BENCH_POSTGRES_URL``, default
``postgresql+psycopg://root@127.0.0.1:5432/test``); prints "skipped" without it.
Run: ``python -m bench.bench_cluster``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.bench_engine import _job, _percentile
from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import ExecutionStatus

POSTGRES_URL = os.environ.get(
    "JOBHOST_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
RUNS = 30
SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"


async def _ready(engine: JobHost, execution_id: str) -> None:
    async for chunk in engine.follow(execution_id):
        if b"ready" in chunk.data:
            return


async def _measure(url: str, root: Path) -> list[float]:
    apps = root / "apps"
    _job(apps, "Sleeper", "sleeper.py", SLEEPER)
    common = {
        "apps_roots": [apps],
        "database_url": url,
        "watch": False,
        "scheduler_enabled": False,
        "notifications_enabled": False,
    }
    samples = []
    async with (
        JobHost(Settings(data_dir=root / "a", **common)) as owner,
        JobHost(Settings(data_dir=root / "b", **common)) as other,
    ):
        await asyncio.wait_for(other.forwarding.listening.wait(), 30)
        await asyncio.wait_for(owner.forwarding.listening.wait(), 30)
        for _ in range(RUNS):
            execution = await owner.start("Bench/Sleeper")
            await _ready(owner, execution.id)
            begun = time.perf_counter()
            (answered,) = await other.stop(execution_id=execution.id)
            samples.append((time.perf_counter() - begun) * 1000)
            assert answered.status in (ExecutionStatus.STOPPING, ExecutionStatus.STOPPED)
            await owner.wait(execution.id)
    return samples


def run() -> dict[str, float]:
    schema = f"jh_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        print(f"skipped: PostgreSQL is not reachable at {POSTGRES_URL} ({exc.orig})")
        return {}
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            samples = asyncio.run(_measure(url.render_as_string(hide_password=False), Path(tmp)))
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
    p50, p99 = statistics.median(samples), _percentile(samples, 99)
    print(
        f"forwarded stop (server B → owner A, answered): p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(samples):.1f} ms ({RUNS} stops)"
    )
    return {"forwarded_stop_p50_ms": p50, "forwarded_stop_p99_ms": p99}


if __name__ == "__main__":
    run()
