"""The newest end of every job's runs, by status, in one query (metrics seed from it at
start-up, so "last success" survives a restart)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from jobhost.store import tables as t
from jobhost.store.sql import SqlStore


def last_finishes(store: SqlStore) -> dict[tuple[str, str], datetime]:
    """(job ID, status) → when its newest non-test run with that status ended."""
    e = t.executions.c
    stmt = (
        sa.select(e.job_id, e.status, sa.func.max(e.ended_at).label("ended"))
        .where(e.ended_at.is_not(None), e.test.is_(False))
        .group_by(e.job_id, e.status)
    )
    with store.read() as conn:
        rows = conn.execute(stmt).all()
    return {(job_id, status): ended for job_id, status, ended in rows if ended is not None}
