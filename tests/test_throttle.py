"""Login throttling never locks the owner out (issue 10, point 1): failures count
per (account, address) and per address, a known device is exempt, and an unknown
name is answered exactly like a real one."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from signflow.models import AuditEntry
from tests.conftest import PASSWORD, Clock, World, csrf_token

ATTACKER = "203.0.113.9"
HOME = "10.20.0.7"
ELSEWHERE = "198.51.100.23"


def _from(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _try(client: FlaskClient, username: str, password: str):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})


def _attack_for_an_hour(attacker: FlaskClient, username: str, clock: Clock) -> list[int]:
    """Wrong passwords as fast as the site lets them through, for a simulated hour."""
    end = clock() + timedelta(hours=1)
    statuses = []
    while clock() < end:
        resp = _try(attacker, username, "not the password at all")
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            clock.advance(seconds=int(resp.headers["Retry-After"]))
        else:
            assert resp.status_code == 401
            clock.advance(seconds=1)
    return statuses


def test_an_hour_of_wrong_passwords_does_not_lock_the_owner_out(app: Flask, world: World,
                                                              clock: Clock) -> None:
    owner = _from(app, HOME)
    assert _try(owner, "doc", PASSWORD).status_code == 302  # a full login: a known device
    owner.post("/logout", data={"csrf_token": csrf_token(owner, "/inbox/")})

    attacker = _from(app, ATTACKER)
    statuses = _attack_for_an_hour(attacker, "doc", clock)
    tries = statuses.count(401)
    assert 5 <= tries < 40  # the attacker is slowed down...
    assert 429 in statuses
    # ...and, one more wrong guess later, locked out even with the right password.
    assert _try(attacker, "doc", "one more guess").status_code in (401, 429)
    assert _try(attacker, "doc", PASSWORD).status_code == 429

    # The owner's known device, even behind the attacker's address (a shared NAT).
    owner.environ_base["REMOTE_ADDR"] = ATTACKER
    resp = _try(owner, "doc", PASSWORD)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    assert owner.get("/inbox/").status_code == 200
    # A new browser from another address.
    fresh = _from(app, ELSEWHERE)
    assert _try(fresh, "doc", PASSWORD).status_code == 302
    assert fresh.get("/inbox/").status_code == 200


def test_a_forged_or_foreign_device_cookie_exempts_nothing(app: Flask, world: World,
                                                           clock: Clock) -> None:
    tech = _from(app, ATTACKER)
    assert _try(tech, "tech", PASSWORD).status_code == 302  # a device cookie for "tech" only
    cookie = tech.get_cookie("signflow_device", path="/login")
    assert cookie is not None and cookie.value.startswith("tech:")
    _name, nonce, _sig = cookie.value.split(":")
    forged = _from(app, ATTACKER)
    forged.set_cookie("signflow_device", f"doc:{nonce}:{'0' * 64}", path="/login")
    for client in (tech, forged):
        statuses = [_try(client, "doc", "wrong password").status_code for _ in range(6)]
        assert statuses[-1] == 429
        clock.advance(minutes=10)


def test_unknown_and_known_names_get_the_same_answers(app: Flask, world: World) -> None:
    answers = {}
    for name in ("doc", "dr.nobody"):
        client = _from(app, f"192.0.2.{len(answers) + 1}")
        seen = []
        for _ in range(7):
            resp = _try(client, name, "wrong password")
            seen.append((resp.status_code, resp.headers.get("Retry-After"),
                         resp.get_data(as_text=True)))
        answers[name] = seen
    assert answers["doc"] == answers["dr.nobody"]
    assert [status for status, _, _ in answers["doc"]] == [401] * 5 + [429] * 2


def test_a_failed_login_keeps_a_typed_name_only_when_it_is_an_account(app, svc, world) -> None:
    client = _from(app, ATTACKER)
    assert _try(client, "Correct.Horse-2024", "whatever").status_code == 401  # a password typed as name
    assert _try(client, "tech", "wrong password").status_code == 401
    with svc.sessions() as s:
        lines = s.scalars(select(AuditEntry.line).where(AuditEntry.action == "login.failed")).all()
    assert len(lines) == 2
    assert not any("correct.horse" in line.lower() for line in lines)
    assert any('"unknown:' in line for line in lines) and any('"tech"' in line for line in lines)
