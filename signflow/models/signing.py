"""Signing credentials, single-use activations and the signatures applied with them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from signflow.db import Base
from signflow.models.accounts import User
from signflow.models.columns import UTCDateTime


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
