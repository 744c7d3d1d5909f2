"""Passkeys (WebAuthn credentials and their ceremonies' challenges) and recovery codes

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-03 13:00:00

`webauthn_credentials` holds each user's passkeys (public key, signature counter,
name, transports; revoked rows are kept for the audit trail). `webauthn_challenges`
holds the single-use challenge of a registration or authentication in progress,
found by its hash and deleted when used. `recovery_codes` holds the keyed hashes of
a user's ten single-use recovery codes.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webauthn_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("transports", sa.String(length=200), nullable=False),
        sa.Column("created_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id"),
    )
    with op.batch_alter_table("webauthn_credentials") as batch:
        batch.create_index("ix_webauthn_credentials_user_id", ["user_id"], unique=False)
    op.create_table(
        "webauthn_challenges",
        sa.Column("challenge_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("challenge_hash"),
    )
    with op.batch_alter_table("webauthn_challenges") as batch:
        batch.create_index("ix_webauthn_challenges_expires", ["expires_at"], unique=False)
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("created_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", signflow.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    with op.batch_alter_table("recovery_codes") as batch:
        batch.create_index("ix_recovery_codes_user_id", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_table("recovery_codes")
    op.drop_table("webauthn_challenges")
    op.drop_table("webauthn_credentials")
