"""Indexes for the turnaround statistics

Revision ID: 0013
Revises: 0008
Create Date: 2026-12-03 13:00:00

The manager's dashboard (signflow.core.stats) reads one period of uploads
(`ix_requests_created`) and, per request, its delivery and escalations in the audit
log (`ix_audit_request_action`). The manager role itself needs nothing: roles are
stored as text.
"""
from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.create_index("ix_requests_created", ["created_at", "group_id"], unique=False)
    with op.batch_alter_table("audit_entries") as batch:
        batch.create_index("ix_audit_request_action", ["request_id", "action", "time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_index("ix_audit_request_action")
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_created")
