"""Recovery codes (single use, shown once, a regenerated set replaces the old one) and
the step-up before signing (a second factor within SIGNFLOW_STEP_UP_MINUTES), over
HTTP through the real pages, with real TOTP codes (pyotp) and real signatures."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pikepdf
import pyotp
import pytest
from sqlalchemy import select

from signflow.core.accounts import recovery
from signflow.models import AuditEntry, RecoveryCode, RequestState, SignatureRequest
from tests.conftest import PIN, T0, Clock, csrf_token, login
from tests.helpers import (
    HIDDEN,
    enrol_totp,
    new_recovery_codes,
    new_request,
    password_step,
    recovery_step,
    sign,
)


@pytest.fixture
def clock() -> Clock:
    """Started in the past: these tests move it by step-up windows before signing, and
    pyHanko checks certificates and CRLs against the wall clock, which must stay ahead."""
    return Clock(T0 - timedelta(minutes=45))


def _actions(svc, user_id):
    with svc.sessions() as s:
        return list(s.scalars(select(AuditEntry.action).where(AuditEntry.actor_id == user_id)
                              .order_by(AuditEntry.seq)))


def _doc_with_totp(app, clock):
    doc = app.test_client()
    login(doc, "doc")
    return doc, enrol_totp(doc, clock())


# --------------------------------------------------------------------------- recovery codes

def test_a_recovery_code_works_once_and_a_reuse_is_refused_clearly(app, svc, world, clock):
    doc, _secret = _doc_with_totp(app, clock)
    codes = new_recovery_codes(doc)
    assert len(set(codes)) == 10
    with svc.sessions() as s:
        stored = s.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == world.doc)).all()
    # Keyed hashes only: no code (in any spelling) is in the table.
    assert len(stored) == 10 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in stored)
    assert not {recovery.normalise(c) for c in codes} & set(stored)
    # Shown once: the page afterwards tells how many are left, never the codes.
    page = doc.get("/account/recovery-codes").get_data(as_text=True)
    assert codes[0] not in page and "10 of 10" in page

    lost_phone = app.test_client()
    assert password_step(lost_phone, "doc").headers["Location"].endswith("/login/code")
    assert "recovery code" in lost_phone.get("/login/code").get_data(as_text=True).lower()
    # Typed off paper: lower case and without the dash is the same code.
    resp = recovery_step(lost_phone, codes[0].lower().replace("-", " "))
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    assert lost_phone.get("/inbox/").status_code == 200

    again = app.test_client()
    password_step(again, "doc")
    reused = recovery_step(again, codes[0])
    assert reused.status_code == 401
    assert "already used" in reused.get_data(as_text=True)
    assert again.get("/inbox/").status_code == 302  # not logged in
    wrong = recovery_step(again, "ABCDE-FGHJK")
    assert wrong.status_code == 401 and "Wrong recovery code" in wrong.get_data(as_text=True)
    # The next code of the list still works.
    assert recovery_step(again, codes[1]).status_code == 302

    actions = _actions(svc, world.doc)
    assert actions.count("recovery_codes.generated") == 1
    assert actions.count("recovery_code.used") == 2
    assert actions.count("recovery_code.refused") == 1
    with svc.sessions() as s:
        used = s.scalars(select(AuditEntry).where(AuditEntry.action == "recovery_code.used")
                         .order_by(AuditEntry.seq)).all()
    assert [json.loads(e.line)["remaining"] for e in used] == [9, 8]


def test_regenerating_invalidates_the_old_set(app, svc, world, clock):
    doc, _secret = _doc_with_totp(app, clock)
    old = new_recovery_codes(doc)
    new = new_recovery_codes(doc)
    assert not set(old) & set(new)
    with svc.sessions() as s:
        assert s.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == world.doc)
                        .order_by(RecoveryCode.id)) is not None
        assert len(s.scalars(select(RecoveryCode).where(RecoveryCode.user_id == world.doc)).all()) == 10
    client = app.test_client()
    password_step(client, "doc")
    assert recovery_step(client, old[0]).status_code == 401
    assert recovery_step(client, new[0]).status_code == 302
    with svc.sessions() as s:
        generated = s.scalars(select(AuditEntry).where(
            AuditEntry.action == "recovery_codes.generated")).all()
    assert [json.loads(e.line)["replaced"] for e in generated] == [0, 10]


def test_a_recovery_code_is_no_second_factor_for_someone_without_one(app, world):
    # Codes alone (no TOTP, no passkey): the password logs in and no code is asked.
    doc = app.test_client()
    login(doc, "doc")
    new_recovery_codes(doc)
    other = app.test_client()
    assert password_step(other, "doc").headers["Location"].endswith("/")


# --------------------------------------------------------------------------- step-up

def _tap_stamp(tech, rid):
    token = csrf_token(tech, f"/requests/{rid}")
    resp = tech.post(f"/requests/{rid}/stamp", data={"csrf_token": token, "page": "1",
                                                      "fx": "0.25", "fy": "0.7"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]


def _hidden(page: str) -> dict[str, str]:
    return dict(HIDDEN.findall(page))


def _signature_rects(pdf: bytes) -> list[list[float]]:
    found = []
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        for page in doc.pages:
            for annot in page.obj.get("/Annots", []):
                rect = [float(v) for v in annot.Rect]
                if annot.get("/FT") == "/Sig" and rect[2] > rect[0]:
                    found.append(rect)
    return found


def test_a_stale_second_factor_asks_again_on_the_sign_page_then_totp_signs(app, svc, world, clock):
    doc, secret = _doc_with_totp(app, clock)
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    _tap_stamp(tech, rid)
    with svc.sessions() as s:
        position = s.get(SignatureRequest, rid).stamp_position
    assert position

    clock.advance(minutes=16)  # SIGNFLOW_STEP_UP_MINUTES is 15 by default
    review = doc.get(f"/inbox/{rid}").get_data(as_text=True)
    assert 'name="step_up_code"' in review  # asked up front, on the same form
    shown = _hidden(review)

    refused = doc.post(f"/inbox/{rid}/sign", data={**shown, "pin": PIN})
    body = refused.get_data(as_text=True)
    assert refused.status_code == 401
    # The same page, the same document, the sign panel with the step-up field.
    assert 'id="sign"' in body and 'name="step_up_code"' in body and "Confirm it is you" in body
    kept = _hidden(body)
    assert kept["document_sha256"] == shown["document_sha256"]
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).state == RequestState.PENDING

    wrong = doc.post(f"/inbox/{rid}/sign", data={**kept, "pin": PIN, "step_up_code": "000000"})
    assert wrong.status_code == 401
    assert "Wrong or already used code" in wrong.get_data(as_text=True)
    kept = _hidden(wrong.get_data(as_text=True))

    code = pyotp.TOTP(secret).at(clock())
    resp = doc.post(f"/inbox/{rid}/sign", data={**kept, "pin": PIN, "step_up_code": code})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.state != RequestState.PENDING and req.signed_by_id == world.doc
        assert req.stamp_position == position
        signed = svc.deps.blobs.get(s, req.signed_sha256)
    _page, *box = position.split(",")
    rects = _signature_rects(signed)
    # The stamp the technician placed (pyHanko writes whole points).
    assert len(rects) == 1 and rects[0] == pytest.approx([float(v) for v in box], abs=1)
    actions = _actions(svc, world.doc)
    assert actions.count("step_up.required") == 1
    assert actions.count("step_up.failed") == 1
    assert actions.count("step_up.succeeded") == 1
    assert actions.index("step_up.succeeded") < actions.index("request.signed")

    # The factor just confirmed is fresh: the next signature goes straight through...
    rid2 = new_request(tech, world)
    clock.advance(minutes=10)
    assert sign(doc, rid2).status_code == 302
    # ...until it is stale again.
    rid3 = new_request(tech, world)
    clock.advance(minutes=6)
    assert sign(doc, rid3).status_code == 401


def test_a_code_used_at_login_is_fresh_for_signing(app, svc, world, clock):
    _doc, secret = _doc_with_totp(app, clock)
    clock.advance(seconds=60)
    doc = app.test_client()
    assert password_step(doc, "doc").headers["Location"].endswith("/login/code")
    token = csrf_token(doc, "/login/code")
    assert doc.post("/login/code", data={"csrf_token": token,
                                         "code": pyotp.TOTP(secret).at(clock())}).status_code == 302
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    clock.advance(minutes=14)
    assert sign(doc, rid).status_code == 302
    assert "step_up.required" not in _actions(svc, world.doc)


def test_a_recovery_code_login_is_not_a_fresh_factor_for_signing(app, svc, world, clock):
    enrolled, secret = _doc_with_totp(app, clock)
    codes = new_recovery_codes(enrolled)
    clock.advance(seconds=60)
    doc = app.test_client()
    password_step(doc, "doc")
    assert recovery_step(doc, codes[0]).status_code == 302
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    resp = sign(doc, rid)
    assert resp.status_code == 401 and 'name="step_up_code"' in resp.get_data(as_text=True)
    # A recovery code is refused in the TOTP field too (it is not six digits).
    kept = _hidden(resp.get_data(as_text=True))
    assert doc.post(f"/inbox/{rid}/sign", data={**kept, "pin": PIN,
                                                "step_up_code": codes[1]}).status_code == 400


def test_a_physician_without_a_second_factor_is_not_asked(app, svc, world, clock):
    # mfa_roles is empty in these settings and doc enrolled nothing: password and PIN,
    # as before (with mfa required for physicians, the guard sends them to enrol first).
    doc, tech = app.test_client(), app.test_client()
    login(doc, "doc")
    login(tech, "tech")
    rid = new_request(tech, world)
    clock.advance(minutes=20)
    assert 'name="step_up_code"' not in doc.get(f"/inbox/{rid}").get_data(as_text=True)
    assert sign(doc, rid).status_code == 302
    assert "step_up.required" not in _actions(svc, world.doc)


def test_adding_a_passkey_takes_a_fresh_factor_once_one_is_enrolled(app, svc, world, clock):
    # A stolen session must not add its own passkey and so pass the step-up.
    doc, secret = _doc_with_totp(app, clock)
    token = csrf_token(doc, "/account/passkeys")
    assert doc.post("/account/passkeys/options", data={"csrf_token": token}).status_code == 200
    clock.advance(minutes=16)
    stale = doc.post("/account/passkeys/options", data={"csrf_token": token})
    assert stale.status_code == 403 and "confirm it is you" in stale.get_data(as_text=True)
    # A recovery code just used (the lost phone) lets the owner add one at once.
    codes = new_recovery_codes(doc)
    clock.advance(seconds=60)
    lost = app.test_client()
    password_step(lost, "doc")
    assert recovery_step(lost, codes[0]).status_code == 302
    token = csrf_token(lost, "/account/passkeys")
    options = lost.post("/account/passkeys/options", data={"csrf_token": token})
    assert options.status_code == 200 and options.json["rp"]["id"] == "127.0.0.1"
    assert options.json["authenticatorSelection"]["userVerification"] == "required"
    assert secret  # the TOTP seed stays enrolled meanwhile
