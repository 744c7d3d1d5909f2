"""The request state machine. Every transition flushes its state change and its
audit entry together; the caller commits once.

PENDING --sign--> SIGNED --(auto)--> DELIVERED --acknowledge--> RECEIVED
   |  --decline--> DECLINED
   |  --cancel--> CANCELLED
   --deadline--> escalation level + 1, EXPIRED after the last level
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts.users import actor_of
from signflow.core.audit import log as audit
from signflow.core.audit.log import SYSTEM
from signflow.core.errors import Conflict, Forbidden, InvalidInput
from signflow.core.pdf.normalise import NormalisedPdf
from signflow.core.requests import access as access
from signflow.core.requests import outbox as outbox
from signflow.core.requests.deps import Deps
from signflow.models import (
    Destination,
    OnCallGroup,
    RequestState,
    Role,
    SignatureRequest,
    Urgency,
    User,
)

MAX_NOTE = 2000
MAX_ROUTE = 4
MAX_REASON = 1000


def deadline(deps: Deps, urgency: str, now: datetime) -> datetime:
    return now + timedelta(minutes=deps.deadline_minutes[urgency])


def create_request(
    session: Session, deps: Deps, *, user: User, ip: str | None, now: datetime,
    upload: NormalisedPdf, filename: str, title: str, group_id: int, destination_id: int,
    urgency: str, note: str = "", stamp_position: str | None = None,
    then_group_ids: Sequence[int] = (),
) -> SignatureRequest:
    """`then_group_ids`: groups that sign after `group_id`, in order."""
    if user.role != Role.TECHNICIAN:
        raise Forbidden("Only technicians send documents for signature.")
    if urgency not in {u.value for u in Urgency}:
        raise InvalidInput("Choose an urgency.")
    route = [group_id, *[g for g in then_group_ids if g]]
    if len(set(route)) != len(route) or len(route) > MAX_ROUTE:
        raise InvalidInput(f"Each group signs once, {MAX_ROUTE} groups at most.")
    if any(session.get(OnCallGroup, g) is None for g in route):
        raise InvalidInput("Choose an on-call group.")
    group = session.get(OnCallGroup, group_id)
    destination = session.get(Destination, destination_id)
    if group is None:
        raise InvalidInput("Choose an on-call group.")
    if destination is None:
        raise InvalidInput("Choose a destination service.")
    if len(note) > MAX_NOTE:
        raise InvalidInput(f"The note is limited to {MAX_NOTE} characters.")
    title = " ".join(title.split())[:200] or filename
    stored = deps.blobs.put(session, upload.data, now=now)
    req = SignatureRequest(
        technician_id=user.id, group_id=group.id, route=",".join(map(str, route)), step=0,
        destination_id=destination.id,
        title=title, urgency=urgency, note=note.strip(), state=RequestState.PENDING,
        escalation_level=0, deadline_at=deadline(deps, urgency, now), filename=filename,
        original_sha256=upload.original_sha256, document_sha256=stored,
        page_count=upload.page_count, removed_content=json.dumps(list(upload.removed)),
        stamp_position=stamp_position, created_at=now, updated_at=now,
    )
    session.add(req)
    session.flush()
    audit.append(
        session, now=now, actor=actor_of(user, ip), action="request.created", request_id=req.id,
        group=group.id, route=route, destination=destination.id, urgency=urgency,
        original_sha256=upload.original_sha256, document_sha256=stored,
        removed=list(upload.removed), pages=upload.page_count,
    )
    outbox.enqueue(session, "notify", {"request": req.id, "event": "created", "level": 0}, now=now)
    return req


def _require_pending(req: SignatureRequest, deps: Deps) -> None:
    if req.state != RequestState.PENDING:
        raise Conflict(access.state_message(req, deps.timezone))


def deliver(session: Session, req: SignatureRequest, *, now: datetime) -> None:
    req.state = RequestState.DELIVERED
    req.updated_at = now
    session.flush()
    audit.append(session, now=now, actor=SYSTEM, action="request.delivered", request_id=req.id,
                 destination=req.destination_id, sha256=req.signed_sha256)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "delivered"}, now=now)


def decline_request(session: Session, deps: Deps, *, user: User, request_id: int, reason: str,
                    now: datetime, ip: str | None) -> SignatureRequest:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why you decline, for the technician.")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"The reason is limited to {MAX_REASON} characters.")
    req = access.get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    access.require_signer(session, user, req, now, deps)
    req.state, req.declined_by_id, req.decline_reason, req.updated_at = (
        RequestState.DECLINED, user.id, reason, now)
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.declined",
                 request_id=req.id, reason=reason)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "declined"}, now=now)
    return req


def cancel_request(session: Session, deps: Deps, *, user: User, request_id: int, now: datetime,
                   ip: str | None) -> SignatureRequest:
    req = access.get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    if user.role != Role.TECHNICIAN:
        raise Forbidden("Only the technician who sent a request can cancel it.")
    if req.state == RequestState.CANCELLED:
        return req
    _require_pending(req, deps)
    req.state, req.updated_at = RequestState.CANCELLED, now
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.cancelled",
                 request_id=req.id)
    return req


def acknowledge_receipt(session: Session, deps: Deps, *, user: User, request_id: int,
                        now: datetime, ip: str | None) -> SignatureRequest:
    req = access.get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    if user.role != Role.RECIPIENT:
        raise Forbidden("Only the destination service acknowledges receipt.")
    if req.state == RequestState.RECEIVED:
        return req  # a double submit is not an error
    if req.state != RequestState.DELIVERED:
        raise Conflict(f"This request is {req.state}; there is nothing to acknowledge.")
    req.state, req.acknowledged_by_id, req.acknowledged_at, req.updated_at = (
        RequestState.RECEIVED, user.id, now, now)
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.received",
                 request_id=req.id, sha256=req.signed_sha256)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "received"}, now=now)
    return req


def escalate_due(session: Session, deps: Deps, *, now: datetime, limit: int = 100) -> list[int]:
    """Move every overdue pending request one rung up the ladder (or to EXPIRED).
    Safe to run from several workers: rows are claimed with SKIP LOCKED."""
    due = session.scalars(
        select(SignatureRequest)
        .where(SignatureRequest.state == RequestState.PENDING, SignatureRequest.deadline_at <= now)
        .order_by(SignatureRequest.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    touched: list[int] = []
    for req in due:
        if req.escalation_level + 1 >= deps.escalation_levels:
            req.state, req.updated_at = RequestState.EXPIRED, now
            req.failure_reason = "Nobody signed before the last escalation deadline."
            session.flush()
            audit.append(session, now=now, actor=SYSTEM, action="request.expired", request_id=req.id,
                         level=req.escalation_level)
            outbox.enqueue(session, "notify", {"request": req.id, "event": "expired"}, now=now)
        else:
            req.escalation_level += 1
            req.deadline_at = deadline(deps, req.urgency, now)
            req.updated_at = now
            session.flush()
            audit.append(session, now=now, actor=SYSTEM, action="request.escalated",
                         request_id=req.id, level=req.escalation_level)
            outbox.enqueue(session, "notify",
                           {"request": req.id, "event": "escalated", "level": req.escalation_level},
                           now=now)
        touched.append(req.id)
    return touched


def take_request(session: Session, deps: Deps, *, user: User, request_id: int, now: datetime,
                 ip: str | None) -> SignatureRequest:
    """'I am on it': the technician and colleagues see who is handling it."""
    req = access.get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    access.require_signer(session, user, req, now, deps)
    if req.assignee_id == user.id:
        return req
    req.assignee_id, req.updated_at = user.id, now
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.taken",
                 request_id=req.id, group=req.group_id, step=req.step)
    return req


def delegate_request(session: Session, deps: Deps, *, user: User, request_id: int,
                     to_user_id: int, now: datetime, ip: str | None) -> SignatureRequest:
    req = access.get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    access.require_signer(session, user, req, now, deps)
    target = next((c for c in access.colleagues(session, user=user, req=req, now=now)
                   if c.id == to_user_id), None)
    if target is None:
        raise InvalidInput("Delegate to a colleague on call for this group.")
    req.assignee_id, req.updated_at = target.id, now
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.delegated",
                 request_id=req.id, to=target.id, group=req.group_id, step=req.step)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "delegated"}, now=now)
    return req
