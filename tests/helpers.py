"""HTTP helpers shared by the HTTP and end-to-end tests."""

from __future__ import annotations

import http.cookiejar
import io
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from signflow.app import create_app
from tests.conftest import PASSWORD, PIN, csrf_token, login
from tests.pdfs import make_pdf

HIDDEN = re.compile(r'name="(csrf_token|activation|document_sha256)" type="hidden" value="([^"]*)"')


def app_requiring_mfa(svc: Any, settings: Any, *, roles: str) -> Flask:
    """The app, with a second factor required of `roles` (comma-separated)."""
    strict = settings.with_overrides(mfa_roles=roles)
    svc.settings = strict
    return create_app(strict, services=svc)


def upload(client: FlaskClient, world, *, data: bytes | None = None, filename: str = "consent.pdf",
           urgency: str = "emergency", title: str = "Kidney transplant consent",
           group: int | None = None):
    token = csrf_token(client, "/requests/new")
    return client.post("/requests/new", data={
        "csrf_token": token,
        "document": (io.BytesIO(data if data is not None else make_pdf(2, "Consent form")), filename),
        "title": title, "group": str(group or world.group), "destination": str(world.destination),
        "urgency": urgency, "note": "Donor arriving at 04:00",
    }, content_type="multipart/form-data")


def request_id_from(resp) -> int:
    match = re.search(r"/requests/(\d+)", resp.headers["Location"])
    assert match
    return int(match.group(1))


def sign_form(client: FlaskClient, request_id: int) -> dict[str, str]:
    page = client.get(f"/inbox/{request_id}").get_data(as_text=True)
    fields = dict(HIDDEN.findall(page))
    assert {"csrf_token", "activation", "document_sha256"} <= fields.keys(), page[:2000]
    return fields


def sign(client: FlaskClient, request_id: int, pin: str = PIN, **override: str):
    form = sign_form(client, request_id)
    form.update(pin=pin)
    form.update(override)
    return client.post(f"/inbox/{request_id}/sign", data=form)


def new_request(client: FlaskClient, world: Any, **kw: Any) -> int:
    """Upload through the form (as the logged-in technician); returns the new request's id."""
    resp = upload(client, world, **kw)
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    return request_id_from(resp)


def pending_request_seen_by(app: Flask, world: Any,
                            username: str) -> tuple[int, FlaskClient, FlaskClient]:
    """A request uploaded by tech; returns (id, tech's client, a client logged in as `username`)."""
    tech, other = app.test_client(), app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    login(other, username)
    return rid, tech, other


def delivered_request(app: Flask, world: Any) -> tuple[int, FlaskClient, FlaskClient]:
    """A request uploaded by tech and signed by doc; returns (id, tech client, doc client)."""
    tech, doc = app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    rid = new_request(tech, world)
    resp = sign(doc, rid)
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    return rid, tech, doc


def upload_and_sign_through_the_app(app: Flask, svc: Any, world: Any, data: bytes, *,
                                    tap: tuple[float, float] | None = None,
                                    ) -> tuple[int, bytes, bytes]:
    """`data` uploaded by tech (optionally a stamp tap on page 1), signed by doc through
    the real routes; returns (request id, the normalised bytes, the signed bytes)."""
    from signflow.models import SignatureRequest

    tech, doc = app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    rid = new_request(tech, world, data=data)
    if tap is not None:
        token = csrf_token(tech, f"/requests/{rid}")
        resp = tech.post(f"/requests/{rid}/stamp", data={"csrf_token": token, "page": "1",
                                                         "fx": str(tap[0]), "fy": str(tap[1])})
        assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    resp = sign(doc, rid)
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        before = svc.deps.blobs.get(s, req.document_sha256)
        return rid, before, svc.deps.blobs.get(s, req.signed_sha256)


def assert_signed_file_valid(svc: Any, signed: bytes, tmp_path: Any, keys_dir: Any) -> None:
    """The recipient's validator, `qpdf --check` and poppler's pdfsig all accept `signed`."""
    import subprocess

    from signflow.core.pades import validate as validation
    from tests.pdfsig import pdfsig_report
    from tests.tools import require_tool

    report = validation.validate_pdf(signed, trust_roots=[svc.keys.root_cert])
    assert report.ok, report.as_json()
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    check = subprocess.run([require_tool("qpdf"), "--check", str(path)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Signature is Valid" in pdfsig_report(path, keys_dir, tmp_path)


# --------------------------------------------------------------------------- a served app

SERVED_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def http_login(base: str, username: str, password: str = PASSWORD, *, timeout: float = 60
               ) -> tuple[urllib.request.OpenerDirector, int, str]:
    """A fresh browser-like session against a served app: GET the login form, POST it.
    Returns the session, the final status and path (after redirects). An HTTP error is
    returned as its status, never raised."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    try:
        with opener.open(f"{base}/login", timeout=timeout) as resp:
            token = SERVED_CSRF.search(resp.read().decode())
        assert token, "no CSRF token on /login"
        body = urllib.parse.urlencode({"csrf_token": token.group(1), "username": username,
                                       "password": password}).encode()
        with opener.open(f"{base}/login", data=body, timeout=timeout) as resp:
            resp.read()
            return opener, resp.status, urllib.parse.urlsplit(resp.url).path
    except urllib.error.HTTPError as err:
        return opener, err.code, urllib.parse.urlsplit(err.url).path


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and one PDF as `document`, and its type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="document"; '
                 f'filename="{filename}"\r\nContent-Type: application/pdf\r\n\r\n'.encode()
                 + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
ENROLMENT_CODE = re.compile(r"enrolment code is (\d{8})")


def run_jobs(svc: Any) -> None:
    """Let the worker send every queued notification (svc.notifier records them)."""
    from signflow import jobs

    while jobs.run_job(svc, now=svc.clock()) is not None:
        pass


def enrolment_code(svc: Any, client: FlaskClient, email: str) -> str:
    """The logged-in physician asks for an enrolment code; returns the one the worker
    sent to `email` (the only place it appears)."""
    token = csrf_token(client, "/inbox/signing-pin")
    resp = client.post("/inbox/signing-pin/code", data={"csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    run_jobs(svc)
    sent = [m for m in svc.notifier.sent if m.to_email == email and ENROLMENT_CODE.search(m.body)]
    assert sent, [m.subject for m in svc.notifier.sent]
    match = ENROLMENT_CODE.search(sent[-1].body)
    assert match
    return match.group(1)


# --------------------------------------------------------------------------- second factors

TOTP_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
RECOVERY_CODE = re.compile(r"<code>([2-9A-Z]{5}-[2-9A-Z]{5})</code>")


def password_step(client: FlaskClient, username: str, password: str = PASSWORD):
    """The login form, posted: the response (a redirect to the second factor or home)."""
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})


def enrol_totp(client: FlaskClient, now: Any) -> str:
    """The logged-in user turns TOTP on through the page, with a real code; returns the seed."""
    import pyotp

    # Each visit seals a new seed in the session: seed and token from the same page.
    page = client.get("/account/two-factor").get_data(as_text=True)
    secret_match = TOTP_SECRET.search(page)
    token_match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert secret_match and token_match, page[:1500]
    secret, token = secret_match.group(1), token_match.group(1)
    resp = client.post("/account/two-factor", data={"csrf_token": token,
                                                    "code": pyotp.TOTP(secret).at(now)})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    return secret


def new_recovery_codes(client: FlaskClient) -> list[str]:
    """The logged-in user makes a (new) set of recovery codes; returns the ten shown."""
    token = csrf_token(client, "/account/recovery-codes")
    page = client.post("/account/recovery-codes", data={"csrf_token": token})
    assert page.status_code == 200, page.get_data(as_text=True)[-800:]
    codes = RECOVERY_CODE.findall(page.get_data(as_text=True))
    assert len(codes) == 10
    return codes


def recovery_step(client: FlaskClient, code: str):
    token = csrf_token(client, "/login/code")
    return client.post("/login/recovery", data={"code": code, "csrf_token": token})
