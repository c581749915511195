"""Schedules: per-job overrides of job.json's schedule, and one row per claimed fire.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedule_overrides",
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("schedule", sa.Text),
        sa.Column("enabled", sa.Boolean),
        sa.Column("variables", sa.JSON),
        sa.Column("timezone", sa.Text),
        sa.Column("updated_by", sa.Text),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_schedule_overrides"),
    )
    # The primary key is the claim: a second insert of one (job, time) fails, so no
    # fire runs twice, whichever process or life of the server tries.
    op.create_table(
        "schedule_fires",
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("scheduled_for", Timestamp, nullable=False),
        sa.Column("outcome", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("execution_id", sa.Text),
        sa.Column("recorded_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "scheduled_for", name="pk_schedule_fires"),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("schedule_overrides")
