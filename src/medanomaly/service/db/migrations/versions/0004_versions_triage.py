"""Model versions are activated explicitly (active marker, who and when) and carry a triage rule-out point.

Existing installations keep their behaviour: the highest version of each model becomes the active one.

Revision ID: 0004_versions_triage
Revises: 0003_login_security
Create Date: 2026-12-05 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_versions_triage"
down_revision = "0003_login_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision: add the columns, then mark each model's highest version active."""
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("activated_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("triage", sa.JSON(), nullable=True))
    versions = sa.table("model_versions", sa.column("id"), sa.column("name"), sa.column("version"),
                        sa.column("active", sa.Boolean()))
    other = versions.alias("other")
    highest = sa.select(sa.func.max(other.c.version)).where(other.c.name == versions.c.name).scalar_subquery()
    op.execute(versions.update().where(versions.c.version == highest).values(active=sa.true()))


def downgrade() -> None:
    """Revert this revision (the old schema serves the highest version; activation history is lost)."""
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("triage")
        batch_op.drop_column("activated_by")
        batch_op.drop_column("activated_at")
        batch_op.drop_column("active")
