"""ORM tables. Times are stored as UTC and always come back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from signflow.db import Base
from signflow.models.enums import (
    AuditAction,
    ChangeKind,
    ChangeStatus,
    JobKind,
    JobStatus,
    RequestState,
    Role,
    Urgency,
)

E = TypeVar("E", bound=StrEnum)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on SQLite (no tz support) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TextEnum(TypeDecorator[E]):
    """A StrEnum stored as its text value (VARCHAR, no database enum type): adding a
    member needs no migration, and a value the code does not know fails loudly on read."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect) -> str | None:  # type: ignore[no-untyped-def]
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect) -> E | None:  # type: ignore[no-untyped-def]
        return None if value is None else self.enum(value)


class Destination(Base):
    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(TextEnum(Role, 20))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    professional_id: Mapped[str | None] = mapped_column(String(40))
    destination_id: Mapped[int | None] = mapped_column(ForeignKey("destinations.id"))
    # An integration account on the submit side: the on-call group it sends to (no
    # foreign key: groups already point at users, and restore orders tables by them).
    submit_group_id: Mapped[int | None] = mapped_column(Integer)
    # TOTP seed, encrypted by the storage master key (never stored in clear).
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped at logout / disable: every session cookie carrying an older value dies.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when someone else chose the password (an administrator): single use, the
    # user must choose their own before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)

    destination: Mapped[Destination | None] = relationship()

    # Flask-Login protocol, kept here so that core needs no Flask.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"


class PendingChange(Base):
    """An administrator's change that gives someone the power to read documents or to
    sign: it takes effect only when a second, different administrator approves."""

    __tablename__ = "pending_changes"
    __table_args__ = (Index("ix_pending_changes_status", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[ChangeKind] = mapped_column(TextEnum(ChangeKind, 20))
    status: Mapped[ChangeStatus] = mapped_column(TextEnum(ChangeStatus, 20), default=ChangeStatus.PENDING)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # For an update: the new values (JSON object: display_name, professional_id, email,
    # phone, destination_id).
    changes: Mapped[str] = mapped_column(Text, default="{}")
    proposed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    proposed_by: Mapped[User | None] = relationship(foreign_keys=[proposed_by_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])


class EnrolmentCode(Base):
    """The one-time code a physician needs to enrol a signing credential, sent to their
    own address: only its keyed hash is stored; short expiry, few attempts."""

    __tablename__ = "enrolment_codes"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OnCallGroup(Base):
    __tablename__ = "oncall_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    head_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    head: Mapped[User | None] = relationship()


class RotaShift(Base):
    """A physician on call for a group between two instants, at a ladder level.

    Level 0 is the primary on call, 1 the backup; the group's head of
    department is the last rung (see core.oncall).
    """

    __tablename__ = "rota_shifts"
    __table_args__ = (Index("ix_rota_group_time", "group_id", "starts_at", "ends_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("oncall_groups.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    level: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()
    group: Mapped[OnCallGroup] = relationship()


class SignatureRequest(Base):
    __tablename__ = "requests"
    __table_args__ = (
        Index("ix_requests_state_deadline", "state", "deadline_at"),
        Index("ix_requests_technician", "technician_id", "created_at"),
        Index("ix_requests_destination", "destination_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    technician_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The group whose signature is awaited now: route[step] (a request may need
    # signatures from several groups, in order).
    group_id: Mapped[int] = mapped_column(ForeignKey("oncall_groups.id"))
    step: Mapped[int] = mapped_column(Integer, default=0)
    # The physician who took the request (or was delegated it) at this step.
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"))
    title: Mapped[str] = mapped_column(String(200))
    urgency: Mapped[Urgency] = mapped_column(TextEnum(Urgency, 20))
    note: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[RequestState] = mapped_column(TextEnum(RequestState, 20), default=RequestState.PENDING)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    filename: Mapped[str] = mapped_column(String(200))
    original_sha256: Mapped[str] = mapped_column(String(64))
    # The normalised bytes: what is previewed and what is signed.
    document_sha256: Mapped[str] = mapped_column(String(64))
    page_count: Mapped[int] = mapped_column(Integer)
    removed_content: Mapped[str] = mapped_column(Text, default="")
    stamp_position: Mapped[str | None] = mapped_column(String(100))
    signed_sha256: Mapped[str | None] = mapped_column(String(64))
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    declined_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decline_reason: Mapped[str | None] = mapped_column(Text)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_reason: Mapped[str | None] = mapped_column(Text)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    technician: Mapped[User] = relationship(foreign_keys=[technician_id])
    group: Mapped[OnCallGroup] = relationship()
    destination: Mapped[Destination] = relationship()
    signed_by: Mapped[User | None] = relationship(foreign_keys=[signed_by_id])
    declined_by: Mapped[User | None] = relationship(foreign_keys=[declined_by_id])
    acknowledged_by: Mapped[User | None] = relationship(foreign_keys=[acknowledged_by_id])
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])
    route: Mapped[list[RouteStep]] = relationship(
        order_by="RouteStep.position", cascade="all, delete-orphan", lazy="selectin")


class RouteStep(Base):
    """One group of a request's route, in signing order (position 0 signs first)."""

    __tablename__ = "request_route"

    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"),
                                            primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("oncall_groups.id"))


class LoginThrottle(Base):
    """Failed logins counted per (account name, source address), per source and per
    known device; `key` is a keyed hash, so the table names no one."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RateLimit(Base):
    """Calls counted per fixed window, per key (a keyed name such as `tsa:<token id>`)."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    calls: Mapped[int] = mapped_column(Integer, default=0)


class Signature(Base):
    """One signature applied to a request's document (a request may need several)."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    credential_id: Mapped[int] = mapped_column(ForeignKey("signing_credentials.id"))
    certificate_serial: Mapped[str] = mapped_column(String(64))
    sha256_before: Mapped[str] = mapped_column(String(64))
    sha256_after: Mapped[str] = mapped_column(String(64))
    activation_id: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SigningCredential(Base):
    """A physician's key pair: the private key only exists wrapped under KDF(PIN) + pepper."""

    __tablename__ = "signing_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    algorithm: Mapped[str] = mapped_column(String(20))
    certificate_pem: Mapped[str] = mapped_column(Text)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    kdf_params: Mapped[str] = mapped_column(String(200))
    failed_pins: Mapped[int] = mapped_column(Integer, default=0)
    blocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The unblock code (PUK) given once at enrolment: its argon2id hash, and the
    # private key wrapped under it too (KDF parameters, NUL, wrapped key), so the
    # physician alone can re-wrap it under a new PIN once blocked.
    puk_hash: Mapped[str | None] = mapped_column(String(255))
    puk_wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    failed_puks: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class SignatureActivation(Base):
    """Single-use authorisation to sign one document hash with one credential."""

    __tablename__ = "signature_activations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    credential_id: Mapped[int] = mapped_column(ForeignKey("signing_credentials.id"))
    document_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


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
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_request_seq", "request_id", "seq"),
        Index("ix_audit_actor_seq", "actor_id", "seq"),
        Index("ix_audit_action_seq", "action", "seq"),
        Index("ix_audit_time", "time"),
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


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(100))
    # SHA-256 of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # ApiScope values, space-separated, sorted.
    scopes: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


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
