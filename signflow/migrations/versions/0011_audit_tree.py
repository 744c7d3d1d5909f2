"""Stored state of the audit Merkle tree, and the passed verifications

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-03 13:00:00

`audit_tree_nodes` holds the hash of every complete perfect subtree of 2**level
leaves, level >= 4, so that checkpoints and proofs cost O(log n) reads (see
signflow.core.audit.tree); it is backfilled here from the existing entries'
leaf hashes with the RFC 9162 node hash. `audit_verifications` records each
verification that passed, where the next incremental one starts.
"""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

import signflow.models

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen here (not imported) so that this migration keeps its meaning: the level
# from which nodes are stored, as signflow.core.audit.tree.STORED_LEVEL was then.
STORED_LEVEL = 4
BATCH = 10_000


def upgrade() -> None:
    nodes = op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "audit_verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("checkpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("verified_at", signflow.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _backfill(op.get_bind(), nodes)


def _backfill(conn: sa.Connection, nodes: sa.Table) -> None:
    """One pass over the leaf hashes in seq order, keeping the tree's right edge."""
    entries = sa.table("audit_entries", sa.column("seq", sa.BigInteger()),
                       sa.column("leaf_hash", sa.LargeBinary()))
    rows: list[dict[str, object]] = []
    stack: list[tuple[int, bytes]] = []
    result = conn.execute(
        sa.select(entries.c.seq, entries.c.leaf_hash).order_by(entries.c.seq)
        .execution_options(yield_per=BATCH)
    )
    for size, (seq, leaf) in enumerate(result, start=1):
        if seq != size - 1:
            raise RuntimeError(f"the audit log has no entry {size - 1}: fix it before upgrading")
        node, height = bytes(leaf), 0
        while stack and stack[-1][0] == height:
            node = hashlib.sha256(b"\x01" + stack.pop()[1] + node).digest()
            height += 1
            if height >= STORED_LEVEL:
                rows.append({"level": height, "idx": (size >> height) - 1, "hash": node})
        stack.append((height, node))
        if len(rows) >= BATCH:
            conn.execute(nodes.insert(), rows)
            rows.clear()
    if rows:
        conn.execute(nodes.insert(), rows)


def downgrade() -> None:
    op.drop_table("audit_verifications")
    op.drop_table("audit_tree_nodes")
