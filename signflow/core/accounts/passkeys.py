"""Passkeys (WebAuthn, with py_webauthn): several per user, each named and revocable
by its owner; used as the second factor after the password, as a fresh factor before
signing, and (for physicians) as a passwordless login.

Each ceremony's challenge is random, kept server side (`webauthn_challenges`, found by
its hash in the client data the browser signs), single use and short-lived. The
library checks the origin, the RP id hash, the signature and the user-presence flag;
here: the purpose and account the challenge was issued for, revocation, and a
signature counter that must grow (a passkey whose counter goes back is a clone).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import webauthn
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from signflow.core.accounts import throttle
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, InvalidInput, NotFound
from signflow.core.i18n import N_
from signflow.models import (
    AuditAction,
    PasskeyPurpose,
    Role,
    ServiceRole,
    User,
    WebAuthnChallenge,
    WebAuthnCredential,
)

CHALLENGE_TTL = timedelta(minutes=5)
TIMEOUT_MS = 120_000
MAX_NAME = 80
# Passwordless login is offered to the role that signs at night from a phone.
PASSWORDLESS_ROLES = frozenset({Role.PHYSICIAN})
REFUSED = N_("This passkey was not accepted. Try again, or use another way to log in.")


@dataclass(frozen=True)
class RelyingParty:
    """This site as authenticators see it: the RP id (host name) and the one origin
    whose assertions count."""

    rp_id: str
    origin: str
    name: str = "signflow"

    @classmethod
    def from_base_url(cls, base_url: str) -> RelyingParty:
        parts = urlsplit(base_url)
        if not parts.hostname:
            raise InvalidInput(N_("The site's public address has no host name."))
        return cls(rp_id=parts.hostname, origin=f"{parts.scheme}://{parts.netloc}")


def _digest(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


def _new_challenge(session: Session, *, purpose: PasskeyPurpose, user_id: int | None,
                   now: datetime) -> bytes:
    session.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at < now))
    challenge = secrets.token_bytes(32)
    session.add(WebAuthnChallenge(challenge_hash=_digest(challenge), purpose=purpose.value,
                                  user_id=user_id, expires_at=now + CHALLENGE_TTL))
    session.flush()
    return challenge


def _take_challenge(session: Session, client_data_json: bytes, *, purpose: PasskeyPurpose,
                    user_id: int | None, now: datetime) -> bytes | None:
    """The challenge the client data names, if it was issued here for `purpose` and
    `user_id` and is still valid; deleted either way (single use)."""
    try:
        challenge = base64url_to_bytes(json.loads(client_data_json)["challenge"])
    except (ValueError, KeyError, TypeError):
        return None
    row = session.get(WebAuthnChallenge, _digest(challenge), with_for_update=True)
    if row is None:
        return None
    session.delete(row)
    session.flush()
    if row.purpose != purpose.value or row.user_id != user_id or row.expires_at < now:
        return None
    return challenge


def active_passkeys(session: Session, user_id: int) -> list[WebAuthnCredential]:
    return list(session.scalars(select(WebAuthnCredential).where(
        WebAuthnCredential.user_id == user_id, WebAuthnCredential.revoked_at.is_(None))
        .order_by(WebAuthnCredential.id)))


def all_passkeys(session: Session, user_id: int) -> list[WebAuthnCredential]:
    """Active and revoked, for the owner's list."""
    return list(session.scalars(select(WebAuthnCredential).where(
        WebAuthnCredential.user_id == user_id).order_by(WebAuthnCredential.id)))


def _descriptor(row: WebAuthnCredential) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in row.transports.split(",")
                  if t in {a.value for a in AuthenticatorTransport}]
    return PublicKeyCredentialDescriptor(id=row.credential_id, transports=transports or None)


def registration_options(session: Session, rp: RelyingParty, *, actor: Actor, now: datetime) -> str:
    """The JSON options for navigator.credentials.create() for the acting user."""
    user = acting_user(session, actor)
    challenge = _new_challenge(session, purpose=PasskeyPurpose.REGISTER, user_id=user.id, now=now)
    options = webauthn.generate_registration_options(
        rp_id=rp.rp_id, rp_name=rp.name, user_name=user.username,
        user_display_name=user.display_name, user_id=str(user.id).encode(), challenge=challenge,
        timeout=TIMEOUT_MS,
        # A discoverable credential with user verification: the passkey alone can log in.
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[_descriptor(c) for c in active_passkeys(session, user.id)],
    )
    return webauthn.options_to_json(options)


def _client_data(response_json: str) -> bytes:
    try:
        raw = json.loads(response_json)["response"]["clientDataJSON"]
        return base64url_to_bytes(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(N_("The browser's passkey answer is malformed.")) from exc


def register(session: Session, rp: RelyingParty, *, actor: Actor, response_json: str, name: str,
             now: datetime) -> WebAuthnCredential:
    """Store the passkey the browser made from `registration_options`."""
    user = acting_user(session, actor)
    label = " ".join(name.split())[:MAX_NAME]
    if not label:
        raise InvalidInput(N_("Give the passkey a name (for example: my phone)."))
    challenge = _take_challenge(session, _client_data(response_json), purpose=PasskeyPurpose.REGISTER,
                                user_id=user.id, now=now)
    if challenge is None:
        raise InvalidInput(N_("This passkey request expired. Start again."))
    try:
        verified = webauthn.verify_registration_response(
            credential=response_json, expected_challenge=challenge, expected_rp_id=rp.rp_id,
            expected_origin=rp.origin, require_user_verification=True)
        transports = json.loads(response_json)["response"].get("transports") or []
    except (InvalidRegistrationResponse, InvalidJSONStructure, ValueError, KeyError) as exc:
        audit.append(session, now=now, actor=actor, action=AuditAction.PASSKEY_REFUSED,
                     purpose=PasskeyPurpose.REGISTER.value, problem=str(exc)[:200])
        raise InvalidInput(N_("The passkey could not be verified. Try again.")) from exc
    if session.scalar(select(WebAuthnCredential.id).where(
            WebAuthnCredential.credential_id == verified.credential_id)) is not None:
        raise InvalidInput(N_("This passkey is already registered."))
    row = WebAuthnCredential(
        user_id=user.id, credential_id=verified.credential_id,
        public_key=verified.credential_public_key, sign_count=verified.sign_count, name=label,
        transports=",".join(str(t) for t in transports)[:200], created_at=now)
    session.add(row)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.PASSKEY_REGISTERED,
                 passkey=row.id, name=label, credential=_short(row.credential_id))
    return row


def _short(credential_id: bytes) -> str:
    """A stable, short label of a credential id for the audit log."""
    return hashlib.sha256(credential_id).hexdigest()[:16]


def authentication_options(session: Session, rp: RelyingParty, *, purpose: PasskeyPurpose,
                           user_id: int | None, now: datetime) -> str:
    """The JSON options for navigator.credentials.get(): for a known account (second
    factor, step-up) its passkeys; for a passwordless login any discoverable one."""
    if purpose == PasskeyPurpose.REGISTER:
        raise InvalidInput(N_("Not an authentication."))
    allowed: list[PublicKeyCredentialDescriptor] = []
    if user_id is not None:
        allowed = [_descriptor(c) for c in active_passkeys(session, user_id)]
        if not allowed:
            raise NotFound(N_("You have no passkey."))
    challenge = _new_challenge(session, purpose=purpose, user_id=user_id, now=now)
    options = webauthn.generate_authentication_options(
        rp_id=rp.rp_id, challenge=challenge, timeout=TIMEOUT_MS, allow_credentials=allowed,
        user_verification=UserVerificationRequirement.REQUIRED if purpose == PasskeyPurpose.LOGIN
        else UserVerificationRequirement.PREFERRED)
    return webauthn.options_to_json(options)


def _refuse(session: Session, *, now: datetime, ip: str | None, user: User | None,
            purpose: PasskeyPurpose, problem: str, passkey: int | None = None) -> AuthenticationFailed:
    actor = (Actor.of(user, ip) if user is not None
             else Actor(id=None, name="anonymous", role=ServiceRole.ANONYMOUS, ip=ip))
    audit.append(session, now=now, actor=actor, action=AuditAction.PASSKEY_REFUSED,
                 purpose=purpose.value, problem=problem, passkey=passkey)
    return AuthenticationFailed(REFUSED)


def authenticate(session: Session, rp: RelyingParty, *, purpose: PasskeyPurpose,
                 user_id: int | None, response_json: str, now: datetime, ip: str | None) -> User:
    """Check an assertion made from `authentication_options`; returns its account.
    `user_id`: the account being confirmed (second factor, step-up), None for a
    passwordless login (the credential names its account)."""
    expected = session.get(User, user_id) if user_id is not None else None
    try:
        raw_id = base64url_to_bytes(json.loads(response_json)["rawId"])
    except (ValueError, KeyError, TypeError):
        raise _refuse(session, now=now, ip=ip, user=expected, purpose=purpose,
                      problem="malformed") from None
    challenge = _take_challenge(session, _client_data(response_json), purpose=purpose,
                                user_id=user_id, now=now)
    row = session.scalar(select(WebAuthnCredential).where(
        WebAuthnCredential.credential_id == raw_id).with_for_update())
    owner = session.get(User, row.user_id) if row is not None else None
    who = expected or owner
    if challenge is None:
        raise _refuse(session, now=now, ip=ip, user=who, purpose=purpose, problem="challenge")
    if row is None or owner is None or (expected is not None and owner.id != expected.id):
        raise _refuse(session, now=now, ip=ip, user=who, purpose=purpose, problem="unknown-passkey")
    if row.revoked_at is not None:
        raise _refuse(session, now=now, ip=ip, user=owner, purpose=purpose, problem="revoked",
                      passkey=row.id)
    if not owner.active or (purpose == PasskeyPurpose.LOGIN and owner.role not in PASSWORDLESS_ROLES):
        raise _refuse(session, now=now, ip=ip, user=owner, purpose=purpose, problem="not-allowed",
                      passkey=row.id)
    try:
        verified = webauthn.verify_authentication_response(
            credential=response_json, expected_challenge=challenge, expected_rp_id=rp.rp_id,
            expected_origin=rp.origin, credential_public_key=row.public_key,
            credential_current_sign_count=row.sign_count,
            require_user_verification=purpose == PasskeyPurpose.LOGIN)
    except (InvalidAuthenticationResponse, InvalidJSONStructure, ValueError) as exc:
        problem = "sign-count" if "sign count" in str(exc).lower() else str(exc)[:200]
        raise _refuse(session, now=now, ip=ip, user=owner, purpose=purpose, problem=problem,
                      passkey=row.id) from exc
    row.sign_count = verified.new_sign_count
    row.last_used_at = now
    session.flush()
    return owner


def record_login(session: Session, *, actor: Actor, factors: list[str], now: datetime,
                 throttle_key: bytes, device: str | None = None) -> None:
    """A login completed with a passkey (alone, or after the password): as after a right
    TOTP code, the failure counters of this account from here start over."""
    throttle.record_success(session, throttle.Attempt(throttle_key, actor.name, actor.ip, device))
    audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_SUCCEEDED,
                 factors=list(factors))


def revoke(session: Session, *, actor: Actor, passkey_id: int, now: datetime) -> WebAuthnCredential:
    """The owner withdraws one of their passkeys (lost phone, old key)."""
    user = acting_user(session, actor)
    row = session.get(WebAuthnCredential, passkey_id)
    if row is None or row.user_id != user.id:
        raise NotFound(N_("No such passkey."))
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
        audit.append(session, now=now, actor=actor, action=AuditAction.PASSKEY_REVOKED,
                     passkey=row.id, name=row.name, credential=_short(row.credential_id))
    return row


def encode_id(credential_id: bytes) -> str:
    return bytes_to_base64url(credential_id)
