"""Notification transports. A message carries a link, never the document, and no
patient data: urgency, group, request number, link."""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

from standardwebhooks.webhooks import Webhook

from signflow.core.clock import utcnow
from signflow.core.errors import ServiceUnavailable
from signflow.core.i18n import N_

log = logging.getLogger("signflow.notify")


@dataclass(frozen=True)
class Message:
    to_name: str
    to_email: str | None
    to_phone: str | None
    subject: str
    body: str
    link: str
    # The account told, when it is one (its Web Push devices are paged too).
    to_user_id: int | None = None


class Notifier(Protocol):
    def send(self, message: Message) -> str:
        """Deliver or raise ServiceUnavailable; return the channel used."""
        ...


class SmtpNotifier:
    def __init__(self, host: str, port: int, sender: str, *, starttls: bool = False,
                 timeout: float = 10.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.timeout = starttls, timeout

    def send(self, message: Message) -> str:
        if not message.to_email:
            raise ServiceUnavailable(N_("%(to_name)s has no e-mail address"),
                                     params={'to_name': message.to_name})
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to_email
        mail["Subject"] = message.subject
        mail.set_content(f"{message.body}\n\n{message.link}\n")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise ServiceUnavailable(N_("e-mail to %(to_name)s failed: %(name)s"),
                                     params={'to_name': message.to_name, 'name': type(exc).__name__}) from exc
        return "email"


class SignedGateway:
    """POSTs one JSON message to the hospital's SMS / paging gateway, signed as the
    Standard Webhooks specification says (webhook-id, webhook-timestamp,
    webhook-signature: HMAC-SHA256 under the shared `whsec_` secret).

    `message_id` is the same for every retry of one message, so the gateway can
    drop a duplicate; the timestamp is the wall clock (the gateway checks it
    against its own, whatever clock the worker runs its schedule on)."""

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0,
                 wall_clock: Callable[[], datetime] = utcnow) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("webhook URL must be http(s)")
        self.url, self.timeout, self.wall_clock = url, timeout, wall_clock
        self.signer = Webhook(secret)

    def post(self, message_id: str, body: dict[str, object]) -> None:
        data = json.dumps(body, sort_keys=True, separators=(",", ":"))
        stamp = self.wall_clock()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": self.signer.sign(message_id, stamp, data),
        }
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url, data=data.encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                if resp.status >= 300:
                    raise ServiceUnavailable(N_("the gateway answered %(status)s"),
                                             params={'status': resp.status})
        except urllib.error.HTTPError as exc:
            raise ServiceUnavailable(N_('the gateway answered %(code)s'), params={'code': exc.code}) from exc
        except TimeoutError as exc:
            raise ServiceUnavailable(N_("the gateway did not answer within %(timeout)s s"),
                                     params={'timeout': format(self.timeout, 'g')}) from exc
        except OSError as exc:
            reason = getattr(exc, "reason", None)
            if isinstance(reason, TimeoutError):
                raise ServiceUnavailable(
                    N_("the gateway did not answer within %(timeout)s s"),
                       params={'timeout': format(self.timeout, 'g')}) from exc
            raise ServiceUnavailable(N_("the gateway is unreachable: %(name)s"),
                                     params={'name': type(exc).__name__}) from exc


class LogNotifier:
    """Development default: writes who would be told, and the link, to the log."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> str:
        self.sent.append(message)
        log.info("notification to %r: %s %s", message.to_name, message.subject, message.link)
        return "log"
