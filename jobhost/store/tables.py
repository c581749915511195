"""The SQL tables and the one place each value type is converted to and from a row.

The tables here describe the schema at ``head``; Alembic revisions in ``migrations/``
create it. A change to a table is both: edit it here, then add a revision (how: the
docstring of ``migrations/env.py``). ``tests/test_store.py`` checks that the two agree.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from jobhost.models import (
    ApiToken,
    AuditEvent,
    Execution,
    ExecutionStatus,
    Session,
    Trigger,
    User,
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL keeps ``timestamptz``. SQLite has no time zones: values are stored as
    naive UTC text so that they sort and compare correctly, and come back aware.
    A naive value is refused rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; pass an aware UTC value")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Constraint names are fixed so later revisions can refer to them on both backends.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("user", sa.Text),
    sa.Column("variables", sa.JSON, nullable=False),
    sa.Column("test", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("exit_code", sa.Integer),
    sa.Column("exit_signal", sa.Integer),
    sa.Column("result", sa.JSON(none_as_null=True)),
    sa.Column("error", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.Text),
    sa.Column("cpu_seconds", sa.Float),
    sa.Column("peak_rss_bytes", sa.BigInteger),
    sa.Column("output_bytes", sa.BigInteger, nullable=False),
    sa.Column("progress", sa.Float),
    sa.Column("progress_message", sa.Text),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("restart_count", sa.Integer, nullable=False),
    sa.Column("scheduled_for", UTCDateTime),
    sa.Column("owner", sa.Text),
    sa.Column("request_fingerprint", sa.Text),
    sa.Column("stopped_by", sa.Text),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("retry_of", sa.Text),
    sa.Column("next_attempt", sa.Text),
    sa.Column("due_at", UTCDateTime),
    sa.Column("triggered_by", sa.Text),
    sa.Column("chained", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("queue_position", sa.Integer),
    sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_executions_job_id_created_at_id", "job_id", "created_at", "id"),
    sa.Index("ix_executions_user_created_at", "user", "created_at"),
    sa.Index("ix_executions_status_created_at", "status", "created_at"),
    sa.Index("ix_executions_created_at_id", "created_at", "id"),
    sa.Index("ix_executions_retry_of", "retry_of"),
    sa.Index("ix_executions_triggered_by", "triggered_by"),
    sa.Index(
        "uq_executions_user_idempotency_key",
        "user",
        "idempotency_key",
        unique=True,
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    ),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("user", sa.Text),
    sa.Column("target", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("address", sa.Text),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Index("ix_audit_events_at_id", "at", "id"),
    sa.Index("ix_audit_events_user_at", "user", "at"),
    sa.Index("ix_audit_events_target_at", "target", "at"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.Text, primary_key=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),  # sorted list of role names
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Tokens and sessions belong to a user: deleting the user takes them along, so a
# deleted account can never be used through a leftover credential.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column(
        "username",
        sa.Text,
        sa.ForeignKey("users.username", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked", sa.Boolean, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column(
        "username",
        sa.Text,
        sa.ForeignKey("users.username", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("csrf_token", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


V = TypeVar("V")

# --- conversions: value → dict of column values, row → value -------------------------
# Each table's columns are its value type's fields, so one pair of functions serves all;
# only the fields stored differently (enums as text, sets as lists, flags as ints on
# SQLite, JSON that may be NULL) are spelled out.


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return names


def to_row(value: Any, **stored: Any) -> dict[str, Any]:
    """A value's fields as column values; ``stored`` replaces those stored differently."""
    row = {name: getattr(value, name) for name in _fields(type(value))}
    row.update(stored)
    return row


def from_row(cls: type[V], row: sa.RowMapping, **read: Any) -> V:
    """A ``cls`` value from a row; ``read`` replaces the fields read differently."""
    values = {name: row[name] for name in _fields(cls) if name not in read}
    return cls(**values, **read)


def execution_to_row(execution: Execution) -> dict[str, Any]:
    return to_row(
        execution,
        status=execution.status.value,
        trigger=execution.trigger.value,
        chained=list(execution.chained),
    )


def execution_from_row(row: sa.RowMapping) -> Execution:
    return from_row(
        Execution,
        row,
        status=ExecutionStatus(row["status"]),
        trigger=Trigger(row["trigger"]),
        variables=row["variables"] or {},
        test=bool(row["test"]),
        chained=tuple(row["chained"] or ()),
        dry_run=bool(row["dry_run"]),
    )


def audit_to_row(event: AuditEvent) -> dict[str, Any]:
    return to_row(event)


def audit_from_row(row: sa.RowMapping) -> AuditEvent:
    return from_row(AuditEvent, row, details=row["details"] or {})


def user_to_row(user: User) -> dict[str, Any]:
    return to_row(user, roles=sorted(user.roles))


def user_from_row(row: sa.RowMapping) -> User:
    return from_row(User, row, roles=frozenset(row["roles"] or ()), disabled=bool(row["disabled"]))


def token_to_row(token: ApiToken) -> dict[str, Any]:
    return to_row(token)


def token_from_row(row: sa.RowMapping) -> ApiToken:
    return from_row(ApiToken, row, revoked=bool(row["revoked"]))


def session_to_row(session: Session) -> dict[str, Any]:
    return to_row(session)


def session_from_row(row: sa.RowMapping) -> Session:
    return from_row(Session, row)
