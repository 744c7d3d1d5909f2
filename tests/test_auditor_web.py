"""The auditor's workspace through the real routes: filters, keyset pages,
timeline, verify now, export."""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from signflow.auditverify import verifier_key, verify_bundle
from signflow.core.audit import checkpoints
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.models import AuditAction, AuditEntry, SignatureRequest, User
from tests.conftest import T0, login
from tests.helpers import request_id_from, sign, upload

SYNTHETIC = 130
ROW_SEQ = re.compile(r"<tr>\s*<td>(\d+)</td>")
OLDER = re.compile(r'href="([^"]+)" rel="next">Older entries')
CSRF = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


@pytest.fixture
def seal(svc):
    return svc.seal  # conftest's keys folder has the seal; build_services loads it


@pytest.fixture
def busy_log(svc, world):
    """SYNTHETIC entries a minute apart, alternating actor, action and request."""
    with svc.sessions() as s, s.begin():
        tech, doc = s.get(User, world.tech), s.get(User, world.doc)
        for i in range(SYNTHETIC):
            audit.append(s, now=T0 + timedelta(minutes=i + 1),
                         actor=Actor.of(tech if i % 2 else doc, "198.51.100.1"),
                         action="document.viewed" if i % 3 else "document.downloaded",
                         request_id=9001 + i % 2, n=i)


@pytest.fixture
def auditor(app, world):
    client = app.test_client()
    login(client, "auditor")
    return client


def all_entries(svc) -> list[AuditEntry]:
    with svc.sessions() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())))


def page_seqs(client, url: str) -> tuple[list[int], str | None]:
    resp = client.get(url)
    assert resp.status_code == 200, url
    body = resp.get_data(as_text=True)
    older = OLDER.search(body)
    return [int(n) for n in ROW_SEQ.findall(body)], html.unescape(older.group(1)) if older else None


def test_an_unknown_action_is_refused_with_a_clear_error(svc, busy_log, auditor):
    resp = auditor.get("/audit/?action=test.beta")
    assert resp.status_code == 400
    assert "Choose an action from the list." in resp.get_data(as_text=True)


def test_each_filter_narrows_to_exactly_the_matching_entries(svc, world, busy_log, auditor):
    entries = all_entries(svc)
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    cases = {
        "?request=9001": lambda e: e.request_id == 9001,
        f"?actor={world.doc}": lambda e: e.actor_id == world.doc,
        "?action=document.downloaded": lambda e: e.action == "document.downloaded",
        f"?since={since:%Y-%m-%dT%H:%M:%S}&until={until:%Y-%m-%dT%H:%M:%S}":
            lambda e: since <= e.time < until,
        f"?action=document.viewed&actor={world.tech}&request=9002":
            lambda e: (e.action, e.actor_id, e.request_id) == ("document.viewed", world.tech, 9002),
    }
    unfiltered, _ = page_seqs(auditor, "/audit/")
    for query, keep in cases.items():
        expected = [e.seq for e in entries if keep(e)][:50]
        got, _ = page_seqs(auditor, "/audit/" + query)
        assert expected and got == expected, query
        assert got != unfiltered, query
    # The time range holds exactly the ten synthetic entries of minutes 10..19.
    assert len(page_seqs(auditor, "/audit/" + list(cases)[3])[0]) == 10


def test_keyset_pages_have_no_overlap_and_no_gap(svc, busy_log, auditor):
    entries = all_entries(svc)
    seen: list[int] = []
    url: str | None = "/audit/"
    while url:
        assert "offset" not in url
        page, url = page_seqs(auditor, url)
        assert 0 < len(page) <= 50
        seen += page
    assert seen == [e.seq for e in entries]

    # A filter survives into the next page's link.
    alphas = [e.seq for e in entries if e.action == "document.viewed"]
    first, older = page_seqs(auditor, "/audit/?action=document.viewed")
    assert older and "action=document.viewed" in older and f"before={first[-1]}" in older
    second, last = page_seqs(auditor, older)
    assert first + second == alphas and last is None


def test_filter_choices_list_every_action_and_usernames(svc, busy_log, auditor):
    body = auditor.get("/audit/?action=document.downloaded").get_data(as_text=True)
    for action in AuditAction:
        assert f'<option value="{action}"' in body
    assert '<option value="document.downloaded" selected>' in body
    assert re.search(r'<option value="\d+">tech \(technician\)</option>', body)
    assert re.search(r'<option value="\d+">doc \(physician\)</option>', body)


def test_timeline_lists_the_request_in_order(app, svc, world, seal, auditor):
    tech, doc = app.test_client(), app.test_client()
    login(tech, "tech")
    rid = request_id_from(upload(tech, world))
    login(doc, "doc")
    assert sign(doc, rid).status_code == 302
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        expected = s.scalars(select(AuditEntry.action).where(AuditEntry.request_id == rid)
                             .order_by(AuditEntry.seq)).all()
        hashes = (req.original_sha256, req.document_sha256, req.signed_sha256)
    body = auditor.get(f"/audit/requests/{rid}").get_data(as_text=True)
    actions = re.findall(r"</td>\s*<td>([a-z_]+\.[a-z_.]+)</td>", body)
    assert actions == expected and "request.signed" in actions
    for digest in hashes:
        assert digest in body
    assert f'href="/audit/requests/{rid}/evidence.pdf"' in body
    assert "delivered" in body
    assert auditor.get(f"/audit/requests/{rid}/evidence.pdf").data.startswith(b"%PDF-")
    assert auditor.get("/audit/requests/999999").status_code == 404


def test_verify_now_reports_ok_then_the_tampered_entry(svc, busy_log, auditor):
    with svc.sessions() as s, s.begin():
        checkpoint = checkpoints.write_checkpoint(s, signing_key=svc.keys.audit_key,
                                            origin=svc.settings.audit_origin, now=T0)
        size, root = checkpoint.size, bytes(checkpoint.root_hash).hex()
    body = auditor.get("/audit/verify").get_data(as_text=True)
    assert "Verified" in body and "Verification failed" not in body
    assert f"size {size}" in body and root in body
    assert verifier_key(svc.settings.audit_origin, svc.keys.audit_key.public_key()) in body

    victim = all_entries(svc)[40].seq
    with svc.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET line = replace(line, 'document.', 'dokument.') "
                          "WHERE seq = :seq"), {"seq": victim})
    body = auditor.get("/audit/verify").get_data(as_text=True)
    assert "Verification failed" in body and "Verified" not in body
    assert "entry-modified" in body and f"at entry #{victim}" in body


def test_export_zip_verifies_offline(svc, busy_log, auditor, tmp_path):
    token = CSRF.search(auditor.get("/audit/verify").get_data(as_text=True)).group(1)
    resp = auditor.post("/audit/export.zip", data={"csrf_token": token})
    assert resp.status_code == 200
    assert resp.mimetype == "application/zip"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(resp.data)) as archive:
        archive.extractall(tmp_path / "unzipped")
    (bundle,) = list((tmp_path / "unzipped").iterdir())
    vkey = verifier_key(svc.settings.audit_origin, svc.keys.audit_key.public_key())
    result = verify_bundle(bundle, trusted_key=vkey)
    assert result.ok, result
    last = json.loads((bundle / "entries.jsonl").read_text().splitlines()[-1])
    assert last["action"] == "audit.exported"
    with svc.sessions() as s:
        assert s.scalars(select(AuditEntry.actor_id)
                         .where(AuditEntry.action == "audit.exported")).one() \
            == s.scalars(select(User.id).where(User.username == "auditor")).one()

    # Bytes changed in the archive no longer verify.
    entries = bundle / "entries.jsonl"
    entries.write_text(entries.read_text().replace("document.viewed", "document.viewee", 1))
    assert not verify_bundle(bundle, trusted_key=vkey).ok


def test_export_needs_csrf_and_post(svc, busy_log, auditor):
    assert auditor.post("/audit/export.zip").status_code == 400
    assert auditor.get("/audit/export.zip").status_code == 405
    with svc.sessions() as s:
        assert not s.scalars(select(AuditEntry).where(AuditEntry.action == "audit.exported")
                             ).first()


@pytest.mark.parametrize("username", ["tech", "doc", "recipient", "admin"])
def test_non_auditors_get_403_on_every_auditor_page(app, world, username):
    client = app.test_client()
    login(client, username)
    for path in ("/audit/", "/audit/verify", "/audit/requests/1", "/audit/?action=x"):
        assert client.get(path).status_code == 403, path
    landing = client.get("/", follow_redirects=True).get_data(as_text=True)
    token = CSRF.search(landing).group(1)
    assert client.post("/audit/export.zip", data={"csrf_token": token}).status_code == 403


def test_anonymous_is_sent_to_login(app, world):
    resp = app.test_client().get("/audit/verify")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
