"""SMS and pager messages through a real HTTP gateway that verifies every request
with `standardwebhooks`; e-mail through a real SMTP server (aiosmtpd). A gateway
that refuses, breaks or hangs is a clear failure, and the rest keeps running."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from signflow import jobs
from signflow.config import load_settings
from signflow.core.accounts import contacts
from signflow.core.audit.log import Actor
from signflow.core.errors import ConfigurationError, ServiceUnavailable
from signflow.core.notify.channels import SignedGateway
from signflow.core.notify.dispatch import GatewaySender, Outgoing
from signflow.models import NotificationDelivery, SignatureRequest, User
from signflow.services import make_notifier, make_senders
from tests.factories import create_request, put_first
from tests.gateway import SECRET, post_raw, running_gateway
from tests.tools import free_port

PAGE = Outgoing(message_id="msg_1", kind="sms", to_name="Dr Lefèvre", address="+33612345678",
                subject="Signature needed (urgent): request #7",
                text="signflow: Signature needed (urgent): request #7, Anaesthesia on call.",
                link="https://signflow.example/inbox/7",
                facts=(("urgency", "urgent"), ("group", "Anaesthesia on call"), ("request", "7")))


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def gateway():
    with running_gateway() as running:
        yield running


def _wire(svc, gateway, port, *, timeout=2):
    """The worker's senders as production builds them: real SMTP, the signed gateway."""
    real = svc.settings.with_overrides(smtp_host="127.0.0.1", smtp_port=port, webhook_url=gateway.url,
                                       webhook_secret=SECRET, notify_timeout_seconds=timeout)
    svc.senders = make_senders(real, make_notifier(real))


def test_a_signed_page_is_accepted_and_a_replay_or_a_tampered_one_refused(gateway):
    GatewaySender(SignedGateway(gateway.url, SECRET)).send(PAGE)
    assert gateway.accepted == [{
        "type": "page", "channel": "sms", "to": "+33612345678", "text": PAGE.text, "link": PAGE.link,
        "urgency": "urgent", "group": "Anaesthesia on call", "request": "7"}]
    body, headers = gateway.raw[0]
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= {k.lower() for k in headers}
    assert post_raw(gateway.url, body, headers) == 409  # replayed as is
    assert post_raw(gateway.url, body.replace(b"+33612345678", b"+33699999999"), headers) == 401
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    with pytest.raises(ServiceUnavailable, match="answered 401"):
        GatewaySender(SignedGateway(gateway.url, other)).send(PAGE)
    assert len(gateway.accepted) == 1
    assert [status for status, _ in gateway.refused] == [409, 401, 401]


def test_a_gateway_that_breaks_hangs_or_is_gone_is_a_clear_failure(gateway):
    gateway.mode = "500"
    with pytest.raises(ServiceUnavailable, match="answered 500"):
        GatewaySender(SignedGateway(gateway.url, SECRET)).send(PAGE)
    gateway.mode = "hang"
    with pytest.raises(ServiceUnavailable, match="did not answer within 0.5 s"):
        GatewaySender(SignedGateway(gateway.url, SECRET, timeout=0.5)).send(PAGE)
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        GatewaySender(SignedGateway(f"http://127.0.0.1:{free_port()}/", SECRET)).send(PAGE)
    assert gateway.accepted == []


def _sms_channel(svc, clock, gateway, user_id, number):
    """Added and verified as the physician does: the code arrives through the gateway."""
    with svc.sessions() as s, s.begin():
        actor = Actor.of(s.get(User, user_id))
        channel = contacts.add_channel(s, svc.keys.master_key, actor=actor, kind="sms",
                                       address=number, now=clock()).id
    jobs.run_once(svc)
    texts = [m["text"] for m in gateway.accepted if m["to"] == contacts.normalise("sms", number)]
    code = re.search(r"code is (\d{6})", texts[-1]).group(1)
    with svc.sessions() as s, s.begin():
        contacts.verify(s, svc.keys.master_key, actor=actor, channel_id=channel, code=code, now=clock())
    put_first(svc, user_id, channel)  # before the e-mail the enrolment code verified


def test_a_page_reaches_the_phone_through_the_gateway_and_the_backup_by_mail(svc, world, clock,
                                                                            gateway, mailbox):
    box, port = mailbox
    _wire(svc, gateway, port)
    _sms_channel(svc, clock, gateway, world.doc, "06 12 34 56 78")
    rid = create_request(svc, world, urgency="emergency")
    jobs.run_once(svc)
    page = gateway.accepted[-1]
    assert page == {"type": "page", "channel": "sms", "to": "+33612345678", "urgency": "emergency",
                    "group": "Anaesthesia on call", "request": str(rid),
                    "link": f"http://127.0.0.1:5000/inbox/{rid}", "text": page["text"]}
    assert len(page["text"]) <= 160 and "Donor consent" not in str(page)  # no patient data
    # The deadline passes: the backup's only channel is the e-mail their enrolment code verified.
    clock.advance(minutes=6)
    jobs.run_once(svc)
    assert [to for to, _ in box.messages] == [["backup@hospital.example"]]
    assert f"/inbox/{rid}" in box.messages[0][1] and "Donor consent" not in box.messages[0][1]


def test_gateway_down_falls_back_to_mail_and_a_hanging_one_escalates_at_once(svc, world, clock,
                                                                           gateway, mailbox):
    box, port = mailbox
    _wire(svc, gateway, port, timeout=1)
    _sms_channel(svc, clock, gateway, world.doc, "06 12 34 56 78")  # then her verified e-mail
    gateway.mode = "500"
    first = create_request(svc, world)
    jobs.run_once(svc)
    with svc.sessions() as s:
        rows = [(d.kind, d.status, d.last_error) for d in s.scalars(
            select(NotificationDelivery).where(NotificationDelivery.request_id == first)
            .order_by(NotificationDelivery.position))]
        assert rows == [("sms", "failed", "the gateway answered 500"), ("email", "sent", None)]
        assert s.get(SignatureRequest, first).escalation_level == 0
    assert [to for to, _ in box.messages] == [["doc@hospital.example"]]

    # Her only channel hangs now: nobody on the rung reachable, the backup is paged at once.
    with svc.sessions() as s, s.begin():
        email = next(c for c in contacts.channels_of(s, world.doc) if c.kind == "email")
        contacts.remove(s, actor=Actor.of(s.get(User, world.doc)), channel_id=email.id, now=clock())
    gateway.mode = "hang"
    second = create_request(svc, world)
    jobs.run_once(svc)
    with svc.sessions() as s:
        assert s.get(SignatureRequest, second).escalation_level == 1
        rows = [(d.recipient, d.level, d.status, d.last_error) for d in s.scalars(
            select(NotificationDelivery).where(NotificationDelivery.request_id == second)
            .order_by(NotificationDelivery.id))]
    # ...and the administrators are told nobody on the first rung could be reached.
    assert rows == [("Dr Hélène Lefèvre", 0, "failed", "the gateway did not answer within 1 s"),
                    ("admin", None, "sent", None), ("Dr Łukasz Nowak", 1, "sent", None)]
    assert box.messages[-1][0] == ["backup@hospital.example"]


@pytest.mark.parametrize("secret", [None, "", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!!", "whsec_QUJD"])
def test_a_gateway_without_a_usable_signing_secret_is_refused_at_start(tmp_path, secret):
    env = {"SIGNFLOW_INSTANCE": str(tmp_path), "SIGNFLOW_WEBHOOK_URL": "https://sms.hospital.example/"}
    if secret is not None:
        env["SIGNFLOW_WEBHOOK_SECRET"] = secret
    with pytest.raises(ConfigurationError, match="SIGNFLOW_WEBHOOK_SECRET"):
        load_settings(env)
    assert load_settings({**env, "SIGNFLOW_WEBHOOK_SECRET": SECRET}).webhook_secret == SECRET
