"""Users, passwords (argon2id), password login (throttled: see `throttle`).
API tokens: `tokens`."""

from __future__ import annotations

import secrets
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import factors, identity, throttle
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Throttled,
)
from signflow.core.i18n import LANGUAGES, N_
from signflow.models import AuditAction, Destination, OnCallGroup, Role, ServiceRole, User

# ASVS 11.4.2 example parameters: 46 MiB, one pass, one lane.
_HASHER = PasswordHasher(time_cost=1, memory_cost=47104, parallelism=1)
# Verified against when the user does not exist, so that timing does not tell.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))

MIN_PASSWORD_LENGTH = 8
_COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password123", "12345678", "123456789", "1234567890",
        "qwertyuiop", "azertyuiop", "iloveyou", "sunshine", "princess", "football",
        "welcome1", "letmein1", "admin123", "changeme", "motdepasse", "hospital",
        "passw0rd", "11111111", "00000000", "abcdefgh", "abc12345", "qwerty123",
    }
)


def acting_user(session: Session, actor: Actor) -> User:
    """The active user behind `actor`: what an operation that needs a person checks
    (the service and operators act as no user)."""
    user = session.get(User, actor.id) if actor.id is not None else None
    if user is None or not user.active:
        raise Forbidden(N_("Log in first."))
    return user


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_password_policy(password: str | None, *, username: str = "") -> None:
    if password is None:  # no local password: an identity provider vouches for the account
        return
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(N_("The password must have at least %(min_password_length)s "
                              "characters."), params={'min_password_length': MIN_PASSWORD_LENGTH})
    if len(password) > 256:
        raise InvalidInput(N_("The password is too long (256 characters at most)."))
    lowered = password.lower()
    if lowered in _COMMON_PASSWORDS or (username and username.lower() in lowered):
        raise InvalidInput(N_("This password is too common or contains the user name."))


def create_user(
    session: Session,
    *,
    actor: Actor,
    now: datetime,
    username: str,
    display_name: str,
    role: str,
    password: str | None,
    email: str | None = None,
    professional_id: str | None = None,
    destination_id: int | None = None,
    submit_group_id: int | None = None,
    phone: str | None = None,
    active: bool = True,
    must_change_password: bool = False,
) -> User:
    """A new account. `active=False`: created awaiting a second administrator's approval
    (see `four_eyes`); `must_change_password`: the password is someone else's choice;
    `password=None`: no local password (the account logs in through the directory)."""
    username = username.strip().lower()
    if not username or len(username) > 80 or not username.replace(".", "").replace("-", "").isalnum():
        raise InvalidInput(N_("User names use letters, digits, dots and dashes."))
    if role not in {r.value for r in Role}:
        raise InvalidInput(N_("Unknown role."))
    name = identity.display_name(display_name)
    pid = identity.professional_id(professional_id)
    if role == Role.RECIPIENT and destination_id is None:
        raise InvalidInput(N_("A recipient belongs to a destination service."))
    if destination_id is not None and session.get(Destination, destination_id) is None:
        raise InvalidInput(N_("Unknown destination service."))
    if role == Role.INTEGRATION:
        # Its tokens read documents or submit them: only the operator (the command
        # line, the break-glass path) creates one, never a web administrator alone.
        if actor.role != ServiceRole.OPERATOR:
            raise Forbidden(N_("Integration accounts are created with the signflow command."))
        if destination_id is not None and submit_group_id is not None:
            raise InvalidInput(N_("An integration account is bound to one destination or one group."))
        if submit_group_id is not None and session.get(OnCallGroup, submit_group_id) is None:
            raise InvalidInput(N_("Unknown on-call group."))
        # A system, not a person: it never logs in (API tokens only), so its password
        # is random and forgotten at once.
        password = secrets.token_urlsafe(32)
    elif submit_group_id is not None:
        raise InvalidInput(N_("Only an integration account is bound to an on-call group."))
    if role != Role.INTEGRATION:
        # Not the random one: it may contain a short user name ("lab") by chance.
        check_password_policy(password, username=username)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(N_("This user name is taken."))
    identity.require_unique_professional_id(session, pid)
    user = User(
        username=username,
        display_name=name,
        role=role,
        password_hash=hash_password(password) if password is not None else None,
        active=active,
        email=(email or "").strip() or None,
        phone=(phone or "").strip() or None,
        professional_id=pid,
        destination_id=destination_id if role in (Role.RECIPIENT, Role.INTEGRATION) else None,
        submit_group_id=submit_group_id,
        failed_logins=0,
        session_version=1,
        created_at=now,
        must_change_password=must_change_password,
    )
    session.add(user)
    session.flush()
    audit.append(
        session, now=now, actor=actor, action=AuditAction.USER_CREATED,
        user=user.id, username=user.username, role=user.role, active=active,
        **({"destination": user.destination_id} if user.destination_id else {}),
        **({"submit_group": user.submit_group_id} if user.submit_group_id else {}),
    )
    return user


def change_password(
    session: Session, *, actor: Actor, current_password: str, new_password: str, now: datetime,
) -> User:
    """The user sets their own password (forced at first login when an administrator
    chose it). Every other session of the user ends."""
    user = acting_user(session, actor)
    if user.password_hash is None:
        raise InvalidInput(N_("Your account has no signflow password: "
                              "you log in through your hospital's login."))
    if not _verify(user.password_hash, current_password):
        raise InvalidInput(N_("Your current password is not right."))
    if new_password == current_password:
        raise InvalidInput(N_("Choose a new password, different from the current one."))
    check_password_policy(new_password, username=user.username)
    forced = user.must_change_password
    user.password_hash = hash_password(new_password)
    user.must_change_password = False
    user.session_version += 1
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.PASSWORD_CHANGED, forced=forced)
    return user


def set_user_active(session: Session, *, actor: Actor, user_id: int, active: bool, now: datetime) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(N_("No such user."))
    if actor.id == user.id and not active:
        raise Forbidden(N_("You cannot disable your own account."))
    if user.active == active:
        return user
    user.active = active
    # Disabling kills every live session of that user.
    user.session_version += 1
    session.flush()
    audit.append(
        session, now=now, actor=actor,
        action=AuditAction.USER_ENABLED if active else AuditAction.USER_DISABLED,
        user=user.id, username=user.username,
    )
    return user


def account_named(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username.strip().lower()))


def login_gate(session: Session, attempt: throttle.Attempt, *, user: User | None, now: datetime,
               ip: str | None, source: str | None = None) -> str:
    """What every login (password, directory) does first: the throttle is asked before
    any secret is checked, and a throttled attempt is audited. Returns the name the
    attempt is audited under: the typed name when it is an account, else a keyed hash
    (people type passwords into the user name field; the hash correlates, names no one).
    `source`: the login's kind when it is not the password form ("directory")."""
    typed = user.username if user is not None else "unknown:" + throttle.name_digest(
        attempt.key, attempt.username)[:16]
    wait = throttle.remaining(session, attempt, now=now)
    if wait:
        actor = Actor(None, typed, ServiceRole.ANONYMOUS, ip)
        if source is None:
            audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_THROTTLED,
                         user=user.id if user else None)
        else:
            audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_THROTTLED,
                         user=user.id if user else None, source=source)
        raise Throttled(N_("Too many failed attempts: wait a moment and try again."), retry_after=wait)
    return typed


def authenticate(
    session: Session, *, username: str, password: str, now: datetime, ip: str | None,
    throttle_key: bytes, device: str | None = None,
) -> User:
    """Check a password login. Failures are recorded (the caller commits them).

    `device`: the id of a device cookie the caller verified for this very user name
    (see `throttle`). An unknown name and a known one get the same answer, throttling
    included, and the same work (a dummy hash is verified)."""
    attempt = throttle.Attempt(throttle_key, username, ip, device)
    user = account_named(session, username)
    typed = login_gate(session, attempt, user=user, now=now, ip=ip)
    # An account without a local password (it logs in through an identity provider)
    # costs the same hash as an unknown name and fails like it.
    stored = user.password_hash if user is not None else None
    ok = _verify(stored or _DUMMY_HASH, password) and stored is not None
    # Integration accounts never log in (API tokens only): refused like a wrong password.
    if user is None or not ok or not user.active or user.role == Role.INTEGRATION:
        throttle.record_failure(session, attempt, now=now)
        audit.append(
            session, now=now, actor=Actor(None, typed, ServiceRole.ANONYMOUS, ip),
            action=AuditAction.LOGIN_FAILED, user=user.id if user else None,
        )
        raise AuthenticationFailed(N_("Wrong user name or password."))
    if stored is not None and _HASHER.check_needs_rehash(stored):
        user.password_hash = hash_password(password)
    if factors.has_second_factor(session, user):
        # The failure counter resets only once the second factor is right too.
        audit.append(session, now=now, actor=Actor.of(user, ip), action=AuditAction.LOGIN_PASSWORD_ACCEPTED)
        return user
    throttle.record_success(session, attempt)
    audit.append(session, now=now, actor=Actor.of(user, ip), action=AuditAction.LOGIN_SUCCEEDED,
                 factors=["password"])
    return user


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def choose_language(session: Session, *, actor: Actor, language: str | None, now: datetime) -> User:
    """The interface language of the acting user (None: the site's). A display
    preference, not audited: it changes no right and no document."""
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(N_("Unknown language %(code)s."), params={"code": repr(language[:10])})
    user = acting_user(session, actor)
    user.language = language
    session.flush()
    return user


def logout(session: Session, *, actor: Actor, now: datetime) -> None:
    user = acting_user(session, actor)
    user.session_version += 1
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.LOGOUT)


def load_session_user(session: Session, session_id: str) -> User | None:
    """Resolve Flask-Login's `id:version`; a bumped version invalidates old cookies."""
    try:
        raw_id, raw_version = session_id.split(":", 1)
        user = session.get(User, int(raw_id))
        version = int(raw_version)
    except (ValueError, TypeError):
        return None
    if user is None or not user.active or user.session_version != version:
        return None
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(N_("No such user."))
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.role, User.username)))


def directory(session: Session) -> tuple[list[OnCallGroup], list[Destination]]:
    groups = list(session.scalars(select(OnCallGroup).order_by(OnCallGroup.name)))
    destinations = list(session.scalars(select(Destination).order_by(Destination.name)))
    return groups, destinations
