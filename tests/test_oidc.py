"""OpenID Connect login against a real OpenID Provider (tests/oidc_op.py: panva's
oidc-provider run by Node.js, one process for the module): the person's steps at the
provider are done over HTTP, signflow's side through the app (test client), and two
tests drive the real login page in Chromium."""

from __future__ import annotations

import html
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import make_server

from signflow.config import OidcProvider, Settings
from signflow.core.accounts import users as accounts
from signflow.core.errors import AuthenticationFailed
from signflow.models import AuditAction, AuditEntry, ExternalIdentity, User
from tests.a11y import axe_source, axe_violations, describe, log_in
from tests.conftest import DOC_RPPS, PASSWORD, TEST_ACTOR, csrf_token, login, make_settings
from tests.factories import count
from tests.helpers import new_request
from tests.oidc_op import CLIENT_ID, CLIENT_SECRET, JWT_CLIENT, OP, log_in_at_op, running_op, with_param
from tests.tools import free_port, serving

# PSC's SubjectNameID: "8" followed by the RPPS number.
ACCOUNTS = {
    "doc": {"SubjectNameID": "8" + DOC_RPPS, "given_name": "Hélène", "family_name": "Lefèvre",
            "email": "doc@hospital.example"},
    "offduty": {"SubjectNameID": "810000000009", "given_name": "Off", "family_name": "Duty"},
    # A real professional with no signflow account; and one whose e-mail is the technician's
    # (an e-mail never opens an account).
    "stranger": {"SubjectNameID": "810000000017", "given_name": "Jean", "family_name": "Inconnu",
                 "email": "tech@hospital.example"},
}
CALLBACK = "/login/oidc/psc/callback"


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OP]:
    with running_op(tmp_path_factory.mktemp("op"), free_port(), ACCOUNTS) as provider:
        yield provider


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A provider that accepts connections and never answers (a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def psc(op: OP) -> OidcProvider:
    return OidcProvider(name="psc", label="Pro Santé Connect", issuer=op.issuer, client_id=CLIENT_ID,
                        client_secret=CLIENT_SECRET, subject_claim="SubjectNameID",
                        professional_id_prefix="8", acr_values="eidas1", timeout_seconds=5)


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path, database_url: str, op: OP, silent_port: int) -> Settings:
    down = OidcProvider(name="down", label="Hospital login", issuer=f"http://127.0.0.1:{free_port()}",
                        client_id="x", client_secret="y", timeout_seconds=2)
    slow = OidcProvider(name="slow", label="Slow login", issuer=f"http://127.0.0.1:{silent_port}",
                        client_id="x", client_secret="y", timeout_seconds=1)
    # The production default: physicians, admins and auditors need a second factor.
    return make_settings(tmp_path / "instance", keys_dir, database_url, base_url=op.app_base_url,
                         oidc_providers=(psc(op), down, slow), mfa_roles="physician,admin,auditor")


def begin(client: FlaskClient, provider: str = "psc") -> str:
    resp = client.get(f"/login/oidc/{provider}")
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    return resp.headers["Location"]


def oidc_login(client: FlaskClient, login_name: str, acr: str = "eidas1") -> tuple[Any, str]:
    """The whole round trip; returns signflow's answer to the callback and the callback URL."""
    back = local(log_in_at_op(begin(client), login_name, acr))
    return client.get(back), back


def local(url: str) -> str:
    """The callback as the test client asks for it (its cookies are for its own host)."""
    parts = urlsplit(url)
    assert parts.path == CALLBACK, url
    return f"{parts.path}?{parts.query}"


def links(svc: Any) -> list[tuple[int, str, str]]:
    with svc.sessions() as s:
        return [(e.user_id, e.provider, e.subject) for e in s.scalars(select(ExternalIdentity))]


def test_the_authorization_request_uses_pkce_state_nonce_and_acr(client, world, op):
    url = begin(client)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(op.issuer + "/auth?")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 20 and len(query["nonce"]) >= 16
    assert query["acr_values"] == "eidas1" and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == op.app_base_url + CALLBACK


def test_an_rpps_linked_physician_logs_in_with_eidas1_as_both_factors(client, svc, world, op):
    resp, _ = oidc_login(client, "doc")
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    # Fully logged in: a physician (who must use a second factor) reaches the inbox at
    # once, and the step-up before signing counts the provider's login as a fresh factor.
    assert client.get("/inbox/").status_code == 200
    with client.session_transaction() as session:
        assert abs(float(session["factor_at"]) - svc.clock().timestamp()) < 5
    assert links(svc) == [(world.doc, "psc", "8" + DOC_RPPS)]
    with svc.sessions() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "login.succeeded")
                          .order_by(AuditEntry.seq.desc())).first()
        assert entry is not None and entry.actor_id == world.doc
        assert '"oidc:psc"' in entry.line and '"eidas1"' in entry.line
    # Again, from a new browser: the same link, nothing added.
    again, _ = oidc_login(svc_client(client), "doc")
    assert again.status_code == 302
    assert links(svc) == [(world.doc, "psc", "8" + DOC_RPPS)]


def svc_client(client: FlaskClient) -> FlaskClient:
    return client.application.test_client()


def test_a_lower_level_still_asks_for_signflows_second_factor(client, svc, world):
    with svc.sessions() as s, s.begin():
        s.get(User, world.doc).totp_secret_enc = b"enrolled"  # what factors.enrolled looks at
    resp, _ = oidc_login(client, "doc", acr="basic")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login/code"
    assert client.get("/inbox/").headers["Location"].startswith("/login")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_after_the_second_factor_the_session_still_logs_out_at_the_provider(client, svc, world, op):
    import pyotp

    from signflow.core.accounts import mfa

    secret = mfa.new_secret()
    with svc.sessions() as s, s.begin():
        doc = s.get(User, world.doc)
        doc.totp_secret_enc = mfa.seal_secret(svc.keys.master_key, doc, secret)
    resp, _ = oidc_login(client, "doc", acr="basic")
    assert resp.headers["Location"] == "/login/code"
    token = csrf_token(client, "/login/code")
    done = client.post("/login/code", data={"csrf_token": token,
                                            "code": pyotp.TOTP(secret).at(svc.clock())})
    assert done.status_code == 302 and client.get("/inbox/").status_code == 200
    page = client.post("/logout", data={"csrf_token": csrf_token(client, "/inbox/")})
    assert op.issuer + "/session/end?" in page.get_data(as_text=True)


def test_a_replayed_missing_or_forged_state_is_refused(client, svc, world):
    resp, back = oidc_login(client, "doc")
    assert resp.status_code == 302
    users, linked = count(svc, User), links(svc)
    # The same callback again, in the same browser and in another one.
    for browser in (client, svc_client(client)):
        replay = browser.get(back)
        assert replay.status_code == 401
        assert "not under way any more" in replay.get_data(as_text=True)
    # A login under way, and a callback without its state, or with another one.
    for params in ({"code": "x"}, {"code": "x", "state": "forged"}):
        fresh = svc_client(client)
        begin(fresh)
        answer = fresh.get(CALLBACK, query_string=params)
        assert answer.status_code == 401 and "could not be checked" in answer.get_data(as_text=True)
        assert fresh.get("/inbox/").status_code == 302  # not logged in
    assert (count(svc, User), links(svc)) == (users, linked)


def test_a_wrong_nonce_is_refused(client, svc, world):
    # The real OP signs an id_token carrying whatever nonce the request had: tamper with it.
    back = local(log_in_at_op(with_param(begin(client), nonce="not-the-one-we-sent"), "doc"))
    resp = client.get(back)
    assert resp.status_code == 401 and "could not be checked" in resp.get_data(as_text=True)
    assert links(svc) == []


def test_a_missing_or_foreign_iss_on_the_callback_is_refused(client, svc, world, op):
    # RFC 9207: the OP advertises authorization_response_iss_parameter_supported.
    for iss in (None, "http://127.0.0.1:1"):
        fresh = svc_client(client)
        back = log_in_at_op(begin(fresh), "doc")
        query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        assert query["iss"] == op.issuer
        query.pop("iss")
        if iss:
            query["iss"] = iss
        assert fresh.get(CALLBACK, query_string=query).status_code == 401
    assert links(svc) == []


def test_a_login_refused_at_the_provider_is_said_as_such(client, svc, world):
    # The test OP refuses a login it does not know (access_denied), as a person cancelling.
    resp, back = oidc_login(client, "nobody")
    assert "error=access_denied" in back
    assert resp.status_code == 401 and "did not finish" in resp.get_data(as_text=True)
    assert links(svc) == []


def test_an_unknown_professional_id_creates_nothing(client, svc, world):
    users = count(svc, User)
    resp, _ = oidc_login(client, "stranger")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 401
    assert "No signflow account has the professional id that Pro Santé Connect gave for you" in page
    assert "Nothing was created" in page
    # Not linked to the technician whose e-mail the provider sent.
    assert count(svc, User) == users and links(svc) == []
    assert client.get("/requests/").status_code == 302
    assert count(svc, AuditEntry, AuditEntry.action == "login.failed") == 1


def test_a_disabled_account_never_linked_is_refused_as_disabled(client, svc, world):
    with svc.sessions() as s, s.begin():
        accounts.set_user_active(s, actor=TEST_ACTOR, user_id=world.offduty, active=False,
                                 now=svc.clock())
    refused, _ = oidc_login(client, "offduty")
    assert refused.status_code == 401 and "disabled" in refused.get_data(as_text=True)
    assert links(svc) == []


def test_a_disabled_account_is_refused(client, svc, world):
    resp, _ = oidc_login(client, "offduty")
    assert resp.status_code == 302  # linked on this first login
    with svc.sessions() as s, s.begin():
        accounts.set_user_active(s, actor=TEST_ACTOR, user_id=world.offduty, active=False,
                                 now=svc.clock())
    refused, _ = oidc_login(svc_client(client), "offduty")
    assert refused.status_code == 401 and "disabled" in refused.get_data(as_text=True)
    # The session opened before is gone too (disabling ends sessions).
    assert client.get("/inbox/").status_code == 302


def test_a_provider_down_or_silent_leaves_local_login_working(client, world):
    for name in ("down", "slow"):
        started = time.monotonic()
        resp = client.get(f"/login/oidc/{name}")
        assert resp.status_code == 503, name
        assert "does not answer right now" in resp.get_data(as_text=True)
        assert time.monotonic() - started < 8, "the timeout bounds the wait"
    login(client, "tech")
    assert client.get("/requests/").status_code == 200


def test_logout_goes_to_the_providers_end_session_endpoint(client, world, op):
    oidc_login(client, "doc")
    token = csrf_token(client, "/inbox/")
    page = client.post("/logout", data={"csrf_token": token}).get_data(as_text=True)
    found = re.search(r'href="([^"]+)" data-provider-logout', page)
    assert found, page[:500]
    url = html.unescape(found.group(1))
    assert f'content="0;url={found.group(1)}"' in page  # the browser goes there by itself
    assert url.startswith(op.issuer + "/session/end?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["post_logout_redirect_uri"] == op.app_base_url + "/login"
    assert query["id_token_hint"].count(".") == 2
    assert client.get("/inbox/").status_code == 302


@pytest.fixture
def live(app: Any, op: OP) -> Iterator[str]:
    """The app over HTTP at the address the OP redirects to (its registered redirect URI)."""
    port = int(urlsplit(op.app_base_url).port or 0)
    with serving(make_server("127.0.0.1", port, app, threaded=True)):
        yield op.app_base_url


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_in_chromium_a_physician_logs_in_and_out_through_the_provider(browser, live, world, svc, op):
    page = browser.new_page(base_url=live)
    page.goto("/login")
    # The providers' buttons keep the login page accessible (axe-core, as test_accessibility).
    violations = axe_violations(page, axe_source())
    assert violations == [], describe("/login with providers", violations)
    page.get_by_role("link", name="Log in with Pro Santé Connect").click()
    page.wait_for_url(f"{op.issuer}/interaction/**")
    page.get_by_label("Login").fill("doc")
    page.get_by_label("Level").select_option("eidas1")
    page.get_by_role("button", name="Sign in at the provider").click()
    page.wait_for_url(f"{live}/inbox/**")
    assert links(svc) == [(world.doc, "psc", "8" + DOC_RPPS)]
    page.get_by_role("button", name="Log out Dr Hélène Lefèvre").click()
    # Our page sends the browser on to the provider's end_session_endpoint, which asks...
    page.wait_for_url(f"{op.issuer}/session/end**")
    page.get_by_role("button", name="Yes, sign me out").click()
    # ...and comes back to our login page (post_logout_redirect_uri).
    page.wait_for_url(f"{live}/login**")
    page.goto("/inbox/")
    assert "/login" in page.url


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_in_chromium_an_unknown_id_and_a_provider_down_are_said_plainly(browser, live, world, svc):
    page = browser.new_page(base_url=live)
    page.goto("/login")
    page.get_by_role("link", name="Log in with Pro Santé Connect").click()
    page.get_by_label("Login").fill("stranger")
    page.get_by_role("button", name="Sign in at the provider").click()
    page.wait_for_url(f"{live}{CALLBACK}**")
    assert "No signflow account has the professional id" in page.get_by_role("alert").inner_text()
    assert links(svc) == []
    page.goto("/login")
    page.get_by_role("link", name="Log in with Hospital login").click()
    assert "Hospital login does not answer right now" in page.get_by_role("alert").inner_text()
    # The local login still works.
    log_in(page, "tech")
    assert "/requests" in page.url


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_site_without_local_login_shows_only_the_providers(svc, settings, world):
    from dataclasses import replace

    from signflow.app import create_app

    closed = settings.with_overrides(local_login=False)
    client = create_app(closed, services=replace(svc, settings=closed)).test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "Log in with Pro Santé Connect" in page and 'name="password"' not in page
    # The page's only CSRF token is the passkey script's.
    found = re.search(r'data-csrf="([^"]+)"', page)
    assert found
    token = found.group(1)
    client.post("/login", data={"username": "tech", "password": PASSWORD, "csrf_token": token})
    assert client.get("/requests/").status_code == 302  # the password did not log in
    assert "Log in with Hospital login" in page


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_self_enrolment_lands_awaiting_an_administrators_approval(svc, settings, world, op):
    from dataclasses import replace

    from signflow.app import create_app
    from signflow.core.accounts import four_eyes
    from signflow.core.audit.log import Actor
    from signflow.models import ChangeStatus, PendingChange

    enrolling = settings.with_overrides(oidc_providers=(replace(psc(op), self_enrol_role="physician"),))
    app = create_app(enrolling, services=replace(svc, settings=enrolling))
    client = app.test_client()
    resp, _ = oidc_login(client, "stranger")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    assert "awaits an administrator's approval" in html.unescape(client.get("/login").get_data(as_text=True))
    with svc.sessions() as s:
        user = s.scalars(select(User).where(User.professional_id == "10000000017")).one()
        assert (user.role, user.active, user.password_hash, user.display_name) == (
            "physician", False, None, "Jean Inconnu")
        change = s.scalars(select(PendingChange).where(PendingChange.user_id == user.id)).one()
        assert change.status == ChangeStatus.PENDING
        new_id = user.id
    assert (new_id, "psc", "810000000017") in links(svc)
    # Not before approval...
    again, _ = oidc_login(app.test_client(), "stranger")
    assert again.status_code == 401 and "awaits an administrator" in again.get_data(as_text=True)
    with svc.sessions() as s, s.begin():
        admin = s.get(User, world.admin)
        four_eyes.approve(s, actor=Actor.of(admin), now=svc.clock(), change_id=change.id)
    # ...and at once after, through the same link (no second account).
    approved, _ = oidc_login(app.test_client(), "stranger")
    assert approved.status_code == 302 and approved.headers["Location"] == "/"
    assert count(svc, User, User.professional_id == "10000000017") == 1


def test_private_key_jwt_client_authentication_with_the_real_op(op):
    from signflow.web.oidc_client import AuthlibProvider

    provider = AuthlibProvider(OidcProvider(
        name="psc-jwt", label="Pro Santé Connect", issuer=op.issuer, client_id=JWT_CLIENT,
        client_auth="private_key_jwt", private_key=op.client_key_pem, subject_claim="SubjectNameID"))
    started = provider.begin(op.app_base_url + "/login/oidc/psc-jwt/callback")
    back = urlsplit(log_in_at_op(started.url, "doc"))
    verified = provider.finish(started, {k: v[0] for k, v in parse_qs(back.query).items()})
    assert verified.claims["SubjectNameID"] == "8" + DOC_RPPS and verified.claims["aud"] == JWT_CLIENT
    # The OP refuses the same client without its key (so the assertion above was the JWT's doing).
    keyless = AuthlibProvider(OidcProvider(
        name="psc-jwt", label="Pro Santé Connect", issuer=op.issuer, client_id=JWT_CLIENT,
        client_secret="guess", client_auth="client_secret_basic"))
    started = keyless.begin(op.app_base_url + "/login/oidc/psc-jwt/callback")
    back = urlsplit(log_in_at_op(started.url, "doc"))
    with pytest.raises(AuthenticationFailed):
        keyless.finish(started, {k: v[0] for k, v in parse_qs(back.query).items()})


STEP_UP_ACTIONS = (AuditAction.STEP_UP_REQUIRED, AuditAction.STEP_UP_FAILED, AuditAction.STEP_UP_SUCCEEDED)


def _step_up_link(page: str) -> str:
    found = re.search(r'href="(/login/oidc/psc\?[^"]*step_up=1[^"]*)"', page)
    assert found, "no step-up through the provider on the sign page"
    return html.unescape(found.group(1))


def test_a_stale_provider_login_is_confirmed_again_through_the_provider(app, client, svc, world,
                                                                        clock, op):
    """A physician who has only Pro Santé Connect (no code, no passkey) steps up through
    it: the provider authenticates them again (prompt=login) and they come back to the
    sign panel, still signed in; another person or a weaker level does not count."""
    resp, _ = oidc_login(client, "doc")
    assert resp.status_code == 302
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    fresh = client.get(f"/inbox/{rid}").get_data(as_text=True)
    assert 'name="pin"' in fresh and "step_up=1" not in fresh

    clock.advance(minutes=16)  # SIGNFLOW_STEP_UP_MINUTES is 15 by default
    stale = client.get(f"/inbox/{rid}").get_data(as_text=True)
    link = _step_up_link(stale)
    # Nothing to type a PIN into yet: the provider comes first.
    assert 'name="pin"' not in stale

    def round_trip(login_name: str, acr: str = "eidas1") -> Any:
        start = client.get(link)
        assert start.status_code == 302
        assert parse_qs(urlsplit(start.headers["Location"]).query)["prompt"] == ["login"]
        return client.get(local(log_in_at_op(start.headers["Location"], login_name, acr)))

    someone_else = round_trip("offduty")
    assert someone_else.status_code == 401
    assert "confirmed another person" in html.unescape(someone_else.get_data(as_text=True))
    weaker = round_trip("doc", acr="basic")
    assert weaker.status_code == 401 and "level signing needs" in html.unescape(
        weaker.get_data(as_text=True))
    # Still signed in as before, and still asked.
    assert "step_up=1" in client.get(f"/inbox/{rid}").get_data(as_text=True)

    confirmed = round_trip("doc")
    assert confirmed.status_code == 302
    assert confirmed.headers["Location"] == f"/inbox/{rid}#sign"
    ready = client.get(f"/inbox/{rid}").get_data(as_text=True)
    assert 'name="pin"' in ready and "step_up=1" not in ready
    with svc.sessions() as s:
        entries = list(s.scalars(select(AuditEntry).where(AuditEntry.actor_id == world.doc,
                                                          AuditEntry.action.in_(STEP_UP_ACTIONS))
                                 .order_by(AuditEntry.seq)))
    assert [e.action for e in entries] == ["step_up.failed", "step_up.failed", "step_up.succeeded"]
    assert '"factor":"provider"' in entries[-1].line
