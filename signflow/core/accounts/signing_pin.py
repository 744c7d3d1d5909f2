"""The lifecycle of a physician's signing credential, audited.

The physician chooses the PIN, and unblocks a blocked key alone with the unblock
code (PUK) shown once at enrolment; an administrator can only revoke (forcing a
re-enrolment), never set a PIN or unlock a key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from signflow.core.accounts import enrolment
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Conflict, Forbidden, InvalidInput, NotFound, WrongPin
from signflow.core.i18n import N_
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.core.pki import keystore as pki
from signflow.models import AuditAction, Role, SigningCredential, User


def set_signing_pin(
    session: Session, keys: pki.KeyMaterial, actor: Actor, *, current_pin: str | None,
    new_pin: str, now: datetime, algorithm: str = "ec", puk: str | None = None,
    enrolment_code: str | None = None,
) -> SigningCredential:
    """Enrol (no usable credential yet) or change the PIN (re-wraps the same key).
    `puk`: at enrolment, the unblock code the physician is shown (once).
    `enrolment_code`: at enrolment, the code sent to the physician's own address
    (see `enrolment`); without it no credential is created."""
    user = acting_user(session, actor)
    if user.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians hold a signing credential."))
    creds.validate_pin_policy(new_pin)
    credential = creds.active_credential(session, user.id)
    if credential is not None and credential.blocked_at is None:
        if not current_pin:
            raise InvalidInput(N_("Enter your current signing PIN."))
        creds.change_pin(session, keys, credential, current_pin, new_pin, now=now)
        audit.append(session, now=now, actor=actor, action=AuditAction.CREDENTIAL_PIN_CHANGED,
                     credential=credential.serial)
        return credential
    if credential is not None:
        # Blocked: the physician's unblock code (`unblock_signing_pin`), else an
        # administrator's re-enrolment (revocation) reopens enrolment.
        raise Forbidden(N_("Your signing credential is blocked: unblock it with your unblock code."))
    if not enrolment_code:
        raise InvalidInput(N_("Enter the enrolment code sent to your e-mail or phone "
                           "(ask for one on this page)."))
    enrolment.consume_code(session, keys.master_key, actor=actor, user=user, code=enrolment_code,
                           now=now)
    created = creds.enrol(session, keys, user, new_pin, now=now, algorithm=algorithm, puk=puk)
    audit.append(session, now=now, actor=actor, action=AuditAction.CREDENTIAL_ENROLLED,
                 credential=created.serial, algorithm=created.algorithm,
                 not_after=audit.rfc3339(created.not_after))
    return created


def revoke_credential(
    session: Session, *, actor: Actor, user_id: int, reason: str, now: datetime
) -> SigningCredential:
    """Revoke the user's current certificate; the physician then enrols anew."""
    user = session.get(User, user_id)
    if user is None or user.role != Role.PHYSICIAN:
        raise NotFound(N_("No such physician."))
    credential = creds.active_credential(session, user.id)
    if credential is None:
        raise NotFound(N_("This physician has no active signing credential."))
    revocation.revoke(session, credential, reason=reason, now=now)
    audit.append(session, now=now, actor=actor, action=AuditAction.CREDENTIAL_REVOKED, user=user.id,
                 credential=credential.serial, reason=reason)
    return credential


def unblock_signing_pin(
    session: Session, keys: pki.KeyMaterial, actor: Actor, *, puk: str, new_pin: str,
    now: datetime,
) -> SigningCredential:
    """The physician, logged in with a second factor, unblocks their own blocked key
    with the unblock code given at enrolment and chooses a new PIN. No admin needed."""
    user = acting_user(session, actor)
    if user.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians hold a signing credential."))
    if user.totp_secret_enc is None:
        raise Forbidden(N_("Turn on two-factor authentication before unblocking your signing key."))
    credential = creds.active_credential(session, user.id)
    if credential is None:
        raise NotFound(N_("You have no signing credential."))
    if credential.blocked_at is None:
        raise Conflict(N_("Your signing key is not blocked."))
    try:
        creds.unblock(session, keys, credential, puk, new_pin, now=now)
    except WrongPin:
        audit.append(session, now=now, actor=actor, action=AuditAction.CREDENTIAL_UNBLOCK_FAILED,
                     credential=credential.serial, failures=credential.failed_puks)
        raise
    audit.append(session, now=now, actor=actor, action=AuditAction.CREDENTIAL_UNBLOCKED,
                 credential=credential.serial)
    return credential
