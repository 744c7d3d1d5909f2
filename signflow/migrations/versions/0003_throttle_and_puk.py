"""Login throttling per (account, source), per source and per known device;
signing credentials get an unblock code (PUK)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 02:20:00

Release 0.1 counted failed logins on the user row only (`users.failed_logins`),
so anyone could lock an account out. The counters now live in `login_throttle`,
keyed by a keyed hash; the old columns stay (unused) for a downgrade.

A signing credential gets an unblock code at enrolment (`puk_hash`, the key
also wrapped under it in `puk_wrapped_key`, `failed_puks`). Credentials from
before have none: once blocked, those still need an administrator's re-enrolment.
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
    with op.batch_alter_table("signing_credentials") as batch:
        batch.add_column(sa.Column("puk_hash", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("puk_wrapped_key", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("failed_puks", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("signing_credentials") as batch:
        batch.drop_column("failed_puks")
        batch.drop_column("puk_wrapped_key")
        batch.drop_column("puk_hash")
    op.drop_table("login_throttle")
