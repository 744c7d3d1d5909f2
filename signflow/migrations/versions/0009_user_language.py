"""The interface language each user may choose

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 13:00:00

`users.language` holds the language code the user chose ("fr", "en"); NULL, the
default, means the site language (SIGNFLOW_LANGUAGE).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("language")
