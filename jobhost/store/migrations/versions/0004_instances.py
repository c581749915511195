"""Instances: who owns each active run, by a lease renewed on a heartbeat; and what an
idempotent start asked for, so that a key reused for another request is refused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("lease_expires_at", Timestamp, nullable=False),
        sa.Column("draining", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
    )
    # Runs recorded before this revision have no owner: the next start reconciles them.
    op.add_column("executions", sa.Column("owner", sa.Text))
    op.add_column("executions", sa.Column("request_fingerprint", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("request_fingerprint")
        batch.drop_column("owner")
    op.drop_table("instances")
