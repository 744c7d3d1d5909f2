"""The stored audit tree (core.audit.tree): roots and proofs read from stored nodes
equal the RFC 6962/9162 reference and a from-scratch recomputation; verification
checks the nodes, full and incremental; the migration backfills existing logs."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, create_engine, delete, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from signflow import auditverify as av
from signflow.core.audit import checkpoints, tree
from signflow.core.audit import log as audit
from signflow.core.audit import verify as audit_verify
from signflow.core.audit.log import Actor
from signflow.core.errors import AuditIntegrityError
from signflow.db import Base, make_engine, make_session_factory
from signflow.migrate import alembic_config, upgrade
from signflow.models import AuditAction, AuditEntry, AuditHead, AuditTreeNode, AuditVerification
from tests.conftest import reset_postgres

ORIGIN = "signflow.test/audit"
T0 = datetime(2025, 3, 1, 3, 12, tzinfo=UTC)
NURSE = Actor(id=7, name="Nurse Joy", role="technician", ip="10.0.0.7")
MERKLE = json.loads((Path(__file__).parent / "vectors" / "rfc6962_merkle.json").read_text())
VECTOR_LEAVES = [av.hash_leaf(bytes.fromhex(x)) for x in MERKLE["leaves"]]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(made)
    yield made
    made.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        session.add(AuditHead(id=1, size=0))
    return factory


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def fill(sessions: sessionmaker[Session], count: int) -> None:
    with sessions() as session, session.begin():
        for i in range(count):
            audit.append(session, now=T0 + timedelta(seconds=i), actor=NURSE,
                         action=AuditAction.DOCUMENT_VIEWED, request_id=100 + i % 7, n=i)


def leaves_of(sessions: sessionmaker[Session]) -> list[bytes]:
    with sessions() as session:
        return [bytes(x) for x in session.scalars(select(AuditEntry.leaf_hash).order_by(AuditEntry.seq))]


def stored_nodes(sessions: sessionmaker[Session]) -> dict[tuple[int, int], bytes]:
    with sessions() as session:
        rows = session.execute(select(AuditTreeNode.level, AuditTreeNode.idx, AuditTreeNode.hash))
        return {(level, idx): bytes(h) for level, idx, h in rows}


def checkpoint(sessions: sessionmaker[Session], key: Ed25519PrivateKey) -> None:
    with sessions() as session, session.begin():
        checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)


def full(sessions: sessionmaker[Session], key: Ed25519PrivateKey, *, record: bool = False) -> av.VerifyResult:
    with sessions() as session, session.begin():
        return checkpoints.verify_log(session, public_key=key.public_key(), origin=ORIGIN,
                                      now=T0 if record else None)


def incremental(sessions: sessionmaker[Session], key: Ed25519PrivateKey) -> av.VerifyResult:
    with sessions() as session, session.begin():
        return checkpoints.verify_log_since_verified(session, public_key=key.public_key(),
                                                     origin=ORIGIN, now=T0)


def tamper(sessions: sessionmaker[Session], statement) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session, session.begin():
        session.execute(statement)


# --------------------------------------------------------------------------- same roots, same proofs


@pytest.mark.parametrize("stored_level", [1, 2, 4])
def test_stored_state_gives_the_reference_vectors(sessions, monkeypatch, stored_level) -> None:
    # The reference tree has 8 leaves: lower stored levels make its nodes come from the table.
    monkeypatch.setattr(tree, "STORED_LEVEL", stored_level)
    monkeypatch.setattr(tree, "GROUP", 1 << stored_level)
    with sessions() as session, session.begin():
        for seq, leaf in enumerate(VECTOR_LEAVES):
            session.execute(insert(AuditEntry).values(
                seq=seq, time=T0, actor_id=None, action=AuditAction.DEMO_SEEDED, request_id=None,
                line="{}", leaf_hash=leaf))
            tree.on_append(session, seq, leaf)
    if stored_level < 4:
        assert stored_nodes(sessions)  # the path under test
    with sessions() as session:
        for size in range(1, 9):
            assert tree.stored_root(session, size).hex() == MERKLE["roots"][size - 1]
        for vector in MERKLE["inclusion"]:
            index, size = vector["leaf"] - 1, vector["size"]
            ranges = av.inclusion_ranges(index, size)
            stored = tree.StoredTree.load(session, size, ranges)
            assert [stored.range_hash(a, b).hex() for a, b in ranges] == vector["proof"]
        for vector in MERKLE["consistency"]:
            ranges = av.consistency_ranges(vector["size1"], vector["size2"])
            stored = tree.StoredTree.load(session, vector["size2"], ranges)
            assert [stored.range_hash(a, b).hex() for a, b in ranges] == vector["proof"]


def test_roots_and_proofs_equal_a_recomputation_at_every_size(sessions) -> None:
    fill(sessions, 300)
    leaves = leaves_of(sessions)
    with sessions() as session:
        for size in range(1, 301):
            assert tree.stored_root(session, size) == av.tree_root(leaves[:size]), size
            probes = sorted({0, size // 3, size // 2, size - 1})
            olds = sorted({1, size // 2, max(1, size - 17), size})
            ranges = [r for i in probes for r in av.inclusion_ranges(i, size)]
            ranges += [r for m in olds for r in av.consistency_ranges(m, size)]
            stored = tree.StoredTree.load(session, size, ranges)
            for i in probes:
                proof = [stored.range_hash(a, b) for a, b in av.inclusion_ranges(i, size)]
                assert proof == av.inclusion_proof(leaves, i, size), (i, size)
            for m in olds:
                proof = [stored.range_hash(a, b) for a, b in av.consistency_ranges(m, size)]
                assert proof == av.consistency_proof(leaves, m, size), (m, size)


def test_appends_store_the_nodes_a_rebuild_computes(sessions) -> None:
    fill(sessions, 300)
    by_append = stored_nodes(sessions)
    # 300 leaves: nodes of 16 leaves (18), 32 (9), 64 (4), 128 (2) and 256 (1).
    assert {lv: sum(1 for k in by_append if k[0] == lv) for lv in range(4, 9)} == {
        4: 18, 5: 9, 6: 4, 7: 2, 8: 1}
    with sessions() as session, session.begin():
        assert tree.rebuild(session) == len(by_append)
    assert stored_nodes(sessions) == by_append


def test_checkpoints_come_from_stored_state_not_from_the_log(sessions, key) -> None:
    fill(sessions, 70)
    checkpoint(sessions, key)
    leaves = leaves_of(sessions)
    # Leaf hashes below the last complete group of 64 made unreadable: the next
    # checkpoint (its root and its consistency with the previous one) needs only
    # the stored node over 0..63 and the leaves from 64 on, so it is still right.
    tamper(sessions, update(AuditEntry).where(AuditEntry.seq < 64).values(leaf_hash=bytes(32)))
    fill(sessions, 2)
    checkpoint(sessions, key)
    leaves += leaves_of(sessions)[70:]
    with sessions() as session:
        cp = checkpoints.latest_checkpoint(session)
        assert cp is not None and cp.size == 72 and cp.root_hash == av.tree_root(leaves)
        ranges = av.inclusion_ranges(65, 72)
        stored = tree.StoredTree.load(session, 72, ranges)
        assert [stored.range_hash(a, b) for a, b in ranges] == av.inclusion_proof(leaves, 65, 72)


# --------------------------------------------------------------------------- tampering


def test_full_verification_detects_a_modified_stored_node(sessions, key) -> None:
    fill(sessions, 100)
    checkpoint(sessions, key)
    assert full(sessions, key).ok
    tamper(sessions, update(AuditTreeNode).where(AuditTreeNode.level == 4, AuditTreeNode.idx == 3)
           .values(hash=bytes(32)))
    result = full(sessions, key)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "tree-node-modified", 48)


def test_full_verification_detects_a_missing_or_extra_node(sessions, key) -> None:
    fill(sessions, 40)
    checkpoint(sessions, key)
    tamper(sessions, delete(AuditTreeNode).where(AuditTreeNode.level == 5))
    result = full(sessions, key)
    assert (result.problem, result.first_bad_seq) == ("tree-node-missing", 0)
    tamper(sessions, insert(AuditTreeNode).values(level=5, idx=0,
                                                  hash=av.tree_root(leaves_of(sessions)[:32])))
    assert full(sessions, key).ok
    tamper(sessions, insert(AuditTreeNode).values(level=4, idx=2, hash=bytes(32)))  # past 40
    assert full(sessions, key).problem == "tree-node-modified"


def test_a_modified_node_under_a_signed_checkpoint_stops_the_next_one(sessions, key) -> None:
    fill(sessions, 64)
    checkpoint(sessions, key)
    # The node over 0..63 is the old tree's root and the first hash of the link.
    tamper(sessions, update(AuditTreeNode).where(AuditTreeNode.level == 6, AuditTreeNode.idx == 0)
           .values(hash=bytes(32)))
    fill(sessions, 3)
    with pytest.raises(AuditIntegrityError), sessions() as session, session.begin():
        checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)


def test_a_missing_node_is_an_integrity_error_not_a_wrong_root(sessions, key) -> None:
    fill(sessions, 20)
    tamper(sessions, delete(AuditTreeNode))
    with pytest.raises(AuditIntegrityError), sessions() as session, session.begin():
        checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)


# --------------------------------------------------------------------------- incremental


def test_incremental_verification_walks_only_what_is_new(sessions, key) -> None:
    fill(sessions, 50)
    checkpoint(sessions, key)
    assert incremental(sessions, key) == av.VerifyResult(ok=True, size=50)  # the first: in full
    fill(sessions, 30)
    checkpoint(sessions, key)
    fill(sessions, 5)
    assert incremental(sessions, key) == av.VerifyResult(ok=True, size=85)
    with sessions() as session:
        rows = session.execute(select(AuditVerification.size, AuditVerification.full)
                               .order_by(AuditVerification.id)).all()
    assert rows == [(50, True), (80, False)]
    # An old entry edited in place (its leaf hash left alone) is below where the
    # incremental pass starts: only a full verification reads it again.
    with sessions() as session:
        old = session.scalar(select(AuditEntry.line).where(AuditEntry.seq == 5))
    assert old is not None
    tamper(sessions, update(AuditEntry).where(AuditEntry.seq == 5)
           .values(line=old.replace("Nurse Joy", "Nurse Jay")))
    assert incremental(sessions, key).ok
    assert (full(sessions, key).problem, full(sessions, key).first_bad_seq) == ("entry-modified", 5)


def test_incremental_verification_detects_new_tampering(sessions, key) -> None:
    fill(sessions, 40)
    checkpoint(sessions, key)
    assert full(sessions, key, record=True).ok
    fill(sessions, 40)
    checkpoint(sessions, key)
    with sessions() as session:
        line = session.scalar(select(AuditEntry.line).where(AuditEntry.seq == 60))
    assert line is not None
    edited = line.replace("Nurse Joy", "Nurse Jay")
    tamper(sessions, update(AuditEntry).where(AuditEntry.seq == 60)
           .values(line=edited, leaf_hash=av.hash_leaf(edited.encode())))
    result = incremental(sessions, key)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "entry-modified", 40)
    tamper(sessions, update(AuditEntry).where(AuditEntry.seq == 60)
           .values(line=line, leaf_hash=av.hash_leaf(line.encode())))
    assert incremental(sessions, key).ok
    # A node the anchor's right edge is made of (now 80: the nodes over 0..63, 64..79).
    fill(sessions, 3)
    tamper(sessions, update(AuditTreeNode).where(AuditTreeNode.level == 6, AuditTreeNode.idx == 0)
           .values(hash=bytes(32)))
    result = incremental(sessions, key)
    assert (result.ok, result.problem) == (False, "tree-node-modified")


def test_incremental_verification_detects_a_rollback(sessions, key) -> None:
    fill(sessions, 20)
    checkpoint(sessions, key)
    assert full(sessions, key, record=True).ok
    tamper(sessions, delete(AuditEntry).where(AuditEntry.seq >= 18))
    tamper(sessions, update(AuditHead).values(size=18))
    assert incremental(sessions, key).problem == "truncated"


# --------------------------------------------------------------------------- migration


def _log_at_0008(url: str, count: int) -> list[bytes]:
    """A database at revision 0008 holding `count` entries written by the old code's
    rules (canonical lines, leaf hashes), and no tree nodes yet."""
    command.upgrade(alembic_config(url), "0008")
    engine = create_engine(url)
    leaves = []
    try:
        with engine.begin() as conn:
            rows = []
            for seq in range(count):
                line = av.canonical_json({"seq": seq, "time": audit.rfc3339(T0), "actor": NURSE.as_json(),
                                          "action": "document.viewed", "request": 5})
                leaves.append(av.hash_leaf(line.encode()))
                rows.append({"seq": seq, "time": T0, "actor_id": 7, "action": "document.viewed",
                             "request_id": 5, "line": line, "leaf_hash": leaves[-1]})
            conn.execute(AuditEntry.__table__.insert(), rows)
            conn.execute(update(AuditHead).values(size=count))
    finally:
        engine.dispose()
    return leaves


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    base = make_url(request.getfixturevalue("postgres_url"))
    name = f"{base.database}_tree_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        reset_postgres(url)
        yield url
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def test_migration_backfills_the_tree_of_an_existing_log(empty_url: str, key) -> None:
    leaves = _log_at_0008(empty_url, 300)
    upgrade(empty_url)
    engine = make_engine(empty_url)
    sessions = make_session_factory(engine)
    try:
        backfilled = stored_nodes(sessions)
        assert len(backfilled) == 34
        with sessions() as session:
            for size in range(1, 301):
                assert tree.stored_root(session, size) == av.tree_root(leaves[:size]), size
                ranges = av.inclusion_ranges(size // 2, size)
                stored = tree.StoredTree.load(session, size, ranges)
                assert [stored.range_hash(a, b) for a, b in ranges] == av.inclusion_proof(
                    leaves, size // 2, size)
        with sessions() as session, session.begin():
            tree.rebuild(session)
        assert stored_nodes(sessions) == backfilled
        # The upgraded log goes on: appends extend the backfilled tree, and it verifies.
        fill(sessions, 40)
        checkpoint(sessions, key)
        assert full(sessions, key) == av.VerifyResult(ok=True, size=340)
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(AuditTreeNode)) == 39
            assert audit_verify.last_verified(session) is None
    finally:
        engine.dispose()
