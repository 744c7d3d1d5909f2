"""Web Push (RFC 8030) with the payload encrypted as RFC 8291 (aes128gcm) and signed
with VAPID (RFC 8292), by pywebpush and py_vapid.

Push endpoints come from browsers, so they are hostile input: https only, and the
host must resolve to public addresses (unless private endpoints are allowed). The
check runs when a browser subscribes and again at every send, and the send then
connects to the very address it checked: a DNS answer that changes in between
(rebinding) cannot point the request at the hospital's network.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from signflow.core.errors import ConfigurationError, InvalidInput, ServiceUnavailable
from signflow.core.i18n import N_

MAX_ENDPOINT_LENGTH = 2000
# RFC 8030 5.2: how long the push service keeps a message for a phone that is offline.
DEFAULT_TTL_SECONDS = 15 * 60
# RFC 8292 2: a VAPID token must not be valid for more than 24 hours.
VAPID_LIFETIME = timedelta(hours=12)
Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class PushTarget:
    """What a browser's PushSubscription gives: where to post, and whom to encrypt for."""

    endpoint: str
    p256dh: str
    auth: str


class PushGone(ServiceUnavailable):
    """The push service answered 404 or 410: the browser dropped this subscription."""

    code = "push-gone"


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def check_keys(p256dh: str, auth: str) -> None:
    """The subscription's P-256 public key (a point on the curve) and 16-byte auth secret."""
    try:
        point, secret = _b64decode(p256dh), _b64decode(auth)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (ValueError, binascii.Error) as exc:
        raise InvalidInput(N_("The browser sent a push subscription with unusable keys.")) from exc
    if len(point) != 65 or len(secret) != 16:
        raise InvalidInput(N_("The browser sent a push subscription with unusable keys."))


def resolve_host(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InvalidInput(N_("The push service's host %(host)s does not resolve."),
                           params={'host': repr(host)}) from exc
    return sorted({str(info[4][0]) for info in infos})


def is_public(address: str) -> bool:
    """A global unicast address (not private, loopback, link-local or multicast)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.is_global and not ip.is_multicast


def check_endpoint(endpoint: str, *, allow_private: bool,
                   resolve: Resolver = resolve_host) -> tuple[str, int, list[str]]:
    """(host, port, addresses) of an acceptable endpoint; InvalidInput otherwise."""
    if not endpoint or len(endpoint) > MAX_ENDPOINT_LENGTH or any(ord(c) < 33 for c in endpoint):
        raise InvalidInput(N_("The push endpoint is not a usable address."))
    parts = urlsplit(endpoint)
    if parts.scheme != "https":
        raise InvalidInput(N_("Push endpoints must use https."))
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise InvalidInput(N_("The push endpoint is not a usable address."))
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise InvalidInput(N_("The push endpoint is not a usable address.")) from exc
    addresses = resolve(parts.hostname, port)
    if not addresses:
        raise InvalidInput(N_("The push service's host %(hostname)s does not resolve."),
                           params={'hostname': repr(parts.hostname)})
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise InvalidInput(
                    N_("The push endpoint's host %(hostname)s is a private, loopback or "
                       "link-local address: refused."), params={'hostname': repr(parts.hostname)})
    return parts.hostname, port, addresses


class VapidSigner:
    """The server's VAPID key: the `applicationServerKey` browsers subscribe with, and
    the signed JWT every push carries (aud = the endpoint's origin, exp, sub)."""

    def __init__(self, private_key: str, subject: str) -> None:
        text = private_key.strip()
        try:
            if not text.startswith("-----BEGIN") and len(_b64decode(text)) != 32:
                raise ValueError("a raw P-256 private key is 32 bytes")
            vapid = (Vapid02.from_pem(text.encode()) if text.startswith("-----BEGIN")
                     else Vapid02.from_raw(text.encode()))
            if not isinstance(vapid.private_key, ec.EllipticCurvePrivateKey) or not isinstance(
                    vapid.private_key.curve, ec.SECP256R1):
                raise ValueError("not a P-256 key")
        except Exception as exc:  # py_vapid raises anything from cryptography's parsers
            raise ConfigurationError(N_("the VAPID private key is not a P-256 key")) from exc
        if not subject.startswith(("mailto:", "https://")):
            raise ConfigurationError(N_("SIGNFLOW_VAPID_SUBJECT must be a mailto: or https: address"))
        self._vapid = vapid
        self.subject = subject

    @staticmethod
    def generate_pem() -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    @property
    def application_server_key(self) -> str:
        public = self._vapid.public_key.public_bytes(serialization.Encoding.X962,
                                                     serialization.PublicFormat.UncompressedPoint)
        return b64encode(public)

    def authorization(self, endpoint: str, now: datetime) -> str:
        parts = urlsplit(endpoint)
        claims = {"aud": f"{parts.scheme}://{parts.netloc}", "sub": self.subject,
                  "exp": int((now + VAPID_LIFETIME).timestamp())}
        header: str = self._vapid.sign(claims)["Authorization"]
        return header


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to the address that was checked, verifying TLS for the endpoint's name."""

    def __init__(self, host: str, port: int, addresses: list[str], *, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        # IPv4 first: a phone's push service answers on both, a hospital network often on v4 only.
        self._addresses = sorted(addresses, key=lambda a: ":" in a)
        self._tls = context

    def connect(self) -> None:
        failure: OSError | None = None
        for address in self._addresses:
            try:
                raw = socket.create_connection((address, self.port), self.timeout)
            except OSError as exc:
                failure = exc
                continue
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
            return
        raise failure or OSError("no address to connect to")


class WebPushSender:
    """`send(subscription, payload)`: one encrypted, VAPID-signed push, or an error."""

    def __init__(self, signer: VapidSigner, *, clock: Callable[[], datetime], allow_private: bool,
                 timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None,
                 resolve: Resolver = resolve_host, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self.signer, self.clock, self.allow_private = signer, clock, allow_private
        self.timeout, self.resolve, self.ttl_seconds = timeout, resolve, ttl_seconds
        self.ssl_context = ssl_context or ssl.create_default_context()

    @property
    def application_server_key(self) -> str:
        return self.signer.application_server_key

    def check(self, endpoint: str) -> None:
        check_endpoint(endpoint, allow_private=self.allow_private, resolve=self.resolve)

    def send(self, subscription: PushTarget, payload: Mapping[str, Any]) -> None:
        try:
            host, port, addresses = check_endpoint(subscription.endpoint, allow_private=self.allow_private,
                                                   resolve=self.resolve)
        except InvalidInput as exc:
            raise ServiceUnavailable(N_('push refused: %(message)s'),
                                     params={'message': exc.message}) from exc
        info = {"endpoint": subscription.endpoint,
                "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
        body = WebPusher(info).encode(json.dumps(payload).encode(), "aes128gcm")["body"]
        parts = urlsplit(subscription.endpoint)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Authorization": self.signer.authorization(subscription.endpoint, self.clock()),
            "Content-Encoding": "aes128gcm", "Content-Type": "application/octet-stream",
            "TTL": str(self.ttl_seconds), "Urgency": "high",
        }
        connection = _PinnedHTTPSConnection(host, port, addresses, context=self.ssl_context,
                                            timeout=self.timeout)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(4096)
            status = response.status
        except TimeoutError as exc:
            raise ServiceUnavailable(
                N_("push to %(host)s failed: no answer within %(timeout)s s"),
                   params={'host': host, 'timeout': format(self.timeout, 'g')}) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceUnavailable(N_("push to %(host)s failed: %(name)s"),
                                     params={'host': host, 'name': type(exc).__name__}) from exc
        finally:
            connection.close()
        if status in (404, 410):
            raise PushGone(N_("push to %(host)s: the subscription is gone (%(status)s)"),
                           params={'host': host, 'status': status})
        if not 200 <= status < 300:
            raise ServiceUnavailable(N_("push to %(host)s failed: the push service answered "
                                        "%(status)s"), params={'host': host, 'status': status})
