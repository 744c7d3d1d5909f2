"""Login throttling per (account, source), per source and per known device

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 02:20:00

Release 0.1 counted failed logins on the user row only (`users.failed_logins`),
so anyone could lock an account out. The counters now live in `login_throttle`,
keyed by a keyed hash; the old columns stay (unused) for a downgrade.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_login_throttle"),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
