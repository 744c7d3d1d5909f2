"""Rotas as hospitals keep them: CSV and iCalendar imports (all or nothing, one line
of report per problem), recurring shifts, and daylight saving in Europe/Paris for
imported and typed shifts alike."""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from signflow.core.requests import rota_import
from signflow.models import AuditEntry, RotaShift
from tests.conftest import T0, TEST_ACTOR, csrf_token, login
from tests.factories import count, last_sunday

PARIS_ZONE = ZoneInfo("Europe/Paris")
PARIS_SUMMER, PARIS_WINTER = timedelta(hours=2), timedelta(hours=1)
YEAR = T0.year + 1
SPRING, FALL = last_sunday(YEAR, 3), last_sunday(YEAR, 10)


def texts(report: rota_import.ImportReport) -> list[str]:
    """The report's problems as an English reader reads them."""
    return [str(problem) for problem in report.errors]


def _import(svc, data: bytes, filename: str, *, fold=None, group_id=None, level=0):
    with svc.sessions() as s, s.begin():
        return rota_import.import_rota(s, actor=TEST_ACTOR, data=data, filename=filename,
                                       timezone="Europe/Paris", fold=fold, group_id=group_id,
                                       level=level, now=svc.clock())


def _shifts(svc, user_id):
    with svc.sessions() as s:
        return [(r.starts_at, r.ends_at, r.level, r.group_id) for r in s.scalars(
            select(RotaShift).where(RotaShift.user_id == user_id).order_by(RotaShift.starts_at))]


def test_a_good_csv_is_saved_with_one_audit_entry(svc, world, clock):
    clock.now = datetime(YEAR, 3, 1, 12, tzinfo=UTC)
    csv = (f"group,physician,rung,start,end\n"
           f"Anaesthesia on call,head,primary,{SPRING - timedelta(days=1)} 20:00,{SPRING} 08:00\n"
           f" Cardiology  on call ,OFFDUTY@hospital.example,backup,{YEAR}-03-10T08:00,{YEAR}-03-10T20:00\n"
           f"Anaesthesia on call,head,primary,{YEAR}-02-01 08:00,{YEAR}-02-01 20:00\n").encode()
    report = _import(svc, csv, "rota.csv")
    assert report.ok and report.added == 2 and report.skipped == 1, report.errors
    (starts, ends, level, group), = _shifts(svc, world.head)
    # 20:00 winter time to 08:00 summer time: the spring-forward night lasts 11 hours.
    assert (starts, ends - starts, level, group) == (
        datetime.combine(SPRING - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=19),
        timedelta(hours=11), 0, world.group)
    assert _shifts(svc, world.offduty)[-1][2:] == (1, world.other_group)
    assert count(svc, AuditEntry, AuditEntry.action == "rota.imported") == 1


def test_a_bad_csv_saves_nothing_and_names_every_line(svc, world, clock):
    clock.now = datetime(YEAR, 3, 1, 12, tzinfo=UTC)
    before = count(svc, RotaShift)
    d = f"{YEAR}-03-10"
    csv = ("group,physician,rung,start,end,timezone\n"
           f"Anaesthesia on call,head,primary,{d} 08:00,{d} 20:00,\n"  # 2: good on its own
           f"Anaesthesia on call,nobody,primary,{d} 08:00,{d} 20:00,\n"  # 3: unknown user
           f"Anaesthesia on call,backup,backup,{d} 20:00,{d} 08:00,\n"  # 4: reversed
           f"Anaesthesia on call,offduty,primary,{d} 19:00,{d} 23:00,\n"  # 5: overlaps line 2
           f"Anaesthesia on call,backup,primary,{d} 08:00,{d} 20:00,Mars/Olympus\n"  # 6: bad zone
           f"Anaesthesia on call,backup,backup,{SPRING} 02:30,{SPRING} 08:00,\n"  # 7: no such time
           f"Anaesthesia on call,backup,backup,{FALL} 02:30,{FALL} 08:00,\n"  # 8: happens twice
           f"Nephrology,backup,backup,{d} 08:00,{d} 20:00,\n"  # 9: unknown group
           ).encode()
    report = _import(svc, csv, "rota.csv")
    assert not report.ok
    text = "\n".join(texts(report))
    for line, words in [(3, "no active physician is 'nobody'"), (6, "Unknown time zone 'Mars/Olympus'"),
                        (7, "does not exist in Europe/Paris"), (8, "happens twice"),
                        (9, "no on-call group is called 'Nephrology'")]:
        assert any(e.startswith(f"Line {line}:") and words in e for e in texts(report)), (line, text)
    assert "Line 4: the shift ends before it starts." in texts(report)
    assert count(svc, RotaShift) == before
    assert count(svc, AuditEntry, AuditEntry.action == "rota.imported") == 0


def test_overlaps_inside_the_file_and_with_the_rota(svc, world, clock):
    clock.now = datetime(YEAR, 3, 1, 12, tzinfo=UTC)
    d = f"{YEAR}-03-10"
    first = f"group,physician,rung,start,end\nAnaesthesia on call,head,primary,{d} 08:00,{d} 20:00\n"
    assert _import(svc, first.encode(), "a.csv").ok
    report = _import(svc, (first.replace("head", "backup")).encode(), "b.csv")
    assert texts(report) == ["Line 2: overlaps a shift already in the rota."]
    inside = first + f"Anaesthesia on call,offduty,primary,{d} 19:00,{d} 21:00\n"
    report = _import(svc, inside.replace(d, f"{YEAR}-03-11").encode(), "c.csv")
    assert "Line 3: overlaps Line 2." in texts(report)


def test_the_ambiguous_hour_is_taken_as_the_occurrence_chosen(svc, world, clock):
    clock.now = datetime(YEAR, 10, 1, 12, tzinfo=UTC)
    csv = (f"group,physician,rung,start,end\n"
           f"Anaesthesia on call,head,primary,{FALL} 02:30,{FALL} 09:00\n").encode()
    asked = _import(svc, csv, "rota.csv")
    assert ("say whether you mean the first occurrence (UTC+02:00) or the second (UTC+01:00)"
            in texts(asked)[0])
    assert _import(svc, csv, "rota.csv", fold=1).ok
    starts, ends, _level, _group = _shifts(svc, world.head)[-1]
    assert starts == datetime.combine(FALL, datetime.min.time(), UTC) + timedelta(hours=1, minutes=30)
    assert ends == datetime.combine(FALL, datetime.min.time(), UTC) + timedelta(hours=8)


def _ics(*events: str) -> bytes:
    body = "".join(events)
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Hospital planning//EN\r\n" + body
            + "END:VCALENDAR\r\n").encode()


def _event(uid: str, start: str, end: str | None, who: str, rule: str = "") -> str:
    lines = ["BEGIN:VEVENT", f"UID:{uid}", f"DTSTART;TZID=Europe/Paris:{start}"]
    if end:
        lines.append(f"DTEND;TZID=Europe/Paris:{end}")
    if rule:
        lines.append(f"RRULE:{rule}")
    lines += [f"ATTENDEE;CN=Someone:mailto:{who}", "SUMMARY:Night on call", "END:VEVENT"]
    return "\r\n".join(lines) + "\r\n"


def test_recurring_nights_from_icalendar_across_the_spring_change(svc, world, clock):
    clock.now = datetime.combine(SPRING - timedelta(days=3), datetime.min.time(), UTC)
    first = SPRING - timedelta(days=2)
    data = _ics(_event("nights@planning", f"{first:%Y%m%d}T200000",
                       f"{first + timedelta(days=1):%Y%m%d}T080000", "head@hospital.example",
                       "FREQ=DAILY;COUNT=4"))
    report = _import(svc, data, "planning.ics", group_id=world.other_group, level=1)
    assert report.ok and report.added == 4, report.errors
    nights = _shifts(svc, world.head)
    assert [e - s for s, e, _l, _g in nights] == [timedelta(hours=h) for h in (12, 11, 12, 12)]
    assert {(lvl, g) for _s, _e, lvl, g in nights} == {(1, world.other_group)}
    # Every night ends at 08:00 on the wall clock, summer time or not.
    assert [e.astimezone(PARIS_ZONE).hour for _s, e, _l, _g in nights] == [8, 8, 8, 8]


def test_a_recurring_shift_is_expanded_over_a_bounded_horizon_only(svc, world, clock):
    clock.now = datetime(YEAR, 1, 5, tzinfo=UTC)
    data = _ics(_event("forever@planning", f"{YEAR}0106T080000", f"{YEAR}0106T200000",
                       "backup@hospital.example", "FREQ=WEEKLY"))
    report = _import(svc, data, "planning.ics", group_id=world.other_group)
    assert report.ok and 12 <= report.added <= 14, report
    horizon = clock.now + timedelta(days=rota_import.HORIZON_DAYS)
    assert max(s for s, *_ in _shifts(svc, world.backup)) <= horizon


def test_bad_icalendar_files_save_nothing(svc, world, clock):
    clock.now = datetime(YEAR, 1, 5, tzinfo=UTC)
    before = count(svc, RotaShift)
    data = _ics(
        _event("ok@planning", f"{YEAR}0110T080000", f"{YEAR}0110T200000", "head@hospital.example"),
        _event("noend@planning", f"{YEAR}0111T080000", None, "head@hospital.example"),
        _event("stranger@planning", f"{YEAR}0112T080000", f"{YEAR}0112T200000", "who@elsewhere.example"),
        _event("zone@planning", f"{YEAR}0113T080000", f"{YEAR}0113T200000", "head@hospital.example")
        .replace("TZID=Europe/Paris", "TZID=Mars/Olympus"),
        _event("gap@planning", f"{SPRING:%Y%m%d}T023000", f"{SPRING:%Y%m%d}T080000", "head@hospital.example"),
        _event("flood@planning", f"{YEAR}0114T080000", f"{YEAR}0114T080100", "head@hospital.example",
               "FREQ=MINUTELY"),
    )
    report = _import(svc, data, "planning.ics", group_id=world.group)
    assert not report.ok
    joined = "\n".join(texts(report))
    assert "Line 11 (event noend@planning): the event has no end (DTEND or DURATION)." in joined, joined
    assert "(event stranger@planning): no active physician matches" in joined
    assert "(event zone@planning): Unknown time zone 'Mars/Olympus'" in joined
    assert "(event gap@planning): " in joined and "does not exist in Europe/Paris" in joined
    assert "(event flood@planning): a shift does not recur every second or minute" in joined
    assert count(svc, RotaShift) == before
    garbage = _import(svc, b"BEGIN:VCALENDAR\r\nthis is not\r\n", "x.ics", group_id=world.group)
    assert texts(garbage) and texts(garbage)[0].startswith("The file is not iCalendar")


def _admin(app):
    admin = app.test_client()
    login(admin, "admin")
    return admin, csrf_token(admin, "/admin/rota")


def test_import_over_http_reports_every_line_or_saves_the_file(app, svc, world, clock):
    admin, token = _admin(app)
    day = (clock() + timedelta(days=3)).astimezone(PARIS_ZONE).date()
    good = f"group,physician,rung,start,end\nAnaesthesia on call,head,backup,{day} 08:00,{day} 20:00\n"
    bad = good + f"Anaesthesia on call,ghost,primary,{day} 08:00,{day} 20:00\n"
    form = {"csrf_token": token, "import-group": "0", "import-level": "0", "import-fold": ""}
    def post(text: str):
        return admin.post("/admin/rota/import", content_type="multipart/form-data",
                          data=dict(form, **{"import-file": (io.BytesIO(text.encode()), "r.csv")}))

    refused = post(bad)
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400 and "Nothing was imported" in page
    assert "Line 3: no active physician is" in page
    assert _shifts(svc, world.head) == []
    # Each problem is a message id, read in the reader's language.
    admin.post("/account/language/", data={"csrf_token": csrf_token(admin, "/account/language/"),
                                           "language": "fr"})
    french = html.unescape(post(bad).get_data(as_text=True))
    assert "Ligne 3\u00a0: aucun médecin actif n'est 'ghost'." in french
    done = post(good)
    assert done.status_code == 302 and len(_shifts(svc, world.head)) == 1
    tech = app.test_client()
    login(tech, "tech")
    own = csrf_token(tech, "/requests/new")
    assert tech.post("/admin/rota/import", data={"csrf_token": own}).status_code == 403


@pytest.mark.parametrize("fold, expected", [("", None), ("0", PARIS_SUMMER), ("1", PARIS_WINTER)])
def test_a_typed_shift_at_a_clock_change_is_refused_or_asked_about(app, svc, world, clock, fold, expected):
    clock.now = datetime(YEAR, 3, 1, 12, tzinfo=UTC)
    admin, token = _admin(app)
    data = {"csrf_token": token, "shift-group": str(world.group), "shift-physician": str(world.head),
            "shift-level": "1", "shift-fold": fold}
    # Spring forward: 02:30 does not exist; it used to be stored silently as 03:30.
    gap = admin.post("/admin/rota/shifts", data=dict(data, **{"shift-starts_at": f"{SPRING}T02:30",
                                                             "shift-ends_at": f"{SPRING}T08:00"}))
    assert gap.status_code == 400 and "does not exist in Europe/Paris" in gap.get_data(as_text=True)
    twice = admin.post("/admin/rota/shifts", data=dict(data, **{"shift-starts_at": f"{FALL}T02:30",
                                                               "shift-ends_at": f"{FALL}T08:00"}))
    if expected is None:
        assert twice.status_code == 400 and "happens twice" in twice.get_data(as_text=True)
        assert _shifts(svc, world.head) == []
        return
    assert twice.status_code == 302
    (starts, _e, _l, _g), = _shifts(svc, world.head)
    midnight = datetime.combine(FALL, datetime.min.time(), UTC)
    assert starts == midnight + timedelta(hours=2, minutes=30) - expected
