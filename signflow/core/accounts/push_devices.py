"""A user's Web Push devices: subscribe, verify with a code the push itself carried,
list, remove, and push to every verified device.

Verification is the honest kind: the code is shown by the service worker as a
notification on the phone, and the person types it on the page. A service worker
posting the code back by itself would only prove that the browser can receive,
not that the notification reaches the person holding the phone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.accounts import contacts, ratelimit
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import SYSTEM, Actor
from signflow.core.errors import Conflict, NotFound, PushNotDelivered, ServiceUnavailable, WrongCode
from signflow.core.i18n import N_, Translator
from signflow.core.notify.dispatch import Outgoing
from signflow.core.notify.webpush import PushGone, PushTarget, check_keys
from signflow.core.storage import derive_key
from signflow.models import AuditAction, PushSubscription

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=15)
MAX_CODE_TRIES = 5
MAX_DEVICES = 10
LABEL_LENGTH = 80
SUBSCRIBE_LIMIT = 5
SUBSCRIBE_WINDOW = timedelta(minutes=10)


class PushSender(Protocol):
    def check(self, endpoint: str) -> None: ...

    def send(self, subscription: PushTarget, payload: Mapping[str, Any]) -> None: ...


def _digest(master_key: bytes, subscription_id: int, code: str) -> str:
    key = derive_key(master_key, "push-verification-code")
    return hmac.new(key, f"{subscription_id}:{code}".encode(), hashlib.sha256).hexdigest()


def target_of(row: PushSubscription) -> PushTarget:
    return PushTarget(endpoint=row.endpoint, p256dh=row.p256dh, auth=row.auth)


def device_label(user_agent: str) -> str:
    """A short, printable name for the device list ("Chrome on Android")."""
    browser = next((name for token, name in (("Edg/", "Edge"), ("Firefox/", "Firefox"),
                                             ("Chrome/", "Chrome"), ("Safari/", "Safari"))
                    if token in user_agent), "Browser")
    system = next((name for token, name in (("Android", "Android"), ("iPhone", "iPhone"),
                                            ("iPad", "iPad"), ("Windows", "Windows"),
                                            ("Mac OS", "macOS"), ("Linux", "Linux"))
                   if token in user_agent), "")
    return f"{browser} on {system}" if system else browser


def subscribe(session: Session, sender: PushSender, master_key: bytes, *, actor: Actor, now: datetime,
              endpoint: str, p256dh: str, auth: str, user_agent: str,
              language: str = "en") -> PushSubscription:
    """Store the device (unverified) and send it its verification code. Raises
    InvalidInput for a refused endpoint, ServiceUnavailable when the push fails: the
    caller's transaction then rolls back and nothing is kept."""
    user = acting_user(session, actor)
    check_keys(p256dh, auth)
    sender.check(endpoint)
    # Each attempt makes the server post to a URL a browser chose: counted, even when it fails.
    ratelimit.hit(session, f"push-subscribe:{user.id}", limit=SUBSCRIBE_LIMIT, window=SUBSCRIBE_WINDOW,
                  now=now, message=N_("Too many attempts to turn notifications on: wait a few minutes."))
    try:
        with session.begin_nested():
            row = _store_and_send_code(session, sender, master_key, user.id, now=now, endpoint=endpoint,
                                       p256dh=p256dh, auth=auth, user_agent=user_agent,
                                       language=language)
    except ServiceUnavailable as exc:
        raise PushNotDelivered(exc.msgid, params=exc.params) from exc
    audit.append(session, now=now, actor=actor, action=AuditAction.PUSH_DEVICE_ADDED,
                 subscription=row.id, device=row.user_agent_label)
    return row


def _store_and_send_code(session: Session, sender: PushSender, master_key: bytes, user_id: int, *,
                         now: datetime, endpoint: str, p256dh: str, auth: str,
                         user_agent: str, language: str) -> PushSubscription:
    row = session.scalar(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
    if row is None:
        if len(list_devices(session, user_id)) >= MAX_DEVICES:
            raise Conflict(N_("You already have %(max_devices)s devices: remove one first."),
                           params={'max_devices': MAX_DEVICES})
        row = PushSubscription(endpoint=endpoint, code_attempts=0)
        session.add(row)
    # The same browser subscribing again (or another person now using it) starts over.
    row.user_id, row.p256dh, row.auth = user_id, p256dh, auth
    row.user_agent_label = device_label(user_agent)[:LABEL_LENGTH]
    row.created_at, row.verified_at, row.gone_at, row.code_attempts = now, None, None, 0
    session.flush()
    contacts.unlink_device(session, row.id)  # paged again only once this code comes back
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    row.code_hash = _digest(master_key, row.id, code)
    session.flush()
    t = Translator(language)
    sender.send(target_of(row), {
        "kind": "verify", "title": t(N_("signflow: confirm this device")),
        "body": t(N_("Your code: %(code)s"), code=code), "url": "/account/push", "tag": f"verify-{row.id}",
    })
    return row


def _own(session: Session, actor: Actor, subscription_id: int) -> PushSubscription:
    user = acting_user(session, actor)
    row = session.get(PushSubscription, subscription_id)
    if row is None or row.user_id != user.id:
        raise NotFound(N_("No such device."))
    return row


def verify(session: Session, master_key: bytes, *, actor: Actor, now: datetime, subscription_id: int,
           code: str) -> PushSubscription:
    row = _own(session, actor, subscription_id)
    if row.verified_at is not None:
        return row
    if row.code_hash is None or now - row.created_at > CODE_LIFETIME or row.code_attempts >= MAX_CODE_TRIES:
        raise Conflict(N_("This code can no longer be used: turn notifications on again for a new one."))
    typed = "".join(c for c in code if c.isdigit())
    if not hmac.compare_digest(_digest(master_key, row.id, typed), row.code_hash):
        row.code_attempts += 1
        audit.append(session, now=now, actor=actor, action=AuditAction.PUSH_VERIFICATION_FAILED,
                     subscription=row.id, attempts=row.code_attempts)
        raise WrongCode(N_("That is not the code the notification showed."))
    row.verified_at, row.code_hash = now, None
    contacts.link_device(session, user_id=row.user_id, subscription_id=row.id, now=now)
    audit.append(session, now=now, actor=actor, action=AuditAction.PUSH_DEVICE_VERIFIED,
                 subscription=row.id, device=row.user_agent_label)
    return row


def remove(session: Session, *, actor: Actor, now: datetime, subscription_id: int) -> None:
    row = _own(session, actor, subscription_id)
    audit.append(session, now=now, actor=actor, action=AuditAction.PUSH_DEVICE_REMOVED,
                 subscription=row.id, device=row.user_agent_label)
    contacts.unlink_device(session, row.id)
    session.delete(row)
    session.flush()


def list_devices(session: Session, user_id: int) -> Sequence[PushSubscription]:
    return session.scalars(select(PushSubscription).where(PushSubscription.user_id == user_id)
                           .order_by(PushSubscription.created_at, PushSubscription.id)).all()


def _live(session: Session, user_id: int) -> Sequence[PushSubscription]:
    return session.scalars(select(PushSubscription).where(
        PushSubscription.user_id == user_id, PushSubscription.verified_at.is_not(None),
        PushSubscription.gone_at.is_(None)).order_by(PushSubscription.id)).all()


def deliver(session: Session, sender: PushSender, row: PushSubscription, payload: Mapping[str, Any], *,
            actor: Actor, now: datetime) -> None:
    """Push to one device, recording the outcome on its row; raise ServiceUnavailable
    (PushGone when the push service dropped the subscription: never used again)."""
    try:
        sender.send(target_of(row), payload)
    except PushGone as exc:
        row.gone_at, row.last_failure_at, row.last_failure = now, now, exc.message[:300]
        contacts.unlink_device(session, row.id)  # out of its owner's order: the next channel is tried
        audit.append(session, now=now, actor=actor, action=AuditAction.PUSH_DEVICE_GONE,
                     subscription=row.id, device=row.user_agent_label)
        raise
    except ServiceUnavailable as exc:
        row.last_failure_at, row.last_failure = now, exc.message[:300]
        raise
    row.last_success_at = now


def push_to_user(session: Session, sender: PushSender, *, actor: Actor, now: datetime, user_id: int,
                 payload: Mapping[str, Any]) -> tuple[int, list[str]]:
    """Push to every verified, live device of the user: (devices reached, problems)."""
    reached, problems = 0, []
    for row in _live(session, user_id):
        try:
            deliver(session, sender, row, payload, actor=actor, now=now)
        except ServiceUnavailable as exc:
            problems.append(exc.message)
        else:
            reached += 1
    session.flush()
    return reached, problems


class DeviceSender:
    """The "push" channel of the worker's page dispatch: the delivery's address names
    the device; its outcome is recorded on the device row, in the worker's transaction."""

    def __init__(self, session: Session, sender: PushSender, *, now: datetime, language: str = "en") -> None:
        self.session, self.sender, self.now = session, sender, now
        self.t = Translator(language)

    def send(self, message: Outgoing) -> None:
        row = self.session.get(PushSubscription, int(message.address))
        if row is None or row.verified_at is None or row.gone_at is not None:
            raise ServiceUnavailable(N_("this device no longer receives pages"))
        deliver(self.session, self.sender, row, page_payload(message), actor=SYSTEM, now=self.now)


def page_payload(message: Outgoing) -> dict[str, str]:
    """What a phone's lock screen shows: the message's own subject and text (made
    where every channel's are, without patient data); a page stays on the screen."""
    request = dict(message.facts).get("request", "")
    return {"kind": "page" if message.page else "notice", "title": message.subject,
            "body": message.text, "url": urlsplit(message.link).path or "/",
            "tag": f"request-{request}" if request else f"msg-{message.message_id}"}


def require_sender(sender: PushSender | None) -> PushSender:
    if sender is None:
        raise ServiceUnavailable(N_("Web Push is not set up on this server (no VAPID key)."))
    return sender


__all__ = ["DeviceSender", "PushSender", "deliver", "device_label", "list_devices", "page_payload",
           "push_to_user", "remove",
           "require_sender", "subscribe", "target_of", "verify"]
