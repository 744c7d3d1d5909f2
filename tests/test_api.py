"""The bearer-token JSON API under /api/v1 (integration accounts' tokens), and its
OpenAPI description. Scopes, expiry, human tokens and the audit of every call:
test_api_tokens.py."""

from __future__ import annotations

import hashlib
import re

from openapi_spec_validator import validate
from sqlalchemy import select

from signflow.core.accounts import tokens
from signflow.core.accounts import users as accounts
from signflow.core.pades import validate as validation
from signflow.models import ApiToken, AuditEntry, RequestState, User
from tests.conftest import TEST_ACTOR, login
from tests.factories import count, integration_token, state_of
from tests.helpers import new_request

RECEIVER = ("read", "download", "acknowledge")


def issue_token(svc, world, destination: str = "destination") -> tokens.IssuedToken:
    """A token of the receiving system of `world.<destination>` (every receiving scope)."""
    dest = getattr(world, destination)
    return integration_token(svc, name=f"his-{dest}", destination_id=dest, scopes=RECEIVER)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(resp, status: int) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/problem+json"
    body = resp.json
    assert body["status"] == status and body["title"] and body["detail"]


def test_recipient_reads_verifies_downloads_and_acknowledges(app, svc, world, clock, delivered):
    rid, tech = delivered
    pending = new_request(tech, world, title="Not signed yet")
    api = app.test_client()
    auth = bearer(issue_token(svc, world).token)

    listing = api.get("/api/v1/requests", headers=auth)
    assert listing.status_code == 200
    ids = [item["id"] for item in listing.json["items"]]
    assert ids == [rid]  # the pending request is not the destination's business yet

    one = api.get(f"/api/v1/requests/{rid}", headers=auth)
    assert one.status_code == 200
    assert one.json["state"] == RequestState.DELIVERED
    assert one.json["signed_by"] == "Dr Hélène Lefèvre"
    assert re.fullmatch(r"[0-9a-f]{64}", one.json["signed_sha256"])
    assert api.get(f"/api/v1/requests/{pending}", headers=auth).status_code == 404

    report = api.get(f"/api/v1/requests/{rid}/verification", headers=auth)
    assert report.status_code == 200
    assert report.json["ok"] is True
    assert report.json["signatures"][0]["signer"].endswith("Lefèvre")

    downloads = count(svc, AuditEntry, AuditEntry.action == "document.downloaded")
    document = api.get(f"/api/v1/requests/{rid}/document", headers=auth)
    assert document.status_code == 200 and document.mimetype == "application/pdf"
    assert document.headers["Content-Disposition"].startswith("attachment;")
    digest = hashlib.sha256(document.data).hexdigest()
    assert document.headers["Digest"] == f"sha-256={digest}" and digest == one.json["signed_sha256"]
    assert validation.validate_pdf(document.data, trust_roots=[svc.keys.root_cert]).ok
    assert count(svc, AuditEntry, AuditEntry.action == "document.downloaded") == downloads + 1

    first = api.post(f"/api/v1/requests/{rid}/acknowledge", headers=auth)
    assert first.status_code == 200 and first.json["state"] == RequestState.RECEIVED
    assert first.json["acknowledged_at"]
    again = api.post(f"/api/v1/requests/{rid}/acknowledge", headers=auth)
    assert again.status_code == 200 and again.json == first.json
    assert count(svc, AuditEntry, AuditEntry.action == "request.received") == 1
    assert state_of(svc, rid) == RequestState.RECEIVED
    # Nothing to acknowledge on a request that was never delivered (and it stays hidden).
    assert_problem(api.post(f"/api/v1/requests/{pending}/acknowledge", headers=auth), 404)
    assert state_of(svc, pending) == RequestState.PENDING
    # The technician sees the receipt through the web UI.
    assert "received" in tech.get(f"/requests/{rid}").get_data(as_text=True)

    with svc.sessions() as s:
        row = s.scalar(select(ApiToken).join(User).where(User.destination_id == world.destination,
                                                         User.role == "integration"))
        assert row.last_used_at is not None


def test_missing_bad_and_revoked_tokens_are_401(app, svc, world, clock, delivered):
    rid, _tech = delivered
    issued = issue_token(svc, world)
    api = app.test_client()
    paths = [
        ("get", "/api/v1/requests"),
        ("get", f"/api/v1/requests/{rid}"),
        ("get", f"/api/v1/requests/{rid}/verification"),
        ("get", f"/api/v1/requests/{rid}/document"),
        ("get", f"/api/v1/requests/{rid}/timeline"),
        ("get", f"/api/v1/requests/{rid}/fhir"),
        ("post", f"/api/v1/requests/{rid}/acknowledge"),
        ("post", "/api/v1/requests"),
    ]
    tampered = issued.token[:-2] + ("AA" if not issued.token.endswith("AA") else "BB")
    bad_headers = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer sfat_not-a-real-token"},
        {"Authorization": f"Bearer {tampered}"},
        {"Authorization": f"Basic {issued.token}"},
        {"Authorization": issued.token},
    ]
    audit_before = count(svc, AuditEntry)
    for method, path in paths:
        for headers in bad_headers:
            resp = getattr(api, method)(path, headers=headers)
            assert_problem(resp, 401)
            assert resp.json["detail"] == "A valid bearer token is required."
            assert issued.token not in resp.get_data(as_text=True)
    assert count(svc, AuditEntry) == audit_before
    # A browser session is no substitute for a token.
    login(api, "recipient")
    assert_problem(api.get("/api/v1/requests"), 401)

    fresh = app.test_client()
    assert fresh.get("/api/v1/requests", headers=bearer(issued.token)).status_code == 200
    with svc.sessions() as s, s.begin():
        tokens.revoke_api_token(s, actor=TEST_ACTOR, token_id=issued.token_id, now=clock())
    for method, path in paths:
        assert_problem(getattr(fresh, method)(path, headers=bearer(issued.token)), 401)
    assert state_of(svc, rid) == RequestState.DELIVERED

    # A disabled account's token dies with the account.
    other = issue_token(svc, world)
    with svc.sessions() as s, s.begin():
        owner = s.scalar(select(ApiToken).where(ApiToken.id == other.token_id)).user_id
        accounts.set_user_active(s, actor=TEST_ACTOR, user_id=owner, active=False, now=clock())
    assert_problem(fresh.get("/api/v1/requests", headers=bearer(other.token)), 401)


def test_other_destination_and_other_roles_see_nothing(app, svc, world, clock, delivered):
    rid, _tech = delivered
    api = app.test_client()
    auth = bearer(issue_token(svc, world, "other_destination").token)
    # Only the calls themselves are recorded (api_token.used), nothing else.
    audit_before = count(svc, AuditEntry, AuditEntry.action != "api_token.used")
    assert api.get("/api/v1/requests", headers=auth).json == {"items": [], "next_cursor": None}
    for method, path in (
        ("get", f"/api/v1/requests/{rid}"),
        ("get", f"/api/v1/requests/{rid}/verification"),
        ("get", f"/api/v1/requests/{rid}/document"),
        ("post", f"/api/v1/requests/{rid}/acknowledge"),
        ("get", "/api/v1/requests/999999"),
    ):
        resp = getattr(api, method)(path, headers=auth)
        assert_problem(resp, 404)
        assert resp.json["detail"] == "No such request, or it is not yours to see."
    assert state_of(svc, rid) == RequestState.DELIVERED
    assert count(svc, AuditEntry, AuditEntry.action != "api_token.used") == audit_before

    # A submitting system sees what it sent, nothing it did not.
    sender = bearer(integration_token(svc, name="lab", group_id=world.group,
                                      scopes=("read", "download")).token)
    assert api.get("/api/v1/requests", headers=sender).json == {"items": [], "next_cursor": None}
    assert_problem(api.get(f"/api/v1/requests/{rid}", headers=sender), 404)
    assert_problem(api.get(f"/api/v1/requests/{rid}/document", headers=sender), 404)
    assert state_of(svc, rid) == RequestState.DELIVERED


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule.removeprefix("/api/v1"))


def test_openapi_is_valid_and_documents_every_route(app):
    resp = app.test_client().get("/api/v1/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    spec = resp.json
    assert spec["openapi"] == "3.1.0"
    validate(spec)
    assert spec["servers"] == [{"url": "/api/v1"}]
    served = {
        (_openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and rule.rule != "/api/v1/openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert len(served) >= 5
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert served - documented == set()
    assert documented - served == set()
    # Every operation declares the 401 it gets without a token.
    for path, method in served:
        assert "401" in spec["paths"][path][method]["responses"], (path, method)
