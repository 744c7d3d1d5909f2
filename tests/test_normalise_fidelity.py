"""Issue 9, faithful normalisation: the rewrite keeps every page as it was (render
compared), and leaves page boxes inherited from the page tree written on each page
as plain arrays, not as one indirect object shared by every page."""

from __future__ import annotations

import io

import pikepdf
import pypdfium2
from PIL import ImageChops
from pyhanko.pdf_utils.generic import ArrayObject
from pyhanko.pdf_utils.reader import PdfFileReader

from signflow.core.pdf.normalise import normalise_upload
from tests.pdfs import fpdf2_form


def nested_tree() -> bytes:
    """Three pages under a two-level page tree, boxes and rotation inherited from
    different levels, one page overriding them."""
    pdf = pikepdf.new()
    font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                                                BaseFont=pikepdf.Name.Helvetica))
    resources = pdf.make_indirect(pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)))

    def page(n: int, **own: object) -> pikepdf.Dictionary:
        text = f"BT /F1 18 Tf 60 700 Td (Page {n} of the nested tree) Tj ET 0 0 1 RG 4 w 20 20 m 300 400 l S"
        return pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Page, Resources=resources,
                                                    Contents=pdf.make_stream(text.encode()), **own))

    root = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Pages, Count=3,
                                                MediaBox=pikepdf.Array([0, 0, 595, 842]), Rotate=90))
    middle = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Pages, Count=2, Parent=root,
                                                  CropBox=pikepdf.Array([30, 40, 560, 800])))
    first, second = page(1, Parent=middle), page(2, Parent=middle, Rotate=180)
    third = page(3, Parent=root, MediaBox=pikepdf.Array([0, 0, 612, 792]))
    middle.Kids = pikepdf.Array([first, second])
    root.Kids = pikepdf.Array([middle, third])
    pdf.Root.Pages = root
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def renders(data: bytes) -> list:
    document = pypdfium2.PdfDocument(data)
    try:
        return [document[i].render(scale=1).to_pil().convert("RGB") for i in range(len(document))]
    finally:
        document.close()


def raw_pages(data: bytes) -> list:
    reader = PdfFileReader(io.BytesIO(data), strict=False)
    return [reader.find_page_for_modification(i)[0].get_object()  # type: ignore[no-untyped-call]
            for i in range(int(reader.root["/Pages"]["/Count"]))]


def normalised(data: bytes) -> bytes:
    return normalise_upload(data, max_bytes=50 * 1024 * 1024, max_pages=100).data


def test_inherited_boxes_stay_plain_and_every_page_renders_as_before():
    for data in (nested_tree(), fpdf2_form()):
        out = normalised(data)
        for page in raw_pages(out):
            for key in ("/MediaBox", "/CropBox"):
                if key in page:
                    assert isinstance(page.raw_get(key), ArrayObject), key
        before, after = renders(data), renders(out)
        assert [image.size for image in before] == [image.size for image in after]
        for old, new in zip(before, after, strict=True):
            assert ImageChops.difference(old, new).getbbox() is None
    # Cropped and turned: the nested tree was really read.
    assert renders(nested_tree())[0].size == (760, 530)
