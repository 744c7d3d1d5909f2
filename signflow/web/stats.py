"""The manager's turnaround dashboard: the page, its weekly chart (SVG, a separate
image so the page needs no inline style) and the same figures as CSV."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _

from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.stats import chart, period
from signflow.core.stats import report as stats
from signflow.models import Role
from signflow.web.context import current
from signflow.web.guards import roles

bp = Blueprint("stats", __name__, url_prefix="/stats")


def group_arg() -> int | None:
    """`group`: an on-call group's id, or empty for every group."""
    raw = request.args.get("group", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInput(N_("No such on-call group: choose one from the list."))
    return int(raw)


def current_report() -> stats.Report:
    """The report the query string asks for (`from`, `to`, `group`): shared by the
    page, the chart, the CSV and the API so that they cannot disagree."""
    rc = current()
    chosen = period.parse_period(request.args.get("from"), request.args.get("to"),
                                 tz=rc.settings.timezone, now=rc.now)
    return stats.build(rc.session, user=rc.user, period=chosen, group_id=group_arg(),
                       rungs=rc.settings.escalation_levels, now=rc.now)


def _query(report: stats.Report) -> dict[str, str]:
    q = {"from": report.period.first_day.isoformat(), "to": report.period.last_day.isoformat()}
    if report.group_id is not None:
        q["group"] = str(report.group_id)
    return q


@bp.app_template_filter("duration")
def duration(seconds: int | None) -> str:
    """A turnaround in words a phone shows in one line: 45 s, 4 min 30 s, 2 h 05 min, 3 d 4 h."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return str(_("%(s)d s", s=seconds))
    if seconds < 3600:
        return str(_("%(m)d min %(s)02d s", m=seconds // 60, s=seconds % 60))
    if seconds < 86400:
        return str(_("%(h)d h %(m)02d min", h=seconds // 3600, m=seconds % 3600 // 60))
    return str(_("%(d)d d %(h)d h", d=seconds // 86400, h=seconds % 86400 // 3600))


@bp.get("/")
@roles(Role.MANAGER)
def index() -> str:
    report = current_report()
    return render_template("stats/index.html", report=report, query=_query(report),
                           milestones=stats.MILESTONES, share=stats.share)


@bp.get("/trend.svg")
@roles(Role.MANAGER)
def trend() -> Response:
    report = current_report()
    svg = render_template("stats/trend.svg", chart=chart.weekly(report), report=report)
    return Response(svg, mimetype="image/svg+xml")


@bp.get("/export.csv")
@roles(Role.MANAGER)
def export() -> Response:
    report = current_report()
    name = f"signflow-stats-{report.period.first_day}-{report.period.last_day}.csv"
    return Response(stats.as_csv(report), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
