"""Run policies: retry attempts, due runs (retries and run-at), chains, queue positions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Every run recorded before this revision was a first attempt that chained nothing.
    op.add_column(
        "executions", sa.Column("attempt", sa.Integer, nullable=False, server_default="1")
    )
    op.add_column("executions", sa.Column("retry_of", sa.Text))
    op.add_column("executions", sa.Column("next_attempt", sa.Text))
    op.add_column("executions", sa.Column("due_at", Timestamp))
    op.add_column("executions", sa.Column("triggered_by", sa.Text))
    op.add_column("executions", sa.Column("chained", sa.JSON, nullable=False, server_default="[]"))
    op.add_column("executions", sa.Column("queue_position", sa.Integer))
    op.create_index("ix_executions_retry_of", "executions", ["retry_of"])
    op.create_index("ix_executions_triggered_by", "executions", ["triggered_by"])


def downgrade() -> None:
    op.drop_index("ix_executions_triggered_by", table_name="executions")
    op.drop_index("ix_executions_retry_of", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        for column in (
            "queue_position",
            "chained",
            "triggered_by",
            "due_at",
            "next_attempt",
            "retry_of",
            "attempt",
        ):
            batch.drop_column(column)
