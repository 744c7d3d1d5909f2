"""A local RFC 8030 push service for the tests: it checks every push's VAPID JWT
(RFC 8292: ES256 signature by the key in `k`, aud = its own origin, exp) and
decrypts the RFC 8291 (aes128gcm) payload with the subscription's private key,
as a browser's push service and the browser together would."""

from __future__ import annotations

import base64
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from tests.tools import serving


def b64d(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Subscriber:
    """A browser's side of one subscription: its P-256 key pair and auth secret."""

    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth_secret: bytes = field(default_factory=lambda: __import__("os").urandom(16))

    @property
    def p256dh(self) -> str:
        return b64e(self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))

    @property
    def auth(self) -> str:
        return b64e(self.auth_secret)


@dataclass
class Delivery:
    token: str
    headers: dict[str, str]
    claims: dict[str, Any]
    payload: dict[str, Any]


def tls_contexts(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: a self-signed certificate for 127.0.0.1 that only the
    client context trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test push service")])
    now = datetime.now().astimezone()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "push-cert.pem", folder / "push-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


class PushService(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext, *, application_server_key: str,
                 clock: Callable[[], datetime]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.application_server_key, self.clock = application_server_key, clock
        self.subscribers: dict[str, Subscriber] = {}
        self.deliveries: list[Delivery] = []
        self.problems: list[str] = []
        self.answer = 201  # what the next pushes get: 201, 410, 500, or 0 = never answer
        self.release = threading.Event()
        self.origin = ""

    def new_subscription(self, token: str) -> tuple[str, Subscriber]:
        subscriber = Subscriber()
        self.subscribers[token] = subscriber
        return f"{self.origin}/push/{token}", subscriber

    def check(self, token: str, headers: dict[str, str], body: bytes) -> Delivery:
        scheme, _, params = headers.get("authorization", "").partition(" ")
        assert scheme == "vapid", f"Authorization scheme {scheme!r}"
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        assert fields["k"] == self.application_server_key, "VAPID key is not the server's"
        head, claims_b64, signature = fields["t"].split(".")
        assert json.loads(b64d(head)) == {"typ": "JWT", "alg": "ES256"}
        raw = b64d(signature)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64d(fields["k"]))
        public.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
                      f"{head}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        claims = json.loads(b64d(claims_b64))
        assert claims["aud"] == self.origin, f"aud {claims['aud']!r} is not {self.origin!r}"
        now = self.clock().timestamp()
        assert now < claims["exp"] <= now + 24 * 3600, "exp outside (now, now + 24 h]"
        assert claims["sub"].startswith(("mailto:", "https://"))
        assert headers.get("content-encoding") == "aes128gcm"
        assert int(headers["ttl"]) > 0
        subscriber = self.subscribers[token]
        plain = http_ece.decrypt(body, private_key=subscriber.private_key,
                                 auth_secret=subscriber.auth_secret, version="aes128gcm")
        return Delivery(token=token, headers=headers, claims=claims, payload=json.loads(plain))

    def payloads(self, token: str) -> list[dict[str, Any]]:
        return [d.payload for d in self.deliveries if d.token == token]


class _Handler(BaseHTTPRequestHandler):
    server: PushService

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        token = self.path.rsplit("/", 1)[-1]
        try:
            delivery = self.server.check(token, headers, body)
        except (AssertionError, InvalidSignature, KeyError, ValueError) as exc:
            self.server.problems.append(f"{type(exc).__name__}: {exc}")
            self.send_response(400)
            self.end_headers()
            return
        if self.server.answer == 0:
            self.server.release.wait(30)  # a push service that never answers
            return
        if self.server.answer == 201:
            self.server.deliveries.append(delivery)
        self.send_response(self.server.answer)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def push_service(tls: ssl.SSLContext, *, application_server_key: str,
                 clock: Callable[[], datetime]) -> Iterator[PushService]:
    server = PushService(tls, application_server_key=application_server_key, clock=clock)
    with serving(server) as port:
        server.origin = f"https://127.0.0.1:{port}"
        try:
            yield server
        finally:
            server.release.set()
