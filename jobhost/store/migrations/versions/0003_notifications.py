"""Notifications: one row per (fired rule x recipient), written before any attempt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # No foreign key to executions: retention may prune a run while its delivery
    # record is still worth keeping, and ``missed`` deliveries have no execution.
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("execution_id", sa.Text),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("rule_index", sa.Integer, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", Timestamp),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notification_deliveries"),
    )
    op.create_index(
        "ix_notification_deliveries_execution_id", "notification_deliveries", ["execution_id"]
    )
    # Resuming after a restart looks up the pending rows only.
    op.create_index("ix_notification_deliveries_status", "notification_deliveries", ["status"])


def downgrade() -> None:
    op.drop_index("ix_notification_deliveries_status", "notification_deliveries")
    op.drop_index("ix_notification_deliveries_execution_id", "notification_deliveries")
    op.drop_table("notification_deliveries")
