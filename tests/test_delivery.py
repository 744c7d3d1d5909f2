"""Nothing invalid is delivered (issue 9, item 7), and countersigned files are
reported honestly (item 9): real signatures, real faults, the recipient's validator."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko_certvalidator.registry import SimpleCertificateStore
from sqlalchemy import select

from signflow.config import Settings
from signflow.core.pades import validate as validation
from signflow.core.pki.tsa import ServiceTimeStamper
from signflow.models import AuditEntry, Blob, Job, NotifyEvent, Signature, SignatureRequest
from tests.conftest import login, make_settings
from tests.factories import count, integration_token, state_of
from tests.helpers import new_request, sign, upload
from tests.pdfs import make_pdf

OUTSIDE_CA = "Clinique Externe Root CA"
OUTSIDE_SIGNER = "Dr Martin Externe"


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "instance", keys_dir, database_url, allow_countersign=True)


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


def _outside_signer() -> signers.SimpleSigner:
    """A clinic's own CA (not the hospital's) and a physician certificate it issued."""
    def der(cert: x509.Certificate) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OUTSIDE_CA)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OUTSIDE_SIGNER)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False,
                                         False), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    return signers.SimpleSigner(signing_cert=der(cert),
                                signing_key=asn1_keys.PrivateKeyInfo.load(pkcs8),
                                cert_registry=SimpleCertificateStore.from_certs([der(cert), der(ca)]))


def _signed_outside() -> bytes:
    """A referral letter signed (PAdES, visible field) at the clinic, with pyHanko."""
    writer = IncrementalPdfFileWriter(io.BytesIO(make_pdf(1, "Referral letter")))
    out = io.BytesIO()
    signers.PdfSigner(
        signers.PdfSignatureMetadata(field_name="Clinic", subfilter=fields.SigSeedSubFilter.PADES),
        signer=_outside_signer(),
        new_field_spec=fields.SigFieldSpec("Clinic", on_page=0, box=(50, 50, 200, 100)),
    ).sign_pdf(writer, output=out)
    return out.getvalue()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_countersigned_file_reports_the_outside_signature_honestly(app, svc, world, clock):
    outside = _signed_outside()
    # Alone, the clinic's file is not valid for the hospital, and says why.
    alone = validation.validate_pdf(outside, trust_roots=[svc.keys.root_cert], now=clock())
    assert not alone.ok and alone.signatures[0].outside
    assert any(OUTSIDE_SIGNER in note and "not issued by the hospital" in note
               for note in alone.notes)

    tech, doc, recipient = app.test_client(), app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    rid = new_request(tech, world, data=outside)
    resp = sign(doc, rid)
    assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    assert state_of(svc, rid) == "delivered"  # the check after signing accepts it

    login(recipient, "recipient")
    page = recipient.get(f"/received/{rid}").get_data(as_text=True)
    assert "Signature valid" in page and "NOT valid" not in page
    assert (f"An earlier signature by {OUTSIDE_SIGNER}, not issued by the hospital "
            f"(issuer: {OUTSIDE_CA})") in page
    assert "The hospital&#39;s signature is valid and covers the whole file" in page

    token = integration_token(svc, destination_id=world.destination).token
    resp = app.test_client().get(f"/api/v1/requests/{rid}/verification",
                                 headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    report = resp.get_json()
    assert report["ok"] is True and report["problems"] == []
    first, *rest = [sig for sig in report["signatures"] if not sig["is_timestamp"]]
    assert first["outside"] is True and first["signer"] == OUTSIDE_SIGNER
    assert first["intact"] is True and first["trusted"] is False
    assert rest and all(sig["outside"] is False and sig["ok"] for sig in rest)
    assert "the hospital's signature is valid and covers the whole file" in report["notes"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_countersigned_file_whose_earlier_signature_is_broken_is_refused_at_upload(
        app, svc, world):
    """Honest both ways: an outside signature is set aside only while it is intact, and
    a broken one is refused before any physician types a PIN, with nothing created."""
    outside = _signed_outside()
    at = outside.index(b"Referral letter")
    tampered = outside[:at] + b"Referral lettex" + outside[at + len(b"Referral letter"):]
    report = validation.validate_pdf(tampered, trust_roots=[svc.keys.root_cert], now=svc.clock())
    assert not report.ok
    assert any("not issued by the hospital" in n and "altered" in n for n in report.notes)
    tech = app.test_client()
    login(tech, "tech")
    resp = upload(tech, world, data=tampered)
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "earlier signature that is not valid" in page and OUTSIDE_SIGNER in page
    assert "the signed content was altered" in page and "Ask the sender" in page
    assert count(svc, SignatureRequest) == 0 and count(svc, Blob) == 0
