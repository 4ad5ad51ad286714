"""job lease names: a job's lease columns are named as a delivery's (holder, next_attempt_at)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 00:00:00

One lease mechanism (orthonode.index.leases) for jobs and deliveries: ``jobs.worker`` becomes
``jobs.holder`` and ``jobs.run_after`` becomes ``jobs.next_attempt_at``. Renames only, the values are
kept; in batch mode so that SQLite (which rebuilds the table) and PostgreSQL (ALTER ... RENAME) both
apply it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("worker", new_column_name="holder", existing_type=sa.String(length=128))
        batch_op.alter_column(
            "run_after", new_column_name="next_attempt_at", existing_type=sa.DateTime(timezone=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("holder", new_column_name="worker", existing_type=sa.String(length=128))
        batch_op.alter_column(
            "next_attempt_at", new_column_name="run_after", existing_type=sa.DateTime(timezone=True)
        )
