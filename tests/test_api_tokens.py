"""API tokens belong to integration accounts: scopes, expiry, binding to one destination
or one submitting group, one audit entry per call; people's tokens are refused (and
the migration revokes those that exist)."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text

from signflow.core.accounts import tokens
from signflow.core.errors import InvalidInput
from signflow.migrate import alembic_config, upgrade
from signflow.models import ApiToken, AuditEntry, RequestState, SignatureRequest, User
from tests.conftest import TEST_ACTOR, csrf_token, login
from tests.factories import count, integration_token, state_of
from tests.pdfs import make_pdf

RECEIVER = ("read", "download", "acknowledge")
REFUSED = "A valid bearer token is required."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def uses(svc, outcome: str | None = None) -> list[dict]:
    """The details of every api_token.used entry (optionally with this outcome)."""
    with svc.sessions() as s:
        lines = s.scalars(select(AuditEntry.line).where(AuditEntry.action == "api_token.used")
                          .order_by(AuditEntry.seq)).all()
    found = [json.loads(line) for line in lines]
    return [f for f in found if outcome is None or f["outcome"] == outcome]


def test_people_get_no_tokens_and_their_old_tokens_are_refused(app, svc, world, clock, delivered):
    rid, _tech = delivered
    for person in (world.recipient, world.auditor, world.admin, world.tech):
        with svc.sessions() as s, s.begin(), pytest.raises(InvalidInput, match="integration accounts"):
            tokens.create_api_token(s, actor=TEST_ACTOR, user=s.get(User, person), name="x",
                                    scopes=["read"], now=clock())
    # A token a person held before (as release 0.1 issued them), even with scopes and
    # a future expiry, is refused exactly like an unknown one.
    legacy = tokens.TOKEN_PREFIX + "legacy-recipient-token-0123456789abcdef"
    with svc.sessions() as s, s.begin():
        s.add(ApiToken(user_id=world.recipient, name="old", token_hash=tokens.token_digest(legacy),
                       scopes="read download acknowledge", created_at=clock(),
                       expires_at=clock() + timedelta(days=30)))
    api = app.test_client()
    for path in ("/api/v1/requests", f"/api/v1/requests/{rid}/document"):
        old = api.get(path, headers=bearer(legacy))
        unknown = api.get(path, headers=bearer(tokens.TOKEN_PREFIX + "never-issued"))
        assert old.status_code == unknown.status_code == 401
        assert old.json == unknown.json and old.json["detail"] == REFUSED
    assert_refused = uses(svc, "refused:not_integration")
    assert len(assert_refused) == 2 and assert_refused[0]["actor"]["name"] == "recipient"
    # An integration account never logs in to the web pages either.
    integration_token(svc, name="his", destination_id=world.destination, scopes=RECEIVER)
    web = app.test_client()
    resp = web.post("/login", data={"username": "his", "password": "anything at all",
                                    "csrf_token": csrf_token(web, "/login")})
    assert resp.status_code == 401 and web.get("/received/").status_code == 302


def test_a_web_admin_cannot_create_an_integration_account(app, svc, world):
    admin = app.test_client()
    login(admin, "admin")
    resp = admin.post("/admin/users", data={
        "username": "sneaky", "display_name": "Sneaky", "role": "integration",
        "password": "a long enough passphrase", "destination": str(world.destination),
        "csrf_token": csrf_token(admin, "/admin/users")})
    assert resp.status_code == 403
    assert "signflow command" in resp.get_data(as_text=True)
    with svc.sessions() as s:
        assert s.scalar(select(User).where(User.username == "sneaky")) is None


def test_missing_scope_is_403_and_changes_nothing(app, svc, world, delivered):
    rid, _tech = delivered
    read_only = integration_token(svc, name="his", destination_id=world.destination, scopes=("read",))
    api = app.test_client()
    assert api.get(f"/api/v1/requests/{rid}", headers=bearer(read_only.token)).status_code == 200
    downloads = count(svc, AuditEntry, AuditEntry.action == "document.downloaded")
    for method, path, scope in (("get", f"/api/v1/requests/{rid}/document", "download"),
                                ("post", f"/api/v1/requests/{rid}/acknowledge", "acknowledge"),
                                ("post", "/api/v1/requests", "submit")):
        resp = getattr(api, method)(path, headers=bearer(read_only.token))
        assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
        assert resp.json["detail"] == f"This token does not carry the '{scope}' scope."
        assert "insufficient_scope" in resp.headers["WWW-Authenticate"]
    assert state_of(svc, rid) == RequestState.DELIVERED
    assert count(svc, AuditEntry, AuditEntry.action == "document.downloaded") == downloads
    assert len(uses(svc, "refused:insufficient-scope")) == 3
    # A binding bounds the scopes a token can be given at all.
    with pytest.raises(InvalidInput, match="submit"):
        integration_token(svc, name="his", scopes=("submit",))
    with pytest.raises(InvalidInput, match="acknowledge"):
        integration_token(svc, name="lab", group_id=world.group, scopes=("acknowledge",))
    with pytest.raises(InvalidInput, match="Unknown scope"):
        integration_token(svc, name="his", scopes=("admin",))


def test_expired_token_is_401_like_an_unknown_one(app, svc, world, clock, delivered):
    rid, _tech = delivered
    short = integration_token(svc, name="his", destination_id=world.destination, scopes=RECEIVER,
                              days=1)
    default = integration_token(svc, name="his", scopes=RECEIVER)
    with svc.sessions() as s:
        assert s.get(ApiToken, default.token_id).expires_at == clock() + timedelta(days=90)
    api = app.test_client()
    assert api.get("/api/v1/requests", headers=bearer(short.token)).status_code == 200
    clock.advance(days=1)
    expired = api.post(f"/api/v1/requests/{rid}/acknowledge", headers=bearer(short.token))
    assert expired.status_code == 401 and expired.json["detail"] == REFUSED
    assert state_of(svc, rid) == RequestState.DELIVERED
    assert len(uses(svc, "refused:expired")) == 1
    clock.advance(days=89, seconds=-1)
    assert api.get("/api/v1/requests", headers=bearer(default.token)).status_code == 200
    clock.advance(seconds=1)
    assert api.get("/api/v1/requests", headers=bearer(default.token)).status_code == 401


def test_a_destination_token_never_sees_another_destination(app, svc, world, delivered):
    rid, _tech = delivered
    cardio = integration_token(svc, name="cardio-his", destination_id=world.other_destination,
                               scopes=RECEIVER)
    api = app.test_client()
    listing = api.get("/api/v1/requests", headers=bearer(cardio.token)).json
    assert listing == {"items": [], "next_cursor": None}
    for method, suffix in (("get", ""), ("get", "/verification"), ("get", "/document"),
                           ("post", "/acknowledge")):
        resp = getattr(api, method)(f"/api/v1/requests/{rid}{suffix}", headers=bearer(cardio.token))
        assert resp.status_code == 404
        assert resp.json["detail"] == "No such request, or it is not yours to see."
    assert state_of(svc, rid) == RequestState.DELIVERED
    # The right destination's token does see it.
    his = integration_token(svc, name="his", destination_id=world.destination, scopes=RECEIVER)
    assert [i["id"] for i in api.get("/api/v1/requests", headers=bearer(his.token)).json["items"]] == [rid]


def test_every_call_is_audited_once_with_its_outcome(app, svc, world, delivered):
    rid, _tech = delivered
    his = integration_token(svc, name="his", destination_id=world.destination, scopes=RECEIVER)
    api = app.test_client()
    before = len(uses(svc))
    calls = [("get", "/api/v1/requests", 200), ("get", f"/api/v1/requests/{rid}", 200),
             ("get", f"/api/v1/requests/{rid}/document", 200),
             ("post", f"/api/v1/requests/{rid}/acknowledge", 200),
             ("get", "/api/v1/requests/987654", 404)]
    for method, path, status in calls:
        assert getattr(api, method)(path, headers=bearer(his.token)).status_code == status
    entries = uses(svc)[before:]
    assert [(e["call"], e["outcome"]) for e in entries] == [
        (f"{m.upper()} {p}", "ok" if st == 200 else "refused:not-found") for m, p, st in calls]
    assert {e["token"] for e in entries} == {his.token_id}
    assert all(e["actor"]["name"] == "his" and e["actor"]["role"] == "integration" for e in entries)
    # The token itself is never written down.
    with svc.sessions() as s:
        assert not any(his.token in line for line in s.scalars(select(AuditEntry.line)))
        assert s.get(ApiToken, his.token_id).last_used_at is not None


def test_a_submitting_system_sends_to_its_own_group_only(app, svc, world):
    lab = integration_token(svc, name="lab", group_id=world.group, scopes=("submit", "read"))
    api = app.test_client()

    def submit(group: int, **extra: str):
        form = {"document": (io.BytesIO(make_pdf(1, "Lab result")), "result.pdf"),
                "group": str(group), "destination": str(world.destination), "urgency": "urgent",
                "title": "Lab result", **extra}
        return api.post("/api/v1/requests", data=form, headers=bearer(lab.token),
                        content_type="multipart/form-data")

    made = submit(world.group)
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.json["state"] == RequestState.PENDING and made.json["group"] == "Anaesthesia on call"
    with svc.sessions() as s:
        req = s.get(SignatureRequest, made.json["id"])
        assert req.technician.username == "lab"
    listed = api.get("/api/v1/requests", headers=bearer(lab.token)).json["items"]
    assert [i["id"] for i in listed] == [made.json["id"]]
    # The physician on call sees it in the inbox like any other request.
    doc = app.test_client()
    login(doc, "doc")
    assert "Lab result" in doc.get("/inbox/").get_data(as_text=True)

    requests_before = count(svc, SignatureRequest)
    other = submit(world.other_group)
    assert other.status_code == 403 and "its own on-call group" in other.json["detail"]
    assert submit(world.group, urgency="whenever").status_code == 400
    assert count(svc, SignatureRequest) == requests_before
    assert len(uses(svc, "refused:forbidden")) == 1


def test_the_migration_revokes_every_token_people_held(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0003")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, username, display_name, role, password_hash, active, "
                "failed_logins, session_version, created_at) VALUES "
                "(1, 'desk', 'Desk', 'recipient', 'x', 1, 0, 1, '2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) VALUES "
                "(1, 1, 'his', :h, '2026-01-01 00:00:00')"), {"h": "ab" * 32})
        upgrade(url)
        with engine.connect() as conn:
            revoked, expires, scopes = conn.execute(
                text("SELECT revoked_at, expires_at, scopes FROM api_tokens WHERE id = 1")).one()
        assert revoked is not None and expires is not None and scopes == ""
    finally:
        engine.dispose()
