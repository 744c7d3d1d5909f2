"""The manager's turnaround statistics: exact figures on both databases, the page, its
chart and CSV for the manager only, the API for a `stats` token, and bad input."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import func, select

from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Forbidden, InvalidInput
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow
from signflow.core.stats import period as stats_period
from signflow.core.stats import report as stats
from signflow.models import (
    AuditAction,
    Job,
    JobKind,
    JobStatus,
    NotificationDelivery,
    OnCallGroup,
    RequestState,
    SignatureRequest,
    User,
)
from tests.conftest import login
from tests.factories import acknowledge_receipt, create_request, integration_token, sign_request
from tests.helpers import run_jobs

# A Monday in winter (Paris is UTC+1): the period 2026-02-02 .. 2026-02-15 is two weeks.
DAY0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
FIRST, LAST = date(2026, 2, 2), date(2026, 2, 15)
# Seconds from upload to signature of ten urgent requests, in upload order.
SIGNED = [300, 60, 120, 600, 180, 240, 900, 30, 420, 90]


def _request(s: Any, world: Any, *, created: datetime, urgency: str = "urgent",
             state: RequestState = RequestState.PENDING, group_id: int | None = None,
             signed_after: float | None = None, acknowledged_after: float | None = None,
             rung: int = 0) -> SignatureRequest:
    req = SignatureRequest(
        technician_id=world.tech, group_id=group_id or world.group, step=0,
        destination_id=world.destination, title="never shown", urgency=urgency, note="",
        state=state, escalation_level=rung, deadline_at=created + timedelta(hours=1),
        filename="x.pdf", original_sha256="0" * 64, document_sha256="0" * 64, page_count=1,
        created_at=created, updated_at=created,
        signed_at=None if signed_after is None else created + timedelta(seconds=signed_after),
        acknowledged_at=(None if acknowledged_after is None
                         else created + timedelta(seconds=acknowledged_after)))
    s.add(req)
    s.flush()
    return req


def _page(s: Any, req: SignatureRequest, job: Job, *, sent_after: float,
          seen_after: float | None = None, level: int | None = 0) -> None:
    s.add(NotificationDelivery(
        job_id=job.id, request_id=req.id, user_id=None, recipient="Dr X", recipient_key="user:1",
        kind="email", address="x@hospital.example", level=level, status="sent", attempts=1,
        sent_at=req.created_at + timedelta(seconds=sent_after),
        seen_at=None if seen_after is None else req.created_at + timedelta(seconds=seen_after),
        created_at=req.created_at))


def _seed(svc: Any, world: Any) -> None:
    """Ten urgent requests of the first group signed and delivered, with pages; and the
    outcomes (declined, expired, failed, escalated) and rows outside the period."""
    with svc.sessions() as s, s.begin():
        job = Job(kind=JobKind.NOTIFY, payload="{}", status=JobStatus.DONE, run_at=DAY0, created_at=DAY0)
        s.add(job)
        s.flush()
        for i, secs in enumerate(SIGNED):
            created = DAY0 + timedelta(days=i % 7, hours=i)  # the first week: i < 7
            created = DAY0 + timedelta(days=7 + i % 3) if i >= 7 else created
            # Signed at the backup's rung for the last three; acknowledged for the first six.
            req = _request(s, world, created=created, state=RequestState.RECEIVED if i < 6
                           else RequestState.DELIVERED, signed_after=secs,
                           acknowledged_after=secs + 1000 * (i + 1) if i < 6 else None,
                           rung=1 if i >= 7 else 0)
            if i < 7:
                # Fractions of a second are cut: 10.9 s counts as 10 s on both databases.
                _page(s, req, job, sent_after=(i + 1) * 5 + 0.9, seen_after=(i + 1) * 20)
                # A later page and a delivery that is no page do not move the first page.
                _page(s, req, job, sent_after=999, level=1)
                _page(s, req, job, sent_after=1, level=None)
            audit.append(s, now=req.signed_at, actor=audit.SYSTEM, action=AuditAction.REQUEST_DELIVERED,
                         request_id=req.id)
            if i >= 7:
                audit.append(s, now=created + timedelta(seconds=10), actor=audit.SYSTEM,
                             action=AuditAction.REQUEST_ESCALATED, request_id=req.id)
                audit.append(s, now=created + timedelta(seconds=20), actor=audit.SYSTEM,
                             action=AuditAction.REQUEST_ESCALATED, request_id=req.id)
        # Routine: one declined, one expired, one failed, one pending (and signed at an
        # earlier step of its route: not a final signature).
        for state, extra in ((RequestState.DECLINED, {}), (RequestState.EXPIRED, {}),
                             (RequestState.FAILED, {}), (RequestState.PENDING, {"signed_after": 50})):
            _request(s, world, created=DAY0 + timedelta(days=3), urgency="routine", state=state,
                     **extra)  # type: ignore[arg-type]
        # The other group: one emergency signed after 45 s.
        _request(s, world, created=DAY0 + timedelta(days=1), urgency="emergency",
                 group_id=world.other_group, state=RequestState.DELIVERED, signed_after=45)
        # Outside the period (Paris days): 23:30 UTC on the 1st is the 2nd in Paris (inside),
        # 23:30 UTC on the 15th is the 16th (outside), as is anything before.
        _request(s, world, created=datetime(2026, 2, 1, 23, 30, tzinfo=UTC), urgency="emergency",
                 state=RequestState.DELIVERED, signed_after=7)
        _request(s, world, created=datetime(2026, 2, 15, 23, 30, tzinfo=UTC), urgency="emergency",
                 state=RequestState.DELIVERED, signed_after=8)
        _request(s, world, created=datetime(2026, 1, 20, tzinfo=UTC), state=RequestState.DELIVERED,
                 signed_after=1)


def _report(svc: Any, world: Any, group_id: int | None = None, *, first: date = FIRST,
            last: date = LAST) -> stats.Report:
    with svc.sessions() as s:
        return stats.build(s, user=s.get(User, world.manager),
                           period=stats_period.make_period(first, last, "Europe/Paris"),
                           group_id=group_id, rungs=3, now=svc.clock())


def test_medians_and_percentiles_are_exact_on_both_databases(svc, world):
    _seed(svc, world)
    report = _report(svc, world)
    lines = {(line.group, line.urgency.value): line for line in report.lines}
    assert list(lines) == [("Anaesthesia on call", "emergency"), ("Anaesthesia on call", "urgent"),
                           ("Anaesthesia on call", "routine"), ("Cardiology on call", "emergency")]
    urgent = lines["Anaesthesia on call", "urgent"]
    assert urgent.requests == 10
    paged, opened, signed, delivered, acked = urgent.timings
    # Nearest rank: the median is the value at rank ceil(n/2), the 90th at ceil(0.9 n).
    # Signed, sorted: 30 60 90 120 180 | 240 300 420 600 900: ranks 5 and 9.
    assert signed == stats.Timing(count=10, median=180, p90=600)
    assert delivered == stats.Timing(count=10, median=180, p90=600)
    # First pages 5.9 .. 35.9 s, cut to 5 10 15 20 25 30 35: ranks 4 and 7.
    assert paged == stats.Timing(count=7, median=20, p90=35)
    assert opened == stats.Timing(count=7, median=80, p90=140)
    # Acknowledged after secs + 1000 (i + 1) for i < 6: 1300 2060 3120 4600 5180 6240; ranks 3, 6.
    assert acked == stats.Timing(count=6, median=3120, p90=6240)
    assert urgent.answered == (7, 3, 0)
    assert (urgent.escalated, urgent.expired, urgent.declined, urgent.failed) == (3, 0, 0, 0)

    routine = lines["Anaesthesia on call", "routine"]
    assert routine.requests == 4
    assert (routine.escalated, routine.expired, routine.declined, routine.failed) == (0, 1, 1, 1)
    assert routine.answered == (0, 0, 0)
    assert routine.timings[2] == stats.Timing(count=0, median=None, p90=None)  # pending: not signed

    # One request: its own value is the median and the 90th percentile; 23:30 UTC on
    # 1 February is the 2nd in Paris (inside the period), the 15th's is the 16th (outside).
    emergency = lines["Anaesthesia on call", "emergency"]
    assert emergency.requests == 1 and emergency.timings[2] == stats.Timing(1, 7, 7)
    assert lines["Cardiology on call", "emergency"].timings[2] == stats.Timing(1, 45, 45)

    # Weeks from the first day: i < 7 and the Paris-midnight one in the first, the rest in the second.
    assert [(w.first_day, w.requests, w.signed) for w in report.weeks] == [
        (date(2026, 2, 2), 7 + 1 + 4 + 1, 7 + 1 + 1), (date(2026, 2, 9), 3, 3)]
    # First week signed: 7 300 60 120 600 180 240 900 45 -> 7 45 60 120 180 | 240 300 600 900.
    assert report.weeks[0].to_signed == stats.Timing(count=9, median=180, p90=900)
    assert report.weeks[1].to_signed == stats.Timing(count=3, median=90, p90=420)

    # One group only: the other's line is gone.
    only = _report(svc, world, world.other_group)
    assert [(line.group, line.requests) for line in only.lines] == [("Cardiology on call", 1)]
    assert [w.requests for w in only.weeks] == [1, 0]


def test_figures_from_the_real_workflow_under_a_controlled_clock(svc, world, clock):
    """Upload, the worker's page, the physician opening it, signing, delivery, receipt."""
    # pyHanko checks the CRL the signature embeds against the wall clock: the test's
    # clock starts a little before the world's certificates were made (5 minutes of
    # margin) so that it signs before the wall clock's now.
    start = clock.advance(seconds=-290)
    first = create_request(svc, world)
    clock.advance(seconds=30)
    run_jobs(svc)  # pages Dr Lefèvre (at her account's e-mail)
    clock.advance(seconds=30)
    with svc.sessions() as s, s.begin():
        doc = s.get(User, world.doc)
        request_signing.review(s, svc.deps, actor=Actor.of(doc), request_id=first, now=clock())
    clock.advance(seconds=140)
    sign_request(svc, first, world.doc)  # 200 s after the upload
    clock.advance(seconds=600)
    acknowledge_receipt(svc, first, world)  # 800 s
    second = create_request(svc, world)
    clock.advance(seconds=12)
    run_jobs(svc)
    with svc.sessions() as s, s.begin():
        workflow.decline_request(s, svc.deps, actor=Actor.of(s.get(User, world.doc)),
                                 request_id=second, reason="Wrong patient", now=clock())
    day = start.astimezone(stats_period.ZoneInfo("Europe/Paris")).date()
    report = _report(svc, world, first=day - timedelta(days=1), last=day + timedelta(days=1))
    (line,) = report.lines
    assert (line.group, line.urgency.value, line.requests) == ("Anaesthesia on call", "urgent", 2)
    paged, opened, signed, delivered, acked = line.timings
    assert paged == stats.Timing(count=2, median=12, p90=30)
    assert opened == stats.Timing(count=1, median=60, p90=60)
    assert signed == delivered == stats.Timing(count=1, median=200, p90=200)
    assert acked == stats.Timing(count=1, median=800, p90=800)
    assert line.answered == (1, 0, 0) and line.declined == 1 and line.escalated == 0


class _Cells(HTMLParser):
    """The page's figures: each line's `data-csv` cells (times from their <time>)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, str]] = []
        self._field: str | None = None
        self.th_scopes: list[str | None] = []
        self.captions = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and "data-group" in a:
            self.lines.append({"group": a["data-group"] or "", "urgency": a["data-urgency"] or ""})
        elif "data-csv" in a:
            self._field = a["data-csv"]
            self.lines[-1][self._field] = ""
        elif tag == "time" and self._field and (a.get("datetime") or "").startswith("PT"):
            self.lines[-1][self._field] = re.fullmatch(r"PT(\d+)S", a["datetime"] or "").group(1)  # type: ignore[union-attr]
            self._field = None
        elif tag == "th":
            self.th_scopes.append(a.get("scope"))
        elif tag == "caption":
            self.captions += 1

    def handle_data(self, data: str) -> None:
        if self._field and data.strip() and not self.lines[-1][self._field]:
            self.lines[-1][self._field] = data.strip().split()[0].replace("–", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._field = None


def _query() -> str:
    return f"from={FIRST}&to={LAST}"


def test_the_manager_sees_the_page_the_chart_and_a_csv_that_matches_it(app, svc, world):
    _seed(svc, world)
    client = app.test_client()
    login(client, "manager")
    assert client.get("/").headers["Location"] == "/stats/"
    page = client.get(f"/stats/?{_query()}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "never shown" not in html and "Dr X" not in html  # no title, no name
    cells = _Cells()
    cells.feed(html)
    assert len(cells.lines) == 4 and cells.captions == 4 * 2 + 1
    assert cells.th_scopes and all(s in ("col", "row") for s in cells.th_scopes)

    export = client.get(f"/stats/export.csv?{_query()}")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert export.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert [(r["group"], r["urgency"]) for r in rows] == [(c["group"], c["urgency"]) for c in cells.lines]
    for row, shown in zip(rows, cells.lines, strict=True):
        for field, value in shown.items():
            assert row[field] == value, (row["group"], row["urgency"], field)
    urgent = rows[1]
    assert (urgent["requests"], urgent["signed_median_s"], urgent["signed_p90_s"]) == ("10", "180", "600")
    assert (urgent["answered_rung_1"], urgent["answered_rung_1_percent"]) == ("3", "30")

    svg = client.get(f"/stats/trend.svg?{_query()}")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    body = svg.get_data(as_text=True)
    # Nothing the strict CSP would block: no script, no style element or attribute.
    assert "<script" not in body and "<style" not in body and "style=" not in body
    assert body.count("<rect x=") >= 4 and "<title" in body
    assert f'src="/stats/trend.svg?from={FIRST}&amp;to={LAST}"' in html


@pytest.mark.parametrize("query, message", [
    ("from=2026-02-15&to=2026-02-02", "ends before it starts"),
    ("from=2026-02-02", "both the first and the last day"),
    ("to=2026-02-02", "both the first and the last day"),
    ("from=2026-02-02&to=someday", "must be a date (YYYY-MM-DD)"),
    ("from=2024-01-01&to=2026-02-02", "at most 366 days"),
    ("from=9999-12-30&to=9999-12-31", "between the years 2000 and 9998"),
    ("from=0001-01-01&to=0001-01-02", "between the years 2000 and 9998"),
    ("group=999999", "No such on-call group"),
    ("group=abc", "No such on-call group"),
])
def test_bad_input_is_a_clear_400(app, svc, world, query, message):
    client = app.test_client()
    login(client, "manager")
    for path in ("/stats/", "/stats/export.csv", "/stats/trend.svg"):
        resp = client.get(f"{path}?{query}")
        assert resp.status_code == 400, (path, resp.status_code)
        assert message in resp.get_data(as_text=True), path
    token = integration_token(svc, name="reports", scopes=("stats",)).token
    resp = client.get(f"/api/v1/stats?{query}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert message in resp.json["detail"]


def test_the_api_gives_the_same_figures_to_a_stats_token_only(app, svc, world):
    _seed(svc, world)
    token = integration_token(svc, name="reports", scopes=("stats",)).token
    client = app.test_client()
    resp = client.get(f"/api/v1/stats?{_query()}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    data = resp.json
    assert data["percentile_method"] == "nearest-rank"
    urgent = next(line for line in data["lines"] if line["urgency"] == "urgent")
    assert urgent["seconds_from_upload"]["signed"] == {"count": 10, "median": 180, "p90": 600}
    assert urgent["answered_at_rung"][1] == {"rung": 1, "count": 3, "percent": 30}
    assert [w["requests"] for w in data["weeks"]] == [13, 3]
    # A token without the scope is refused; a bound account may not even get one.
    other = integration_token(svc, name="ts", scopes=("timestamp",)).token
    resp = client.get(f"/api/v1/stats?{_query()}", headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 403
    with pytest.raises(InvalidInput):
        integration_token(svc, name="his", destination_id=world.destination, scopes=("stats",))


def test_only_managers_and_reporting_systems_read_the_statistics(svc, world):
    for who in (world.tech, world.doc, world.recipient, world.auditor, world.admin):
        with svc.sessions() as s, pytest.raises(Forbidden):
            stats.build(s, user=s.get(User, who), period=stats_period.make_period(FIRST, LAST, "UTC"),
                        group_id=None, rungs=3, now=svc.clock())


def test_the_default_period_is_the_last_four_weeks(svc, world):
    now = datetime(2026, 2, 15, 23, 30, tzinfo=UTC)  # the 16th in Paris
    chosen = stats_period.parse_period(None, "", tz="Europe/Paris", now=now)
    assert (chosen.first_day, chosen.last_day, chosen.weeks) == (date(2026, 1, 20), date(2026, 2, 16), 4)
    assert chosen.starts_at == datetime(2026, 1, 19, 23, 0, tzinfo=UTC)
    assert chosen.ends_at == datetime(2026, 2, 16, 23, 0, tzinfo=UTC)
    with svc.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OnCallGroup)) == 2


def test_the_hour_an_autumn_clock_change_adds_belongs_to_the_last_week(svc, world):
    # 5 October .. 1 November 2026 in Paris: four weeks and one hour (25 October).
    with svc.sessions() as s, s.begin():
        _request(s, world, created=datetime(2026, 11, 1, 22, 30, tzinfo=UTC),  # 23:30 in Paris
                 state=RequestState.DELIVERED, signed_after=5)
    report = _report(svc, world, first=date(2026, 10, 5), last=date(2026, 11, 1))
    assert [(w.requests, w.to_signed.median) for w in report.weeks] == [
        (0, None), (0, None), (0, None), (1, 5)]
