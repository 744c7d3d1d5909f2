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

from signflow.models import AuditEntry, SignatureRequest
from tests.helpers import SERVED_CSRF, http_login, multipart
from tests.hostile import CASES

# The nastiest: bombs, loops, deep nesting, polyglots, encrypted, active content.
CHOSEN = ["flate-bomb-in-page", "ascii85-flate-bomb", "page-tree-loop", "nested-arrays-100k",
          "image-60000x60000", "thousands-of-pages", "encrypted-owner-only", "png-named-pdf",
          "truncated", "javascript-openaction", "already-signed", "zero-pages"]


@pytest.fixture
def live(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hostile_uploads_over_http_keep_the_server_serving(live, svc, world):
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
            body, ctype = multipart({
                "csrf_token": SERVED_CSRF.search(page).group(1), "title": name, "group": str(world.group),
                "destination": str(world.destination), "urgency": "urgent"}, f"{name}.pdf", case.make())
            request = urllib.request.Request(f"{live}/requests/new", data=body,
                                             headers={"Content-Type": ctype})
            started = time.monotonic()
            try:
                with tech.open(request, timeout=60) as resp:
                    outcomes[name] = (resp.status, resp.read().decode())
            except urllib.error.HTTPError as err:
                outcomes[name] = (err.code, err.read().decode())
            assert time.monotonic() - started < 45, name
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
    assert created == audited == len(CHOSEN) - refused
