"""``SqlStore``: the ``Store`` contract on SQLAlchemy Core, for SQLite and PostgreSQL.

Synchronous by design: the engine calls it through one bounded path (a worker thread),
so every method is one short transaction and none spans an await.

How it connects (SQLite's settings, PostgreSQL's pool, the prepared hot-path writes and
SQLite's checkpoints) is in ``jobhost.store.connection``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import functools
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.sql.expression import UnaryExpression
from sqlalchemy.sql.operators import custom_op

from jobhost.errors import BadRequest
from jobhost.models import (
    TERMINAL_STATUSES,
    ApiToken,
    AuditEvent,
    AuditQuery,
    Execution,
    ExecutionStatus,
    HistoryQuery,
    Page,
    Session,
    User,
)
from jobhost.store import tables as t
from jobhost.store.connection import Checkpointer, Prepared, create_engine
from jobhost.store.finished import FinishedRuns, Key
from jobhost.store.written import WrittenRows

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
log = logging.getLogger(__name__)

MAX_PAGE = 1000
# pg_advisory_xact_lock key held while migrating ("JOBHOST" in ASCII): one migrator
# per database at a time, whatever the schema.
_MIGRATE_LOCK_KEY = 0x4A4F42484F5354
# Bound parameters per IN (...) list; well under SQLite's and psycopg's limits.
_IN_CHUNK = 500

_TERMINAL = sorted(status.value for status in TERMINAL_STATUSES)
_UNFINISHED = sorted(status.value for status in ExecutionStatus if status not in TERMINAL_STATUSES)


def normalize_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and point them at psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _alembic_config() -> Config:
    """Alembic's configuration, built in code: the package carries no alembic.ini."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


_REVISION = re.compile(r"""^(down_)?revision\s*(?::[^=]*)?=\s*(?:["']([^"']+)["']|None)""", re.M)


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_MIGRATE_CHILD = (
    "import sys; from jobhost.store.sql import SqlStore; SqlStore(sys.stdin.read()).migrate()"
)


@functools.cache
def head_revision() -> str:
    """The newest schema revision this version of JobHost knows: the one no migration
    names as its ``down_revision``.

    Read from the migration files' two assignments rather than through Alembic: every
    engine open (each local CLI command) asks, and importing Alembic costs more than the
    command's own work."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for down, value in _REVISION.findall(path.read_text()):
            if value:
                (parents if down else revisions).add(value)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"expected one Alembic head in {MIGRATIONS_DIR}, found {heads}")
    return heads.pop()


def encode_cursor(at: datetime, row_id: str) -> str:
    """An opaque page cursor: the (timestamp, id) of the last row of a page."""
    raw = json.dumps([at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of ``encode_cursor``; anything else is a ``BadRequest``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, row_id = json.loads(raw)
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None or not isinstance(row_id, str):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"Invalid cursor {cursor!r}: pass the next_cursor of a previous page unchanged, "
            "or omit it to start from the newest"
        ) from exc
    return at, row_id


def _clamp(limit: int) -> int:
    return max(1, min(MAX_PAGE, limit))


def _before(at_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any], cursor: str) -> Any:
    """Rows strictly after the cursor in newest-first order (keyset, ties broken by id)."""
    at, row_id = decode_cursor(cursor)
    return sa.or_(at_col < at, sa.and_(at_col == at, id_col < row_id))


def _unindexed(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """SQLite's ``+column``: the same value, but no index is used to look it up."""
    return UnaryExpression(column, operator=custom_op("+"), type_=column.type)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class SqlStore:
    """The durable store over one SQLAlchemy engine; see ``jobhost.abc.Store``."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self._engine = create_engine(self.url)
        self._dialect = self._engine.dialect.name
        # Same pool; on SQLite its transactions begin IMMEDIATE (see configure_sqlite).
        self._writer = self._engine.execution_options(jobhost_write=True)
        self._upserts: dict[str, Any] = {}
        self._prepared: tuple[Prepared, Prepared] | None = None
        # SQLite: the journal's own connection, kept between batches (``save_batch``).
        self._hot: Any = None
        self._hot_lock = threading.Lock()
        self._written: WrittenRows | None = None  # the live rows as the hot writes left them
        self._checkpointer = Checkpointer(self._engine)
        self._finished = FinishedRuns()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for features that add their own tables."""
        return self._engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction: a consistent snapshot for several queries."""
        with self._engine.begin() as conn:
            yield conn

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_update``."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _upsert(
        self, conn: Connection, table: sa.Table, key: str, rows: list[dict[str, Any]]
    ) -> None:
        """INSERT … ON CONFLICT (key) DO UPDATE of every other column, for all rows.

        The statement is built once per table (building it costs more than running it
        for a small batch) and executed once with every row's parameters.
        """
        stmt = self._upserts.get(table.name)
        if stmt is None:
            insert = self.insert(table)
            stmt = insert.on_conflict_do_update(
                index_elements=[key],
                set_={c.name: insert.excluded[c.name] for c in table.columns if c.name != key},
            )
            self._upserts[table.name] = stmt
        conn.execute(stmt, rows)

    # --- schema -------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema to ``head``; a no-op when already there.

        Safe on every start and from several processes at once: the whole upgrade runs
        in one transaction that first takes the database's migration lock (PostgreSQL
        advisory lock; SQLite's write lock via ``BEGIN IMMEDIATE`` and busy_timeout).
        """
        if self.at_head():
            return
        from alembic import command

        config = _alembic_config()
        with self._sqlite_file_lock(), self.write() as conn:
            if self._dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATE_LOCK_KEY)))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def _sqlite_file_lock(self) -> Iterator[None]:
        """Hold ``<database>.migrate-lock`` exclusively (SQLite files only).

        The first connection to a brand-new file switches it to WAL; two processes doing
        that at the same moment can get "database is locked" without the busy handler
        being consulted. Migrating under a file lock makes the first start serial.
        """
        database = make_url(self.url).database
        if self._dialect != "sqlite" or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def current_revision(self) -> str | None:
        """The schema revision the database is at (None before the first ``migrate()``)."""
        try:
            with self.read() as conn:
                return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return None  # no schema yet

    def at_head(self) -> bool:
        """Already migrated: one read, and Alembic is not even imported."""
        return self.current_revision() == head_revision()

    def migrate_apart(self) -> None:
        """``migrate()`` in a short-lived child process, when there is anything to do.

        For long-lived processes (``jobhost serve``): Alembic and Mako, once imported, stay
        in memory for the life of the process (about 9 MB here). The child takes the same
        locks, so it is as safe as ``migrate()``. The URL, which may hold a password, goes
        on the child's stdin, never on its command line.
        """
        if self.at_head():
            return
        database = make_url(self.url).database
        if self._dialect == "sqlite" and (not database or database == ":memory:"):
            self.migrate()  # a database only this process can see
            return
        child = subprocess.run(
            [sys.executable, "-c", _MIGRATE_CHILD],
            input=self.url,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            lines = child.stderr.strip().splitlines() or [f"exit code {child.returncode}"]
            raised = [line for line in lines if _RAISED.match(line)]  # the traceback's last
            raise RuntimeError(f"Migrating the store failed: {(raised or lines)[-1]}")

    def close(self) -> None:
        with self._hot_lock:
            hot, self._hot = self._hot, None
        if hot is not None:
            hot.close()
        self._checkpointer.close()
        self._engine.dispose()

    # --- executions ---------------------------------------------------------------

    def save_executions(self, executions: Sequence[Execution]) -> None:
        """Upsert by id: one statement, executed for the whole batch, in one transaction."""
        self.save_batch(executions, ())

    def save_batch(self, executions: Sequence[Execution], audit: Sequence[AuditEvent]) -> None:
        """Upsert ``executions`` and insert ``audit`` in one transaction (the journal's write).

        On SQLite this is the engine's hot path: it runs the prepared statements on the
        DBAPI connection (about a quarter of the cost through Core). Errors are raised as
        Core would raise them (``StatementError``, ``IntegrityError``...).
        """
        if not executions and not audit:
            return
        if self._dialect != "sqlite":
            with self.write() as conn:
                if executions:
                    rows = [t.execution_to_row(e) for e in executions]
                    self._upsert(conn, t.executions, "id", rows)
                if audit:
                    conn.execute(sa.insert(t.audit_events), [t.audit_to_row(e) for e in audit])
            self._finished.refresh(executions)
            return
        if self._prepared is None:
            self._prepared = self._prepare()
        upsert, insert = self._prepared
        audit_rows = insert.params([t.audit_to_row(e) for e in audit])
        values = upsert.params([t.execution_to_row(e) for e in executions])
        dbapi_error = self._engine.dialect.loaded_dbapi.Error
        sql = "BEGIN IMMEDIATE"  # as ``write()``: queue on busy_timeout, never fail at once
        with self._hot_lock:
            written = self._written
            if written is None:
                written = WrittenRows(t.executions, upsert.names, self._engine.dialect)
                self._written = written
            batch: dict[str, list[Any]] = {}
            try:
                cursor = self._hot_cursor()
                cursor.execute(sql)
                try:
                    sql = upsert.sql  # or an UPDATE of the columns that changed
                    written.write(cursor, upsert.sql, values, batch)
                    if audit_rows:
                        sql = insert.sql
                        cursor.executemany(sql, audit_rows)
                    sql = "COMMIT"
                    cursor.execute(sql)
                except BaseException:
                    written.forget()  # whatever the row holds now, the next write is whole
                    with contextlib.suppress(dbapi_error):  # SQLite may have rolled back
                        cursor.execute("ROLLBACK")
                    raise
            except dbapi_error as exc:
                raise sa.exc.DBAPIError.instance(
                    sql, None, exc, dbapi_error, dialect=self._engine.dialect
                ) from exc
            written.commit(batch, {e.id for e in executions if e.status.terminal})
        self._finished.refresh(executions)
        self._checkpointer.request()

    def _hot_cursor(self) -> Any:
        """A cursor of the connection the hot writes keep (under ``_hot_lock``).

        One connection for every batch rather than one checked out of the pool each time:
        SQLite keeps a connection's page cache only while no other connection wrote in
        between, and the pool hands its connections out in turn, so each batch re-read the
        index pages it was about to change (a ``pread`` per page, about a third of a
        batch's cost in system calls)."""
        if self._hot is None:
            raw = self._engine.raw_connection()
            raw.cursor().execute("PRAGMA wal_autocheckpoint = 0")  # see Checkpointer
            self._hot = raw
        return self._hot.cursor()

    def _prepare(self) -> tuple[Prepared, Prepared]:
        dialect = self._engine.dialect
        upsert = self.insert(t.executions)
        upsert = upsert.on_conflict_do_update(
            index_elements=["id"],
            set_={c.name: upsert.excluded[c.name] for c in t.executions.columns if c.name != "id"},
        )
        return (
            Prepared(upsert, t.executions, dialect),
            Prepared(sa.insert(t.audit_events), t.audit_events, dialect),
        )

    def get_execution(self, execution_id: str) -> Execution | None:
        query = sa.select(t.executions).where(t.executions.c.id == execution_id)
        with self.read() as conn:
            row = conn.execute(query).mappings().first()
        return t.execution_from_row(row) if row else None

    def find_by_idempotency_key(self, user: str | None, key: str) -> Execution | None:
        c = t.executions.c
        who = c.user.is_(None) if user is None else c.user == user
        query = sa.select(t.executions).where(who, c.idempotency_key == key)
        with self.read() as conn:
            row = conn.execute(query).mappings().first()
        return t.execution_from_row(row) if row else None

    def active_executions(self) -> list[Execution]:
        c = t.executions.c
        # IN over the few unfinished statuses, so the (status, created_at) index answers it
        # without reading finished history (NOT IN would scan every row).
        query = (
            sa.select(t.executions).where(c.status.in_(_UNFINISHED)).order_by(c.created_at, c.id)
        )
        with self.read() as conn:
            return [t.execution_from_row(r) for r in conn.execute(query).mappings()]

    def history(self, query: HistoryQuery) -> Page[Execution]:
        """Newest first, filtered, paged by an opaque (created_at, id) cursor.

        The page's keys come from the indexes; full rows are read only for the runs not
        already in the finished-runs cache (see ``jobhost.store.finished``).
        """
        c = t.executions.c
        limit = _clamp(query.limit)
        stmt = sa.select(c.id, c.status, c.output_bytes)
        if query.job_id is not None:
            stmt = stmt.where(c.job_id == query.job_id)
        if query.user is not None:
            stmt = stmt.where(c.user == query.user)
        if query.statuses:
            stmt = stmt.where(c.status.in_([s.value for s in query.statuses]))
        if query.since is not None:
            stmt = stmt.where(c.created_at >= query.since)
        if query.until is not None:
            stmt = stmt.where(c.created_at < query.until)
        if query.visible_job_ids is not None:
            job: sa.ColumnElement[Any] = c.job_id
            user: sa.ColumnElement[Any] = c.user
            unfiltered = query.job_id is None and query.user is None
            if unfiltered and self._engine.dialect.name == "sqlite":
                # "+column" keeps SQLite off the job and user indexes, so it walks the
                # (created_at, id) index newest first and stops at the page's end. Left to
                # itself it answers the OR from those indexes: every visible run of all
                # history read and sorted for each page.
                job, user = _unindexed(job), _unindexed(user)
            visible: Any = job.in_(sorted(query.visible_job_ids))
            if query.visible_user is not None:
                visible = sa.or_(visible, user == query.visible_user)
            stmt = stmt.where(visible)
        if query.cursor:
            stmt = stmt.where(_before(c.created_at, c.id, query.cursor))
        stmt = stmt.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
        with self.read() as conn:
            items = self._runs(conn, [tuple(r) for r in conn.execute(stmt).all()])
        if len(items) <= limit:
            return Page(items=items)
        items = items[:limit]
        return Page(items=items, next_cursor=encode_cursor(items[-1].created_at, items[-1].id))

    def _runs(self, conn: Connection, keys: list[Key]) -> list[Execution]:
        """The executions of ``keys``, in order: finished ones from the cache when their key
        is unchanged, the others from their rows (one gone since is left out)."""
        found = self._finished.get_many(keys)
        missing = [key[0] for key in keys if key[0] not in found]
        c = t.executions.c
        for chunk in _chunks(missing):
            for row in conn.execute(sa.select(t.executions).where(c.id.in_(chunk))).mappings():
                execution = t.execution_from_row(row)
                found[execution.id] = execution
                self._finished.put(execution)
        return [found[key[0]] for key in keys if key[0] in found]

    def last_executions(self, job_ids: Sequence[str]) -> dict[str, Execution]:
        """The newest execution per job, whatever the length of history.

        Per wanted job, one ``ORDER BY created_at DESC, id DESC LIMIT 1`` probe of the
        ``(job_id, created_at, id)`` index (a correlated subquery over the job IDs, passed
        as one array parameter), then a primary-key fetch of those rows: the cost grows with
        the number of jobs asked for, never with the number of executions stored.
        """
        wanted = sorted(set(job_ids))
        if not wanted:
            return {}
        c = t.executions.c
        newest = sa.alias(t.executions, "newest")
        found: dict[str, Execution] = {}
        with self.read() as conn:
            for chunk in _chunks(wanted):
                jobs = self._id_list(list(chunk))
                probe = (
                    sa.select(newest.c.id)
                    .where(newest.c.job_id == jobs.c.value)
                    .order_by(newest.c.created_at.desc(), newest.c.id.desc())
                    .limit(1)
                    .scalar_subquery()
                )
                stmt = sa.select(t.executions).where(c.id.in_(sa.select(probe).select_from(jobs)))
                for row in conn.execute(stmt).mappings():
                    execution = t.execution_from_row(row)
                    found[execution.job_id] = execution
        return found

    def _id_list(self, ids: list[str]) -> Any:
        """``ids`` as a one-column table (``value``) bound as a single parameter."""
        if self._engine.dialect.name == "postgresql":
            array = sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.Text))
            return sa.func.unnest(array).table_valued("value").render_derived(name="wanted")
        return sa.func.json_each(json.dumps(ids)).table_valued("value").alias("wanted")

    def prune(self, *, now: datetime, days: int | None, per_job: int | None) -> list[str]:
        """Delete terminal executions created more than ``days`` before ``now`` and/or
        beyond the newest ``per_job`` terminal executions of their job.

        Non-terminal executions are never deleted and do not count towards ``per_job``:
        a job keeps its last ``per_job`` finished runs however many are in flight.
        Returns the deleted IDs so the caller can remove their logs.
        """
        c = t.executions.c
        terminal = c.status.in_(_TERMINAL)
        doomed: set[str] = set()
        with self.write() as conn:
            if days is not None:
                cutoff = now - timedelta(days=days)
                old = sa.select(c.id).where(terminal, c.created_at < cutoff)
                doomed.update(conn.execute(old).scalars())
            if per_job is not None:
                rank = (
                    sa.func.row_number()
                    .over(partition_by=c.job_id, order_by=(c.created_at.desc(), c.id.desc()))
                    .label("rank")
                )
                ranked = sa.select(c.id, rank).where(terminal).subquery()
                excess = sa.select(ranked.c.id).where(ranked.c.rank > per_job)
                doomed.update(conn.execute(excess).scalars())
            deleted = sorted(doomed)
            for chunk in _chunks(deleted):
                conn.execute(sa.delete(t.executions).where(c.id.in_(chunk)))
        return deleted

    # --- audit --------------------------------------------------------------------

    def add_audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        with self.write() as conn:
            conn.execute(sa.insert(t.audit_events), [t.audit_to_row(e) for e in events])

    def audit(self, query: AuditQuery) -> Page[AuditEvent]:
        """Newest first, filtered, paged by an opaque (at, id) cursor."""
        c = t.audit_events.c
        limit = _clamp(query.limit)
        stmt = sa.select(t.audit_events)
        if query.user is not None:
            stmt = stmt.where(c.user == query.user)
        if query.action is not None:
            stmt = stmt.where(c.action == query.action)
        if query.target is not None:
            stmt = stmt.where(c.target == query.target)
        if query.since is not None:
            stmt = stmt.where(c.at >= query.since)
        if query.until is not None:
            stmt = stmt.where(c.at < query.until)
        if query.cursor:
            stmt = stmt.where(_before(c.at, c.id, query.cursor))
        stmt = stmt.order_by(c.at.desc(), c.id.desc()).limit(limit + 1)
        with self.read() as conn:
            items = [t.audit_from_row(r) for r in conn.execute(stmt).mappings()]
        if len(items) <= limit:
            return Page(items=items)
        items = items[:limit]
        return Page(items=items, next_cursor=encode_cursor(items[-1].at, items[-1].id))

    # --- users --------------------------------------------------------------------

    def get_user(self, username: str) -> User | None:
        query = sa.select(t.users).where(t.users.c.username == username)
        with self.read() as conn:
            row = conn.execute(query).mappings().first()
        return t.user_from_row(row) if row else None

    def list_users(self) -> list[User]:
        query = sa.select(t.users).order_by(t.users.c.username)
        with self.read() as conn:
            return [t.user_from_row(r) for r in conn.execute(query).mappings()]

    def count_users(self) -> int:
        with self.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.users)).scalar_one())

    def save_user(self, user: User) -> None:
        """Insert or replace by username (tokens and sessions are kept)."""
        with self.write() as conn:
            self._upsert(conn, t.users, "username", [t.user_to_row(user)])

    def delete_user(self, username: str) -> bool:
        """Delete the user and, by cascade, their tokens and sessions."""
        with self.write() as conn:
            result = conn.execute(sa.delete(t.users).where(t.users.c.username == username))
        return result.rowcount > 0

    # --- API tokens ---------------------------------------------------------------

    def save_token(self, token: ApiToken) -> None:
        """Insert or replace by id; the user must exist."""
        with self.write() as conn:
            self._upsert(conn, t.api_tokens, "id", [t.token_to_row(token)])

    def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        query = sa.select(t.api_tokens).where(t.api_tokens.c.token_hash == token_hash)
        with self.read() as conn:
            row = conn.execute(query).mappings().first()
        return t.token_from_row(row) if row else None

    def list_tokens(self, username: str | None) -> list[ApiToken]:
        """Every token (revoked ones too), of one user or of all when ``username`` is None."""
        c = t.api_tokens.c
        query = sa.select(t.api_tokens).order_by(c.created_at, c.id)
        if username is not None:
            query = query.where(c.username == username)
        with self.read() as conn:
            return [t.token_from_row(r) for r in conn.execute(query).mappings()]

    def touch_token(self, token_id: str, at: datetime) -> None:
        c = t.api_tokens.c
        with self.write() as conn:
            conn.execute(sa.update(t.api_tokens).where(c.id == token_id).values(last_used_at=at))

    def revoke_token(self, token_id: str) -> bool:
        """Mark the token revoked; False when no token has that id."""
        c = t.api_tokens.c
        with self.write() as conn:
            result = conn.execute(
                sa.update(t.api_tokens).where(c.id == token_id).values(revoked=True)
            )
        return result.rowcount > 0

    # --- sessions -----------------------------------------------------------------

    def save_session(self, session: Session) -> None:
        """Insert or replace by ``id_hash``; the user must exist."""
        with self.write() as conn:
            self._upsert(conn, t.sessions, "id_hash", [t.session_to_row(session)])

    def get_session(self, id_hash: str) -> Session | None:
        """The session, expired or not: the caller compares ``expires_at`` to its clock."""
        query = sa.select(t.sessions).where(t.sessions.c.id_hash == id_hash)
        with self.read() as conn:
            row = conn.execute(query).mappings().first()
        return t.session_from_row(row) if row else None

    def delete_session(self, id_hash: str) -> None:
        with self.write() as conn:
            conn.execute(sa.delete(t.sessions).where(t.sessions.c.id_hash == id_hash))

    def delete_user_sessions(self, username: str) -> None:
        with self.write() as conn:
            conn.execute(sa.delete(t.sessions).where(t.sessions.c.username == username))

    def delete_expired_sessions(self, now: datetime) -> int:
        """Remove sessions that expired at or before ``now``; returns how many."""
        with self.write() as conn:
            result = conn.execute(sa.delete(t.sessions).where(t.sessions.c.expires_at <= now))
        return result.rowcount
