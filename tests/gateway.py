"""A local SMS / pager gateway for tests: a real HTTP server on an ephemeral port that
verifies every request with the `standardwebhooks` package (as a hospital gateway
would), refuses a wrong signature (401) and a replayed webhook-id (409), and can be
told to answer 500 or to hang. No sleeping: a hanging request waits on an event the
test (or the teardown) sets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a test secret (base64 of 24 bytes)


@dataclass
class Gateway:
    url: str
    secret: str
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    # "ok", "500" or "hang"; per phone number overrides the default.
    mode: str = "ok"
    modes: dict[str, str] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    seen_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)


def _handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                # Read at each request: a test may learn the secret after the server started.
                message = Webhook(gateway.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                self._answer(401, f"signature: {exc}")
                return
            with gateway.lock:
                gateway.raw.append((body, headers))
                replay = headers["webhook-id"] in gateway.seen_ids
            if replay:
                self._answer(409, "replayed webhook-id")
                return
            mode = gateway.modes.get(message.get("to", ""), gateway.mode)
            if mode == "hang":
                gateway.release.wait(30)
                return
            if mode == "500":
                self._answer(500, "gateway broken")
                return
            with gateway.lock:
                gateway.seen_ids.add(headers["webhook-id"])
                gateway.accepted.append(message)
            self.send_response(202)
            self.end_headers()

        def _answer(self, status: int, why: str) -> None:
            with gateway.lock:
                gateway.refused.append((status, why))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def running_gateway(secret: str = SECRET) -> Iterator[Gateway]:
    gateway = Gateway(url="", secret=secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(gateway))
    server.daemon_threads = True
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}/page"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        gateway.release.set()
        server.shutdown()
        server.server_close()


def post_raw(url: str, body: bytes, headers: dict[str, str]) -> int:
    """Send bytes and headers exactly as given (a replay, a tampered body)."""
    import urllib.error
    import urllib.request

    keep = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "host",
                                                                   "connection", "accept-encoding")}
    req = urllib.request.Request(url, data=body, method="POST", headers=keep)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def page_json(gateway: Gateway) -> list[dict[str, Any]]:
    return json.loads(json.dumps(gateway.accepted))  # a copy
