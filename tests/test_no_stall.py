"""No global stall (issue 10, point 3): slow work holds no lock that others need.

An evidence report reads and signs the tree, lays out and seals its PDF without the
audit head lock, which it takes only to store its checkpoint and audit itself; on
SQLite a unit of work takes the write lock at its first write, so an upload's
sandbox run and a report's layout happen while others write. Latencies are
measured by bench/bench_stall.py; these tests check for errors and for the order
of events (a login started during a report ends before the report does)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from signflow import auditverify
from signflow.core.audit import checkpoints
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.db import make_engine, make_session_factory
from signflow.models import AuditAction, AuditEntry, Checkpoint, SignatureRequest, User
from tests.conftest import T0
from tests.factories import create_request
from tests.helpers import SERVED_CSRF, http_login, multipart
from tests.pdfs import make_pdf
from tests.tools import serving

LOGIN_USERS = ("tech", "tech2", "doc", "backup", "head", "offduty", "recipient", "cardio")
# The stored audit tree made a report of 1,000 entries about a second long: shorter than
# a few logins, so the report is made longer than several of them.
REPORT_ENTRIES = 4_000
LOGIN_PAUSE_S = 0.5  # each user logs in again half a second after the last login ended


@pytest.fixture
def live(app):
    with serving(make_server("127.0.0.1", 0, app, threaded=True)) as port:
        yield f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class Attempt:
    user: str
    started: float
    ended: float
    status: int
    path: str


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_six_concurrent_uploads_on_sqlite(live, svc, world):
    sessions = [http_login(live, "tech" if n % 2 else "tech2")[0] for n in range(6)]
    document = make_pdf(20, "Consent form")
    start = threading.Barrier(len(sessions))
    outcomes: dict[int, tuple[int, str]] = {}
    errors: list[BaseException] = []

    def upload(number: int, opener: urllib.request.OpenerDirector) -> None:
        try:
            page = opener.open(f"{live}/requests/new", timeout=60).read().decode()
            token = SERVED_CSRF.search(page)
            assert token, page[:500]
            body, ctype = multipart({
                "csrf_token": token.group(1), "title": f"Upload {number}",
                "group": str(world.group), "destination": str(world.destination),
                "urgency": "urgent"}, f"consent-{number}.pdf", document)
            request = urllib.request.Request(f"{live}/requests/new", data=body,
                                             headers={"Content-Type": ctype})
            start.wait(timeout=30)
            try:
                with opener.open(request, timeout=120) as resp:
                    outcomes[number] = (resp.status, urllib.request.urlparse(resp.url).path)
            except urllib.error.HTTPError as err:
                outcomes[number] = (err.code, err.read().decode()[-300:])
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(n, s)) for n, s in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors
    assert sorted(outcomes) == list(range(6))
    for number, (status, path) in outcomes.items():
        assert status == 200 and path.startswith("/requests/") and path[10:].isdigit(), (
            number, status, path)
    with svc.sessions() as s:
        titles = set(s.scalars(select(SignatureRequest.title)))
        created = s.scalar(select(func.count()).select_from(AuditEntry)
                           .where(AuditEntry.action == AuditAction.REQUEST_CREATED))
    assert titles == {f"Upload {n}" for n in range(6)}
    assert created == 6


def _many_entries(svc, world, request_id: int | None, count: int) -> None:
    with svc.sessions() as s, s.begin():
        auditor = Actor.of(s.get(User, world.auditor), "10.0.0.9")
        for i in range(count):
            audit.append(s, now=svc.clock() + timedelta(milliseconds=i), actor=auditor,
                         action=AuditAction.DOCUMENT_VIEWED, request_id=request_id, page=i % 7)


def test_evidence_report_while_eight_users_log_in(live, svc, world):
    rid = create_request(svc, world)
    _many_entries(svc, world, rid, REPORT_ENTRIES)
    auditor, status, _ = http_login(live, "auditor")
    assert status == 200
    stop = threading.Event()
    attempts: list[Attempt] = []
    errors: list[BaseException] = []

    def keep_logging_in(username: str) -> None:
        try:
            while not stop.is_set():
                started = time.monotonic()
                _, status, path = http_login(live, username)
                attempts.append(Attempt(username, started, time.monotonic(), status, path))
                stop.wait(LOGIN_PAUSE_S)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=keep_logging_in, args=(u,)) for u in LOGIN_USERS]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the logins are under way
        sent = time.monotonic()
        with auditor.open(f"{live}/audit/requests/{rid}/evidence.pdf", timeout=300) as resp:
            report_status, pdf = resp.status, resp.read()
        done = time.monotonic()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    assert report_status == 200 and pdf.startswith(b"%PDF-")
    failed = [a for a in attempts if a.status != 200 or a.path == "/login"]
    assert attempts and not failed, failed[:5]
    assert {a.user for a in attempts} == set(LOGIN_USERS)
    # Logins started once the report was under way and finished before it: nothing
    # the report held made them wait for it.
    during = [a for a in attempts if a.started > sent + 0.2 and a.ended < done]
    print(f"report {done - sent:.1f} s, {len(attempts)} logins, {len(during)} during it, "
          f"slowest {max(a.ended - a.started for a in attempts):.2f} s")
    assert len(during) >= 3, (done - sent, len(attempts))

    with svc.sessions() as s:
        generated = s.scalars(select(AuditEntry).where(
            AuditEntry.action == AuditAction.EVIDENCE_GENERATED)).one()
        size = auditverify.parse_canonical_line(generated.line.encode())["checkpoint"]
        assert size >= REPORT_ENTRIES
        stored = s.scalars(select(Checkpoint).where(Checkpoint.size == size)).one()
        assert stored.note.encode() in pdf or stored.note.split("\n")[2] in pdf.decode("latin-1")
        result = checkpoints.verify_log(s, public_key=svc.keys.audit_key.public_key(),
                                        origin=svc.settings.audit_origin)
    assert result.ok, result


def test_a_unit_of_work_that_only_read_holds_no_write_lock(sqlite_url):
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    actor = Actor(id=None, name="test", role="operator")
    now = T0
    try:
        with factory() as reader, factory() as writer:
            reader.begin()
            assert reader.scalars(select(AuditEntry.seq)).all() == []  # its snapshot is pinned
            started = time.monotonic()
            with writer.begin():
                audit.append(writer, now=now, actor=actor, action=AuditAction.DEMO_SEEDED)
            # Not the 30 s busy timeout: the reader held no lock the writer waited for.
            assert time.monotonic() - started < 5
            # The reader now writes: its stale snapshot is let go, not upgraded in place
            # (which fails at once with SQLITE_BUSY after another writer's commit).
            audit.append(reader, now=now, actor=actor, action=AuditAction.DEMO_SEEDED)
            reader.commit()
        with factory() as s:
            assert list(s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq))) == [0, 1]
    finally:
        engine.dispose()


def test_a_smaller_tree_head_is_never_stored_after_a_larger_one(svc, world, clock):
    key, origin = svc.keys.audit_key, svc.settings.audit_origin
    with svc.sessions() as report:
        size = checkpoints.head_size(report)
        head, _ = checkpoints.sign_head(report, signing_key=key, origin=origin, size=size)
        # Meanwhile: more entries and a checkpoint over all of them (the worker).
        _many_entries(svc, world, None, 3)
        with svc.sessions() as worker, worker.begin():
            larger = checkpoints.write_checkpoint(worker, signing_key=key, origin=origin, now=clock())
        assert larger.size == size + 3
        assert checkpoints.store_head(report, head, now=clock()) is None
        report.commit()
    # The head signed for the report is still a true prefix of the log...
    assert auditverify.open_checkpoint(head.note, origin, key.public_key()).size == size
    with svc.sessions() as s:
        sizes = list(s.scalars(select(Checkpoint.size).order_by(Checkpoint.id)))
        # ...and stored checkpoints only grow: no rollback for verify_log to find.
        assert sizes == sorted(sizes) and sizes[-1] == size + 3
        assert checkpoints.verify_log(s, public_key=key.public_key(), origin=origin).ok


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_second_factor_code_is_accepted_once_when_sent_twice_at_once(svc, world, clock):
    """SQLite no longer locks at BEGIN: the last used TOTP step is read under a lock."""
    import pyotp

    from signflow.core.accounts import mfa
    from signflow.core.errors import AuthenticationFailed

    secret = mfa.new_secret()
    with svc.sessions() as s, s.begin():
        user = s.get(User, world.doc)
        user.totp_secret_enc = mfa.seal_secret(svc.keys.master_key, user, secret)
        user.totp_last_step = None
    code = pyotp.TOTP(secret).at(clock())
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def submit() -> None:
        with svc.sessions() as s:
            actor = Actor.of(s.get(User, world.doc), "10.0.0.3")
            start.wait(timeout=30)
            try:
                mfa.verify(s, svc.keys.master_key, actor=actor, code=code, now=clock(),
                           throttle_key=b"k" * 32)
                s.commit()
                outcomes.append("accepted")
            except AuthenticationFailed:
                s.rollback()
                outcomes.append("refused")
            except BaseException as exc:  # reported in the main thread
                outcomes.append(repr(exc))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["accepted", "refused"]
