"""pikepdf-built pages for the PDF corpus (tests/corpus.py): every geometry case a reader
must honour (rotation x inherited x indirect x CropBox offset, nested page trees, tiny
pages, /UserUnit, what the specification allows and some producers write). A helper
module, not a test module."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pikepdf

LINES = ("Anaesthesia - pre-operative assessment", "Patient: 1234567  Donor: 7654321",
         "Cross-match: negative", "ASA class II, fit for surgery")


def saved(pdf: pikepdf.Pdf, **kw: object) -> bytes:
    out = io.BytesIO()
    pdf.save(out, **kw)  # type: ignore[arg-type]
    return out.getvalue()


A4_BOX = (0.0, 0.0, 595.0, 842.0)
OFFSET_MEDIA = (-100.0, -50.0, 700.0, 900.0)
OFFSET_CROP = (50.0, 60.0, 560.0, 800.0)


@dataclass(frozen=True)
class Geometry:
    rotate: int
    inherited: bool
    indirect: bool
    crop: bool

    @property
    def name(self) -> str:
        parts = [f"rotate{self.rotate}", "inherited" if self.inherited else "on-page",
                 "indirect" if self.indirect else "direct", "crop-offset" if self.crop else "no-crop"]
        return "pikepdf-" + "-".join(parts)


GEOMETRIES = [Geometry(r, i, d, c) for r in (0, 90, 180, 270) for i in (False, True)
              for d in (False, True) for c in (False, True)]


def geometry_page(geometry: Geometry) -> bytes:
    """One page of text whose boxes and rotation sit on the page or on the page tree, as
    direct or indirect objects, with a CropBox that does not start at 0,0 or none."""
    pdf = pikepdf.new()
    media = OFFSET_MEDIA if geometry.crop else A4_BOX
    visible = OFFSET_CROP if geometry.crop else A4_BOX
    font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                                                BaseFont=pikepdf.Name.Helvetica))
    text = " ".join(f"BT /F1 12 Tf {visible[0] + 40} {visible[3] - 60 - 16 * n} Td ({line}) Tj ET"
                    for n, line in enumerate(LINES))
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, Contents=pdf.make_stream(text.encode()),
                              Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)))
    attrs: dict[str, pikepdf.Object] = {"/MediaBox": pikepdf.Array(media)}
    if geometry.crop:
        attrs["/CropBox"] = pikepdf.Array(OFFSET_CROP)
    if geometry.rotate:
        attrs["/Rotate"] = geometry.rotate
    if geometry.indirect:
        attrs = {key: pdf.make_indirect(value) for key, value in attrs.items()}
    pdf.pages.append(pikepdf.Page(page))
    holder = pdf.Root.Pages if geometry.inherited else pdf.pages[0].obj
    if geometry.inherited and "/MediaBox" in pdf.pages[0].obj:
        del pdf.pages[0].obj["/MediaBox"]
    for key, value in attrs.items():
        holder[key] = value
    return saved(pdf)


def _text_page(pdf: pikepdf.Pdf, origin: tuple[float, float], size: float = 12) -> pikepdf.Dictionary:
    font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                                                BaseFont=pikepdf.Name.Helvetica))
    text = " ".join(f"BT /F1 {size} Tf {origin[0]} {origin[1] - size * 1.4 * n} Td ({line}) Tj ET"
                    for n, line in enumerate(LINES))
    return pikepdf.Dictionary(Type=pikepdf.Name.Page, Contents=pdf.make_stream(text.encode()),
                              Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)))


def nested_tree_rotated(work: Path) -> bytes:
    """Two pages under an intermediate /Pages node that carries an indirect MediaBox and
    /Rotate 90: the page inherits from its parent, not from the root."""
    pdf = pikepdf.new()
    pages = [_text_page(pdf, (40, 780)) for _ in range(2)]
    middle = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Pages, Count=2, Rotate=90,
        MediaBox=pdf.make_indirect(pikepdf.Array([0, 0, 595, 842]))))
    kids = [pdf.make_indirect(page) for page in pages]
    for kid in kids:
        kid.Parent = middle
    middle.Kids = pikepdf.Array(kids)
    root_pages = pdf.Root.Pages
    middle.Parent = root_pages
    root_pages.Kids = pikepdf.Array([middle])
    root_pages.Count = 2
    return saved(pdf)


def small_page(work: Path) -> bytes:
    """An A7 label (74 x 105 mm): the stamp must shrink to fit, still readable."""
    pdf = pikepdf.new()
    page = _text_page(pdf, (12, 280), size=6)
    page.MediaBox = pikepdf.Array([0, 0, 210, 298])
    pdf.pages.append(pikepdf.Page(page))
    return saved(pdf)


def user_unit_page(work: Path) -> bytes:
    """A poster in units of 10 pt (/UserUnit 10): the stamp keeps its real size."""
    pdf = pikepdf.new()
    page = _text_page(pdf, (5, 90), size=1.2)
    page.MediaBox = pikepdf.Array([0, 0, 200, 100])
    page.UserUnit = 10
    pdf.pages.append(pikepdf.Page(page))
    return saved(pdf)


def odd_page(*, media: tuple[float, ...] = A4_BOX, crop: tuple[float, ...] | None = None,
             rotate: int | float | None = None) -> bytes:
    """What the specification allows and some producers write: a /Rotate of -90 or 450, a
    MediaBox given corner to corner the other way round, a CropBox reaching past the MediaBox."""
    pdf = pikepdf.new()
    x, y = min(media[0], media[2]), max(media[1], media[3])
    page = _text_page(pdf, (x + 40, y - 60))
    page.MediaBox = pikepdf.Array(media)
    if crop is not None:
        page.CropBox = pikepdf.Array(crop)
    if rotate is not None:
        page.Rotate = rotate
    pdf.pages.append(pikepdf.Page(page))
    return saved(pdf)
