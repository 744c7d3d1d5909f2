"""Second factors beyond TOTP: passkeys (WebAuthn credentials), the single-use
challenges of their ceremonies, recovery codes; and the links between an account and
the identity providers (OpenID Connect, the hospital directory) that vouch for it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from signflow.db import Base
from signflow.models.columns import UTCDateTime


class WebAuthnCredential(Base):
    """A passkey: the public key an authenticator made for this site, named by its owner.
    A revoked row is kept (the audit log names it) but never accepted again."""

    __tablename__ = "webauthn_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The authenticator's credential id (raw bytes), unique across every user: a
    # passwordless login finds its account by it.
    credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    # COSE public key as the authenticator sent it.
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    # The authenticator's signature counter: a value that does not grow means a clone.
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(80))
    # WebAuthn transports ("internal", "hybrid", "usb"...), comma-separated: the browser
    # uses them to offer the right authenticator.
    transports: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebAuthnChallenge(Base):
    """One ceremony's challenge, kept on the server (not in the cookie, which a replay
    could bring back): found by its hash, deleted when used, short-lived."""

    __tablename__ = "webauthn_challenges"
    __table_args__ = (Index("ix_webauthn_challenges_expires", "expires_at"),)

    # SHA-256 (hex) of the challenge bytes, which the client data carries back.
    challenge_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # PasskeyPurpose value: register, login, second_factor, step_up.
    purpose: Mapped[str] = mapped_column(String(20))
    # The account the ceremony is for; none for a passwordless login.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RecoveryCode(Base):
    """One of a user's ten single-use recovery codes: only its keyed hash is stored.
    A used code stays (with its time) so that a reuse is refused by name."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # HMAC-SHA256 (hex) of the normalised code under a key derived from the master key.
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Which set the code belongs to: regenerating deletes the previous set.
    batch: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ExternalIdentity(Base):
    """An account as an identity provider knows it: the provider's name (an OpenID
    Provider configured on the site, or the directory) and the immutable subject it
    asserts (the national professional id, the directory's entryUUID / objectGUID).
    Accounts are found by this link, never by e-mail."""

    __tablename__ = "external_identities"
    __table_args__ = (UniqueConstraint("provider", "subject", name="uq_external_identities_subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
