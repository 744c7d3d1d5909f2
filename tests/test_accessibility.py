"""Issue 12, point 4: accessibility, in Debian's Chromium over real HTTP.

axe-core (tests/js, pinned by its lockfile) on every page of every role at phone and
desktop sizes; the whole signing flow with the keyboard alone; live status announced;
"go to page N" on a long document; 200 % zoom; prefers-reduced-motion."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from signflow.models import SignatureRequest
from tests.a11y import (
    RECORD_CSP,
    SIZES,
    axe_source,
    axe_violations,
    choose_by_keyboard,
    describe,
    focused_matches,
    log_in,
    no_horizontal_scroll,
    tab_to,
    unreachable_by_tab,
)
from tests.conftest import PASSWORD, PIN, csrf_token, login
from tests.helpers import delivered_request, new_request, sign
from tests.pdfs import make_pdf

TITLE = "Liver transplant consent"
ACCOUNT = ["/account/password", "/account/contacts/", "/account/push", "/account/two-factor",
           "/no-such-page"]
# Every page a role reaches from its menu and lists (the blueprints' GET routes), with
# {pending} a request waiting for its signature and {delivered} one signed and delivered.
PAGES: dict[str, list[str]] = {
    "": ["/login", "/no-such-page"],
    "tech": ["/requests/", "/requests/new", "/requests/{pending}", "/requests/{delivered}",
             "/oncall/", *ACCOUNT],
    "doc": ["/inbox/", "/inbox/{pending}", "/inbox/{delivered}", "/inbox/signing-pin",
            "/inbox/signing-pin/unblock", "/inbox/absence", "/oncall/", *ACCOUNT],
    "recipient": ["/received/", "/received/{delivered}", *ACCOUNT],
    "auditor": ["/audit/", "/audit/requests/{delivered}", "/audit/verify", *ACCOUNT],
    "manager": ["/stats/", "/stats/?group={group}", *ACCOUNT],
    "admin": ["/admin/users", "/admin/users/{doc}", "/admin/changes", "/admin/rota", "/oncall/",
              *ACCOUNT],
}
MISSING = {"/no-such-page"}


def _requests(app: Flask, world: Any) -> dict[str, int]:
    delivered, _tech, _doc = delivered_request(app, world)
    tech = app.test_client()
    login(tech, "tech")
    pending = new_request(tech, world, data=make_pdf(3, TITLE), title=TITLE)
    return {"pending": pending, "delivered": delivered, "doc": world.doc, "group": world.group}


def _context(browser: Any, live_url: str, **size: Any) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(base_url=live_url, **size)
    context.add_init_script(RECORD_CSP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    return context, page, errors


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("size", sorted(SIZES))
def test_axe_finds_nothing_serious_on_any_page_of_any_role(browser, live_url, app, world, size):
    ids = _requests(app, world)
    source = axe_source()
    found: list[str] = []
    checked = 0
    for username, paths in PAGES.items():
        context, page, errors = _context(browser, live_url, **SIZES[size])
        if username:
            log_in(page, username)
        for template in paths:
            path = template.format(**ids)
            response = page.goto(path)
            assert response is not None
            assert response.status == (404 if path in MISSING else 200), (username, path)
            assert page.url == live_url + path, (username, path)  # not sent elsewhere
            violations = axe_violations(page, source)
            if violations:
                found.append(describe(f"{size} {username or 'anonymous'} {path}", violations))
            assert page.evaluate("window.__cspViolations") == [], (username, path)
            checked += 1
        assert errors == [], username
        context.close()
    assert checked == sum(len(paths) for paths in PAGES.values())
    assert found == [], "\n" + "\n".join(found)


@pytest.mark.browser
def test_axe_reports_a_serious_violation(browser):
    """The check above is not vacuous: a page with an unlabelled field and a nameless
    button is reported, with the rule and the element."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content("""<!doctype html><html lang="en"><title>t</title><main><h1>t</h1>
        <form><input name="pin"><button></button></form></main></html>""")
    rules = {v["id"] for v in axe_violations(page, axe_source())}
    context.close()
    assert {"label", "button-name"} <= rules, rules


class KeyboardPhone:
    """A phone used with a keyboard alone: no tap, no click; axe checks each page shown."""

    def __init__(self, browser: Any, live_url: str, who: str) -> None:
        self.who = who
        self.context, self.page, self.errors = _context(browser, live_url, **SIZES["phone"])
        self.source = axe_source()

    def check(self) -> None:
        self.page.wait_for_load_state("load")
        where = f"{self.who} at {self.page.url}"
        violations = axe_violations(self.page, self.source)
        assert violations == [], describe(where, violations)
        assert unreachable_by_tab(self.page) == [], where
        assert self.page.evaluate("window.__cspViolations") == [], where
        assert self.errors == [], where

    def log_in(self, username: str) -> None:
        self.page.goto("/login")  # typed in the address bar
        self.check()
        tab_to(self.page, "#username")
        self.page.keyboard.type(username)
        self.page.keyboard.press("Tab")
        assert focused_matches(self.page, "#password")
        self.page.keyboard.type(PASSWORD)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(lambda url: "/login" not in url)
        self.check()

    def follow(self, selector: str) -> None:
        tab_to(self.page, selector)
        with self.page.expect_navigation():
            self.page.keyboard.press("Enter")
        self.check()

    def close(self) -> None:
        assert self.errors == [], self.who
        self.context.close()


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_whole_signing_flow_with_the_keyboard_alone_on_a_phone(browser, live_url, svc, world):
    from playwright.sync_api import expect

    # The technician: upload, route, place the stamp without a pointer.
    tech = KeyboardPhone(browser, live_url, "technician")
    tech.log_in("tech")
    tech.follow('main a[href$="/requests/new"]')
    page = tech.page
    # Sent without its file first: the form comes back with the error tied to the field.
    tab_to(page, 'main button[type="submit"]')
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator("#document-errors")).to_have_text("Choose a PDF file.")
    tech.check()
    # Listening from now on turns Playwright's file chooser interception on before the
    # key is pressed (enabling it inside expect_file_chooser races with the keypress).
    page.on("filechooser", lambda _chooser: None)
    tab_to(page, "#document")
    with page.expect_file_chooser() as chooser:  # the system's file picker takes over
        page.keyboard.press("Enter")
    chooser.value.set_files(files=[{"name": "liver-consent.pdf", "mimeType": "application/pdf",
                                    "buffer": make_pdf(3, TITLE)}])
    page.keyboard.press("Tab")
    assert focused_matches(page, "#title")
    page.keyboard.type(TITLE)
    for selector, option in (("#group", "Anaesthesia on call"), ("#destination", "Transplant service"),
                             ("#urgency", "Emergency (5 min)")):
        tab_to(page, selector)
        choose_by_keyboard(page, option)
    tab_to(page, 'main button[type="submit"]')
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/requests/\d+$"))
    request_id = int(page.url.rsplit("/", 1)[1])
    tech.check()
    tab_to(page, "#stamp-choice-page")
    choose_by_keyboard(page, "2")
    tab_to(page, "#stamp-choice-fx")
    choose_by_keyboard(page, "Centre")
    tab_to(page, "#stamp-choice-fy")
    choose_by_keyboard(page, "Top")
    tab_to(page, ".stamp-choice button")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("The signature stamp will go")
    expect(page.locator(".stamp-picker")).to_contain_text("Placed on page 2.")
    tech.check()
    with svc.sessions() as s:
        position = s.get(SignatureRequest, request_id).stamp_position
    page_number, x1, y1, x2, y2 = (float(v) for v in position.split(","))
    # Page 2, centred across the A4 page (595 pt wide), at its top (842 pt high, y up).
    assert page_number == 2 and abs((x1 + x2) / 2 - 595 / 2) < 1 and abs(y2 - 842) < 1, position

    # The physician: inbox, the request, go to the last page, PIN, sign.
    doc = KeyboardPhone(browser, live_url, "physician")
    doc.log_in("doc")
    doc.follow(f'main a[href$="/inbox/{request_id}"]')
    page = doc.page
    jump = page.get_by_role("navigation", name="Go to page")
    expect(jump.get_by_role("link")).to_have_count(3)
    tab_to(page, 'a[href="#page-3"]')
    page.keyboard.press("Enter")
    page.wait_for_function("() => location.hash === '#page-3'")
    # The page is brought into view (smoothly: wait for the scroll to end) and takes the focus.
    # Polled on a timer, not on animation frames: with Debian's Chromium 156.0.8078.114
    # the frame-driven poll stopped once the scroll ended, and never saw it there.
    page.wait_for_function("""() => { const top = document.getElementById('page-3')
        .getBoundingClientRect().top; return top >= 0 && top < 20; }""", polling=100)
    assert focused_matches(page, "#page-3")
    tab_to(page, "#pin")
    page.keyboard.type(PIN)
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(
        has_text="Signed and delivered to Transplant service.")).to_be_visible(timeout=30_000)
    doc.check()
    with svc.sessions() as s:
        assert s.get(SignatureRequest, request_id).state == "delivered"
    tech.close()
    doc.close()


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_status_changes_are_announced_where_the_page_updates_live(browser, live_url, app, world,
                                                                  clock):
    """The list and the request's page poll the server; what changes is written to an
    aria-live region, which a screen reader says without the user moving."""
    from playwright.sync_api import expect

    tech, doc = app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    listed = new_request(tech, world, title="Kidney transplant consent")
    shown = new_request(tech, world, title=TITLE)
    context, page, errors = _context(browser, live_url, **SIZES["phone"])
    # The browser's timers run only when told (run_for): no sleeping for the next poll.
    page.clock.install(time=clock())
    page.clock.pause_at(clock() + timedelta(seconds=1))
    log_in(page, "tech")
    page.goto("/requests/")
    announce = page.locator("[data-live-announce]")
    assert announce.get_attribute("aria-live") == "polite"
    expect(announce).to_have_text("")
    assert sign(doc, listed).status_code == 302
    page.clock.run_for(10_000)  # the list's next poll of status.json
    expect(page.locator(f'[data-state-for="{listed}"]')).to_have_text("delivered")
    expect(announce).to_have_text(f"#{listed} Kidney transplant consent: delivered")

    page.goto(f"/requests/{shown}")
    live = page.locator("[data-ladder] [aria-live=polite]")
    expect(live).to_contain_text("Rung 1 of 3")
    assert sign(doc, shown).status_code == 302
    page.clock.run_for(15_000)  # the ladder's next poll of ladder.json
    expect(live).to_contain_text("no longer pending")
    expect(page.locator("[data-state-for]")).to_have_text("delivered")
    assert page.evaluate("window.__cspViolations") == [] and errors == []
    context.close()


# 200 % zoom of a 1280 x 800 window: the page lays out in 640 x 400 CSS pixels.
ZOOMED = dict(viewport={"width": 640, "height": 400}, device_scale_factor=2)


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_page_stays_usable_at_200_percent_zoom(browser, live_url, app, world):
    ids = _requests(app, world)
    wide: list[str] = []
    for username, paths in PAGES.items():
        context, page, errors = _context(browser, live_url, **ZOOMED)
        if username:
            log_in(page, username)
        for template in paths:
            page.goto(template.format(**ids))
            page.wait_for_load_state("load")
            if not no_horizontal_scroll(page):
                wide.append(f"{username} {page.url}")
            # Text is not shrunk to fit: the body keeps its 16 px.
            assert page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)") >= 16
        assert errors == [], username
        context.close()
    assert wide == []


@pytest.mark.browser
def test_the_zoom_check_sees_a_page_too_wide(browser):
    context = browser.new_context(**ZOOMED)
    page = context.new_page()
    page.set_content('<!doctype html><meta name="viewport" content="width=device-width">'
                     '<div style="width: 900px">a fixed-width block</div>')
    assert not no_horizontal_scroll(page)
    context.close()


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_motion_stops_for_those_who_ask_for_less(browser, live_url):
    context, page, errors = _context(browser, live_url)
    page.goto("/login")
    button = page.get_by_role("button", name="Log in")
    # The durations of the button's transitions (one per property), and how the page scrolls.
    motion = """(el) => [[...new Set(getComputedStyle(el).transitionDuration.split(', '))],
                         getComputedStyle(document.documentElement).scrollBehavior]"""
    page.emulate_media(reduced_motion="no-preference")
    assert button.evaluate(motion) == [["0.15s"], "smooth"]
    page.emulate_media(reduced_motion="reduce")
    assert button.evaluate(motion) == [["0s"], "auto"]
    assert errors == []
    context.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_field_in_error_says_so_and_points_at_its_message(client, world):
    """The hint and the error are read with the field (aria-describedby), and the field
    is marked invalid: a screen reader user hears why the form came back."""
    login(client, "tech")
    token = csrf_token(client, "/requests/new")
    page = client.post("/requests/new", data={"csrf_token": token, "title": "x"}).get_data(as_text=True)
    field = re.search(r'<input[^>]*id="document"[^>]*>', page)
    assert field, page[:2000]
    assert 'aria-describedby="document-hint document-errors"' in field.group(0)
    assert 'aria-invalid="true"' in field.group(0)
    assert re.search(r'id="document-hint">PDF only\.<', page)
    assert re.search(r'id="document-errors"><small class="err">Choose a PDF file\.</small>', page)
    title = re.search(r'<input[^>]*id="title"[^>]*>', page)
    assert title and 'aria-describedby="title-hint"' in title.group(0)
    assert "aria-invalid" not in title.group(0)
