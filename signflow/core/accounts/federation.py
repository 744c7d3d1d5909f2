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

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import factors
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed
from signflow.core.i18n import N_
from signflow.models import AuditAction, ExternalIdentity, Role, ServiceRole, User


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
class Outcome:
    user: User
    # True: the provider's login stands for the second factor too (full session, step-up
    # satisfied); False: signflow's own second factor still applies, if the account has one.
    both_factors: bool


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


def _find(session: Session, assertion: Assertion, *, now: datetime, ip: str | None,
          ) -> tuple[User | None, ExternalIdentity | None]:
    link = session.scalar(select(ExternalIdentity).where(
        ExternalIdentity.provider == assertion.provider, ExternalIdentity.subject == assertion.subject))
    if link is not None:
        return session.get(User, link.user_id), link
    if assertion.professional_id is None:
        return None, None
    # Only an active account: a disabled one may share the id with its successor.
    holders = list(session.scalars(select(User).where(
        User.professional_id == assertion.professional_id, User.active.is_(True)).limit(2)))
    return (holders[0] if len(holders) == 1 else None), None


def sign_in(session: Session, assertion: Assertion, *, now: datetime, ip: str | None) -> Outcome:
    """The account `assertion` opens, linked on its first use; refused (audited, nothing
    created) for an unknown professional id, a disabled account or an integration."""
    user, link = _find(session, assertion, now=now, ip=ip)
    if user is None:
        raise _refuse(session, assertion, now=now, ip=ip, reason="unknown", user=None, message=N_(
            "No signflow account has the professional id that %(provider)s gave for you. "
            "Nothing was created: ask an administrator to open your account with your RPPS "
            "number, then log in again."))
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
