"""Nothing invalid is delivered (issue 9, item 7), and countersigned files are
reported honestly (item 9): real signatures, real faults, the recipient's validator."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from typing import Any

import pytest
from asn1crypto import tsp
from sqlalchemy import select

from signflow.core.pades import validate as validation
from signflow.core.pki.tsa import ServiceTimeStamper
from signflow.models import AuditEntry, Job, NotifyEvent, Signature, SignatureRequest
from tests.conftest import login
from tests.factories import count, state_of
from tests.helpers import new_request, sign


class WrongDigestTimeStamper(ServiceTimeStamper):
    """A real TSA, with the real key, that stamps another document's digest: its
    tokens are well formed and correctly signed, but prove nothing about this one."""

    def _build_tst_info(self, message_imprint: tsp.MessageImprint, dt: datetime,
                        req: tsp.TimeStampReq) -> tsp.TSTInfo:
        other = tsp.MessageImprint({
            "hash_algorithm": message_imprint["hash_algorithm"],
            "hashed_message": hashlib.sha256(b"some other document").digest(),
        })
        return super()._build_tst_info(other, dt, req)


def _with_timestamper(svc: Any, timestamper: Any) -> None:
    # Deps is where the adapters are wired (services.build_services); swap one.
    svc.deps = dataclasses.replace(svc.deps, timestamper=timestamper)


def _audit(svc: Any, rid: int) -> list[dict[str, Any]]:
    with svc.sessions() as s:
        lines = s.scalars(select(AuditEntry.line).where(AuditEntry.request_id == rid)
                          .order_by(AuditEntry.seq)).all()
    return [json.loads(line) for line in lines]


def _notify_events(svc: Any) -> list[str]:
    with svc.sessions() as s:
        return [json.loads(j.payload).get("event") for j in s.scalars(select(Job))]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_signature_that_does_not_validate_is_not_delivered_and_a_retry_is(app, svc, world):
    good = svc.deps.timestamper
    keys = svc.keys
    _with_timestamper(svc, WrongDigestTimeStamper(keys.tsa_cert, keys.tsa_key, [keys.issuing_cert]))
    tech, doc = app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    rid = new_request(tech, world)
    events_before = _notify_events(svc)

    resp = sign(doc, rid)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 502, body[-800:]
    assert "did not pass validation" in body and "timestamp" in body
    assert "sign again" in body
    # Nothing else changed: still pending, no signature, no signed blob, no delivery.
    assert state_of(svc, rid) == "pending"
    assert count(svc, Signature, Signature.request_id == rid) == 0
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.signed_sha256 is None and req.document_sha256
        assert "did not validate" in req.failure_reason
        assert "timestamp" in req.failure_reason
    assert _notify_events(svc) == events_before  # nobody told of a delivery
    failed = [e for e in _audit(svc, rid) if e["action"] == "request.signing_failed"]
    assert len(failed) == 1 and any("timestamp" in p for p in failed[0]["problems"])
    assert not [e for e in _audit(svc, rid) if e["action"] in ("request.signed",
                                                              "request.delivered")]
    # Both sides see why, in words.
    assert "did not validate" in tech.get(f"/requests/{rid}").get_data(as_text=True)
    assert "did not validate" in doc.get(f"/inbox/{rid}").get_data(as_text=True)

    # The TSA is fixed: the same physician signs again and it is delivered.
    _with_timestamper(svc, good)
    resp = sign(doc, rid)
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    assert state_of(svc, rid) == "delivered"
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.failure_reason is None
        signed = svc.blobs.get(s, req.signed_sha256)
    report = validation.validate_pdf(signed, trust_roots=[keys.root_cert], now=svc.clock())
    assert report.ok
    assert NotifyEvent.DELIVERED in _notify_events(svc)
    actions = [e["action"] for e in _audit(svc, rid)]
    assert actions.index("request.signing_failed") < actions.index("request.delivered")
