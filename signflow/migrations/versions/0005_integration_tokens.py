"""API tokens belong to integration accounts, carry scopes and expire; a rate-limit
table (the /tsa endpoint)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:10:00

Release 0.1 issued bearer tokens to any account, without scope or expiry. Tokens
now belong to `integration` accounts only (bound to one destination, or to one
on-call group with `users.submit_group_id`), list their scopes (`api_tokens.scopes`)
and expire (`api_tokens.expires_at`). Every token that existed before belonged to
a person: all of them are revoked here (revoked_at = the time of the upgrade) and
given an expiry of that same instant. Issue new tokens to integration accounts.

`rate_limits` counts calls per fixed window (the time-stamping service).
"""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("submit_group_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("scopes", sa.String(length=200), nullable=False, server_default=""))
        batch.add_column(sa.Column("expires_at", signflow.models.UTCDateTime(timezone=True),
                                   nullable=True))
    # Every existing token belongs to a person (there was no integration role): revoked.
    # Stored as the models store UTC: naive on SQLite, aware on PostgreSQL.
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    tokens = sa.table("api_tokens", sa.column("revoked_at", sa.DateTime()),
                      sa.column("expires_at", sa.DateTime()))
    op.execute(tokens.update().where(tokens.c.revoked_at.is_(None)).values(revoked_at=now))
    op.execute(tokens.update().values(expires_at=now))
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=signflow.models.UTCDateTime(timezone=True),
                           nullable=False)
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("window_start", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_limits"),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("submit_group_id")
