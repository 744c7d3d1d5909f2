"""HTTP helpers shared by the HTTP and end-to-end tests."""

from __future__ import annotations

import io
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import PIN, csrf_token, login
from tests.pdfs import make_pdf

HIDDEN = re.compile(r'name="(csrf_token|activation|document_sha256)" type="hidden" value="([^"]*)"')


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
