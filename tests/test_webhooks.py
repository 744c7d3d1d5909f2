"""Outbound webhooks and FHIR transactions: admins subscribe (the URL checked), the
worker posts Standard Webhooks-signed bodies to a real local receiver (tests/gateway.py)
that verifies them with `standardwebhooks`, retries a 500 with backoff, logs every
answer, replays one delivery; two workers on PostgreSQL post each message once; a
FHIR server gets the Bundle, whose hash matches the downloaded file."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from signflow.core.errors import InvalidInput
from signflow.core.integration import hooks as hooks
from signflow.core.integration import webhooks as webhooks
from signflow.core.requests import events as events
from signflow.jobs import outbound
from signflow.models import AuditEntry, HookStatus, WebhookAttempt, WebhookDelivery
from tests.conftest import TEST_ACTOR, csrf_token, login
from tests.factories import count, integration_token
from tests.gateway import running_gateway
from tests.helpers import new_request, sign
from tests.pdfs import make_pdf

SECRET_SHOWN = re.compile(r'<code id="webhook-secret">(whsec_[A-Za-z0-9+/=]+)</code>')


def _allow_private(svc) -> None:
    svc.settings = svc.settings.with_overrides(allow_private_endpoints=True)


def _subscribe_on_the_page(app, world, url: str, scope: str, events_: list[str], kind="webhook"):
    admin = app.test_client()
    login(admin, "admin")
    token = csrf_token(admin, "/admin/webhooks/")
    resp = admin.post("/admin/webhooks/", data={"csrf_token": token, "kind": kind, "url": url,
                                                "scope": scope, "events": events_})
    return admin, resp


def deliver(svc, clock) -> int:
    return webhooks.deliver_due(svc.sessions, svc.deps, outbound(svc), now=clock())


def test_a_500_is_retried_with_backoff_logged_and_replayable(app, svc, world, clock):
    _allow_private(svc)
    with running_gateway() as gateway:
        admin, made = _subscribe_on_the_page(app, world, gateway.url, f"t:{world.tech}",
                                             ["request.created", "request.signed",
                                              "request.delivered"])
        assert made.status_code == 200, made.get_data(as_text=True)[-600:]
        gateway.secret = SECRET_SHOWN.search(made.get_data(as_text=True)).group(1)
        with svc.sessions() as s:
            sub_id = webhooks.subscriptions(s)[0].id
        tech = app.test_client()
        login(tech, "tech")
        rid = new_request(tech, world)
        doc = app.test_client()
        login(doc, "doc")
        # Signed at once (the test clock's CRLs are fresh): three events queued.
        assert sign(doc, rid).status_code == 302

        gateway.mode = "500"
        assert deliver(svc, clock) == 3
        assert gateway.accepted == [] and [r[0] for r in gateway.refused] == [500, 500, 500]
        assert deliver(svc, clock) == 0  # not due again before its backoff
        clock.advance(seconds=31)
        gateway.mode = "ok"
        assert deliver(svc, clock) == 3
        assert [m["type"] for m in gateway.accepted] == ["request.created", "request.signed",
                                                         "request.delivered"]
        assert gateway.accepted[0]["data"] == {"id": rid, "state": "pending", "external_reference": None}
        # Each message kept its webhook-id across attempts (the receiver drops duplicates by it).
        ids = [h["webhook-id"] for _b, h in gateway.raw]
        assert len(ids) == 6 and len(set(ids)) == 3

        log = admin.get(f"/admin/webhooks/{sub_id}").get_data(as_text=True)
        assert '<span class="status-code">500</span>' in log and '<span class="status-code">202</span>' in log
        with svc.sessions() as s:
            first = s.scalar(select(WebhookDelivery).order_by(WebhookDelivery.id))
            assert first.status == HookStatus.DELIVERED and first.attempts == 2
            assert [a.status_code for a in s.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id == first.id).order_by(WebhookAttempt.id))] == [500, 202]

        # The test button, then a replay of the first delivery (same id and body).
        token = csrf_token(admin, f"/admin/webhooks/{sub_id}")
        assert admin.post(f"/admin/webhooks/{sub_id}/test", data={"csrf_token": token}).status_code == 302
        assert deliver(svc, clock) == 1 and gateway.accepted[-1]["type"] == "signflow.test"
        gateway.seen_ids.clear()  # the receiver forgot it: the replay is welcome
        resp = admin.post(f"/admin/webhooks/{sub_id}/deliveries/{first.id}/replay",
                          data={"csrf_token": token})
        assert resp.status_code == 302
        assert deliver(svc, clock) == 1
        assert gateway.accepted[-1] == gateway.accepted[0]
        assert count(svc, AuditEntry, AuditEntry.action == "webhook.replayed") == 1
        assert count(svc, AuditEntry, AuditEntry.action == "webhook.tested") == 1
        assert count(svc, AuditEntry, AuditEntry.action == "webhook.subscribed") == 1


def test_gives_up_after_24_hours_and_a_hanging_receiver_does_not_stop_the_worker(
        app, svc, world, clock):
    _allow_private(svc)
    svc.settings = svc.settings.with_overrides(notify_timeout_seconds=1)
    with running_gateway() as hanging, running_gateway() as broken, running_gateway() as good:
        subs = []
        with svc.sessions() as s, s.begin():
            for gw in (hanging, broken, good):
                made = webhooks.subscribe(
                    s, actor=TEST_ACTOR, now=clock(), kind="webhook", url=gw.url,
                    destination_id=None, technician_id=world.tech, event_types=["request.created"],
                    master_key=svc.keys.master_key, production=False, allow_private=True,
                    resolve=hooks.webpush.resolve_host)
                gw.secret = made.secret
                subs.append(made.subscription.id)
        hanging.mode, broken.mode = "hang", "500"
        tech = app.test_client()
        login(tech, "tech")
        new_request(tech, world)
        assert deliver(svc, clock) == 3
        assert len(good.accepted) == 1  # the others did not hold it up
        with svc.sessions() as s:
            (first,) = s.scalars(select(WebhookAttempt).join(WebhookDelivery).where(
                WebhookDelivery.subscription_id == subs[0]))
            assert first.status_code is None and "no answer within 1 s" in (first.error or "")
        # The retries: the hanging receiver now hangs up at once (each hang is the
        # timeout's whole second, and the first round showed what a hang does).
        hanging.mode = "500"
        hanging.release.set()
        for _ in range(40):
            clock.advance(hours=1)
            deliver(svc, clock)
        with svc.sessions() as s:
            rows = {r.subscription_id: r for r in s.scalars(select(WebhookDelivery))}
            assert rows[subs[2]].status == HookStatus.DELIVERED and rows[subs[2]].attempts == 1
            for failed in (rows[subs[0]], rows[subs[1]]):
                assert failed.status == HookStatus.FAILED
                assert 5 < failed.attempts < 40
            assert rows[subs[1]].last_status_code == 500


def test_private_addresses_are_refused_at_entry_and_again_at_delivery(app, svc, world, clock):
    admin, resp = _subscribe_on_the_page(app, world, "http://127.0.0.1:9/hook", f"d:{world.destination}",
                                         ["request.delivered"])
    assert resp.status_code == 400 and "private, loopback" in resp.get_data(as_text=True)
    with svc.sessions() as s, s.begin():
        for url in ("ftp://example.org/x", "http://user:pw@example.org/", "http://10.0.0.8/"):
            with pytest.raises(InvalidInput):
                webhooks.subscribe(s, actor=TEST_ACTOR, now=clock(), kind="webhook", url=url,
                                   destination_id=world.destination, technician_id=None,
                                   event_types=["request.delivered"], master_key=svc.keys.master_key,
                                   production=False, allow_private=False,
                                   resolve=lambda _h, _p: ["10.0.0.8"])
        with pytest.raises(InvalidInput, match="https"):
            hooks.check_url("http://example.org/", production=True, allow_private=False,
                            resolve=lambda _h, _p: ["93.184.215.14"])
    # A name that resolved to a public address when entered, to loopback when sent (rebinding).
    answers = {"public": ["93.184.215.14"], "now": ["127.0.0.1"]}
    with svc.sessions() as s, s.begin():
        made = webhooks.subscribe(s, actor=TEST_ACTOR, now=clock(), kind="webhook",
                                  url="http://hooks.example.org/in", destination_id=None,
                                  technician_id=world.tech, event_types=["request.created"],
                                  master_key=svc.keys.master_key, production=False,
                                  allow_private=False, resolve=lambda _h, _p: answers["public"])
        events.queue(s, made.subscription, "request.created", {"id": 0}, request_id=None, now=clock())
    out = outbound(svc)
    out = webhooks.Outbound(**{**out.__dict__, "resolve": lambda _h, _p: answers["now"]})
    assert webhooks.deliver_due(svc.sessions, svc.deps, out, now=clock()) == 1
    with svc.sessions() as s:
        row = s.scalar(select(WebhookDelivery))
        assert row.status == HookStatus.PENDING and row.last_status_code is None
        assert "private, loopback" in row.last_error


def test_two_workers_post_each_message_once(app, svc, world, clock):
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED claims are exercised on PostgreSQL")
    _allow_private(svc)
    with running_gateway() as gateway:
        with svc.sessions() as s, s.begin():
            made = webhooks.subscribe(
                s, actor=TEST_ACTOR, now=clock(), kind="webhook", url=gateway.url,
                destination_id=None, technician_id=world.tech, event_types=["request.created"],
                master_key=svc.keys.master_key, production=False, allow_private=True,
                resolve=hooks.webpush.resolve_host)
            gateway.secret = made.secret
            for i in range(30):
                events.queue(s, made.subscription, "request.created", {"n": i}, request_id=None,
                             now=clock())
        gateway.mode = "500"
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                deliver(svc, clock)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        for mode in ("500", "ok"):
            gateway.mode = mode
            threads = [threading.Thread(target=worker) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            clock.advance(seconds=31)
        assert errors == []
        assert len(gateway.refused) == 30 and all(r[0] == 500 for r in gateway.refused)
        assert sorted(m["data"]["n"] for m in gateway.accepted) == list(range(30))


def test_a_fhir_server_gets_the_bundle_of_each_delivered_document(app, svc, world, clock):
    _allow_private(svc)
    with running_gateway() as server:
        admin, made = _subscribe_on_the_page(app, world, server.url, f"d:{world.destination}",
                                             [], kind="fhir")
        assert made.status_code == 200, made.get_data(as_text=True)[-600:]
        server.secret = SECRET_SHOWN.search(made.get_data(as_text=True)).group(1)
        lab = integration_token(svc, name="lab", group_id=world.group, scopes=("submit",))
        his = integration_token(svc, name="his", destination_id=world.destination,
                                scopes=("read", "download"))
        api = app.test_client()
        sent = api.post("/api/v1/requests", headers={"Authorization": f"Bearer {lab.token}"},
                        content_type="multipart/form-data", data={
                            "document": (io.BytesIO(make_pdf(1, "Crossmatch")), "x.pdf"),
                            "group": str(world.group), "destination": str(world.destination),
                            "urgency": "urgent", "external_reference": "CROSS-42"})
        rid = sent.json["id"]
        assert deliver(svc, clock) == 0  # pending: nothing for a FHIR server yet
        doc = app.test_client()
        login(doc, "doc")
        assert sign(doc, rid).status_code == 302
        assert deliver(svc, clock) == 1
        assert len(server.raw) == 1
        body, headers = server.raw[0]
        assert headers["content-type"] == "application/fhir+json"
        bundle = Bundle.model_validate_json(body)
        assert bundle.type == "transaction"
        reference, provenance = (e.resource for e in bundle.entry)
        assert reference.get_resource_type() == "DocumentReference"
        assert reference.identifier[0].value == "CROSS-42" and reference.status == "current"
        attachment = reference.content[0].attachment
        assert attachment.contentType == "application/pdf"
        path = attachment.url.split("127.0.0.1:5000", 1)[1]
        pdf = api.get(path, headers={"Authorization": f"Bearer {his.token}"}).data
        assert attachment.size == len(pdf)
        # fhir.resources decodes base64Binary: the raw SHA-1 bytes, as FHIR defines the hash.
        assert attachment.hash == hashlib.sha1(pdf, usedforsecurity=False).digest()
        raw = json.loads(body)["entry"][0]["resource"]["content"][0]["attachment"]["hash"]
        assert base64.b64decode(raw) == attachment.hash
        assert attachment.extension[0].valueString == hashlib.sha256(pdf).hexdigest()
        assert provenance.get_resource_type() == "Provenance"
        assert provenance.target[0].reference == bundle.entry[0].fullUrl
        assert provenance.agent[0].who.display == "Dr Hélène Lefèvre"
        assert provenance.signature[0].data  # the PAdES signature's CMS
        served = api.get(f"/api/v1/requests/{rid}/fhir",
                         headers={"Authorization": f"Bearer {his.token}"})
        assert served.status_code == 200 and served.mimetype == "application/fhir+json"
        assert Bundle.model_validate_json(served.data) == bundle
