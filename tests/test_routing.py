"""Several signatures in order, take/delegate, stamp placement, and the admin rota."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pikepdf
import pytest
from sqlalchemy import func, select

from signflow import jobs
from signflow.core.audit.log import Actor
from signflow.core.errors import Conflict, InvalidInput
from signflow.core.pades import validate as validation
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import AuditEntry, RequestState, RotaShift, SignatureRequest, User
from tests.conftest import csrf_token, login
from tests.factories import create_request, sign_request
from tests.pdfs import make_pdf
from tests.pdfsig import pdfsig_report


def _create_route(svc, world, then=()):
    upload = pdfcheck.normalise_upload(make_pdf(2, "Liver graft"), max_bytes=10**7, max_pages=50)
    with svc.sessions() as s, s.begin():
        req = workflow.create_request(
            s, svc.deps, actor=Actor.of(s.get(User, world.tech)), now=svc.clock(), upload=upload,
            filename="graft.pdf", title="Graft", group_id=world.group, destination_id=world.destination,
            urgency="urgent", then_group_ids=list(then))
        return req.id


def test_two_groups_sign_in_order_and_both_signatures_stay_valid(svc, world, tmp_path, keys_dir):
    rid = _create_route(svc, world, then=[world.other_group])
    first = sign_request(svc, rid, world.doc)
    assert first.state == RequestState.PENDING and first.step == 1
    assert first.group_id == world.other_group and first.document_sha256 == first.signed_sha256

    # The backup of the first group comes too late: that step is done.
    with svc.sessions() as s, pytest.raises(Conflict, match="Already signed by Dr Hélène Lefèvre"):
        request_signing.prepare_signing(s, svc.deps, user=s.get(User, world.backup), request_id=rid,
                                 now=svc.clock())
    done = sign_request(svc, rid, world.offduty)  # on call for the second group
    assert done.state == RequestState.DELIVERED

    with svc.sessions() as s:
        signed = svc.blobs.get(s, s.get(SignatureRequest, rid).signed_sha256)
        assert len(access.signatures_of(s, rid)) == 2
    report = validation.validate_pdf(signed, trust_roots=[svc.keys.root_cert])
    assert report.ok, report.as_json()
    people = [sig for sig in report.signatures if not sig.is_timestamp]
    assert [p.signer for p in people] == ["Dr Hélène Lefèvre", "Dr Off Duty"]
    assert all(p.intact and p.valid and p.trusted for p in people)
    path = tmp_path / "two.pdf"
    path.write_bytes(signed)
    out = pdfsig_report(path, keys_dir, tmp_path)
    assert out.count("Signature is Valid") >= 2 and "Certificate is Trusted" in out


def test_route_rejects_repeats(svc, world):
    with pytest.raises(InvalidInput, match="once"):
        _create_route(svc, world, then=[world.group])


def test_take_and_delegate(svc, world):
    rid = create_request(svc, world)
    with svc.sessions() as s, s.begin():
        doc = s.get(User, world.doc)
        workflow.take_request(s, svc.deps, actor=Actor.of(doc), request_id=rid, now=svc.clock())
        with pytest.raises(InvalidInput):  # not on call for this group
            workflow.delegate_request(s, svc.deps, actor=Actor.of(doc), request_id=rid,
                                      to_user_id=world.offduty, now=svc.clock())
        workflow.delegate_request(s, svc.deps, actor=Actor.of(doc), request_id=rid, to_user_id=world.backup,
                                  now=svc.clock())
    jobs.run_once(svc)
    assert any(m.to_name == "Dr Łukasz Nowak" and "delegated to you" in m.subject
               for m in svc.notifier.sent)
    with svc.sessions() as s:
        assert s.get(SignatureRequest, rid).assignee_id == world.backup
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.request_id == rid)).all()
    assert "request.taken" in actions and "request.delegated" in actions


def _signature_rects(pdf: bytes) -> list[tuple[int, list[float]]]:
    found = []
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        for number, page in enumerate(doc.pages, start=1):
            for annot in page.obj.get("/Annots", []):
                is_sig = annot.get("/FT") == "/Sig" or annot.get("/Parent", {}).get("/FT") == "/Sig"
                rect = [float(v) for v in annot.Rect]
                if is_sig and rect[2] > rect[0]:  # document timestamps are invisible (0 x 0)
                    found.append((number, rect))
    return found


def test_stamp_goes_where_the_technician_tapped(svc, world):
    rid = _create_route(svc, world)
    with svc.sessions() as s, s.begin():
        tech = s.get(User, world.tech)
        with pytest.raises(InvalidInput):
            request_signing.set_stamp_position(s, svc.deps, actor=Actor.of(tech), request_id=rid,
                                               page=3, fx=0.5,
                                        fy=0.5, now=svc.clock())
        request_signing.set_stamp_position(s, svc.deps, actor=Actor.of(tech), request_id=rid, page=1, fx=0.25,
                                    fy=0.1, now=svc.clock())
    req = sign_request(svc, rid, world.doc)
    with svc.sessions() as s:
        signed = svc.blobs.get(s, req.signed_sha256)
    rects = _signature_rects(signed)
    assert len(rects) == 1
    page, (x1, y1, x2, y2) = rects[0]
    # A4 is 595 x 842 pt: a tap at 25% across, 10% down is centred near (149, 758).
    assert page == 1
    assert abs((x1 + x2) / 2 - 595 * 0.25) < 2 and abs((y1 + y2) / 2 - 842 * 0.9) < 2
    # Once signed, the stamp can no longer move.
    with svc.sessions() as s, pytest.raises(Conflict):
        request_signing.set_stamp_position(s, svc.deps, actor=Actor.of(s.get(User, world.tech)),
                                           request_id=rid,
                                    page=1, fx=0.5, fy=0.5, now=svc.clock())


def test_stamp_defaults_to_last_page(svc, world):
    rid = _create_route(svc, world)
    req = sign_request(svc, rid, world.doc)
    with svc.sessions() as s:
        assert [page for page, _ in _signature_rects(svc.blobs.get(s, req.signed_sha256))] == [2]


def test_admin_manages_the_rota_over_http(app, svc, world, clock):
    admin = app.test_client()
    login(admin, "admin")
    token = csrf_token(admin, "/admin/rota")
    fmt = "%Y-%m-%dT%H:%M"
    from zoneinfo import ZoneInfo

    local = clock().astimezone(ZoneInfo("Europe/Paris"))
    data = {"csrf_token": token, "shift-group": str(world.group), "shift-physician": str(world.head),
            "shift-level": "0", "shift-starts_at": (local - timedelta(minutes=5)).strftime(fmt),
            "shift-ends_at": (local + timedelta(hours=8)).strftime(fmt)}
    assert admin.post("/admin/rota/shifts", data=data).status_code == 302
    bad = dict(data, **{"shift-ends_at": (local - timedelta(hours=1)).strftime(fmt)})
    refused = admin.post("/admin/rota/shifts", data=bad)
    assert refused.status_code == 400 and "ends after it starts" in refused.get_data(as_text=True)
    with svc.sessions() as s:
        shifts = s.scalars(select(RotaShift).where(RotaShift.user_id == world.head)).all()
        assert len(shifts) == 1
        assert s.scalar(select(func.count()).select_from(AuditEntry)
                        .where(AuditEntry.action == "rota.shift_added")) == 1
    page = admin.get("/admin/rota").get_data(as_text=True)
    assert "Pr Øyvind Berg" in page
    shift_id = shifts[0].id
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert admin.post(f"/admin/rota/shifts/{shift_id}/remove",
                      data={"csrf_token": token}).status_code == 302
    with svc.sessions() as s:
        assert s.get(RotaShift, shift_id) is None

    tech = app.test_client()
    login(tech, "tech")
    assert tech.get("/admin/rota").status_code == 403
