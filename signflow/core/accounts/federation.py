"""Logging in through an identity provider (OpenID Connect: Pro Santé Connect, the
hospital's own): which account a verified assertion opens, decided here; the protocol
itself (discovery, PKCE, state, nonce, the id_token's signature) is the web layer's
client (web/oidc_client.py), which hands over only what it verified.

An account is found by its link (ExternalIdentity: provider, subject), or, the first
time, by the professional id the provider asserts (the RPPS number an administrator
entered, under four eyes, for a physician): never by e-mail, which a person can change
at a provider and which several people may share. An unknown professional id opens
nothing and creates nothing; a disabled account is refused, whatever the provider says.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import factors, four_eyes, identity
from signflow.core.accounts import users as accounts
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, InvalidInput
from signflow.core.i18n import N_
from signflow.models import (
    AuditAction,
    ChangeStatus,
    ExternalIdentity,
    PendingChange,
    Role,
    ServiceRole,
    User,
)

# The roles a site may let people enrol themselves in (never admin, auditor, recipient).
SELF_ENROL_ROLES = frozenset({Role.PHYSICIAN, Role.TECHNICIAN})


@dataclass(frozen=True)
class Assertion:
    """What a provider vouched for, its id_token verified."""

    provider: str
    # The professional-id claim as the provider sends it (PSC: SubjectNameID).
    subject: str
    # That id as signflow stores it (users.professional_id), the provider's prefix removed.
    professional_id: str | None
    acr: str | None = None
    # The provider as its messages name it ("Pro Santé Connect").
    label: str = ""
    # The provider's authentication counts as both factors (acr at the configured level).
    both_factors: bool = False


@dataclass(frozen=True)
class Person:
    """Who the provider says the person is: what a self-enrolled account is made of."""

    given_name: str
    family_name: str
    email: str | None = None


@dataclass(frozen=True)
class Outcome:
    user: User
    # True: the provider's login stands for the second factor too (full session, step-up
    # satisfied); False: signflow's own second factor still applies, if the account has one.
    both_factors: bool
    # True: no session; the account exists but an administrator has not approved it yet.
    awaiting_approval: bool = False


def professional_id_of(subject: str, prefix: str) -> str | None:
    """`subject` without the provider's `prefix` (PSC's SubjectNameID: "8" + RPPS)."""
    value = subject.strip()
    if prefix:
        if not value.startswith(prefix):
            return None
        value = value[len(prefix):]
    return value or None


def _refuse(session: Session, assertion: Assertion, *, now: datetime, ip: str | None,
            reason: str, user: User | None, message: str) -> AuthenticationFailed:
    audit.append(session, now=now, actor=Actor(None, f"{assertion.provider}:{assertion.subject}",
                                                  ServiceRole.ANONYMOUS, ip),
                 action=AuditAction.LOGIN_FAILED, user=user.id if user else None,
                 provider=assertion.provider, reason=reason)
    return AuthenticationFailed(message, params={"provider": assertion.label or assertion.provider})


def confirm_step_up(session: Session, assertion: Assertion, *, actor: Actor, now: datetime) -> None:
    """The provider authenticated the person again (a step-up before signing): it counts
    only for the account linked to that very subject, and only at the level that stands
    for both factors; otherwise refused, audited, and the signature still waits."""
    user = accounts.acting_user(session, actor)
    link = session.scalar(select(ExternalIdentity).where(
        ExternalIdentity.provider == assertion.provider, ExternalIdentity.subject == assertion.subject))
    label = {"provider": assertion.label or assertion.provider}
    if link is None or link.user_id != user.id:
        audit.append(session, now=now, actor=actor, action=AuditAction.STEP_UP_FAILED,
                     factor=factors.PROVIDER, provider=assertion.provider, reason="another account")
        raise AuthenticationFailed(N_("%(provider)s confirmed another person than you: log in at "
                                      "%(provider)s as yourself to sign."), params=label)
    if not assertion.both_factors:
        audit.append(session, now=now, actor=actor, action=AuditAction.STEP_UP_FAILED,
                     factor=factors.PROVIDER, provider=assertion.provider, reason="level", acr=assertion.acr)
        raise AuthenticationFailed(N_("%(provider)s did not confirm you at the level signing needs: "
                                      "choose the strong authentication there (e-CPS, CPS card)."),
                                   params=label)
    link.last_login_at = now
    audit.append(session, now=now, actor=actor, action=AuditAction.STEP_UP_SUCCEEDED,
                 factor=factors.PROVIDER, provider=assertion.provider, acr=assertion.acr)


def _find(session: Session, assertion: Assertion) -> tuple[User | None, ExternalIdentity | None]:
    link = session.scalar(select(ExternalIdentity).where(
        ExternalIdentity.provider == assertion.provider, ExternalIdentity.subject == assertion.subject))
    if link is not None:
        return session.get(User, link.user_id), link
    if assertion.professional_id is None:
        return None, None
    # An active account first: a disabled one may share the id with its successor.
    holders = list(session.scalars(select(User).where(
        User.professional_id == assertion.professional_id, User.active.is_(True)).limit(2)))
    if not holders:
        # Only to say "disabled" rather than "unknown": such an account is never linked.
        holders = list(session.scalars(select(User).where(
            User.professional_id == assertion.professional_id).limit(2)))
    return (holders[0] if len(holders) == 1 else None), None


def _awaiting(session: Session, user: User) -> bool:
    return session.scalar(select(PendingChange.id).where(
        PendingChange.user_id == user.id, PendingChange.status == ChangeStatus.PENDING)) is not None


def _username(session: Session, person: Person) -> str:
    """"helene.lefevre", then "helene.lefevre2"...: ASCII letters, digits, dots, dashes."""
    raw = f"{person.given_name}.{person.family_name}".lower()
    folded = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()
    base = "".join(c if c.isalnum() or c in ".-" else "-" for c in folded).strip(".-")[:70] or "user"
    name, n = base, 1
    while session.scalar(select(User.id).where(User.username == name)) is not None:
        n += 1
        name = f"{base}{n}"
    return name


def enrol(session: Session, assertion: Assertion, person: Person, *, role: str, now: datetime,
          ip: str | None) -> Outcome:
    """Self-enrolment (a site's choice per provider): an account for the professional the
    provider vouched for, disabled and awaiting an administrator's approval whatever the
    role, with no local password, linked to the assertion's subject."""
    if role not in SELF_ENROL_ROLES:
        raise InvalidInput(N_("Unknown role."))
    try:
        pid = identity.professional_id(assertion.professional_id)
    except InvalidInput:
        pid = None
    if pid is None or not person.family_name.strip():
        raise _refuse(session, assertion, now=now, ip=ip, reason="unusable", user=None, message=N_(
            "%(provider)s did not give a valid RPPS number and name for you: signflow cannot "
            "open an account. Ask an administrator."))
    actor = Actor(None, f"{assertion.provider}:{assertion.subject}", ServiceRole.ANONYMOUS, ip)
    user = accounts.create_user(
        session, actor=actor, now=now, username=_username(session, person),
        display_name=f"{person.given_name} {person.family_name}", role=role,
        # Never known to anyone, and dropped below: the account logs in through its provider.
        password=secrets.token_urlsafe(32), email=person.email, professional_id=pid, active=False)
    user.password_hash = None
    session.add(ExternalIdentity(user_id=user.id, provider=assertion.provider,
                                 subject=assertion.subject, linked_at=now))
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.IDENTITY_LINKED,
                 provider=assertion.provider, subject=assertion.subject, user=user.id)
    four_eyes.hold_new_account(session, actor=actor, now=now, user=user, source=assertion.provider)
    return Outcome(user=user, both_factors=False, awaiting_approval=True)


def sign_in(session: Session, assertion: Assertion, *, now: datetime, ip: str | None,
            enrol_as: str | None = None, person: Person | None = None) -> Outcome:
    """The account `assertion` opens, linked on its first use; refused (audited, nothing
    created) for an unknown professional id, a disabled account or an integration.
    `enrol_as`: the site lets an unknown professional enrol (see `enrol`) in that role."""
    user, link = _find(session, assertion)
    if user is None and enrol_as is not None and person is not None:
        return enrol(session, assertion, person, role=enrol_as, now=now, ip=ip)
    if user is None:
        raise _refuse(session, assertion, now=now, ip=ip, reason="unknown", user=None, message=N_(
            "No signflow account has the professional id that %(provider)s gave for you. "
            "Nothing was created: ask an administrator to open your account with your RPPS "
            "number, then log in again."))
    if not user.active and _awaiting(session, user):
        raise _refuse(session, assertion, now=now, ip=ip, reason="awaiting_approval", user=user,
                      message=N_("Your signflow account awaits an administrator's approval: you "
                                 "can log in once it is approved."))
    if not user.active:
        raise _refuse(session, assertion, now=now, ip=ip, reason="disabled", user=user,
                      message=N_("Your signflow account is disabled: ask an administrator."))
    if user.role == Role.INTEGRATION:
        # A system never logs in as a person, whatever a provider says.
        raise _refuse(session, assertion, now=now, ip=ip, reason="integration", user=user,
                      message=N_("This account cannot log in."))
    if link is None:
        existing = session.scalar(select(ExternalIdentity).where(
            ExternalIdentity.provider == assertion.provider, ExternalIdentity.user_id == user.id))
        if existing is not None:
            # The account already answers to another subject at this provider.
            raise _refuse(session, assertion, now=now, ip=ip, reason="other_subject", user=user,
                          message=N_("Your signflow account is linked to another identity at "
                                     "%(provider)s: ask an administrator."))
        link = ExternalIdentity(user_id=user.id, provider=assertion.provider,
                                subject=assertion.subject, linked_at=now)
        session.add(link)
        session.flush()
        audit.append(session, now=now, actor=Actor.of(user, ip), action=AuditAction.IDENTITY_LINKED,
                     provider=assertion.provider, subject=assertion.subject)
    link.last_login_at = now
    both = assertion.both_factors
    used = [f"oidc:{assertion.provider}"] + ([assertion.acr] if assertion.acr else [])
    if not both and factors.has_second_factor(session, user):
        # The provider's login is the first factor; signflow's code or passkey follows.
        audit.append(session, now=now, actor=Actor.of(user, ip),
                     action=AuditAction.LOGIN_PASSWORD_ACCEPTED, factors=used)
    else:
        audit.append(session, now=now, actor=Actor.of(user, ip), action=AuditAction.LOGIN_SUCCEEDED,
                     factors=used)
    session.flush()
    return Outcome(user=user, both_factors=both)
