"""What the worker does for requests besides escalating them: the repeat page at
the same rung (escalation policy), the handover when a shift ends with a request
still pending, and the reminders when a delivered request is not acknowledged.

Each is done once per request and occasion: a `RequestFollowUp` row, written in the
transaction that enqueues the page, under the request's row lock (SKIP LOCKED, so
several workers share the work); its unique key is the last line of defence."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import Session

from signflow.core.audit.log import SYSTEM
from signflow.core.requests import oncall as oncall
from signflow.core.requests import policy as policy
from signflow.core.requests import workflow as workflow
from signflow.core.requests.deps import Deps
from signflow.models import (
    AuditAction,
    EscalationPolicy,
    FollowUpKind,
    NotifyEvent,
    RequestFollowUp,
    RequestState,
    RotaShift,
    SignatureRequest,
)

BATCH = 200
# Shifts that ended longer ago than this are no longer handed over (a worker that
# was down for a day must not page about yesterday's night).
HANDOVER_LOOKBACK = timedelta(hours=12)


def _not_done(kind: FollowUpKind, ref: int | None = None) -> ColumnElement[bool]:
    """No follow-up of `kind` (with that `ref`) recorded for the request yet."""
    cond = [RequestFollowUp.request_id == SignatureRequest.id, RequestFollowUp.kind == kind]
    if ref is not None:
        cond.append(RequestFollowUp.ref == ref)
    return ~exists().where(and_(*cond))


def _claim(session: Session, req: SignatureRequest, kind: FollowUpKind, ref: int, now: datetime) -> bool:
    """Record that `kind`/`ref` is done for `req`; False when it already was."""
    done = session.scalar(select(RequestFollowUp.id).where(
        RequestFollowUp.request_id == req.id, RequestFollowUp.kind == kind, RequestFollowUp.ref == ref))
    if done is not None:
        return False
    session.add(RequestFollowUp(request_id=req.id, kind=kind, ref=ref, created_at=now))
    session.flush()
    return True


def repeat_pages(session: Session, deps: Deps, *, now: datetime) -> int:
    """Page the current rung again `repeat_after_minutes` into it, once per rung."""
    due = session.scalars(
        select(SignatureRequest)
        .join(EscalationPolicy, and_(EscalationPolicy.group_id == SignatureRequest.group_id,
                                     EscalationPolicy.urgency == SignatureRequest.urgency))
        .where(SignatureRequest.state == RequestState.PENDING, SignatureRequest.deadline_at > now,
               EscalationPolicy.repeat_after_minutes.is_not(None))
        .order_by(SignatureRequest.id).limit(BATCH).with_for_update(of=SignatureRequest, skip_locked=True)
    ).all()
    count = 0
    for req in due:
        ladder = policy.policy_for(session, deps, req.group_id, req.urgency)
        repeat = ladder.repeat_after_minutes
        rung = req.escalation_level
        if repeat is None or repeat >= ladder.minutes_at(rung):
            continue
        started = req.deadline_at - timedelta(minutes=ladder.minutes_at(rung))
        if now < started + timedelta(minutes=repeat):
            continue
        if _claim(session, req, FollowUpKind.REPEAT_PAGE, req.step * 100 + rung, now):
            workflow.record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_REPAGED,
                            notify=NotifyEvent.REPAGED, ladder_level=rung, level=rung, step=req.step)
            count += 1
    return count


def handovers(session: Session, *, now: datetime) -> int:
    """A shift ended while a request of its group was pending at a rung already paged:
    whoever is on call at that rung now (not the outgoing physician) is paged, and the
    request goes to the top of their inbox (`handed_over_ids`)."""
    ended = session.scalars(select(RotaShift).where(
        RotaShift.ends_at <= now, RotaShift.ends_at > now - HANDOVER_LOOKBACK)
        .order_by(RotaShift.ends_at, RotaShift.id)).all()
    count = 0
    for shift in ended:
        pending = session.scalars(
            select(SignatureRequest).where(
                SignatureRequest.state == RequestState.PENDING, SignatureRequest.group_id == shift.group_id,
                SignatureRequest.created_at < shift.ends_at, SignatureRequest.escalation_level >= shift.level,
                _not_done(FollowUpKind.HANDOVER, shift.id))
            .order_by(SignatureRequest.id).limit(BATCH).with_for_update(skip_locked=True)).all()
        for req in pending:
            if not _claim(session, req, FollowUpKind.HANDOVER, shift.id, now):
                continue
            still_there = {u.id for u in oncall.on_call(session, shift.group_id, now)}
            if shift.user_id in still_there:
                continue  # the same physician carries on (back-to-back shifts): nobody new
            incoming = [u for u in oncall.on_call(session, shift.group_id, now, level=shift.level)
                        if u.id != shift.user_id] or \
                       [u for u in oncall.on_call(session, shift.group_id, now) if u.id != shift.user_id]
            if not incoming:
                continue  # nobody on call: the ladder (backup, head) takes over at the deadline
            workflow.record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_HANDED_OVER,
                            notify=NotifyEvent.HANDED_OVER, recipients=[u.id for u in incoming],
                            ended_shift=shift.id, outgoing=shift.user_id, to=[u.id for u in incoming])
            count += 1
    return count


def handed_over_ids(session: Session, request_ids: list[int]) -> set[int]:
    """Which of these requests were handed over from an ended shift."""
    if not request_ids:
        return set()
    return set(session.scalars(select(RequestFollowUp.request_id).where(
        RequestFollowUp.kind == FollowUpKind.HANDOVER, RequestFollowUp.request_id.in_(request_ids))))


def handed_over_first(session: Session, pending: list[SignatureRequest]
                      ) -> tuple[list[SignatureRequest], set[int]]:
    """A physician's pending requests, those handed over from an ended shift first
    (oldest handover first), then the rest newest first; and which were handed over."""
    handed = handed_over_ids(session, [r.id for r in pending])
    return sorted(pending, key=lambda r: (r.id not in handed, r.id if r.id in handed else -r.id)), handed


def acknowledgement_reminders(session: Session, deps: Deps, *, now: datetime) -> tuple[int, int]:
    """Delivered and not acknowledged: after `ack_reminder_minutes` the destination is
    reminded; after `ack_alert_minutes` the technician is alerted. Once each."""
    counts = []
    for kind, minutes, event, action in (
        (FollowUpKind.ACK_REMINDER, deps.ack_reminder_minutes, NotifyEvent.ACK_REMINDER,
         AuditAction.REQUEST_ACK_REMINDED),
        (FollowUpKind.ACK_OVERDUE, deps.ack_alert_minutes, NotifyEvent.ACK_OVERDUE,
         AuditAction.REQUEST_ACK_OVERDUE),
    ):
        due = session.scalars(
            select(SignatureRequest).where(
                SignatureRequest.state == RequestState.DELIVERED,
                SignatureRequest.signed_at <= now - timedelta(minutes=minutes), _not_done(kind))
            .order_by(SignatureRequest.id).limit(BATCH).with_for_update(skip_locked=True)).all()
        done = 0
        for req in due:
            if _claim(session, req, kind, 0, now):
                workflow.record(session, req, actor=SYSTEM, now=now, action=action, notify=event,
                                minutes=minutes, destination=req.destination_id)
                done += 1
        counts.append(done)
    return counts[0], counts[1]


def run_due(session: Session, deps: Deps, *, now: datetime) -> dict[FollowUpKind, int]:
    """Every follow-up due now: how many of each kind were done."""
    reminded, alerted = acknowledgement_reminders(session, deps, now=now)
    return {FollowUpKind.REPEAT_PAGE: repeat_pages(session, deps, now=now),
            FollowUpKind.HANDOVER: handovers(session, now=now),
            FollowUpKind.ACK_REMINDER: reminded, FollowUpKind.ACK_OVERDUE: alerted}
