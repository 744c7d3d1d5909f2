"""TOTP second factor for the roles that require it."""

from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import select

from signflow.models import AuditEntry, User
from tests.conftest import PASSWORD, csrf_token
from tests.helpers import app_requiring_mfa


@pytest.fixture
def mfa_app(svc, settings):
    return app_requiring_mfa(svc, settings, roles="physician,admin,auditor")


def _password(client, username):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": PASSWORD,
                                       "csrf_token": token})


def _code(client, code):
    token = csrf_token(client, "/login/code")
    return client.post("/login/code", data={"code": code, "csrf_token": token})


def _enrol(client, clock):
    page = client.get("/account/two-factor").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    resp = client.post("/account/two-factor", data={
        "csrf_token": token, "code": pyotp.TOTP(secret).at(clock())})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    return secret


def test_required_role_must_enrol_then_uses_the_code(mfa_app, svc, world, clock):
    client = mfa_app.test_client()
    assert _password(client, "doc").status_code == 302
    # Logged in with a password only: every page sends the physician to enrolment.
    assert client.get("/inbox/").headers["Location"].endswith("/account/two-factor")
    secret = _enrol(client, clock)
    assert client.get("/inbox/").status_code == 200

    with svc.sessions() as s:
        stored = s.get(User, world.doc).totp_secret_enc
    assert stored is not None and secret.encode() not in stored  # sealed, not in clear

    clock.advance(seconds=60)
    fresh = mfa_app.test_client()
    resp = _password(fresh, "doc")
    assert resp.headers["Location"].endswith("/login/code")
    assert fresh.get("/inbox/").status_code == 302  # not logged in before the code
    assert _code(fresh, "000000").status_code == 401
    good = pyotp.TOTP(secret).at(clock())
    assert _code(fresh, good).status_code == 302
    assert fresh.get("/inbox/").status_code == 200

    # The same code cannot be used twice.
    replay = mfa_app.test_client()
    _password(replay, "doc")
    assert _code(replay, good).status_code == 401

    with svc.sessions() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.actor_id == world.doc)).all()
    assert "mfa.enabled" in actions and "login.second_factor_failed" in actions
    assert "login.password_accepted" in actions and "login.succeeded" in actions


def test_technician_needs_no_second_factor(mfa_app, world):
    client = mfa_app.test_client()
    _password(client, "tech")
    assert client.get("/requests/").status_code == 200


def test_code_throttled_after_repeated_failures(mfa_app, svc, world, clock):
    client = mfa_app.test_client()
    _password(client, "auditor")
    _enrol(client, clock)
    clock.advance(seconds=60)
    attacker = mfa_app.test_client()
    _password(attacker, "auditor")
    statuses = [_code(attacker, f"{n:06d}").status_code for n in range(7)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]


def test_pending_second_factor_expires(mfa_app, svc, world, clock):
    client = mfa_app.test_client()
    _password(client, "admin")
    secret = _enrol(client, clock)
    clock.advance(seconds=60)
    late = mfa_app.test_client()
    _password(late, "admin")
    clock.advance(minutes=6)
    resp = late.get("/login/code")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    assert pyotp.TOTP(secret).now()  # the secret itself is a valid base32 seed
