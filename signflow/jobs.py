"""The worker: escalations, notifications and audit checkpoints.

Each unit of work is its own transaction. Jobs are claimed with
SELECT ... FOR UPDATE SKIP LOCKED, so any number of workers may run; a worker
killed mid-job leaves the job pending and another one picks it up.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import contacts, notices, push_devices
from signflow.core.audit import checkpoints
from signflow.core.audit.log import SYSTEM, JsonValue
from signflow.core.clock import utcnow
from signflow.core.errors import ConfigurationError
from signflow.core.i18n import N_, URGENCY_LABELS, Translator, label
from signflow.core.integration import webhooks as webhooks
from signflow.core.notify import webpush as webpush
from signflow.core.ops import archive_renewal as archive
from signflow.core.ops import consistency as consistency
from signflow.core.ops import retention as retention
from signflow.core.pki import crl as revocation
from signflow.core.requests import followup as followups
from signflow.core.requests import oncall as oncall
from signflow.core.requests import outbox as outbox
from signflow.core.requests import paging as paging
from signflow.core.requests import workflow as workflow
from signflow.models import (
    ChannelKind,
    Checkpoint,
    ContactChannel,
    Job,
    JobKind,
    JobStatus,
    NotifyEvent,
    Role,
    Setting,
    SignatureRequest,
    User,
)
from signflow.services import Services

log = logging.getLogger("signflow.worker")
MAX_ATTEMPTS = paging.MAX_ATTEMPTS


@dataclass(frozen=True)
class RunSummary:
    escalated: int
    notified: int
    failed: int
    checkpoint_size: int | None


def _recipients(session: Session, req: SignatureRequest, event: NotifyEvent, level: int,
                now: datetime, named: list[int] | None = None) -> list[User]:
    if named is not None:  # a handover: the incoming physicians the worker chose
        return [u for u in (session.get(User, int(i)) for i in named) if u is not None and u.active]
    if event in (NotifyEvent.CREATED, NotifyEvent.ESCALATED, NotifyEvent.REPAGED):
        return oncall.recipients_for_level(session, req.group, level, now)
    if event == NotifyEvent.DELEGATED:
        return [req.assignee] if req.assignee is not None else []
    if event in (NotifyEvent.DELIVERED, NotifyEvent.ACK_REMINDER):
        return list(session.scalars(select(User).where(
            User.role == Role.RECIPIENT, User.destination_id == req.destination_id,
            User.active.is_(True))))
    if event in (NotifyEvent.NOBODY_ON_CALL, NotifyEvent.NOBODY_REACHABLE):
        return list(session.scalars(select(User).where(User.role == Role.ADMIN, User.active.is_(True))
                                    .order_by(User.id)))
    return [req.technician]


_SUBJECTS: dict[NotifyEvent, str] = {
    NotifyEvent.CREATED: N_("Signature needed (%(urgency)s): request #%(id)s"),
    NotifyEvent.ESCALATED: N_("ESCALATED signature needed (%(urgency)s): request #%(id)s"),
    NotifyEvent.DELEGATED: N_("Signature needed (%(urgency)s): request #%(id)s was delegated to you"),
    NotifyEvent.DELIVERED: N_("Signed document delivered: request #%(id)s"),
    NotifyEvent.DECLINED: N_("Request #%(id)s was declined"),
    NotifyEvent.EXPIRED: N_("Request #%(id)s expired unsigned"),
    NotifyEvent.RECEIVED: N_("Request #%(id)s was received"),
    NotifyEvent.FAILED: N_("Request #%(id)s failed: open signflow to see why"),
    NotifyEvent.NOBODY_ON_CALL: N_("Nobody on call for %(group)s: request #%(id)s went to the head of "
                                   "department"),
    NotifyEvent.NOBODY_REACHABLE: N_("Nobody reachable on call for %(group)s: request #%(id)s moved up "
                                     "at once"),
    NotifyEvent.REPAGED: N_("STILL WAITING, signature needed (%(urgency)s): request #%(id)s"),
    NotifyEvent.HANDED_OVER: N_("Handed over to you, signature needed (%(urgency)s): request #%(id)s"),
    NotifyEvent.ACK_REMINDER: N_("Reminder: signed document #%(id)s awaits your acknowledgement"),
    NotifyEvent.ACK_OVERDUE: N_("Request #%(id)s: the destination has not acknowledged receipt yet"),
}
_PATHS: dict[NotifyEvent, str] = {
    NotifyEvent.CREATED: "/inbox/{id}", NotifyEvent.ESCALATED: "/inbox/{id}",
    NotifyEvent.DELEGATED: "/inbox/{id}", NotifyEvent.DELIVERED: "/received/{id}",
    NotifyEvent.NOBODY_ON_CALL: "/admin/rota", NotifyEvent.NOBODY_REACHABLE: "/admin/users",
    NotifyEvent.REPAGED: "/inbox/{id}", NotifyEvent.HANDED_OVER: "/inbox/{id}",
    NotifyEvent.ACK_REMINDER: "/received/{id}",
}
# Pages ask a physician to act: audited as page.sent / page.failed, and a rung whose
# every channel failed escalates at once.
_PAGES = frozenset({NotifyEvent.CREATED, NotifyEvent.ESCALATED, NotifyEvent.DELEGATED,
                    NotifyEvent.REPAGED, NotifyEvent.HANDED_OVER})
_LADDER = frozenset({NotifyEvent.CREATED, NotifyEvent.ESCALATED})


@dataclass(frozen=True)
class _Plan:
    recipients: list[paging.Recipient]
    content: paging.Content
    about: dict[str, JsonValue]
    request_id: int | None = None
    event: NotifyEvent | None = None
    level: int | None = None


def _person(session: Session, user: User, *, page: bool) -> paging.Recipient:
    return paging.Recipient(key=f"user:{user.id}", name=user.display_name, user_id=user.id,
                            addresses=contacts.reachable(session, user, page=page))


def _request_plan(session: Session, svc: Services, payload: dict[str, Any], now: datetime) -> _Plan | None:
    req = session.get(SignatureRequest, int(payload["request"]))
    if req is None:
        return None
    event = NotifyEvent(payload["event"])
    level = int(payload.get("level", 0))
    # Only an identifier and a link leave the hospital: never a title, a note or the file.
    t = Translator(svc.settings.language, svc.settings.timezone)
    subject = t(_SUBJECTS[event], urgency=t(label(URGENCY_LABELS, req.urgency)), id=req.id,
                group=req.group.name)
    link = svc.settings.base_url.rstrip("/") + _PATHS.get(event, "/requests/{id}").format(id=req.id)
    users = _recipients(session, req, event, level, now, payload.get("users"))
    # Each person's verified channels, Web Push devices among them, in their own order.
    recipients = [_person(session, u, page=event in _PAGES) for u in users]
    if event in (NotifyEvent.DELIVERED, NotifyEvent.ACK_REMINDER) and req.destination.email:
        recipients.append(paging.Recipient(
            key=f"destination:{req.destination_id}", name=req.destination.name, user_id=None,
            addresses=[contacts.Reachable(ChannelKind.EMAIL, req.destination.email, None, 0)]))
    content = paging.Content(
        subject=subject, text=t(N_("signflow: %(subject)s, %(group)s. Open signflow to act on it."),
                                subject=subject, group=req.group.name),
        link=link, facts=(("urgency", str(req.urgency)), ("group", req.group.name),
                          ("request", str(req.id))))
    return _Plan(recipients=recipients, content=content, about={},
                 request_id=req.id, event=event, level=level if event in _LADDER else None)


def _account_plan(session: Session, svc: Services, payload: dict[str, Any]) -> _Plan | None:
    """A notice about a person's own account, to that person's own address only (or
    through the one channel it verifies)."""
    user = session.get(User, int(str(payload["user"])))
    if user is None:
        return None
    addresses: list[contacts.Reachable] = []
    if "channel" in payload:
        channel = session.get(ContactChannel, int(payload["channel"]))
        if channel is not None and channel.user_id == user.id:
            addresses.append(contacts.Reachable(channel.kind, channel.address, channel.id, 0))
    else:
        addresses = contacts.account_addresses(user)
    link = svc.settings.base_url.rstrip("/") + str(payload.get("path", "/"))
    t = Translator(svc.settings.language, svc.settings.timezone)
    content = paging.Content(subject=notices.subject_of(payload, t),
                             text=notices.body_of(payload, svc.keys.master_key, t), link=link)
    recipient = paging.Recipient(key=f"user:{user.id}", name=user.display_name, user_id=user.id,
                                 addresses=addresses)
    return _Plan(recipients=[recipient], content=content, about={"user": user.id})


def run_job(svc: Services, *, now: datetime) -> bool | None:
    """Claim and run one due job. None when there was nothing to do."""
    with svc.sessions() as session, session.begin():
        job = session.scalar(
            select(Job).where(Job.status == JobStatus.PENDING, Job.run_at <= now)
            .order_by(Job.run_at, Job.id).limit(1).with_for_update(skip_locked=True)
        )
        if job is None:
            return None
        job.attempts += 1
        if job.kind != JobKind.CHECKPOINT:
            return _notify(session, svc, job, now)
        # Claimed and done here; the checkpoint itself is written below, in a
        # transaction of its own that locks nothing while it reads the tree. Should
        # it fail, the periodic checkpoint covers the same entries.
        job.status = JobStatus.DONE
    with svc.sessions() as session, session.begin():
        _checkpoint(session, svc, now)
    return True


def _notify(session: Session, svc: Services, job: Job, now: datetime) -> bool:
    """Send a notification job's due messages, in the transaction that claimed it."""
    payload = json.loads(job.payload)
    plan = (_account_plan(session, svc, payload) if job.kind == JobKind.ACCOUNT_NOTICE
            else _request_plan(session, svc, payload, now))
    if plan is None:
        job.status = JobStatus.DONE
        return True
    paging.plan(session, job, plan.recipients, request_id=plan.request_id, level=plan.level, now=now)
    senders = svc.senders
    if svc.push is not None:
        senders = {**senders, ChannelKind.PUSH: push_devices.DeviceSender(session, svc.push, now=now,
                                                                          language=svc.settings.language)}
    result = paging.send_due(session, senders, job, lambda _row: plan.content, now=now,
                             page=plan.event in _PAGES, request_id=plan.request_id,
                             about=plan.about)
    if result.errors:
        job.last_error = "; ".join(result.errors)[:2000]
    if result.next_attempt_at is not None:
        job.run_at = result.next_attempt_at  # still pending: the recipients not reached yet
    else:
        job.status = JobStatus.FAILED if result.given_up else JobStatus.DONE
        if job.kind == JobKind.ACCOUNT_NOTICE:
            # A one-time code leaves the database once the job is over.
            job.payload = notices.scrubbed(payload)
    if plan.level is not None and plan.request_id is not None and (
            not plan.recipients or result.everyone_failed):
        _unreachable_rung(session, svc, plan, now, first_run=job.attempts == 1)
    return not result.errors


def _unreachable_rung(session: Session, svc: Services, plan: _Plan, now: datetime, *,
                      first_run: bool) -> None:
    """Nobody at this rung can be reached (nobody to page; or nobody with a verified
    channel, or every channel failed): the next rung at once, and the administrators
    told, once per rung (a request created with nobody on call already told them)."""
    assert plan.request_id is not None and plan.level is not None
    alert = (NotifyEvent.NOBODY_ON_CALL if not plan.recipients and plan.event == NotifyEvent.ESCALATED
             else NotifyEvent.NOBODY_REACHABLE if plan.recipients else None)
    if alert is not None and first_run:
        outbox.enqueue(session, JobKind.NOTIFY, {"request": plan.request_id, "event": alert,
                                                 "level": plan.level}, now=now)
    if workflow.escalate_unreachable(session, svc.deps, request_id=plan.request_id,
                                     level=plan.level, now=now):
        log.warning("request %s: nobody reachable at rung %s, escalated at once",
                    plan.request_id, plan.level)


def run_once(svc: Services) -> RunSummary:
    now = svc.clock()
    with svc.sessions() as session, session.begin():
        escalated = workflow.escalate_due(session, svc.deps, now=now)
    with svc.sessions() as session, session.begin():
        # Repeat pages, handovers at the end of a shift, unacknowledged deliveries.
        followups.run_due(session, svc.deps, now=now)
    with svc.sessions() as session, session.begin():
        # Requests that can no longer progress (a blob lost) become FAILED, with a reason.
        consistency.recover(session, svc.deps, now=now)
    notified = failed = 0
    while (outcome := run_job(svc, now=now)) is not None:
        notified += outcome
        failed += not outcome
    # Webhooks and FHIR servers: each delivery its own transaction (a hanging receiver
    # costs one timeout, the rest go on).
    webhooks.deliver_due(svc.sessions, svc.deps, outbound(svc), now=now)
    with svc.sessions() as session, session.begin():
        latest = checkpoints.latest_checkpoint(session)
        interval = timedelta(seconds=svc.settings.checkpoint_interval_seconds)
        if latest is None or now - latest.created_at >= interval:
            latest = _checkpoint(session, svc, now)
    with svc.sessions() as session, session.begin():
        # CRLs are re-signed here before they go stale, not on a relying party's request.
        for issuer in ("root", "issuing"):
            revocation.crl(session, svc.keys, issuer=issuer, now=now)
    renew_archive_timestamps(svc, now=now)
    purge_expired_documents(svc, now=now)
    return RunSummary(escalated=len(escalated), notified=notified, failed=failed,
                      checkpoint_size=latest.size if latest is not None else None)


def outbound(svc: Services) -> webhooks.Outbound:
    settings = svc.settings
    return webhooks.Outbound(
        master_key=svc.keys.master_key, base_url=settings.base_url, production=settings.production,
        allow_private=settings.allow_private_endpoints,
        timeout=float(settings.notify_timeout_seconds), wall_clock=utcnow,
        resolve=webpush.resolve_host)


def _checkpoint(session: Session, svc: Services, now: datetime) -> Checkpoint:
    return checkpoints.write_checkpoint(session, signing_key=svc.keys.audit_key,
                                  origin=svc.settings.audit_origin, now=now)


def run_forever(svc: Services, *, interval: float = 5.0, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    log.info("worker started")
    while not stop.is_set():
        try:
            summary = run_once(svc)
            if summary.escalated or summary.notified or summary.failed:
                log.info("worker: %s", summary)
        except Exception:  # a bad tick must not stop escalations for good
            log.exception("worker tick failed")
        stop.wait(interval)


def start_in_thread(svc: Services, *, interval: float = 5.0) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=run_forever, args=(svc,), kwargs={"interval": interval, "stop": stop},
                     name="signflow-worker", daemon=True).start()
    return stop


LTA_SETTING = "lta.last_run"


def renew_archive_timestamps(svc: Services, *, now: datetime) -> list[int]:
    """Once a day: fresh document timestamps on stored files whose timestamp chain
    expires within SIGNFLOW_LTA_RENEW_DAYS, so they keep verifying offline."""
    with svc.sessions() as session, session.begin():
        if not _once_a_day(session, LTA_SETTING, now):
            return []
        try:
            return archive.renew_due(session, svc.deps, now=now,
                                     within_days=svc.settings.lta_renew_days, actor=SYSTEM)
        except ConfigurationError as exc:
            # The renewing TSA itself expires too soon: say so loudly, keep the worker going.
            log.error("archive timestamps not renewed: %s", exc.message)
            return []


PURGE_SETTING = "retention.last_run"


def _once_a_day(session: Session, name: str, now: datetime) -> bool:
    """Claim today's run of a daily task (a row lock, so one worker wins)."""
    row = session.scalar(select(Setting).where(Setting.name == name).with_for_update())
    if row is not None and row.value and now - datetime.fromisoformat(row.value) < timedelta(days=1):
        return False
    if row is None:
        row = Setting(name=name, value="")
        session.add(row)
    row.value = now.isoformat()
    return True


def purge_expired_documents(svc: Services, *, now: datetime) -> list[int]:
    """Once a day: document contents past SIGNFLOW_RETENTION_DAYS are removed
    (requests, hashes and audit entries stay)."""
    with svc.sessions() as session, session.begin():
        if not _once_a_day(session, PURGE_SETTING, now):
            return []
        return retention.purge(session, svc.deps, now=now, retention_days=svc.settings.retention_days,
                               actor=SYSTEM, previews=svc.previews)
