"""The turnaround report: the figures of `queries.run` arranged per group and urgency
and per week, in the one shape the page, its chart, the CSV export and the API share."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.errors import Forbidden, InvalidInput
from signflow.core.i18n import N_
from signflow.core.stats import queries
from signflow.core.stats.period import Period
from signflow.models import OnCallGroup, Role, Urgency, User

MILESTONES = queries.MILESTONES
# The people and systems that read statistics: managers, and reporting systems
# (integration accounts, whose token must carry the `stats` scope: checked at the edge).
READERS = frozenset({Role.MANAGER, Role.INTEGRATION})
_URGENCY_ORDER = {u: i for i, u in enumerate(Urgency)}


@dataclass(frozen=True)
class Timing:
    """Seconds from the upload to one milestone, over the requests that reached it."""

    count: int
    median: int | None
    p90: int | None


NO_TIMING = Timing(count=0, median=None, p90=None)


@dataclass(frozen=True)
class Line:
    """One on-call group and urgency over the period."""

    group_id: int
    group: str
    urgency: Urgency
    requests: int
    timings: tuple[Timing, ...]  # one per milestone, in MILESTONES order
    answered: tuple[int, ...]  # signed at rung 0, 1, ... (the report's `rungs`)
    escalated: int
    expired: int
    declined: int
    failed: int


@dataclass(frozen=True)
class Week:
    index: int
    first_day: date
    requests: int
    signed: int
    to_signed: Timing


@dataclass(frozen=True)
class Report:
    period: Period
    group_id: int | None
    groups: tuple[tuple[int, str], ...]  # every on-call group, for the filter
    rungs: int
    lines: tuple[Line, ...]
    weeks: tuple[Week, ...]


def share(part: int, whole: int) -> int | None:
    """A whole percentage, rounded half up; None of nothing."""
    return None if whole == 0 else (200 * part + whole) // (2 * whole)


def build(session: Session, *, user: User, period: Period, group_id: int | None, rungs: int,
          now: datetime) -> Report:
    """`rungs`: the ladder's length (the settings' escalation_levels). `now` is unused
    (the period is given) but kept: every core read takes it."""
    del now
    if user.role not in READERS:
        raise Forbidden(N_("Only managers read the statistics."))
    groups = tuple((g.id, g.name) for g in session.scalars(select(OnCallGroup).order_by(OnCallGroup.name)))
    names = dict(groups)
    if group_id is not None and group_id not in names:
        raise InvalidInput(N_("No such on-call group: choose one from the list."))
    figures = queries.run(session, period, group_id=group_id)
    totals: dict[tuple[int, str], tuple[int, int, int, int, int]] = {}
    answered: dict[tuple[int, str], dict[int, int]] = {}
    timings: dict[tuple[int, str], dict[int, Timing]] = {}
    week_counts: dict[int, tuple[int, int]] = {}
    week_times: dict[int, Timing] = {}
    for kind, g, u, k, a, b, c, d, e in figures.rows:
        key = (int(g or 0), str(u))
        if kind == "total":
            totals[key] = (int(a or 0), int(b or 0), int(c or 0), int(d or 0), int(e or 0))
        elif kind == "rung":
            answered.setdefault(key, {})[int(k or 0)] = int(a or 0)
        elif kind == "time":
            timings.setdefault(key, {})[int(k or 0)] = Timing(int(a or 0), _int(b), _int(c))
        elif kind == "week":
            week_counts[int(k or 0)] = (int(a or 0), int(b or 0))
        elif kind == "week_signed":
            week_times[int(k or 0)] = Timing(int(a or 0), _int(b), _int(c))
    # A ladder shortened since keeps the rungs its older requests were signed at.
    rungs = max([r + 1 for per in answered.values() for r in per] + [rungs])
    lines = [
        Line(group_id=gid, group=names.get(gid, str(gid)), urgency=Urgency(urg), requests=t[0],
             timings=tuple(timings.get((gid, urg), {}).get(i, NO_TIMING) for i in range(len(MILESTONES))),
             answered=tuple(answered.get((gid, urg), {}).get(r, 0) for r in range(rungs)),
             escalated=t[1], expired=t[2], declined=t[3], failed=t[4])
        for (gid, urg), t in totals.items()
    ]
    lines.sort(key=lambda line: (line.group, _URGENCY_ORDER[line.urgency]))
    weeks = tuple(
        Week(index=i, first_day=period.first_day + timedelta(days=7 * i),
             requests=week_counts.get(i, (0, 0))[0], signed=week_counts.get(i, (0, 0))[1],
             to_signed=week_times.get(i, NO_TIMING))
        for i in range(period.weeks))
    return Report(period=period, group_id=group_id, groups=groups, rungs=rungs, lines=tuple(lines),
                  weeks=weeks)


def _int(value: int | None) -> int | None:
    return None if value is None else int(value)


def line_json(report: Report, line: Line) -> dict[str, Any]:
    return {
        "group_id": line.group_id, "group": line.group, "urgency": line.urgency.value,
        "requests": line.requests,
        "seconds_from_upload": {
            name: {"count": t.count, "median": t.median, "p90": t.p90}
            for name, t in zip(MILESTONES, line.timings, strict=True)},
        "answered_at_rung": [{"rung": r, "count": n, "percent": share(n, line.requests)}
                             for r, n in enumerate(line.answered)],
        "escalated": line.escalated, "expired": line.expired, "declined": line.declined,
        "failed": line.failed,
    }


def as_json(report: Report) -> dict[str, Any]:
    return {
        "period": {"from": report.period.first_day.isoformat(), "to": report.period.last_day.isoformat()},
        "group_id": report.group_id,
        "percentile_method": "nearest-rank",
        "lines": [line_json(report, line) for line in report.lines],
        "weeks": [{"first_day": w.first_day.isoformat(), "requests": w.requests, "signed": w.signed,
                   "seconds_to_signed": {"count": w.to_signed.count, "median": w.to_signed.median,
                                         "p90": w.to_signed.p90}} for w in report.weeks],
    }


def csv_header(report: Report) -> list[str]:
    head = ["group", "urgency", "requests"]
    for name in MILESTONES:
        head += [f"{name}_count", f"{name}_median_s", f"{name}_p90_s"]
    for r in range(report.rungs):
        head += [f"answered_rung_{r}", f"answered_rung_{r}_percent"]
    return head + ["escalated", "expired", "declined", "failed"]


def csv_rows(report: Report) -> list[list[str]]:
    def cell(value: int | None) -> str:
        return "" if value is None else str(value)

    rows = []
    for line in report.lines:
        row = [line.group, line.urgency.value, str(line.requests)]
        for t in line.timings:
            row += [str(t.count), cell(t.median), cell(t.p90)]
        for n in line.answered:
            row += [str(n), cell(share(n, line.requests))]
        rows.append(row + [str(line.escalated), str(line.expired), str(line.declined), str(line.failed)])
    return rows


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(csv_header(report))
    for row in csv_rows(report):
        # A group name is typed by an administrator: no cell may start a spreadsheet formula.
        writer.writerow([f"'{c}" if c[:1] in ("=", "+", "-", "@", "\t", "\r") else c for c in row])
    return out.getvalue()
