"""Issue 9, item 6: the document's own signature fields.

A visible empty signature field is used for the signature; a hidden (Hidden,
NoView) or zero-size one never takes the visible stamp (left empty, the stamp
goes where it would without it); a technician's tap on a document that has its
own box moves that box there, so no box meant for the signature stays empty;
several boxes are filled one per signature in reading order, and the technician
is told at upload. Each case goes upload -> sign -> validate (the recipient's
validator, pdfsig, qpdf --check). AcroForms made with pikepdf and pyHanko."""

from __future__ import annotations

import io

import pypdfium2
import pytest
from PIL import Image, ImageChops
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields

from signflow.models import SignatureRequest
from tests.conftest import login
from tests.helpers import assert_signed_file_valid, upload_and_sign_through_the_app
from tests.pdfs import make_pdf, pdf_with_sig_fields

VISIBLE = (300.0, 80.0, 560.0, 160.0)  # bottom right of an A4 page
TOP_LEFT = (40.0, 640.0, 300.0, 720.0)


def render(data: bytes, page: int) -> Image.Image:
    document = pypdfium2.PdfDocument(data)
    try:
        document.init_forms()
        return document[page].render(scale=1, may_draw_forms=True).to_pil().convert("L")
    finally:
        document.close()


def ink(before: bytes, after: bytes, page: int) -> tuple[int, int, int, int] | None:
    """Bounding box (pixels, top-left origin, 1 px = 1 pt) of what signing drew."""
    diff = ImageChops.difference(render(before, page), render(after, page))
    return diff.point(lambda v: 255 if v > 40 else 0).getbbox()


def inside(box: tuple[int, int, int, int], rect: tuple[float, ...], height: float = 842) -> bool:
    """`box` (pixels from the top) lies within the PDF rectangle `rect` (points from the bottom)."""
    x1, y1, x2, y2 = rect
    return (box[0] >= x1 - 2 and box[2] <= x2 + 2
            and box[1] >= height - y2 - 2 and box[3] <= height - y1 + 2)


def signed_field(signed: bytes) -> str:
    (signature,) = [sig for sig in PdfFileReader(io.BytesIO(signed)).embedded_signatures
                    if sig.sig_object_type != "/DocTimeStamp"]
    return str(signature.field_name)


def empty_fields(data: bytes) -> list[str]:
    reader = PdfFileReader(io.BytesIO(data))
    return sorted(name for name, _, _ in fields.enumerate_sig_fields(reader, filled_status=False))


def notices_of(app, svc, rid: int) -> str:  # type: ignore[no-untyped-def]
    tech = app.test_client()
    login(tech, "tech")
    return str(tech.get(f"/requests/{rid}").get_data(as_text=True))


@pytest.mark.parametrize("kid", [False, True], ids=["merged-widget", "child-widget"])
def test_a_visible_empty_field_takes_the_signature(app, svc, world, tmp_path, keys_dir,
                                                   kid: bool) -> None:
    data = pdf_with_sig_fields([{"name": "Consent", "page": 1, "rect": VISIBLE, "kid": kid}])
    rid, before, signed = upload_and_sign_through_the_app(app, svc, world, data)
    (tmp_path / "out.pdf").write_bytes(signed)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    assert signed_field(signed) == "Consent"
    assert empty_fields(signed) == []
    box = ink(before, signed, 1)
    assert box is not None and inside(box, VISIBLE)
    assert "has its own signature box (page 2)" in notices_of(app, svc, rid)


def test_a_field_made_by_pyhanko_takes_the_signature(app, svc, world, tmp_path, keys_dir) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(make_pdf(1, "Form with a pyHanko field")))
    fields.append_signature_field(writer, fields.SigFieldSpec(
        "Physician", on_page=0, box=tuple(int(v) for v in TOP_LEFT)))
    out = io.BytesIO()
    writer.write(out)
    _rid, before, signed = upload_and_sign_through_the_app(app, svc, world, out.getvalue())
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    assert signed_field(signed) == "Physician" and empty_fields(signed) == []
    box = ink(before, signed, 0)
    assert box is not None and inside(box, TOP_LEFT)


INVISIBLE = {
    "hidden": {"rect": TOP_LEFT, "flags": 4 | 2},
    "no-view": {"rect": TOP_LEFT, "flags": 4 | 32},
    "zero-size": {"rect": (100.0, 700.0, 100.0, 700.0)},
    "too-small": {"rect": (100.0, 700.0, 110.0, 705.0)},
}


@pytest.mark.parametrize("kind", sorted(INVISIBLE))
def test_a_hidden_or_zero_size_field_never_takes_the_visible_stamp(app, svc, world, tmp_path,
                                                                   keys_dir, kind: str) -> None:
    data = pdf_with_sig_fields([{"name": "Ghost", "page": 0, **INVISIBLE[kind]}], pages=1)
    rid, before, signed = upload_and_sign_through_the_app(app, svc, world, data)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    assert signed_field(signed) != "Ghost"
    assert empty_fields(signed) == ["Ghost"]  # left as the document had it
    box = ink(before, signed, 0)
    assert box is not None and box[0] > 595 / 3 and box[1] > 842 / 2  # the default place
    assert "a hidden or zero-size signature field" in notices_of(app, svc, rid)


def test_with_a_hidden_and_a_visible_field_the_visible_one_is_signed(app, svc, world, tmp_path,
                                                                     keys_dir) -> None:
    data = pdf_with_sig_fields([
        {"name": "Ghost", "page": 0, "rect": TOP_LEFT, "flags": 2},
        {"name": "Consent", "page": 0, "rect": VISIBLE}], pages=1)
    _rid, _before, signed = upload_and_sign_through_the_app(app, svc, world, data)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    assert signed_field(signed) == "Consent" and empty_fields(signed) == ["Ghost"]


def test_a_tap_moves_the_documents_own_box_and_signs_it(app, svc, world, tmp_path,
                                                        keys_dir) -> None:
    data = pdf_with_sig_fields([{"name": "Consent", "page": 1, "rect": VISIBLE}])
    _rid, before, signed = upload_and_sign_through_the_app(app, svc, world, data, tap=(0.3, 0.2))
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    # One signature field in the result, signed: the box moved to page 1, where tapped.
    assert signed_field(signed) == "Consent" and empty_fields(signed) == []
    assert ink(before, signed, 1) is None
    box = ink(before, signed, 0)
    assert box is not None
    centre = ((box[0] + box[2]) / 2 / 595, (box[1] + box[3]) / 2 / 842)
    assert centre == pytest.approx((0.3, 0.2), abs=0.03)
    reader = PdfFileReader(io.BytesIO(signed))
    assert "/Annots" not in reader.root["/Pages"]["/Kids"][1] or all(
        a.get_object().get("/T") != "Consent" for a in reader.root["/Pages"]["/Kids"][1]["/Annots"])


def test_several_boxes_are_filled_in_reading_order_and_the_technician_is_told(
        app, svc, world, tmp_path, keys_dir) -> None:
    data = pdf_with_sig_fields([
        {"name": "Second", "page": 0, "rect": VISIBLE},
        {"name": "First", "page": 0, "rect": TOP_LEFT}], pages=1)
    rid, _before, signed = upload_and_sign_through_the_app(app, svc, world, data)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    assert signed_field(signed) == "First" and empty_fields(signed) == ["Second"]
    page = notices_of(app, svc, rid)
    assert "The document has 2 empty signature boxes (page 1)" in page
    assert "a box no signature reaches stays empty" in page
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req is not None and req.state == "delivered"


def test_a_route_of_two_groups_fills_the_two_boxes_in_order(svc, world, tmp_path,
                                                            keys_dir) -> None:
    from signflow.core.audit.log import Actor
    from signflow.core.pdf import normalise as pdfcheck
    from signflow.core.requests import workflow
    from signflow.models import User
    from tests.factories import sign_request

    data = pdf_with_sig_fields([
        {"name": "Cardiologist", "page": 0, "rect": VISIBLE},
        {"name": "Anaesthetist", "page": 0, "rect": TOP_LEFT}], pages=1)
    upload = pdfcheck.normalise_upload(data, max_bytes=10**7, max_pages=50)
    with svc.sessions() as s, s.begin():
        rid = int(workflow.create_request(
            s, svc.deps, actor=Actor.of(s.get(User, world.tech)), now=svc.clock(), upload=upload,
            filename="consent.pdf", title="Two signatures", group_id=world.group,
            destination_id=world.destination, urgency="urgent",
            then_group_ids=[world.other_group]).id)
    sign_request(svc, rid, world.doc)
    sign_request(svc, rid, world.offduty)
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req is not None and req.state == "delivered"
        signed = svc.deps.blobs.get(s, req.signed_sha256)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    names = [sig.field_name for sig in PdfFileReader(io.BytesIO(signed)).embedded_signatures
             if sig.sig_object_type != "/DocTimeStamp"]
    assert names == ["Anaesthetist", "Cardiologist"]  # reading order: the top box first
    assert empty_fields(signed) == []
