"""Web Push to the physician's phone: a real local RFC 8030 push service that checks
VAPID and decrypts RFC 8291, through the real routes and the real worker."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from signflow.app import create_app
from signflow.config import VAPID_KEY_FILE, Settings, load_settings
from signflow.core.accounts import push_devices
from signflow.core.audit.log import SYSTEM
from signflow.core.errors import ConfigurationError, InvalidInput, ServiceUnavailable
from signflow.core.notify.webpush import PushTarget, VapidSigner, WebPushSender, check_endpoint
from signflow.models import AuditAction, AuditEntry, PushSubscription
from signflow.services import make_push_sender
from tests.conftest import T0, csrf_token, login
from tests.factories import count, create_request
from tests.helpers import run_jobs
from tests.push_service import PushService, Subscriber, push_service, tls_contexts
from tests.tools import run_cli

CODE = re.compile(r"Your code: (\d{6})")


@pytest.fixture
def pusher(svc, clock, tmp_path) -> Iterator[tuple[WebPushSender, PushService]]:
    """The app's push sender (trusting the test service's certificate) and the service."""
    server_tls, client_tls = tls_contexts(tmp_path)
    signer = VapidSigner(VapidSigner.generate_pem(), "mailto:signflow@hospital.example")
    sender = WebPushSender(signer, clock=clock, allow_private=True, timeout=0.5, ssl_context=client_tls)
    svc.push = sender
    with push_service(server_tls, application_server_key=signer.application_server_key,
                      clock=clock) as service:
        yield sender, service
    assert service.problems == []


def subscription_json(endpoint: str, subscriber: Subscriber) -> dict[str, object]:
    return {"endpoint": endpoint, "expirationTime": None,
            "keys": {"p256dh": subscriber.p256dh, "auth": subscriber.auth}}


def post_subscription(client: FlaskClient, body: dict[str, object]):
    token = csrf_token(client, "/account/push")
    return client.post("/account/push/subscribe", json=body,
                       headers={"X-CSRFToken": token, "Accept": "application/json",
                                "User-Agent": "Mozilla/5.0 (Linux; Android 14) Chrome/131.0 Mobile"})


def verified_device(client: FlaskClient, service: PushService, token: str = "phone") -> int:
    endpoint, subscriber = service.new_subscription(token)
    resp = post_subscription(client, subscription_json(endpoint, subscriber))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    device = resp.get_json()["id"]
    code = CODE.search(service.payloads(token)[-1]["body"]).group(1)
    resp = client.post(f"/account/push/{device}/verify",
                       data={"code": code, "csrf_token": csrf_token(client, "/account/push")})
    assert resp.status_code == 302
    device_first(client, int(device))
    return int(device)


def device_first(client: FlaskClient, device: int) -> None:
    """The device moved to the top of its owner's one ordered list on /account/contacts
    (it joins it last, after the e-mail the enrolment code verified)."""
    page = client.get("/account/contacts/").get_data(as_text=True)
    channel = re.search(rf'data-channel="(\d+)" data-device="{device}"', page)
    assert channel, page
    while re.findall(r'data-channel="(\d+)"', page)[0] != channel.group(1):
        assert client.post(f"/account/contacts/{channel.group(1)}/earlier",
                           data={"csrf_token": csrf_token(client, "/account/contacts/")}).status_code == 302
        page = client.get("/account/contacts/").get_data(as_text=True)


def test_a_page_reaches_the_verified_phone_and_says_no_more_than_it_must(app, svc, world, pusher):
    _sender, service = pusher
    client = app.test_client()
    login(client, "doc")
    page = client.get("/account/push").get_data(as_text=True)
    assert f'data-key="{svc.push.application_server_key}"' in page

    endpoint, subscriber = service.new_subscription("phone")
    resp = post_subscription(client, subscription_json(endpoint, subscriber))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    device = resp.get_json()["id"]
    [verification] = service.payloads("phone")
    assert verification["kind"] == "verify" and verification["url"] == "/account/push"
    code = CODE.search(verification["body"]).group(1)
    # Unverified: a request created now is not pushed to it.
    page = client.get(resp.get_json()["next"]).get_data(as_text=True)
    assert f'data-verify-for="{device}"' in page and "waiting for its code" in page
    assert code not in page  # only the phone shows it
    with svc.sessions() as s:
        assert not any(code in e.line for e in s.scalars(select(AuditEntry)))
    wrong = "000000" if code != "000000" else "111111"
    resp = client.post(f"/account/push/{device}/verify",
                       data={"code": wrong, "csrf_token": csrf_token(client, "/account/push")})
    assert resp.status_code == 400
    with svc.sessions() as s:
        assert s.get(PushSubscription, device).code_attempts == 1
        assert s.get(PushSubscription, device).verified_at is None
    resp = client.post(f"/account/push/{device}/verify",
                       data={"code": code, "csrf_token": csrf_token(client, "/account/push")})
    assert resp.status_code == 302
    with svc.sessions() as s:
        row = s.get(PushSubscription, device)
        assert row.verified_at == svc.clock() and row.code_hash is None
        assert row.user_agent_label == "Chrome on Android"
    # Verified: it joins the physician's one ordered list, last (after the e-mail).
    listed = client.get("/account/contacts/").get_data(as_text=True)
    assert "Chrome on Android" in listed and f'data-device="{device}"' in listed
    before = len(svc.notifier.sent)
    rid = create_request(svc, world)
    run_jobs(svc)
    assert [p["kind"] for p in service.payloads("phone")] == ["verify"]  # the e-mail took it
    assert [m.to_email for m in svc.notifier.sent[before:]] == ["doc@hospital.example"]

    device_first(client, device)
    rid = create_request(svc, world, urgency="emergency")
    run_jobs(svc)
    page_push = service.payloads("phone")[-1]
    assert page_push == {"kind": "page", "title": f"Signature needed (emergency): request #{rid}",
                         "body": f"signflow: Signature needed (emergency): request #{rid}, "
                                 "Anaesthesia on call. Open signflow to act on it.",
                         "url": f"/inbox/{rid}", "tag": f"request-{rid}"}
    assert len(svc.notifier.sent) == before + 1  # the phone took it: no e-mail this time
    delivered = service.deliveries[-1]
    assert delivered.headers["urgency"] == "high"
    assert "Donor consent" not in json.dumps(page_push)  # the title (patient data) never leaves
    with svc.sessions() as s:
        assert s.get(PushSubscription, device).last_success_at == svc.clock()
        sent = s.scalars(select(AuditEntry).where(AuditEntry.action == AuditAction.PAGE_SENT,
                                                  AuditEntry.request_id == rid)).all()
        assert any('"channel":"push"' in e.line for e in sent)


def test_only_verified_devices_are_paged(app, svc, world, pusher):
    _sender, service = pusher
    client = app.test_client()
    login(client, "doc")
    endpoint, subscriber = service.new_subscription("unverified")
    assert post_subscription(client, subscription_json(endpoint, subscriber)).status_code == 201
    create_request(svc, world)
    run_jobs(svc)
    assert [p["kind"] for p in service.payloads("unverified")] == ["verify"]


@pytest.mark.parametrize("endpoint", [
    "http://push.example/abc", "https://127.0.0.1/x", "https://10.1.2.3/x", "https://[::1]/x",
    "https://169.254.10.1/x", "https://192.168.1.20/x", "https://localhost/x", "ftp://push.example/x",
    "https:///nohost", "https://user:pw@push.example/x",
])
def test_private_and_non_https_endpoints_are_refused(endpoint):
    with pytest.raises(InvalidInput):
        check_endpoint(endpoint, allow_private=False, resolve=lambda host, port: (
            ["93.184.215.14"] if host == "push.example" else [host.strip("[]")]
            if host != "localhost" else ["127.0.0.1"]))


def test_a_refused_endpoint_stores_nothing(app, svc, world, pusher):
    sender, service = pusher
    sender.allow_private = False  # as production: the test service lives on 127.0.0.1
    client = app.test_client()
    login(client, "doc")
    endpoint, subscriber = service.new_subscription("private")
    resp = post_subscription(client, subscription_json(endpoint, subscriber))
    assert resp.status_code == 400
    assert "private, loopback or link-local" in resp.get_json()["detail"]
    resp = post_subscription(client, subscription_json(endpoint.replace("https:", "http:"), subscriber))
    assert resp.status_code == 400 and "https" in resp.get_json()["detail"]
    bad_keys = subscription_json(endpoint, subscriber) | {"keys": {"p256dh": "AAAA", "auth": "AAAA"}}
    assert post_subscription(client, bad_keys).status_code == 400
    assert service.deliveries == [] and count(svc, PushSubscription) == 0


def test_the_address_is_checked_again_at_send_time():
    """DNS rebinding: a host that was public when the browser subscribed and points at
    the hospital's network when the page goes out is refused, before any connection."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    sender = WebPushSender(VapidSigner(VapidSigner.generate_pem(), "mailto:a@b.example"),
                           clock=lambda: __import__("datetime").datetime.now(), allow_private=False,
                           resolve=lambda host, port: next(answers))
    subscriber = Subscriber()
    target = PushTarget("https://push.example/abc", subscriber.p256dh, subscriber.auth)
    sender.check(target.endpoint)
    with pytest.raises(ServiceUnavailable, match="private, loopback or link-local"):
        sender.send(target, {"title": "x"})


@pytest.mark.parametrize("answer, message", [(500, "the push service answered 500"),
                                             (0, "no answer within 0.5 s")])
def test_a_failing_push_service_leaves_nothing_half_saved(app, svc, world, pusher, answer, message):
    _sender, service = pusher
    client = app.test_client()
    login(client, "doc")
    device = verified_device(client, service, "known")
    service.answer = answer
    endpoint, subscriber = service.new_subscription("broken")
    resp = post_subscription(client, subscription_json(endpoint, subscriber))
    assert resp.status_code == 503
    assert message in resp.get_json()["detail"] and "/push/broken" not in resp.get_json()["detail"]
    # The same phone subscribing again, with new keys, while its push service fails:
    # the device it was stays as it was.
    known = service.subscribers["known"]
    resp = post_subscription(client, subscription_json(f"{service.origin}/push/known", Subscriber()))
    assert resp.status_code == 503
    assert count(svc, PushSubscription) == 1
    with svc.sessions() as s:
        row = s.get(PushSubscription, device)
        assert row.verified_at is not None and row.p256dh == known.p256dh
    assert count(svc, AuditEntry, AuditEntry.action == AuditAction.PUSH_DEVICE_ADDED) == 1


def test_subscribing_is_rate_limited_even_when_the_push_fails(app, svc, world, pusher):
    _sender, service = pusher
    service.answer = 500
    client = app.test_client()
    login(client, "doc")
    statuses = []
    for n in range(push_devices.SUBSCRIBE_LIMIT + 1):
        endpoint, subscriber = service.new_subscription(f"try{n}")
        statuses.append(post_subscription(client, subscription_json(endpoint, subscriber)).status_code)
    assert statuses == [503] * push_devices.SUBSCRIBE_LIMIT + [429]
    assert count(svc, PushSubscription) == 0


def test_a_gone_subscription_is_marked_and_not_used_again(app, svc, world, pusher):
    _sender, service = pusher
    client = app.test_client()
    login(client, "doc")
    device = verified_device(client, service)
    service.answer = 410
    before = len(svc.notifier.sent)
    create_request(svc, world)
    run_jobs(svc)
    # The phone is gone: the next channel in her order (the e-mail) took the page at once.
    assert [m.to_email for m in svc.notifier.sent[before:]] == ["doc@hospital.example"]
    assert f'data-device="{device}"' not in client.get("/account/contacts/").get_data(as_text=True)
    with svc.sessions() as s:
        row = s.get(PushSubscription, device)
        assert row.gone_at == svc.clock() and "gone (410)" in row.last_failure
        assert count(svc, AuditEntry, AuditEntry.action == AuditAction.PUSH_DEVICE_GONE) == 1
        reached, problems = push_devices.push_to_user(s, svc.push, actor=SYSTEM, now=svc.clock(),
                                                      user_id=world.doc, payload={"title": "x"})
    assert (reached, problems) == (0, [])
    assert "gone" in client.get("/account/push").get_data(as_text=True)


def test_devices_are_listed_removed_by_their_owner_only_and_seen_by_admins(app, svc, world, pusher):
    _sender, service = pusher
    doc = app.test_client()
    login(doc, "doc")
    device = verified_device(doc, service)
    other = app.test_client()
    login(other, "backup")
    resp = other.post(f"/account/push/{device}/remove",
                      data={"csrf_token": csrf_token(other, "/account/push")})
    assert resp.status_code == 404 and count(svc, PushSubscription) == 1
    admin = app.test_client()
    login(admin, "admin")
    page = admin.get(f"/admin/users/{world.doc}").get_data(as_text=True)
    assert f'data-device-id="{device}"' in page and "Chrome on Android" in page and "verified" in page
    other_page = admin.get(f"/admin/users/{world.backup}").get_data(as_text=True)
    assert f'data-device-id="{device}"' not in other_page
    resp = doc.post(f"/account/push/{device}/remove",
                    data={"csrf_token": csrf_token(doc, "/account/push")})
    assert resp.status_code == 302 and count(svc, PushSubscription) == 0
    assert count(svc, AuditEntry, AuditEntry.action == AuditAction.PUSH_DEVICE_REMOVED) == 1


def test_subscribing_needs_a_login_and_a_csrf_token(app, world, pusher):
    _sender, service = pusher
    client = app.test_client()
    endpoint, subscriber = service.new_subscription("anon")
    assert client.post("/account/push/subscribe", json=subscription_json(endpoint, subscriber)
                       ).status_code in (302, 400)
    login(client, "doc")
    resp = client.post("/account/push/subscribe", json=subscription_json(endpoint, subscriber),
                       headers={"Accept": "application/json"})
    assert resp.status_code == 400 and service.deliveries == []


def test_the_service_worker_is_served_for_the_whole_site(client):
    resp = client.get("/sw.js")
    assert resp.status_code == 200 and resp.mimetype == "text/javascript"
    assert resp.headers["Service-Worker-Allowed"] == "/"
    assert b"showNotification" in resp.data and b"notificationclick" in resp.data


def test_production_refuses_to_start_without_a_vapid_key(tmp_path):
    production = Settings(env="production", instance_path=tmp_path, secret_key="s" * 40,
                          smtp_host="smtp.hospital.example", base_url="https://signflow.hospital.example")
    with pytest.raises(ConfigurationError, match="VAPID key"):
        create_app(production)


def test_a_bad_vapid_key_or_subject_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="VAPID"):
        VapidSigner("not a key " + secrets.token_hex(4), "mailto:a@b.example")
    with pytest.raises(ConfigurationError, match="VAPID_SUBJECT"):
        VapidSigner(VapidSigner.generate_pem(), "signflow@hospital.example")


def test_init_makes_the_vapid_key_once_owner_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(tmp_path / "instance"), SIGNFLOW_KEYS=str(tmp_path / "keys"))
    assert run_cli(["init"], env).returncode == 0
    key_file = tmp_path / "instance" / VAPID_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = key_file.read_text()
    assert run_cli(["init"], env).returncode == 0
    assert key_file.read_text() == first  # subscriptions survive a second init
    settings = load_settings(environ=env, env="development")
    assert settings.vapid_private_key == first.strip()
    public = VapidSigner(first, "mailto:a@b.example").application_server_key
    assert make_push_sender(settings, lambda: T0).application_server_key == public
    # Given by the environment instead, no file is written.
    other = dict(env, SIGNFLOW_INSTANCE=str(tmp_path / "other"), SIGNFLOW_KEYS=str(tmp_path / "keys2"),
                 SIGNFLOW_VAPID_PRIVATE_KEY=VapidSigner.generate_pem())
    assert run_cli(["init"], other).returncode == 0
    assert not (tmp_path / "other" / VAPID_KEY_FILE).exists()


def test_private_endpoints_are_a_setting(tmp_path):
    env = {"SIGNFLOW_INSTANCE": str(tmp_path), "SIGNFLOW_ENV": "development",
           "SIGNFLOW_VAPID_PRIVATE_KEY": VapidSigner.generate_pem()}
    assert make_push_sender(load_settings(environ=env), lambda: T0).allow_private is False
    allowed = load_settings(environ=dict(env, SIGNFLOW_ALLOW_PRIVATE_ENDPOINTS="true"))
    assert make_push_sender(allowed, lambda: T0).allow_private is True
    assert make_push_sender(load_settings(environ={"SIGNFLOW_INSTANCE": str(tmp_path / "none"),
                                                   "SIGNFLOW_ENV": "development"}), lambda: T0) is None
