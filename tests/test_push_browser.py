"""The service worker in Debian's Chromium: registered by the page, woken by a push
delivered through the DevTools protocol, showing the notification."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signflow.core.notify.webpush import VapidSigner, WebPushSender
from tests.a11y import RECORD_CSP, log_in


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_push_shows_a_notification_that_links_to_the_request(browser, live_url, svc, world):
    svc.push = WebPushSender(VapidSigner(VapidSigner.generate_pem(), "mailto:signflow@hospital.example"),
                             clock=svc.clock, allow_private=True)
    context = browser.new_context(base_url=live_url, viewport={"width": 360, "height": 740},
                                   is_mobile=True, has_touch=True)
    context.grant_permissions(["notifications"], origin=live_url)
    context.add_init_script(RECORD_CSP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, "doc")
    page.get_by_role("link", name="Alerts on this phone").tap()
    page.wait_for_url("**/account/push")
    button = page.get_by_role("button", name="Turn on notifications on this phone")
    assert button.is_visible()
    cdp = context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated",
           lambda event: registrations.extend(event["registrations"]))
    cdp.send("ServiceWorker.enable")
    # The one tap: permission (granted), service worker, subscription. Debian's Chromium
    # has no push service to subscribe with, so subscribe() aborts: the page says so
    # (the server side of subscribing is tests/test_push.py, with a local push service).
    button.tap()
    page.wait_for_function("() => { const s = document.getElementById('push-status').textContent;"
                           " return s && !s.endsWith('…'); }")
    assert page.locator("#push-status").text_content() == "Notifications could not be turned on. (AbortError)"
    assert button.is_enabled()
    # ...but it registered the service worker, at the site's root scope.
    scope = page.evaluate("""async () => (await navigator.serviceWorker.getRegistration('/')).scope""")
    assert scope == live_url + "/"
    registration = next(r for r in registrations if r["scopeURL"] == scope and not r["isDeleted"])

    # The service worker tells open pages once it has shown a notification.
    page.evaluate("""() => { window.__pushes = [];
        navigator.serviceWorker.addEventListener('message', (e) => window.__pushes.push(e.data)); }""")
    payload = {"kind": "page", "title": "EMERGENCY · Anaesthesia on call · #42",
               "body": "Signature needed: open signflow to act on it.", "url": "/inbox/42",
               "tag": "request-42"}
    cdp.send("ServiceWorker.deliverPushMessage", {
        "origin": live_url, "registrationId": registration["registrationId"], "data": json.dumps(payload)})
    page.wait_for_function("() => window.__pushes.length === 1")
    shown = page.evaluate("""async () => {
        const reg = await navigator.serviceWorker.ready;
        const list = await reg.getNotifications({tag: 'request-42'});
        return {title: list[0].title, body: list[0].body, tag: list[0].tag, url: list[0].data.url};
    }""")
    assert shown == {"title": payload["title"], "body": payload["body"], "tag": "request-42",
                     "url": live_url + "/inbox/42"}

    # A payload pointing elsewhere still opens only this site.
    cdp.send("ServiceWorker.deliverPushMessage", {
        "origin": live_url, "registrationId": registration["registrationId"],
        "data": json.dumps({"title": "x", "url": "https://evil.example/phish", "tag": "other"})})
    page.wait_for_function("() => window.__pushes.length === 2")
    other = page.evaluate("""async () => {
        const reg = await navigator.serviceWorker.ready;
        return (await reg.getNotifications({tag: 'other'}))[0].data.url;
    }""")
    assert other == live_url + "/"
    assert page.evaluate("window.__pushes") == [
        {"type": "signflow-push", "title": payload["title"]}, {"type": "signflow-push", "title": "x"}]
    assert page.evaluate("window.__cspViolations") == [] and errors == []
    context.close()
