"""The whole loop through the real routes, then independent verification of the output."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select

from signflow.core.pades import validate as validation
from signflow.models import AuditEntry, RequestState, SignatureRequest
from tests.conftest import PASSWORD, PIN, login
from tests.helpers import request_id_from, sign, upload
from tests.pdfsig import pdfsig_report


def test_whole_loop(app, svc, world, tmp_path, keys_dir, caplog):
    caplog.set_level(logging.DEBUG)
    tech, doc, dest, auditor = (app.test_client() for _ in range(4))
    login(tech, "tech")
    resp = upload(tech, world)
    assert resp.status_code == 302
    rid = request_id_from(resp)
    assert "pending" in tech.get(f"/requests/{rid}").get_data(as_text=True)

    login(doc, "doc")
    inbox = doc.get("/inbox/").get_data(as_text=True)
    assert "Kidney transplant consent" in inbox
    page = doc.get(f"/documents/{rid}/pages/1.png?w=480")
    assert page.status_code == 200 and page.data.startswith(b"\x89PNG")
    resp = sign(doc, rid)
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]

    login(dest, "recipient")
    assert f"/received/{rid}" in dest.get("/received/").get_data(as_text=True)
    detail = dest.get(f"/received/{rid}").get_data(as_text=True)
    assert "Signature valid" in detail
    download = dest.get(f"/documents/{rid}/download")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.mimetype == "application/pdf"
    signed = download.data
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', detail).group(1)
    assert dest.post(f"/received/{rid}/acknowledge", data={"csrf_token": token}).status_code == 302

    assert "received" in tech.get(f"/requests/{rid}").get_data(as_text=True)

    login(auditor, "auditor")
    log = auditor.get(f"/audit/?request={rid}").get_data(as_text=True)
    for action in ("request.created", "request.signed", "request.delivered",
                   "document.downloaded", "request.received"):
        assert action in log

    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.state == RequestState.RECEIVED
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.request_id == rid)
                            .order_by(AuditEntry.seq)).all()
        lifecycle = [a for a in actions if a.startswith("request.")]
        assert lifecycle == ["request.created", "request.signed", "request.delivered",
                             "request.received"]
        assert "document.viewed" in actions

    # No secret in the audit log or in anything logged during the whole loop.
    with svc.sessions() as s:
        lines = "\n".join(s.scalars(select(AuditEntry.line)).all())
    for secret in (PASSWORD, PIN, app.config["SECRET_KEY"]):
        assert secret not in lines and secret not in caplog.text

    # Independent verifiers: pyHanko through our report, and poppler's pdfsig.
    report = validation.validate_pdf(signed, trust_roots=[svc.keys.root_cert])
    assert report.ok, report.as_json()
    assert report.signatures[0].signer.endswith("Lefèvre")
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    result = pdfsig_report(path, keys_dir, tmp_path)
    assert "Signature is Valid" in result and "Certificate is Trusted" in result

    # One flipped byte inside the signed range: both verifiers refuse it.
    tampered = bytearray(signed)
    # Halfway into the first signed range: bytes every signature covers.
    first_range = re.search(rb"/ByteRange\s*\[\s*0\s+(\d+)", signed)
    tampered[int(first_range.group(1)) // 2] ^= 0x01
    bad = tmp_path / "tampered.pdf"
    bad.write_bytes(bytes(tampered))
    assert not validation.validate_pdf(bytes(tampered), trust_roots=[svc.keys.root_cert]).ok
    assert "Signature is Valid" not in pdfsig_report(bad, keys_dir, tmp_path)
