"""A blocked signing key, unblocked by the physician alone (issue 10, point 4): the
unblock code (PUK) shown once at enrolment, password and second factor, a new PIN."""

from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import select

from signflow.core.accounts import signing_pin as credentials
from signflow.core.pki import credentials as creds
from signflow.models import AuditEntry, RequestState, SigningCredential
from tests.conftest import PASSWORD, TEST_ACTOR, csrf_token, login
from tests.factories import state_of
from tests.helpers import app_requiring_mfa, enrolment_code, new_request, sign, sign_form

NEW_PIN = "592817"
SECOND_PIN = "604938"
WRONG = ("735102", "735103", "735104", "735105", "735106")


@pytest.fixture
def mfa_app(svc, settings):
    return app_requiring_mfa(svc, settings, roles="physician")


def _physician_with_second_factor(app, clock):
    client = app.test_client()
    login(client, "doc")
    page = client.get("/account/two-factor").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    resp = client.post("/account/two-factor", data={
        "csrf_token": token, "code": pyotp.TOTP(secret).at(clock())})
    assert resp.status_code == 302
    return client


def _form(client, path, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, path), **data})


def test_physician_unblocks_her_key_with_the_unblock_code(mfa_app, svc, world, clock):
    with svc.sessions() as s, s.begin():  # a physician enrolling for the first time
        credentials.revoke_credential(s, actor=TEST_ACTOR, user_id=world.doc,
                                      reason="superseded", now=clock())
    tech = mfa_app.test_client()
    login(tech, "tech")
    pending = new_request(tech, world)

    doc = _physician_with_second_factor(mfa_app, clock)
    code = enrolment_code(svc, doc, "doc@hospital.example")
    resp = _form(doc, "/inbox/signing-pin", pin=NEW_PIN, confirm=NEW_PIN, enrolment_code=code)
    assert resp.status_code == 200
    puk = re.search(r'id="puk"><code>([0-9-]+)</code>', resp.get_data(as_text=True)).group(1)
    assert len(puk.replace("-", "")) == 16
    with svc.sessions() as s:
        row = s.scalar(select(SigningCredential).where(SigningCredential.user_id == world.doc,
                                                       SigningCredential.revoked_at.is_(None)))
        assert row.puk_hash.startswith("$argon2id$") and puk.replace("-", "") not in row.puk_hash
    assert puk not in doc.get("/inbox/").get_data(as_text=True)  # shown once only

    form = sign_form(doc, pending)
    for wrong in WRONG:
        doc.post(f"/inbox/{pending}/sign", data={**form, "pin": wrong})
    assert doc.post(f"/inbox/{pending}/sign", data={**form, "pin": NEW_PIN}).status_code == 423
    assert "/inbox/signing-pin/unblock" in doc.get("/inbox/").get_data(as_text=True)

    # A wrong code changes nothing but is counted and audited.
    bad = _form(doc, "/inbox/signing-pin/unblock", puk="0000-0000-0000-0000",
                pin=SECOND_PIN, confirm=SECOND_PIN)
    assert bad.status_code == 403
    assert "wrong unblock code: 9 tries left" in bad.get_data(as_text=True)
    assert doc.post(f"/inbox/{pending}/sign", data={**form, "pin": SECOND_PIN}).status_code == 423

    ok = _form(doc, "/inbox/signing-pin/unblock", puk=puk, pin=SECOND_PIN, confirm=SECOND_PIN)
    assert ok.status_code == 302, ok.get_data(as_text=True)[:500]
    assert sign(doc, pending, pin=SECOND_PIN).status_code == 302
    assert state_of(svc, pending) != RequestState.PENDING
    with svc.sessions() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.actor_id == world.doc)).all()
    assert "credential.unblock_failed" in actions and "credential.unblocked" in actions


def test_unblock_needs_a_second_factor_and_a_blocked_key(app, svc, world):
    doc = app.test_client()  # password only (no second factor in these settings)
    login(doc, "doc")
    resp = _form(doc, "/inbox/signing-pin/unblock", puk="1234-5678-9012-3456",
                 pin=SECOND_PIN, confirm=SECOND_PIN)
    assert resp.status_code == 403
    with svc.sessions() as s:
        assert creds.active_credential(s, world.doc).blocked_at is None
    assert PASSWORD not in resp.get_data(as_text=True)
