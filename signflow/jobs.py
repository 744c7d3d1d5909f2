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

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import notices, push_devices
from signflow.core.audit import checkpoints
from signflow.core.audit import log as audit
from signflow.core.audit.log import SYSTEM
from signflow.core.errors import ConfigurationError, ServiceUnavailable
from signflow.core.notify.channels import Message
from signflow.core.ops import archive_renewal as archive
from signflow.core.ops import consistency as consistency
from signflow.core.ops import retention as retention
from signflow.core.pki import crl as revocation
from signflow.core.requests import followup as followups
from signflow.core.requests import oncall as oncall
from signflow.core.requests import workflow as workflow
from signflow.models import (
    AuditAction,
    Checkpoint,
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
MAX_ATTEMPTS = 6


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
    return [req.technician]


_SUBJECTS: dict[NotifyEvent, str] = {
    NotifyEvent.CREATED: "Signature needed ({urgency}): request #{id}",
    NotifyEvent.ESCALATED: "ESCALATED signature needed ({urgency}): request #{id}",
    NotifyEvent.DELEGATED: "Signature needed ({urgency}): request #{id} was delegated to you",
    NotifyEvent.DELIVERED: "Signed document delivered: request #{id}",
    NotifyEvent.DECLINED: "Request #{id} was declined",
    NotifyEvent.EXPIRED: "Request #{id} expired unsigned",
    NotifyEvent.RECEIVED: "Request #{id} was received",
    NotifyEvent.FAILED: "Request #{id} failed: open signflow to see why",
    NotifyEvent.REPAGED: "STILL WAITING, signature needed ({urgency}): request #{id}",
    NotifyEvent.HANDED_OVER: "Handed over to you, signature needed ({urgency}): request #{id}",
    NotifyEvent.ACK_REMINDER: "Reminder: signed document #{id} awaits your acknowledgement",
    NotifyEvent.ACK_OVERDUE: "Request #{id}: the destination has not acknowledged receipt yet",
}
_PATHS: dict[NotifyEvent, str] = {
    NotifyEvent.CREATED: "/inbox/{id}", NotifyEvent.ESCALATED: "/inbox/{id}",
    NotifyEvent.DELEGATED: "/inbox/{id}", NotifyEvent.DELIVERED: "/received/{id}",
    NotifyEvent.REPAGED: "/inbox/{id}", NotifyEvent.HANDED_OVER: "/inbox/{id}",
    NotifyEvent.ACK_REMINDER: "/received/{id}",
}


# Events that page a physician: they also go to the physician's verified Web Push devices.
_PAGES = (NotifyEvent.CREATED, NotifyEvent.ESCALATED, NotifyEvent.DELEGATED)


def _push_payload(req: SignatureRequest) -> dict[str, str]:
    """What a phone's lock screen shows: urgency, group, request number. No title, no note."""
    return {"kind": "page", "title": f"{str(req.urgency).upper()} · {req.group.name} · #{req.id}",
            "body": "Signature needed: open signflow to act on it.", "url": f"/inbox/{req.id}",
            "tag": f"request-{req.id}"}


def _push(session: Session, svc: Services, message: Message, job: Job, now: datetime) -> int:
    """Page the recipient's verified push devices too; how many were reached."""
    if svc.push is None or message.to_user_id is None:
        return 0
    req = session.get(SignatureRequest, int(json.loads(job.payload)["request"]))
    if req is None:
        return 0
    reached, problems = push_devices.push_to_user(session, svc.push, actor=SYSTEM, now=now,
                                                  user_id=message.to_user_id, payload=_push_payload(req))
    if reached:
        audit.append(session, now=now, actor=SYSTEM, action=AuditAction.NOTIFICATION_SENT,
                     request_id=req.id, to=message.to_name, channel="push", devices=reached)
    for problem in problems:
        audit.append(session, now=now, actor=SYSTEM, action=AuditAction.NOTIFICATION_FAILED,
                     request_id=req.id, to=message.to_name, channel="push", problem=problem)
    return reached


def _messages(session: Session, svc: Services, job: Job, now: datetime) -> list[Message]:
    payload = json.loads(job.payload)
    req = session.get(SignatureRequest, int(payload["request"]))
    if req is None:
        return []
    event = NotifyEvent(payload["event"])
    # Only an identifier and a link leave the hospital: never a title, a note or the file.
    subject = _SUBJECTS[event].format(urgency=req.urgency, id=req.id)
    link = svc.settings.base_url.rstrip("/") + _PATHS.get(event, "/requests/{id}").format(id=req.id)
    users = _recipients(session, req, event, int(payload.get("level", 0)), now, payload.get("users"))
    messages = [Message(to_name=u.display_name, to_email=u.email, to_phone=u.phone,
                        subject=subject, body=subject + ". Open signflow to act on it.", link=link,
                        to_user_id=u.id if event in _PAGES else None)
                for u in users]
    if event in ("delivered", "ack_reminder") and req.destination.email:
        messages.append(Message(to_name=req.destination.name, to_email=req.destination.email,
                                to_phone=None, subject=subject, body=subject, link=link))
    return messages


def _account_messages(session: Session, svc: Services, payload: dict[str, object]) -> list[Message]:
    """A notice about a person's own account, to that person's own address only."""
    user = session.get(User, int(str(payload["user"])))
    if user is None:
        return []
    link = svc.settings.base_url.rstrip("/") + str(payload.get("path", "/"))
    return [Message(to_name=user.display_name, to_email=user.email, to_phone=user.phone,
                    subject=str(payload["subject"]), body=notices.body_of(payload, svc.keys.master_key),
                    link=link)]


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
    """Send a notification job's messages, in the transaction that claimed it."""
    errors: list[str] = []
    sent = 0
    payload = json.loads(job.payload)
    # What the audit entry names: the request, or the person told about their account.
    about = ({"user": payload["user"]} if job.kind == JobKind.ACCOUNT_NOTICE
             else {"request_id": payload["request"]})
    messages = (_account_messages(session, svc, payload) if job.kind == JobKind.ACCOUNT_NOTICE
                else _messages(session, svc, job, now))
    for message in messages:
        sent += _push(session, svc, message, job, now) > 0
        try:
            channel = svc.notifier.send(message)
            sent += 1
            audit.append(session, now=now, actor=SYSTEM, action=AuditAction.NOTIFICATION_SENT,
                         **about, to=message.to_name, channel=channel, subject=message.subject)
        except ServiceUnavailable as exc:
            errors.append(exc.message)
            audit.append(session, now=now, actor=SYSTEM, action=AuditAction.NOTIFICATION_FAILED,
                         **about, to=message.to_name, problem=exc.message)
    if errors and job.attempts < MAX_ATTEMPTS and sent == 0:
        job.run_at = now + timedelta(seconds=30 * 2 ** job.attempts)
        job.last_error = "; ".join(errors)[:2000]
    else:
        job.status = JobStatus.FAILED if errors and sent == 0 else JobStatus.DONE
        job.last_error = "; ".join(errors)[:2000] or None
        if job.kind == JobKind.ACCOUNT_NOTICE:
            # A one-time code leaves the database once the job is over.
            job.payload = notices.scrubbed(payload)
    return not errors


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
