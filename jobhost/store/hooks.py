"""Job webhooks in SQL: one row per job, the URL token stored as its SHA-256 only.

``salt`` changes with every rotation; with the server's signing key it derives the
hook's signing secret (``jobhost.hooks``), so no stored value can sign or call a hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from jobhost.store import tables as t
from jobhost.store.sql import SqlStore

webhooks = sa.Table(
    "webhooks",
    t.metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("salt", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", t.UTCDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Hook:
    """A job's webhook as stored (the token itself is never kept)."""

    job_id: str
    token_hash: str
    salt: str
    created_by: str
    created_at: datetime


def get_hook(store: SqlStore, job_id: str) -> Hook | None:
    with store.read() as conn:
        row = conn.execute(sa.select(webhooks).where(webhooks.c.job_id == job_id)).mappings()
        found = row.first()
    return t.from_row(Hook, found) if found else None


def find_hook(store: SqlStore, token_hash: str) -> Hook | None:
    with store.read() as conn:
        rows = conn.execute(sa.select(webhooks).where(webhooks.c.token_hash == token_hash))
        found = rows.mappings().first()
    return t.from_row(Hook, found) if found else None


def save_hook(store: SqlStore, hook: Hook) -> None:
    """Insert or replace the job's hook (a rotation replaces the token and the salt)."""
    row = t.to_row(hook)
    stmt = store.insert(webhooks)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id"],
        set_={key: stmt.excluded[key] for key in row if key != "job_id"},
    )
    with store.write() as conn:
        conn.execute(stmt, [row])


def delete_hook(store: SqlStore, job_id: str) -> bool:
    with store.write() as conn:
        result = conn.execute(sa.delete(webhooks).where(webhooks.c.job_id == job_id))
    return result.rowcount > 0
