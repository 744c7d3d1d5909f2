"""The escalation policy in the app (minutes per rung, a repeat page, the live ladder
on the technician's page), the handover at the end of a shift and the reminders of
an unacknowledged delivery: all driven by the worker (jobs.run_once) on a
controlled clock."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, text

from signflow import jobs
from signflow.core.errors import InvalidInput
from signflow.core.requests import followup, policy, rota
from signflow.models import (
    AuditEntry,
    FollowUpKind,
    RequestFollowUp,
    RotaAbsence,
    RotaShift,
    SignatureRequest,
)
from tests.conftest import T0, TEST_ACTOR, csrf_token, login
from tests.factories import acknowledge_receipt, count, create_request, last_sunday, sign_request
from tests.helpers import new_request

PARIS = ZoneInfo("Europe/Paris")


def _sent(svc, words: str) -> list[str]:
    return [m.to_name for m in svc.notifier.sent if words in m.subject]


def _actions(svc, rid: int) -> list[str]:
    with svc.sessions() as s:
        return [str(a) for a in s.scalars(select(AuditEntry.action).where(AuditEntry.request_id == rid)
                                         .order_by(AuditEntry.seq))]


def _set_policy(svc, group: int, urgency: str, minutes: list[int], repeat: int | None) -> None:
    with svc.sessions() as s, s.begin():
        policy.set_policy(s, svc.deps, actor=TEST_ACTOR, group_id=group, urgency=urgency,
                          rung_minutes=minutes, repeat_after_minutes=repeat, now=svc.clock())


def test_policy_sets_minutes_per_rung_and_a_repeat_page(svc, world, clock):
    _set_policy(svc, world.group, "urgent", [3, 4, 6], repeat=2)
    other = create_request(svc, world, urgency="routine")  # no policy: the settings' 60 minutes
    rid = create_request(svc, world, urgency="urgent")
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).deadline_at == clock() + timedelta(minutes=3)
        assert s.get(SignatureRequest, other).deadline_at == clock() + timedelta(minutes=60)
    jobs.run_once(svc)
    assert _sent(svc, "STILL WAITING") == []
    clock.advance(minutes=2)
    jobs.run_once(svc)
    assert _sent(svc, "STILL WAITING") == ["Dr Hélène Lefèvre"]  # the same rung, again
    jobs.run_once(svc)  # once per rung, however often the worker runs
    assert len(_sent(svc, "STILL WAITING")) == 1
    clock.advance(minutes=1)
    assert jobs.run_once(svc).escalated == 1
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.escalation_level == 1 and req.deadline_at == clock() + timedelta(minutes=4)
    clock.advance(minutes=2)
    jobs.run_once(svc)
    assert _sent(svc, "STILL WAITING") == ["Dr Hélène Lefèvre", "Dr Łukasz Nowak"]
    assert _actions(svc, rid).count("request.repaged") == 2
    with svc.sessions() as s:
        assert s.scalar(select(AuditEntry.line).where(AuditEntry.action == "rota.policy_set"))


def test_policy_refuses_bad_ladders(svc, world):
    for minutes, repeat, words in [([5, 5], None, "each of the 3 rungs"), ([0, 5, 5], None, "1 to 1440"),
                                   ([5, 5, 5], 5, "before the rung ends")]:
        with pytest.raises(InvalidInput, match=words):
            _set_policy(svc, world.group, "urgent", minutes, repeat)


def test_the_technician_sees_the_rung_who_is_paged_and_the_time_left(app, svc, world, clock):
    admin = app.test_client()
    login(admin, "admin")
    token = csrf_token(admin, "/admin/rota")
    resp = admin.post("/admin/rota/policy", data={
        "csrf_token": token, "policy-group": str(world.group), "policy-urgency": "emergency",
        "policy-rung_minutes": "2, 3, 4", "policy-repeat_after": "1"})
    assert resp.status_code == 302
    assert "2 → " in admin.get("/admin/rota").get_data(as_text=True).replace("primary on call: ", "")
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)  # an emergency
    page = tech.get(f"/requests/{rid}").get_data(as_text=True)
    assert f'data-ladder="/requests/{rid}/ladder.json"' in page and 'aria-live="polite"' in page
    assert "Dr Hélène Lefèvre (queued)" in page and 'role="timer"' in page and "<script>" not in page
    status = tech.get(f"/requests/{rid}/ladder.json").get_json()
    # Who the rota has on call at this rung now, paged or not yet.
    assert status | {"escalates_at": None} == {
        "id": rid, "state": "pending", "rung": 1, "rungs": 3, "rung_name": "primary on call",
        "paged": [{"name": "Dr Hélène Lefèvre", "state": "queued"}], "escalates_at": None,
        "seconds_left": 120, "repeat_at": (clock() + timedelta(minutes=1)).isoformat()}
    jobs.run_once(svc)
    status = tech.get(f"/requests/{rid}/ladder.json").get_json()
    assert status["paged"] == [{"name": "Dr Hélène Lefèvre", "state": "sent"}]
    doc = app.test_client()
    login(doc, "doc")
    assert doc.get(f"/inbox/{rid}").status_code == 200
    status = tech.get(f"/requests/{rid}/ladder.json").get_json()
    assert status["paged"] == [{"name": "Dr Hélène Lefèvre", "state": "seen"}]
    # A second physician joins the rung through an absence cover: the rota, not the deliveries.
    with svc.sessions() as s, s.begin():
        s.add(RotaShift(group_id=world.group, user_id=world.head, level=0,
                        starts_at=clock() - timedelta(hours=1), ends_at=clock() + timedelta(hours=2)))
        s.add(RotaAbsence(user_id=world.head, cover_user_id=world.offduty, starts_at=clock(),
                          ends_at=clock() + timedelta(hours=2), created_at=clock()))
    page = tech.get(f"/requests/{rid}").get_data(as_text=True)
    assert "Dr Off Duty (queued)" in page and "Dr Hélène Lefèvre (seen)" in page
    with svc.sessions() as s, s.begin():
        s.execute(delete(RotaAbsence))
        s.execute(delete(RotaShift).where(RotaShift.user_id == world.head))
    clock.advance(minutes=2, seconds=30)
    jobs.run_once(svc)
    status = tech.get(f"/requests/{rid}/ladder.json").get_json()
    assert (status["rung"], status["paged"], status["seconds_left"]) == (
        2, [{"name": "Dr Łukasz Nowak", "state": "sent"}], 180)
    # Role and object are checked: another technician's request is missing, a physician's refused.
    other = app.test_client()
    login(other, "tech2")
    assert other.get(f"/requests/{rid}/ladder.json").status_code == 404
    assert doc.get(f"/requests/{rid}/ladder.json").status_code == 403


def test_the_live_ladder_script_polls_the_json_view_and_needs_no_inline_code(app):
    client = app.test_client()
    script = client.get("/static/app.js").get_data(as_text=True)
    assert 'querySelector("[data-ladder]")' in script and "setInterval(refresh, 15000)" in script
    assert "script-src 'self'" in client.get("/login").headers["Content-Security-Policy"]


def _night(svc, world, clock, day):
    """Dr Lefèvre on call the night before `day` (20:00-08:00 local) and Dr Off Duty from
    08:00; returns the night shift's end (UTC)."""
    with svc.sessions() as s, s.begin():
        night = rota.add_shift_local(
            s, actor=TEST_ACTOR, group_id=world.group, user_id=world.doc, level=0,
            starts_local=datetime.combine(day - timedelta(days=1), time(20)),
            ends_local=datetime.combine(day, time(8)), timezone="Europe/Paris", fold=None, now=clock())
        rota.add_shift_local(
            s, actor=TEST_ACTOR, group_id=world.group, user_id=world.offduty, level=0,
            starts_local=datetime.combine(day, time(8)), ends_local=datetime.combine(day, time(20)),
            timezone="Europe/Paris", fold=None, now=clock())
        return night.ends_at


def test_a_pending_request_is_handed_over_at_the_end_of_a_night_across_the_clock_change(
        app, svc, world, clock):
    for month in (3, 10):
        day = last_sunday(T0.year + 1, month)
        clock.now = datetime.combine(day - timedelta(days=1), time(12), UTC)
        ends = _night(svc, world, clock, day)
        assert ends.astimezone(PARIS).time() == time(8)
        _set_policy(svc, world.group, "routine", [240, 240, 240], repeat=None)
        clock.now = ends - timedelta(minutes=10)
        rid = create_request(svc, world, urgency="routine")
        jobs.run_once(svc)
        assert _sent(svc, "Handed over") == []
        clock.now = ends + timedelta(minutes=1)
        jobs.run_once(svc)
        assert _sent(svc, "Handed over to you") == ["Dr Off Duty"], month
        assert "request.handed_over" in _actions(svc, rid)
        jobs.run_once(svc)  # once per ended shift
        assert len(_sent(svc, "Handed over")) == 1
        offduty = app.test_client()
        login(offduty, "offduty")
        inbox = offduty.get("/inbox/").get_data(as_text=True)
        # The handed-over request comes first, above one that arrived after it.
        later = create_request(svc, world, urgency="routine")
        inbox = offduty.get("/inbox/").get_data(as_text=True)
        assert inbox.index(f"/inbox/{rid}") < inbox.index(f"/inbox/{later}")
        assert "handed over to you" in inbox
        svc.notifier.sent.clear()
        with svc.sessions() as s, s.begin():
            for req in s.scalars(select(SignatureRequest)):
                req.state = "cancelled"


def test_back_to_back_shifts_of_one_physician_are_no_handover(svc, world, clock):
    with svc.sessions() as s, s.begin():
        shift = rota.add_shift(s, actor=TEST_ACTOR, group_id=world.other_group, user_id=world.head,
                               level=0, starts_at=clock(), ends_at=clock() + timedelta(hours=2), now=clock())
        rota.add_shift(s, actor=TEST_ACTOR, group_id=world.other_group, user_id=world.head, level=0,
                       starts_at=shift.ends_at, ends_at=shift.ends_at + timedelta(hours=2), now=clock())
    rid = create_request(svc, world)
    clock.advance(hours=2, minutes=1)
    jobs.run_once(svc)
    assert "request.handed_over" not in _actions(svc, rid)


def test_an_unacknowledged_delivery_reminds_the_destination_then_alerts_the_technician(svc, world, clock):
    rid = create_request(svc, world)
    quick = create_request(svc, world)
    sign_request(svc, rid, world.doc)
    sign_request(svc, quick, world.doc)
    acknowledge_receipt(svc, quick, world)
    jobs.run_once(svc)
    svc.notifier.sent.clear()
    clock.advance(minutes=29)
    jobs.run_once(svc)
    assert _sent(svc, "Reminder") == []
    clock.advance(minutes=1)
    jobs.run_once(svc)
    reminded = [m for m in svc.notifier.sent if "Reminder" in m.subject]
    assert {m.to_name for m in reminded} == {"recipient", "Transplant service"}
    assert all(f"#{rid}" in m.subject and m.link.endswith(f"/received/{rid}") for m in reminded)
    assert _sent(svc, "has not acknowledged") == []
    clock.advance(minutes=30)
    jobs.run_once(svc)
    jobs.run_once(svc)
    assert _sent(svc, "has not acknowledged receipt") == ["tech"]
    assert len(_sent(svc, "Reminder")) == 2  # once each
    assert [a for a in _actions(svc, rid) if a.startswith("request.ack")] == [
        "request.ack_reminded", "request.ack_overdue"]
    assert not [a for a in _actions(svc, quick) if a.startswith("request.ack")]
    assert count(svc, RequestFollowUp, RequestFollowUp.request_id == rid) == 2


def test_the_reminder_delays_come_from_the_settings(svc, world, clock):
    import dataclasses

    svc.deps = dataclasses.replace(svc.deps, ack_reminder_minutes=5, ack_alert_minutes=10)
    rid = create_request(svc, world)
    sign_request(svc, rid, world.doc)
    clock.advance(minutes=5)
    jobs.run_once(svc)
    assert "request.ack_reminded" in _actions(svc, rid)
    with svc.sessions() as s:
        line = s.scalar(select(AuditEntry.line).where(AuditEntry.action == "request.ack_reminded"))
    assert json.loads(line)["minutes"] == 5 and re.search(r'"destination":\d+', line)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_at_once_page_each_repeat_once(svc, world, clock):
    _set_policy(svc, world.group, "urgent", [10, 10, 10], repeat=3)
    rids = [create_request(svc, world, urgency="urgent") for _ in range(3)]
    clock.advance(minutes=3)
    with svc.sessions() as first, svc.sessions() as second:
        with first.begin():
            assert followup.run_due(first, svc.deps, now=clock())[FollowUpKind.REPEAT_PAGE] == 3
            # While the first worker holds the requests, the second skips them (SKIP LOCKED).
            with second.begin():
                # Waiting on a lock would be the bug: fail instead of hanging.
                second.execute(text("SET LOCAL lock_timeout = '5s'"))
                assert followup.run_due(second, svc.deps, now=clock())[FollowUpKind.REPEAT_PAGE] == 0
        with second.begin():  # and once the first committed, there is nothing left to do
            assert followup.run_due(second, svc.deps, now=clock())[FollowUpKind.REPEAT_PAGE] == 0
    assert count(svc, AuditEntry, AuditEntry.action == "request.repaged") == 3
    jobs.run_once(svc)
    assert sorted(_sent(svc, "STILL WAITING")) == ["Dr Hélène Lefèvre"] * len(rids)
