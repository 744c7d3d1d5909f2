"""Webhook and FHIR subscriptions (admin pages), and their deliveries (the worker).

A delivery is claimed with SELECT ... FOR UPDATE SKIP LOCKED and posted in the
transaction that claimed it, so two workers never post one delivery at once; it is
retried with exponential backoff (30 s, 1 min, 2 min ... at most an hour apart)
until the receiver answers 2xx or 24 h have passed since it was queued (or
replayed), then it is FAILED and stays in the log for an admin to replay."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import InvalidInput, NotFound, SignflowError
from signflow.core.i18n import N_
from signflow.core.integration import fhir as fhir
from signflow.core.integration import hooks as hooks
from signflow.core.requests import events as events
from signflow.core.requests.deps import Deps
from signflow.core.storage import decrypt_secret, encrypt_secret
from signflow.models import (
    AuditAction,
    Destination,
    HookKind,
    HookStatus,
    RequestReference,
    Role,
    SignatureRequest,
    User,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)

RETRY_WINDOW = timedelta(hours=24)
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
_PURPOSE = "webhook-secret:{id}"


@dataclass(frozen=True)
class Created:
    subscription: WebhookSubscription
    secret: str  # shown once to the admin, for the receiver


@dataclass(frozen=True)
class Outbound:
    """What the worker needs to post: the site's rules and its keys."""

    master_key: bytes
    base_url: str
    production: bool
    allow_private: bool
    timeout: float
    wall_clock: Callable[[], datetime]
    resolve: hooks.Resolver
    tls: ssl.SSLContext | None = None


def backoff(attempts: int) -> timedelta:
    delay: timedelta = FIRST_RETRY * (2 ** min(max(0, attempts - 1), 20))
    return min(delay, MAX_RETRY)


def subscribe(session: Session, *, actor: Actor, now: datetime, kind: str, url: str,
              destination_id: int | None, technician_id: int | None, event_types: Sequence[str],
              master_key: bytes, production: bool, allow_private: bool,
              resolve: hooks.Resolver) -> Created:
    try:
        hook_kind = HookKind(kind)
    except ValueError:
        raise InvalidInput(N_("Choose webhook or FHIR.")) from None
    if (destination_id is None) == (technician_id is None):
        raise InvalidInput(N_("Choose a destination service or a sending account, one of them."))
    if destination_id is not None and session.get(Destination, destination_id) is None:
        raise InvalidInput(N_("Choose a destination service."))
    if technician_id is not None:
        sender = session.get(User, technician_id)
        if sender is None or sender.role not in (Role.TECHNICIAN, Role.INTEGRATION):
            raise InvalidInput(N_("Choose a technician or a submitting system."))
    if hook_kind == HookKind.FHIR:
        if destination_id is None:
            raise InvalidInput(N_("A FHIR server receives a destination's documents: choose the "
                                  "destination service."))
        chosen = [events.FHIR_EVENT]
    else:
        unknown = set(event_types) - set(events.EVENT_TYPES)
        if unknown or not event_types:
            raise InvalidInput(N_("Choose events among %(events)s."),
                               params={"events": ", ".join(events.EVENT_TYPES)})
        chosen = [e for e in events.EVENT_TYPES if e in set(event_types)]
    hooks.check_url(url, production=production, allow_private=allow_private, resolve=resolve)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    sub = WebhookSubscription(kind=hook_kind, url=url, secret_sealed="", destination_id=destination_id,
                              technician_id=technician_id, events=" ".join(chosen), active=True,
                              created_at=now)
    session.add(sub)
    session.flush()
    sub.secret_sealed = base64.b64encode(encrypt_secret(
        master_key, secret.encode(), purpose=_PURPOSE.format(id=sub.id))).decode()
    audit.append(session, now=now, actor=actor, action=AuditAction.WEBHOOK_SUBSCRIBED,
                 subscription=sub.id, kind=str(hook_kind), url=url, events=chosen,
                 destination=destination_id, technician=technician_id)
    return Created(sub, secret)


def unsubscribe(session: Session, *, actor: Actor, now: datetime, subscription_id: int) -> None:
    sub = _subscription(session, subscription_id)
    if sub.active:
        sub.active = False
        audit.append(session, now=now, actor=actor, action=AuditAction.WEBHOOK_UNSUBSCRIBED,
                     subscription=sub.id)


def _subscription(session: Session, subscription_id: int) -> WebhookSubscription:
    sub = session.get(WebhookSubscription, subscription_id)
    if sub is None:
        raise NotFound(N_("No such subscription."))
    return sub


def subscriptions(session: Session) -> list[WebhookSubscription]:
    return list(session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)))


def deliveries(session: Session, subscription_id: int, limit: int = 100) -> list[WebhookDelivery]:
    return list(session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.subscription_id == subscription_id)
        .order_by(WebhookDelivery.id.desc()).limit(limit)))


def attempts(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[WebhookAttempt]]:
    found: dict[int, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    for row in session.scalars(select(WebhookAttempt).where(
            WebhookAttempt.delivery_id.in_(list(delivery_ids))).order_by(WebhookAttempt.id)):
        found[row.delivery_id].append(row)
    return found


def send_test(session: Session, *, actor: Actor, now: datetime, subscription_id: int) -> WebhookDelivery:
    """A `signflow.test` event, delivered by the worker like any other."""
    sub = _subscription(session, subscription_id)
    if not sub.active:
        raise InvalidInput(N_("This subscription is switched off."))
    row = events.queue(session, sub, events.TEST_EVENT, {"subscription": sub.id},
                       request_id=None, now=now)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.WEBHOOK_TESTED,
                 subscription=sub.id, delivery=row.id)
    return row


def subscription(session: Session, subscription_id: int) -> WebhookSubscription:
    return _subscription(session, subscription_id)


def replay(session: Session, *, actor: Actor, now: datetime, subscription_id: int,
           delivery_id: int) -> WebhookDelivery:
    """Send one delivery again (same webhook-id and body), with a fresh 24 h window."""
    row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if row is None or row.subscription_id != subscription_id:
        raise NotFound(N_("No such delivery."))
    row.status, row.next_attempt_at, row.created_at = HookStatus.PENDING, now, now
    audit.append(session, now=now, actor=actor, action=AuditAction.WEBHOOK_REPLAYED,
                 subscription=row.subscription_id, delivery=row.id)
    return row


def _body(session: Session, deps: Deps, out: Outbound, row: WebhookDelivery) -> tuple[bytes, str]:
    if row.subscription.kind == HookKind.FHIR:
        req = session.get(SignatureRequest, row.request_id)
        if req is None:
            raise NotFound("the request is gone")
        return fhir.build_bundle(session, deps, req, base_url=out.base_url).encode(), \
            "application/fhir+json"
    body = json.loads(row.payload)
    if row.request_id is not None:
        reference = session.get(RequestReference, row.request_id)
        body["data"]["external_reference"] = reference.value if reference else None
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), "application/json"


def deliver_one(sessions: sessionmaker[Session], deps: Deps, out: Outbound, *, now: datetime) -> bool:
    """Claim one due delivery and post it. False when none was due."""
    with sessions() as session, session.begin():
        row = session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.status == HookStatus.PENDING,
                                          WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(1).with_for_update(skip_locked=True))
        if row is None:
            return False
        row.attempts += 1
        sub = row.subscription
        answer = _attempt(session, deps, out, row, sub)
        session.add(WebhookAttempt(delivery_id=row.id, at=now, status_code=answer.status,
                                   error=answer.error))
        row.last_status_code, row.last_error = answer.status, answer.error
        if answer.error is None:
            row.status, row.delivered_at = HookStatus.DELIVERED, now
        elif not sub.active or now + backoff(row.attempts) - row.created_at > RETRY_WINDOW:
            row.status = HookStatus.FAILED
        else:
            row.next_attempt_at = now + backoff(row.attempts)
    return True


def _attempt(session: Session, deps: Deps, out: Outbound, row: WebhookDelivery,
             sub: WebhookSubscription) -> hooks.Answer:
    if not sub.active:
        return hooks.Answer(None, "the subscription was switched off")
    try:
        # Checked again now: the name may resolve elsewhere than when it was entered.
        target = hooks.check_url(sub.url, production=out.production,
                                 allow_private=out.allow_private, resolve=out.resolve)
        body, content_type = _body(session, deps, out, row)
        secret = decrypt_secret(out.master_key, base64.b64decode(sub.secret_sealed),
                                purpose=_PURPOSE.format(id=sub.id)).decode()
    except SignflowError as exc:
        return hooks.Answer(None, f"refused: {exc.message}"[:500])
    return hooks.post(target, secret=secret, message_id=row.message_id, body=body,
                      content_type=content_type, timeout=out.timeout, wall_clock=out.wall_clock,
                      context=out.tls)


def deliver_due(sessions: sessionmaker[Session], deps: Deps, out: Outbound, *, now: datetime,
                limit: int = 200) -> int:
    sent = 0
    while sent < limit and deliver_one(sessions, deps, out, now=now):
        sent += 1
    return sent
