"""Who may call what: every route for every role, then object-level (IDOR) denials."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from asn1crypto import tsp
from flask.testing import FlaskClient
from sqlalchemy import select

from signflow.core.accounts import contacts, four_eyes
from signflow.core.accounts import users as accounts
from signflow.core.audit.log import Actor
from signflow.core.integration import webhooks
from signflow.core.requests import events
from signflow.models import (
    AuditEntry,
    ContactChannel,
    RequestState,
    RotaShift,
    Signature,
    SignatureRequest,
    User,
)
from tests.conftest import PASSWORD, PIN, TEST_ACTOR, csrf_token, login
from tests.factories import count, state_of
from tests.helpers import delivered_request, new_request, pending_request_seen_by, sign_form

ROLES = ("anonymous", "technician", "physician", "recipient", "auditor", "admin", "manager")
ACCOUNT = {
    "technician": "tech",
    "physician": "doc",
    "recipient": "recipient",
    "auditor": "auditor",
    "admin": "admin",
    "manager": "manager",
}
PUBLIC = frozenset(ROLES)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    allowed: frozenset[str]
    ok: int
    # Form data for the allowed roles and those of `extra` (called with their client); others
    # only get a CSRF token.
    data: Callable[[FlaskClient], dict[str, Any]] | None = None
    # Status for every role, for public routes whose answer does not depend on the role.
    same_for_all: bool = False
    # Roles whose call is let through the role check but refused further (another's object).
    extra: dict[str, int] = field(default_factory=dict)


def _timestamp_query() -> bytes:
    return tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(b"signflow").digest(),
            },
            "cert_req": True,
        }
    ).dump()


def routes(main: int, cancel: int, decline: int, delegate: int, shift: int, world: Any,
           changes: tuple[int, int] = (0, 0), channel: int = 0,
           hook: tuple[int, int] = (0, 0)) -> list[Route]:
    tech, phys, recip, aud, adm, mgr = (
        frozenset({r}) for r in ("technician", "physician", "recipient", "auditor", "admin", "manager")
    )
    readers = frozenset({"technician", "physician", "recipient"})
    people = PUBLIC - {"anonymous"}
    # A contact channel is its owner's (the physician's): anyone else's account finds no such channel.
    not_theirs = {r: 404 for r in people - {"physician"}}

    def upload_data(_: FlaskClient) -> dict[str, Any]:
        import io

        from tests.pdfs import make_pdf

        return {
            "document": (io.BytesIO(make_pdf(1, "matrix")), "matrix.pdf"),
            "title": "matrix",
            "group": str(world.group),
            "destination": str(world.destination),
            "urgency": "routine",
        }

    def sign_data(client: FlaskClient) -> dict[str, Any]:
        return {**sign_form(client, main), "pin": PIN}

    return [
        Route("GET", "/", PUBLIC - {"anonymous"}, 302),
        Route("GET", "/login", PUBLIC, 200, same_for_all=True),
        Route("POST", "/login", PUBLIC, 200, same_for_all=True),  # empty form: shown again
        Route("GET", "/account/two-factor", PUBLIC - {"anonymous"}, 200),
        Route("POST", "/account/two-factor", PUBLIC - {"anonymous"}, 200),  # no code: shown again
        Route("GET", "/account/password", PUBLIC - {"anonymous"}, 200),
        Route("POST", "/account/password", PUBLIC - {"anonymous"}, 200),  # empty form: shown again
        Route("GET", "/account/language/", PUBLIC - {"anonymous"}, 200),
        Route("POST", "/account/language/", PUBLIC - {"anonymous"}, 302, lambda _: {"language": "en"}),
        Route("GET", "/account/contacts/", people, 200),
        Route("POST", "/account/contacts/", people, 302,
              lambda _: {"kind": "sms", "address": "06 12 34 56 78"}),
        Route("POST", f"/account/contacts/{channel}/verify", phys, 400, lambda _: {"code": "000000"},
              extra=not_theirs),
        Route("POST", f"/account/contacts/{channel}/code", phys, 302, extra=not_theirs),
        Route("POST", f"/account/contacts/{channel}/later", phys, 302, extra=not_theirs),
        Route("POST", f"/account/contacts/{channel}/earlier", phys, 302, extra=not_theirs),
        Route("POST", f"/account/contacts/{channel}/remove", phys, 302, extra=not_theirs),
        Route("GET", "/requests/", tech, 200),
        Route("GET", "/requests/status.json", tech, 200),
        Route("GET", "/requests/new", tech, 200),
        Route("POST", "/requests/new", tech, 302, upload_data),
        Route("GET", f"/requests/{main}", tech, 200),
        Route(
            "POST",
            f"/requests/{main}/stamp",
            tech,
            302,
            lambda _: {"page": "1", "fx": "0.5", "fy": "0.8"},
        ),
        Route("POST", f"/requests/{cancel}/cancel", tech, 302),
        Route("GET", "/inbox/", phys, 200),
        Route("GET", f"/inbox/{main}", phys, 200),
        Route("POST", f"/inbox/{main}/sign", phys, 302, sign_data),
        Route("POST", f"/inbox/{decline}/take", phys, 302),
        Route("POST", f"/inbox/{decline}/decline", phys, 302, lambda _: {"reason": "Wrong patient"}),
        Route("POST", f"/inbox/{delegate}/delegate", phys, 302, lambda _: {"to": str(world.backup)}),
        Route("GET", "/inbox/signing-pin", phys, 200),
        Route("POST", "/inbox/signing-pin", phys, 200),  # empty form: shown again
        Route("GET", "/inbox/signing-pin/unblock", phys, 200),
        Route("POST", "/inbox/signing-pin/code", phys, 302),
        Route("POST", "/inbox/signing-pin/unblock", phys, 200),  # empty form: shown again
        Route("GET", "/received/", recip, 200),
        Route("GET", f"/received/{main}", recip, 200),
        Route("POST", f"/received/{main}/acknowledge", recip, 302),
        Route("GET", f"/documents/{main}/pages/1.png", readers, 200),
        Route("GET", f"/documents/{main}/download", readers, 200),
        Route("GET", "/audit/", aud, 200),
        Route("GET", "/audit/verify", aud, 200),
        Route("GET", f"/audit/requests/{main}", aud, 200),
        Route(
            "GET",
            f"/audit/requests/{main}/evidence.pdf",
            frozenset({"technician", "recipient", "auditor"}),
            200,
        ),
        Route("POST", "/audit/export.zip", aud, 200),
        Route("POST", f"/admin/users/{world.head}/reset-mfa", adm, 302),
        Route("GET", "/admin/rota", adm, 200),
        Route("GET", "/admin/webhooks/", adm, 200),
        # Let through the role check, then refused: a loopback URL (private endpoints not allowed).
        Route("POST", "/admin/webhooks/", adm, 400, lambda _: {
            "kind": "webhook", "url": "http://127.0.0.1/hook", "scope": f"d:{world.destination}",
            "events": ["request.delivered"]}),
        Route("GET", f"/admin/webhooks/{hook[0]}", adm, 200),
        Route("POST", f"/admin/webhooks/{hook[0]}/test", adm, 302),
        Route("POST", f"/admin/webhooks/{hook[0]}/deliveries/{hook[1]}/replay", adm, 302),
        Route("POST", f"/admin/webhooks/{hook[0]}/off", adm, 302),
        Route("POST", "/admin/rota/groups", adm, 302, lambda _: {"group-name": "Nephrology on call"}),
        Route("POST", "/admin/rota/destinations", adm, 302, lambda _: {"dest-name": "Nephrology"}),
        Route(
            "POST",
            "/admin/rota/shifts",
            adm,
            302,
            lambda _: {
                "shift-group": str(world.group),
                "shift-physician": str(world.head),
                "shift-level": "1",
                "shift-starts_at": "2030-01-01T08:00",
                "shift-ends_at": "2030-01-01T20:00",
            },
        ),
        Route("POST", f"/admin/rota/shifts/{shift}/remove", adm, 302),
        Route("POST", "/admin/rota/policy", adm, 302, lambda _: {
            "policy-group": str(world.other_group), "policy-urgency": "routine",
            "policy-rung_minutes": "30, 30, 60", "policy-repeat_after": "10"}),
        Route("POST", "/admin/rota/import", adm, 302, lambda _: {
            "import-file": (__import__("io").BytesIO(
                b"group,physician,rung,start,end\n"
                b"Cardiology on call,head,backup,2030-02-01 08:00,2030-02-01 20:00\n"), "rota.csv"),
            "import-group": "0", "import-level": "0", "import-fold": ""}),
        # The turnaround statistics: the manager only (test_stats.py), and on the API a
        # token with the stats scope.
        Route("GET", "/stats/", mgr, 200),
        Route("GET", "/stats/trend.svg", mgr, 200),
        Route("GET", "/stats/export.csv", mgr, 200),
        Route("GET", "/api/v1/stats", frozenset(), 401, same_for_all=True),
        Route("GET", "/oncall/", frozenset({"technician", "physician", "admin"}), 200),
        Route("GET", "/inbox/absence", phys, 200),
        Route("POST", "/inbox/absence", phys, 302, lambda _: {
            "starts_at": "2030-03-01T08:00", "ends_at": "2030-03-08T08:00", "cover": str(world.backup),
            "fold": ""}),
        Route("POST", "/admin/rota/absences", adm, 302, lambda _: {
            "absence-physician": str(world.head), "absence-cover": str(world.offduty),
            "absence-starts_at": "2030-04-01T08:00", "absence-ends_at": "2030-04-02T08:00",
            "absence-fold": ""}),
        Route("GET", f"/requests/{main}/ladder.json", tech, 200),
        Route("GET", "/admin/users", adm, 200),
        Route(
            "POST",
            "/admin/users",
            adm,
            302,
            lambda _: {
                "username": "newtech",
                "display_name": "New Tech",
                "role": "technician",
                "password": "a long enough passphrase",
                "destination": "0",
            },
        ),
        Route("GET", f"/admin/users/{world.tech2}", adm, 200),
        Route("POST", f"/admin/users/{world.tech2}", adm, 302,
              lambda _: {"display_name": "Second Technician", "destination": "0"}),
        Route("GET", "/admin/changes", adm, 200),
        Route("POST", f"/admin/changes/{changes[0]}/approve", adm, 302),
        Route("POST", f"/admin/changes/{changes[1]}/reject", adm, 302),
        Route("POST", f"/admin/users/{world.tech2}/active", adm, 302),
        Route(
            "POST",
            f"/admin/users/{world.offduty}/revoke",
            adm,
            302,
            lambda _: {"reason": "superseded", "confirm": "y"},
        ),
        # The API ignores session cookies: without a bearer token everyone gets 401.
        Route("GET", "/api/v1/requests", frozenset(), 401, same_for_all=True),
        Route("POST", "/api/v1/requests", frozenset(), 401, same_for_all=True),
        Route("GET", f"/api/v1/requests/{main}", frozenset(), 401, same_for_all=True),
        Route("GET", f"/api/v1/requests/{main}/verification", frozenset(), 401, same_for_all=True),
        Route("GET", f"/api/v1/requests/{main}/document", frozenset(), 401, same_for_all=True),
        Route("GET", f"/api/v1/requests/{main}/timeline", frozenset(), 401, same_for_all=True),
        Route("GET", f"/api/v1/requests/{main}/fhir", frozenset(), 401, same_for_all=True),
        Route("POST", f"/api/v1/requests/{main}/acknowledge", frozenset(), 401, same_for_all=True),
        Route("GET", "/api/v1/openapi.json", PUBLIC, 200, same_for_all=True),
        Route("GET", "/pki/root.crt", PUBLIC, 200, same_for_all=True),
        Route("GET", "/pki/issuing.crt", PUBLIC, 200, same_for_all=True),
        Route("GET", "/pki/root.crl", PUBLIC, 200, same_for_all=True),
        Route("GET", "/pki/issuing.crl", PUBLIC, 200, same_for_all=True),
        # RFC 3161 for integration tokens with the timestamp scope only (test_tsa.py).
        Route("POST", "/tsa", frozenset(), 401, same_for_all=True),
        Route("GET", "/static/app.css", PUBLIC, 200, same_for_all=True),
        # Web Push devices: any logged-in user manages their own (test_push.py); device 1
        # is nobody's here, so the actions are 404, and no JSON subscription is 400.
        Route("GET", "/sw.js", PUBLIC, 200, same_for_all=True),
        Route("GET", "/account/push", PUBLIC - {"anonymous"}, 200),
        Route("POST", "/account/push/subscribe", PUBLIC - {"anonymous"}, 400),
        Route("POST", "/account/push/1/verify", PUBLIC - {"anonymous"}, 404, lambda _: {"code": "123456"}),
        Route("POST", "/account/push/1/remove", PUBLIC - {"anonymous"}, 404),
        # Passkeys and recovery codes: anyone logged in manages their own (tests in
        # test_passkeys_browser.py, test_recovery_and_step_up.py). Passkey 1 is nobody's,
        # nobody has one (so no step-up options: 404), and a body that is not the
        # browser's JSON answer is 400.
        Route("GET", "/account/passkeys", people, 200),
        Route("POST", "/account/passkeys/options", people, 200),
        Route("POST", "/account/passkeys", people, 400),
        Route("POST", "/account/passkeys/1/revoke", people, 404),
        Route("POST", "/account/step-up/options", people, 404),
        Route("GET", "/account/recovery-codes", people, 200),
        Route("POST", "/account/recovery-codes", people, 200),
        Route("POST", "/login/passkey/options", PUBLIC, 200, same_for_all=True),
        Route("POST", "/login/passkey", PUBLIC, 400, same_for_all=True),
        # OpenID Connect login: no provider is configured here (test_oidc.py has one).
        Route("GET", "/login/oidc/psc", PUBLIC, 404, same_for_all=True),
        Route("GET", "/login/oidc/psc/callback", PUBLIC, 404, same_for_all=True),
        # Only on an instance `signflow demo` made (test_demo_outbox.py); not this one.
        Route("GET", "/demo/messages", PUBLIC, 404, same_for_all=True),
    ]


def expected(route: Route, role: str) -> int:
    if role in route.extra:
        return route.extra[role]
    if route.same_for_all or role in route.allowed:
        return route.ok
    if role == "anonymous":
        return 302
    return 403


def call(client: FlaskClient, route: Route, role: str, token: str) -> Any:
    if route.path == "/tsa":
        return client.post("/tsa", data=_timestamp_query(), content_type="application/timestamp-query")
    if route.method == "GET":
        return client.get(route.path)
    data: dict[str, Any] = {"csrf_token": token}
    if route.data is not None and (role in route.allowed or role in route.extra):
        data.update(route.data(client))
    multipart = any(isinstance(v, tuple) for v in data.values())
    return client.post(route.path, data=data, content_type="multipart/form-data" if multipart else None)


def test_every_route_for_every_role(app, svc, world, keys_dir):
    clients = {role: app.test_client() for role in ROLES}
    for role, username in ACCOUNT.items():
        login(clients[role], username)
    tokens = {role: csrf_token(c, "/login") for role, c in clients.items()}
    main = new_request(clients["technician"], world)
    cancel = new_request(clients["technician"], world)
    decline = new_request(clients["technician"], world)
    delegate = new_request(clients["technician"], world)
    with svc.sessions() as s:
        shift = s.scalar(select(RotaShift.id).where(RotaShift.user_id == world.offduty))
    # Two changes proposed by a second administrator: the first one approves or rejects them.
    with svc.sessions() as s, s.begin():
        other = accounts.create_user(s, actor=TEST_ACTOR, now=svc.clock(), username="admin2",
                                     display_name="Second Admin", role="admin", password=PASSWORD)
        proposed = [four_eyes.create_user(
            s, actor=Actor.of(other), now=svc.clock(), username=name, display_name=name, role="recipient",
            password=PASSWORD, email=f"{name}@hospital.example", destination_id=world.destination,
        )[1] for name in ("newdesk", "otherdesk")]
        changes = (proposed[0].id, proposed[1].id)
        added = contacts.add_channel(s, svc.keys.master_key, actor=Actor.of(s.get(User, world.doc)),
                                     kind="email", address="helene@home.example", now=svc.clock())
        added.code_sent_at = svc.clock() - timedelta(minutes=2)  # a new code may be asked for
        channel = added.id
        sub = webhooks.subscribe(
            s, actor=TEST_ACTOR, now=svc.clock(), kind="webhook", url="https://hooks.example.org/in",
            destination_id=world.destination, technician_id=None, event_types=["request.delivered"],
            master_key=svc.keys.master_key, production=True, allow_private=False,
            resolve=lambda _host, _port: ["93.184.215.14"]).subscription
        delivery = events.queue(s, sub, "request.delivered", {"id": 0}, request_id=None,
                                now=svc.clock())
        s.flush()
        hook = (sub.id, delivery.id)
    table = routes(main, cancel, decline, delegate, shift, world, changes, channel, hook)

    # Every rule the app serves is in the table, so a new route cannot go untested.
    served = {(m, r.rule) for r in app.url_map.iter_rules() for m in r.methods - {"HEAD", "OPTIONS"}}
    tested = set()
    for route in table:
        adapter = app.url_map.bind("localhost")
        endpoint, _ = adapter.match(route.path, method=route.method)
        rule = next(r for r in app.url_map.iter_rules(endpoint) if route.method in r.methods)
        tested.add((route.method, rule.rule))
    # Checked at the end: logout, and the second-factor step (which drops any session).
    tested |= {("POST", "/logout"), ("GET", "/login/code"), ("POST", "/login/code"),
               ("POST", "/login/recovery"), ("POST", "/login/code/passkey"),
               ("POST", "/login/code/passkey/options")}
    assert served - tested == set()

    denied_before = count(svc, AuditEntry, AuditEntry.action == "access.denied")
    wrong_role_calls = 0
    failures = []
    for route in table:
        # The allowed roles act last, so that a refused call cannot hide behind a changed state.
        order = sorted(ROLES, key=lambda r: r in route.allowed)
        for role in order:
            resp = call(clients[role], route, role, tokens[role])
            want = expected(route, role)
            if resp.status_code != want:
                failures.append(f"{route.method} {route.path} as {role}: {resp.status_code} != {want}")
                continue
            to_login = want == 302 and resp.headers["Location"].startswith("/login")
            if want == 302 and to_login != (role == "anonymous"):
                failures.append(f"{route.method} {route.path} as {role} -> {resp.headers['Location']}")
            if want == 403:
                wrong_role_calls += 1
                if "Your role does not give access" not in resp.get_data(as_text=True):
                    failures.append(f"{route.method} {route.path} as {role}: 403 without message")
            if want == 401 and (resp.mimetype != "application/problem+json" or resp.json["status"] != 401):
                failures.append(f"{route.method} {route.path} as {role}: 401 not problem+json")
    assert not failures, "\n".join(failures)

    # Each wrong-role refusal is audited.
    assert count(svc, AuditEntry, AuditEntry.action == "access.denied") - denied_before == wrong_role_calls
    # The allowed calls really did their work (and the refused ones did not do it first).
    assert state_of(svc, main) == RequestState.RECEIVED
    assert state_of(svc, cancel) == RequestState.CANCELLED
    assert state_of(svc, decline) == RequestState.DECLINED
    with svc.sessions() as s:
        assert s.get(SignatureRequest, delegate).assignee_id == world.backup
        assert s.get(RotaShift, shift) is None
        assert s.scalar(select(User.id).where(User.username == "newtech")) is not None
        assert s.scalar(select(User.active).where(User.username == "newdesk")) is True
        assert s.scalar(select(User.active).where(User.username == "otherdesk")) is False
        assert s.get(User, world.tech2).display_name == "Second Technician"
    assert count(svc, Signature) == 1
    with svc.sessions() as s:
        assert s.get(ContactChannel, channel) is None  # removed by its owner, last
        added = s.scalars(select(ContactChannel.user_id).where(ContactChannel.address == "+33612345678"))
        assert len(set(added)) == len(ACCOUNT)

    for role in ROLES:
        resp = clients[role].post("/logout", data={"csrf_token": tokens[role]})
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login"), role
        assert clients[role].get("/").headers["Location"].startswith("/login"), role

    # Without a password step just done, the second-factor page sends the anonymous to the
    # login and the logged-in home, without logging them out (a cross-site GET must not).
    for role in ROLES:
        client = app.test_client()
        if role != "anonymous":
            login(client, ACCOUNT[role])
        token = csrf_token(client, "/login")
        target = "/login" if role == "anonymous" else "/"
        for resp in (
            client.post("/login/code", data={"csrf_token": token, "code": "123456"}),
            client.get("/login/code"),
            client.post("/login/recovery", data={"csrf_token": token, "code": "ABCDE-FGHJK"}),
        ):
            assert resp.status_code == 302 and resp.headers["Location"] == target, role
        # The passkey variant of the step answers its script: no login under way.
        for path in ("/login/code/passkey/options", "/login/code/passkey"):
            resp = client.post(path, data={"csrf_token": token},
                               headers={"Accept": "application/json"})
            assert resp.status_code == 401 and resp.mimetype == "application/problem+json", role
        if role != "anonymous":
            assert client.get("/").headers["Location"] != "/login", role  # still logged in


def test_auditor_is_read_only(app, svc, world):
    rid, _tech, _doc = delivered_request(app, world)
    pending = new_request(_tech, world)
    auditor = app.test_client()
    login(auditor, "auditor")
    token = csrf_token(auditor, "/login")
    # Every state-changing POST; the auditor's own export is a read that only needs a POST.
    posts = [
        rule
        for rule in app.url_map.iter_rules()
        if "POST" in rule.methods
        and not rule.rule.startswith(("/api/", "/login", "/logout", "/account/", "/tsa", "/audit/"))
    ]
    assert len(posts) >= 7
    audit_before = count(svc, AuditEntry)
    for rule in posts:
        path = re.sub(r"<int:request_id>", str(pending), rule.rule)
        path = re.sub(r"<int:\w+_id>", "1", path)
        resp = auditor.post(path, data={"csrf_token": token, "pin": PIN, "reason": "x", "confirm": "y"})
        assert resp.status_code == 403, (path, resp.status_code)
    # Only the access.denied entries were written; the auditor can still read everything.
    assert count(svc, AuditEntry) - audit_before == len(posts)
    assert (
        count(
            svc,
            AuditEntry,
            AuditEntry.action != "access.denied",
            AuditEntry.actor_id == world.auditor,
        )
        == 1
    )  # login.succeeded
    assert state_of(svc, pending) == RequestState.PENDING
    assert state_of(svc, rid) == RequestState.DELIVERED
    assert auditor.get(f"/audit/?request={rid}").status_code == 200


def test_admin_cannot_read_documents_or_sign(app, svc, world):
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    doc = app.test_client()
    login(doc, "doc")
    form = sign_form(doc, rid)
    admin = app.test_client()
    login(admin, "admin")
    for path in (
        f"/documents/{rid}/download",
        f"/documents/{rid}/pages/1.png",
        f"/inbox/{rid}",
        f"/requests/{rid}",
        f"/received/{rid}",
    ):
        assert admin.get(path).status_code == 403, path
    resp = admin.post(
        f"/inbox/{rid}/sign",
        data={**form, "pin": PIN, "csrf_token": csrf_token(admin, "/admin/users")},
    )
    assert resp.status_code == 403
    assert state_of(svc, rid) == RequestState.PENDING
    assert count(svc, Signature) == 0


# -- object level -------------------------------------------------------------


def assert_sees_nothing_of(client, rid: int, *, detail: str, listing: str) -> None:
    """The request's page, its file and its rendered page answer 404 (as if it did not
    exist), and the listing does not link to it."""
    for path in (detail, f"/documents/{rid}/download", f"/documents/{rid}/pages/1.png"):
        assert client.get(path).status_code == 404, path
    assert detail not in client.get(listing).get_data(as_text=True)


def test_other_technician_cannot_see_cancel_or_download(app, svc, world):
    rid, tech, tech2 = pending_request_seen_by(app, world, "tech2")
    audit_before = count(svc, AuditEntry)
    assert_sees_nothing_of(tech2, rid, detail=f"/requests/{rid}", listing="/requests/")
    resp = tech2.post(f"/requests/{rid}/cancel", data={"csrf_token": csrf_token(tech2, "/requests/new")})
    assert resp.status_code == 404
    assert "not yours to see" in resp.get_data(as_text=True)
    assert str(rid) not in tech2.get("/requests/status.json").json
    assert state_of(svc, rid) == RequestState.PENDING
    assert count(svc, AuditEntry) == audit_before
    # Control: the owner still can.
    assert tech.get(f"/requests/{rid}").status_code == 200


def test_off_duty_physician_cannot_open_sign_or_decline(app, svc, world):
    tech, doc, offduty = app.test_client(), app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    login(offduty, "offduty")
    rid = new_request(tech, world)
    stolen_form = sign_form(doc, rid)  # a valid form, but issued to someone else
    token = csrf_token(offduty, "/inbox/signing-pin")
    audit_before = count(svc, AuditEntry)
    assert offduty.get(f"/inbox/{rid}").status_code == 404
    assert offduty.get(f"/documents/{rid}/pages/1.png").status_code == 404
    assert f"/inbox/{rid}" not in offduty.get("/inbox/").get_data(as_text=True)
    resp = offduty.post(f"/inbox/{rid}/sign", data={**stolen_form, "csrf_token": token, "pin": PIN})
    assert resp.status_code == 404
    resp = offduty.post(f"/inbox/{rid}/decline", data={"csrf_token": token, "reason": "not mine"})
    assert resp.status_code == 404
    assert state_of(svc, rid) == RequestState.PENDING
    assert count(svc, Signature) == 0
    assert count(svc, AuditEntry) == audit_before


def test_other_destination_cannot_see_download_or_acknowledge(app, svc, world):
    rid, _tech, _doc = delivered_request(app, world)
    cardio = app.test_client()
    login(cardio, "cardio")
    audit_before = count(svc, AuditEntry)
    assert_sees_nothing_of(cardio, rid, detail=f"/received/{rid}", listing="/received/")
    resp = cardio.post(f"/received/{rid}/acknowledge", data={"csrf_token": csrf_token(cardio, "/login")})
    assert resp.status_code == 404
    assert state_of(svc, rid) == RequestState.DELIVERED
    assert count(svc, AuditEntry) == audit_before


def test_recipient_cannot_see_a_request_before_delivery(app, svc, world):
    rid, _tech, recipient = pending_request_seen_by(app, world, "recipient")
    audit_before = count(svc, AuditEntry)
    assert_sees_nothing_of(recipient, rid, detail=f"/received/{rid}", listing="/received/")
    resp = recipient.post(
        f"/received/{rid}/acknowledge", data={"csrf_token": csrf_token(recipient, "/login")}
    )
    assert resp.status_code == 404
    assert state_of(svc, rid) == RequestState.PENDING
    assert count(svc, AuditEntry) == audit_before


def test_auditor_cannot_download_documents(app, svc, world):
    rid, _tech, _doc = delivered_request(app, world)
    auditor = app.test_client()
    login(auditor, "auditor")
    downloads = count(svc, AuditEntry, AuditEntry.action == "document.downloaded")
    resp = auditor.get(f"/documents/{rid}/download")
    assert resp.status_code == 403 and not resp.data.startswith(b"%PDF")
    assert auditor.get(f"/documents/{rid}/pages/1.png").status_code == 403
    assert count(svc, AuditEntry, AuditEntry.action == "document.downloaded") == downloads
    # Metadata stays visible to the auditor.
    assert "request.signed" in auditor.get(f"/audit/?request={rid}").get_data(as_text=True)
