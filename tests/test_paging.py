"""Contact channels and pages: phone numbers parsed with `phonenumbers`, a code sent
through the channel before it is used, the owner's order, delivery per recipient and
channel with retries, nobody on call, two workers on PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from signflow import jobs
from signflow.core.accounts import contacts
from signflow.core.audit.log import Actor
from signflow.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ServiceUnavailable,
    SignflowError,
    WrongCode,
)
from signflow.core.requests import outbox, paging
from signflow.models import (
    AuditEntry,
    ContactChannel,
    DeliveryStatus,
    Job,
    JobKind,
    JobStatus,
    NotificationDelivery,
    OnCallGroup,
    RotaShift,
    SignatureRequest,
    User,
)
from tests.conftest import csrf_token, login
from tests.factories import create_request, put_first
from tests.helpers import request_id_from, upload

CODE = r"verification code is (\d{6})"


def _actor(svc, user_id):
    with svc.sessions() as s:
        return Actor.of(s.get(User, user_id))


def _add(svc, clock, user_id, kind, address):
    with svc.sessions() as s, s.begin():
        return contacts.add_channel(s, svc.keys.master_key, actor=_actor(svc, user_id), kind=kind,
                                    address=address, now=clock()).id


def _code_sent_to(svc, address):
    import re

    jobs.run_once(svc)
    bodies = [m.body for m in svc.notifier.sent if address in (m.to_email, m.to_phone)]
    found = [re.search(CODE, b) for b in bodies]
    assert found and found[-1], bodies
    return found[-1].group(1)


def _verify(svc, clock, user_id, channel_id, code):
    """As a request would: a refusal whose changes count (a wrong code) still commits them."""
    with svc.sessions() as s:
        try:
            contacts.verify(s, svc.keys.master_key, actor=_actor(svc, user_id), channel_id=channel_id,
                            code=code, now=clock())
        except SignflowError as exc:
            if exc.commit_changes:
                s.commit()
            raise
        s.commit()


def _verified(svc, clock, user_id, kind, address):
    channel = _add(svc, clock, user_id, kind, address)
    _verify(svc, clock, user_id, channel, _code_sent_to(svc, contacts.normalise(kind, address)))
    return channel


def _actions(svc, **where):
    with svc.sessions() as s:
        query = select(AuditEntry).order_by(AuditEntry.seq)
        for key, value in where.items():
            query = query.where(getattr(AuditEntry, key) == value)
        return [(e.action, json.loads(e.line)) for e in s.scalars(query)]


def _rows(svc, rid):
    with svc.sessions() as s:
        return [(d.recipient, d.kind, d.status, d.attempts, d.last_error) for d in s.scalars(
            select(NotificationDelivery).where(NotificationDelivery.request_id == rid)
            .order_by(NotificationDelivery.id))]


@pytest.mark.parametrize(("kind", "typed", "stored"), [
    ("sms", "06 12 34 56 78", "+33612345678"),
    ("sms", "+33 (0)6 12-34-56-78", "+33612345678"),
    ("sms", "+44 7400 123456", "+447400123456"),
    ("pager", "01 45 67 89 01", "+33145678901"),
    ("email", "Dr.Lefevre@Hospital.Example", "Dr.Lefevre@hospital.example"),
])
def test_addresses_are_parsed_and_stored_canonically(kind, typed, stored):
    assert contacts.normalise(kind, typed) == stored


@pytest.mark.parametrize(("kind", "typed", "why"), [
    ("sms", "12", "not a phone number|does not exist"),
    ("sms", "06 12 34", "does not exist"),
    ("sms", "not a number", "not a phone number"),
    ("sms", "01 45 67 89 01", "mobile"),  # a landline takes no text message
    ("sms", "+33 6 12 34 56 78 9" * 3, "not a phone number"),
    ("pager", "+999 123", "not a phone number|does not exist"),
    ("email", "nobody", "not an e-mail"),
    ("email", "a@b", "not an e-mail"),
    ("email", "x@y.z <evil@a.b>", "not an e-mail"),
    ("push", "https://push.example/x", "from the phone itself"),
    ("fax", "0145678901", "Choose"),
])
def test_bad_addresses_are_refused_with_a_reason(kind, typed, why):
    with pytest.raises(InvalidInput, match=why):
        contacts.normalise(kind, typed)


def test_a_channel_is_verified_by_a_code_sent_through_it(svc, world, clock):
    channel = _add(svc, clock, world.doc, "sms", "06 12 34 56 78")
    code = _code_sent_to(svc, "+33612345678")
    # Only through that channel: not to the account's e-mail address.
    assert not [m for m in svc.notifier.sent if m.to_email == "doc@hospital.example"]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(contacts.MAX_CODE_TRIES):
        with pytest.raises(WrongCode):
            _verify(svc, clock, world.doc, channel, wrong)
    with pytest.raises(Forbidden, match="Too many"):
        _verify(svc, clock, world.doc, channel, code)  # the tries are spent, even for the right code
    with svc.sessions() as s, s.begin(), pytest.raises(Conflict, match="less than a minute"):
        contacts.send_code(s, svc.keys.master_key, actor=_actor(svc, world.doc), channel_id=channel,
                           now=clock())
    clock.advance(minutes=1)
    with svc.sessions() as s, s.begin():
        contacts.send_code(s, svc.keys.master_key, actor=_actor(svc, world.doc), channel_id=channel,
                           now=clock())
    _verify(svc, clock, world.doc, channel, _code_sent_to(svc, "+33612345678"))
    with svc.sessions() as s:
        row = s.get(ContactChannel, channel)
        assert row.verified_at == clock() and row.code_hash is None and row.address == "+33612345678"
        # The job that carried the code keeps no trace of it once sent.
        assert all("sealed" not in j.payload for j in s.scalars(select(Job)))
    actions = [a for a, line in _actions(svc) if a.startswith("contact.") and line.get("channel") == channel]
    assert actions == ["contact.added"] + ["contact.verification_failed"] * 5 + ["contact.verified"]


def test_only_the_owner_touches_a_channel_and_an_expired_code_is_refused(svc, world, clock):
    channel = _add(svc, clock, world.doc, "email", "helene@home.example")
    for action in (lambda s, a: contacts.remove(s, actor=a, channel_id=channel, now=clock()),
                   lambda s, a: contacts.verify(s, svc.keys.master_key, actor=a, channel_id=channel,
                                                code="123456", now=clock())):
        with svc.sessions() as s, s.begin(), pytest.raises(Exception, match="No such contact channel"):
            action(s, _actor(svc, world.backup))
    clock.advance(minutes=16)
    with pytest.raises(InvalidInput, match="expired"):
        _verify(svc, clock, world.doc, channel, "123456")
    with pytest.raises(Conflict, match="already have"):
        _add(svc, clock, world.doc, "email", "HELENE@home.example".lower())


def test_unverified_channels_are_never_paged(svc, world, clock):
    _add(svc, clock, world.doc, "sms", "06 12 34 56 78")  # never verified
    jobs.run_once(svc)
    before = len(svc.notifier.sent)
    rid = create_request(svc, world)
    jobs.run_once(svc)
    pages = svc.notifier.sent[before:]
    assert [(m.to_email, m.to_phone) for m in pages] == [("doc@hospital.example", None)]
    assert _rows(svc, rid) == [("Dr Hélène Lefèvre", "email", "sent", 1, None)]


def test_pages_follow_the_owners_order_and_fall_back_to_the_next_channel(svc, world, clock):
    sms = _verified(svc, clock, world.doc, "sms", "06 12 34 56 78")
    pager = _verified(svc, clock, world.doc, "pager", "01 45 67 89 01")
    put_first(svc, world.doc, pager)
    put_first(svc, world.doc, sms)  # phone, pager, then the enrolment-verified e-mail
    with svc.sessions() as s, s.begin():
        contacts.move(s, actor=_actor(svc, world.doc), channel_id=sms, earlier=False, now=clock())

    class SmsDown:
        def send(self, message):
            raise ServiceUnavailable("the gateway answered 503")

    svc.senders = {**svc.senders, "pager": SmsDown()}
    rid = create_request(svc, world)
    jobs.run_once(svc)
    assert _rows(svc, rid) == [
        ("Dr Hélène Lefèvre", "pager", "failed", 1, "the gateway answered 503"),
        ("Dr Hélène Lefèvre", "sms", "sent", 1, None),
        ("Dr Hélène Lefèvre", "email", "skipped", 0, None),  # reached: not tried
    ]
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).escalation_level == 0  # she was reached
        assert s.scalar(select(Job).where(Job.kind == JobKind.NOTIFY)).status == JobStatus.DONE


def test_a_failed_recipient_is_retried_with_backoff_while_the_others_were_reached(svc, world, clock):
    with svc.sessions() as s, s.begin():  # two physicians on the first rung
        s.add(RotaShift(group_id=world.group, user_id=world.head, level=0,
                        starts_at=clock() - timedelta(hours=1), ends_at=clock() + timedelta(days=1)))
    sent: list[str] = []
    failing = {"doc@hospital.example"}

    class Flaky:
        def send(self, message):
            if message.address in failing:
                raise ServiceUnavailable("mailbox unavailable")
            sent.append(message.address)

    svc.senders = {**svc.senders, "email": Flaky()}
    rid = create_request(svc, world)
    jobs.run_once(svc)
    assert sent == ["head@hospital.example"]
    clock.advance(seconds=29)
    jobs.run_once(svc)
    assert sent == ["head@hospital.example"]  # the backoff is not over
    failing.clear()
    clock.advance(seconds=1)
    jobs.run_once(svc)
    assert sent == ["head@hospital.example", "doc@hospital.example"]  # nobody paged twice
    rows = {r[0]: r for r in _rows(svc, rid)}
    assert rows["Dr Hélène Lefèvre"][2:4] == ("sent", 2)
    assert rows["Pr Øyvind Berg"][2:4] == ("sent", 1)
    audit = [(a, e.get("to")) for a, e in _actions(svc, request_id=rid) if a.startswith("page.")]
    assert audit == [("page.failed", "Dr Hélène Lefèvre"), ("page.sent", "Pr Øyvind Berg"),
                     ("page.sent", "Dr Hélène Lefèvre")]


def test_a_recipient_who_never_answers_is_given_up_after_the_last_attempt(svc, world, clock):
    class Down:
        def send(self, message):
            raise ServiceUnavailable("connection refused")

    svc.senders = {"email": Down(), "sms": Down(), "pager": Down()}
    rid = create_request(svc, world)
    with svc.sessions() as s, s.begin():
        job = outbox.enqueue(s, JobKind.NOTIFY, {"request": rid, "event": "declined"}, now=clock())
    for _ in range(jobs.MAX_ATTEMPTS):
        jobs.run_once(svc)
        clock.advance(minutes=20)
    with svc.sessions() as s:
        row = s.scalar(select(NotificationDelivery).where(NotificationDelivery.job_id == job.id))
        assert (row.status, row.attempts, row.next_attempt_at) == (DeliveryStatus.FAILED, 6, None)
        assert s.get(Job, job.id).status == JobStatus.FAILED


def test_nobody_on_call_goes_to_the_head_and_alerts_the_admins(app, svc, world, clock):
    with svc.sessions() as s, s.begin():
        empty = OnCallGroup(name="Night surgery", head_user_id=world.head)
        s.add(empty)
        s.flush()
        empty_id = empty.id
    tech = app.test_client()
    login(tech, "tech")
    sent = upload(tech, world, group=empty_id, urgency="urgent")
    rid = request_id_from(sent)
    # Told on the spot, on the page the upload lands on.
    assert "Nobody is on call for this group right now" in tech.get(sent.headers["Location"]).get_data(
        as_text=True)
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).escalation_level == 2
    jobs.run_once(svc)
    told = {(m.to_name, m.subject.split(":")[0]) for m in svc.notifier.sent}
    assert ("Pr Øyvind Berg", "Signature needed (urgent)") in told
    assert ("admin", "Nobody on call for Night surgery") in told
    assert "request.nobody_on_call" in [a for a, _ in _actions(svc, request_id=rid)]

    page = tech.get(f"/requests/{rid}").get_data(as_text=True)
    assert "Nobody was on call for this group" in page
    assert "Pr Øyvind Berg" in page and "delivery-sent" in page and "seen by" not in page
    clock.advance(minutes=3)
    head = app.test_client()
    login(head, "head")
    assert head.get(f"/inbox/{rid}").status_code == 200
    page = tech.get(f"/requests/{rid}").get_data(as_text=True)
    assert "seen by Pr Øyvind Berg at" in page


def test_a_group_with_someone_on_call_is_not_reported_empty(app, svc, world):
    tech = app.test_client()
    login(tech, "tech")
    sent = upload(tech, world)
    landing = tech.get(sent.headers["Location"]).get_data(as_text=True)
    assert "Nobody is on call" not in landing and "Nobody was on call" not in landing
    with svc.sessions() as s:
        assert s.get(SignatureRequest, request_id_from(sent)).escalation_level == 0


def test_two_workers_at_once_send_every_message_exactly_once(svc, world, clock):
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED claims are exercised on PostgreSQL")
    rid = create_request(svc, world)
    with svc.sessions() as s, s.begin():
        s.query(Job).delete()
        for _ in range(30):
            outbox.enqueue(s, JobKind.NOTIFY, {"request": rid, "event": "declined"}, now=clock())
    sent: list[str] = []
    lock = threading.Lock()
    both_inside = threading.Barrier(2, timeout=20)
    first: dict[str, bool] = {}

    class Recording:
        def send(self, message):
            name = threading.current_thread().name
            if name not in first:
                first[name] = True
                both_inside.wait()  # each worker holds a claimed job while the other claims one
            with lock:
                sent.append(message.message_id)

    svc.senders = {"email": Recording(), "sms": Recording(), "pager": Recording()}
    errors: list[BaseException] = []

    def worker():
        try:
            while jobs.run_job(svc, now=clock()) is not None:
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"w{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(first) == 2
    assert len(sent) == 30 and len(set(sent)) == 30
    with svc.sessions() as s:
        assert {j.status for j in s.scalars(select(Job))} == {JobStatus.DONE}
        rows = list(s.scalars(select(NotificationDelivery)))
        assert len(rows) == 30 and {r.status for r in rows} == {DeliveryStatus.SENT}
        assert {r.attempts for r in rows} == {1}


def test_the_physician_manages_channels_on_their_page_and_an_admin_sees_them(app, svc, world, clock):
    import re

    doc = app.test_client()
    login(doc, "doc")
    token = csrf_token(doc, "/account/contacts/")
    for kind, address in (("sms", "06 12 34 56 78"), ("pager", "01 45 67 89 01")):
        resp = doc.post("/account/contacts/", data={"csrf_token": token, "kind": kind, "address": address})
        assert resp.status_code == 302
    refused = doc.post("/account/contacts/", data={"csrf_token": token, "kind": "sms", "address": "12"})
    assert refused.status_code == 400 and "does not exist" in refused.get_data(as_text=True)
    with svc.sessions() as s:
        # The account's e-mail first: the enrolment code verified it.
        email, sms, pager = [c.id for c in contacts.channels_of(s, world.doc)]
    code = _code_sent_to(svc, "+33612345678")
    assert doc.post(f"/account/contacts/{sms}/verify", data={"csrf_token": token, "code": code}
                    ).status_code == 302
    assert doc.post(f"/account/contacts/{pager}/earlier", data={"csrf_token": token}).status_code == 302
    page = doc.get("/account/contacts/").get_data(as_text=True)
    order = re.findall(r'data-channel="(\d+)"', page)
    assert order == [str(email), str(pager), str(sms)] and "+33612345678" in page and "not verified" in page

    admin = app.test_client()
    login(admin, "admin")
    shown = admin.get(f"/admin/users/{world.doc}").get_data(as_text=True)
    assert re.findall(r'data-channel="(\d+)"', shown) == [str(email), str(pager), str(sms)]
    assert "+33145678901" in shown


def test_the_enrolment_code_verifies_the_account_address_and_nothing_else_is_paged(app, svc, world, clock):
    with svc.sessions() as s:
        [email] = contacts.channels_of(s, world.doc)
        assert (email.kind, email.address, email.verified_at) == ("email", "doc@hospital.example", clock())
    assert ("contact.verified", "enrolment code") in [
        (a, line.get("proof")) for a, line in _actions(svc) if line.get("channel") == email.id]
    # Her only verified channel removed: the e-mail on her account is no channel of hers.
    with svc.sessions() as s, s.begin():
        contacts.remove(s, actor=_actor(svc, world.doc), channel_id=email.id, now=clock())
        assert s.get(User, world.doc).email == "doc@hospital.example"
    admin = app.test_client()
    login(admin, "admin")
    assert "data-unreachable" in admin.get(f"/admin/users/{world.doc}").get_data(as_text=True)
    assert "data-unreachable" not in admin.get(f"/admin/users/{world.backup}").get_data(as_text=True)
    before = len(svc.notifier.sent)
    rid = create_request(svc, world)
    jobs.run_once(svc)
    # Unreachable counts as every channel failed: the backup at once, the administrators told.
    assert _rows(svc, rid)[0] == ("Dr Hélène Lefèvre", "email", "failed", 0, paging.NO_ADDRESS)
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).escalation_level == 1
    sent = [(m.to_email, m.subject) for m in svc.notifier.sent[before:]]
    assert "doc@hospital.example" not in [to for to, _ in sent]
    assert ("admin@hospital.example",
            f"Nobody reachable on call for Anaesthesia on call: request #{rid} moved up at once") in sent
    assert ("backup@hospital.example", f"ESCALATED signature needed (urgent): request #{rid}") in sent
    clock.advance(minutes=2)
    jobs.run_once(svc)  # the retries of the same page do not alert again
    assert len([m for m in svc.notifier.sent[before:] if m.to_email == "admin@hospital.example"]) == 1
