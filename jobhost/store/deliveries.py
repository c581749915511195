"""Notification deliveries in SQL (SQLite and PostgreSQL), synchronous.

The notifier calls these through ``engine.journal.call`` (the bounded database path).
A delivery is inserted as ``pending`` before its first attempt and updated after each
attempt, so a restart resumes exactly the deliveries that were not finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from jobhost.models import iso
from jobhost.store import tables as t
from jobhost.store.sql import SqlStore

PENDING, SENT, FAILED = "pending", "sent", "failed"

notification_deliveries = sa.Table(
    "notification_deliveries",
    t.metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("execution_id", sa.Text, index=True),
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("rule_index", sa.Integer, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", t.UTCDateTime),
    sa.Column("created_at", t.UTCDateTime, nullable=False),
    sa.Column("updated_at", t.UTCDateTime, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one recipient over one channel, and how sending it went."""

    id: str
    execution_id: str | None
    job_id: str
    rule_index: int
    event: str
    channel: str
    recipient: str
    status: str
    created_at: datetime
    updated_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        """The API's shape; the payload (message text) stays server-side."""
        return {
            "id": self.id,
            "execution_id": self.execution_id,
            "job_id": self.job_id,
            "rule_index": self.rule_index,
            "event": self.event,
            "channel": self.channel,
            "recipient": self.recipient,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": iso(self.next_attempt_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def _row(delivery: Delivery) -> dict[str, Any]:
    return t.to_row(delivery)


def _delivery(row: sa.RowMapping) -> Delivery:
    return t.from_row(Delivery, row)


def add_deliveries(store: SqlStore, deliveries: Sequence[Delivery]) -> None:
    """Insert new deliveries in one transaction."""
    if deliveries:
        with store.write() as conn:
            conn.execute(sa.insert(notification_deliveries), [_row(d) for d in deliveries])


def update_delivery(store: SqlStore, delivery: Delivery) -> None:
    """Record an attempt: status, attempts, last error, next attempt, updated_at."""
    c = notification_deliveries.c
    stmt = (
        sa.update(notification_deliveries)
        .where(c.id == delivery.id)
        .values(
            status=delivery.status,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            next_attempt_at=delivery.next_attempt_at,
            updated_at=delivery.updated_at,
        )
    )
    with store.write() as conn:
        conn.execute(stmt)


def pending_deliveries(store: SqlStore) -> list[Delivery]:
    """Every delivery not yet sent nor given up, oldest first."""
    c = notification_deliveries.c
    stmt = (
        sa.select(notification_deliveries).where(c.status == PENDING).order_by(c.created_at, c.id)
    )
    with store.read() as conn:
        return [_delivery(row) for row in conn.execute(stmt).mappings()]


def deliveries_of(store: SqlStore, execution_id: str) -> list[Delivery]:
    """The deliveries an execution caused, in the order they were planned."""
    c = notification_deliveries.c
    stmt = (
        sa.select(notification_deliveries)
        .where(c.execution_id == execution_id)
        .order_by(c.created_at, c.rule_index, c.recipient)
    )
    with store.read() as conn:
        return [_delivery(row) for row in conn.execute(stmt).mappings()]
