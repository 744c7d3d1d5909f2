"""What the corpus checks on each file (tests/test_corpus.py): renders, previews, the
independent verifiers (pyHanko directly, pdfsig, qpdf) and where the stamp shows.
A helper module, not a test module."""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pikepdf
import pypdfium2
import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageChops, ImageStat
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import KeyUsageConstraints, validate_pdf_signature, validate_pdf_timestamp
from pyhanko_certvalidator import ValidationContext

from signflow.core.pades import validate as validation
from signflow.core.pki.tsa import to_asn1_cert
from signflow.services import Services
from tests.pdfsig import pdfsig_report
from tests.tools import require_tool

Box = tuple[float, float, float, float]
Pixels = tuple[int, int, int, int]


def render(data: bytes, index: int, scale: float = 1.0) -> Image.Image:
    """One page as PDFium shows it (visible area, /Rotate applied, form widgets drawn)."""
    document = pypdfium2.PdfDocument(data)
    try:
        document.init_forms()
        return document[index].render(scale=scale, may_draw_forms=True).to_pil().convert("L")
    finally:
        document.close()


def page_count(data: bytes) -> int:
    document = pypdfium2.PdfDocument(data)
    try:
        return len(document)
    finally:
        document.close()


def assert_renders_alike(upload: bytes, normalised: bytes) -> None:
    """Normalisation kept every page as it was shown."""
    assert page_count(upload) == page_count(normalised)
    for index in range(page_count(upload)):
        before, after = render(upload, index), render(normalised, index)
        assert before.size == after.size, f"page {index + 1} changed size"
        difference = ImageStat.Stat(ImageChops.difference(before, after)).mean[0]
        assert difference < 0.5, f"page {index + 1} renders differently after normalisation"


def assert_preview(client: FlaskClient, rid: int, normalised: bytes) -> None:
    """The physician's phone gets every page, shaped as the reader shows it."""
    for index in range(page_count(normalised)):
        resp = client.get(f"/documents/{rid}/pages/{index + 1}.png?w=480")
        assert resp.status_code == 200 and resp.data.startswith(b"\x89PNG"), resp.status_code
        preview = Image.open(io.BytesIO(resp.data))
        shown = render(normalised, index)
        assert abs(preview.width - 480) <= 1  # PDFium rounds the scaled size
        assert preview.height / preview.width == pytest.approx(shown.height / shown.width, rel=0.02)


def pyhanko_directly(signed: bytes, svc: Services) -> list[Any]:
    """pyHanko's own verdict on each embedded signature, no signflow code in between."""
    reader = PdfFileReader(io.BytesIO(signed))
    statuses = []
    for sig in reader.embedded_signatures:
        context = ValidationContext(trust_roots=[to_asn1_cert(svc.keys.root_cert)],
                                    allow_fetching=False, revocation_mode="soft-fail")
        if sig.sig_object_type == "/DocTimeStamp":
            status = validate_pdf_timestamp(sig, validation_context=context)
        else:
            status = validate_pdf_signature(sig, context, key_usage_settings=KeyUsageConstraints(
                key_usage={"non_repudiation"}))
        assert status.intact and status.valid and status.trusted, status.pretty_print_details()
        statuses.append((sig.field_name, sig.sig_object_type, status))
    return statuses


def qpdf_check(path: Path) -> None:
    result = subprocess.run([require_tool("qpdf"), "--check", str(path)], capture_output=True,
                            text=True, timeout=60)
    # 0 only: 2 is an error, 3 a warning (damage qpdf repaired on the fly).
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]


def widget_of(signed: bytes, field: str) -> tuple[int, tuple[float, float, float, float]]:
    """(0-based page index, /Rect) of the signed field's widget."""
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        for index, page in enumerate(pdf.pages):
            for annot in page.obj.get("/Annots", []):
                name = annot.get("/T") if "/T" in annot else annot.get("/Parent", {}).get("/T")
                if name is not None and str(name) == field:
                    x1, y1, x2, y2 = (float(v) for v in annot.Rect)
                    return index, (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    raise AssertionError(f"no widget for the signed field {field!r}")


def unsigned_visible_sig_fields(signed: bytes) -> list[str]:
    """Empty signature fields a reader would show (not hidden, not of zero size)."""
    found = []
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        for field in pdf.Root.get("/AcroForm", {}).get("/Fields", []):
            if field.get("/FT") != pikepdf.Name.Sig or "/V" in field:
                continue
            x1, y1, x2, y2 = (float(v) for v in field.get("/Rect", [0, 0, 0, 0]))
            if not int(field.get("/F", 0)) & 2 and abs(x2 - x1) > 1 and abs(y2 - y1) > 1:
                found.append(str(field.get("/T")))
    return found


@dataclass(frozen=True)
class Shown:
    """A page as shown (PDFium): visible box in user space, rotation, size in pixels."""

    visible: tuple[float, float, float, float]
    rotate: int

    def size_of(self, rect: tuple[float, float, float, float]) -> tuple[float, float]:
        width, height = rect[2] - rect[0], rect[3] - rect[1]
        return (height, width) if self.rotate in (90, 270) else (width, height)


def _ordered(box: Box) -> Box:
    return min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])


def shown_page(data: bytes, index: int) -> Shown:
    document = pypdfium2.PdfDocument(data)
    try:
        page = document[index]
        # Corner to corner either way round, as the specification allows.
        crop, media = (_ordered(box) for box in (page.get_cropbox(), page.get_mediabox()))
        visible = (max(crop[0], media[0]), max(crop[1], media[1]),
                   min(crop[2], media[2]), min(crop[3], media[3]))
        return Shown(visible=visible, rotate=page.get_rotation())
    finally:
        document.close()


def stamp_pixels(normalised: bytes, signed: bytes,
                 index: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    before, after = render(normalised, index), render(signed, index)
    assert before.size == after.size, "signing changed the visible page's size"
    box = ImageChops.difference(before, after).point(lambda v: 255 if v > 40 else 0).getbbox()
    assert box is not None, "no stamp visible on the signed page"
    return after, box


WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')


def stamp_words(signed: bytes, index: int, work: Path) -> dict[str, tuple[float, float, float, float]]:
    """Words poppler reads on the page as shown, with their boxes (points, y down)."""
    path = work / "signed-for-text.pdf"
    path.write_bytes(signed)
    result = subprocess.run([require_tool("pdftotext"), "-bbox", "-cropbox", "-f", str(index + 1), "-l",
                             str(index + 1), str(path), "-"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    words: dict[str, tuple[float, float, float, float]] = {}
    for x1, y1, x2, y2, word in WORD.findall(result.stdout):
        words.setdefault(word, (float(x1), float(y1), float(x2), float(y2)))
    return words


def assert_upright(words: dict[str, tuple[float, float, float, float]],
                   box: tuple[int, int, int, int]) -> None:
    """The stamp's lines lie inside the stamp, run horizontally on the page as shown (not
    sideways) and come top to bottom in reading order (not upside down)."""
    lines = []
    for start in ("Signed by Dr", "RPPS 10001234567", "Approved for"):
        found = [w for w in words if w.startswith(start)]
        assert found, f"{start!r} not read on the signed page: {sorted(words)[:40]}"
        x1, y1, x2, y2 = words[found[0]]
        assert x2 - x1 > 3 * (y2 - y1), f"{found[0]!r} does not read horizontally: {words[found[0]]}"
        assert box[0] - 2 <= x1 and x2 <= box[2] + 2 and box[1] - 2 <= y1 and y2 <= box[3] + 2, \
            f"{found[0]!r} at {words[found[0]]} is outside the stamp {box}"
        lines.append((y1, y2))
    assert lines == sorted(lines) and all(a[1] <= b[0] + 1 for a, b in zip(lines, lines[1:], strict=False)), \
        f"the stamp's lines are not top to bottom: {lines}"


def assert_valid_everywhere(signed: bytes, svc: Services, keys_dir: Path, work: Path) -> str:
    """signflow's validator (the recipient's page), pyHanko directly, pdfsig and qpdf all
    accept the file; returns the name of the signed field."""
    report = validation.validate_pdf(signed, trust_roots=[svc.keys.root_cert])
    assert report.ok, report.as_json()
    statuses = pyhanko_directly(signed, svc)
    path = work / "signed.pdf"
    path.write_bytes(signed)
    pdfsig = pdfsig_report(path, keys_dir, work)
    # pdfsig cannot check document timestamps ("Unable to validate this type"): the signatures.
    signatures = [name for name, kind, _ in statuses if kind != "/DocTimeStamp"]
    assert pdfsig.count("Signature is Valid") == len(signatures), pdfsig
    assert "Certificate is Trusted" in pdfsig, pdfsig
    qpdf_check(path)
    return signatures[-1]


def assert_stamp_whole(normalised: bytes, signed: bytes, field: str) -> tuple[int, Image.Image, Pixels, Box]:
    """The stamp's widget lies inside the visible area, and its ink shows whole (a stamp cut
    by the CropBox would show smaller than its widget), clear of the page's edges.
    Returns (page index, the signed page as shown, the stamp's pixels, its /Rect)."""
    index, rect = widget_of(signed, field)
    shown = shown_page(signed, index)
    v = shown.visible
    assert (v[0] - 0.5 <= rect[0] and rect[2] <= v[2] + 0.5
            and v[1] - 0.5 <= rect[1] and rect[3] <= v[3] + 0.5), \
        f"the stamp {rect} reaches outside the visible area {v}"
    assert unsigned_visible_sig_fields(signed) == [], "a signature field meant to be signed is left empty"
    image, box = stamp_pixels(normalised, signed, index)
    width, height = shown.size_of(rect)
    assert (box[2] - box[0] == pytest.approx(width, abs=3)
            and box[3] - box[1] == pytest.approx(height, abs=3)), \
        f"the stamp shows as {box}, its widget is {width:.0f} x {height:.0f}"
    assert box[0] >= 1 and box[1] >= 1 and box[2] <= image.width - 1 and box[3] <= image.height - 1
    return index, image, box, rect
