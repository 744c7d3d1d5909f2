"""Login with the hospital account (the directory: `directory.Directory`).

The same rules as a password login (`users.authenticate`): the throttle is asked
before the directory is, so an attacker slows down only himself and never reaches the
directory's own lockout through signflow at full speed; failures count per typed name
and source (a known device apart); the second factor is asked as for a local account.
An account is found by the directory's immutable id (ExternalIdentity, provider
"directory"), never by e-mail or user name; one that first appears through the
directory with a four-eyes role waits, disabled, for an administrator's approval.
No password is ever stored (the account's password_hash stays None).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import factors, four_eyes, throttle
from signflow.core.accounts import users as accounts
from signflow.core.accounts.directory import BindRefused, Directory, DirectoryAccount, Unreachable, role_for
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, AwaitingApproval, DirectoryUnavailable
from signflow.core.i18n import N_
from signflow.models import (
    AuditAction,
    ChangeKind,
    ChangeStatus,
    ExternalIdentity,
    PendingChange,
    Role,
    ServiceRole,
    User,
)

PROVIDER = "directory"
# Who proposes an account the directory brought in (four eyes: an administrator approves).
DIRECTORY_ACTOR_NAME = "directory"


def authenticate(
    session: Session, directory: Directory, *, group_roles: Mapping[str, str], username: str,
    password: str, now: datetime, ip: str | None, throttle_key: bytes, device: str | None = None,
) -> User:
    """Check a directory login. Failures are recorded (the caller commits them), as are
    an account created awaiting approval and its pending change."""
    attempt = throttle.Attempt(throttle_key, username, ip, device)
    typed = accounts.login_gate(session, attempt, user=accounts.account_named(session, username),
                                now=now, ip=ip, source=PROVIDER)
    anonymous = Actor(None, typed, ServiceRole.ANONYMOUS, ip)

    def refuse(reason: str, message: str, user: User | None = None) -> AuthenticationFailed:
        throttle.record_failure(session, attempt, now=now)
        audit.append(session, now=now, actor=anonymous, action=AuditAction.LOGIN_FAILED,
                     user=user.id if user else None, reason=reason, source=PROVIDER)
        return AuthenticationFailed(message)

    try:
        found = directory.authenticate(username.strip(), password)
    except BindRefused:
        raise refuse("refused", N_("Wrong user name or password.")) from None
    except Unreachable:
        # Not the user's fault: not counted against them, and nothing is created.
        audit.append(session, now=now, actor=anonymous, action=AuditAction.LOGIN_FAILED,
                     reason="unavailable", source=PROVIDER)
        raise DirectoryUnavailable(N_("The hospital directory cannot be reached right now: try again "
                                      "in a moment, or use your signflow password if you have one.")
                                   ) from None
    if found.disabled:
        raise refuse("disabled", N_("Your hospital account is disabled: ask the hospital's IT desk."))
    role = role_for(found.groups, group_roles)
    if role is None or role == Role.INTEGRATION:
        raise refuse("no_role", N_("Your hospital account gives no access to signflow: ask an "
                                   "administrator to add you to a signflow group."))
    user = _linked_account(session, found, role=role, now=now, ip=ip)
    if user.role != role:
        raise refuse("role_changed", N_("Your hospital groups no longer match your signflow role: "
                                        "ask an administrator."), user)
    if not user.active:
        awaiting = session.scalar(select(PendingChange.id).where(
            PendingChange.user_id == user.id, PendingChange.status == ChangeStatus.PENDING,
            PendingChange.kind.in_([ChangeKind.CREATE_USER, ChangeKind.ENABLE_USER])))
        if awaiting is not None:
            audit.append(session, now=now, actor=anonymous, action=AuditAction.LOGIN_FAILED,
                         user=user.id, reason="awaiting_approval", source=PROVIDER)
            raise AwaitingApproval(N_("Your account awaits an administrator's approval: you can log "
                                      "in once it is approved."))
        raise refuse("disabled_here", N_("Your signflow account is disabled: ask an administrator."), user)
    link = _link(session, found.subject)
    assert link is not None  # _linked_account made it
    link.last_login_at = now
    actor = Actor.of(user, ip)
    if factors.has_second_factor(session, user):
        # The failure counter resets only once the second factor is right too.
        audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_PASSWORD_ACCEPTED,
                     source=PROVIDER)
        return user
    throttle.record_success(session, attempt)
    audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_SUCCEEDED,
                 factors=["directory"], source=PROVIDER)
    return user


def _link(session: Session, subject: str) -> ExternalIdentity | None:
    return session.scalar(select(ExternalIdentity).where(
        ExternalIdentity.provider == PROVIDER, ExternalIdentity.subject == subject))


def _linked_account(session: Session, found: DirectoryAccount, *, role: str, now: datetime,
                    ip: str | None) -> User:
    """The account linked to the directory's id; made on the first login (disabled and
    pending approval for a four-eyes role). A signflow account that merely has the same
    user name is never taken over."""
    link = _link(session, found.subject)
    if link is not None:
        user = session.get(User, link.user_id)
        assert user is not None  # a foreign key
        return user
    actor = Actor(None, DIRECTORY_ACTOR_NAME, ServiceRole.SYSTEM, ip)
    if session.scalar(select(User.id).where(User.username == found.username)) is not None:
        audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_FAILED,
                     reason="name_taken", source=PROVIDER)
        raise AuthenticationFailed(N_("A signflow account already has the user name %(username)s: "
                                      "ask an administrator."), params={"username": found.username})
    held = four_eyes.needs_four_eyes(role)
    user = accounts.create_user(session, actor=actor, now=now, username=found.username,
                                display_name=found.display_name, role=role, password=None,
                                email=found.email, active=not held)
    session.add(ExternalIdentity(user_id=user.id, provider=PROVIDER, subject=found.subject,
                                 linked_at=now))
    session.flush()
    if held:
        four_eyes.hold_new_account(session, actor=actor, now=now, user=user, source=PROVIDER)
    return user
