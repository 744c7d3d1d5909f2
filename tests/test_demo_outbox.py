"""`signflow demo`'s message sinks: a real SMTP catcher (aiosmtpd), a gateway that
verifies Standard Webhooks signatures, and the page that shows what they caught."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from signflow.cli.demo_gateways import mail_catcher, new_webhook_secret, sms_gateway
from signflow.core.notify.channels import Message, SmtpNotifier
from signflow.core.ops.demo_outbox import DEMO_MARKER, DEMO_SETTING, DemoOutbox, outbox_of
from signflow.models import Setting
from tests.conftest import login

NOW = datetime(2026, 12, 2, 3, 12, tzinfo=UTC)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def signed(secret: str, msg_id: str, body: str, when: datetime) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body)}


def test_the_mail_catcher_keeps_what_smtp_delivered(tmp_path):
    outbox = DemoOutbox(tmp_path / "out.jsonl")
    with mail_catcher(outbox, lambda: NOW) as port:
        SmtpNotifier("127.0.0.1", port, "signflow@hospital.example").send(Message(
            to_name="Dr Hélène Lefèvre", to_email="dr.lefevre@hospital.example", to_phone=None,
            subject="Signature needed (emergency): request #7", body="Open signflow.",
            link="http://127.0.0.1:5000/inbox/7"))
    [mail] = outbox.read()
    assert (mail.channel, mail.to, mail.subject, mail.status) == (
        "email", "dr.lefevre@hospital.example", "Signature needed (emergency): request #7", "received")
    assert "http://127.0.0.1:5000/inbox/7" in mail.text and mail.at == NOW.isoformat()


def test_the_gateway_keeps_signed_messages_and_refuses_forged_or_replayed_ones(tmp_path):
    outbox = DemoOutbox(tmp_path / "out.jsonl")
    secret = new_webhook_secret()
    body = json.dumps({"to": "Dr Lefèvre", "phone": "+33612345678", "subject": "Signature needed #7",
                       "text": "Signature needed #7", "link": "http://127.0.0.1:5000/inbox/7"})
    now = datetime.now(UTC)  # standardwebhooks checks the timestamp against the wall clock
    with sms_gateway(outbox, secret, lambda: NOW) as url:
        assert post(url, body.encode(), signed(secret, "msg_1", body, now)) == 204
        assert post(url, body.encode(), signed(secret, "msg_1", body, now)) == 409  # replay
        forged = signed(new_webhook_secret(), "msg_2", body, now)
        assert post(url, body.encode(), forged) == 401
        tampered = signed(secret, "msg_3", body, now)
        assert post(url, body.replace("+336", "+337").encode(), tampered) == 401
        stale = signed(secret, "msg_4", body, now - timedelta(minutes=10))
        assert post(url, body.encode(), stale) == 401
        assert post(url, body.encode(), {}) == 401
    messages = list(reversed(outbox.read()))
    assert [m.status.split(":")[0] for m in messages] == ["verified"] + ["refused"] * 5
    first = messages[0]
    assert (first.channel, first.to, first.subject) == ("sms", "+33612345678", "Signature needed #7")
    assert "http://127.0.0.1:5000/inbox/7" in first.text
    assert "replay" in messages[1].status


def _mark_demo(svc, *, marker: bool, setting: bool) -> None:
    if marker:
        (svc.settings.instance_path / DEMO_MARKER).write_text("created by `signflow demo`\n")
    if setting:
        with svc.sessions() as s, s.begin():
            s.add(Setting(name=DEMO_SETTING, value="created by `signflow demo`"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_demo_page_shows_every_message_to_admins_of_the_demo(app, svc, world):
    _mark_demo(svc, marker=True, setting=True)
    outbox_of(svc.settings.instance_path).record(
        now=NOW, channel="sms", to="+33612345678", subject="Signature needed #7",
        text="<script>alert(1)</script>", status="verified")
    admin = app.test_client()
    login(admin, "admin")
    page = admin.get("/demo/messages")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "+33612345678" in html and "Signature needed #7" in html and "sms · verified" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    tech = app.test_client()
    login(tech, "tech")
    assert tech.get("/demo/messages").status_code == 403


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("marker, setting", [(False, False), (True, False), (False, True)])
def test_the_demo_page_does_not_exist_outside_the_demo(app, svc, world, marker, setting):
    _mark_demo(svc, marker=marker, setting=setting)
    outbox_of(svc.settings.instance_path).record(now=NOW, channel="email", to="a@b.example",
                                                 subject="secret code", text="12345678",
                                                 status="received")
    admin = app.test_client()
    login(admin, "admin")
    resp = admin.get("/demo/messages")
    assert resp.status_code == 404 and "12345678" not in resp.get_data(as_text=True)
