"""Delivery you can see: every notification job becomes one row per recipient and
channel (`notification_deliveries`), sent in the recipient's order until one
channel takes it; a failed recipient is retried with backoff whatever happened to
the others; the technician's page lists who was paged, when, how, and when they
opened the request.

The rows of a job are written and sent in the transaction of the worker that
claimed the job (SELECT ... FOR UPDATE SKIP LOCKED), so two workers never send
the same row and a worker that dies leaves them to the next."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from signflow.core.accounts.contacts import Reachable
from signflow.core.audit import log as audit
from signflow.core.audit.log import SYSTEM, JsonValue
from signflow.core.errors import ServiceUnavailable
from signflow.core.notify.dispatch import Outgoing, Senders, dispatch
from signflow.models import AuditAction, ChannelKind, DeliveryStatus, Job, NotificationDelivery

MAX_ATTEMPTS = 6
NO_ADDRESS = "no verified contact channel"
FIRST_RETRY = timedelta(seconds=30)


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, 4 min...: after `attempts` failed tries."""
    return FIRST_RETRY * int(2 ** (attempts - 1))


@dataclass(frozen=True)
class Recipient:
    key: str  # unique within the job: "user:12", "destination:3"
    name: str
    user_id: int | None
    addresses: Sequence[Reachable]


@dataclass(frozen=True)
class Content:
    subject: str
    text: str
    link: str
    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Round:
    """What one pass over a job's rows did, and what is left."""

    sent: int
    failed: int
    errors: tuple[str, ...]
    next_attempt_at: datetime | None  # None: nothing left to try
    everyone_failed: bool  # every channel of every recipient tried, none took it
    given_up: int  # recipients with no attempt left and never reached


def rows_of(session: Session, job_id: int) -> list[NotificationDelivery]:
    return list(session.scalars(select(NotificationDelivery)
                                .where(NotificationDelivery.job_id == job_id)
                                .order_by(NotificationDelivery.recipient_key,
                                          NotificationDelivery.position, NotificationDelivery.id)))


def plan(session: Session, job: Job, recipients: Sequence[Recipient], *, request_id: int | None,
         level: int | None, now: datetime) -> list[NotificationDelivery]:
    """The job's rows, written the first time the job runs (later runs reuse them)."""
    rows = rows_of(session, job.id)
    if rows:
        return rows
    for recipient in recipients:
        if not recipient.addresses:
            # Shown on the request page, and it counts as a rung nobody could be reached at.
            session.add(NotificationDelivery(
                job_id=job.id, request_id=request_id, user_id=recipient.user_id,
                recipient=recipient.name[:200], recipient_key=recipient.key, channel_id=None,
                kind=ChannelKind.EMAIL, address="", position=0, level=level,
                status=DeliveryStatus.FAILED, attempts=0, next_attempt_at=None,
                last_error=NO_ADDRESS, created_at=now))
        for position, where in enumerate(recipient.addresses):
            session.add(NotificationDelivery(
                job_id=job.id, request_id=request_id, user_id=recipient.user_id,
                recipient=recipient.name[:200], recipient_key=recipient.key,
                channel_id=where.channel_id, kind=where.kind, address=where.address,
                position=position, level=level, status=DeliveryStatus.QUEUED, attempts=0,
                next_attempt_at=now, created_at=now))
    session.flush()
    return rows_of(session, job.id)


def send_due(session: Session, senders: Senders, job: Job, content: Callable[[NotificationDelivery], Content],
             *, now: datetime, page: bool, request_id: int | None,
             about: dict[str, JsonValue]) -> Round:
    """Try every recipient not reached yet whose next attempt is due, channel by
    channel in their order, stopping at the first that takes the message."""
    rows = rows_of(session, job.id)
    by_recipient: dict[str, list[NotificationDelivery]] = {}
    for row in rows:
        by_recipient.setdefault(row.recipient_key, []).append(row)
    sent = failed = 0
    errors: list[str] = []
    sent_action = AuditAction.PAGE_SENT if page else AuditAction.NOTIFICATION_SENT
    failed_action = AuditAction.PAGE_FAILED if page else AuditAction.NOTIFICATION_FAILED
    for recipient_rows in by_recipient.values():
        if any(r.status == DeliveryStatus.SENT for r in recipient_rows):
            continue
        due = [r for r in recipient_rows if r.next_attempt_at is not None and r.next_attempt_at <= now]
        for row in due:
            row.attempts += 1
            what = content(row)
            try:
                dispatch(senders, Outgoing(
                    message_id=f"msg_{row.id}", kind=row.kind, to_name=row.recipient,
                    address=row.address, subject=what.subject, text=what.text, link=what.link,
                    facts=what.facts, page=page))
            except ServiceUnavailable as exc:
                failed += 1
                errors.append(f"{row.recipient} ({row.kind}): {exc.message}")
                row.status, row.last_error = DeliveryStatus.FAILED, exc.message[:1000]
                row.next_attempt_at = now + backoff(row.attempts) if row.attempts < MAX_ATTEMPTS else None
                audit.append(session, now=now, actor=SYSTEM, action=failed_action,
                             request_id=request_id, **about,
                             to=row.recipient, channel=row.kind, delivery=row.id,
                             problem=exc.message, attempt=row.attempts)
                continue
            sent += 1
            row.status, row.sent_at, row.next_attempt_at, row.last_error = (
                DeliveryStatus.SENT, now, None, None)
            audit.append(session, now=now, actor=SYSTEM, action=sent_action, request_id=request_id, **about,
                         to=row.recipient, channel=row.kind, delivery=row.id, subject=what.subject)
            for rest in recipient_rows:
                # Reached: nothing more to try (a failure keeps its reason on the page).
                if rest.status == DeliveryStatus.QUEUED:
                    rest.status = DeliveryStatus.SKIPPED
                rest.next_attempt_at = None
            break
    session.flush()
    return _summary(by_recipient, sent=sent, failed=failed, errors=errors)


def _summary(by_recipient: dict[str, list[NotificationDelivery]], *, sent: int, failed: int,
             errors: list[str]) -> Round:
    reached = {k for k, rows in by_recipient.items() if any(r.status == DeliveryStatus.SENT for r in rows)}
    waiting = [r.next_attempt_at for k, rows in by_recipient.items() if k not in reached
               for r in rows if r.next_attempt_at is not None]
    given_up = sum(1 for k, rows in by_recipient.items()
                   if k not in reached and all(r.next_attempt_at is None for r in rows))
    tried_all = all(r.status == DeliveryStatus.FAILED for rows in by_recipient.values() for r in rows)
    return Round(sent=sent, failed=failed, errors=tuple(errors),
                 next_attempt_at=min(waiting) if waiting else None,
                 everyone_failed=bool(by_recipient) and tried_all, given_up=given_up)


def mark_seen(session: Session, *, request_id: int, user_id: int, now: datetime) -> None:
    """The paged person opened the request: "seen by Dr X at 03:12"."""
    session.execute(update(NotificationDelivery)
                    .where(NotificationDelivery.request_id == request_id,
                           NotificationDelivery.user_id == user_id,
                           NotificationDelivery.status == DeliveryStatus.SENT,
                           NotificationDelivery.seen_at.is_(None))
                    .values(seen_at=now))


def deliveries_of(session: Session, request_id: int) -> list[NotificationDelivery]:
    """Every message about a request, oldest first (the request page's "who was paged")."""
    return list(session.scalars(select(NotificationDelivery)
                                .where(NotificationDelivery.request_id == request_id)
                                .order_by(NotificationDelivery.created_at, NotificationDelivery.job_id,
                                          NotificationDelivery.recipient_key,
                                          NotificationDelivery.position)))
