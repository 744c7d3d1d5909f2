"""The statistics in one SQL statement, identical on SQLite and PostgreSQL.

Every time is taken as whole Unix seconds (fractions truncated) by the one
dialect-specific expression, `EPOCH`; everything else is portable SQL. Percentiles
are nearest-rank (the value at rank ceil(p * n) of the n sorted durations, so the
median of an even count is the lower middle value): exact integers, computed with
ROW_NUMBER and COUNT windows, hence the same figure on both databases (PostgreSQL's
percentile_cont interpolates and SQLite has none).

The requests of the period are read once (a MATERIALIZED common table: the
correlated look-ups below run once per request) through `ix_requests_created`; the
first page and first opening come from `ix_deliveries_request`, the delivery and the
escalations from `ix_audit_request_action`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, bindparam, text
from sqlalchemy.orm import Session

from signflow.core.stats.period import Period
from signflow.models import AuditAction, RequestState, UTCDateTime

EPOCH = {
    "sqlite": "CAST(strftime('%s', {}) AS INTEGER)",
    "postgresql": "CAST(FLOOR(EXTRACT(EPOCH FROM {})) AS BIGINT)",
}
WEEK_SECONDS = 7 * 24 * 3600
# The milestones after the upload, in the order a request reaches them; `k` in the
# statement's time rows is the index in this tuple.
MILESTONES = ("paged", "opened", "signed", "delivered", "acknowledged")
_DONE = (RequestState.SIGNED, RequestState.DELIVERED, RequestState.RECEIVED)


@dataclass(frozen=True)
class Figures:
    """The statement's rows, by kind (see `_STATEMENT`): `kind, group_id, urgency, k,
    a, b, c, d, e`."""

    rows: Sequence[tuple[Any, ...]]


def _quoted(values: Sequence[str]) -> str:
    # Enum values of the code itself (never user input), so inlined as literals.
    return ", ".join(f"'{v}'" for v in values)


def _statement(dialect: str, *, one_group: bool) -> str:
    e = EPOCH[dialect].format
    done = _quoted([s.value for s in _DONE])
    page = "FROM notification_deliveries d WHERE d.request_id = r.id AND d.level IS NOT NULL"
    durations = " UNION ALL ".join(
        f"SELECT group_id, urgency, week, {k} AS k, t_{name} - t0 AS secs FROM base "  # noqa: S608
        f"WHERE t_{name} IS NOT NULL" for k, name in enumerate(MILESTONES))
    ranks = ("ROW_NUMBER() OVER (PARTITION BY {p} ORDER BY secs) AS rn, "
             "COUNT(*) OVER (PARTITION BY {p}) AS of_n")
    # Nearest rank: ceil(n / 2) and ceil(9n / 10) in integer arithmetic.
    pick = ("COUNT(*), MAX(CASE WHEN rn = (of_n + 1) / 2 THEN secs END), "
            "MAX(CASE WHEN rn = (9 * of_n + 9) / 10 THEN secs END)")
    null = "CAST(NULL AS INTEGER)"
    # Only the code's own constants are formatted in; every value is a bound parameter.
    return f"""
WITH base AS MATERIALIZED (
  SELECT r.group_id AS group_id, r.urgency AS urgency, r.state AS state,
         r.escalation_level AS rung, {e("r.created_at")} AS t0,
         -- Weeks of 7 x 24 h from the start; an autumn clock change makes the period an
         -- hour longer than its days, and that hour belongs to the last week.
         CASE WHEN ({e("r.created_at")} - :start_epoch) / {WEEK_SECONDS} > :last_week
              THEN :last_week ELSE ({e("r.created_at")} - :start_epoch) / {WEEK_SECONDS} END AS week,
         (SELECT {e("MIN(d.sent_at)")} {page}) AS t_paged,
         (SELECT {e("MIN(d.seen_at)")} {page}) AS t_opened,
         CASE WHEN r.state IN ({done}) THEN {e("r.signed_at")} END AS t_signed,
         (SELECT {e("MIN(a.time)")} FROM audit_entries a WHERE a.request_id = r.id
            AND a.action = '{AuditAction.REQUEST_DELIVERED.value}') AS t_delivered,
         {e("r.acknowledged_at")} AS t_acknowledged,
         CASE WHEN EXISTS (SELECT 1 FROM audit_entries a WHERE a.request_id = r.id
            AND a.action = '{AuditAction.REQUEST_ESCALATED.value}') THEN 1 ELSE 0 END AS escalated
  FROM requests r
  WHERE r.created_at >= :starts_at AND r.created_at < :ends_at
  {"AND r.group_id = :group_id" if one_group else ""}
),
durations AS ({durations}),
by_row AS (SELECT group_id, urgency, k, secs, {ranks.format(p="group_id, urgency, k")}
           FROM durations),
by_week AS (SELECT week, secs, {ranks.format(p="week")} FROM durations WHERE k = 2)
SELECT 'total' AS kind, group_id, urgency, {null} AS k, COUNT(*) AS a, SUM(escalated) AS b,
       SUM(CASE WHEN state = '{RequestState.EXPIRED.value}' THEN 1 ELSE 0 END) AS c,
       SUM(CASE WHEN state = '{RequestState.DECLINED.value}' THEN 1 ELSE 0 END) AS d,
       SUM(CASE WHEN state = '{RequestState.FAILED.value}' THEN 1 ELSE 0 END) AS e
  FROM base GROUP BY group_id, urgency
UNION ALL
SELECT 'rung', group_id, urgency, rung, COUNT(*), {null}, {null}, {null}, {null}
  FROM base WHERE t_signed IS NOT NULL GROUP BY group_id, urgency, rung
UNION ALL
SELECT 'time', group_id, urgency, k, {pick}, {null}, {null}
  FROM by_row GROUP BY group_id, urgency, k
UNION ALL
SELECT 'week', {null}, CAST(NULL AS VARCHAR(20)), week, COUNT(*),
       SUM(CASE WHEN t_signed IS NOT NULL THEN 1 ELSE 0 END), {null}, {null}, {null}
  FROM base GROUP BY week
UNION ALL
SELECT 'week_signed', {null}, CAST(NULL AS VARCHAR(20)), week, {pick}, {null}, {null}
  FROM by_week GROUP BY week
"""  # noqa: S608


def run(session: Session, period: Period, *, group_id: int | None) -> Figures:
    dialect = session.get_bind().dialect.name
    if dialect not in EPOCH:
        raise RuntimeError(f"statistics are written for {sorted(EPOCH)}, not {dialect}")
    statement = text(_statement(dialect, one_group=group_id is not None)).bindparams(
        bindparam("starts_at", type_=UTCDateTime()), bindparam("ends_at", type_=UTCDateTime()),
        bindparam("start_epoch", type_=Integer()), bindparam("last_week", type_=Integer()))
    params: dict[str, object] = {"starts_at": period.starts_at, "ends_at": period.ends_at,
                                 "start_epoch": int(period.starts_at.timestamp()),
                                 "last_week": period.weeks - 1}
    if group_id is not None:
        params["group_id"] = group_id
    return Figures(rows=[tuple(row) for row in session.execute(statement, params)])
