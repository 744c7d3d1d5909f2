"""The request state machine. Every transition flushes its state change and its
audit entry together; the caller commits once.

PENDING --sign--> SIGNED --(auto)--> DELIVERED --acknowledge--> RECEIVED
   |  --decline--> DECLINED
   |  --cancel--> CANCELLED
   --deadline--> escalation level + 1, EXPIRED after the last level
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import SYSTEM, Actor, JsonValue
from signflow.core.errors import Conflict, Forbidden, InvalidDocument, InvalidInput
from signflow.core.i18n import N_, STATE_LABELS, Msg, label, stored
from signflow.core.pades import validate as validation
from signflow.core.pdf.normalise import NormalisedPdf
from signflow.core.requests import access as access
from signflow.core.requests import events as events
from signflow.core.requests import outbox as outbox
from signflow.core.requests import policy as policy
from signflow.core.requests.deps import Deps
from signflow.models import (
    AuditAction,
    AuditEntry,
    Destination,
    JobKind,
    NotifyEvent,
    OnCallGroup,
    RequestState,
    Role,
    RouteStep,
    SignatureRequest,
    Urgency,
    User,
)

MAX_NOTE = 2000
MAX_ROUTE = 4
MAX_REASON = 1000


def deadline(session: Session, deps: Deps, *, group_id: int, urgency: str, rung: int,
             now: datetime) -> datetime:
    """When a request reaching `rung` of `group_id`'s ladder now moves up (its policy)."""
    return policy.rung_deadline(session, deps, group_id=group_id, urgency=urgency, rung=rung, now=now)


def create_request(
    session: Session, deps: Deps, *, actor: Actor, now: datetime,
    upload: NormalisedPdf, filename: str, title: str, group_id: int, destination_id: int,
    urgency: str, note: str = "", stamp_position: str | None = None,
    then_group_ids: Sequence[int] = (),
) -> SignatureRequest:
    """`then_group_ids`: groups that sign after `group_id`, in order."""
    user = acting_user(session, actor)
    if access.acts_as(user) != Role.TECHNICIAN:
        raise Forbidden(N_("Only technicians send documents for signature."))
    if user.role == Role.INTEGRATION and group_id != user.submit_group_id:
        raise Forbidden(N_("This integration account sends documents to its own on-call group only."))
    if urgency not in {u.value for u in Urgency}:
        raise InvalidInput(N_("Choose an urgency."))
    route = [group_id, *[g for g in then_group_ids if g]]
    if len(set(route)) != len(route) or len(route) > MAX_ROUTE:
        raise InvalidInput(N_("Each group signs once, %(max_route)s groups at most."),
                           params={'max_route': MAX_ROUTE})
    if any(session.get(OnCallGroup, g) is None for g in route):
        raise InvalidInput(N_("Choose an on-call group."))
    group = session.get(OnCallGroup, group_id)
    destination = session.get(Destination, destination_id)
    if group is None:
        raise InvalidInput(N_("Choose an on-call group."))
    if destination is None:
        raise InvalidInput(N_("Choose a destination service."))
    if len(note) > MAX_NOTE:
        raise InvalidInput(N_("The note is limited to %(max_note)s characters."),
                           params={'max_note': MAX_NOTE})
    title = " ".join(title.split())[:200] or filename
    _check_earlier_signatures(deps, upload, now)
    # Nobody on call: straight to the head of department, and the administrators told.
    entry = policy.start(session, deps, group_id=group.id, urgency=urgency, now=now)
    level = entry.rung
    stored = deps.blobs.put(session, upload.data, now=now)
    req = SignatureRequest(
        technician_id=user.id, group_id=group.id, step=0,
        route=[RouteStep(position=i, group_id=g) for i, g in enumerate(route)],
        destination_id=destination.id,
        title=title, urgency=urgency, note=note.strip(), state=RequestState.PENDING,
        escalation_level=level, deadline_at=entry.deadline_at, filename=filename,
        original_sha256=upload.original_sha256, document_sha256=stored,
        page_count=upload.page_count, removed_content=access.upload_report(upload.removed, upload.notices),
        stamp_position=stamp_position, created_at=now, updated_at=now,
    )
    session.add(req)
    record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_CREATED,
           notify=NotifyEvent.CREATED, ladder_level=level,
           group=group.id, route=list(route), destination=destination.id, urgency=urgency,
           original_sha256=upload.original_sha256, document_sha256=stored,
           removed=list(upload.removed), notices=[str(n) for n in upload.notices], pages=upload.page_count)
    if entry.nobody_on_call:
        record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_NOBODY_ON_CALL,
               notify=NotifyEvent.NOBODY_ON_CALL, group=group.id, level=level)
    return req


def nobody_was_on_call(session: Session, request_id: int) -> bool:
    """The request went straight to the head of department when it was sent."""
    return session.scalar(select(AuditEntry.seq).where(
        AuditEntry.request_id == request_id,
        AuditEntry.action == AuditAction.REQUEST_NOBODY_ON_CALL).limit(1)) is not None


def _check_earlier_signatures(deps: Deps, upload: NormalisedPdf, now: datetime) -> None:
    """A file kept as received (it carries signatures: countersigning) whose earlier
    signatures are broken is refused now, not after a physician typed a PIN."""
    if upload.sha256 != upload.original_sha256:
        return  # rewritten: it carried no signature
    report = validation.validate_pdf(upload.data, trust_roots=[deps.keys.root_cert], now=now)
    broken = [s for s in report.signatures
              if not (s.ok or (s.outside and validation.acceptable_outside(s)))]
    if broken:
        what = "; ".join(f"{s.signer}: {', '.join(s.problems)}" for s in broken)
        raise InvalidDocument(N_("the PDF carries an earlier signature that is not valid "
                                 "(%(what)s); a signature added on top would not be delivered. "
                                 "Ask the sender for an intact signed copy, or for the unsigned "
                                 "document"), params={'what': what})


def record(
    session: Session, req: SignatureRequest, *, actor: Actor, now: datetime, action: AuditAction,
    notify: NotifyEvent | None = None, ladder_level: int | None = None,
    recipients: Sequence[int] | None = None, **details: JsonValue,
) -> None:
    """The tail of every transition, in the caller's transaction: the request's new
    state is flushed, its audit entry appended and, when someone must be told, the
    notification job enqueued (`ladder_level`: which rung of the on-call ladder to
    page; `recipients`: these users instead). Either all of it commits or none of it does."""
    req.updated_at = now
    session.flush()
    audit.append(session, now=now, actor=actor, action=action, request_id=req.id, **details)
    events.emit(session, req, action, now=now)  # webhooks, with the transition or not at all
    if notify is not None:
        payload: dict[str, JsonValue] = {"request": req.id, "event": notify}
        if ladder_level is not None:
            payload["level"] = ladder_level
        if recipients is not None:
            payload["users"] = list(recipients)
        outbox.enqueue(session, JobKind.NOTIFY, payload, now=now)


def locked_for(session: Session, actor: Actor, request_id: int, now: datetime, *,
               role: Role | None = None, refusal: str = "") -> tuple[User, SignatureRequest]:
    """The acting user and the request, locked for the transition; Forbidden with
    `refusal` when the user's role is not `role`."""
    user = acting_user(session, actor)
    req = access.get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    if role is not None and access.acts_as(user) != role:
        raise Forbidden(refusal)
    return user, req


def deliver(session: Session, req: SignatureRequest, *, now: datetime) -> None:
    req.state = RequestState.DELIVERED
    record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_DELIVERED,
           notify=NotifyEvent.DELIVERED, destination=req.destination_id, sha256=req.signed_sha256)


def decline_request(session: Session, deps: Deps, *, actor: Actor, request_id: int, reason: str,
                    now: datetime) -> SignatureRequest:
    user = acting_user(session, actor)
    reason = reason.strip()
    if not reason:
        raise InvalidInput(N_("Say why you decline, for the technician."))
    if len(reason) > MAX_REASON:
        raise InvalidInput(N_("The reason is limited to %(max_reason)s characters."),
                           params={'max_reason': MAX_REASON})
    req = access.get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    access.require_signer(session, user, req, now, deps)
    req.state, req.declined_by_id, req.decline_reason = RequestState.DECLINED, user.id, reason
    record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_DECLINED,
           notify=NotifyEvent.DECLINED, reason=reason)
    return req


@dataclass(frozen=True)
class _Closing:
    """A transition that one role makes from one state, and that may be asked for
    twice (a double submit): asked again, it lands on the state already reached."""

    role: Role
    refusal: str  # why anyone else is refused
    source: RequestState
    target: RequestState
    action: AuditAction
    notify: NotifyEvent | None = None
    # None: the state's own message (access.state_message); else a message id with %(state)s.
    conflict: str | None = None
    # Acknowledging: who acknowledged and when, and the signed hash in the audit entry.
    receipt: bool = False


_CANCELLING = _Closing(Role.TECHNICIAN, N_("Only the technician who sent a request can cancel it."),
                      RequestState.PENDING, RequestState.CANCELLED, AuditAction.REQUEST_CANCELLED)
_ACKNOWLEDGING = _Closing(Role.RECIPIENT, N_("Only the destination service acknowledges receipt."),
                         RequestState.DELIVERED, RequestState.RECEIVED,
                         AuditAction.REQUEST_RECEIVED, NotifyEvent.RECEIVED,
                         conflict=N_("This request is %(state)s; there is nothing to acknowledge."),
                         receipt=True)


def _close(session: Session, deps: Deps, closing: _Closing, *, actor: Actor, request_id: int,
           now: datetime) -> SignatureRequest:
    user, req = locked_for(session, actor, request_id, now, role=closing.role,
                           refusal=closing.refusal)
    if req.state == closing.target:
        return req  # a double submit is not an error
    if req.state != closing.source:
        raise (access.conflict(access.state_message(req, deps.timezone)) if closing.conflict is None
               else Conflict(closing.conflict, params={"state": Msg(label(STATE_LABELS, req.state))}))
    req.state = closing.target
    if not closing.receipt:
        record(session, req, actor=actor, now=now, action=closing.action, notify=closing.notify)
        return req
    req.acknowledged_by_id, req.acknowledged_at = user.id, now
    record(session, req, actor=actor, now=now, action=closing.action, notify=closing.notify,
           sha256=req.signed_sha256)
    return req


def cancel_request(session: Session, deps: Deps, *, actor: Actor, request_id: int,
                   now: datetime) -> SignatureRequest:
    return _close(session, deps, _CANCELLING, actor=actor, request_id=request_id, now=now)


def acknowledge_receipt(session: Session, deps: Deps, *, actor: Actor, request_id: int,
                        now: datetime) -> SignatureRequest:
    return _close(session, deps, _ACKNOWLEDGING, actor=actor, request_id=request_id, now=now)


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
            req.state = RequestState.EXPIRED
            req.failure_reason = stored(Msg(N_("Nobody signed before the last escalation deadline.")))
            record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_EXPIRED,
                   notify=NotifyEvent.EXPIRED, level=req.escalation_level)
        else:
            _climb(session, deps, req, now=now)
        touched.append(req.id)
    return touched


def _climb(session: Session, deps: Deps, req: SignatureRequest, *, now: datetime,
           unreachable: int | None = None) -> None:
    """One rung up; `unreachable`: the rung nobody could be reached at (else the deadline)."""
    req.escalation_level += 1
    req.deadline_at = deadline(session, deps, group_id=req.group_id, urgency=req.urgency,
                               rung=req.escalation_level, now=now)
    if unreachable is None:
        record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_ESCALATED,
               notify=NotifyEvent.ESCALATED, ladder_level=req.escalation_level,
               level=req.escalation_level)
    else:
        record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_ESCALATED,
               notify=NotifyEvent.ESCALATED, ladder_level=req.escalation_level,
               level=req.escalation_level, unreachable=unreachable)


def escalate_unreachable(session: Session, deps: Deps, *, request_id: int, level: int,
                         now: datetime) -> bool:
    """Nobody at rung `level` could be reached (every channel of every person failed,
    or nobody to page): the next rung now instead of at the deadline. Not past the
    last rung (the deadline expires the request there); a request that moved on
    meanwhile is left alone. True when it climbed."""
    req = session.scalar(select(SignatureRequest).where(SignatureRequest.id == request_id)
                         .with_for_update())
    if (req is None or req.state != RequestState.PENDING or req.escalation_level != level
            or level + 1 >= deps.escalation_levels):
        return False
    _climb(session, deps, req, now=now, unreachable=level)
    return True


def take_request(session: Session, deps: Deps, *, actor: Actor, request_id: int,
                 now: datetime) -> SignatureRequest:
    """'I am on it': the technician and colleagues see who is handling it."""
    user, req = locked_for(session, actor, request_id, now)
    access.require_signer(session, user, req, now, deps)
    if req.assignee_id == user.id:
        return req
    req.assignee_id = user.id
    record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_TAKEN,
           group=req.group_id, step=req.step)
    return req


def delegate_request(session: Session, deps: Deps, *, actor: Actor, request_id: int,
                     to_user_id: int, now: datetime) -> SignatureRequest:
    user, req = locked_for(session, actor, request_id, now)
    access.require_signer(session, user, req, now, deps)
    target = next((c for c in access.colleagues(session, user=user, req=req, now=now)
                   if c.id == to_user_id), None)
    if target is None:
        raise InvalidInput(N_("Delegate to a colleague on call for this group."))
    req.assignee_id = target.id
    record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_DELEGATED,
           notify=NotifyEvent.DELEGATED, to=target.id, group=req.group_id, step=req.step)
    return req
