"""The enrolment code: a physician's signing credential is created only with a
one-time code sent to the physician's own e-mail or phone (recorded and approved by
two administrators), never shown to anyone at the hospital. Using it also proves
that address: it becomes the physician's first verified contact channel.

Only a keyed hash of the code is stored; it expires after 15 minutes and allows
five wrong tries; a new code replaces the old one (at most one a minute)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from signflow.core.accounts import contacts, notices
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Conflict, Forbidden, InvalidInput, WrongCode
from signflow.core.i18n import N_
from signflow.core.storage import derive_key
from signflow.models import AuditAction, EnrolmentCode, Role, User

CODE_DIGITS = 8
CODE_LIFETIME = timedelta(minutes=15)
RESEND_AFTER = timedelta(seconds=60)
MAX_CODE_TRIES = 5


def _digest(master_key: bytes, user_id: int, code: str) -> str:
    key = derive_key(master_key, "enrolment-code")
    return hmac.new(key, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()


def _normal(code: str) -> str:
    return "".join(c for c in code if c.isdigit())


def send_code(session: Session, master_key: bytes, *, actor: Actor, now: datetime) -> str:
    """A new code for the acting physician, queued to their own address. Returns it for
    the operator's break-glass path (`signflow demo`); a web view never shows it."""
    user = acting_user(session, actor)
    if user.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians hold a signing credential."))
    channel = contacts.account_channel(session, user, now=now)
    if channel is None:
        raise InvalidInput(N_("No e-mail address or phone number is recorded for you: ask the "
                              "administrators to add one (a second administrator approves it)."))
    row = session.get(EnrolmentCode, user.id)
    if row is not None and now - row.created_at < RESEND_AFTER:
        raise Conflict(N_("A code was sent less than a minute ago: check your e-mail or phone."))
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    if row is None:
        row = EnrolmentCode(user_id=user.id)
        session.add(row)
    row.code_hash, row.attempts = _digest(master_key, user.id, code), 0
    row.created_at, row.expires_at = now, now + CODE_LIFETIME
    # Through the account's own address only: the code coming back proves that channel.
    notices.tell(
        session, user, now=now, path="/inbox/signing-pin", channel_id=channel.id,
        subject=N_("Your signflow enrolment code"),
        body=N_("Your enrolment code is {code}. Enter it on the Signing PIN page "
                "within 15 minutes to create your signing key. Nobody at the hospital will ever ask "
                "you for it; if you did not ask for it, tell the administrators."),
        secret=code, master_key=master_key,
    )
    audit.append(session, now=now, actor=actor, action=AuditAction.CREDENTIAL_ENROLMENT_CODE_SENT,
                 to=channel.kind, channel=channel.id)
    return code


def consume_code(session: Session, master_key: bytes, *, actor: Actor, user: User, code: str,
                 now: datetime) -> None:
    """Check the code given at enrolment and use it up; a wrong one is counted (kept)."""
    row = session.get(EnrolmentCode, user.id)
    if row is None or row.expires_at <= now:
        raise InvalidInput(N_("Ask for an enrolment code first: it is sent to your e-mail or "
                              "phone "
                           "and lasts 15 minutes."))
    if row.attempts >= MAX_CODE_TRIES:
        raise Forbidden(N_("Too many wrong enrolment codes: ask for a new one."))
    if not hmac.compare_digest(row.code_hash, _digest(master_key, user.id, _normal(code))):
        row.attempts += 1
        session.flush()
        audit.append(session, now=now, actor=actor,
                     action=AuditAction.CREDENTIAL_ENROLMENT_CODE_FAILED, failures=row.attempts)
        raise WrongCode("Wrong enrolment code." + (
            " Ask for a new one." if row.attempts >= MAX_CODE_TRIES else ""))
    sent_at = row.created_at
    session.delete(row)
    session.flush()
    # The code came back: the address it was sent to reaches this physician (a channel
    # that appeared after the code was sent, the account's address changed, proves nothing).
    channel = contacts.account_channel(session, user, now=now)
    if channel is not None and channel.created_at <= sent_at:
        contacts.mark_verified(session, channel, actor=actor, now=now, proof="enrolment code")
