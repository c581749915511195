"""The newest finished runs of many jobs at once, for the catalog's outcome strip.

One statement: a ``UNION ALL`` of one ``ORDER BY created_at DESC LIMIT n`` per job, each
answered by a range read of ``ix_executions_job_id_created_at_id`` that stops after a few
rows, so the cost does not grow with the length of a job's history (a window over each
job's rows would read all of them). Test runs and live runs are left out: the strip
shows what the job's real runs ended with.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from jobhost.models import TERMINAL_STATUSES, Execution
from jobhost.store import tables as t
from jobhost.store.sql import SqlStore

# SQLite allows at most 500 terms in a compound SELECT; stay well under it.
_JOBS_PER_STATEMENT = 200


def recent_outcomes(
    store: SqlStore, job_ids: Sequence[str], per_job: int
) -> dict[str, list[Execution]]:
    """Per job, its newest ``per_job`` finished non-test runs, newest first."""
    wanted = sorted(set(job_ids))
    found: dict[str, list[Execution]] = {job_id: [] for job_id in wanted}
    if not wanted or per_job < 1:
        return found
    c = t.executions.c
    finished = [s.value for s in TERMINAL_STATUSES]
    with store.read() as conn:
        for start in range(0, len(wanted), _JOBS_PER_STATEMENT):
            parts = [
                sa.select(t.executions)
                .where(c.job_id == job_id, c.test.is_(False), c.status.in_(finished))
                .order_by(c.created_at.desc(), c.id.desc())
                .limit(per_job)
                .subquery()
                .select()
                for job_id in wanted[start : start + _JOBS_PER_STATEMENT]
            ]
            stmt = parts[0] if len(parts) == 1 else sa.union_all(*parts)
            for row in conn.execute(stmt).mappings():
                execution = t.execution_from_row(row)
                found[execution.job_id].append(execution)
    for runs in found.values():
        runs.sort(key=lambda e: (e.created_at, e.id), reverse=True)
    return found
