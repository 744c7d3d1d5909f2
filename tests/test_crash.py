"""Crash safety: an exception at every step of upload, sign and acknowledgement
(through core and through the real HTTP routes), then real `kill -9` of a
server process; afterwards requests, signatures, blobs and the audit log agree."""

from __future__ import annotations

import http.cookiejar
import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from signflow import jobs
from signflow.core.audit import checkpoints
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.notify.channels import LogNotifier
from signflow.core.ops import consistency as consistency
from signflow.core.pades import sign as signing
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.requests import activation as activation
from signflow.core.requests import outbox as outbox
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import AuditEntry, Job, RequestState, Signature, SignatureRequest, User
from signflow.services import build_services
from tests.conftest import PASSWORD, PIN, login, make_settings
from tests.factories import acknowledge_receipt, create_request, create_request_from, sign_request
from tests.helpers import upload
from tests.pdfs import make_pdf
from tests.tools import free_port

REPO = Path(__file__).resolve().parent.parent


class Injected(RuntimeError):
    """The fault we inject; anything else escaping is a real bug."""


@pytest.fixture
def settings(request, tmp_path, keys_dir, database_url):
    backend = getattr(request, "param", "database")
    return make_settings(tmp_path / "instance", keys_dir, database_url, pades_level="B-T",
                         blob_backend=backend)


def _fault_points(svc) -> dict[str, tuple[object, str]]:
    return {
        "blobs.put": (svc.blobs, "put"),
        "audit.append": (audit, "append"),
        "signing.sign_pdf": (signing, "sign_pdf"),
        "activation.consume": (activation, "consume"),
        "outbox.enqueue": (outbox, "enqueue"),
        "session.flush": (Session, "flush"),
        "session.commit": (Session, "commit"),
    }


def _arm(monkeypatch, owner: object, name: str, nth: int) -> list[int]:
    """Make owner.name raise Injected at its nth call; returns the call counter."""
    original = getattr(owner, name)
    calls = [0]

    def faulty(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            raise Injected(f"{name} call {nth}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)
    return calls


# Reading pages legitimately logs views; these are the entries a write must not leave.
WRITE_ACTIONS = [*consistency.TRANSITIONS, "request.signed", "notification.sent", "page.sent"]


def _snapshot(svc, *, writes_only: bool = False) -> tuple:
    entries = select(func.count()).select_from(AuditEntry)
    if writes_only:
        entries = entries.where(AuditEntry.action.in_(WRITE_ACTIONS))
    with svc.sessions() as s:
        states = tuple(s.execute(select(SignatureRequest.id, SignatureRequest.state,
                                        SignatureRequest.signed_sha256)
                                 .order_by(SignatureRequest.id)).all())
        return (states, s.scalar(entries),
                s.scalar(select(func.count()).select_from(Signature)),
                s.scalar(select(func.count()).select_from(Job)))


def _assert_consistent(svc) -> None:
    with svc.sessions() as s:
        assert consistency.check(s, svc.blobs) == []
        assert checkpoints.verify_log(s, public_key=svc.keys.audit_key.public_key(),
                                origin=svc.settings.audit_origin).ok


def _in_transaction(svc, action: Callable[[Session], object]) -> object:
    """What a view does: one session, the action, one commit."""
    session = svc.sessions()
    try:
        result = action(session)
        session.commit()
        return result
    finally:
        session.rollback()
        session.close()


def _sweep(svc, monkeypatch, point: str, attempt: Callable[[], object], *,
           writes_only: bool = False) -> tuple[int, object]:
    """Inject at call 1, 2, 3... of `point` until the attempt runs past every call:
    each failure must leave everything as it was."""
    owner, name = _fault_points(svc)[point]
    nth = 1
    while True:
        # Flushes and commits happen dozens of times in a step (autoflush): the first few
        # and then a geometric sample of the later ones keep the sweep affordable.
        before = _snapshot(svc, writes_only=writes_only)
        with monkeypatch.context() as patch:
            calls = _arm(patch, owner, name, nth)
            try:
                result = attempt()
            except Injected:
                after = _snapshot(svc, writes_only=writes_only)
                assert after == before, f"{point} #{nth} left a partial change"
                _assert_consistent(svc)
                nth = nth + 1 if nth < 4 or not point.startswith("session.") else (nth * 3 + 1) // 2
                continue
        assert calls[0] < nth, f"{point} #{nth} fired but was swallowed"
        return nth - 1, result


CORE_POINTS = ["blobs.put", "audit.append", "signing.sign_pdf", "activation.consume",
               "outbox.enqueue", "session.flush", "session.commit"]


@pytest.mark.parametrize("settings", ["database", "file"], indirect=True)
def test_core_faults_at_every_step(svc, world, monkeypatch, settings):
    if settings.blob_backend == "file" and not settings.database_url.startswith("sqlite"):
        pytest.skip("the file backend is independent of the database kind")
    upload_pdf = make_pdf(1, "Crash consent")
    normalised = pdfcheck.normalise_upload(upload_pdf, max_bytes=10**7, max_pages=5)

    def create() -> int:
        def action(s: Session) -> int:
            return workflow.create_request(
                s, svc.deps, actor=Actor.of(s.get(User, world.tech)), now=svc.clock(),
                upload=normalised, filename="c.pdf", title="Crash", group_id=world.group,
                destination_id=world.destination, urgency="urgent").id
        return int(_in_transaction(svc, action))  # type: ignore[call-overload]

    def signer(rid: int) -> Callable[[], object]:
        def attempt() -> object:
            def action(s: Session) -> object:
                user = s.get(User, world.doc)
                form = request_signing.prepare_signing(s, svc.deps, user=user, request_id=rid,
                                                now=svc.clock())
                return request_signing.sign_request(s, svc.deps, actor=Actor.of(user), request_id=rid,
                                                    pin=PIN,
                                             activation_token=form.activation_token,
                                             shown_sha256=form.document_sha256,
                                             now=svc.clock())
            return _in_transaction(svc, action)
        return attempt

    def acknowledger(rid: int) -> Callable[[], object]:
        return lambda: _in_transaction(svc, lambda s: workflow.acknowledge_receipt(
            s, svc.deps, actor=Actor.of(s.get(User, world.recipient)), request_id=rid, now=svc.clock()))

    covered: dict[str, int] = {}
    for point in CORE_POINTS:
        failures, rid = _sweep(svc, monkeypatch, point, create)
        covered[f"create/{point}"] = failures
        failures, _ = _sweep(svc, monkeypatch, point, signer(int(rid)))  # type: ignore[arg-type]
        covered[f"sign/{point}"] = failures
        ack = acknowledger(int(rid))  # type: ignore[arg-type]
        failures, _ = _sweep(svc, monkeypatch, point, ack)
        covered[f"ack/{point}"] = failures
        with svc.sessions() as s:
            assert s.get(SignatureRequest, rid).state == RequestState.RECEIVED
        _assert_consistent(svc)
    # Every step really was interrupted somewhere (not a vacuous sweep).
    for step, points in {"create": ["blobs.put", "audit.append", "outbox.enqueue"],
                         "sign": ["blobs.put", "audit.append", "signing.sign_pdf",
                                  "activation.consume", "outbox.enqueue"],
                         "ack": ["audit.append", "outbox.enqueue"]}.items():
        for point in [*points, "session.flush", "session.commit"]:
            assert covered[f"{step}/{point}"] >= 1, (step, point, covered)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("settings", ["database", "file"], indirect=True)
def test_http_faults_then_retry(svc, world, monkeypatch, app, settings):
    if settings.blob_backend == "file" and not settings.database_url.startswith("sqlite"):
        pytest.skip("the file backend is independent of the database kind")
    tech, doc, recipient = app.test_client(), app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    login(recipient, "recipient")

    def http(call: Callable[[], object]) -> Callable[[], object]:
        def attempt() -> object:
            resp = call()
            if resp.status_code == 500:  # the app's handler caught our fault
                raise Injected(resp.get_data(as_text=True)[:200])
            assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
            return resp
        return attempt

    def page_of(client, path: str) -> str:
        resp = client.get(path)
        if resp.status_code == 500:  # the fault hit the page's own audit entry
            raise Injected(path)
        return resp.get_data(as_text=True)

    def sign_http(rid: int) -> object:
        page = page_of(doc, f"/inbox/{rid}")
        fields = dict(re.findall(
            r'name="(csrf_token|activation|document_sha256)" type="hidden" value="([^"]*)"', page))
        return doc.post(f"/inbox/{rid}/sign", data={**fields, "pin": PIN})

    def ack(rid: int) -> object:
        page = page_of(recipient, f"/received/{rid}")
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        assert token, page[:1000]
        return recipient.post(f"/received/{rid}/acknowledge",
                              data={"csrf_token": token.group(1)})

    for point in ["blobs.put", "audit.append", "signing.sign_pdf", "outbox.enqueue",
                  "session.commit"]:
        _, resp = _sweep(svc, monkeypatch, point, http(lambda: upload(tech, world)),
                         writes_only=True)
        rid = int(re.search(r"/requests/(\d+)", resp.headers["Location"]).group(1))
        _sweep(svc, monkeypatch, point, http(lambda rid=rid: sign_http(rid)), writes_only=True)
        _sweep(svc, monkeypatch, point, http(lambda rid=rid: ack(rid)), writes_only=True)
        with svc.sessions() as s:
            assert s.get(SignatureRequest, rid).state == RequestState.RECEIVED
    _assert_consistent(svc)


def test_recover_fails_requests_whose_document_is_gone(svc, world):
    rid = create_request(svc, world)
    other = pdfcheck.normalise_upload(make_pdf(2, "Another"), max_bytes=10**7, max_pages=5)
    done = create_request_from(svc, world, other)
    sign_request(svc, done, world.doc)
    acknowledge_receipt(svc, done, world)
    with svc.sessions() as s, s.begin():
        assert consistency.recover(s, svc.deps, now=svc.clock()) == []
        req = s.get(SignatureRequest, rid)
        # Simulates a lost blob (restored database without its files, disk loss).
        svc.blobs.delete(s, req.document_sha256)
    with svc.sessions() as s:
        problems = consistency.check(s, svc.blobs)
    assert [(p.request_id, p.kind) for p in problems] == [(rid, "blob")]
    with svc.sessions() as s, s.begin():
        assert consistency.recover(s, svc.deps, now=svc.clock()) == [rid]
    with svc.sessions() as s, s.begin():
        assert consistency.recover(s, svc.deps, now=svc.clock()) == []  # idempotent
        req = s.get(SignatureRequest, rid)
        assert req.state == RequestState.FAILED
        assert "upload it again" in req.failure_reason
        entry = s.scalar(select(AuditEntry).where(AuditEntry.request_id == rid,
                                                  AuditEntry.action == "request.failed"))
        assert entry is not None and req.document_sha256 in entry.line
        problems = consistency.check(s, svc.blobs)
    # Failed requests need no content: the only remaining finding is the lost blob itself.
    assert [(p.request_id, p.kind) for p in problems] == [(rid, "blob")]


def test_check_finds_disagreements(svc, world):
    rid = create_request(svc, world)
    sign_request(svc, rid, world.doc)
    with svc.sessions() as s, s.begin():
        req = s.get(SignatureRequest, rid)
        req.state = RequestState.RECEIVED  # no acknowledgement, no audit entry
        s.delete(s.scalar(select(Signature).where(Signature.request_id == rid)))
    with svc.sessions() as s:
        kinds = sorted({p.kind for p in consistency.check(s, svc.blobs)})
    assert kinds == ["audit", "signature", "state"]


# -- kill -9 ---------------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


class Browser:
    def __init__(self, base: str, username: str,
                 answered: threading.Semaphore | None = None) -> None:
        self.base = base
        # Released at every answer, so that the test can kill the server mid-traffic.
        self.answered = answered or threading.Semaphore(0)
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = self.get("/login")
        self.post("/login", {"csrf_token": CSRF.search(page).group(1), "username": username,
                             "password": PASSWORD})

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as resp:
            page = resp.read().decode()
        self.answered.release()
        return page

    def post(self, path: str, fields: dict[str, str], files: dict[str, bytes] | None = None) -> str:
        if files:
            boundary = uuid.uuid4().hex
            body = io.BytesIO()
            for key, value in fields.items():
                body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                           f"{value}\r\n".encode())
            for key, data in files.items():
                body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; '
                           f'filename="{key}.pdf"\r\nContent-Type: application/pdf\r\n\r\n'.encode())
                body.write(data + b"\r\n")
            body.write(f"--{boundary}--\r\n".encode())
            request = urllib.request.Request(
                self.base + path, data=body.getvalue(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        else:
            request = urllib.request.Request(self.base + path,
                                             data=urllib.parse.urlencode(fields).encode())
        with self.opener.open(request, timeout=60) as resp:
            url = resp.url
        self.answered.release()
        return url


def _client_loop(base: str, world, stop: threading.Event, rng: random.Random,
                 answered: threading.Semaphore) -> None:
    """Upload, sign, acknowledge, over and over, until the server dies."""
    try:
        tech, doc, recipient = (Browser(base, u, answered) for u in ("tech", "doc", "recipient"))
        while not stop.is_set():
            page = tech.get("/requests/new")
            url = tech.post("/requests/new", {
                "csrf_token": CSRF.search(page).group(1), "title": f"Kill {rng.random()}",
                "group": str(world.group), "destination": str(world.destination),
                "urgency": "urgent"}, files={"document": make_pdf(1, f"kill {rng.random()}")})
            rid = int(re.search(r"/requests/(\d+)", url).group(1))
            page = doc.get(f"/inbox/{rid}")
            fields = dict(re.findall(
                r'name="(csrf_token|activation|document_sha256)" type="hidden" value="([^"]*)"',
                page))
            doc.post(f"/inbox/{rid}/sign", {**fields, "pin": PIN})
            page = recipient.get(f"/received/{rid}")
            recipient.post(f"/received/{rid}/acknowledge",
                           {"csrf_token": CSRF.search(page).group(1)})
    except (urllib.error.URLError, ConnectionError, OSError, AttributeError):
        return  # the server was killed under us: exactly the point


def _start_server(settings, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(settings.instance_path), SIGNFLOW_KEYS=str(settings.keys_path),
               SIGNFLOW_DATABASE_URL=settings.database_url, SIGNFLOW_ENV="development",
               SIGNFLOW_SECRET_KEY=settings.secret_key, SIGNFLOW_PADES_LEVEL=settings.pades_level,
               SIGNFLOW_BLOB_BACKEND=settings.blob_backend, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "tests.crash_server", str(port)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "serving"
    return process


@pytest.mark.parametrize("settings", ["database", "file"], indirect=True)
def test_kill_9_leaves_every_request_consistent(svc, world, settings):
    if settings.blob_backend == "file" and not settings.database_url.startswith("sqlite"):
        pytest.skip("the file backend is independent of the database kind")
    rng = random.Random(5)
    svc.engine.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    for _ in range(4):
        server = _start_server(settings, port)
        stop = threading.Event()
        answered = threading.Semaphore(0)
        client = threading.Thread(target=_client_loop, args=(base, world, stop, rng, answered))
        client.start()
        # Kill at a random point of the traffic: after a random number of answers (the three
        # logins are six), then partway into the next request. Counting answers rather than
        # sleeping a fixed 1.5-5 s spreads the kills over the same loop without waiting on a
        # slow machine, and there is always traffic to interrupt.
        wanted, deadline = rng.randint(4, 20), time.monotonic() + 60
        # A client that stopped (its loop ends on the first refused page) answers no more.
        while wanted and client.is_alive() and time.monotonic() < deadline:
            wanted -= answered.acquire(timeout=0.2)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        stop.set()
        client.join(timeout=60)
        assert not client.is_alive()
    # After the last restart: nothing half-done, nothing stuck.
    # The server ran on the wall clock: so does the worker that resumes after it.
    svc = build_services(settings, notifier=LogNotifier())
    try:
        with svc.sessions() as s:
            states = dict(s.execute(select(SignatureRequest.id, SignatureRequest.state)).all())
            assert consistency.check(s, svc.blobs) == []
        assert states, "the client never got a request through"
        assert set(states.values()) <= {RequestState.PENDING, RequestState.DELIVERED,
                                        RequestState.RECEIVED}
        with svc.sessions() as s, s.begin():
            assert consistency.recover(s, svc.deps, now=svc.clock()) == []
        jobs.run_once(svc)
        with svc.sessions() as s:
            stuck = s.scalar(select(func.count()).select_from(Job).where(
                Job.status == "pending", Job.run_at <= svc.clock()))
            assert stuck == 0
            assert checkpoints.verify_log(s, public_key=svc.keys.audit_key.public_key(),
                                    origin=svc.settings.audit_origin).ok
        # Every request can still finish: sign what is pending, acknowledge what is delivered.
        for rid, state in states.items():
            if state == RequestState.PENDING:
                sign_request(svc, rid, world.doc)
            if state in (RequestState.PENDING, RequestState.DELIVERED):
                acknowledge_receipt(svc, rid, world)
        _assert_consistent(svc)
    finally:
        svc.engine.dispose()
