"""Several servers on one store: stop and restart requests addressed to a run's owner,
the key that signs requests between servers, and where each instance can be reached.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "run_requests",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("execution_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("superuser", sa.Boolean, nullable=False),
        sa.Column("variables", sa.JSON),
        sa.Column("stopped_by", sa.Text),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("handled_at", Timestamp),
        sa.Column("answer", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_run_requests"),
    )
    op.create_index(
        "ix_run_requests_handled_at_execution_id", "run_requests", ["handled_at", "execution_id"]
    )
    op.create_table(
        "cluster_keys",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_keys"),
    )
    op.add_column("instances", sa.Column("url", sa.Text))
    op.add_column("instances", sa.Column("data_dir", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("data_dir")
        batch.drop_column("url")
    op.drop_table("cluster_keys")
    op.drop_index("ix_run_requests_handled_at_execution_id", "run_requests")
    op.drop_table("run_requests")
