"""The whole loop in Debian's Chromium at phone size, over real HTTP, through the UI only."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from signflow.core.pades import validate as validation
from signflow.web.headers import CSP
from tests.a11y import PHONE, RECORD_CSP
from tests.conftest import PASSWORD, PIN, login
from tests.helpers import request_id_from, sign, upload
from tests.pdfs import make_pdf

TITLE = "Liver transplant consent"
MIN_TAP = 44

PHONE_AUDIT = """
() => {
  const problems = [];
  const doc = document.documentElement;
  // In mobile emulation innerWidth grows to fit overflowing content, so on its own
  // it never reports sideways scrolling; clientWidth stays the device's 360 px.
  const width = Math.min(window.innerWidth, doc.clientWidth);
  if (doc.scrollWidth > width) {
    problems.push(`horizontal scroll: scrollWidth ${doc.scrollWidth} > ${width}`);
  }
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    if (!el.labels || el.labels.length === 0) {
      problems.push(`unlabelled ${el.tagName.toLowerCase()} name=${el.name}`);
    }
  }
  for (const el of document.querySelectorAll(
      'main a, main button, main summary, nav a, nav button')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;  // not rendered (closed <details>)
    const inlineTextLink = el.tagName === 'A' && el.closest('p')
      && getComputedStyle(el).display === 'inline';
    if (inlineTextLink) continue;
    if (box.height < MIN_TAP) {
      const name = (el.innerText || el.getAttribute('aria-label') || '').trim().slice(0, 40);
      const tag = el.tagName.toLowerCase();
      problems.push(`tap target ${tag} "${name}" is ${box.height.toFixed(1)}px tall`);
    }
  }
  return {problems, csp: window.__cspViolations || []};
}
""".replace("MIN_TAP", str(MIN_TAP))


class Phone:
    """One person's phone: its own cookies, and every page it shows is audited."""

    def __init__(self, browser: Any, base_url: str, who: str) -> None:
        self.who = who
        self.context = browser.new_context(base_url=base_url, accept_downloads=True, **PHONE)
        self.context.add_init_script(RECORD_CSP)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.favicon_errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.audited: list[str] = []

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = f"console error on {self.page.url}: {message.text} ({message.location.get('url')})"
        # The browser's own favicon probe is tracked by test_no_favicon_404, not here.
        if message.location.get("url", "").endswith("/favicon.ico"):
            self.favicon_errors.append(text)
        else:
            self.errors.append(text)

    def audit(self) -> None:
        """The phone rules, on the page now shown."""
        self.page.wait_for_load_state("load")
        result = self.page.evaluate(PHONE_AUDIT)
        where = f"{self.who} at {self.page.url}"
        assert result["problems"] == [], where
        assert result["csp"] == [], where
        assert self.errors == [], where
        self.audited.append(self.page.url)

    def login(self, username: str, password: str = PASSWORD) -> None:
        self.page.goto("/")
        self.page.wait_for_url("**/login**")
        self.audit()
        self.page.get_by_label("User name").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").tap()
        self.page.wait_for_url(lambda url: "/login" not in url)
        self.audit()

    def close(self) -> None:
        assert self.errors == [], self.who
        self.context.close()


def validate_outside_playwright_loop(pdf: bytes, root: Any) -> validation.ValidationReport:
    """validate_pdf from a thread with no running asyncio loop, as the server calls it
    (Playwright's sync API runs one in this thread: see test_validate_pdf_under_a_running_loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(validation.validate_pdf, pdf, trust_roots=[root]).result()


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_whole_loop_on_a_phone(browser, live_url, svc, world, tmp_path):
    from playwright.sync_api import expect

    # Technician: upload, route, see it pending.
    tech = Phone(browser, live_url, "technician")
    tech.login("tech")
    tech.page.get_by_role("link", name="New request").tap()
    tech.page.wait_for_url("**/requests/new")
    tech.audit()
    tech.page.get_by_label("PDF document").set_input_files(files=[{
        "name": "liver-consent.pdf", "mimeType": "application/pdf",
        "buffer": make_pdf(3, "Liver transplant consent"),
    }])
    tech.page.get_by_label("Title").fill(TITLE)
    group = tech.page.get_by_label("On-call group that must sign")
    group.select_option(label="Anaesthesia on call")
    tech.page.get_by_label("Deliver to").select_option(label="Transplant service")
    tech.page.get_by_label("Urgency").select_option(label="Emergency (5 min)")
    tech.page.get_by_label("Note for the physician (optional)").fill("Donor arriving at 04:00")
    tech.audit()
    tech.page.get_by_role("button", name="Send for signature").tap()
    tech.page.wait_for_url(re.compile(r"/requests/\d+$"))
    badge = tech.page.locator("[data-state-for]")
    expect(badge).to_have_text("pending")
    request_id = badge.get_attribute("data-state-for")
    expect(tech.page.get_by_role("heading", level=1)).to_have_text(f"#{request_id} {TITLE}")
    tech.audit()

    # Physician on call: inbox, read the three rendered pages, PIN, Sign.
    doc = Phone(browser, live_url, "physician")
    doc.login("doc")
    expect(doc.page.get_by_role("heading", name="To sign")).to_be_visible()
    doc.page.get_by_role("link", name=TITLE).tap()
    doc.page.wait_for_url(f"**/inbox/{request_id}")
    images = doc.page.locator(".pages img")
    expect(images).to_have_count(3)
    for index in range(3):
        image = images.nth(index)
        # Pages 2 and 3 load lazily: bring each into view as a reader would.
        image.scroll_into_view_if_needed()
        image.wait_for(state="visible")
        doc.page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                   arg=image.element_handle())
        assert image.evaluate("img => img.naturalWidth") > 0
        assert image.evaluate("img => img.currentSrc").startswith(
            f"{live_url}/documents/{request_id}/pages/{index + 1}.png")
    doc.audit()
    doc.page.get_by_label("Signing PIN").fill(PIN)
    screenshot = tmp_path / "physician-sign-page.png"
    doc.page.screenshot(path=str(screenshot), full_page=True)
    shot = screenshot.read_bytes()
    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 10_000, len(shot)
    doc.page.get_by_role("button", name="Sign", exact=True).tap()
    expect(doc.page.get_by_role("status").filter(
        has_text="Signed and delivered to Transplant service.")).to_be_visible(timeout=30_000)
    doc.audit()

    # Destination service: sees the verdict, downloads, checks the bytes, acknowledges.
    dest = Phone(browser, live_url, "recipient")
    dest.login("recipient")
    dest.page.get_by_role("link", name=f"#{request_id} {TITLE}").tap()
    dest.page.wait_for_url(f"**/received/{request_id}")
    expect(dest.page.get_by_text("Signature valid")).to_be_visible()
    expect(dest.page.locator(".sigs")).to_contain_text("Lefèvre")
    dest.audit()
    with dest.page.expect_download() as download_info:
        dest.page.get_by_role("link", name="Download signed PDF").tap()
    download = download_info.value
    assert download.suggested_filename == "liver-consent-signed.pdf"
    signed = Path(download.path()).read_bytes()
    report = validate_outside_playwright_loop(signed, svc.keys.root_cert)
    assert report.ok, report.as_json()
    signer = next(s for s in report.signatures if not s.is_timestamp)
    assert signer.signer.endswith("Lefèvre")
    dest.page.get_by_role("button", name="Acknowledge receipt").tap()
    expect(dest.page.get_by_role("status").filter(has_text="Receipt acknowledged")).to_be_visible()
    expect(dest.page.locator("[data-state-for]")).to_have_text("received")
    dest.audit()

    # Technician's list closes the loop.
    tech.page.get_by_role("navigation").get_by_role("link", name="My requests").tap()
    tech.page.wait_for_url("**/requests/")
    expect(tech.page.locator(f'[data-state-for="{request_id}"]')).to_have_text("received")
    tech.audit()

    for phone in (tech, doc, dest):
        phone.close()


def signed_request(app: Flask, world: Any) -> tuple[int, bytes]:
    """A delivered request, set up through the HTTP routes (the loop itself is tested above)."""
    tech, doc, dest = (app.test_client() for _ in range(3))
    login(tech, "tech")
    request_id = request_id_from(upload(tech, world, title=TITLE))
    login(doc, "doc")
    assert sign(doc, request_id).status_code == 302
    login(dest, "recipient")
    download = dest.get(f"/documents/{request_id}/download")
    assert download.status_code == 200
    return request_id, download.data


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_physician_inbox_with_recent_requests_on_a_phone(browser, live_url, app, world):
    signed_request(app, world)
    doc = Phone(browser, live_url, "physician")
    doc.login("doc")  # lands on the inbox, now with a "Recent" list
    from playwright.sync_api import expect

    expect(doc.page.get_by_role("heading", name="Recent")).to_be_visible()
    doc.close()


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_console_error_for_the_favicon(browser, live_url):
    phone = Phone(browser, live_url, "anyone")
    phone.page.goto("/login")
    phone.page.wait_for_load_state("networkidle")
    assert phone.errors == []
    assert phone.favicon_errors == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_validate_pdf_under_a_running_loop(app, svc, world):
    _, signed = signed_request(app, world)
    assert validate_outside_playwright_loop(signed, svc.keys.root_cert).ok

    async def validate_in_async_code() -> validation.ValidationReport:
        return validation.validate_pdf(signed, trust_roots=[svc.keys.root_cert])

    report = asyncio.run(validate_in_async_code())
    assert report.ok, report.as_json()


@pytest.mark.browser
def test_phone_audit_catches_each_problem(browser):
    """The phone rules above are not vacuous: a page breaking each one is reported."""
    bad_page = """<!doctype html>
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <main>
        <div style="width: 500px">too wide, and an inline style the CSP refuses</div>
        <input name="unlabelled">
        <label>Labelled <input name="labelled"></label>
        <input type="hidden" name="token">
        <button class="tiny">tiny</button>
        <p>An <a href="#">inline link</a> in a sentence is fine.</p>
      </main>"""
    phone = Phone(browser, "http://selftest.invalid", "self-test")
    phone.page.route("http://selftest.invalid/", lambda route: route.fulfill(
        status=200, content_type="text/html", body=bad_page,
        headers={"Content-Security-Policy": CSP}))
    phone.page.route("http://selftest.invalid/favicon.ico", lambda route: route.fulfill(status=204))
    phone.page.goto("/")
    # The inline style is refused, so the page's width comes from this script instead.
    phone.page.evaluate("""() => {
        document.querySelector('main div').style.width = '500px';
        document.querySelector('.tiny').style.height = '20px'; }""")
    result = phone.page.evaluate(PHONE_AUDIT)
    phone.context.close()
    problems = result["problems"]
    assert len(problems) == 3, problems
    assert problems[0].startswith("horizontal scroll")
    assert problems[1] == "unlabelled input name=unlabelled"
    assert problems[2] == 'tap target button "tiny" is 20.0px tall'
    assert result["csp"] == ["style-src-attr inline"]
    assert any("Content Security Policy" in error for error in phone.errors), phone.errors


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_page_that_cannot_be_shown_takes_the_sign_form_away(browser, app, live_url, svc, world):
    """Issue 9, item 8: the physician never signs blind. The request claims one page
    more than its document has (as if a page stopped rendering): that preview fails
    over HTTP, the phone says why and the sign form goes."""
    from playwright.sync_api import expect

    from signflow.models import SignatureRequest

    tech = app.test_client()
    login(tech, "tech")
    rid = request_id_from(upload(tech, world, data=make_pdf(2, "Consent")))
    with svc.sessions() as s, s.begin():
        s.get(SignatureRequest, rid).page_count = 3
    phone = Phone(browser, live_url, "doc")
    phone.login("doc")
    phone.page.goto(f"/inbox/{rid}")
    for _ in range(10):  # the last pages load lazily, as the physician scrolls
        phone.page.mouse.wheel(0, 2000)
        phone.page.wait_for_timeout(200)
    expect(phone.page.get_by_text("Page 3 of 3 could not be displayed")).to_be_visible()
    expect(phone.page.get_by_role("button", name="Sign", exact=True)).to_have_count(0)
    # Pages that did render stay; the physician can still decline.
    expect(phone.page.get_by_alt_text("Page 1 of 3")).to_be_visible()
    expect(phone.page.locator("details.decline form")).to_have_count(1)
    phone.context.close()


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_manager_reads_the_statistics_on_a_phone(browser, live_url, svc, world):
    """The dashboard at 360 px: no sideways scroll, labelled filters, the chart shown as
    an image within the CSP (signflow/core/stats, tests/test_stats.py for the figures)."""
    from tests.factories import create_request

    create_request(svc, world)
    manager = Phone(browser, live_url, "manager")
    manager.login("manager")  # lands on the statistics, audited
    page = manager.page
    assert page.url.endswith("/stats/")
    chart = page.get_by_role("img", name=re.compile("weekly trend"))
    chart.wait_for()
    page.wait_for_function("() => document.querySelector('img.chart').complete")
    box = chart.bounding_box()
    assert page.evaluate("() => document.querySelector('img.chart').naturalWidth") > 0
    assert box is not None and 300 < box["width"] <= 360 and box["height"] > 200
    page.get_by_label("On-call group").select_option(label="Anaesthesia on call")
    page.get_by_role("button", name="Show").tap()
    page.wait_for_url("**group=**")
    manager.audit()
    assert page.get_by_role("table", name=re.compile("Time from upload, Anaesthesia on call")).count() == 1
    manager.close()
