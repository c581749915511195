"""Initial schema: executions, audit events, users, API tokens, sessions.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Aware timestamps: ``timestamptz`` on PostgreSQL; on SQLite the store's UTCDateTime
# type writes naive UTC text into this column.
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("user", sa.Text),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("test", sa.Boolean, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp),
        sa.Column("ended_at", Timestamp),
        sa.Column("exit_code", sa.Integer),
        sa.Column("exit_signal", sa.Integer),
        sa.Column("result", sa.JSON),
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
        sa.Column("scheduled_for", Timestamp),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
    )
    op.create_index(
        "ix_executions_job_id_created_at_id", "executions", ["job_id", "created_at", "id"]
    )
    op.create_index("ix_executions_user_created_at", "executions", ["user", "created_at"])
    op.create_index("ix_executions_status_created_at", "executions", ["status", "created_at"])
    op.create_index("ix_executions_created_at_id", "executions", ["created_at", "id"])
    op.create_index(
        "uq_executions_user_idempotency_key",
        "executions",
        ["user", "idempotency_key"],
        unique=True,
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("user", sa.Text),
        sa.Column("target", sa.Text),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("details", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at_id", "audit_events", ["at", "id"])
    op.create_index("ix_audit_events_user_at", "audit_events", ["user", "at"])
    op.create_index("ix_audit_events_target_at", "audit_events", ["target", "at"])

    op.create_table(
        "users",
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_users"),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp),
        sa.Column("last_used_at", Timestamp),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(
            ["username"],
            ["users.username"],
            name="fk_api_tokens_username_users",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_username", "api_tokens", ["username"])

    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.Text, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_sessions"),
        sa.ForeignKeyConstraint(
            ["username"],
            ["users.username"],
            name="fk_sessions_username_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sessions_username", "sessions", ["username"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("audit_events")
    op.drop_table("executions")
