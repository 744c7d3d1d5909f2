"""One small interface per channel kind: a page goes to the sender registered for
its channel's kind ("email", "sms", "pager", "push"). Plugging a channel in is
one entry in the mapping `services.make_senders` builds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from signflow.core.errors import ServiceUnavailable
from signflow.core.notify.channels import Message, Notifier, SignedGateway


@dataclass(frozen=True)
class Outgoing:
    """One message to one address. `message_id` is stable across retries of the
    same delivery (the gateway's idempotency key). `facts`: what a gateway may
    show or route on, never patient data (urgency, group, request number)."""

    message_id: str
    kind: str
    to_name: str
    address: str
    subject: str
    text: str
    link: str
    facts: tuple[tuple[str, str], ...] = ()
    # A page asks someone to act now (the caller's rule: jobs' page events); a channel
    # that can say so (a push that stays on the lock screen) does.
    page: bool = False


class ChannelSender(Protocol):
    def send(self, message: Outgoing) -> None:
        """Hand the message over, or raise ServiceUnavailable saying why not."""
        ...


Senders = Mapping[str, ChannelSender]


def dispatch(senders: Senders, message: Outgoing) -> None:
    sender = senders.get(message.kind)
    if sender is None:
        raise ServiceUnavailable(f"no {message.kind} channel is configured")
    sender.send(message)


class NotifierSender:
    """A Notifier (the SMTP client, the development log) used as one channel kind."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def send(self, message: Outgoing) -> None:
        email = message.address if message.kind == "email" else None
        phone = None if message.kind == "email" else message.address
        self.notifier.send(Message(to_name=message.to_name, to_email=email, to_phone=phone,
                                   subject=message.subject, body=message.text, link=message.link))


class GatewaySender:
    """SMS and pager messages through the hospital's HTTP gateway (signed requests)."""

    # What fits one SMS with the link: the gateway is told the text, not to shorten it.
    MAX_TEXT = 160

    def __init__(self, gateway: SignedGateway) -> None:
        self.gateway = gateway

    def send(self, message: Outgoing) -> None:
        self.gateway.post(message.message_id, {
            "type": "page", "channel": message.kind, "to": message.address,
            "text": message.text[: self.MAX_TEXT], "link": message.link, **dict(message.facts),
        })
