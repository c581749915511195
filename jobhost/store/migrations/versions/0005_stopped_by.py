"""Who or what stopped a run (a user, a token, a timeout, a server shutdown).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Runs recorded before this revision do not say who stopped them: NULL.
    op.add_column("executions", sa.Column("stopped_by", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("stopped_by")
