"""Stored state of the audit log's Merkle tree (RFC 9162), so that roots and proofs
cost O(log n) reads instead of a pass over the whole log (see core.audit.tree).

`AuditTreeNode` holds the hash of every complete perfect subtree of 2**level leaves
with level >= core.audit.tree.STORED_LEVEL, written in the transaction of the append
that completes it and never changed; lower levels are rehashed from at most
2**STORED_LEVEL leaves. `AuditVerification` remembers the largest checkpoint that a
verification of the log found sound, where the next incremental one starts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, LargeBinary, SmallInteger
from sqlalchemy.orm import Mapped, mapped_column

from signflow.db import Base
from signflow.models.columns import UTCDateTime


class AuditTreeNode(Base):
    """MTH of leaves [idx * 2**level, (idx + 1) * 2**level)."""

    __tablename__ = "audit_tree_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditVerification(Base):
    """One row per verification that passed: the checkpoint it anchored on."""

    __tablename__ = "audit_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    checkpoint_id: Mapped[int] = mapped_column(BigInteger)
    full: Mapped[bool] = mapped_column(Boolean)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime())
