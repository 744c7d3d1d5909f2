"""Audit log at scale: 1,000,000 entries in SQLite.

    python bench/bench_audit.py [--entries N] [--db PATH]

Setup bulk-inserts entries built exactly as audit.append builds them (same
canonical lines and leaf hashes, one transaction), then times search pages,
a checkpoint, evidence for one request, verify_log and an export + offline
verification. Figures are printed as ratios to a baseline measured in the
same run (a plain SELECT count(*) over the table, and a bare SHA-256 pass over
the leaves), so they compare across machines.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, insert, select

from signflow import auditverify
from signflow.core.audit import checkpoints
from signflow.core.audit import export as audit_export
from signflow.core.audit import log as audit
from signflow.db import Base, make_engine, make_session_factory
from signflow.models import AuditEntry, AuditHead, Checkpoint

T = TypeVar("T")
ORIGIN = "bench.example/audit"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ACTIONS = ["login.succeeded", "document.viewed", "request.created", "request.signed"]


def timed(label: str, fn: Callable[[], T], figures: dict[str, float]) -> T:
    start = time.perf_counter()
    value = fn()
    figures[label] = time.perf_counter() - start
    return value


def populate(sessions, entries: int) -> None:  # type: ignore[no-untyped-def]
    batch: list[dict[str, object]] = []
    with sessions() as session, session.begin():
        for seq in range(entries):
            now = T0 + timedelta(seconds=seq * 3)
            actor = audit.Actor(
                id=seq % 500, name=f"user{seq % 500}", role="physician", ip="10.1.2.3"
            )
            request_id = seq // 10
            action = ACTIONS[seq % len(ACTIONS)]
            line = audit.canonical_json(
                {
                    "seq": seq,
                    "time": audit.rfc3339(now),
                    "actor": actor.as_json(),
                    "action": action,
                    "request": request_id,
                    "document_sha256": hashlib.sha256(seq.to_bytes(8, "big")).hexdigest(),
                }
            )
            batch.append(
                {
                    "seq": seq,
                    "time": now,
                    "actor_id": actor.id,
                    "action": action,
                    "request_id": request_id,
                    "line": line,
                    "leaf_hash": audit.leaf_hash(line.encode()),
                }
            )
            if len(batch) == 20_000:
                session.execute(insert(AuditEntry), batch)
                batch.clear()
        if batch:
            session.execute(insert(AuditEntry), batch)
        session.add(AuditHead(id=1, size=entries))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    db_path = args.db or workdir / "audit.db"
    engine = make_engine(f"sqlite:///{db_path}")
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    key = Ed25519PrivateKey.generate()
    figures: dict[str, float] = {}
    n = args.entries

    with sessions() as session:
        existing = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    if existing == 0:
        timed("setup: bulk insert", lambda: populate(sessions, n), figures)
    else:
        # A reused database keeps its entries; its checkpoints were signed by
        # an earlier run's throw-away key.
        n = existing
        with sessions() as session, session.begin():
            session.execute(delete(Checkpoint))

    with sessions() as session:
        timed(
            "baseline: SELECT count(*)",
            lambda: session.scalar(select(func.count()).select_from(AuditEntry)),
            figures,
        )
        leaves = session.execute(select(AuditEntry.leaf_hash).order_by(AuditEntry.seq)).scalars()
        timed(
            "baseline: stream leaf_hash + sha256 each",
            lambda: [hashlib.sha256(x).digest() for x in leaves],
            figures,
        )

        timed("search: first page", lambda: audit_export.search(session), figures)
        timed(
            "search: deep page, action filter",
            lambda: audit_export.search(session, action="request.signed", after_seq=n // 10),
            figures,
        )
        timed("search: request filter", lambda: audit_export.search(session, request_id=n // 20), figures)
        timed(
            "search: actor filter, deep",
            lambda: audit_export.search(session, actor_id=42, after_seq=n // 7),
            figures,
        )
        since = T0 + timedelta(seconds=3 * n // 3)
        timed(
            "search: time window",
            lambda: audit_export.search(session, since=since, until=since + timedelta(hours=1)),
            figures,
        )

    with sessions() as session, session.begin():
        cp = timed(
            "write_checkpoint (full tree)",
            lambda: checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0),
            figures,
        )
    with sessions() as session:
        evidence = timed(
            "evidence_for_request", lambda: audit_export.evidence_for_request(session, n // 20), figures
        )
        result = timed(
            "verify_log",
            lambda: checkpoints.verify_log(session, public_key=key.public_key(), origin=ORIGIN),
            figures,
        )
    assert result.ok, result
    assert evidence and all(
        auditverify.verify_inclusion(e.leaf_hash, e.seq, cp.size, p, cp.root_hash)
        for e, p in evidence
    )
    out = workdir / "bundle"
    with sessions() as session, session.begin():
        timed(
            "export_bundle",
            lambda: audit_export.export_bundle(
                session, out, signing_key=key, origin=ORIGIN, now=T0, actor=audit.SYSTEM
            ),
            figures,
        )
    verdict = timed("auditverify.verify_bundle", lambda: auditverify.verify_bundle(out), figures)
    assert verdict.ok, verdict

    base = figures["baseline: SELECT count(*)"]
    stream = figures["baseline: stream leaf_hash + sha256 each"]
    print(f"entries: {n:,}  database: {db_path}")
    print(f"{'operation':45} {'seconds':>10} {'x count(*)':>12} {'x stream+hash':>14}")
    for label, seconds in figures.items():
        print(f"{label:45} {seconds:10.4f} {seconds / base:12.2f} {seconds / stream:14.2f}")


if __name__ == "__main__":
    main()
