"""TOTP second factor (RFC 6238 via pyotp): seeds sealed by the storage master key,
each code accepted once."""

from __future__ import annotations

from datetime import datetime

import pyotp
from sqlalchemy.orm import Session

from signflow.core.accounts import throttle
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, Throttled
from signflow.core.i18n import N_
from signflow.core.storage import decrypt_secret, encrypt_secret
from signflow.models import AuditAction, User

STEP_SECONDS = 30
ISSUER = "signflow"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, user: User) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)


def _purpose(user: User) -> str:
    return f"totp:{user.id}"


def seal_secret(master_key: bytes, user: User, secret: str) -> bytes:
    return encrypt_secret(master_key, secret.encode(), purpose=_purpose(user))


def required_for(user: User, roles: str) -> bool:
    return user.role in {r.strip() for r in roles.split(",") if r.strip()}


def _matching_step(secret: str, code: str, now: datetime, after: int | None) -> int | None:
    """The time step the code belongs to (current one or a neighbour, for clock
    drift), if it was not used already."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in (current, current - 1, current + 1):
        if after is not None and step <= after:
            continue
        if pyotp.utils.strings_equal(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def enable(session: Session, master_key: bytes, *, actor: Actor, sealed_secret: bytes, code: str,
           now: datetime) -> None:
    user = acting_user(session, actor)
    if user.totp_secret_enc is not None:
        raise Conflict(N_("Two-factor authentication is already on."))
    secret = decrypt_secret(master_key, sealed_secret, purpose=_purpose(user)).decode()
    step = _matching_step(secret, code, now, None)
    if step is None:
        raise InvalidInput(N_("That code does not match: check the time on your phone and try again."))
    user.totp_secret_enc = sealed_secret
    user.totp_last_step = step
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.MFA_ENABLED, method="totp")


def verify(session: Session, master_key: bytes, *, actor: Actor, code: str, now: datetime,
           throttle_key: bytes, device: str | None = None, step_up: bool = False) -> None:
    """Second factor at login, or (`step_up`) a fresh one before signing. Failures
    count with the password's throttle (per account and source, or per known device:
    see `throttle`): a stolen session guesses no faster than a stranger."""
    user = acting_user(session, actor)
    if user.totp_secret_enc is None:
        raise NotFound(N_("Two-factor authentication is not set up."))
    attempt = throttle.Attempt(throttle_key, user.username, actor.ip, device)
    wait = throttle.remaining(session, attempt, now=now)
    if wait:
        audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_THROTTLED,
                     factor="totp")
        raise Throttled(N_("Too many failed attempts: wait a moment and try again."), retry_after=wait)
    # The last used step, read under a lock: two requests with one code must not both
    # see it unused (SQLite: this takes the write lock, as on PostgreSQL the row lock).
    session.refresh(user, attribute_names=["totp_last_step"], with_for_update=True)
    secret = decrypt_secret(master_key, user.totp_secret_enc, purpose=_purpose(user)).decode()
    step = _matching_step(secret, code, now, user.totp_last_step)
    if step is None:
        throttle.record_failure(session, attempt, now=now)
        audit.append(session, now=now, actor=actor, factor="totp",
                     action=AuditAction.STEP_UP_FAILED if step_up
                     else AuditAction.LOGIN_SECOND_FACTOR_FAILED)
        raise AuthenticationFailed(N_("Wrong or already used code."))
    user.totp_last_step = step
    throttle.record_success(session, attempt)
    if step_up:
        audit.append(session, now=now, actor=actor, action=AuditAction.STEP_UP_SUCCEEDED,
                     factor="totp")
        return
    audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_SUCCEEDED,
                 factors=["password", "totp"])


def reset(session: Session, *, actor: Actor, user_id: int, now: datetime) -> User:
    """Admin: a lost phone. The user enrols a new authenticator at next login."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(N_("No such user."))
    user.totp_secret_enc = None
    user.totp_last_step = None
    user.session_version += 1
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.MFA_RESET, user=user.id)
    return user
