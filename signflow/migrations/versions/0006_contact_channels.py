"""Contact channels per user and the delivery of every message per recipient and channel

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:40:00

`contact_channels`: a person's e-mail addresses, mobile and pager numbers (E.164),
each used for pages only once verified by a code sent through it.
`notification_deliveries`: one row per message, recipient and channel (queued, sent,
failed with the reason and the next attempt, skipped), and when the page was seen.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _utc(name: str, *, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, signflow.models.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "contact_channels",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        _utc("verified_at"),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        _utc("code_sent_at"),
        _utc("code_expires_at"),
        sa.Column("code_tries", sa.Integer(), nullable=False),
        _utc("created_at", nullable=False),
    )
    op.create_index("ix_contact_channels_user", "contact_channels", ["user_id", "position"])
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("recipient_key", sa.String(length=80), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _utc("next_attempt_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _utc("sent_at"),
        _utc("seen_at"),
        _utc("created_at", nullable=False),
    )
    op.create_index("ix_deliveries_job", "notification_deliveries", ["job_id"])
    op.create_index("ix_deliveries_request", "notification_deliveries", ["request_id", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_request", "notification_deliveries")
    op.drop_index("ix_deliveries_job", "notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_index("ix_contact_channels_user", "contact_channels")
    op.drop_table("contact_channels")
