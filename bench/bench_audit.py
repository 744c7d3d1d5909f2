"""Audit log at scale, by hand: `python bench/bench_audit.py [--entries N] [--pg URL]`.

`--quick` runs every figure once on tiny inputs (the test suite does, so the
benchmark cannot rot). On a migrated SQLite instance (bench/instance.py), setup
bulk-inserts N entries built exactly as audit.append builds them (and their tree
nodes, core.audit.tree.rebuild), then measures, each against a floor measured in
the same run (ratios hold across machines, seconds do not):

- search pages, against a one-row primary-key read;
- write_checkpoint, and 20 inclusion proofs, from stored tree state (O(log N)),
  against the same one-row read and against recomputing the root from all leaves;
- verify_log (full), in entries/s, against SHA-256 leaf + node hashing of the
  same lines in memory; incremental verification after 1,000 new entries;
- the sealed evidence report of a request with 1,000 entries, and what an append
  by another writer waits meanwhile, against an append alone;
- 8 writers appending, against 8 writers doing plain inserts of the same rows,
  on SQLite and, with --pg (or SIGNFLOW_TEST_DATABASE_URL), on PostgreSQL.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import (  # noqa: E402
    BigInteger,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
)

from bench.instance import bench_instance  # noqa: E402
from signflow import auditverify  # noqa: E402
from signflow.core.accounts import users as accounts  # noqa: E402
from signflow.core.audit import checkpoints, tree  # noqa: E402
from signflow.core.audit import export as audit_export  # noqa: E402
from signflow.core.audit import log as audit  # noqa: E402
from signflow.core.evidence import report as evidence  # noqa: E402
from signflow.core.pdf import normalise as pdfcheck  # noqa: E402
from signflow.core.pki import crl as revocation  # noqa: E402
from signflow.core.requests import workflow  # noqa: E402
from signflow.db import Base, make_engine, make_session_factory  # noqa: E402
from signflow.models import AuditAction, AuditEntry, AuditHead, Destination, OnCallGroup  # noqa: E402
from tests.pdfs import make_pdf  # noqa: E402

ORIGIN = "bench.example/audit"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ACTIONS = ["login.succeeded", "document.viewed", "request.created", "request.signed"]


@dataclass(frozen=True)
class Row:
    name: str
    value: float  # seconds, or entries/s when `unit` says so
    floor_name: str
    floor: float
    target: str
    unit: str = "s"

    @property
    def ratio(self) -> float:
        # Always "how many floors": time / floor time, or floor rate / rate.
        if self.unit == "/s":
            return self.floor / self.value if self.value else float("inf")
        return self.value / self.floor if self.floor else float("inf")


def best(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def entry_row(seq: int, request_id: int) -> dict[str, Any]:
    now = T0 + timedelta(seconds=seq * 3)
    actor = audit.Actor(id=seq % 500, name=f"user{seq % 500}", role="physician", ip="10.1.2.3")
    action = ACTIONS[seq % len(ACTIONS)]
    line = audit.canonical_json({
        "seq": seq, "time": audit.rfc3339(now), "actor": actor.as_json(), "action": action,
        "request": request_id,
        "document_sha256": hashlib.sha256(seq.to_bytes(8, "big")).hexdigest(),
    })
    return {"seq": seq, "time": now, "actor_id": actor.id, "action": action,
            "request_id": request_id, "line": line, "leaf_hash": audit.leaf_hash(line.encode())}


def populate(sessions, entries: int) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session, session.begin():
        batch: list[dict[str, Any]] = []
        for seq in range(entries):
            batch.append(entry_row(seq, 1_000_000 + seq // 10))
            if len(batch) == 20_000:
                session.execute(insert(AuditEntry), batch)
                batch.clear()
        if batch:
            session.execute(insert(AuditEntry), batch)
        session.execute(AuditHead.__table__.update().values(size=entries))
        tree.rebuild(session)


def report_setup(svc, entries: int):  # type: ignore[no-untyped-def]
    """A request with `entries` audit entries of its own, and its auditor."""
    now = datetime.now(UTC)
    actor = audit.Actor(None, "bench", "operator")
    with svc.sessions() as s, s.begin():
        dest, group = Destination(name="Transplant"), OnCallGroup(name="On call")
        s.add_all([dest, group])
        s.flush()
        tech = accounts.create_user(s, actor=actor, now=now, username="tech", display_name="Tech",
                                    role="technician", password="bench password 1")
        auditor = accounts.create_user(s, actor=actor, now=now, username="auditor",
                                       display_name="Auditor", role="auditor",
                                       password="bench password 1")
        upload = pdfcheck.normalise_upload(make_pdf(1, "Consent"), max_bytes=10**7, max_pages=10)
        req = workflow.create_request(s, svc.deps, actor=audit.Actor.of(tech), now=now,
                                      upload=upload, filename="c.pdf", title="c",
                                      group_id=group.id, destination_id=dest.id, urgency="urgent")
        viewer = audit.Actor.of(auditor)
        for i in range(entries):
            audit.append(s, now=now + timedelta(milliseconds=i), actor=viewer,
                         action=AuditAction.DOCUMENT_VIEWED, request_id=req.id, page=i % 7)
        for issuer in ("root", "issuing"):
            revocation.crl(s, svc.keys, issuer=issuer, now=now)
        return req.id, audit.Actor.of(auditor)


def writers(engine: Engine, per_writer: int, work: Callable[[Any, int, int], None]) -> float:
    """Entries per second of 8 threads, each doing `per_writer` transactions."""
    factory = make_session_factory(engine)
    start = threading.Barrier(9)
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            with factory() as session:
                start.wait()
                for i in range(per_writer):
                    with session.begin():
                        work(session, number, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    start.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return 8 * per_writer / elapsed


def append_rows(engine: Engine, per_writer: int, label: str) -> list[Row]:
    """audit.append by 8 writers against plain inserts of the same rows by 8 writers."""
    plain_meta = MetaData()
    plain = Table("bench_plain_inserts", plain_meta,
                  Column("id", Integer, primary_key=True, autoincrement=True),
                  Column("seq", BigInteger), Column("time", String(40)),
                  Column("actor_id", Integer), Column("action", String(60)),
                  Column("request_id", Integer), Column("line", Text),
                  Column("leaf_hash", LargeBinary(32)))
    plain_meta.create_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.execute(select(AuditHead.id)).first() is None:
            conn.execute(insert(AuditHead).values(id=1, size=0))

    def plain_insert(session, number: int, i: int) -> None:  # type: ignore[no-untyped-def]
        row = entry_row(number * per_writer + i, number)
        row["time"] = row["time"].isoformat()
        session.execute(insert(plain), row)

    def append(session, number: int, i: int) -> None:  # type: ignore[no-untyped-def]
        audit.append(session, now=T0 + timedelta(seconds=i), actor=audit.Actor(
            id=number, name=f"w{number}", role="physician", ip="10.1.2.3"),
            action=AuditAction.DOCUMENT_VIEWED, request_id=number,
            document_sha256=hashlib.sha256(i.to_bytes(8, "big")).hexdigest())

    floors, ours = [], []
    for _ in range(3):  # interleaved, so both see the same machine
        floors.append(writers(engine, per_writer, plain_insert))
        ours.append(writers(engine, per_writer, append))
    return [Row(f"append, 8 writers, {label}", statistics.median(ours),
                "plain inserts, 8 writers", statistics.median(floors), "<= 1.25 (>= 0.8 of floor)",
                "/s")]


def pg_engine(url: str) -> tuple[Engine, Callable[[], None]]:
    base = make_engine(url)
    schema = f"bench_audit_{uuid.uuid4().hex[:10]}"
    with base.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = base.execution_options(schema_translate_map={None: schema})

    def drop() -> None:
        with base.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        base.dispose()

    return engine, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--report-entries", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=200, help="appends per writer")
    parser.add_argument("--pg", default=os.environ.get("SIGNFLOW_TEST_DATABASE_URL"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round each")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.report_entries, args.writes = 2000, 20, 5
    rounds = 1 if args.quick else 5
    n = args.entries
    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    svc, _ = bench_instance(tmp, now=datetime.now(UTC))
    key = svc.keys.audit_key
    sessions = svc.sessions
    rows: list[Row] = []
    started = time.perf_counter()
    populate(sessions, n)
    setup_s = time.perf_counter() - started

    with sessions() as session:
        one_row = best(lambda: session.execute(
            select(AuditEntry.seq).where(AuditEntry.seq == n // 2)).all(), rounds * 20)
        for name, kwargs in [("search: first page", {}),
                             ("search: deep page, action filter",
                              {"action": "request.signed", "after_seq": n // 10}),
                             ("search: request filter", {"request_id": 1_000_000 + n // 20}),
                             ("search: actor filter, deep", {"actor_id": 42, "after_seq": n // 7})]:
            rows.append(Row(name, best(lambda kw=kwargs: audit_export.search(session, **kw), rounds),
                            "one-row read", one_row, "<= 50"))
        leaves = [bytes(x) for x in session.scalars(select(AuditEntry.leaf_hash).order_by(AuditEntry.seq))]
        recompute = best(lambda: auditverify.tree_root(leaves), 1)
        lines = [line.encode() for line in session.scalars(select(AuditEntry.line).order_by(AuditEntry.seq))]

    def one_checkpoint() -> None:
        with sessions() as s, s.begin():
            audit.append(s, now=T0, actor=audit.SYSTEM, action=AuditAction.DEMO_SEEDED)
            checkpoints.write_checkpoint(s, signing_key=key, origin=ORIGIN, now=T0)

    def one_append() -> None:
        with sessions() as s, s.begin():
            audit.append(s, now=T0, actor=audit.SYSTEM, action=AuditAction.DEMO_SEEDED)

    one_checkpoint()
    cp_s = best(one_checkpoint, rounds)
    rows.append(Row(f"append + write_checkpoint, log of {n:,}", cp_s, "an append alone",
                    best(one_append, rounds), "O(log N): <= 3"))
    rows.append(Row(f"append + write_checkpoint, log of {n:,}", cp_s,
                    "root recomputed from all leaves in memory", recompute, "<< 1"))
    with sessions() as session:
        size = checkpoints.head_size(session)
        step = max(1, size // 20)
        ranges = [r for i in range(0, size, step) for r in auditverify.inclusion_ranges(i, size)]
        proofs = best(lambda: tree.StoredTree.load(session, size, ranges), rounds)
    rows.append(Row("20 inclusion proofs from stored state", proofs, "one-row read", one_row,
                    "O(log N)"))

    def floor_hash() -> None:
        sha256 = hashlib.sha256
        previous = b"\x00" * 32
        for line in lines:
            previous = sha256(b"\x01" + previous + sha256(b"\x00" + line).digest()).digest()

    hash_rate = len(lines) / best(floor_hash, rounds)
    full_s = best(lambda: _verified(sessions, key, full=True), rounds)
    rows.append(Row("verify_log, full", size / full_s, "SHA-256 leaf + node, in memory",
                    hash_rate, ">= 200,000/s (<= 2.85 at 571k/s)", "/s"))
    with sessions() as session, session.begin():
        checkpoints.verify_log(session, public_key=key.public_key(), origin=ORIGIN, now=T0)
    with sessions() as session, session.begin():
        for i in range(1000 if not args.quick else 20):
            audit.append(session, now=T0, actor=audit.SYSTEM, action=AuditAction.DEMO_SEEDED, i=i)
        checkpoints.write_checkpoint(session, signing_key=key, origin=ORIGIN, now=T0)
    incremental_s = best(lambda: _verified(sessions, key, full=False), 1)
    rows.append(Row("verify incrementally, 1,000 new entries", incremental_s, "verify_log, full",
                    full_s, "<< 1"))

    rows += report_rows(svc, args.report_entries, rounds)
    rows += append_rows(make_engine(f"sqlite:///{tmp / 'writers.db'}"), args.writes, "SQLite")
    if args.pg:
        engine, drop = pg_engine(args.pg)
        try:
            rows += append_rows(engine, args.writes, "PostgreSQL")
        finally:
            drop()
    svc.engine.dispose()

    print(f"entries: {n:,} (setup {setup_s:.1f} s)  folder: {tmp}")
    print(f"{'figure':46} {'value':>12} {'floor':>12} {'ratio':>8}  target   floor")
    for row in rows:
        fmt = (lambda v: f"{v:12,.0f}") if row.unit == "/s" else (lambda v: f"{v * 1000:10.2f}ms")
        print(f"{row.name:46} {fmt(row.value)} {fmt(row.floor)} {row.ratio:8.2f}  "
              f"{row.target}  ({row.floor_name})")


def _verified(sessions, key, *, full: bool) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        if full:
            result = checkpoints.verify_log(session, public_key=key.public_key(), origin=ORIGIN)
        else:
            result = checkpoints.verify_log_since_verified(session, public_key=key.public_key(),
                                                           origin=ORIGIN, now=T0)
        assert result.ok, result
        session.rollback()  # an incremental pass records itself: keep it repeatable


def report_rows(svc, entries: int, rounds: int) -> list[Row]:  # type: ignore[no-untyped-def]
    """The sealed evidence report, and one append's wait meanwhile (another writer)."""
    request_id, auditor = report_setup(svc, entries)
    the_seal = svc.seal

    def one_append() -> float:
        started = time.perf_counter()
        with svc.sessions() as s, s.begin():
            audit.append(s, now=T0, actor=audit.SYSTEM, action=AuditAction.DEMO_SEEDED)
        return time.perf_counter() - started

    alone = statistics.median(one_append() for _ in range(max(3, rounds)))

    def build() -> None:
        with svc.sessions() as s, s.begin():
            evidence.evidence_report(s, svc.deps, the_seal, actor=auditor, request_id=request_id,
                                     now=datetime.now(UTC), origin=ORIGIN)

    waits: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            waits.append(one_append())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report_s = best(build, max(1, rounds // 2))
    finally:
        stop.set()
        thread.join()
    return [
        Row(f"evidence report, {entries:,} entries, sealed", report_s, "1 s", 1.0, "<= 1"),
        Row("  an append meanwhile, slowest", max(waits), "one append alone", alone,
            "no wait for the report"),
    ]


if __name__ == "__main__":
    main()
