"""How the store talks to its database: one SQLAlchemy engine per dialect, SQLite's
connection settings, the prepared hot-path statements and SQLite's checkpoints.

SQLite: WAL journal, ``synchronous=NORMAL``, ``busy_timeout`` 5 s, foreign keys on, and
writes start with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead
of failing with "database is locked" when a read transaction tries to upgrade.
PostgreSQL: the psycopg 3 driver, a small pool with pre-ping so a database restart
costs one reconnect, not an error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 0.5
BUSY_TIMEOUT_MS = 5000


def create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # The store is used from a worker thread, not the thread that built it.
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        configure_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would issue a
        # deferred BEGIN on its own); ``_on_begin`` below decides the kind.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # busy_timeout first, so the journal switch itself waits for other processes.
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("jobhost_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Prepared:
    """A statement compiled once for the DBAPI, with each column's bind conversion.

    The hot write (every execution transition) skips SQLAlchemy's per-call work:
    the SQL text and the column types' own bind processors (``UTCDateTime``, JSON)
    are resolved once, so the stored values are exactly what Core would store.
    """

    def __init__(self, stmt: Any, table: sa.Table, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=[c.name for c in table.columns])
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())  # the ``?`` in order
        convert = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.c}
        self._plan = [(name, convert[name]) for name in compiled.positiontup or ()]

    def params(self, rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
        try:
            plan = self._plan
            return [
                [row[name] if fn is None else fn(row[name]) for name, fn in plan] for row in rows
            ]
        except Exception as exc:  # the same error type Core raises for a bad value
            raise sa.exc.StatementError(str(exc), self.sql, None, exc) from exc


class Checkpointer:
    """Runs SQLite's WAL checkpoints on a thread of their own, at most every
    ``CHECKPOINT_INTERVAL`` seconds while executions are being written.

    By default the connection whose commit crosses 1,000 WAL pages checkpoints inline,
    fsync included: on the hot write path that was one commit in ~125 taking ~16 ms, the
    whole p99 of start-to-running. The hot connection turns that off, and this passive
    checkpoint (it never blocks writers) keeps the WAL from growing.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._due = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="jobhost-sqlite-checkpoint", daemon=True
            )
            self._thread.start()
        self._due.set()

    def _run(self) -> None:
        while True:
            self._due.wait()
            if self._closed.is_set():
                return
            self._due.clear()
            try:
                raw = self._engine.raw_connection()
                try:
                    raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    raw.close()
            except Exception:  # the next request tries again; SQLite stays consistent
                log.exception("SQLite checkpoint failed")
            if self._closed.wait(CHECKPOINT_INTERVAL):
                return

    def close(self) -> None:
        self._closed.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
