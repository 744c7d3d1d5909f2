"""Separation of duties: no single administrator gives anyone the power to read
documents or to sign.

The rule: an account whose role reads documents it did not produce or signs
(physician, recipient) or approves such changes (admin) becomes usable only when a
second, different administrator approves. So creating or re-enabling one, changing a
physician's name, professional id or address (where the enrolment code goes), or
attaching a recipient to a destination is a *pending change*. Technicians (who see
only what they upload), auditors (metadata, never contents) and managers (aggregate
statistics only) are created at once.
Taking power away (disabling) never waits. Both steps are audited and the person
concerned is told. The `signflow` command line (the operator's break-glass path,
audited as the operator) is not subject to this.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import identity, notices
from signflow.core.accounts import users as accounts
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from signflow.core.i18n import N_
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.models import (
    AuditAction,
    ChangeKind,
    ChangeStatus,
    Destination,
    PendingChange,
    Role,
    User,
)

FOUR_EYES_ROLES = frozenset({Role.PHYSICIAN, Role.RECIPIENT, Role.ADMIN})
# The fields an update may change; for a four-eyes role every one of them waits.
FIELDS = ("display_name", "professional_id", "email", "phone", "destination_id")
_DESCRIBE = {
    ChangeKind.CREATE_USER: N_("a new account"),
    ChangeKind.ENABLE_USER: N_("re-enabling the account"),
    ChangeKind.UPDATE_USER: N_("a change to the account"),
}


def needs_four_eyes(role: str) -> bool:
    return role in FOUR_EYES_ROLES


def _admin(session: Session, actor: Actor) -> User:
    user = accounts.acting_user(session, actor)
    if user.role != Role.ADMIN:
        raise Forbidden(N_("Only administrators manage accounts."))
    return user


def _propose(session: Session, *, actor: Actor, now: datetime, kind: ChangeKind, user: User,
             changes: dict[str, Any] | None = None) -> PendingChange:
    if session.scalar(select(PendingChange.id).where(
            PendingChange.user_id == user.id, PendingChange.status == ChangeStatus.PENDING)):
        raise Conflict(N_("A change to this account already awaits approval: approve or reject "
                          "it first."))
    change = PendingChange(kind=kind, status=ChangeStatus.PENDING, user_id=user.id,
                           changes=json.dumps(changes or {}, sort_keys=True),
                           proposed_by_id=actor.id, proposed_at=now)
    session.add(change)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.ADMIN_CHANGE_PROPOSED,
                 change=change.id, kind=kind, user=user.id, username=user.username, role=user.role,
                 fields=sorted((changes or {}).keys()))
    notices.tell(session, user, now=now,
                 subject=N_("signflow: a change to your account awaits approval"),
                 body=N_("An administrator proposed %(what)s for you (%(username)s). "
                         "It takes effect only when a second administrator approves it. "
                         "If you did not expect this, tell the administrators."),
                 params={"username": user.username}, phrases={"what": _DESCRIBE[kind]})
    return change


def create_user(session: Session, *, actor: Actor, now: datetime, role: str, **fields: Any,
                ) -> tuple[User, PendingChange | None]:
    """An administrator creates an account; the password they set is single use. For a
    four-eyes role the account stays disabled until a second administrator approves."""
    _admin(session, actor)
    held = needs_four_eyes(role)
    user = accounts.create_user(session, actor=actor, now=now, role=role, active=not held,
                                must_change_password=True, **fields)
    change = _propose(session, actor=actor, now=now, kind=ChangeKind.CREATE_USER, user=user) if held else None
    return user, change


def hold_new_account(session: Session, *, actor: Actor, now: datetime, user: User,
                     source: str) -> PendingChange:
    """An account that appeared without an administrator (the hospital directory's first
    login, or self-enrolment through an identity provider) and whose role needs four
    eyes: it stays disabled until an administrator approves (the directory's groups, or
    the provider's verified identity, were the first pair of eyes, so any admin may).
    `source` is kept with the change, so the approving administrator sees where it came from."""
    return _propose(session, actor=actor, now=now, kind=ChangeKind.CREATE_USER, user=user,
                    changes={"source": source})


def set_active(session: Session, *, actor: Actor, now: datetime, user_id: int, active: bool,
               ) -> PendingChange | None:
    """Disable at once; re-enable at once, or pending approval for a four-eyes role."""
    _admin(session, actor)
    user = accounts.get_user(session, user_id)
    if active and not user.active and needs_four_eyes(user.role):
        return _propose(session, actor=actor, now=now, kind=ChangeKind.ENABLE_USER, user=user)
    accounts.set_user_active(session, actor=actor, user_id=user_id, active=active, now=now)
    return None


def _clean(session: Session, user: User, raw: dict[str, Any]) -> dict[str, Any]:
    """The validated new values that differ from the account's current ones."""
    values: dict[str, Any] = {
        "display_name": identity.display_name(str(raw.get("display_name") or "")),
        "professional_id": identity.professional_id(raw.get("professional_id")),
        "email": (raw.get("email") or "").strip() or None,
        "phone": (raw.get("phone") or "").strip() or None,
        "destination_id": raw.get("destination_id") or None,
    }
    if values["destination_id"] is not None:
        if user.role != Role.RECIPIENT:
            raise InvalidInput(N_("Only recipients belong to a destination service."))
        if session.get(Destination, values["destination_id"]) is None:
            raise InvalidInput(N_("Unknown destination service."))
    elif user.role == Role.RECIPIENT:
        raise InvalidInput(N_("A recipient belongs to a destination service."))
    return {k: v for k, v in values.items() if getattr(user, k) != v}


def update_user(session: Session, *, actor: Actor, now: datetime, user_id: int,
                **raw: Any) -> PendingChange | None:
    """Change name, professional id, e-mail, phone or destination: pending approval for a
    four-eyes role, at once (audited) otherwise."""
    _admin(session, actor)
    user = accounts.get_user(session, user_id)
    changes = _clean(session, user, raw)
    if not changes:
        raise InvalidInput(N_("Nothing to change."))
    identity.require_unique_professional_id(session, changes.get("professional_id"), user_id=user.id)
    if needs_four_eyes(user.role):
        return _propose(session, actor=actor, now=now, kind=ChangeKind.UPDATE_USER, user=user,
                        changes=changes)
    _apply_update(session, actor=actor, now=now, user=user, changes=changes)
    return None


def _apply_update(session: Session, *, actor: Actor, now: datetime, user: User,
                  changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        setattr(user, name, value)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.USER_UPDATED, user=user.id,
                 fields=sorted(changes))
    credential = creds.active_credential(session, user.id)
    if credential is not None and {"display_name", "professional_id"} & changes.keys():
        # The certificate names the old identity: the physician enrols again.
        revocation.revoke(session, credential, reason="superseded", now=now)
        audit.append(session, now=now, actor=actor, action=AuditAction.CREDENTIAL_REVOKED,
                     user=user.id, credential=credential.serial, reason="superseded")


def _pending(session: Session, change_id: int) -> PendingChange:
    change = session.get(PendingChange, change_id)
    if change is None:
        raise NotFound(N_("No such change."))
    if change.status != ChangeStatus.PENDING:
        raise Conflict(N_('This change was already %(status)s.'), params={'status': change.status})
    return change


def approve(session: Session, *, actor: Actor, now: datetime, change_id: int) -> PendingChange:
    """A second administrator approves: the change takes effect now."""
    approver = _admin(session, actor)
    change = _pending(session, change_id)
    if change.proposed_by_id == approver.id:
        raise Forbidden(N_("You proposed this change: a second administrator must approve it."))
    if change.user_id == approver.id:
        raise Forbidden(N_("A change to your own account needs another administrator."))
    user = change.user
    if change.kind == ChangeKind.UPDATE_USER:
        changes: dict[str, Any] = json.loads(change.changes)
        identity.require_unique_professional_id(session, changes.get("professional_id"),
                                                 user_id=user.id, including_pending=False)
        _apply_update(session, actor=actor, now=now, user=user, changes=changes)
    else:
        identity.require_unique_professional_id(session, user.professional_id, user_id=user.id,
                                                 including_pending=False)
        accounts.set_user_active(session, actor=actor, user_id=user.id, active=True, now=now)
    _decide(session, change, actor=actor, now=now, status=ChangeStatus.APPROVED)
    notices.tell(session, user, now=now, subject=N_("signflow: your account was changed"),
                 body=N_("Two administrators approved %(what)s for you "
                         "(%(username)s). If you did not expect this, tell the administrators."),
                 params={"username": user.username}, phrases={"what": _DESCRIBE[change.kind]})
    return change


def reject(session: Session, *, actor: Actor, now: datetime, change_id: int) -> PendingChange:
    """Any administrator rejects (the proposer withdraws): nothing changes."""
    _admin(session, actor)
    change = _pending(session, change_id)
    _decide(session, change, actor=actor, now=now, status=ChangeStatus.REJECTED)
    notices.tell(session, change.user, now=now, subject=N_("signflow: a proposed change was rejected"),
                 body=N_("The administrators rejected %(what)s for you."),
                 phrases={"what": _DESCRIBE[change.kind]})
    return change


def _decide(session: Session, change: PendingChange, *, actor: Actor, now: datetime,
            status: ChangeStatus) -> None:
    change.status, change.decided_by_id, change.decided_at = status, actor.id, now
    session.flush()
    action = (AuditAction.ADMIN_CHANGE_APPROVED if status == ChangeStatus.APPROVED
              else AuditAction.ADMIN_CHANGE_REJECTED)
    audit.append(session, now=now, actor=actor, action=action, change=change.id, kind=change.kind,
                 user=change.user_id, proposed_by=change.proposed_by_id)


def pending_changes(session: Session) -> list[PendingChange]:
    return list(session.scalars(select(PendingChange).where(
        PendingChange.status == ChangeStatus.PENDING).order_by(PendingChange.id)))


def recent_decisions(session: Session, limit: int = 20) -> list[PendingChange]:
    return list(session.scalars(select(PendingChange).where(
        PendingChange.status != ChangeStatus.PENDING).order_by(PendingChange.id.desc()).limit(limit)))


def pending_user_ids(session: Session) -> set[int]:
    return set(session.scalars(select(PendingChange.user_id).where(
        PendingChange.status == ChangeStatus.PENDING)))
