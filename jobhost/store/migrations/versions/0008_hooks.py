"""Run policies outside the execution core: dry runs recorded as such, and job webhooks
(a secret URL per job, stored as a hash).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("salt", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_webhooks"),
        sa.UniqueConstraint("token_hash", name="uq_webhooks_token_hash"),
    )
    op.add_column(
        "executions",
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("webhooks")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("dry_run")
