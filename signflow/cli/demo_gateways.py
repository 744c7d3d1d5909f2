"""The demo's own message sinks, in-process: an SMTP mail catcher (aiosmtpd) and an
SMS/pager gateway that verifies each webhook as the Standard Webhooks specification
says (`standardwebhooks`), refusing a wrong signature or a replayed message id.
Whatever they receive goes to the demo outbox, which the demo's admins read at
/demo/messages."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from standardwebhooks import Webhook, WebhookVerificationError

from signflow.core.ops.demo_outbox import DemoOutbox

MAX_WEBHOOK_BYTES = 64 * 1024
GATEWAY_PATH = "/sms"


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class _MailHandler:
    def __init__(self, outbox: DemoOutbox, clock: Callable[[], datetime]) -> None:
        self.outbox, self.clock = outbox, clock

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        mail = message_from_bytes(envelope.content, policy=policy.default)
        body = mail.get_body(("plain",)) if isinstance(mail, EmailMessage) else None
        text = body.get_content() if body is not None else ""
        self.outbox.record(now=self.clock(), channel="email", to=", ".join(envelope.rcpt_tos),
                           subject=str(mail.get("Subject", "")), text=text.strip(), status="received")
        return "250 OK"


# _FORKED: gunicorn forks its worker inside these contexts, and the worker, when it
# exits, unwinds through them. The servers' threads are the parent's: only the process
# that started a server stops it (the worker would wait forever for a thread it does not
# have, and gunicorn would kill it after its graceful timeout, 30 s later).
@contextmanager
def mail_catcher(outbox: DemoOutbox, clock: Callable[[], datetime]) -> Iterator[int]:
    """A local SMTP server; yields its port."""
    # aiosmtpd connects to its own port to see that it is up, so it needs a real number.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(_MailHandler(outbox, clock), hostname="127.0.0.1", port=port)
    controller.start()
    owner = os.getpid()
    try:
        yield port
    finally:
        if os.getpid() == owner:  # see _FORKED
            controller.stop()


class SmsGateway(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, outbox: DemoOutbox, secret: str, clock: Callable[[], datetime]) -> None:
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.outbox, self.webhook, self.clock = outbox, Webhook(secret), clock
        self.seen: set[str] = set()
        self.seen_lock = threading.Lock()

    def receive(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        now = self.clock()
        try:
            self.webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            self.outbox.record(now=now, channel="sms", to="?", subject="(refused)",
                               text="", status=f"refused: {exc}")
            return 401, "signature refused"
        with self.seen_lock:
            message_id = headers.get("webhook-id", "")
            if message_id in self.seen:
                self.outbox.record(now=now, channel="sms", to="?", subject="(refused)", text="",
                                   status=f"refused: replay of {message_id[:60]}")
                return 409, "replayed message id"
            self.seen.add(message_id)
        message = json.loads(body)
        message = message if isinstance(message, dict) else {}
        to = str(message.get("phone") or message.get("pager") or message.get("to") or "?")
        text = str(message.get("text") or "")
        if message.get("link"):
            text = f"{text}\n{message['link']}"
        self.outbox.record(now=now, channel=str(message.get("channel") or "sms")[:20], to=to,
                           subject=str(message.get("subject") or ""), text=text, status="verified")
        return 204, ""


class _GatewayHandler(BaseHTTPRequestHandler):
    server: SmsGateway

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != GATEWAY_PATH or not 0 < length <= MAX_WEBHOOK_BYTES:
            status, reason = 400, "bad request"
        else:
            status, reason = self.server.receive(self.rfile.read(length),
                                                 {k.lower(): v for k, v in self.headers.items()})
        self.send_response(status, reason or None)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def sms_gateway(outbox: DemoOutbox, secret: str, clock: Callable[[], datetime]) -> Iterator[str]:
    """A local Standard Webhooks receiver; yields its URL."""
    server = SmsGateway(outbox, secret, clock)
    thread = threading.Thread(target=server.serve_forever, name="signflow-demo-sms", daemon=True)
    thread.start()
    owner = os.getpid()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{GATEWAY_PATH}"
    finally:
        if os.getpid() == owner:  # see _FORKED
            server.shutdown()
            server.server_close()
