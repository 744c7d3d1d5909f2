"""signflow.core.audit.log against real databases: SQLite files and PostgreSQL."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from signflow import auditverify
from signflow.core.audit import checkpoints
from signflow.core.audit import export as audit_export
from signflow.core.audit import log as audit
from signflow.core.audit.log import SYSTEM, Actor
from signflow.core.errors import AuditIntegrityError, Conflict, InvalidInput
from signflow.db import Base, make_engine, make_session_factory
from signflow.models import AuditAction, AuditEntry, AuditHead, Checkpoint

ORIGIN = "signflow.test/audit"
T0 = datetime(2025, 3, 1, 3, 12, tzinfo=UTC)
NURSE = Actor(id=7, name="Nurse Joy", role="technician", ip="10.0.0.7")
DOCTOR = Actor(id=9, name="Dr House", role="physician", ip="10.0.0.9")


def ensure_head(sessions: sessionmaker[Session]) -> None:
    """What the Alembic migration does: the single head row exists before any writer."""
    with sessions() as session, session.begin():
        if session.get(AuditHead, 1) is None:
            session.add(AuditHead(id=1, size=0))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """A throw-away schema in this worker's database, dropped afterwards."""
    base = make_engine(postgres_url)
    schema = f"audit_test_{uuid.uuid4().hex[:10]}"
    with base.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = base.execution_options(schema_translate_map={None: schema})
    try:
        Base.metadata.create_all(engine)
        yield engine
    finally:
        with base.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        base.dispose()


@pytest.fixture
def sessions(sqlite_engine: Engine) -> sessionmaker[Session]:
    factory = make_session_factory(sqlite_engine)
    ensure_head(factory)
    return factory


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def fill(sessions: sessionmaker[Session], count: int, start: datetime = T0) -> None:
    with sessions() as session, session.begin():
        for i in range(count):
            actor = NURSE if i % 3 else DOCTOR
            audit.append(
                session,
                now=start + timedelta(minutes=i),
                actor=actor,
                action="request.created" if i % 4 == 0 else "document.viewed",
                request_id=100 + i % 5,
                note=f"entry {i}",
            )


def checkpoint(sessions: sessionmaker[Session], key: Ed25519PrivateKey) -> Checkpoint:
    with sessions() as session, session.begin():
        return checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)


def verify(sessions: sessionmaker[Session], key: Ed25519PrivateKey) -> auditverify.VerifyResult:
    with sessions() as session:
        return checkpoints.verify_log(session, public_key=key.public_key(), origin=ORIGIN)


# --------------------------------------------------------------------------- append


def test_append_writes_canonical_lines_with_gap_free_seq(sessions: sessionmaker[Session]) -> None:
    fill(sessions, 5)
    with sessions() as session:
        rows = list(session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars())
        head = session.get(AuditHead, 1)
    assert [r.seq for r in rows] == [0, 1, 2, 3, 4]
    assert head is not None and head.size == 5
    first = json.loads(rows[0].line)
    assert first == {
        "action": "request.created",
        "actor": {"id": 9, "ip": "10.0.0.9", "name": "Dr House", "role": "physician"},
        "note": "entry 0",
        "request": 100,
        "seq": 0,
        "time": "2025-03-01T03:12:00.000000Z",
    }
    for row in rows:
        assert row.line == json.dumps(json.loads(row.line), sort_keys=True, separators=(",", ":"))
        assert row.leaf_hash == auditverify.hash_leaf(row.line.encode())
    assert rows[1].actor_id == NURSE.id and rows[1].request_id == 101


def test_append_rejects_floats_reserved_fields_and_naive_times(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session, session.begin():
        with pytest.raises(TypeError):
            audit.append(session, now=T0, actor=SYSTEM, action=AuditAction.DOCUMENT_VIEWED, amount=1.5)
        with pytest.raises(ValueError, match="reserved"):
            audit.append(session, now=T0, actor=SYSTEM, action=AuditAction.DOCUMENT_VIEWED, seq=99)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            audit.append(session, now=datetime(2025, 1, 1), actor=SYSTEM, action=AuditAction.DOCUMENT_VIEWED)
        with pytest.raises(ValueError):
            audit.append(session, now=T0, actor=SYSTEM, action=AuditAction.DOCUMENT_VIEWED, big=2**60)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_append_creates_a_missing_head_row(sqlite_engine: Engine) -> None:
    factory = make_session_factory(sqlite_engine)
    with factory() as session, session.begin():
        audit.append(session, now=T0, actor=SYSTEM, action=AuditAction.DEMO_SEEDED)
    with factory() as session:
        assert session.get(AuditHead, 1) is not None
        assert session.scalar(select(AuditEntry.seq)) == 0


def test_unicode_survives_canonicalisation(sessions: sessionmaker[Session], key) -> None:
    with sessions() as session, session.begin():
        audit.append(session, now=T0, actor=SYSTEM, action=AuditAction.DOCUMENT_VIEWED,
                     text='Zoë 心 \U0001f489 "q"')
    with sessions() as session:
        line = session.scalar(select(AuditEntry.line))
    assert line is not None and 'Zoë 心 \U0001f489 \\"q\\"' in line
    checkpoint(sessions, key)
    assert verify(sessions, key).ok


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_is_a_signed_note_over_the_tree(sessions, key) -> None:
    fill(sessions, 11)
    cp = checkpoint(sessions, key)
    with sessions() as session:
        leaves = list(
            session.execute(select(AuditEntry.leaf_hash).order_by(AuditEntry.seq)).scalars()
        )
    assert cp.size == 11
    assert cp.root_hash == auditverify.tree_root(leaves)
    vkey = auditverify.verifier_key(ORIGIN, key.public_key())
    name, public = auditverify.parse_verifier_key(vkey)
    opened = auditverify.open_checkpoint(cp.note, name, public)
    assert (opened.origin, opened.size, opened.root) == (ORIGIN, 11, cp.root_hash)
    body, _, signature = cp.note.partition("\n\n")
    assert body.split("\n") == [ORIGIN, "11", auditverify.base64.b64encode(cp.root_hash).decode()]
    assert signature.encode().startswith(b"\xe2\x80\x94 " + ORIGIN.encode() + b" ")


def test_checkpoint_is_skipped_when_nothing_was_appended(sessions, key) -> None:
    fill(sessions, 3)
    first = checkpoint(sessions, key)
    again = checkpoint(sessions, key)
    assert again.id == first.id
    fill(sessions, 1)
    third = checkpoint(sessions, key)
    assert third.id != first.id and third.size == 4
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Checkpoint)) == 2


def test_checkpoint_refuses_to_sign_a_rewritten_history(sessions, key) -> None:
    fill(sessions, 6)
    checkpoint(sessions, key)
    forged = '{"action":"forged","actor":null,"request":null,"seq":2,"time":"x"}'
    with sessions() as session, session.begin():
        session.execute(
            update(AuditEntry)
            .where(AuditEntry.seq == 2)
            .values(line=forged, leaf_hash=auditverify.hash_leaf(forged.encode()))
        )
    fill(sessions, 2)
    with pytest.raises(AuditIntegrityError), sessions() as session, session.begin():
        checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)


# --------------------------------------------------------------------------- verify_log


def test_verify_log_accepts_an_honest_log(sessions, key) -> None:
    assert verify(sessions, key) == auditverify.VerifyResult(ok=True, size=0)
    fill(sessions, 9)
    checkpoint(sessions, key)
    fill(sessions, 8)
    checkpoint(sessions, key)
    fill(sessions, 3)  # not yet checkpointed: still verified entry by entry
    result = verify(sessions, key)
    assert result.ok and result.size == 20


def _tamper(sessions: sessionmaker[Session], *statements) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session, session.begin():
        for statement in statements:
            session.execute(statement)


def _line(sessions: sessionmaker[Session], seq: int) -> str:
    with sessions() as session:
        line = session.scalar(select(AuditEntry.line).where(AuditEntry.seq == seq))
    assert line is not None
    return line


@pytest.fixture
def log20(sessions, key) -> sessionmaker[Session]:
    fill(sessions, 8)
    checkpoint(sessions, key)
    fill(sessions, 12)
    checkpoint(sessions, key)
    return sessions


def test_verify_log_edited_line(log20, key) -> None:
    edited = _line(log20, 5).replace("Nurse Joy", "Nurse Jay")
    _tamper(log20, update(AuditEntry).where(AuditEntry.seq == 5).values(line=edited))
    result = verify(log20, key)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "entry-modified", 5)


def test_verify_log_edited_line_with_recomputed_hash_is_caught_by_checkpoints(log20, key) -> None:
    edited = _line(log20, 12).replace("Nurse Joy", "Nurse Jay")
    _tamper(
        log20,
        update(AuditEntry)
        .where(AuditEntry.seq == 12)
        .values(line=edited, leaf_hash=auditverify.hash_leaf(edited.encode())),
    )
    result = verify(log20, key)
    # The checkpoint of size 8 still matches: the damage is located in 8..19.
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "entry-modified", 8)


def test_verify_log_deleted_row(log20, key) -> None:
    _tamper(log20, delete(AuditEntry).where(AuditEntry.seq == 6))
    result = verify(log20, key)
    assert (result.problem, result.first_bad_seq) == ("gap", 6)


def test_verify_log_swapped_rows(log20, key) -> None:
    a, b = _line(log20, 3), _line(log20, 4)
    _tamper(
        log20,
        update(AuditEntry)
        .where(AuditEntry.seq == 3)
        .values(line=b, leaf_hash=auditverify.hash_leaf(b.encode())),
        update(AuditEntry)
        .where(AuditEntry.seq == 4)
        .values(line=a, leaf_hash=auditverify.hash_leaf(a.encode())),
    )
    result = verify(log20, key)
    assert (result.problem, result.first_bad_seq) == ("reordered", 3)


def test_verify_log_truncated_tail(log20, key) -> None:
    _tamper(
        log20,
        delete(AuditEntry).where(AuditEntry.seq >= 17),
        update(AuditHead).values(size=17),
    )
    result = verify(log20, key)
    assert (result.problem, result.first_bad_seq) == ("truncated", 17)


def test_verify_log_checkpoint_signed_by_another_key(log20, key) -> None:
    intruder = Ed25519PrivateKey.generate()
    with log20() as session:
        cp = session.execute(select(Checkpoint).where(Checkpoint.size == 20)).scalar_one()
        body = auditverify.checkpoint_body(ORIGIN, 20, cp.root_hash)
    forged = auditverify.sign_note(body, ORIGIN, intruder)
    _tamper(log20, update(Checkpoint).where(Checkpoint.size == 20).values(note=forged))
    assert verify(log20, key).problem == "checkpoint-signature"


def test_verify_log_fork_and_rollback(log20, key) -> None:
    # A validly signed second view of the tree at size 8: a split view.
    fake_root = auditverify.hash_leaf(b"another history")
    note = auditverify.sign_note(auditverify.checkpoint_body(ORIGIN, 8, fake_root), ORIGIN, key)
    with log20() as session, session.begin():
        session.add(Checkpoint(size=8, root_hash=fake_root, note=note, created_at=T0))
    assert verify(log20, key).problem == "fork"


def test_verify_log_checkpoint_taken_after_a_larger_one(log20, key) -> None:
    with log20() as session:
        cp8 = session.execute(select(Checkpoint).where(Checkpoint.size == 8)).scalar_one()
        note, root = cp8.note, cp8.root_hash
    with log20() as session, session.begin():
        session.add(Checkpoint(size=8, root_hash=root, note=note, created_at=T0))
    assert verify(log20, key).problem == "rollback"


def test_verify_log_checkpoint_row_edited(log20, key) -> None:
    _tamper(
        log20,
        update(Checkpoint).where(Checkpoint.size == 8).values(root_hash=bytes(32)),
    )
    assert verify(log20, key).problem == "checkpoint-modified"


# --------------------------------------------------------------------------- evidence


def test_evidence_for_request_gives_verifiable_inclusion_proofs(sessions, key) -> None:
    fill(sessions, 37)
    cp = checkpoint(sessions, key)
    fill(sessions, 5)  # newer than the checkpoint: left out
    with sessions() as session:
        evidence = audit_export.evidence_for_request(session, 102)
    assert [e.seq for e, _ in evidence] == [s for s in range(37) if s % 5 == 2]
    for entry, proof in evidence:
        assert auditverify.verify_inclusion(
            entry.leaf_hash, entry.seq, cp.size, proof, cp.root_hash
        )
        assert not auditverify.verify_inclusion(
            entry.leaf_hash, entry.seq ^ 1, cp.size, proof, cp.root_hash
        )
    with sessions() as session:
        assert audit_export.evidence_for_request(session, 999) == []


def test_evidence_refuses_a_tampered_log(sessions, key) -> None:
    fill(sessions, 10)
    checkpoint(sessions, key)
    _tamper(sessions, update(AuditEntry).where(AuditEntry.seq == 1).values(leaf_hash=bytes(32)))
    with pytest.raises(AuditIntegrityError), sessions() as session:
        audit_export.evidence_for_request(session, 102)


# --------------------------------------------------------------------------- search


def test_search_filters_and_keyset_pagination(sessions) -> None:
    fill(sessions, 60)
    with sessions() as session:
        newest = audit_export.search(session, limit=5)
        assert [e.seq for e in newest] == [59, 58, 57, 56, 55]
        pages, after = [], None
        while True:
            page = audit_export.search(session, request_id=103, after_seq=after, limit=4)
            if not page:
                break
            pages.extend(e.seq for e in page)
            after = page[-1].seq
        assert pages == [s for s in range(59, -1, -1) if s % 5 == 3]
        by_actor = audit_export.search(session, actor_id=DOCTOR.id, limit=500)
        assert [e.seq for e in by_actor] == [s for s in range(59, -1, -1) if s % 3 == 0]
        created = audit_export.search(session, action="request.created", after_seq=20, limit=500)
        assert [e.seq for e in created] == [16, 12, 8, 4, 0]
        window = audit_export.search(
            session, since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=13)
        )
        assert [e.seq for e in window] == [12, 11, 10]
        with pytest.raises(InvalidInput):
            audit_export.search(session, limit=0)
        with pytest.raises(InvalidInput):
            audit_export.search(session, since=datetime(2025, 1, 1))


# --------------------------------------------------------------------------- export


def test_export_bundle_is_complete_and_verifies(sessions, key, tmp_path: Path) -> None:
    fill(sessions, 12)
    checkpoint(sessions, key)
    fill(sessions, 3)
    out = tmp_path / "bundle"
    with sessions() as session, session.begin():
        result = audit_export.export_bundle(
            session, out, signing_key=key, origin=ORIGIN, now=T0, actor=NURSE
        )
    assert result.size == 16 and result.checkpoint_count == 2
    lines = (out / "entries.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 17
    last = json.loads(lines[15])
    assert last["action"] == "audit.exported" and last["seq"] == 15
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "000000000012",
        "000000000016",
    ]
    key_lines = (out / "audit-key.pub").read_text().split("\n", 1)
    assert key_lines[0] == result.verifier_key == auditverify.verifier_key(ORIGIN, key.public_key())
    assert key_lines[1].startswith("-----BEGIN PUBLIC KEY-----")
    assert result.verifier_key in (out / "README.txt").read_text()
    verdict = auditverify.verify_bundle(out, trusted_key=result.verifier_key)
    assert verdict == auditverify.VerifyResult(ok=True, size=16)
    assert not list(tmp_path.glob(".bundle.partial-*"))


def test_export_bundle_refuses_a_non_empty_destination(sessions, key, tmp_path: Path) -> None:
    fill(sessions, 2)
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(Conflict), sessions() as session, session.begin():
        audit_export.export_bundle(session, out, signing_key=key, origin=ORIGIN, now=T0, actor=NURSE)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with sessions() as session, session.begin():
        audit_export.export_bundle(session, empty, signing_key=key, origin=ORIGIN, now=T0, actor=NURSE)
    assert auditverify.verify_bundle(empty).ok


# --------------------------------------------------------------------------- concurrency

WRITERS = 8
PER_WRITER = 25


def _hammer(engine: Engine, key: Ed25519PrivateKey) -> None:
    factory = make_session_factory(engine)
    ensure_head(factory)
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS + 1)

    def writer(number: int) -> None:
        try:
            # One session reused across transactions, as a web worker would,
            # still holding the head object from the previous transaction
            # (expire_on_commit=False keeps its now stale size in memory).
            held: list[AuditHead | None] = []
            with factory() as session:
                start.wait()
                for i in range(PER_WRITER):
                    with session.begin():
                        held.append(session.get(AuditHead, 1))
                        audit.append(
                            session,
                            now=T0 + timedelta(seconds=i),
                            actor=Actor(id=number, name=f"w{number}", role="technician"),
                            action=AuditAction.DOCUMENT_VIEWED,
                            i=i,
                        )
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    def checkpointer() -> None:
        try:
            with factory() as session:
                start.wait()
                for _ in range(5):
                    with session.begin():
                        checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS - 1)]
    threads.append(threading.Thread(target=checkpointer))
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    total = (WRITERS - 1) * PER_WRITER
    with factory() as session:
        seqs = list(session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq)).scalars())
        per_writer = dict(
            session.execute(
                select(AuditEntry.actor_id, func.count()).group_by(AuditEntry.actor_id)
            ).all()
        )
        assert seqs == list(range(total))
        assert per_writer == dict.fromkeys(range(WRITERS - 1), PER_WRITER)
    with factory() as session, session.begin():
        checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)
    with factory() as session:
        result = checkpoints.verify_log(session, public_key=key.public_key(), origin=ORIGIN)
    assert result == auditverify.VerifyResult(ok=True, size=total)


def test_concurrent_writers_sqlite(sqlite_engine: Engine, key) -> None:
    _hammer(sqlite_engine, key)


def test_concurrent_writers_postgresql(pg_engine: Engine, key) -> None:
    _hammer(pg_engine, key)


def test_first_writers_race_to_create_the_head_on_postgresql(pg_engine: Engine) -> None:
    factory = make_session_factory(pg_engine)
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer() -> None:
        try:
            with factory() as session, session.begin():
                start.wait()
                audit.append(session, now=T0, actor=SYSTEM, action=AuditAction.KEYS_CREATED)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with factory() as session:
        seqs = list(session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq)).scalars())
    assert seqs == list(range(WRITERS))
