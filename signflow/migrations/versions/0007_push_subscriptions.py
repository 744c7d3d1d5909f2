"""Web Push subscriptions, one per device of a user

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 07:40:00

`push_subscriptions` holds each browser's RFC 8030 endpoint and RFC 8291 keys, the
keyed hash of the code that verifies it, and what the last sends did.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("p256dh", sa.String(length=100), nullable=False),
        sa.Column("auth", sa.String(length=40), nullable=False),
        sa.Column("user_agent_label", sa.String(length=80), nullable=False),
        sa.Column("created_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("verified_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_attempts", sa.Integer(), nullable=False),
        sa.Column("last_success_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_failure", sa.String(length=300), nullable=True),
        sa.Column("gone_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("endpoint"),
    )
    op.create_index("ix_push_subscriptions_user_id", "push_subscriptions", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_push_subscriptions_user_id", table_name="push_subscriptions")
    op.drop_table("push_subscriptions")
