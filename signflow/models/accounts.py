"""People and their access: accounts, destinations, four-eyes changes, enrolment codes,
login throttling, rate limits and API tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from signflow.db import Base
from signflow.models.columns import TextEnum, UTCDateTime
from signflow.models.enums import ChangeKind, ChangeStatus, Role


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
    # None: the account logs in only through an identity provider (the directory
    # checks the password, an OpenID Provider the person); no local password exists.
    password_hash: Mapped[str | None] = mapped_column(String(255))
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
    # The interface language the user chose ("fr", "en"); None: the site's.
    language: Mapped[str | None] = mapped_column(String(8))

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
