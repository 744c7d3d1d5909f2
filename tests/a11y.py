"""Browser plumbing shared by the Playwright tests: Debian's Chromium, the app served over
real HTTP, logging in through the form, and axe-core's accessibility rules on a page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import PASSWORD
from tests.tools import missing, require_file, serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = dict(viewport={"width": 360, "height": 740}, device_scale_factor=3, is_mobile=True,
             has_touch=True)
# The sizes issue 12 asks axe to check: a current phone, and a desk's browser window.
SIZES = {"phone": dict(viewport={"width": 390, "height": 844}, device_scale_factor=3,
                       is_mobile=True, has_touch=True),
         "desktop": dict(viewport={"width": 1280, "height": 800})}
# Installed by `npm ci --prefix tests/js --ignore-scripts` (.ci/run), pinned by the lockfile.
AXE = Path(__file__).resolve().parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")

# Runs before any page script: CSP violations are events, not exceptions, so record them.
RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline'));
});
"""

RUN_AXE = """
async (impacts) => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.filter((v) => impacts.includes(v.impact)).map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ': ' + (n.failureSummary || '')),
  }));
}
"""


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium (never a downloaded one), driven by Playwright's sync API."""
    executable = require_file(CHROMIUM, "package chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """`app` over real HTTP in a thread; yields its base URL."""
    # Port 0: the kernel picks a free port, no race with other test runs.
    with serving(make_server("127.0.0.1", 0, app, threaded=True)) as port:
        yield f"http://127.0.0.1:{port}"


def log_in(page: Any, username: str, password: str = PASSWORD) -> None:
    """Through the login form, as a person does (tap: the contexts emulate phones)."""
    page.goto("/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def axe_source() -> str:
    return Path(require_file(AXE, "npm ci --prefix tests/js --ignore-scripts")).read_text()


def axe_violations(page: Any, source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page now shown.

    The app's Content-Security-Policy refuses inline scripts, so add_script_tag (an
    inline <script>) would be blocked; evaluating the source through the DevTools
    protocol is not subject to the page's CSP, which stays enforced for everything
    else the page does (the tests still see its violations)."""
    page.wait_for_load_state("load")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    violations: list[dict[str, Any]] = page.evaluate(RUN_AXE, list(BLOCKING_IMPACTS))
    return violations


def describe(where: str, violations: list[dict[str, Any]]) -> str:
    """One readable block per violation, for an assertion message."""
    lines = []
    for v in violations:
        lines.append(f"{where}: [{v['impact']}] {v['id']}: {v['help']}")
        lines.extend(f"    {node}" for node in v["nodes"])
    return "\n".join(lines)


def no_horizontal_scroll(page: Any) -> bool:
    # In mobile emulation innerWidth grows to fit overflowing content, so on its own
    # it never reports sideways scrolling; clientWidth stays the device's width.
    return bool(page.evaluate("""() => { const doc = document.documentElement;
        return doc.scrollWidth <= Math.min(window.innerWidth, doc.clientWidth); }"""))


# --------------------------------------------------------------------------- keyboard only

def focused_matches(page: Any, selector: str) -> bool:
    return bool(page.evaluate(
        "(sel) => !!document.activeElement && document.activeElement.matches(sel)", selector))


def tab_to(page: Any, selector: str, *, limit: int = 80) -> None:
    """Press Tab until the element matching `selector` has the focus: it is reachable
    from the keyboard, in the page's own order."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused_matches(page, selector):
            return
    raise AssertionError(f"{selector} never got the focus in {limit} presses of Tab on {page.url}")


FOCUSABLE = """() => Array.from(document.querySelectorAll(
    'a[href], button, input, select, textarea, summary, [tabindex]'))
  .filter((el) => el.type !== 'hidden' && !el.disabled && el.tabIndex >= 0
          // Shown: not display:none, nor inside a closed <details> (its summary is).
          && el.checkVisibility({visibilityProperty: true}))"""


def unreachable_by_tab(page: Any) -> list[str]:
    """The focusable elements shown on the page that Tab, pressed round the whole page,
    never reaches (an empty list: everything is reachable, and nothing traps the focus)."""
    count = page.evaluate(f"() => ({FOCUSABLE})().length")
    # Twice round: wherever the focus starts, every element comes by at least once.
    for _ in range(2 * count + 2):
        page.keyboard.press("Tab")
        page.evaluate("() => document.activeElement?.setAttribute('data-tab-seen', '')")
    missed: list[str] = page.evaluate(f"""() => ({FOCUSABLE})()
        .filter((el) => !el.hasAttribute('data-tab-seen'))
        .map((el) => el.outerHTML.slice(0, 120))""")
    page.evaluate("""() => document.querySelectorAll('[data-tab-seen]')
        .forEach((el) => el.removeAttribute('data-tab-seen'))""")
    return missed


def choose_by_keyboard(page: Any, text: str) -> None:
    """In the focused <select>, the arrow keys move to the option showing `text`."""
    current, target = page.evaluate("""(text) => {
        const select = document.activeElement;
        const options = Array.from(select.options);
        return [select.selectedIndex, options.findIndex((o) => o.text.trim() === text)]; }""", text)
    assert target >= 0, f"no option {text!r} in the focused element on {page.url}"
    key = "ArrowDown" if target > current else "ArrowUp"
    for _ in range(abs(target - current)):
        page.keyboard.press(key)
    chosen = page.evaluate("() => document.activeElement.selectedOptions[0].text.trim()")
    assert chosen == text, (chosen, text)
