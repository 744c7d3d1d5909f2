"""Bad input through the real routes, security headers, sessions, and the double-sign race.

Every refusal is checked three ways: the status, a message the user can act on,
and that nothing changed (rows and audit log), with no secret in the response or the logs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from sqlalchemy import func, select

from signflow.app import create_app
from signflow.core.notify.channels import LogNotifier
from signflow.core.pki import credentials as creds
from signflow.models import (
    AuditEntry,
    Blob,
    LoginThrottle,
    RequestState,
    Signature,
    SignatureActivation,
    SignatureRequest,
)
from signflow.services import build_services
from tests.conftest import PASSWORD, PIN, csrf_token, login, make_settings
from tests.factories import count, state_of
from tests.helpers import new_request, request_id_from, sign, sign_form, upload
from tests.pdfs import make_pdf

WRONG_PINS = ("735102", "735103", "735104", "735105", "735106")
SECRETS = (PIN, PASSWORD, *WRONG_PINS, "wrong horse battery staple")


def snapshot(svc: Any) -> dict[str, Any]:
    """Everything a refused request must leave untouched."""
    with svc.sessions() as s:
        counts = {
            m.__name__: s.scalar(select(func.count()).select_from(m))
            for m in (SignatureRequest, Signature, SignatureActivation, Blob, AuditEntry)
        }
        states = {rid: state for rid, state in s.execute(select(SignatureRequest.id, SignatureRequest.state))}
        return {**counts, "states": states}


def audit_actions(svc: Any, request_id: int | None = None) -> list[str]:
    with svc.sessions() as s:
        query = select(AuditEntry.action).order_by(AuditEntry.seq)
        if request_id is not None:
            query = query.where(AuditEntry.request_id == request_id)
        return list(s.scalars(query))


def assert_no_secret(resp: Any, caplog: pytest.LogCaptureFixture) -> None:
    body = resp.get_data(as_text=True)
    for secret in SECRETS:
        assert secret not in body
        assert secret not in caplog.text


def message(resp: Any) -> str:
    """The user-facing explanation on an HTML error page or a problem+json body."""
    if resp.mimetype == "application/problem+json":
        return str(resp.json["detail"])
    match = re.search(r'<section class="card error"[^>]*>(.*?)</section>', resp.get_data(as_text=True), re.S)
    assert match, resp.get_data(as_text=True)[:1500]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


@pytest.fixture(autouse=True)
def _capture_all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def tech(app, world):
    client = app.test_client()
    login(client, "tech")
    return client


@pytest.fixture
def doc(app, world):
    client = app.test_client()
    login(client, "doc")
    return client


@pytest.fixture
def pending(tech, world) -> int:
    return new_request(tech, world)


def credential_state(svc: Any, user_id: int) -> tuple[int, bool]:
    with svc.sessions() as s:
        cred = creds.active_credential(s, user_id)
        assert cred is not None
        return cred.failed_pins, cred.blocked_at is not None


# -- PIN and password ---------------------------------------------------------


def test_wrong_pin_is_counted_audited_and_blocks_at_five(app, svc, world, doc, pending, caplog):
    # One form for every attempt: a wrong PIN does not use up the activation.
    form = sign_form(doc, pending)
    before = snapshot(svc)
    for attempt, wrong in enumerate(WRONG_PINS[:4], start=1):
        resp = doc.post(f"/inbox/{pending}/sign", data={**form, "pin": wrong})
        assert resp.status_code == 403
        assert f"wrong PIN: {5 - attempt} " in message(resp)
        assert_no_secret(resp, caplog)
        assert credential_state(svc, world.doc) == (attempt, False)
        assert audit_actions(svc, pending).count("signature.pin_rejected") == attempt
    after = snapshot(svc)
    # Only the rejections were recorded: no signature, no used activation, request untouched.
    assert after["AuditEntry"] - before["AuditEntry"] == 4
    assert audit_actions(svc)[-4:] == ["signature.pin_rejected"] * 4
    assert {k: v for k, v in after.items() if k != "AuditEntry"} == {
        k: v for k, v in before.items() if k != "AuditEntry"
    }

    resp = doc.post(f"/inbox/{pending}/sign", data={**form, "pin": WRONG_PINS[4]})
    assert resp.status_code == 423
    assert "blocked" in message(resp)
    assert credential_state(svc, world.doc) == (5, True)
    # The right PIN no longer helps, even with a form opened before the block.
    resp = doc.post(f"/inbox/{pending}/sign", data={**form, "pin": PIN})
    assert resp.status_code == 423
    assert_no_secret(resp, caplog)
    page = doc.get(f"/inbox/{pending}")
    assert "blocked" in page.get_data(as_text=True)
    assert 'name="activation"' not in page.get_data(as_text=True)
    assert count(svc, Signature) == 0
    assert state_of(svc, pending) == RequestState.PENDING
    # A blocked signing key does not lock the physician out of the site.
    again = app.test_client()
    login(again, "doc")
    assert again.get("/inbox/").status_code == 200


def test_wrong_password_is_generic_and_counted(app, svc, world, caplog):
    client = app.test_client()
    before = snapshot(svc)
    token = csrf_token(client, "/login")
    wrong = client.post(
        "/login",
        data={"username": "tech", "password": "wrong horse battery staple", "csrf_token": token},
    )
    unknown = client.post("/login", data={"username": "nobody", "password": PASSWORD, "csrf_token": token})
    assert wrong.status_code == unknown.status_code == 401
    assert message(wrong) == message(unknown) == "Login failed Wrong user name or password. Error 401 Back"
    for resp in (wrong, unknown):
        assert_no_secret(resp, caplog)
    assert client.get("/requests/").headers["Location"].startswith("/login")
    # Counted per (typed name, address) for both names, and once per address.
    assert count(svc, LoginThrottle) == 3
    after = snapshot(svc)
    assert after["AuditEntry"] - before["AuditEntry"] == 2
    assert audit_actions(svc)[-2:] == ["login.failed", "login.failed"]
    assert {k: v for k, v in after.items() if k != "AuditEntry"} == {
        k: v for k, v in before.items() if k != "AuditEntry"
    }


# -- signing refused ----------------------------------------------------------


def test_second_signature_and_activation_replay_are_refused(app, svc, world, doc, pending, caplog):
    form = {**sign_form(doc, pending), "pin": PIN}
    assert doc.post(f"/inbox/{pending}/sign", data=form).status_code == 302
    before = snapshot(svc)
    replay = doc.post(f"/inbox/{pending}/sign", data=form)
    assert replay.status_code == 409
    assert re.fullmatch(
        r"Already handled Already signed by Dr Hélène Lefèvre at \d{4}-\d\d-\d\d \d\d:\d\d "
        r"CES?T\. Error 409 Back",
        message(replay),
    ), message(replay)
    assert snapshot(svc) == before
    assert_no_secret(replay, caplog)


def test_sign_a_declined_or_cancelled_request_is_a_conflict(app, svc, world, tech, doc, pending):
    cancelled = new_request(tech, world, title="To be cancelled")
    declined_form = sign_form(doc, pending)
    cancelled_form = sign_form(doc, cancelled)
    backup = app.test_client()
    login(backup, "backup")
    token = csrf_token(backup, f"/inbox/{pending}")
    assert (
        backup.post(
            f"/inbox/{pending}/decline", data={"csrf_token": token, "reason": "Wrong patient"}
        ).status_code
        == 302
    )
    token = csrf_token(tech, f"/requests/{cancelled}")
    assert tech.post(f"/requests/{cancelled}/cancel", data={"csrf_token": token}).status_code == 302
    assert state_of(svc, cancelled) == RequestState.CANCELLED
    before = snapshot(svc)
    resp = doc.post(f"/inbox/{pending}/sign", data={**declined_form, "pin": PIN})
    assert resp.status_code == 409
    assert "Already declined by Dr Łukasz Nowak" in message(resp)
    resp = doc.post(f"/inbox/{cancelled}/sign", data={**cancelled_form, "pin": PIN})
    assert resp.status_code == 409
    assert "This request is cancelled; it can no longer be signed." in message(resp)
    resp = doc.post(
        f"/inbox/{cancelled}/decline",
        data={"csrf_token": cancelled_form["csrf_token"], "reason": "late"},
    )
    assert resp.status_code == 409
    assert snapshot(svc) == before
    assert credential_state(svc, world.doc) == (0, False)


def test_unknown_request_id_is_404(app, svc, world, tech, doc):
    before = snapshot(svc)
    token = csrf_token(doc, "/inbox/signing-pin")
    for client, method, path in (
        (doc, "get", "/inbox/999999"),
        (doc, "post", "/inbox/999999/sign"),
        (doc, "post", "/inbox/999999/decline"),
        (tech, "get", "/requests/999999"),
        (tech, "post", "/requests/999999/cancel"),
        (tech, "get", "/documents/999999/download"),
        (tech, "get", "/documents/999999/pages/1.png"),
    ):
        data = {
            "csrf_token": token if client is doc else csrf_token(tech, "/requests/new"),
            "pin": PIN,
            "reason": "x",
            "activation": "a.b",
            "document_sha256": "0" * 64,
        }
        resp = client.get(path) if method == "get" else client.post(path, data=data)
        assert resp.status_code == 404, path
        assert "No such request" in message(resp), path
    assert snapshot(svc) == before


def test_altered_document_hash_is_refused(app, svc, world, doc, pending, caplog):
    form = sign_form(doc, pending)
    before = snapshot(svc)
    resp = doc.post(f"/inbox/{pending}/sign", data={**form, "pin": PIN, "document_sha256": "0" * 64})
    assert resp.status_code == 409
    assert "The document differs from the one you were shown" in message(resp)
    assert snapshot(svc) == before
    assert credential_state(svc, world.doc) == (0, False)
    assert_no_secret(resp, caplog)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_altered_activation_token_is_refused(app, svc, world, doc, pending, tech):
    form = sign_form(doc, pending)
    body, mac = form["activation"].split(".")
    raw = bytearray(base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
    raw[5] ^= 0x01
    flipped_mac = f"{body}.{_b64(bytes(raw))}"
    other = new_request(tech, world)
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged_claims = f"{_b64(json.dumps({**claims, 'r': other}).encode())}.{mac}"
    before = snapshot(svc)
    for token in (flipped_mac, forged_claims, "garbage", f"{body}."):
        resp = doc.post(f"/inbox/{pending}/sign", data={**form, "activation": token, "pin": PIN})
        assert resp.status_code == 403, token
        assert "This signing form is invalid" in message(resp)
        resp = doc.post(f"/inbox/{other}/sign", data={**form, "activation": token, "pin": PIN})
        assert resp.status_code == 403, token
    assert snapshot(svc) == before
    assert credential_state(svc, world.doc) == (0, False)


def test_activation_from_another_request_or_physician_is_refused(app, svc, world, doc, tech, pending):
    other = new_request(tech, world, title="Other consent")
    form_for_other = sign_form(doc, other)
    backup = app.test_client()
    login(backup, "backup")
    backup_token = csrf_token(backup, f"/inbox/{pending}")
    before = snapshot(svc)
    resp = doc.post(f"/inbox/{pending}/sign", data={**form_for_other, "pin": PIN})
    assert resp.status_code == 403
    assert "belongs to another request" in message(resp)
    # Doc's form in the backup's hands: same request, wrong physician.
    resp = backup.post(
        f"/inbox/{other}/sign", data={**form_for_other, "csrf_token": backup_token, "pin": PIN}
    )
    assert resp.status_code == 403
    assert "belongs to another request" in message(resp)
    assert snapshot(svc) == before
    assert credential_state(svc, world.backup) == (0, False)
    # Control: the form still signs the request it was issued for.
    assert doc.post(f"/inbox/{other}/sign", data={**form_for_other, "pin": PIN}).status_code == 302


def test_expired_activation_is_refused(app, svc, world, doc, pending, clock):
    form = sign_form(doc, pending)
    clock.advance(minutes=6)
    before = snapshot(svc)
    resp = doc.post(f"/inbox/{pending}/sign", data={**form, "pin": PIN})
    assert resp.status_code == 403
    assert "expired" in message(resp)
    assert snapshot(svc) == before
    # Control, back at the wall-clock time pyHanko checks CRLs against: a fresh form signs.
    clock.advance(minutes=-6)
    assert sign(doc, pending).status_code == 302


def test_missing_csrf_token_is_refused(app, svc, world, doc, tech, pending):
    form = sign_form(doc, pending)
    del form["csrf_token"]
    before = snapshot(svc)
    resp = doc.post(f"/inbox/{pending}/sign", data={**form, "pin": PIN})
    assert resp.status_code == 400
    assert "The form expired or was tampered with" in message(resp)
    resp = doc.post(f"/inbox/{pending}/sign", data={**form, "pin": PIN, "csrf_token": "forged"})
    assert resp.status_code == 400
    resp = tech.post(f"/requests/{pending}/cancel")
    assert resp.status_code == 400
    resp = tech.post(
        "/requests/new",
        data={
            "document": (io.BytesIO(make_pdf()), "a.pdf"),
            "group": str(world.group),
            "destination": str(world.destination),
            "urgency": "routine",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400
    assert snapshot(svc) == before


def test_decline_without_reason_is_refused(app, svc, world, doc, pending):
    token = csrf_token(doc, f"/inbox/{pending}")
    before = snapshot(svc)
    for reason in ("", "   "):
        resp = doc.post(f"/inbox/{pending}/decline", data={"csrf_token": token, "reason": reason})
        assert resp.status_code == 400
        assert "Say why you decline" in message(resp)
    assert snapshot(svc) == before


# -- uploads ------------------------------------------------------------------


def test_bad_uploads_are_refused_and_create_nothing(app, svc, world, tech, caplog):
    pdf = make_pdf(3, "Consent form")
    before = snapshot(svc)
    cases = {
        "not a pdf": (b"GIF89a this is an image, not a PDF", "scan.pdf"),
        "empty": (b"", "empty.pdf"),
        "truncated": (pdf[: len(pdf) // 3], "truncated.pdf"),
        "html": (b"<html><script>alert(1)</script></html>", "page.pdf"),
    }
    for name, (data, filename) in cases.items():
        resp = upload(tech, world, data=data, filename=filename)
        assert resp.status_code == 422, (name, resp.status_code)
        assert message(resp).startswith("Document refused"), (name, message(resp))
        assert "Traceback" not in resp.get_data(as_text=True)
    # No file at all: the form says so.
    token = csrf_token(tech, "/requests/new")
    resp = tech.post(
        "/requests/new",
        data={
            "csrf_token": token,
            "group": str(world.group),
            "destination": str(world.destination),
            "urgency": "routine",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400 and "Choose a PDF file." in resp.get_data(as_text=True)
    assert snapshot(svc) == before


def test_upload_over_the_size_limit_is_413(tmp_path, keys_dir, database_url, world, svc, clock):
    settings = make_settings(tmp_path / "small", keys_dir, database_url, max_upload_mb=1)
    small = build_services(settings, clock=clock, notifier=LogNotifier())
    try:
        app = create_app(settings, services=small)
        client = app.test_client()
        login(client, "tech")
        before = snapshot(svc)
        # Over the whole request limit: refused before the form is even read.
        resp = upload(client, world, data=b"%PDF-1.7\n%" + b"0" * (2 * 1024 * 1024))
        assert resp.status_code == 413
        assert "larger than" in message(resp)
        # Under the request limit but over the document limit: refused by the checker.
        resp = upload(client, world, data=b"%PDF-1.7\n%" + b"0" * (1024 * 1024 + 10))
        assert resp.status_code == 413
        assert "larger than" in message(resp)
        assert snapshot(svc) == before
        # Control: a small PDF is accepted by this same app.
        assert upload(client, world).status_code == 302
    finally:
        small.engine.dispose()


# -- redirects and headers ----------------------------------------------------


OFF_SITE = (
    "//evil.example",
    "https://evil.example",
    "/\\evil",
    "/\\/evil.example",
    "\\\\evil.example",
    "http:evil.example",
    " //evil.example",
    "/\t/evil.example",
    "///evil.example",
)


def test_login_next_never_leaves_the_site(app, world):
    for target in OFF_SITE:
        client = app.test_client()
        path = f"/login?next={quote(target, safe='')}"
        token = csrf_token(client, path)
        resp = client.post(path, data={"username": "tech", "password": PASSWORD, "csrf_token": token})
        assert resp.status_code == 302, target
        location = resp.headers["Location"]
        parts = urlsplit(location)
        assert parts.scheme == "" and parts.netloc == "", (target, location)
        assert location == "/", (target, location)
    # Control: a same-site path is kept.
    client = app.test_client()
    path = "/login?next=/requests/new"
    token = csrf_token(client, path)
    resp = client.post(path, data={"username": "tech", "password": PASSWORD, "csrf_token": token})
    assert resp.headers["Location"] == "/requests/new"


def test_security_headers_and_safe_download_name(app, svc, world, tech):
    csp = tech.get("/login").headers["Content-Security-Policy"]
    directives = {d.strip().split()[0]: d.strip().split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in csp
    for path in ("/login", "/requests/", "/api/v1/openapi.json"):
        assert tech.get(path).headers["X-Content-Type-Options"] == "nosniff", path
    problem = app.test_client().get("/api/v1/requests")
    assert problem.headers["X-Content-Type-Options"] == "nosniff"

    resp = upload(tech, world, filename='../../etc/pa"ss wd<script>.pdf')
    rid = request_id_from(resp)
    page = tech.get(f"/documents/{rid}/pages/1.png")
    assert page.status_code == 200 and "no-store" in page.headers["Cache-Control"]
    download = tech.get(f"/documents/{rid}/download")
    assert download.status_code == 200 and download.data.startswith(b"%PDF")
    assert "no-store" in download.headers["Cache-Control"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    ascii_name = re.search(r'filename="([^"]*)"', disposition)
    utf8_name = re.search(r"filename\*=UTF-8''(\S+)", disposition)
    assert ascii_name and utf8_name, disposition
    for name in (ascii_name.group(1), utf8_name.group(1)):
        assert re.fullmatch(r"[A-Za-z0-9._-]+\.pdf", name), name
        assert ".." not in name and "/" not in name
    # Only one quoted filename: the user's quote did not break out of it.
    assert disposition.count('"') == 2
    with svc.sessions() as s:
        stored = s.get(SignatureRequest, rid).filename
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.pdf", stored) and "etc" not in stored.split("_")[0:1]


# -- sessions -----------------------------------------------------------------

COOKIE = "signflow_session"


def test_login_renews_and_logout_invalidates_the_session(app, world):
    client = app.test_client()
    client.get("/login")
    anonymous = client.get_cookie(COOKIE).value
    login(client, "tech")
    stolen = client.get_cookie(COOKIE).value
    assert stolen != anonymous
    old = app.test_client()
    old.set_cookie(COOKIE, anonymous)
    assert old.get("/requests/").status_code == 302  # the pre-login cookie carries no login
    assert client.get("/requests/").status_code == 200
    # Control: before logout the copied cookie does open the session elsewhere.
    replay = app.test_client()
    replay.set_cookie(COOKIE, stolen)
    assert replay.get("/requests/").status_code == 200
    token = csrf_token(client, "/requests/new")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = app.test_client()
    replay.set_cookie(COOKIE, stolen)
    resp = replay.get("/requests/")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")


def test_disabled_user_session_dies(app, svc, world, tech):
    assert tech.get("/requests/").status_code == 200
    admin = app.test_client()
    login(admin, "admin")
    token = csrf_token(admin, "/admin/users")
    assert admin.post(f"/admin/users/{world.tech}/active", data={"csrf_token": token}).status_code == 302
    resp = tech.get("/requests/")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    # Nor can the disabled user log in again, with the same generic message.
    client = app.test_client()
    token = csrf_token(client, "/login")
    resp = client.post("/login", data={"username": "tech", "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 401 and "Wrong user name or password." in message(resp)


# -- the double-sign race -----------------------------------------------------


def test_two_physicians_sign_the_same_request_one_wins(app, svc, world, doc, pending):
    backup = app.test_client()
    login(backup, "backup")
    doc_form = {**sign_form(doc, pending), "pin": PIN}
    backup_form = {**sign_form(backup, pending), "pin": PIN}
    first = doc.post(f"/inbox/{pending}/sign", data=doc_form)
    second = backup.post(f"/inbox/{pending}/sign", data=backup_form)
    assert first.status_code == 302
    assert second.status_code == 409
    assert "Already signed by Dr Hélène Lefèvre at" in message(second)
    assert audit_actions(svc, pending).count("request.signed") == 1
    assert count(svc, Signature) == 1
    assert credential_state(svc, world.backup) == (0, False)


def test_concurrent_signatures_produce_exactly_one(app, svc, world, doc, pending):
    backup = app.test_client()
    login(backup, "backup")
    jobs = [
        (doc, {**sign_form(doc, pending), "pin": PIN}),
        (backup, {**sign_form(backup, pending), "pin": PIN}),
    ]
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(client: Any, form: dict[str, str]) -> None:
        try:
            barrier.wait(timeout=30)
            resp = client.post(f"/inbox/{pending}/sign", data=form)
            results.append((resp.status_code, message(resp) if resp.status_code != 302 else ""))
        except BaseException as exc:  # noqa: BLE001 - reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    statuses = sorted(code for code, _ in results)
    assert statuses == [302, 409], results
    assert "Already signed by" in next(text for code, text in results if code == 409)
    assert count(svc, Signature) == 1
    assert audit_actions(svc, pending).count("request.signed") == 1
    assert state_of(svc, pending) == RequestState.DELIVERED
