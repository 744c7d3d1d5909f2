"""Lifecycle events for outside systems: each transition that a webhook subscriber may
hear of queues one delivery per matching subscription, in the transition's own
transaction (so an event exists exactly when its transition committed). The worker
sends them (core.integration.webhooks)."""

from __future__ import annotations

import json
import secrets
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from signflow.models import (
    AuditAction,
    HookKind,
    HookStatus,
    SignatureRequest,
    WebhookDelivery,
    WebhookSubscription,
)

EVENTS: dict[AuditAction, str] = {
    AuditAction.REQUEST_CREATED: "request.created",
    AuditAction.REQUEST_ESCALATED: "request.escalated",
    AuditAction.REQUEST_SIGNED: "request.signed",
    AuditAction.REQUEST_DECLINED: "request.declined",
    AuditAction.REQUEST_EXPIRED: "request.expired",
    AuditAction.REQUEST_DELIVERED: "request.delivered",
    AuditAction.REQUEST_RECEIVED: "request.received",
}
EVENT_TYPES = tuple(EVENTS.values())
# A destination hears of a request once it is its business (as its API token sees it).
DESTINATION_EVENTS = frozenset({"request.delivered", "request.received"})
# A FHIR subscription receives the Bundle of each delivered document.
FHIR_EVENT = "request.delivered"
TEST_EVENT = "signflow.test"


def message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def queue(session: Session, sub: WebhookSubscription, event: str, data: dict[str, object], *,
          request_id: int | None, now: datetime) -> WebhookDelivery:
    body = {"type": event, "timestamp": now.isoformat(), "data": data}
    row = WebhookDelivery(
        subscription_id=sub.id, message_id=message_id(), event=event, request_id=request_id,
        payload=json.dumps(body, sort_keys=True, separators=(",", ":")), status=HookStatus.PENDING,
        attempts=0, created_at=now, next_attempt_at=now)
    session.add(row)
    return row


def wants(sub: WebhookSubscription, req: SignatureRequest, event: str) -> bool:
    if sub.kind == HookKind.FHIR:
        return event == FHIR_EVENT and sub.destination_id == req.destination_id
    if event not in sub.events.split():
        return False
    if sub.destination_id is not None:
        return sub.destination_id == req.destination_id and event in DESTINATION_EVENTS
    return sub.technician_id == req.technician_id


def emit(session: Session, req: SignatureRequest, action: AuditAction, *, now: datetime) -> None:
    event = EVENTS.get(action)
    if event is None:
        return
    subs = session.scalars(select(WebhookSubscription).where(
        WebhookSubscription.active.is_(True),
        or_(WebhookSubscription.destination_id == req.destination_id,
            WebhookSubscription.technician_id == req.technician_id)).order_by(WebhookSubscription.id))
    for sub in subs:
        if wants(sub, req, event):
            queue(session, sub, event, {"id": req.id, "state": str(req.state)},
                  request_id=req.id, now=now)
