"""Store write throughput: ``save_executions`` rows/s for batches of 1, 10 and 100.

Run with ``python -m bench.bench_store``. SQLite uses a temporary file; PostgreSQL uses
``JOBHOST_BENCH_POSTGRES_URL`` (default: the test server) in a throwaway schema, and is
reported as skipped when unreachable. Each batch is one ``save_executions`` call, that
is one transaction, as the engine's write path issues them.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from jobhost.models import Execution, ExecutionStatus, Trigger, new_id
from jobhost.store import SqlStore

POSTGRES_URL = os.environ.get(
    "JOBHOST_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
BATCH_SIZES = (1, 10, 100)
ROWS_PER_SIZE = 3000


@contextmanager
def _sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


@contextmanager
def _postgres() -> Iterator[str]:
    schema = f"jh_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _rows(count: int) -> list[Execution]:
    return [
        Execution(
            id=new_id(),
            job_id=f"Bench/Job{i % 20}",
            status=ExecutionStatus.SUCCEEDED,
            trigger=Trigger.SCHEDULE,
            user="bench",
            variables={"i": i, "Region": "eu"},
            result={"rows": i, "ok": True},
            output_bytes=1024 * i,
        )
        for i in range(count)
    ]


def _measure(url: str) -> dict[str, float]:
    store = SqlStore(url)
    try:
        store.migrate()
        results: dict[str, float] = {}
        for size in BATCH_SIZES:
            rows = _rows(ROWS_PER_SIZE)
            start = time.perf_counter()
            for offset in range(0, len(rows), size):
                store.save_executions(rows[offset : offset + size])
            elapsed = time.perf_counter() - start
            results[f"batch_{size}_rows_per_s"] = round(len(rows) / elapsed)
        return results
    finally:
        store.close()


def run() -> dict[str, Any]:
    """Rows per second per backend and batch size (``{"sqlite": {...}, "postgres": {...}}``)."""
    report: dict[str, Any] = {}
    with _sqlite() as url:
        report["sqlite"] = _measure(url)
    try:
        with _postgres() as url:
            report["postgres"] = _measure(url)
    except sa.exc.OperationalError as exc:
        report["postgres"] = {"skipped": str(exc).splitlines()[0]}
    for backend, figures in report.items():
        for name, value in figures.items():
            print(f"store {backend:8} {name:24} {value}")
    return report


if __name__ == "__main__":
    run()
