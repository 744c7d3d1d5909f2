"""The live escalation ladder and the on-call board in Debian's Chromium at phone
size: the page's own script (no inline code, CSP enforced) polls the JSON view and
updates the aria-live region when the worker escalates. Browser timers run on
Playwright's controlled clock, the server's on the test clock: nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from signflow import jobs
from tests.a11y import PHONE, RECORD_CSP, log_in
from tests.conftest import login
from tests.helpers import new_request


@pytest.fixture
def phone(browser: Any, live_url: str) -> Iterator[Any]:
    context = browser.new_context(base_url=live_url, **PHONE)
    context.add_init_script(RECORD_CSP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == []


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_ladder_updates_live_when_the_worker_escalates(phone, app, svc, world, clock):
    from playwright.sync_api import expect

    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)  # an emergency: 5 minutes a rung
    # The browser's time stands still but for run_for: each poll then shows the server's view.
    phone.clock.install(time=clock())
    phone.clock.pause_at(clock() + timedelta(seconds=1))
    log_in(phone, "tech")
    phone.goto(f"/requests/{rid}")
    live = phone.locator("[data-ladder] [aria-live=polite]")
    expect(live).to_contain_text("Rung 1 of 3")
    expect(live).to_contain_text("Dr Hélène Lefèvre")
    timer = phone.locator("[data-ladder-left]")
    expect(timer).to_contain_text("5:00 before it moves up the ladder")
    phone.clock.run_for(3_000)  # the countdown ticks in the browser
    expect(timer).to_contain_text("4:57")
    clock.advance(seconds=61)
    phone.clock.run_for(15_000)  # the next poll: the server's time left wins
    expect(timer).to_contain_text("3:59")
    clock.advance(minutes=5)
    assert jobs.run_once(svc).escalated == 1
    phone.clock.run_for(15_000)  # the next poll of ladder.json
    expect(live).to_contain_text("Rung 2 of 3 (backup)")
    expect(live).to_contain_text("Dr Łukasz Nowak")
    expect(timer).to_contain_text("5:00 before it moves up the ladder")
    assert phone.evaluate("window.__cspViolations") == []


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_board_reads_on_a_phone(phone, world):
    log_in(phone, "doc")
    phone.goto("/oncall/")
    cards = phone.locator(".board-group")
    assert cards.count() == 2
    width = phone.evaluate("Math.min(window.innerWidth, document.documentElement.clientWidth)")
    assert phone.evaluate("document.documentElement.scrollWidth") <= width
    boxes = [cards.nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] + boxes[0]["height"] <= boxes[1]["y"]  # stacked, one per row
    assert phone.evaluate("window.__cspViolations") == []
