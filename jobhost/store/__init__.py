"""Durable state: executions, audit, users, tokens and sessions in SQLite or PostgreSQL.

``make_store(settings)`` is the way in; call ``migrate()`` on the result before use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

# Feature modules that add tables to ``tables.metadata`` (each with its own migration).
from jobhost.store import hooks as _hooks  # noqa: F401
from jobhost.store import instances as _instances  # noqa: F401
from jobhost.store import schedules as _schedules  # noqa: F401
from jobhost.store.sql import SqlStore, head_revision, normalize_url

__all__ = ["SqlStore", "StoreSettings", "head_revision", "make_store", "normalize_url"]


class StoreSettings(Protocol):
    """What ``make_store`` reads of ``Settings`` (a local read passes only these)."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def db_url(self) -> str: ...


def make_store(settings: StoreSettings) -> SqlStore:
    """The store for these settings; for SQLite the data dir (and the file's folder) is
    created. The schema is not touched: call ``migrate()``."""
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return SqlStore(settings.db_url)
