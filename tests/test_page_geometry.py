"""Issue 9, page geometry: the stamp sits where a reader expects it on every page a
hospital produces (inherited and indirect boxes, CropBox, /Rotate, /UserUnit, odd
origins, tiny pages), through the real routes, and the output validates."""

from __future__ import annotations

import io

import pikepdf
import pypdfium2
import pytest
from PIL import Image, ImageChops, ImageStat
from pyhanko.pdf_utils.reader import PdfFileReader

from signflow.core.pdf.geometry import PageGeometry, stamp_box
from tests.conftest import login
from tests.helpers import assert_signed_file_valid, new_request, sign, upload_and_sign_through_the_app
from tests.pdfs import fpdf2_form

A4 = (0.0, 0.0, 595.0, 842.0)


def pikepdf_page(*, rotate: int = 0, inherited: bool = False, indirect: bool = False,
                 media: tuple[float, ...] = A4, crop: tuple[float, ...] | None = None,
                 user_unit: float | None = None) -> bytes:
    """One page of text made by pikepdf; its boxes and rotation on the page or on the
    page tree (`inherited`), as direct or indirect objects."""
    pdf = pikepdf.new()
    font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                                                BaseFont=pikepdf.Name.Helvetica))
    x, y = media[0] + 40, media[3] - 60
    content = f"BT /F1 12 Tf {x} {y} Td (Consent form, page text) Tj ET".encode()
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, Contents=pdf.make_stream(content),
                              Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)))
    attrs: dict[str, pikepdf.Object] = {"/MediaBox": pikepdf.Array(media)}
    if crop is not None:
        attrs["/CropBox"] = pikepdf.Array(crop)
    if rotate:
        attrs["/Rotate"] = rotate
    if indirect:
        attrs = {key: pdf.make_indirect(value) for key, value in attrs.items()}
    if user_unit is not None:
        page.UserUnit = user_unit
    if not inherited:
        for key, value in attrs.items():
            page[key] = value
    pdf.pages.append(pikepdf.Page(page))
    if inherited:
        node = pdf.Root.Pages
        for key, value in attrs.items():
            node[key] = value
            if key in pdf.pages[0].obj:
                del pdf.pages[0].obj[key]
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def render(data: bytes) -> Image.Image:
    document = pypdfium2.PdfDocument(data)
    try:
        document.init_forms()
        return document[0].render(scale=1, may_draw_forms=True).to_pil().convert("L")
    finally:
        document.close()


def stamp_ink(before: bytes, after: bytes) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The signed page as shown, and the bounding box of what signing drew on it."""
    old, new = render(before), render(after)
    assert old.size == new.size  # the visible page did not change size
    box = ImageChops.difference(old, new).point(lambda v: 255 if v > 40 else 0).getbbox()
    assert box is not None, "no stamp visible on the page"
    return new, box


def upload_and_sign(app, svc, world, data: bytes, *, tap: tuple[float, float] | None = None):
    """(the normalised bytes, the signed bytes) of `data` sent through the real routes."""
    _, before, signed = upload_and_sign_through_the_app(app, svc, world, data, tap=tap)
    return before, signed


def stamp_image(page: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    return page.crop(box).resize((250, 78))


def assert_upright(app, svc, world, page: Image.Image, box: tuple[int, int, int, int]) -> None:
    """The stamp reads like the one on an unrotated page (and not like it turned)."""
    before, after = upload_and_sign(app, svc, world, pikepdf_page())
    reference = stamp_image(*stamp_ink(before, after))
    seen = page.crop(box)
    assert seen.width > 2 * seen.height, f"stamp is not landscape as shown: {seen.size}"

    def distance(image: Image.Image) -> float:
        diff = ImageChops.difference(image.resize((250, 78)), reference)
        return float(ImageStat.Stat(diff).mean[0])

    assert distance(seen) < distance(seen.rotate(180)), "stamp is upside down"


GEOMETRIES = {
    "inherited-indirect": dict(inherited=True, indirect=True),
    "crop-offset": dict(media=(-100.0, -50.0, 700.0, 900.0), crop=(50.0, 60.0, 560.0, 800.0)),
    "inherited-crop": dict(inherited=True, crop=(30.0, 40.0, 500.0, 700.0)),
}


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
@pytest.mark.parametrize("layout", sorted(GEOMETRIES))
def test_default_stamp_is_inside_the_visible_page_and_upright(app, svc, world, tmp_path, keys_dir,
                                                               rotate, layout):
    data = pikepdf_page(rotate=rotate, **GEOMETRIES[layout])
    before, signed = upload_and_sign(app, svc, world, data)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    page, box = stamp_ink(before, signed)
    # Rendered pages are the visible area as shown: the stamp lies inside it, bottom right.
    assert box[0] > 0 and box[1] > 0 and box[2] < page.width and box[3] < page.height
    assert box[0] > page.width / 3 and box[1] > page.height / 2
    if rotate:
        assert_upright(app, svc, world, page, box)


@pytest.mark.parametrize("rotate", [90, 270])
def test_the_tap_lands_where_the_technician_tapped_on_a_rotated_page(app, svc, world, tmp_path,
                                                                      keys_dir, rotate):
    data = pikepdf_page(rotate=rotate, inherited=True, indirect=True,
                        crop=(20.0, 30.0, 580.0, 800.0))
    before, signed = upload_and_sign(app, svc, world, data, tap=(0.3, 0.2))
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    page, box = stamp_ink(before, signed)
    centre = ((box[0] + box[2]) / 2 / page.width, (box[1] + box[3]) / 2 / page.height)
    assert centre == pytest.approx((0.3, 0.2), abs=0.03)
    assert_upright(app, svc, world, page, box)


def test_an_fpdf2_form_signs_and_validates(app, svc, world, tmp_path, keys_dir):
    data = fpdf2_form()
    # The case users hit: fpdf2 writes the MediaBox on the page tree, the old rewrite
    # made it an indirect object on the page, and placing the stamp failed with a 500.
    assert "/MediaBox" in PdfFileReader(io.BytesIO(data)).root["/Pages"]
    before, signed = upload_and_sign(app, svc, world, data)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    page, box = stamp_ink(before, signed)
    assert box[2] < page.width and box[3] < page.height and box[0] > page.width / 3


def test_user_unit_keeps_the_stamp_its_real_size(app, svc, world, tmp_path, keys_dir):
    # A poster-sized page in units of 10 pt: the stamp must not be ten times larger.
    before, signed = upload_and_sign(app, svc, world, pikepdf_page(media=(0, 0, 200, 100),
                                                                   user_unit=10.0))
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    # PDFium ignores /UserUnit and draws one pixel per unit: a 250 pt stamp is 25 units.
    page, box = stamp_ink(before, signed)
    assert page.size == (200, 100)
    assert 20 <= box[2] - box[0] <= 30 and box[2] < page.width and box[3] < page.height


def test_a_small_page_gets_a_scaled_stamp(app, svc, world, tmp_path, keys_dir):
    before, signed = upload_and_sign(app, svc, world, pikepdf_page(media=(0, 0, 200, 120)))
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    page, box = stamp_ink(before, signed)
    # The whole border shows: nothing of the stamp is cut off at the page's edge.
    assert box[0] >= 2 and box[1] >= 2 and box[2] <= page.width - 3 and box[3] <= page.height - 3


def test_a_page_too_small_for_a_readable_stamp_is_refused_in_words(app, svc, world):
    tech, doc = app.test_client(), app.test_client()
    login(tech, "tech")
    login(doc, "doc")
    rid = new_request(tech, world, data=pikepdf_page(media=(0, 0, 60, 40)))
    resp = sign(doc, rid)
    assert resp.status_code in (400, 422), resp.status_code
    assert "too small for a readable signature stamp" in resp.get_data(as_text=True)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_display_and_user_space_agree(rotate):
    geometry = PageGeometry(visible=(10.0, 20.0, 610.0, 820.0), rotate=rotate)
    shown_w, shown_h = geometry.display_size
    box = stamp_box(geometry, (250.0, 78.0), margin_pt=36.0)
    assert geometry.contains(box)
    assert geometry.shown_size_of(box) == pytest.approx((250.0, 78.0))
    # The shown top-left corner is where the reader's eye starts, whatever the turn.
    corners = {geometry.to_user(0, 0), geometry.to_user(shown_w, shown_h)}
    assert len(corners) == 2 and all(geometry.contains((x, y, x, y)) for x, y in corners)
