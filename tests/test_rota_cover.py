"""Who is on call: a night shift across both clock changes of Europe/Paris, absences
covered by a named colleague, and the "now and tonight" board."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from signflow import jobs
from signflow.config import load_settings
from signflow.core.audit.log import Actor
from signflow.core.errors import ConfigurationError, Forbidden, InvalidInput
from signflow.core.requests import access, cover, oncall, rota
from signflow.models import AuditEntry, OnCallGroup, User
from tests.conftest import T0, TEST_ACTOR, csrf_token, login
from tests.factories import count, create_request, last_sunday

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize("month, hours", [(3, 11), (10, 13)])
def test_a_night_shift_across_the_clock_change(svc, world, clock, month, hours):
    day = last_sunday(T0.year + 1, month)
    clock.now = datetime.combine(day - timedelta(days=2), time(12), UTC)
    with svc.sessions() as s, s.begin():
        group = rota.create_group(s, actor=TEST_ACTOR, name="Night ICU", head_user_id=None, now=clock())
        shift = rota.add_shift_local(
            s, actor=TEST_ACTOR, group_id=group.id, user_id=world.head, level=0,
            starts_local=datetime.combine(day - timedelta(days=1), time(20)),
            ends_local=datetime.combine(day, time(8)), timezone="Europe/Paris", fold=None, now=clock())
        starts, ends, group_id = shift.starts_at, shift.ends_at, group.id
    assert ends - starts == timedelta(hours=hours)
    assert (starts.astimezone(PARIS).time(), ends.astimezone(PARIS).time()) == (time(20), time(8))
    with svc.sessions() as s:
        head = s.get(User, world.head)
        at = starts
        while at < ends:  # on call at every quarter of an hour of the night, in real time
            assert [u.id for u in oncall.on_call(s, group_id, at)] == [world.head], at
            assert group_id in oncall.groups_on_call(s, head, at)
            at += timedelta(minutes=15)
        assert oncall.on_call(s, group_id, ends) == []
        assert oncall.on_call(s, group_id, starts - timedelta(seconds=1)) == []


def _absence(svc, user_id, cover_id, starts, ends, fold=None):
    with svc.sessions() as s, s.begin():
        return cover.mark_absence(s, actor=Actor.of(s.get(User, user_id)), cover_user_id=cover_id,
                                  starts_local=starts, ends_local=ends, timezone="Europe/Paris",
                                  fold=fold, now=svc.clock()).id


def test_an_absent_physician_is_replaced_by_the_named_cover(svc, world, clock):
    rid = create_request(svc, world)
    local = clock().astimezone(PARIS).replace(tzinfo=None, second=0)
    _absence(svc, world.doc, world.offduty, local - timedelta(minutes=1), local + timedelta(hours=2))
    with svc.sessions() as s:
        group = s.get(OnCallGroup, world.group)
        doc, offduty = s.get(User, world.doc), s.get(User, world.offduty)
        assert [u.id for u in oncall.on_call(s, world.group, clock())] == [world.offduty, world.backup]
        assert [u.id for u in oncall.recipients_for_level(s, group, 0, clock())] == [world.offduty]
        # The cover sees and may sign the absent physician's requests; the absent one may not.
        assert oncall.may_act_for_group(s, offduty, group, clock())
        assert not oncall.may_act_for_group(s, doc, group, clock())
        assert rid in [r.id for r in access.list_requests(s, user=offduty, now=clock())]
        assert world.group in oncall.groups_on_call(s, offduty, clock())
        later = clock() + timedelta(hours=3)
        assert [u.id for u in oncall.on_call(s, world.group, later)] == [world.doc, world.backup]
    assert count(svc, AuditEntry, AuditEntry.action == "rota.absence_marked") == 1


def test_absences_refuse_bad_input(svc, world, clock):
    local = clock().astimezone(PARIS).replace(tzinfo=None, second=0)
    spring = last_sunday(T0.year + 1, 3)
    for who, by, starts, ends, words in [
        (world.doc, world.doc, local, local + timedelta(hours=1), "colleague who covers you"),
        (world.doc, world.tech, local, local + timedelta(hours=1), "colleague who covers you"),
        (world.doc, world.backup, local + timedelta(hours=2), local, "ends after it starts"),
        (world.doc, world.backup, datetime.combine(spring, time(2, 30)),
         datetime.combine(spring, time(9)), "does not exist in Europe/Paris"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            _absence(svc, who, by, starts, ends)
    with pytest.raises(Forbidden, match="Only a physician"):
        _absence(svc, world.tech, world.backup, local, local + timedelta(hours=1))
    assert count(svc, AuditEntry, AuditEntry.action == "rota.absence_marked") == 0


def test_a_physician_marks_an_absence_over_http(app, svc, world, clock):
    doc = app.test_client()
    login(doc, "doc")
    token = csrf_token(doc, "/inbox/absence")
    local = clock().astimezone(PARIS)
    fmt = "%Y-%m-%dT%H:%M"
    resp = doc.post("/inbox/absence", data={
        "csrf_token": token, "starts_at": local.strftime(fmt),
        "ends_at": (local + timedelta(days=1)).strftime(fmt), "cover": str(world.head), "fold": ""})
    assert resp.status_code == 302
    page = doc.get("/inbox/absence").get_data(as_text=True)
    assert "Pr Øyvind Berg" in page and "Dr Hélène Lefèvre" in page
    refused = doc.post("/inbox/absence", data={
        "csrf_token": token, "starts_at": local.strftime(fmt),
        "ends_at": (local - timedelta(days=1)).strftime(fmt), "cover": str(world.head), "fold": ""})
    assert refused.status_code == 400
    admin = app.test_client()
    login(admin, "admin")
    rota_page = admin.get("/admin/rota").get_data(as_text=True)
    assert "<td>Dr Hélène Lefèvre</td><td>Pr Øyvind Berg</td>" in rota_page


def test_an_admin_records_a_sick_call_and_the_physician_is_told(app, svc, world, clock):
    admin = app.test_client()
    login(admin, "admin")
    local = clock().astimezone(PARIS)
    # The rota page's form (its fields prefixed), for the next twelve hours.
    form = {"csrf_token": csrf_token(admin, "/admin/rota"), "absence-physician": str(world.doc),
            "absence-cover": str(world.offduty), "absence-fold": "",
            **{f"absence-{k}": t.strftime("%Y-%m-%dT%H:%M")
               for k, t in (("starts_at", local), ("ends_at", local + timedelta(hours=12)))}}
    refused = admin.post("/admin/rota/absences", data=form | {"absence-cover": str(world.doc)})
    assert refused.status_code == 400 and "covers them" in refused.get_data(as_text=True)
    assert admin.post("/admin/rota/absences", data=form).status_code == 302
    assert "<td>Dr Hélène Lefèvre</td><td>Dr Off Duty</td>" in admin.get("/admin/rota").get_data(as_text=True)
    with svc.sessions() as s:
        group = s.get(OnCallGroup, world.group)
        assert [u.id for u in oncall.recipients_for_level(s, group, 0, clock())] == [world.offduty]
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.action == "rota.absence_marked")).all()
        line = json.loads(entry.line)
        assert (line["user"], line["cover"], line["recorded_by"]) == (world.doc, world.offduty, world.admin)
    before = len(svc.notifier.sent)
    jobs.run_once(svc)
    [told] = [m for m in svc.notifier.sent[before:] if m.to_email == "doc@hospital.example"]
    assert told.subject == "An absence was recorded for you" and "Dr Off Duty" in told.body
    # Only an administrator records someone else's absence.
    doc = app.test_client()
    login(doc, "doc")
    with svc.sessions() as s, s.begin(), pytest.raises(Forbidden, match="administrator"):
        cover.mark_absence(s, actor=Actor.of(s.get(User, world.backup)), absent_user_id=world.head,
                           cover_user_id=world.offduty, starts_local=local.replace(tzinfo=None),
                           ends_local=(local + timedelta(hours=1)).replace(tzinfo=None),
                           timezone="Europe/Paris", fold=None, now=clock())
    own = form | {"csrf_token": csrf_token(doc, "/inbox/absence")}
    assert doc.post("/admin/rota/absences", data=own).status_code == 403


def test_the_board_shows_every_group_now_and_tonight(app, svc, world, clock):
    tonight = cover.tonight(clock(), "Europe/Paris", svc.deps.night_starts)
    with svc.sessions() as s, s.begin():
        rota.add_shift(s, actor=TEST_ACTOR, group_id=world.other_group, user_id=world.head, level=1,
                       starts_at=tonight, ends_at=tonight + timedelta(hours=10), now=clock())
    with svc.sessions() as s:
        board = cover.board(s, timezone="Europe/Paris", night_starts=svc.deps.night_starts, now=clock())
    by_name = {g.name: g for g in board.groups}
    anaesthesia = {r.label: r.people for r in by_name["Anaesthesia on call"].now}
    assert anaesthesia == {"primary": ("Dr Hélène Lefèvre",), "backup": ("Dr Łukasz Nowak",),
                           "head": ("Pr Øyvind Berg",)}
    cardio_tonight = {r.label: r.people for r in by_name["Cardiology on call"].tonight}
    assert cardio_tonight["backup"] == ("Pr Øyvind Berg",) and cardio_tonight["head"] == ()
    assert tonight.astimezone(PARIS).time() == time(20) or tonight == clock()  # the default
    for username in ("tech", "doc", "admin"):
        client = app.test_client()
        login(client, username)
        page = client.get("/oncall/")
        text = page.get_data(as_text=True)
        assert page.status_code == 200 and "Cardiology on call" in text and "Dr Łukasz Nowak" in text
        assert 'name="viewport"' in text and 'class="board"' in text
    recipient = app.test_client()
    login(recipient, "recipient")
    assert recipient.get("/oncall/").status_code == 403


def test_tonight_is_the_coming_evening_or_now_during_the_night():
    day = datetime(2027, 6, 1, tzinfo=PARIS)
    for starts in (time(20), time(22, 30)):
        assert cover.tonight(day.replace(hour=15).astimezone(UTC), "Europe/Paris", starts) == \
            day.replace(hour=starts.hour, minute=starts.minute).astimezone(UTC)
    night = day.replace(hour=23).astimezone(UTC)
    assert cover.tonight(night, "Europe/Paris", time(22, 30)) == night
    early = day.replace(hour=21).astimezone(UTC)  # already night with 20:00, not with 22:30
    assert cover.tonight(early, "Europe/Paris", time(20)) == early
    assert cover.tonight(early, "Europe/Paris", time(22, 30)) == \
        day.replace(hour=22, minute=30).astimezone(UTC)


def test_the_night_start_is_a_setting_refused_unless_a_time_of_day(tmp_path):
    env = {"SIGNFLOW_INSTANCE": str(tmp_path)}
    assert load_settings(env).night_starts_at == "20:00"
    assert load_settings({**env, "SIGNFLOW_NIGHT_STARTS_AT": "21:15"}).night_starts_at == "21:15"
    for bad in ("8pm", "24:00", "20:60", "20", "", "20:00:00", " 20:00", "02:30", "09:00"):
        with pytest.raises(ConfigurationError, match="SIGNFLOW_NIGHT_STARTS_AT"):
            load_settings({**env, "SIGNFLOW_NIGHT_STARTS_AT": bad})


