"""Accounts vouched for by an identity provider; accounts without a local password

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 19:00:00

`external_identities` links an account to the immutable subject an identity
provider asserts for it (an OpenID Provider's professional id, the directory's
entryUUID / objectGUID), unique per provider. `users.password_hash` becomes
nullable: an account that logs in only through a provider has no local password.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "external_identities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("linked_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "subject", name="uq_external_identities_subject"),
    )
    with op.batch_alter_table("external_identities") as batch:
        batch.create_index("ix_external_identities_user_id", ["user_id"], unique=False)
    with op.batch_alter_table("users") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=False)
    with op.batch_alter_table("external_identities") as batch:
        batch.drop_index("ix_external_identities_user_id")
    op.drop_table("external_identities")
