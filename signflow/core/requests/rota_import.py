"""Rota imports: a CSV file, or an iCalendar file (RFC 5545) exported by planning
software, recurring shifts (RRULE) expanded over a bounded horizon.

All or nothing: every line is checked (unknown physician, reversed or overlapping
shift, bad time zone, a wall-clock time the clocks skip or that happens twice, an
event without an end) and the report lists every problem with its line; only a
file without any problem is saved, in the caller's transaction, with one audit entry.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import recurring_ical_events
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_, Msg
from signflow.core.requests import localtime as localtime
from signflow.core.requests.oncall import BACKUP, PRIMARY
from signflow.models import AuditAction, OnCallGroup, Role, RotaShift, User

MAX_BYTES = 1_000_000
MAX_SHIFTS = 5000
MAX_ERRORS = 200
HORIZON_DAYS = 92  # recurring shifts are expanded this far ahead
MAX_SHIFT = timedelta(days=31)
CSV_COLUMNS = ("group", "physician", "rung", "start", "end")
RUNGS = {"primary": PRIMARY, "0": PRIMARY, "backup": BACKUP, "1": BACKUP}


@dataclass(frozen=True)
class Candidate:
    """One shift read from a file, before it is saved; `where` names its line."""

    where: Msg
    group_id: int
    user_id: int
    level: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class ImportReport:
    """What an import did: `errors` (one per bad line, message ids translated for the
    reader) and nothing saved, or `added` shifts saved and `skipped` ones already over."""

    errors: tuple[Msg, ...]
    added: int = 0
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _at(where: Msg, problem: Msg | str) -> Msg:
    """"Line 4: the shift ends before it starts." in the reader's language."""
    return Msg(N_("%(where)s: %(problem)s"),
               {"where": where, "problem": problem if isinstance(problem, Msg) else Msg(problem)})


def _problem(exc: InvalidInput) -> Msg:
    return Msg(exc.msgid, exc.params)


def _physician_index(session: Session) -> dict[str, User]:
    """Active physicians by user name and by e-mail address (lower case)."""
    index: dict[str, User] = {}
    for user in session.scalars(select(User).where(User.role == Role.PHYSICIAN, User.active.is_(True))):
        index[user.username.lower()] = user
        if user.email:
            index.setdefault(user.email.lower(), user)
    return index


def _wall(text: str) -> datetime:
    """`2026-03-29 02:30`, `2026-03-29T02:30` or with an offset (`...+02:00`, `...Z`)."""
    text = text.strip()
    if not text:
        raise InvalidInput(N_("a time is missing."))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(N_("%(text)s is not a time (write 2026-03-29 20:00)."),
                           params={'text': repr(text[:40])}) from None


def read_csv(session: Session, data: bytes, *, timezone: str, fold: int | None
             ) -> tuple[list[Candidate], list[Msg]]:
    """Shifts from a CSV file with a header line: group, physician (user name or
    e-mail), rung (primary or backup), start, end, and optionally timezone."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [Msg(N_("The file is not UTF-8 text: save it as CSV UTF-8."))]
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        return [], [_at(Msg(N_("Line %(line)s"), {"line": 1}), Msg(
            N_("the header lacks the column(s) %(missing)s (expected %(expected)s, optionally timezone)."),
            {"missing": ", ".join(missing), "expected": ", ".join(CSV_COLUMNS)}))]
    reader.fieldnames = header
    groups = {g.name.lower(): g.id for g in session.scalars(select(OnCallGroup))}
    people = _physician_index(session)
    found: list[Candidate] = []
    errors: list[Msg] = []
    for row in reader:
        where = Msg(N_("Line %(line)s"), {"line": reader.line_num})
        cells = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
        try:
            group = groups.get(" ".join(cells["group"].split()).lower())
            if group is None:
                raise InvalidInput(N_("no on-call group is called %(group)s."),
                                   params={'group': repr(cells['group'][:60])})
            user = people.get(cells["physician"].lower())
            if user is None:
                raise InvalidInput(N_("no active physician is %(physician)s."),
                                   params={'physician': repr(cells['physician'][:60])})
            level = RUNGS.get(cells["rung"].lower() or "primary")
            if level is None:
                raise InvalidInput(N_("the rung is primary or backup."))
            tz = localtime.zone(cells.get("timezone") or timezone)
            starts = localtime.instant(_wall(cells["start"]), tz, fold=fold)
            ends = localtime.instant(_wall(cells["end"]), tz, fold=fold)
        except InvalidInput as exc:
            errors.append(_at(where, _problem(exc)))
            continue
        found.append(Candidate(where, group, user.id, level, starts, ends))
    if not found and not errors:
        errors.append(Msg(N_("The file holds no shift.")))
    return found, errors


def _event_lines(data: bytes) -> list[int]:
    """The line number of each BEGIN:VEVENT, in file order (for the report)."""
    return [n for n, line in enumerate(data.splitlines(), start=1)
            if line.strip().upper() == b"BEGIN:VEVENT"]


def _ics_instant(prop: Any, *, timezone: str, fold: int | None) -> datetime:
    value = prop.dt
    if not isinstance(value, datetime):
        raise InvalidInput(N_("a whole-day event is no shift: give start and end times."))
    tzid = prop.params.get("TZID") if hasattr(prop, "params") else None
    if value.tzinfo is None:
        # A floating time, or a TZID icalendar does not know: the hospital's zone, or refused.
        tz = localtime.zone(str(tzid) if tzid else timezone)
        return localtime.instant(value, tz, fold=fold)
    key = getattr(value.tzinfo, "key", None)
    if key:
        return localtime.instant(value.replace(tzinfo=None), localtime.zone(key), fold=fold)
    return value.astimezone(UTC)


def read_ics(session: Session, data: bytes, *, group_id: int, level: int, timezone: str,
             fold: int | None, now: datetime) -> tuple[list[Candidate], list[Msg]]:
    """Shifts of one group and rung from an iCalendar file: each VEVENT (DTSTART and
    DTEND or DURATION; RRULE, RDATE and EXDATE expanded up to HORIZON_DAYS ahead) names
    its physician by an ATTENDEE e-mail address or its SUMMARY (user name or e-mail)."""
    try:
        calendar = icalendar.Calendar.from_ical(data)
    except (ValueError, IndexError, KeyError) as exc:
        return [], [Msg(N_("The file is not iCalendar (RFC 5545): %(problem)s"),
                        {"problem": str(exc)[:120]})]
    people = _physician_index(session)
    lines = _event_lines(data)
    found: list[Candidate] = []
    errors: list[Msg] = []
    users: dict[str, int] = {}
    for n, event in enumerate(calendar.walk("VEVENT")):
        uid = str(event.get("UID", ""))[:80]
        where = Msg(N_("Line %(line)s (event %(event)s)"),
                    {"line": lines[n] if n < len(lines) else "?", "event": uid or n + 1})
        try:
            if not uid:
                raise InvalidInput(N_("the event has no UID (RFC 5545 requires one)."))
            if event.get("DTSTART") is None:
                raise InvalidInput(N_("the event has no start (DTSTART)."))
            if event.get("DTEND") is None and event.get("DURATION") is None:
                raise InvalidInput(N_("the event has no end (DTEND or DURATION)."))
            for prop in (event.get("DTSTART"), event.get("DTEND")):
                if prop is not None and prop.params.get("TZID"):
                    localtime.zone(str(prop.params["TZID"]))
            attendees = event.get("ATTENDEE", [])
            names = [str(a).removeprefix("mailto:").removeprefix("MAILTO:")
                     for a in (attendees if isinstance(attendees, list) else [attendees])]
            names.append(str(event.get("SUMMARY", "")).strip())
            user = next((people[name.lower()] for name in names if name.lower() in people), None)
            if user is None:
                raise InvalidInput(N_("no active physician matches %(value)s."),
                                   params={'value': repr(', '.join(n for n in names if n)[:80])})
            _ics_instant(event["DTSTART"], timezone=timezone, fold=fold)  # the first occurrence too
            rule = event.get("RRULE")
            if rule is not None and str(rule.get("FREQ", [""])[0]).upper() in ("SECONDLY", "MINUTELY"):
                raise InvalidInput(N_("a shift does not recur every second or minute (RRULE FREQ)."))
        except InvalidInput as exc:
            errors.append(_at(where, _problem(exc)))
            continue
        users[uid] = user.id
    if errors:
        return [], errors
    horizon = now + timedelta(days=HORIZON_DAYS)
    try:
        # In order of start, lazily: a rule every minute for years costs MAX_SHIFTS steps.
        for occurrence in recurring_ical_events.of(calendar).after(now - MAX_SHIFT):
            start = occurrence["DTSTART"]
            if isinstance(start.dt, datetime) and start.dt.tzinfo is not None and start.dt > horizon:
                break
            if len(found) + len(errors) >= MAX_SHIFTS:
                errors.append(Msg(N_("More than %(max)s shifts within %(days)s days: split the file."),
                                  {"max": MAX_SHIFTS, "days": HORIZON_DAYS}))
                break
            uid = str(occurrence.get("UID", ""))[:80]
            where = Msg(N_("Event %(event)s on %(start)s"),
                        {"event": uid, "start": f"{start.dt:%Y-%m-%d %H:%M}"})
            try:
                starts = _ics_instant(start, timezone=timezone, fold=fold)
                ends = _ics_instant(occurrence["DTEND"], timezone=timezone, fold=fold)
            except InvalidInput as exc:
                errors.append(_at(where, _problem(exc)))
                continue
            if starts > horizon:
                break
            found.append(Candidate(where, group_id, users[uid], level, starts, ends))
    except Exception as exc:  # the library raises its own and dateutil's errors
        return [], [Msg(N_("The recurrence rules cannot be expanded: %(problem)s"),
                        {"problem": str(exc)[:160]})]
    if not found and not errors:
        errors.append(Msg(N_("The file holds no shift within the next %(days)s days."),
                          {"days": HORIZON_DAYS}))
    return found, errors


def _overlaps(session: Session, shifts: list[Candidate]) -> list[Msg]:
    """Two shifts of one group overlap at one rung, or for one physician: within the
    file, or with a shift already in the rota."""
    errors: list[Msg] = []
    ordered = sorted(shifts, key=lambda c: (c.group_id, c.starts_at))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.group_id != a.group_id or b.starts_at >= a.ends_at:
                break
            if b.level == a.level or b.user_id == a.user_id:
                errors.append(_at(b.where, Msg(N_("overlaps %(other)s."), {"other": a.where})))
    for c in shifts:
        clash = session.scalar(select(func.count()).select_from(RotaShift).where(
            RotaShift.group_id == c.group_id, RotaShift.starts_at < c.ends_at,
            RotaShift.ends_at > c.starts_at,
            or_(RotaShift.level == c.level, RotaShift.user_id == c.user_id)))
        if clash:
            errors.append(_at(c.where, Msg(N_("overlaps a shift already in the rota."))))
    return errors


def save(session: Session, shifts: list[Candidate], errors: list[Msg], *, actor: Actor,
         source: str, data: bytes, now: datetime) -> ImportReport:
    """Check every shift, then save all of them or none."""
    valid: list[Candidate] = []
    skipped = 0
    for c in shifts:
        if c.ends_at <= c.starts_at:
            errors.append(_at(c.where, Msg(N_("the shift ends before it starts."))))
        elif c.ends_at - c.starts_at > MAX_SHIFT:
            errors.append(_at(c.where, Msg(N_("a shift lasts %(days)s days at most."),
                                           {"days": MAX_SHIFT.days})))
        elif c.ends_at <= now:
            skipped += 1  # already over: a planning export holds the past too
        else:
            valid.append(c)
    if len(valid) > MAX_SHIFTS:
        errors.append(Msg(N_("More than %(max)s shifts: split the file."), {"max": MAX_SHIFTS}))
    if not errors:
        errors.extend(_overlaps(session, valid))
    if errors:
        extra = len(errors) - MAX_ERRORS
        shown = errors[:MAX_ERRORS] + ([Msg(N_("... and %(count)s more problems."), {"count": extra})]
                                       if extra > 0 else [])
        return ImportReport(errors=tuple(shown))
    rows = [RotaShift(group_id=c.group_id, user_id=c.user_id, level=c.level,
                      starts_at=c.starts_at, ends_at=c.ends_at) for c in valid]
    session.add_all(rows)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.ROTA_IMPORTED, request_id=None,
                 source=source, sha256=hashlib.sha256(data).hexdigest(), shifts=[r.id for r in rows],
                 skipped=skipped)
    return ImportReport(errors=(), added=len(rows), skipped=skipped)


def import_rota(session: Session, *, actor: Actor, data: bytes, filename: str, timezone: str,
                fold: int | None, group_id: int | None, level: int, now: datetime) -> ImportReport:
    """A .csv or .ics file, by its name; all of it saved, or none and the report."""
    if len(data) > MAX_BYTES:
        return ImportReport(errors=(Msg(N_("The file is larger than %(size)s kB: split it."),
                                        {"size": MAX_BYTES // 1000}),))
    if level not in (PRIMARY, BACKUP):
        raise InvalidInput(N_("A shift is primary or backup."))
    name = filename.lower()
    if name.endswith((".ics", ".ical", ".ifb")):
        if group_id is None or session.get(OnCallGroup, group_id) is None:
            raise InvalidInput(N_("Choose the group whose rota the calendar holds."))
        shifts, errors = read_ics(session, data, group_id=group_id, level=level, timezone=timezone,
                                  fold=fold, now=now)
        source = "ics"
    elif name.endswith((".csv", ".txt")):
        shifts, errors = read_csv(session, data, timezone=timezone, fold=fold)
        source = "csv"
    else:
        raise InvalidInput(N_("Import a .csv or an .ics (iCalendar) file."))
    return save(session, shifts, errors, actor=actor, source=source, data=data, now=now)
