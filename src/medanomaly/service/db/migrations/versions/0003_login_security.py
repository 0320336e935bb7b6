"""Login protection: throttle state per user name and per client address, when a password was last changed.

Revision ID: 0003_login_security
Revises: 0002
Create Date: 2026-12-05 14:20:00
"""

from __future__ import annotations

revision = "0003_login_security"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision (filled in below)."""


def downgrade() -> None:
    """Revert this revision."""
