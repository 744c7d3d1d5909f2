"""Turnaround statistics at scale: 100,000 requests (a year of a large hospital).

    python bench/bench_stats.py [--requests N] [--quick] [--db-url URL]

Setup bulk-inserts requests spread over 52 weeks, three on-call groups and the three
urgencies, each with its pages (notification deliveries) and its audit entries
(delivery, some escalations), into a freshly migrated SQLite file (or an empty
PostgreSQL database given by --db-url: its tables are created by the migrations).
Then it times the whole report over the year, over one group, and over four weeks,
against a floor measured in the same run: a plain COUNT(*) of the same period's
requests, so the ratios compare across machines. Times are CPU seconds of this process
on SQLite (in-process) and wall-clock seconds on PostgreSQL (its server does the work).
`--quick`: 2,000 requests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, insert, select

from signflow.core.stats import period as stats_period
from signflow.core.stats import report as stats
from signflow.db import make_engine, make_session_factory
from signflow.migrate import upgrade
from signflow.models import (
    AuditEntry,
    Destination,
    Job,
    NotificationDelivery,
    OnCallGroup,
    SignatureRequest,
    User,
)

T = TypeVar("T")
FIRST = date(2025, 1, 6)  # a Monday
DAY0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
SPAN = timedelta(weeks=52)
URGENCIES = ("emergency", "urgent", "routine")
STATES = ("received",) * 6 + ("delivered", "declined", "expired", "failed")
BATCH = 5000


def timed(fn: Callable[[], T], *, cpu: bool, rounds: int = 3) -> tuple[T, float, float]:
    """The best of `rounds` runs (the first warms the caches): (value, seconds, wall
    seconds). SQLite runs in-process, so there the figure is this process's CPU time (on
    a shared machine the wall clock mostly measures the neighbours); PostgreSQL works in
    its server, so there it is the wall clock."""
    best, wall_of_best, value = float("inf"), 0.0, None
    for _ in range(rounds):
        start, wall = time.process_time(), time.perf_counter()
        value = fn()
        wall = time.perf_counter() - wall
        spent = time.process_time() - start if cpu else wall
        if spent < best:
            best, wall_of_best = spent, wall
    return value, best, wall_of_best  # type: ignore[return-value]


def populate(sessions, n: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with sessions() as s, s.begin():
        dest = Destination(name="Transplant service")
        groups = [OnCallGroup(name=f"Group {i}") for i in range(3)]
        s.add_all([dest, *groups])
        s.flush()
        tech = User(username="tech", display_name="Tech", role="technician", password_hash="x",
                    created_at=DAY0)
        manager = User(username="manager", display_name="Manager", role="manager", password_hash="x",
                       created_at=DAY0)
        s.add_all([tech, manager])
        s.flush()
        job = Job(kind="notify", payload="{}", status="done", run_at=DAY0, created_at=DAY0)
        s.add(job)
        s.flush()
        requests, deliveries, entries = [], [], []
        seq = 0
        step = SPAN / n
        for i in range(n):
            created = DAY0 + step * i
            state = STATES[i % len(STATES)]
            signed = state in ("received", "delivered")
            signed_at = created + timedelta(seconds=60 + (i * 37) % 3600)
            requests.append(dict(
                id=i + 1, technician_id=tech.id, group_id=groups[i % 3].id, step=0,
                destination_id=dest.id, title="t", urgency=URGENCIES[(i // 3) % 3], note="",
                state=state, escalation_level=(i % 7 == 0) + (i % 21 == 0),
                deadline_at=created + timedelta(minutes=15), filename="x.pdf",
                original_sha256="0" * 64, document_sha256="0" * 64, page_count=1,
                signed_at=signed_at if signed else None,
                acknowledged_at=(signed_at + timedelta(seconds=(i * 53) % 7200)
                                 if state == "received" else None),
                created_at=created, updated_at=created))
            for level in (0, 1) if i % 7 == 0 else (0,):
                deliveries.append(dict(
                    job_id=job.id, request_id=i + 1, user_id=None, recipient="r", recipient_key="user:1",
                    kind="email", address="a@b.example", position=0, level=level, status="sent",
                    attempts=1, sent_at=created + timedelta(seconds=5 + i % 50 + level * 900),
                    seen_at=created + timedelta(seconds=30 + i % 500) if level == 0 else None,
                    created_at=created))
            actions = [("request.created", created)]
            if i % 7 == 0:
                actions.append(("request.escalated", created + timedelta(minutes=15)))
            if signed:
                actions.append(("request.delivered", signed_at))
            for action, when in actions:
                entries.append(dict(seq=seq, time=when, actor_id=None, action=action, request_id=i + 1,
                                    line="{}", leaf_hash=b"\0" * 32))
                seq += 1
            if len(requests) >= BATCH:
                _flush(s, requests, deliveries, entries)
        _flush(s, requests, deliveries, entries)
        return manager.id, groups[0].id


def _flush(s, requests: list, deliveries: list, entries: list) -> None:  # type: ignore[no-untyped-def, type-arg]
    for model, rows in ((SignatureRequest, requests), (NotificationDelivery, deliveries),
                        (AuditEntry, entries)):
        if rows:
            s.execute(insert(model), rows)
            rows.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2,000 requests (the test suite's run)")
    parser.add_argument("--db-url", help="an EMPTY PostgreSQL database (default: a temporary SQLite file)")
    args = parser.parse_args()
    n = 2000 if args.quick else args.requests
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        start = time.perf_counter()
        manager_id, group_id = populate(sessions, n)
        print(f"setup: {n} requests on {engine.dialect.name} in {time.perf_counter() - start:.1f} s")
        year = stats_period.make_period(FIRST, FIRST + timedelta(days=363), "UTC")
        month = stats_period.make_period(FIRST + timedelta(weeks=20), FIRST + timedelta(weeks=24, days=-1),
                                         "UTC")
        with sessions() as s:
            manager = s.get(User, manager_id)

            def floor(p: stats_period.Period) -> Callable[[], int | None]:
                return lambda: s.scalar(select(func.count()).select_from(SignatureRequest).where(
                    SignatureRequest.created_at >= p.starts_at, SignatureRequest.created_at < p.ends_at))

            def report(p: stats_period.Period, g: int | None) -> Callable[[], stats.Report]:
                return lambda: stats.build(s, user=manager, period=p, group_id=g, rungs=3,
                                           now=datetime.now(UTC))

            cpu = engine.dialect.name == "sqlite"
            unit = "CPU" if cpu else "wall"
            counted, base, _ = timed(floor(year), cpu=cpu)
            print(f"baseline COUNT(*) over the year ({counted} requests): {base * 1000:.1f} ms {unit}")
            for label, p, g in (("whole year, every group", year, None),
                                ("whole year, one group", year, group_id),
                                ("four weeks, every group", month, None)):
                built, spent, wall = timed(report(p, g), cpu=cpu)
                _, floor_spent, _ = timed(floor(p), cpu=cpu)
                total = sum(line.requests for line in built.lines)
                print(f"{label}: {total} requests, {spent * 1000:.1f} ms {unit} ({wall * 1000:.0f} ms wall) "
                      f"= {spent / max(floor_spent, 1e-6):.0f} x baseline (its own COUNT(*) "
                      f"{floor_spent * 1000:.2f} ms {unit})")
        engine.dispose()
        if args.db_url:
            print("note: the PostgreSQL database keeps the rows; drop it when done")


if __name__ == "__main__":
    main()
