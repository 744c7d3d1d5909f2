"""Separation of duties (issue 10, point 2): no single administrator gives anyone the
power to read documents or to sign; admin-set passwords are single use; a physician's
first key needs a code sent to their own address; professional ids are validated and
unique; long names enrol; the auditor filters administrative actions. All through HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from flask.testing import FlaskClient
from sqlalchemy import select

from signflow.core.accounts import users as accounts
from signflow.core.pki import credentials as creds
from signflow.models import (
    AuditEntry,
    EnrolmentCode,
    Job,
    JobKind,
    PendingChange,
    SigningCredential,
    User,
)
from tests.conftest import PASSWORD, PIN, TEST_ACTOR, csrf_token, login
from tests.factories import count
from tests.helpers import delivered_request, enrolment_code, run_jobs

INITIAL = "given by the admin 42"
OWN = "my very own passphrase 7"
RPPS = "10002222221"  # 11 digits, Luhn key right
ADELI = "750123456"


@pytest.fixture
def admins(app, svc, world) -> tuple[FlaskClient, FlaskClient]:
    """Two administrators, each logged in on their own browser."""
    with svc.sessions() as s, s.begin():
        accounts.create_user(s, actor=TEST_ACTOR, now=svc.clock(), username="admin2",
                             display_name="Second Admin", role="admin", password=PASSWORD)
    first, second = app.test_client(), app.test_client()
    login(first, "admin")
    login(second, "admin2")
    return first, second


def _post(client: FlaskClient, path: str, page: str | None = None, **data: Any) -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client, page or path), **data})


def _message(resp: Any) -> str:
    text = resp.get_data(as_text=True)
    match = re.search(r'<section class="card error"[^>]*>(.*?)</section>', text, re.S)
    assert match, text[:1500]
    return match.group(1)


def _create(admin: FlaskClient, username: str, role: str = "physician", **extra: str) -> Any:
    data = {"username": username, "display_name": extra.pop("display_name", f"Dr {username}"),
            "role": role, "password": INITIAL, "email": f"{username}@hospital.example",
            "destination": "0", **extra}
    return _post(admin, "/admin/users", **data)


def _user(svc: Any, username: str) -> User | None:
    with svc.sessions() as s:
        return s.scalar(select(User).where(User.username == username))


def _change_for(svc: Any, username: str) -> int:
    with svc.sessions() as s:
        change_id = s.scalar(select(PendingChange.id).join(User, PendingChange.user_id == User.id)
                             .where(User.username == username, PendingChange.status == "pending"))
        assert change_id is not None
        return int(change_id)


def _approve(admin: FlaskClient, svc: Any, username: str) -> Any:
    return _post(admin, f"/admin/changes/{_change_for(svc, username)}/approve", "/admin/changes")


def _try_login(app: Any, username: str, password: str) -> Any:
    client = app.test_client()
    resp = client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_token(client, "/login")})
    return client, resp


def _actions(svc: Any, action: str) -> list[dict[str, Any]]:
    with svc.sessions() as s:
        return [json.loads(line) for line in s.scalars(
            select(AuditEntry.line).where(AuditEntry.action == action).order_by(AuditEntry.seq))]


def test_one_admin_cannot_make_a_physician_usable_alone(app, svc, world, admins):
    first, second = admins
    resp = _create(first, "dr.new", professional_id=RPPS)
    assert resp.status_code == 302
    assert "Proposed: it takes effect when a second administrator" in first.get(
        "/admin/users").get_data(as_text=True)
    assert _user(svc, "dr.new").active is False
    _client, resp = _try_login(app, "dr.new", INITIAL)
    assert resp.status_code == 401  # not usable: the same answer as a wrong password

    change = _change_for(svc, "dr.new")
    assert "dr.new" in first.get("/admin/changes").get_data(as_text=True)
    resp = _post(first, f"/admin/changes/{change}/approve", "/admin/changes")
    assert resp.status_code == 403
    assert "second administrator must approve" in _message(resp)
    assert _user(svc, "dr.new").active is False

    resp = _post(second, f"/admin/changes/{change}/approve", "/admin/changes")
    assert resp.status_code == 302
    assert _user(svc, "dr.new").active is True
    _client, resp = _try_login(app, "dr.new", INITIAL)
    assert resp.status_code == 302
    # Both steps audited, by whom; and the physician was told, at their own address.
    proposed, approved = _actions(svc, "admin.change_proposed"), _actions(svc, "admin.change_approved")
    assert [e["actor"]["name"] for e in proposed] == ["admin"]
    assert [e["actor"]["name"] for e in approved] == ["admin2"]
    assert approved[0]["change"] == change and approved[0]["proposed_by"] == world.admin
    run_jobs(svc)
    told = [m.subject for m in svc.notifier.sent if m.to_email == "dr.new@hospital.example"]
    assert any("awaits approval" in s for s in told) and any("was changed" in s for s in told)
    # An approved change cannot be approved again.
    resp = _post(second, f"/admin/changes/{change}/approve", "/admin/changes")
    assert resp.status_code == 409


def test_one_admin_cannot_give_a_recipient_the_documents(app, svc, world, admins):
    first, second = admins
    rid, _tech, _doc = delivered_request(app, world)
    resp = _create(first, "desk2", role="recipient", destination=str(world.destination))
    assert resp.status_code == 302
    _client, resp = _try_login(app, "desk2", INITIAL)
    assert resp.status_code == 401
    # A rejection changes nothing, whoever makes it.
    change = _change_for(svc, "desk2")
    assert _post(second, f"/admin/changes/{change}/reject", "/admin/changes").status_code == 302
    assert _user(svc, "desk2").active is False
    assert _actions(svc, "admin.change_rejected")[0]["change"] == change
    # Re-enabling is itself a proposal, which the second admin approves.
    assert _post(first, f"/admin/users/{_user(svc, 'desk2').id}/active", "/admin/users").status_code == 302
    assert _user(svc, "desk2").active is False
    resp = _post(second, f"/admin/changes/{_change_for(svc, 'desk2')}/approve", "/admin/changes")
    assert resp.status_code == 302
    desk, resp = _try_login(app, "desk2", INITIAL)
    assert resp.status_code == 302
    _post(desk, "/account/password", current=INITIAL, password=OWN, confirm=OWN)
    assert desk.get(f"/documents/{rid}/download").status_code == 200


def test_re_enabling_a_physician_waits_for_a_second_admin(app, svc, world, admins):
    first, second = admins
    path = f"/admin/users/{world.doc}/active"
    assert _post(first, path, "/admin/users").status_code == 302  # disabling: at once
    assert _user(svc, "doc").active is False
    assert _post(first, path, "/admin/users").status_code == 302  # re-enabling: proposed
    assert _user(svc, "doc").active is False
    assert "awaiting approval" in first.get("/admin/users").get_data(as_text=True)
    # Only one open proposal per account.
    resp = _post(first, path, "/admin/users")
    assert resp.status_code == 409
    assert _approve(second, svc, "doc").status_code == 302
    assert _user(svc, "doc").active is True
    login(app.test_client(), "doc")


def test_changing_a_physicians_identity_waits_and_then_forces_re_enrolment(app, svc, world, admins):
    first, second = admins
    resp = _post(first, f"/admin/users/{world.doc}", display_name="Dr Hélène Lefèvre-Martin",
                 professional_id="10001234565", email="doc@hospital.example", phone="", destination="0")
    assert resp.status_code == 302
    doc = _user(svc, "doc")
    assert doc.display_name == "Dr Hélène Lefèvre"  # nothing yet
    with svc.sessions() as s:
        serial = creds.active_credential(s, world.doc).serial
    # The second admin's approval applies it; the old certificate (old name) is revoked.
    assert _approve(second, svc, "doc").status_code == 302
    assert _user(svc, "doc").display_name == "Dr Hélène Lefèvre-Martin"
    with svc.sessions() as s:
        old = s.scalar(select(SigningCredential).where(SigningCredential.serial == serial))
        assert old.revoked_at is not None
        assert creds.active_credential(s, world.doc) is None
    # A change of e-mail (where the enrolment code goes) waits too.
    assert _post(first, f"/admin/users/{world.doc}", display_name="Dr Hélène Lefèvre-Martin",
                 professional_id="10001234565", email="attacker@example.org", phone="",
                 destination="0").status_code == 302
    assert _user(svc, "doc").email == "doc@hospital.example"
    # A technician's name, by contrast, needs no second admin.
    assert _post(first, f"/admin/users/{world.tech}", display_name="Théo T.", email="", phone="",
                 professional_id="", destination="0").status_code == 302
    assert _user(svc, "tech").display_name == "Théo T."
    assert [e["fields"] for e in _actions(svc, "user.updated")][-1] == ["display_name", "email"]


def test_the_same_professional_id_is_refused_at_creation_and_at_approval(app, svc, world, admins):
    first, second = admins
    audit_before = count(svc, AuditEntry)
    resp = _create(first, "dr.copy", display_name="Dr Hélène Lefèvre", professional_id="10001234565")
    assert resp.status_code == 409
    assert "already has this professional id" in _message(resp)
    assert _user(svc, "dr.copy") is None and count(svc, AuditEntry) == audit_before
    # Spaces do not make another id.
    resp = _create(first, "dr.copy", professional_id="100 0123 4565")
    assert resp.status_code == 409
    # Two proposals racing for one id: the second approval is refused.
    assert _post(first, f"/admin/users/{world.backup}", display_name="Dr Łukasz Nowak",
                 professional_id=RPPS, email="backup@hospital.example", phone="",
                 destination="0").status_code == 302
    assert _create(first, "dr.race", professional_id=RPPS).status_code == 302
    assert _post(second, f"/admin/changes/{_change_for(svc, 'dr.race')}/approve",
                 "/admin/changes").status_code == 302
    resp = _post(second, f"/admin/changes/{_change_for(svc, 'backup')}/approve", "/admin/changes")
    assert resp.status_code == 409
    assert "already has this professional id" in _message(resp)
    assert _user(svc, "backup").professional_id == "10007654329"


@pytest.mark.parametrize(("pid", "says"), [
    ("10001234567", "check key"),          # 11 digits, wrong Luhn key
    ("1000123456", "not 10"),              # neither RPPS nor ADELI
    ("75012345", "not 8"),
    ("RPPS10001234565", "digits only"),
    ('100"<>34565', "digits only"),
    ("10001234565<script>", "digits only"),
])
def test_an_invalid_professional_id_is_refused_clearly(app, svc, world, admins, pid, says):
    first, _second = admins
    audit_before = count(svc, AuditEntry)
    resp = _create(first, "dr.bad", professional_id=pid)
    assert resp.status_code == 400
    assert says in _message(resp)
    assert "&lt;script" not in _message(resp) and "<script>" not in resp.get_data(as_text=True)
    assert _user(svc, "dr.bad") is None and count(svc, AuditEntry) == audit_before


def test_an_adeli_number_is_accepted(app, svc, world, admins):
    first, _second = admins
    assert _create(first, "nurse.adeli", professional_id=ADELI).status_code == 302
    assert _user(svc, "nurse.adeli").professional_id == ADELI


def test_admin_set_password_must_be_changed_at_first_login(app, svc, world, admins):
    first, _second = admins
    assert _create(first, "newtech", role="technician").status_code == 302  # no four eyes
    client, resp = _try_login(app, "newtech", INITIAL)
    assert resp.status_code == 302
    for path in ("/", "/requests/", "/requests/new"):
        resp = client.get(path)
        assert resp.status_code == 302 and resp.headers["Location"] == "/account/password", path
    assert "Choose your own password" in client.get("/account/password").get_data(as_text=True)
    resp = _post(client, "/account/password", current="wrong one!", password=OWN, confirm=OWN)
    assert resp.status_code == 400 and "current password" in _message(resp)
    resp = _post(client, "/account/password", current=INITIAL, password=INITIAL, confirm=INITIAL)
    assert resp.status_code == 400
    resp = _post(client, "/account/password", current=INITIAL, password=OWN, confirm=OWN + "x")
    assert resp.status_code == 400 and "differ" in _message(resp)
    resp = _post(client, "/account/password", current=INITIAL, password=OWN, confirm=OWN)
    assert resp.status_code == 302
    assert client.get("/requests/").status_code == 200  # this session goes on
    _other, resp = _try_login(app, "newtech", INITIAL)
    assert resp.status_code == 401  # single use
    _other, resp = _try_login(app, "newtech", OWN)
    assert resp.status_code == 302
    entry = _actions(svc, "password.changed")[-1]
    assert entry["forced"] is True and entry["actor"]["name"] == "newtech"
    assert OWN not in json.dumps(_actions(svc, "password.changed"))


def test_any_user_changes_their_password_later(app, svc, world):
    tech = app.test_client()
    login(tech, "tech")
    other = app.test_client()
    login(other, "tech")
    assert tech.get("/requests/").status_code == 200  # no forced change for them
    resp = _post(tech, "/account/password", current=PASSWORD, password=OWN, confirm=OWN)
    assert resp.status_code == 302
    assert other.get("/requests/").status_code == 302  # other sessions end
    assert tech.get("/requests/").status_code == 200
    login(app.test_client(), "tech", OWN)
    assert _actions(svc, "password.changed")[-1]["forced"] is False


def _approved_physician(app, svc, admins, username: str, **extra: str) -> FlaskClient:
    """A physician created by one admin, approved by the other, own password set."""
    first, second = admins
    resp = _create(first, username, **extra)
    assert resp.status_code == 302, _message(resp)
    assert _post(second, f"/admin/changes/{_change_for(svc, username)}/approve",
                 "/admin/changes").status_code == 302
    client, resp = _try_login(app, username, INITIAL)
    assert resp.status_code == 302
    assert _post(client, "/account/password", current=INITIAL, password=OWN, confirm=OWN).status_code == 302
    return client


def test_enrolment_code_goes_to_the_physicians_email_never_to_an_admin(app, svc, world, admins):
    first, _second = admins
    doc = _approved_physician(app, svc, admins, "dr.code", professional_id=RPPS)
    # Without a code: no key.
    resp = _post(doc, "/inbox/signing-pin", pin=PIN, confirm=PIN)
    assert resp.status_code == 400 and "enrolment code" in _message(resp)
    page = doc.get("/inbox/signing-pin").get_data(as_text=True)
    assert "Send me an enrolment code" in page
    code = enrolment_code(svc, doc, "dr.code@hospital.example")
    assert len(code) == 8
    # Only the e-mail carries it: not the physician's pages, not any admin page, not the
    # database (a keyed hash; the job's sealed copy is gone once sent), not the audit log.
    user_id = _user(svc, "dr.code").id
    pages = [doc.get("/inbox/signing-pin"), first.get("/admin/users"), first.get("/admin/changes"),
             first.get(f"/admin/users/{user_id}")]
    for resp in pages:
        assert resp.status_code == 200 and code not in resp.get_data(as_text=True)
    with svc.sessions() as s:
        row = s.get(EnrolmentCode, user_id)
        assert row is not None and code not in row.code_hash
        payloads = s.scalars(select(Job.payload).where(Job.kind == JobKind.ACCOUNT_NOTICE)).all()
        assert payloads
        for payload in payloads:
            assert code not in payload and "sealed" not in payload, payload
        for line in s.scalars(select(AuditEntry.line)):
            assert code not in line, line
    assert [m.to_email for m in svc.notifier.sent if code in m.body] == ["dr.code@hospital.example"]
    # A wrong code is refused and counted; the right one enrols (the PUK page follows).
    wrong = "00000000" if code != "00000000" else "11111111"
    resp = _post(doc, "/inbox/signing-pin", pin=PIN, confirm=PIN, enrolment_code=wrong)
    assert resp.status_code == 400 and "Wrong enrolment code" in _message(resp)
    assert _actions(svc, "credential.enrolment_code_failed")[-1]["failures"] == 1
    resp = _post(doc, "/inbox/signing-pin", pin=PIN, confirm=PIN, enrolment_code=code)
    assert resp.status_code == 200 and 'id="puk"' in resp.get_data(as_text=True)
    with svc.sessions() as s:
        assert creds.active_credential(s, user_id) is not None
        assert s.get(EnrolmentCode, user_id) is None  # used up


def test_enrolment_code_tries_are_limited_and_it_expires(app, svc, world, admins, clock):
    doc = _approved_physician(app, svc, admins, "dr.tries")
    code = enrolment_code(svc, doc, "dr.tries@hospital.example")
    for _ in range(5):
        resp = _post(doc, "/inbox/signing-pin", pin=PIN, confirm=PIN, enrolment_code="12345678")
        assert resp.status_code == 400
    resp = _post(doc, "/inbox/signing-pin", pin=PIN, confirm=PIN, enrolment_code=code)
    assert resp.status_code == 403 and "ask for a new one" in _message(resp)
    # A new code (not within the minute), which then expires after 15 minutes.
    assert _post(doc, "/inbox/signing-pin/code", "/inbox/signing-pin").status_code == 409
    clock.advance(minutes=2)
    code = enrolment_code(svc, doc, "dr.tries@hospital.example")
    clock.advance(minutes=16)
    resp = _post(doc, "/inbox/signing-pin", pin=PIN, confirm=PIN, enrolment_code=code)
    assert resp.status_code == 400 and "lasts 15 minutes" in _message(resp)
    with svc.sessions() as s:
        assert creds.active_credential(s, _user(svc, "dr.tries").id) is None


def test_a_long_name_enrols_and_signs_its_certificate(app, svc, world, admins):
    long_name = "Dr Marie-Hélène Éléonore de La Tour d'Auvergne-Lauraguais O'Connor " * 2
    long_name = long_name[:128].strip()
    assert len(long_name) > 64
    doc = _approved_physician(app, svc, admins, "dr.long", display_name=long_name,
                              professional_id=ADELI)
    code = enrolment_code(svc, doc, "dr.long@hospital.example")
    resp = _post(doc, "/inbox/signing-pin", pin=PIN, confirm=PIN, enrolment_code=code)
    assert resp.status_code == 200, _message(resp)
    with svc.sessions() as s:
        cert = creds.credential_certificate(creds.active_credential(s, _user(svc, "dr.long").id))
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    full = cert.subject.get_attributes_for_oid(x509.ObjectIdentifier("2.5.4.41"))[0].value
    assert len(cn.encode()) <= 64 and cn.endswith("…") and full == long_name
    assert long_name.startswith(cn[:-1])
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == f"ADELI:{ADELI}"
    # Past the limit: a clear refusal, not a 500.
    resp = _create(admins[0], "dr.toolong", display_name="x" * 129)
    assert resp.status_code == 400 and "Full name" in _message(resp)


def test_the_auditor_filters_every_administrative_action(app, svc, world, admins):
    first, second = admins
    _create(first, "dr.audit", professional_id=RPPS)
    _post(second, f"/admin/changes/{_change_for(svc, 'dr.audit')}/approve", "/admin/changes")
    _post(first, f"/admin/users/{world.tech2}/active", "/admin/users")
    auditor = app.test_client()
    login(auditor, "auditor")
    page = auditor.get("/audit/?scope=admin").get_data(as_text=True)
    for action in ("admin.change_proposed", "admin.change_approved", "user.created",
                   "user.disabled", "user.enabled"):
        assert f"<td>{action}</td>" in page, action
    assert "<td>login.succeeded</td>" not in page
    # With the actor filter: what one administrator did.
    page = auditor.get(f"/audit/?scope=admin&actor={world.admin}").get_data(as_text=True)
    assert "<td>admin.change_proposed</td>" in page and "<td>admin.change_approved</td>" not in page
    assert auditor.get("/audit/?scope=nonsense").status_code == 400


def test_which_roles_need_a_second_admin(app, svc, world, admins):
    first, _second = admins
    # An administrator could approve the first one's proposals: four eyes too.
    assert _create(first, "admin3", role="admin").status_code == 302
    # Technicians see only what they upload, auditors never see contents: at once.
    assert _create(first, "auditor2", role="auditor").status_code == 302
    assert _user(svc, "admin3").active is False
    assert _user(svc, "auditor2").active is True
    assert _user(svc, "auditor2").must_change_password is True
