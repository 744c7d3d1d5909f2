"""Evidence reports: content, seal, printed proofs, access; and the seal itself."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pikepdf
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import select

from signflow.auditverify import (
    hash_leaf,
    open_checkpoint,
    parse_verifier_key,
    verifier_key,
    verify_inclusion,
)
from signflow.core.audit import checkpoints
from signflow.core.audit.log import Actor
from signflow.core.errors import ConfigurationError, Forbidden, NotFound
from signflow.core.evidence import pdf as evidence_pdf
from signflow.core.evidence import report as evidence
from signflow.core.pades import validate as validation
from signflow.core.pki import certificates as certs
from signflow.core.pki import seal as seal_module
from signflow.models import AuditEntry, Checkpoint, Signature, SignatureRequest, User
from tests.conftest import PASSPHRASE, T0, login
from tests.helpers import request_id_from, sign, upload
from tests.pdfsig import pdfsig_report
from tests.tools import require_tool

CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def seal(svc) -> seal_module.Seal:
    return svc.seal  # conftest's keys folder has the seal; build_services loads it


def received_request(app, world) -> int:
    """Uploaded, signed, delivered, downloaded and acknowledged, through the real routes."""
    tech, doc, dest = (app.test_client() for _ in range(3))
    login(tech, "tech")
    rid = request_id_from(upload(tech, world))
    login(doc, "doc")
    assert sign(doc, rid).status_code == 302
    login(dest, "recipient")
    assert dest.get(f"/documents/{rid}/download").status_code == 200
    detail = dest.get(f"/received/{rid}").get_data(as_text=True)
    token = CSRF_FIELD.search(detail).group(1)
    assert dest.post(f"/received/{rid}/acknowledge", data={"csrf_token": token}).status_code == 302
    return rid


def make_report(svc, clock, user_id: int, rid: int) -> bytes:
    with svc.sessions() as s:
        pdf = evidence.evidence_report(
            s, svc.deps, svc.seal, actor=Actor.of(s.get(User, user_id), "192.0.2.7"), request_id=rid,
                now=clock(),
            origin=svc.settings.audit_origin,)
        s.commit()
    return pdf


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    pdftotext = require_tool("pdftotext")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run([pdftotext, "-layout", str(path), "-"], capture_output=True,
                          check=True, text=True).stdout


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def test_report_lists_every_event_with_its_hashes(app, svc, world, clock, seal, tmp_path):
    rid = received_request(app, world)
    with svc.sessions() as s:
        before = s.scalars(select(AuditEntry).where(AuditEntry.request_id == rid)
                           .order_by(AuditEntry.seq)).all()
        req = s.get(SignatureRequest, rid)
        hashes = (req.original_sha256, req.document_sha256, req.signed_sha256)
        serial = s.scalars(select(Signature.certificate_serial)
                           .where(Signature.request_id == rid)).one()
    actions = [e.action for e in before]
    assert {"request.created", "request.signed", "request.delivered", "document.downloaded",
            "request.received"} <= set(actions)

    text = pdf_text(make_report(svc, clock, world.auditor, rid), tmp_path)

    events = section(text, "2. Audit events", "3. Checkpoint")
    printed = re.findall(r"^#(\d+)\s+(\S+)\s*$", events, re.M)
    assert printed == [(str(e.seq), e.action) for e in before]
    for entry in before:
        assert bytes(entry.leaf_hash).hex() in events
        assert json.loads(entry.line)["time"] in events
    for digest in hashes:
        assert digest in section(text, "1. Request", "2. Audit events")
    assert serial in text
    # Both the UTC instant and the hospital's local time of each entry.
    assert "Time (Europe/Paris)" in events
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T", events)
    # The shipped Unicode font carries the physicians' names intact.
    assert "Dr Hélène Lefèvre" in text
    assert "Page 1 of" in text


def test_report_is_sealed_and_validates(app, svc, world, clock, seal, tmp_path, keys_dir):
    rid = received_request(app, world)
    pdf = make_report(svc, clock, world.auditor, rid)

    report = validation.validate_pdf(pdf, trust_roots=[svc.keys.root_cert])
    assert report.ok, report.as_json()
    assert report.signatures[0].signer == "signflow evidence seal"

    path = tmp_path / "evidence.pdf"
    path.write_bytes(pdf)
    result = pdfsig_report(path, keys_dir, tmp_path)
    assert "signflow evidence seal" in result
    assert "Signature is Valid" in result and "Certificate is Trusted" in result, result

    # A report whose bytes changed is no longer the service's report.
    tampered = bytearray(pdf)
    first_range = re.search(rb"/ByteRange\s*\[\s*0\s+(\d+)", pdf)
    tampered[int(first_range.group(1)) // 2] ^= 0x01
    assert not validation.validate_pdf(bytes(tampered), trust_roots=[svc.keys.root_cert]).ok


def test_printed_proofs_verify_against_the_printed_checkpoint(app, svc, world, clock, seal,
                                                               tmp_path):
    rid = received_request(app, world)
    pdf = make_report(svc, clock, world.tech, rid)
    text = pdf_text(pdf, tmp_path)
    origin = svc.settings.audit_origin

    checkpoint_text = section(text, "3. Checkpoint", "4. Inclusion proofs")
    size = int(re.search(r"Tree size\s+(\d+)", checkpoint_text).group(1))
    root = bytes.fromhex(re.search(r"Root hash \(hex\)\s+([0-9a-f]{64})", checkpoint_text)
                         .group(1))
    printed_vkey = re.search(r"Verifier key\s+(\S+)", checkpoint_text).group(1)
    service_vkey = verifier_key(origin, svc.keys.audit_key.public_key())
    assert printed_vkey == service_vkey
    note_lines = [line.strip() for line in
                  checkpoint_text.split("verbatim:", 1)[1].splitlines() if line.strip()]
    body = [line for line in note_lines if not line.startswith("—")]
    signatures = [re.sub(r"^—\s+", "— ", line) for line in note_lines if line.startswith("—")]
    note = "\n".join(body) + "\n\n" + "\n".join(signatures) + "\n"
    name, public_key = parse_verifier_key(printed_vkey)
    opened = open_checkpoint(note, name, public_key)
    assert (opened.size, opened.root) == (size, root)

    proofs_text = section(text, "4. Inclusion proofs", "5. How to verify")
    blocks = re.split(r"^Entry #", proofs_text, flags=re.M)[1:]
    with svc.sessions() as s:
        entries = {e.seq: e for e in s.scalars(
            select(AuditEntry).where(AuditEntry.request_id == rid, AuditEntry.seq < size))}
    assert sorted(int(b.split(" ", 1)[0]) for b in blocks) == sorted(entries)
    for block in blocks:
        seq = int(block.split(" ", 1)[0])
        leaf = bytes.fromhex(re.search(r"leaf\s+([0-9a-f]{64})", block).group(1))
        proof = [bytes.fromhex(h) for h in re.findall(r"p\d+\s+([0-9a-f]{64})", block)]
        assert leaf == hash_leaf(entries[seq].line.encode())
        assert verify_inclusion(leaf, seq, size, proof, root), seq
        if proof:
            forged = [bytes(32)] + proof[1:]
            assert not verify_inclusion(leaf, seq, size, forged, root)

    # The attached machine-readable copy says the same, down to the entries' bytes.
    (tmp_path / "attached.pdf").write_bytes(pdf)
    with pikepdf.open(tmp_path / "attached.pdf") as doc:
        attached = json.loads(doc.attachments[evidence_pdf.ATTACHMENT_NAME].get_file().read_bytes())
    assert attached["checkpoint"]["note"] == note
    assert attached["verifier_key"] == service_vkey
    for item in attached["entries"]:
        leaf = hash_leaf(item["line"].encode())
        assert leaf.hex() == item["leaf"]
        assert verify_inclusion(leaf, item["seq"], size, [bytes.fromhex(h) for h in item["proof"]],
                                root)


def test_report_writes_checkpoint_and_audits_itself(app, svc, world, clock, seal):
    rid = received_request(app, world)
    with svc.sessions() as s:
        last_seq = s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq.desc())).first()
    pdf = make_report(svc, clock, world.recipient, rid)
    with svc.sessions() as s:
        checkpoint = checkpoints.latest_checkpoint(s)
        assert checkpoint.size == last_seq + 1
        generated = s.scalars(select(AuditEntry).where(AuditEntry.action == "evidence.generated")
                              ).one()
        data = json.loads(generated.line)
        assert generated.request_id == rid and generated.actor_id == world.recipient
        assert data["sha256"] == hashlib.sha256(pdf).hexdigest()
        assert data["checkpoint"] == checkpoint.size
        assert data["actor"]["ip"] == "192.0.2.7"
        assert checkpoints.verify_log(s, public_key=svc.keys.audit_key.public_key(),
                                origin=svc.settings.audit_origin).ok
    # The next report lists the previous one's generation among the request's events.
    with svc.sessions() as s:
        again = evidence.evidence_report(s, svc.deps, seal, actor=Actor.of(s.get(User, world.auditor)),
                                         request_id=rid, now=clock(),
                                         origin=svc.settings.audit_origin)
        assert s.scalars(select(Checkpoint).order_by(Checkpoint.id.desc())).first().size \
            == generated.seq + 1
    assert again.startswith(b"%PDF-")


def test_report_access_by_role_and_object(app, svc, world, clock, seal):
    rid = received_request(app, world)
    allowed = {"tech": world.tech, "recipient": world.recipient, "auditor": world.auditor}
    for username in allowed:
        client = app.test_client()
        login(client, username)
        resp = client.get(f"/audit/requests/{rid}/evidence.pdf")
        assert resp.status_code == 200, username
        assert resp.mimetype == "application/pdf" and resp.data.startswith(b"%PDF-")
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert resp.headers["Cache-Control"] == "no-store"
    for username, status in (("tech2", 404), ("cardio", 404), ("admin", 403), ("doc", 403)):
        client = app.test_client()
        login(client, username)
        assert client.get(f"/audit/requests/{rid}/evidence.pdf").status_code == status, username

    # The core check holds without the web guard: the signing physician may see
    # the request, but an evidence report is not theirs to take.
    def reports_generated(s) -> int:
        return len(s.scalars(select(AuditEntry.seq).where(
            AuditEntry.action == "evidence.generated")).all())

    with svc.sessions() as s:
        assert reports_generated(s) == len(allowed)
        with pytest.raises(Forbidden):
            evidence.evidence_report(s, svc.deps, seal, actor=Actor.of(s.get(User, world.doc)),
                                     request_id=rid, now=clock(), origin="x")
        s.rollback()
        with pytest.raises(NotFound):
            evidence.evidence_report(s, svc.deps, seal, actor=Actor.of(s.get(User, world.admin)),
                                     request_id=rid, now=clock(), origin="x")
        s.rollback()
        assert reports_generated(s) == len(allowed)


def test_recipient_gets_no_report_before_delivery(app, svc, world, clock, seal):
    tech = app.test_client()
    login(tech, "tech")
    rid = request_id_from(upload(tech, world))
    dest = app.test_client()
    login(dest, "recipient")
    assert dest.get(f"/audit/requests/{rid}/evidence.pdf").status_code == 404
    assert tech.get(f"/audit/requests/{rid}/evidence.pdf").status_code == 200


# ---------------------------------------------------------------- the seal


def test_seal_certificate_profile_and_files(svc, tmp_path):
    now = T0
    assert seal_module.ensure_seal(tmp_path, svc.keys, passphrase=PASSPHRASE.encode(), now=now)
    assert not seal_module.ensure_seal(tmp_path, svc.keys, passphrase=PASSPHRASE.encode(),
                                       now=now)
    for name in ("seal.key", "seal.crt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "seal.key").read_bytes()
    with pytest.raises(ConfigurationError):
        seal_module.load_seal(tmp_path, passphrase=b"wrong passphrase")

    cert = seal_module.load_seal(tmp_path, passphrase=PASSPHRASE.encode()).certificate
    assert cert.subject.rfc4514_string() == "O=signflow,CN=signflow evidence seal"
    cert.verify_directly_issued_by(svc.keys.issuing_cert)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert {ExtendedKeyUsageOID.EMAIL_PROTECTION, certs.DOCUMENT_SIGNING_EKU} <= ekus
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == "http://127.0.0.1:5000/pki/issuing.crl"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_seal_is_renewed_before_it_expires_and_the_old_one_kept(svc, tmp_path):
    passphrase = PASSPHRASE.encode()
    seal_module.ensure_seal(tmp_path, svc.keys, passphrase=passphrase, now=T0)
    old = seal_module.load_seal(tmp_path, passphrase=passphrase).certificate
    late = old.not_valid_after_utc - timedelta(days=10)
    assert seal_module.ensure_seal(tmp_path, svc.keys, passphrase=passphrase, now=late)
    new = seal_module.load_seal(tmp_path, passphrase=passphrase).certificate
    assert new.serial_number != old.serial_number
    kept = tmp_path / f"seal-{old.serial_number:x}.crt"
    assert x509.load_pem_x509_certificate(kept.read_bytes()) == old
    assert (tmp_path / f"seal-{old.serial_number:x}.key").is_file()


def test_seal_half_present_is_refused(svc, tmp_path):
    seal_module.ensure_seal(tmp_path, svc.keys, passphrase=PASSPHRASE.encode(), now=T0)
    (tmp_path / "seal.crt").unlink()
    with pytest.raises(ConfigurationError, match="inconsistent"):
        seal_module.ensure_seal(tmp_path, svc.keys, passphrase=PASSPHRASE.encode(), now=T0)
    with pytest.raises(ConfigurationError, match="signflow init"):
        seal_module.load_seal(tmp_path, passphrase=PASSPHRASE.encode())
