"""Core workflow: transitions, escalation ladder, the worker and real notifiers."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from signflow import jobs
from signflow.core.audit.log import Actor
from signflow.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from signflow.core.notify.channels import Message, ServiceUnavailable, SmtpNotifier
from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import AuditEntry, Job, RequestState, SignatureRequest, User
from tests.factories import create_request, sign_request
from tests.tools import free_port


def _state(svc, rid):
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        return req.state, req.escalation_level


def test_escalation_ladder_then_expiry(svc, world, clock):
    rid = create_request(svc, world, urgency="urgent")
    jobs.run_once(svc)
    told = [m.to_name for m in svc.notifier.sent]
    assert told == ["Dr Hélène Lefèvre"]  # primary only at level 0

    clock.advance(minutes=9)
    assert jobs.run_once(svc).escalated == 0
    clock.advance(minutes=2)
    assert jobs.run_once(svc).escalated == 1
    assert _state(svc, rid) == (RequestState.PENDING, 1)
    assert svc.notifier.sent[-1].to_name == "Dr Łukasz Nowak"
    assert "ESCALATED" in svc.notifier.sent[-1].subject

    clock.advance(minutes=11)
    jobs.run_once(svc)
    assert _state(svc, rid) == (RequestState.PENDING, 2)
    assert svc.notifier.sent[-1].to_name == "Pr Øyvind Berg"

    clock.advance(minutes=11)
    jobs.run_once(svc)
    assert _state(svc, rid)[0] == RequestState.EXPIRED
    assert svc.notifier.sent[-1].to_name == "tech"
    with svc.sessions() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.request_id == rid)
                            .order_by(AuditEntry.seq)).all()
    assert actions.count("request.escalated") == 2 and "request.expired" in actions
    # Re-running the worker does nothing more: escalation is idempotent per deadline.
    before = len(svc.notifier.sent)
    jobs.run_once(svc)
    assert len(svc.notifier.sent) == before


def test_notifications_carry_a_link_and_no_content(svc, world):
    rid = create_request(svc, world)
    jobs.run_once(svc)
    message = svc.notifier.sent[0]
    assert message.link == f"http://127.0.0.1:5000/inbox/{rid}"
    assert "Donor consent" not in message.subject + message.body  # the title may name a patient
    with svc.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.status == "pending")) == 0
        sent = s.scalars(select(AuditEntry.line).where(AuditEntry.action == "page.sent")).all()
    assert len(sent) == 1 and json.loads(sent[0])["to"] == "Dr Hélène Lefèvre"


def test_sign_then_deliver_then_acknowledge(svc, world):
    rid = create_request(svc, world)
    req = sign_request(svc, rid, world.doc)
    assert req.state == RequestState.DELIVERED and req.signed_sha256 != req.document_sha256
    with svc.sessions() as s, s.begin():
        recipient = s.get(User, world.recipient)
        workflow.acknowledge_receipt(s, svc.deps, actor=Actor.of(recipient), request_id=rid, now=svc.clock())
        # A double submit is not an error and writes nothing more.
        workflow.acknowledge_receipt(s, svc.deps, actor=Actor.of(recipient), request_id=rid, now=svc.clock())
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).state == RequestState.RECEIVED
        assert s.scalar(select(func.count()).select_from(AuditEntry)
                        .where(AuditEntry.action == "request.received")) == 1


def test_second_signature_refused_with_who_and_when(svc, world):
    rid = create_request(svc, world)
    sign_request(svc, rid, world.doc)
    with svc.sessions() as s, pytest.raises(Conflict, match="Already signed by Dr Hélène Lefèvre at"):
        request_signing.prepare_signing(s, svc.deps, user=s.get(User, world.backup), request_id=rid,
                                 now=svc.clock())


def test_decline_and_cancel_rules(svc, world):
    rid = create_request(svc, world)
    with svc.sessions() as s, s.begin():
        with pytest.raises(InvalidInput):
            workflow.decline_request(s, svc.deps, actor=Actor.of(s.get(User, world.doc)), request_id=rid,
                                     reason="  ", now=svc.clock())
        workflow.decline_request(s, svc.deps, actor=Actor.of(s.get(User, world.doc)), request_id=rid,
                                 reason="Wrong patient", now=svc.clock())
    with svc.sessions() as s:
        with pytest.raises(Conflict, match="declined"):
            workflow.cancel_request(s, svc.deps, actor=Actor.of(s.get(User, world.tech)), request_id=rid,
                                    now=svc.clock())
        with pytest.raises(NotFound):  # another technician's request does not exist for them
            workflow.cancel_request(s, svc.deps, actor=Actor.of(s.get(User, world.tech2)), request_id=rid,
                                    now=svc.clock())
    rid2 = create_request(svc, world)
    with svc.sessions() as s, s.begin():
        workflow.cancel_request(s, svc.deps, actor=Actor.of(s.get(User, world.tech)), request_id=rid2,
                                now=svc.clock())
    with svc.sessions() as s, pytest.raises(Conflict, match="cancelled"):
        request_signing.prepare_signing(s, svc.deps, user=s.get(User, world.doc), request_id=rid2,
                                 now=svc.clock())


def test_off_duty_physician_cannot_sign(svc, world):
    rid = create_request(svc, world)
    with svc.sessions() as s, pytest.raises(NotFound):
        request_signing.prepare_signing(s, svc.deps, user=s.get(User, world.offduty), request_id=rid,
                                 now=svc.clock())


def test_head_of_department_may_sign_and_shift_end_revokes_access(svc, world, clock):
    rid = create_request(svc, world, urgency="routine")
    with svc.sessions() as s:
        assert request_signing.prepare_signing(s, svc.deps, user=s.get(User, world.head), request_id=rid,
                                        now=svc.clock()).document_sha256
    clock.advance(days=2)  # the doc's shift is over
    with svc.sessions() as s, pytest.raises(NotFound):
        access.get_request(s, user=s.get(User, world.doc), request_id=rid, now=svc.clock())


def test_technician_only_creates(svc, world):
    with pytest.raises(Forbidden):
        create_request(svc, world, user_id=world.doc)


MESSAGE = Message(to_name="Dr Lefèvre", to_email="doc@hospital.example", to_phone="+33600000000",
                  subject="Signature needed (urgent): request #7", body="Open signflow.",
                  link="https://signflow.example/inbox/7")


def test_smtp_notifier_against_a_real_smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler

    received = []

    class Collect(MessageHandler):
        def handle_message(self, message):
            received.append(message)

    port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert SmtpNotifier("127.0.0.1", port, "signflow@hospital.example").send(MESSAGE) == "email"
    finally:
        controller.stop()
    assert len(received) == 1
    mail = received[0]
    assert mail["To"] == "doc@hospital.example"
    assert mail["Subject"] == MESSAGE.subject
    assert MESSAGE.link in mail.get_payload()


def test_smtp_down_is_a_clear_failure():
    with pytest.raises(ServiceUnavailable, match="e-mail"):
        SmtpNotifier("127.0.0.1", free_port(), "x@y.z", timeout=2).send(MESSAGE)


def test_failed_notification_is_retried_then_audited(svc, world, clock):
    class Down:
        def send(self, message):
            raise ServiceUnavailable("gateway down")

    svc.senders = {"email": Down(), "sms": Down(), "pager": Down()}
    rid = create_request(svc, world, urgency="routine")
    jobs.run_once(svc)
    with svc.sessions() as s:
        job = s.scalar(select(Job).order_by(Job.id))
        assert job.status == "pending" and job.attempts == 1 and "gateway down" in job.last_error
        failures = s.scalars(select(AuditEntry.line).where(
            AuditEntry.action == "page.failed", AuditEntry.request_id == rid)).all()
        # Nobody at a rung could be reached: each next rung was paged at once, up to the head.
        assert [json.loads(f)["to"] for f in failures] == [
            "Dr Hélène Lefèvre", "Dr Łukasz Nowak", "Pr Øyvind Berg"]
        assert s.get(SignatureRequest, rid).escalation_level == 2
        first_job = job.id
    for _ in range(jobs.MAX_ATTEMPTS):
        clock.advance(hours=1)
        jobs.run_once(svc)
    with svc.sessions() as s:
        # The hours that pass queue escalations of their own: this is about the first job.
        assert s.get(Job, first_job).status == "failed"
