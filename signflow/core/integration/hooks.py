"""Outbound HTTP for webhooks and FHIR servers: the endpoint's address is checked when
an admin enters it and again before every POST, and the connection goes to the very
address that was checked (a name that re-resolves to a private address meanwhile,
DNS rebinding, reaches nothing). Bodies are signed as the Standard Webhooks
specification says (as core.notify.channels.SignedGateway signs the pager's)."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.notify import webpush

MAX_URL = 2000
Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: list[str]


def check_url(url: str, *, production: bool, allow_private: bool,
              resolve: Resolver = webpush.resolve_host) -> Target:
    """An endpoint an admin may enter: https in production (http too elsewhere), a host
    that resolves, to public addresses only unless SIGNFLOW_ALLOW_PRIVATE_ENDPOINTS."""
    if not url or len(url) > MAX_URL or any(ord(c) < 33 for c in url):
        raise InvalidInput(N_("The endpoint URL is not a usable address."))
    parts = urlsplit(url)
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        raise InvalidInput(N_("The endpoint URL must use https.") if production
                           else N_("The endpoint URL must use https (or http outside production)."))
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise InvalidInput(N_("The endpoint URL is not a usable address."))
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidInput(N_("The endpoint URL is not a usable address.")) from exc
    try:
        addresses = resolve(parts.hostname, port)
    except InvalidInput:
        addresses = []
    if not addresses:
        raise InvalidInput(N_("The endpoint's host %(host)s does not resolve."),
                           params={"host": repr(parts.hostname)})
    if not allow_private and not all(webpush.is_public(a) for a in addresses):
        raise InvalidInput(N_("The endpoint's host %(host)s is a private, loopback or "
                              "link-local address: refused."), params={"host": repr(parts.hostname)})
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses)


class _Pinned(http.client.HTTPSConnection):
    """Connects to one of the checked addresses; TLS (https) verified for the URL's name."""

    def __init__(self, target: Target, *, timeout: float, context: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port, timeout=timeout,
                         context=context or ssl.create_default_context())
        self._target = target
        self._context = context or ssl.create_default_context()

    def connect(self) -> None:
        failure: OSError | None = None
        for address in sorted(self._target.addresses, key=lambda a: ":" in a):
            try:
                raw = socket.create_connection((address, self.port), self.timeout)
            except OSError as exc:
                failure = exc
                continue
            self.sock = (self._context.wrap_socket(raw, server_hostname=self.host)
                         if self._target.scheme == "https" else raw)
            return
        raise failure or OSError("no address to connect to")


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer (refused, timed out)
    error: str | None


def post(target: Target, *, secret: str, message_id: str, body: bytes, content_type: str,
         timeout: float, wall_clock: Callable[[], datetime],
         context: ssl.SSLContext | None = None) -> Answer:
    """One signed POST; never raises for what the receiver does."""
    stamp = wall_clock()
    headers = {
        "Content-Type": content_type, "User-Agent": "signflow-webhooks",
        "webhook-id": message_id, "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, stamp, body.decode()),
    }
    connection = _Pinned(target, timeout=timeout, context=context)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(65536)
        status = response.status
    except TimeoutError:
        return Answer(None, f"no answer within {timeout:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, f"unreachable: {type(exc).__name__}")
    finally:
        connection.close()
    if 200 <= status < 300:
        return Answer(status, None)
    return Answer(status, f"answered {status}")
