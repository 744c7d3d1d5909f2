"""Notifier adapters. A notification carries a link, never the document."""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from signflow.core.errors import ServiceUnavailable

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
            raise ServiceUnavailable(f"{message.to_name} has no e-mail address")
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
            raise ServiceUnavailable(f"e-mail to {message.to_name} failed: {type(exc).__name__}") from exc
        return "email"


class WebhookNotifier:
    """POSTs JSON to a hospital paging / SMS gateway."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("webhook URL must be http(s)")
        self.url, self.timeout = url, timeout

    def send(self, message: Message) -> str:
        body = json.dumps({
            "to": message.to_name, "email": message.to_email, "phone": message.to_phone,
            "subject": message.subject, "text": message.body, "link": message.link,
        }).encode()
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                if resp.status >= 300:
                    raise ServiceUnavailable(f"webhook answered {resp.status}")
        except OSError as exc:
            raise ServiceUnavailable(f"webhook failed: {type(exc).__name__}") from exc
        return "webhook"


class LogNotifier:
    """Development default: writes who would be told, and the link, to the log."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> str:
        self.sent.append(message)
        log.info("notification to %r: %s %s", message.to_name, message.subject, message.link)
        return "log"


class FanoutNotifier:
    """Tries every channel; succeeds if at least one delivered."""

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers

    def send(self, message: Message) -> str:
        used: list[str] = []
        errors: list[str] = []
        for notifier in self.notifiers:
            try:
                used.append(notifier.send(message))
            except ServiceUnavailable as exc:
                errors.append(exc.message)
        if not used:
            raise ServiceUnavailable("; ".join(errors) or "no notification channel")
        return "+".join(used)
