"""Passkeys in Debian's Chromium with the DevTools virtual authenticator (CTAP2,
internal, user verification): register through the account page, log in without a
password, a second passkey, a revoked one refused, an assertion made on another origin
refused, and a replayed older assertion refused by its signature counter.

WebAuthn needs a host name for its RP id (an IP address is refused by the browser),
so the app is served on 127.0.0.1 and reached as http://localhost:<port>."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from signflow.app import create_app
from signflow.core.accounts import passkeys
from signflow.core.errors import AuthenticationFailed
from signflow.models import AuditEntry, PasskeyPurpose, SignatureRequest, WebAuthnCredential
from tests.conftest import PASSWORD, PIN, login
from tests.helpers import new_request
from tests.tools import missing, require_file, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP localhost 127.0.0.1"]
RECORD_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective));
"""
AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True,
                 "automaticPresenceSimulation": True}


class Site:
    """The app served twice from one database: `url` is its configured origin, `other`
    the same app reached on another port (another origin, same RP id: a relay)."""

    def __init__(self) -> None:
        self.app: Any = None
        self.url = ""
        self.other = ""

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture
def site(svc, settings) -> Iterator[Site]:
    served = Site()
    with serving(make_server("127.0.0.1", 0, served, threaded=True)) as port, \
            serving(make_server("127.0.0.1", 0, served, threaded=True)) as other_port:
        local = settings.with_overrides(base_url=f"http://localhost:{port}")
        svc.settings = local
        served.app = create_app(local, services=svc)
        served.url, served.other = f"http://localhost:{port}", f"http://localhost:{other_port}"
        yield served


@pytest.fixture
def chromium() -> Iterator[Any]:
    executable = require_file(CHROMIUM, "package chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Phone:
    """A browser context with a page, its DevTools session and a virtual authenticator."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url, viewport={"width": 360, "height": 740},
                                           is_mobile=True, has_touch=True)
        self.context.add_init_script(RECORD_CSP)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        self.authenticator = self.add_authenticator()

    def add_authenticator(self) -> str:
        reply = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
        return str(reply["authenticatorId"])

    def swap_authenticator(self, credentials: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Take the current authenticator away (returning its credentials) and put in a
        new one holding `credentials`: a second device, or the first one back."""
        held = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.authenticator})
        self.authenticator = self.add_authenticator()
        for credential in credentials or []:
            self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.authenticator,
                                                     "credential": credential})
        return list(held["credentials"])

    def password_login(self, username: str) -> None:
        self.page.goto("/login")
        self.page.get_by_label("User name").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(lambda url: "/login" not in url or "/login/code" in url)

    def add_passkey(self, name: str) -> None:
        self.page.goto("/account/passkeys")
        self.page.get_by_label("Name of this passkey").fill(name)
        self.page.get_by_role("button", name="Add a passkey").click()
        self.page.get_by_text(f"Passkey “{name}” added.").wait_for()

    def passkey_login(self) -> None:
        self.page.goto("/login")
        self.page.get_by_role("button", name="Use a passkey instead").click()

    def logout(self) -> None:
        self.page.get_by_role("button", name="Log out").click()
        self.page.wait_for_url("**/login")

    def csp(self) -> list[str]:
        return list(self.page.evaluate("window.__csp"))


def _refusals(svc) -> list[dict[str, Any]]:
    with svc.sessions() as s:
        lines = s.scalars(select(AuditEntry.line).where(AuditEntry.action == "passkey.refused")
                          .order_by(AuditEntry.seq)).all()
    return [json.loads(line) for line in lines]


def _logins(svc, user_id: int) -> list[list[str]]:
    with svc.sessions() as s:
        lines = s.scalars(select(AuditEntry.line).where(
            AuditEntry.action == "login.succeeded", AuditEntry.actor_id == user_id)
            .order_by(AuditEntry.seq)).all()
    return [json.loads(line)["factors"] for line in lines]


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_register_log_in_second_passkey_and_revoke(chromium, site, svc, world):
    phone = Phone(chromium, site.url)
    page = phone.page
    phone.password_login("doc")
    phone.add_passkey("My phone")
    with svc.sessions() as s:
        rows = s.scalars(select(WebAuthnCredential).where(WebAuthnCredential.user_id == world.doc)).all()
        assert [r.name for r in rows] == ["My phone"] and rows[0].public_key
        assert "internal" in rows[0].transports
    phone.logout()

    # Passwordless: the passkey (with the phone's user verification) is both factors.
    phone.passkey_login()
    page.wait_for_url("**/inbox/")
    assert _logins(svc, world.doc)[-1] == ["passkey"]

    # A second passkey, on another authenticator (a security key).
    first = phone.swap_authenticator()
    phone.add_passkey("Security key")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    # With passkeys, the password alone is not enough: the second factor is a passkey.
    phone.password_login("doc")
    assert "/login/code" in page.url
    page.get_by_role("button", name="Use my passkey").click()
    page.wait_for_url("**/inbox/")
    assert _logins(svc, world.doc)[-1] == ["password", "passkey"]

    # The owner removes the security key: it no longer logs in.
    page.goto("/account/passkeys")
    page.get_by_role("button", name="Remove the passkey Security key").click()
    page.get_by_text("Passkey “Security key” removed").wait_for()
    phone.logout()
    phone.passkey_login()
    status = page.locator("[data-passkey-status]")
    status.wait_for()
    assert "not accepted" in status.inner_text()
    assert page.url.endswith("/login")
    assert _refusals(svc)[-1]["problem"] == "revoked"

    # The phone's passkey still does.
    phone.swap_authenticator(first)
    phone.passkey_login()
    page.wait_for_url("**/inbox/")
    assert phone.csp() == [] and phone.errors == []
    with svc.sessions() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.actor_id == world.doc)).all()
    assert actions.count("passkey.registered") == 2 and actions.count("passkey.revoked") == 1


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_assertion_made_for_another_origin_is_refused(chromium, site, svc, world):
    phone = Phone(chromium, site.url)
    phone.password_login("doc")
    phone.add_passkey("My phone")
    credentials = phone.swap_authenticator()

    # The same app relayed on another port: the browser signs for that origin (same RP
    # id, so the authenticator agrees), the server expects its own and refuses.
    relay = Phone(chromium, site.other)
    relay.swap_authenticator(credentials)
    relay.passkey_login()
    status = relay.page.locator("[data-passkey-status]")
    status.wait_for()
    assert "not accepted" in status.inner_text()
    refusal = _refusals(svc)[-1]
    assert "origin" in refusal["problem"].lower() and refusal["purpose"] == "login"
    assert _logins(svc, world.doc) == [["password"]]


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_older_assertion_replayed_after_a_newer_one_is_refused(chromium, site, svc, world, clock):
    phone = Phone(chromium, site.url)
    phone.password_login("doc")
    phone.add_passkey("My phone")
    phone.logout()

    # Two real assertions, held back from the server (their challenges stay unused).
    held: list[str] = []

    def hold(route: Any) -> None:
        held.append(json.loads(route.request.post_data)["credential"])
        route.fulfill(status=503, content_type="application/json", body='{"detail": "held"}')

    phone.page.route("**/login/passkey", hold)
    for _ in range(2):
        phone.passkey_login()
        phone.page.locator("[data-passkey-status]").wait_for()
    assert len(held) == 2
    older, newer = held
    rp = passkeys.RelyingParty.from_base_url(site.url)
    with svc.sessions() as s, s.begin():
        user = passkeys.authenticate(s, rp, purpose=PasskeyPurpose.LOGIN, user_id=None,
                                     response_json=newer, now=clock(), ip="127.0.0.1")
        assert user.id == world.doc
    with svc.sessions() as s, s.begin():
        count = s.scalar(select(WebAuthnCredential.sign_count))
        assert count and count >= 2
    # The older one carries a smaller counter: a cloned authenticator, refused.
    with svc.sessions() as s, s.begin(), pytest.raises(AuthenticationFailed):
        passkeys.authenticate(s, rp, purpose=PasskeyPurpose.LOGIN, user_id=None,
                              response_json=older, now=clock(), ip="127.0.0.1")
    assert _refusals(svc)[-1]["problem"] == "sign-count"
    # And the newer one again: its challenge was used up.
    with svc.sessions() as s, s.begin(), pytest.raises(AuthenticationFailed):
        passkeys.authenticate(s, rp, purpose=PasskeyPurpose.LOGIN, user_id=None,
                              response_json=newer, now=clock(), ip="127.0.0.1")
    assert _refusals(svc)[-1]["problem"] == "challenge"


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_passkey_confirms_on_the_sign_page(chromium, site, svc, world):
    tech = site.app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    phone = Phone(chromium, site.url)
    page = phone.page
    phone.password_login("doc")
    phone.add_passkey("My phone")  # no second factor was used in this login: step-up applies
    page.goto(f"/inbox/{rid}")
    page.get_by_label("Signing PIN").fill(PIN)
    page.get_by_role("button", name="Confirm with my passkey and sign").click()
    page.get_by_text("Signed and delivered").wait_for()
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.signed_by_id == world.doc
        lines = s.scalars(select(AuditEntry.line).where(
            AuditEntry.action == "step_up.succeeded")).all()
    assert [json.loads(line)["factor"] for line in lines] == ["passkey"]
    assert phone.csp() == [] and phone.errors == []


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_passwordless_login_is_for_physicians_only(chromium, site, svc, world):
    phone = Phone(chromium, site.url)
    phone.password_login("tech")
    phone.add_passkey("Desk key")  # a technician's passkey is a second factor...
    phone.logout()
    phone.passkey_login()  # ...not a login on its own
    status = phone.page.locator("[data-passkey-status]")
    status.wait_for()
    assert "not accepted" in status.inner_text() and phone.page.url.endswith("/login")
    assert _refusals(svc)[-1]["problem"] == "not-allowed"
    phone.password_login("tech")
    assert "/login/code" in phone.page.url
    phone.page.get_by_role("button", name="Use my passkey").click()
    phone.page.wait_for_url("**/requests/")
    assert _logins(svc, world.tech)[-1] == ["password", "passkey"]
