"""Escalation policy per group and urgency, absences with their cover, and the
follow-ups the worker does once per request (repeat pages, handovers, reminders)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:40:00

`escalation_policies` holds, per on-call group and urgency, the minutes a request
waits at each rung (comma-separated) and an optional repeat page at the same rung;
without a row the settings' `deadline_minutes` apply, as before. `rota_absences`
names the physician who covers an absent one's shifts during a window.
`request_follow_ups` records what the worker did once for a request, its unique key
keeping two workers from doing it twice.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "escalation_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("urgency", sa.String(length=20), nullable=False),
        sa.Column("rung_minutes", sa.String(length=200), nullable=False),
        sa.Column("repeat_after_minutes", sa.Integer(), nullable=True),
        sa.Column("updated_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["oncall_groups.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("group_id", "urgency", name="uq_escalation_policy"),
    )
    op.create_table(
        "rota_absences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("cover_user_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["cover_user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rota_absences") as batch:
        batch.create_index("ix_rota_absences_user_time", ["user_id", "starts_at", "ends_at"],
                           unique=False)
    op.create_table(
        "request_follow_ups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("ref", sa.Integer(), nullable=False),
        sa.Column("created_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "kind", "ref", name="uq_request_follow_up"),
    )


def downgrade() -> None:
    op.drop_table("request_follow_ups")
    with op.batch_alter_table("rota_absences") as batch:
        batch.drop_index("ix_rota_absences_user_time")
    op.drop_table("rota_absences")
    op.drop_table("escalation_policies")
