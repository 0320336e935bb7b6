"""Results say whether the study was in the model's domain: status, domain reason and check; no score/decision else.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 12:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision: existing results were all decided, so they become ``scored``."""
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=32), server_default="scored", nullable=False))
        batch_op.add_column(sa.Column("domain_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("domain", sa.JSON(), server_default="{}", nullable=False))
        batch_op.alter_column("score", existing_type=sa.Float(), nullable=True)
        batch_op.alter_column("abnormal", existing_type=sa.Boolean(), nullable=True)


def downgrade() -> None:
    """Revert this revision; refused while out-of-domain results (no score, no decision) exist."""
    count = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM results WHERE status = 'out_of_domain'")).scalar()
    if count:
        msg = f"{count} out-of-domain results have no score or decision: the old schema cannot hold them"
        raise RuntimeError(msg)
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.alter_column("abnormal", existing_type=sa.Boolean(), nullable=False)
        batch_op.alter_column("score", existing_type=sa.Float(), nullable=False)
        batch_op.drop_column("domain")
        batch_op.drop_column("domain_reason")
        batch_op.drop_column("status")
