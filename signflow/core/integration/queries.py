"""What an integration account reads: its requests a page at a time (newest first,
an opaque cursor), and each request's timeline (its lifecycle audit entries)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.requests import access
from signflow.models import (
    AuditAction,
    AuditEntry,
    RequestReference,
    RequestState,
    Role,
    SignatureRequest,
    User,
)

MAX_PAGE = 100
DEFAULT_PAGE = 50
_CURSOR_PREFIX = "r1:"
# The lifecycle steps a submitting or receiving system may see (not who viewed what).
TIMELINE_ACTIONS = frozenset({
    AuditAction.REQUEST_CREATED, AuditAction.REQUEST_NOBODY_ON_CALL, AuditAction.REQUEST_TAKEN,
    AuditAction.REQUEST_DELEGATED, AuditAction.REQUEST_ESCALATED, AuditAction.REQUEST_SIGNED,
    AuditAction.REQUEST_DELIVERED, AuditAction.REQUEST_RECEIVED, AuditAction.REQUEST_DECLINED,
    AuditAction.REQUEST_CANCELLED, AuditAction.REQUEST_EXPIRED, AuditAction.REQUEST_FAILED,
})


@dataclass(frozen=True)
class Page:
    items: list[SignatureRequest]
    next_cursor: str | None


@dataclass(frozen=True)
class Filters:
    state: RequestState | None = None
    external_reference: str | None = None
    created_after: datetime | None = None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    number = raw.removeprefix(_CURSOR_PREFIX)
    if not raw.startswith(_CURSOR_PREFIX) or not number.isdigit() or len(number) > 18:
        raise InvalidInput(N_("This cursor is not one this API gave out: start again without it."),
                           code="invalid-cursor")
    return int(number)


def parse_filters(state: str | None, reference: str | None, created_after: str | None) -> Filters:
    chosen = None
    if state:
        try:
            chosen = RequestState(state)
        except ValueError:
            raise InvalidInput(N_("'state' is one of %(states)s."),
                               params={"states": ", ".join(s.value for s in RequestState)}) from None
    after = None
    if created_after:
        try:
            after = datetime.fromisoformat(created_after)
        except ValueError:
            raise InvalidInput(N_("'created_after' is an ISO 8601 date-time with its offset.")) from None
        if after.tzinfo is None:
            raise InvalidInput(N_("'created_after' is an ISO 8601 date-time with its offset."))
    return Filters(state=chosen, external_reference=reference or None, created_after=after)


def page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw[:4]) <= MAX_PAGE or len(raw) > 3:
        raise InvalidInput(N_("'limit' is between 1 and %(max)s."), params={"max": MAX_PAGE})
    return int(raw)


def list_page(session: Session, *, user: User, filters: Filters, cursor: str | None, limit: int,
              now: datetime) -> Page:
    """The integration account's requests: those it sent (a submitting system) or those
    delivered to its destination (a receiving one), as the web pages show them."""
    query = select(SignatureRequest).order_by(SignatureRequest.id.desc()).limit(limit + 1)
    match access.acts_as(user):
        case Role.TECHNICIAN:
            query = query.where(SignatureRequest.technician_id == user.id)
        case Role.RECIPIENT:
            query = query.where(
                SignatureRequest.destination_id == user.destination_id,
                SignatureRequest.state.in_([RequestState.DELIVERED, RequestState.RECEIVED]))
        case _:
            return Page(items=[], next_cursor=None)
    if cursor:
        query = query.where(SignatureRequest.id < decode_cursor(cursor))
    if filters.state is not None:
        query = query.where(SignatureRequest.state == filters.state)
    if filters.created_after is not None:
        query = query.where(SignatureRequest.created_at > filters.created_after)
    if filters.external_reference is not None:
        query = query.join(RequestReference, RequestReference.request_id == SignatureRequest.id).where(
            RequestReference.value == filters.external_reference)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(rows[-1].id) if more and rows else None)


@dataclass(frozen=True)
class Step:
    at: datetime
    event: str


def timeline(session: Session, *, user: User, request_id: int, now: datetime) -> list[Step]:
    """The request's lifecycle, oldest first (NotFound when it is not the caller's)."""
    access.get_request(session, user=user, request_id=request_id, now=now)
    entries = session.scalars(select(AuditEntry).where(
        AuditEntry.request_id == request_id, AuditEntry.action.in_(list(TIMELINE_ACTIONS)))
        .order_by(AuditEntry.seq))
    return [Step(at=entry.time, event=str(entry.action)) for entry in entries]
