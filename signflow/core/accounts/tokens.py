"""API tokens: issued to integration accounts only, with scopes and an expiry, shown
once and stored as their SHA-256; every use is audited (one entry per API call).

A token is 32 random bytes: a plain SHA-256 is enough to store it (nothing to
guess, unlike a password), and lets the lookup be one indexed query."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, Forbidden, InvalidInput, NotFound
from signflow.core.i18n import N_
from signflow.models import ApiScope, ApiToken, AuditAction, Role, User

TOKEN_PREFIX = "sfat_"  # noqa: S105 - a public marker
DEFAULT_DAYS = 90
MAX_DAYS = 366
# One answer for every token that does not authenticate: missing, unknown, revoked,
# expired, a person's or a disabled account's (nothing tells them apart).
REFUSED = N_("A valid bearer token is required.")
# Scopes that touch requests, and the binding each needs.
RECEIVING = frozenset({ApiScope.READ, ApiScope.DOWNLOAD, ApiScope.ACKNOWLEDGE})
SUBMITTING = frozenset({ApiScope.SUBMIT, ApiScope.READ, ApiScope.DOWNLOAD})


@dataclass(frozen=True)
class IssuedToken:
    """A token just made: `token` is shown this once, only its hash is kept."""

    token: str
    token_id: int
    scopes: tuple[ApiScope, ...]
    expires_at: datetime


@dataclass(frozen=True)
class Bearer:
    """An authenticated API caller: the integration account and the token it used."""

    user: User
    token_id: int
    scopes: frozenset[ApiScope]

    def require(self, scope: ApiScope) -> None:
        if scope not in self.scopes:
            raise Forbidden(N_("This token does not carry the '%(scope)s' scope."),
                            params={'scope': scope}, code="insufficient-scope")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scopes_of(row: ApiToken) -> frozenset[ApiScope]:
    known = {s.value for s in ApiScope}
    return frozenset(ApiScope(s) for s in row.scopes.split() if s in known)


def allowed_scopes(user: User) -> frozenset[ApiScope]:
    """What an integration account's binding lets its tokens do: a destination's
    account receives, a group's account submits; any may ask for timestamps; one bound
    to neither may also read the statistics."""
    if user.destination_id is not None:
        return RECEIVING | {ApiScope.TIMESTAMP}
    if user.submit_group_id is not None:
        return SUBMITTING | {ApiScope.TIMESTAMP}
    # Bound to neither: a timestamping client, or a reporting system reading the
    # turnaround statistics (aggregates only, never a request).
    return frozenset({ApiScope.TIMESTAMP, ApiScope.STATS})


def create_api_token(
    session: Session, *, actor: Actor, user: User, name: str, scopes: Iterable[str], now: datetime,
    days: int = DEFAULT_DAYS,
) -> IssuedToken:
    if user.role != Role.INTEGRATION:
        raise InvalidInput(N_("API tokens belong to integration accounts "
                           "(create-user NAME --role integration), not to people."))
    if not user.active:
        raise InvalidInput(N_("That user is disabled."))
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(N_("A token lives between 1 and %(max_days)s days."),
                           params={'max_days': MAX_DAYS})
    wanted: set[ApiScope] = set()
    for raw in scopes:
        try:
            wanted.add(ApiScope(raw))
        except ValueError:
            raise InvalidInput(N_("Unknown scope %(raw)s: one of %(value)s."),
                               params={"raw": repr(raw),
                                       "value": ", ".join(s.value for s in ApiScope)}) from None
    if not wanted:
        raise InvalidInput(N_("Give the token at least one scope."))
    refused = wanted - allowed_scopes(user)
    if refused:
        raise InvalidInput(N_("This account's binding does not allow the scope(s) %(value)s."),
                           params={'value': ', '.join(sorted(refused))})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ordered = tuple(sorted(wanted))
    row = ApiToken(
        user_id=user.id, name=name.strip()[:100] or "token", token_hash=token_digest(token),
        scopes=" ".join(ordered), created_at=now, expires_at=now + timedelta(days=days),
    )
    session.add(row)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.API_TOKEN_CREATED,
                 token=row.id, user=user.id, name=row.name, scopes=list(ordered),
                 expires_at=row.expires_at.isoformat())
    return IssuedToken(token=token, token_id=row.id, expires_at=row.expires_at, scopes=ordered)


def revoke_api_token(session: Session, *, actor: Actor, token_id: int, now: datetime) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(N_("No such API token."))
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
        audit.append(session, now=now, actor=actor, action=AuditAction.API_TOKEN_REVOKED,
                     token=row.id, user=row.user_id)
    return row


def list_api_tokens(session: Session, *, user: User | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return list(session.scalars(query))


def authenticate_bearer(session: Session, token: str, *, now: datetime, ip: str | None,
                        call: str) -> Bearer:
    """The caller behind a bearer token, or AuthenticationFailed (one message for
    every reason). A known token refused (revoked, expired, a person's) is audited,
    and that entry is kept (AuthenticationFailed commits)."""
    row = None
    if token.startswith(TOKEN_PREFIX):
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None:
        raise AuthenticationFailed(REFUSED)
    reason = refusal(row, now)
    if reason is not None:
        record_use(session, row, now=now, ip=ip, call=call, outcome=f"refused:{reason}")
        raise AuthenticationFailed(REFUSED)
    return Bearer(user=row.user, token_id=row.id, scopes=scopes_of(row))


def refusal(row: ApiToken, now: datetime) -> str | None:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= now:
        return "expired"
    if row.user.role != Role.INTEGRATION:
        return "not_integration"
    if not row.user.active:
        return "disabled"
    return None


def record_use(session: Session, row: ApiToken | int, *, now: datetime, ip: str | None, call: str,
               outcome: str) -> None:
    """One audit entry per API call: which token, which call, how it ended."""
    token = session.get(ApiToken, row) if isinstance(row, int) else row
    if token is None:
        return
    token.last_used_at = now
    audit.append(session, now=now, actor=Actor.of(token.user, ip), action=AuditAction.API_TOKEN_USED,
                 token=token.id, call=call[:200], outcome=outcome[:60])
