"""Reports are signed off (who, when, which result and opinion; the report is locked) and take addenda afterwards.

Revision ID: 0005_report_signoff
Revises: 0004_versions_triage
Create Date: 2026-12-05 14:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_report_signoff"
down_revision = "0004_versions_triage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision: the ``report_signoffs`` and ``report_addenda`` tables."""
    op.create_table(
        "report_signoffs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("opinion_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["result_id"], ["results.id"]),
        sa.ForeignKeyConstraint(["opinion_id"], ["opinions.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id"),
    )
    op.create_table(
        "report_addenda",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("signoff_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["signoff_id"], ["report_signoffs.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_report_addenda_signoff_id", "report_addenda", ["signoff_id"])


def downgrade() -> None:
    """Revert this revision; refused while signed reports exist (their lock would be lost)."""
    count = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM report_signoffs")).scalar()
    if count:
        msg = f"{count} signed-off reports exist: the old schema cannot hold their sign-off"
        raise RuntimeError(msg)
    op.drop_index("ix_report_addenda_signoff_id", table_name="report_addenda")
    op.drop_table("report_addenda")
    op.drop_table("report_signoffs")
