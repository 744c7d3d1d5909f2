"""Step-up before signing: a signature needs a second factor (TOTP or a passkey) used
within the last `minutes` (SIGNFLOW_STEP_UP_MINUTES); the web layer keeps the time of
the last one in the login state and asks again on the sign page when it is older.

Who is asked: a physician who has a second factor enrolled, or whose role must use one
(`mfa_roles`). A physician with neither signs with password and PIN, as before: there
is nothing fresh to ask for, and the guard that sends required roles to enrolment
keeps that case to sites that chose it. A recovery code is not a fresh factor: it is
a printed stand-in for a lost phone, good for logging in and enrolling a new one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from signflow.core.accounts import factors, mfa, passkeys
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Forbidden
from signflow.core.i18n import N_
from signflow.models import AuditAction, PasskeyPurpose, User


def applies_to(session: Session, user: User, *, mfa_roles: str) -> bool:
    return factors.has_second_factor(session, user) or mfa.required_for(user, mfa_roles)


def is_fresh(last_factor_at: datetime | None, *, now: datetime, minutes: int) -> bool:
    return last_factor_at is not None and now - last_factor_at <= timedelta(minutes=minutes)


def needed(session: Session, user: User, *, last_factor_at: datetime | None, now: datetime,
           minutes: int, mfa_roles: str) -> bool:
    """True when `user` must confirm a second factor before signing now."""
    return applies_to(session, user, mfa_roles=mfa_roles) and not is_fresh(
        last_factor_at, now=now, minutes=minutes)


def require_enrolment_allowed(session: Session, user: User, *, last_factor_at: datetime | None,
                              recovered_at: datetime | None, now: datetime, minutes: int) -> None:
    """A new passkey is a new way past the step-up, so adding one takes what the step-up
    takes (a fresh factor), or a recovery code just used (the lost phone), or having no
    second factor yet: a stolen session cannot add its own."""
    if (factors.has_second_factor(session, user)
            and not is_fresh(last_factor_at, now=now, minutes=minutes)
            and not is_fresh(recovered_at, now=now, minutes=minutes)):
        raise Forbidden(N_("To add a passkey, confirm it is you first: log out, then log in again "
                           "with your current passkey or authenticator app."))


def record_required(session: Session, *, actor: Actor, request_id: int, now: datetime) -> None:
    audit.append(session, now=now, actor=actor, action=AuditAction.STEP_UP_REQUIRED,
                 request_id=request_id)


def confirm(session: Session, master_key: bytes, rp: passkeys.RelyingParty, *, actor: Actor,
            code: str | None, passkey_response: str | None, now: datetime, throttle_key: bytes,
            device: str | None = None) -> str:
    """Check the fresh factor given on the sign page; returns which one it was."""
    user = acting_user(session, actor)
    if passkey_response:
        passkeys.authenticate(session, rp, purpose=PasskeyPurpose.STEP_UP, user_id=user.id,
                              response_json=passkey_response, now=now, ip=actor.ip)
        audit.append(session, now=now, actor=actor, action=AuditAction.STEP_UP_SUCCEEDED,
                     factor=factors.PASSKEY)
        return factors.PASSKEY
    if user.totp_secret_enc is None:
        raise Forbidden(N_("Confirm with your passkey before signing."))
    mfa.verify(session, master_key, actor=actor, code=code or "", now=now,
               throttle_key=throttle_key, device=device, step_up=True)
    return factors.TOTP
