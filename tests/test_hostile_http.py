"""Hostile uploads through the real HTTP server: each is refused or neutralised, and
the server keeps answering other users meanwhile."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from signflow.core.pdf.normalise import upload_reference
from signflow.core.storage import sha256_hex
from signflow.models import AuditEntry, Blob, SignatureRequest
from tests.conftest import csrf_token, login
from tests.helpers import SERVED_CSRF, http_login, multipart, new_request
from tests.hostile import CASES

# The nastiest: bombs, loops, deep nesting, polyglots, encrypted, active content.
CHOSEN = ["flate-bomb-in-page", "ascii85-flate-bomb", "page-tree-loop", "nested-arrays-100k",
          "image-60000x60000", "thousands-of-pages", "encrypted-owner-only", "png-named-pdf",
          "truncated", "javascript-openaction", "already-signed", "zero-pages",
          # Issue 9, bad input: chain bombs, images by real depth, repaired structure.
          "flate-of-flate-bomb", "lzw-bomb", "ascii85-runlength-flate-bomb", "one-bit-a0-scan",
          "image-16bit-rgb-giant", "junk-after-eof", "junk-before-header", "broken-xref-offsets",
          "no-xref-no-trailer"]


@pytest.fixture
def live(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hostile_uploads_over_http_keep_the_server_serving(live, svc, world, caplog):
    tech, status, _ = http_login(live, "tech", timeout=10)
    assert status == 200
    stop = threading.Event()
    pings: list[float] = []

    def other_user() -> None:
        while not stop.is_set():
            started = time.monotonic()
            with urllib.request.urlopen(f"{live}/login", timeout=10) as resp:
                assert resp.status == 200
            pings.append(time.monotonic() - started)
            time.sleep(0.2)

    watcher = threading.Thread(target=other_user, daemon=True)
    watcher.start()
    outcomes = {}
    try:
        for name in CHOSEN:
            case = CASES[name]
            page = tech.open(f"{live}/requests/new", timeout=10).read().decode()
            data = case.make()
            body, ctype = multipart({
                "csrf_token": SERVED_CSRF.search(page).group(1), "title": name, "group": str(world.group),
                "destination": str(world.destination), "urgency": "urgent"}, f"{name}.pdf", data)
            request = urllib.request.Request(f"{live}/requests/new", data=body,
                                             headers={"Content-Type": ctype})
            started = time.monotonic()
            caplog.clear()
            try:
                with caplog.at_level("INFO", logger="signflow.upload"), \
                        tech.open(request, timeout=60) as resp:
                    outcomes[name] = (resp.status, resp.read().decode())
            except urllib.error.HTTPError as err:
                outcomes[name] = (err.code, err.read().decode())
            assert time.monotonic() - started < 45, name
            if case.refuse:
                # Support finds the refusal in the log by the reference the page shows.
                reference = upload_reference(sha256_hex(data))
                assert reference in outcomes[name][1], name
                assert any(reference in r.getMessage() for r in caplog.records), name
    finally:
        stop.set()
        watcher.join(15)

    for name, (status, page) in outcomes.items():
        case = CASES[name]
        if case.refuse:
            assert status in (413, 422), (name, status)
            assert case.refuse in page, (name, page[-600:])
        else:
            assert status == 200 and "pending" in page, (name, status)
            for label in case.removed:
                assert label in page, (name, label)
    assert pings and max(pings) < 5  # nobody else was blocked
    refused = sum(1 for n in CHOSEN if CASES[n].refuse)
    with svc.sessions() as s:
        created = s.scalar(select(func.count()).select_from(SignatureRequest))
        audited = s.scalar(select(func.count()).select_from(AuditEntry)
                           .where(AuditEntry.action == "request.created"))
        blobs = set(s.scalars(select(Blob.sha256)))
        documents = set(s.scalars(select(SignatureRequest.document_sha256)))
    assert created == audited == len(CHOSEN) - refused
    # Nothing half-created: no blob without its request (repaired files that come out
    # byte-identical share one).
    assert blobs == documents


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("page", "fx", "fy"), [("1", "1.5", "0.5"), ("1", "0.5", "-0.1"),
                                                 ("3", "0.5", "0.5"), ("0", "0.5", "0.5")])
def test_a_tap_outside_the_page_is_refused_and_changes_nothing(app, svc, world, page, fx, fy):
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)  # two pages
    before = _audit_count(svc)
    resp = tech.post(f"/requests/{rid}/stamp", data={
        "csrf_token": csrf_token(tech, f"/requests/{rid}"), "page": page, "fx": fx, "fy": fy})
    assert resp.status_code == 400
    assert "Tap inside a page of the document" in resp.get_data(as_text=True)
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).stamp_position is None
    assert _audit_count(svc) == before
    assert tech.get(f"/requests/{rid}").status_code == 200  # and the server keeps answering


def _audit_count(svc) -> int:
    with svc.sessions() as s:
        return s.scalar(select(func.count()).select_from(AuditEntry)) or 0
