"""Four eyes on administrative changes; single-use passwords set by an
administrator; enrolment codes for a physician's signing credential

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:30:00

`pending_changes` holds what one administrator proposed (create or re-enable a
physician, recipient or administrator; change a physician's name, professional
id or address; attach a user to a destination) until a second one approves or
rejects it. `users.must_change_password` marks a password someone else chose.
`enrolment_codes` keeps the keyed hash of the one-time code a physician needs to
enrol a signing credential.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("proposed_by_id", sa.Integer(), nullable=True),
        sa.Column("proposed_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["proposed_by_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["decided_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pending_changes") as batch:
        batch.create_index("ix_pending_changes_status", ["status", "id"], unique=False)
        batch.create_index(batch.f("ix_pending_changes_user_id"), ["user_id"], unique=False)
    op.create_table(
        "enrolment_codes",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expires_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("user_id"),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("must_change_password", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("must_change_password")
    op.drop_table("enrolment_codes")
    with op.batch_alter_table("pending_changes") as batch:
        batch.drop_index(batch.f("ix_pending_changes_user_id"))
        batch.drop_index("ix_pending_changes_status")
    op.drop_table("pending_changes")
