"""Stored content and bookkeeping: encrypted blobs, the audit log and its checkpoints,
the job outbox and small settings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from signflow.db import Base
from signflow.models.columns import TextEnum, UTCDateTime
from signflow.models.enums import AuditAction, JobKind, JobStatus


class Blob(Base):
    """Envelope-encrypted content addressed by the SHA-256 of its plaintext."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    # NULL when the filesystem backend holds the ciphertext.
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditHead(Base):
    """Single row locked by every append: serialises writers so seq has no gap."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditEntry(Base):
    """One entry of the append-only audit log, a leaf of its Merkle tree (RFC 9162); the
    indexes serve the auditor's filters, each read in seq order."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_request_seq", "request_id", "seq"),
        Index("ix_audit_actor_seq", "actor_id", "seq"),
        Index("ix_audit_action_seq", "action", "seq"),
        Index("ix_audit_time", "time"),
        # A request's delivery and escalations, for the statistics.
        Index("ix_audit_request_action", "request_id", "action", "time"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[AuditAction] = mapped_column(TextEnum(AuditAction, 60))
    request_id: Mapped[int | None] = mapped_column(Integer)
    # The canonical (RFC 8785) JSON bytes: the Merkle leaf is SHA-256(0x00 || line).
    line: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class Checkpoint(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Job(Base):
    """Outbox of background work (notifications, escalations, checkpoints)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "status", "run_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(TextEnum(JobKind, 40))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[JobStatus] = mapped_column(TextEnum(JobStatus, 20), default=JobStatus.PENDING)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Setting(Base):
    """Small persistent counters and values (CRL numbers...)."""

    __tablename__ = "settings"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
