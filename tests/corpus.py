"""Generators of the PDF corpus (issue 9): files as hospital software really writes them,
made here by the real producers (fpdf2, reportlab, img2pdf, libtiff's tiff2pdf,
Ghostscript, LibreOffice, Chromium, pikepdf), never stored on disk. A helper module,
not a test module: tests/test_corpus.py drives each file through the whole loop.

Each generator takes a private work folder and returns the PDF's bytes. Tools are
found through tests/tools.py (`require_tool`): missing, they skip locally and fail
under CI=true."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from PIL import Image, ImageDraw, ImageFont

from tests.corpus_pages import (
    GEOMETRIES,
    LINES,
    geometry_page,
    nested_tree_rotated,
    odd_page,
    saved,
    small_page,
    user_unit_page,
)
from tests.tools import require_file, require_tool

GS_SRGB = Path("/usr/share/color/icc/ghostscript/srgb.icc")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
TIMEOUT = 120


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{args[0]} failed: {result.stdout[-800:]}{result.stderr[-800:]}"


# --- Python libraries ---------------------------------------------------------------------------

def fpdf2_report(work: Path) -> bytes:
    """A two-page lab report as fpdf2 writes it (boxes on the page tree, an OpenAction)."""
    from fpdf import FPDF

    doc = FPDF()
    for number in (1, 2):
        doc.add_page()
        doc.set_font("helvetica", size=14)
        doc.cell(text=f"Laboratory report - cross-match, page {number}")
        doc.ln(12)
        doc.set_font("helvetica", size=11)
        for line in LINES:
            doc.cell(text=line)
            doc.ln(8)
    return bytes(doc.output())


def _reportlab(work: Path, *, landscape: bool = False, rotate: int = 0) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.pagesizes import landscape as turned
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    size = turned(A4) if landscape else A4
    page = canvas.Canvas(out, pagesize=size)
    page.setTitle("Lab system report")
    if rotate:
        page.setPageRotation(rotate)
    page.setFont("Helvetica-Bold", 16)
    page.drawString(60, size[1] - 80, "Histocompatibility laboratory")
    page.setFont("Helvetica", 11)
    for row, line in enumerate(LINES):
        page.drawString(60, size[1] - 120 - 18 * row, line)
    page.rect(55, size[1] - 220, 300, 40)
    page.showPage()
    page.save()
    return out.getvalue()


def reportlab_report(work: Path) -> bytes:
    return _reportlab(work)


def reportlab_landscape(work: Path) -> bytes:
    return _reportlab(work, landscape=True)


def reportlab_rotated(work: Path) -> bytes:
    """A portrait page the lab system turns for the reader (/Rotate 90)."""
    return _reportlab(work, rotate=90)


def _scan(size: tuple[int, int], mode: str, dpi: int) -> Image.Image:
    """A page of text as a scanner or fax sees it, drawn with Pillow."""
    font = ImageFont.truetype(require_file(DEJAVU, "package fonts-dejavu-core"), dpi // 5)
    image = Image.new(mode, size, "white" if mode != "1" else 1)
    draw = ImageDraw.Draw(image)
    ink = "black" if mode != "1" else 0
    for row, line in enumerate(LINES):
        draw.text((dpi // 2, dpi // 2 + row * dpi // 3), line, fill=ink, font=font)
    draw.rectangle((dpi // 2, size[1] // 2, size[0] - dpi // 2, size[1] // 2 + dpi), outline=ink,
                   width=max(1, dpi // 50))
    return image


def img2pdf_png(work: Path) -> bytes:
    import img2pdf

    out = io.BytesIO()
    _scan((1240, 1754), "L", 150).save(out, format="PNG", dpi=(150, 150))
    return bytes(img2pdf.convert(out.getvalue()))


def img2pdf_jpeg(work: Path) -> bytes:
    import img2pdf

    out = io.BytesIO()
    _scan((1240, 1754), "RGB", 150).save(out, format="JPEG", quality=80, dpi=(150, 150))
    return bytes(img2pdf.convert(out.getvalue()))


def img2pdf_jpeg_exif_rotated(work: Path) -> bytes:
    """A phone photo of a form held sideways: EXIF orientation 6, which img2pdf turns into
    /Rotate 90 on the page."""
    import img2pdf

    image = _scan((1240, 1754), "RGB", 150).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80, dpi=(150, 150), exif=exif.tobytes())
    return bytes(img2pdf.convert(out.getvalue(), rotation=img2pdf.Rotation.ifvalid))


def img2pdf_mixed_scan(work: Path) -> bytes:
    """A copier's multi-page scan: a portrait page, then a landscape one (the last)."""
    import img2pdf

    pages = []
    for image in (_scan((1240, 1754), "L", 150), _scan((1754, 1240), "L", 150)):
        out = io.BytesIO()
        image.save(out, format="PNG", dpi=(150, 150))
        pages.append(out.getvalue())
    return bytes(img2pdf.convert(pages))


# --- Debian tools -------------------------------------------------------------------------------

def tiff2pdf_fax(work: Path) -> bytes:
    """A fax: 1-bit CCITT group 4 TIFF at fax resolution, wrapped by libtiff's tiff2pdf."""
    tool = require_tool("tiff2pdf")
    tiff = work / "fax.tif"
    _scan((1728, 2200), "1", 200).save(tiff, compression="group4", dpi=(204, 196))
    _run([tool, "-o", str(work / "fax.pdf"), str(tiff)], work)
    return (work / "fax.pdf").read_bytes()


def _ghostscript(work: Path, *extra: str, name: str, prelude: Path | None = None) -> bytes:
    gs = require_tool("gs")
    source = work / "gs-source.pdf"
    source.write_bytes(_reportlab(work))
    target = work / name
    inputs = [str(prelude), str(source)] if prelude else [str(source)]
    _run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pdfwrite", *extra,
          f"-sOutputFile={target}", *inputs], work)
    return target.read_bytes()


def ghostscript_pdfwrite(work: Path) -> bytes:
    return _ghostscript(work, name="gs.pdf")


def ghostscript_pdfa(work: Path) -> bytes:
    """PDF/A-2b as a document-management system archives it: Ghostscript's own PDFA_def.ps
    pointed at its sRGB profile, so the file carries the OutputIntent PDF/A requires."""
    profile = Path(require_file(GS_SRGB, "package ghostscript"))
    template = next(Path("/usr/share/ghostscript").glob("*/lib/PDFA_def.ps"), None)
    if template is None:
        require_file("/usr/share/ghostscript/VERSION/lib/PDFA_def.ps", "package ghostscript")
    prelude = work / "PDFA_def.ps"
    prelude.write_text(template.read_text().replace("(srgb.icc)", f"({profile})"))  # type: ignore[union-attr]
    return _ghostscript(work, "-dPDFA=2", "-dPDFACompatibilityPolicy=1",
                        "-sColorConversionStrategy=RGB", f"--permit-file-read={profile}",
                        name="gs-pdfa.pdf", prelude=prelude)


FODT = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"
 office:version="1.2" office:mimetype="application/vnd.oasis.opendocument.text">
 <office:body><office:text>
  <text:h text:outline-level="1">Transplant consent - Mme X</text:h>
  {paragraphs}
  <table:table table:name="Results"><table:table-column table:number-columns-repeated="2"/>
   <table:table-row><table:table-cell><text:p>Cross-match</text:p></table:table-cell>
    <table:table-cell><text:p>negative</text:p></table:table-cell></table:table-row>
  </table:table>
 </office:text></office:body>
</office:document>
"""


def libreoffice_writer(work: Path) -> bytes:
    """A Writer document (flat ODT with a heading and a table) exported headless, with a
    private profile so that parallel runs do not share one."""
    soffice = require_tool("soffice")
    source = work / "consent.fodt"
    paragraphs = "".join(f"<text:p>{line}</text:p>" for line in LINES)
    source.write_text(FODT.replace("{paragraphs}", paragraphs), encoding="utf-8")
    profile = work / "lo-profile"
    _run([soffice, f"-env:UserInstallation=file://{profile}", "--headless", "--norestore",
          "--convert-to", "pdf", "--outdir", str(work), str(source)], work)
    return (work / "consent.pdf").read_bytes()


HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Discharge letter</title>
<style>body {{ font-family: DejaVu Sans, sans-serif; margin: 2cm; }} td {{ border: 1px solid; }}</style>
</head><body><h1>Discharge letter</h1>{paragraphs}
<table><tr><td>Cross-match</td><td>negative</td></tr></table>
<p><a href="https://hospital.example/records/1234567">Patient record</a></p></body></html>
"""


def chromium_print(work: Path) -> bytes:
    """A web portal's page printed to PDF by headless Chromium (Debian's, never downloaded)."""
    chromium = require_file("/usr/bin/chromium", "package chromium")
    page = work / "letter.html"
    page.write_text(HTML.format(paragraphs="".join(f"<p>{line}</p>" for line in LINES)),
                    encoding="utf-8")
    target = work / "letter.pdf"
    _run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
          f"--user-data-dir={work / 'chromium-profile'}", f"--print-to-pdf={target}",
          page.as_uri()], work)
    return target.read_bytes()


# --- Forms and encryption -------------------------------------------------------------------------

VISIBLE_FIELD = (320.0, 60.0, 560.0, 140.0)


def _form_with_sig_fields(fields: list[tuple[str, tuple[float, ...], int]]) -> bytes:
    """A reportlab form (a filled text field) plus empty signature fields (name, /Rect,
    annotation flags) added with pikepdf, as form designers write them."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=A4)
    page.setFont("Helvetica", 12)
    page.drawString(60, 780, "Consent for organ retrieval - signature of the physician below")
    page.acroForm.textfield(name="patient", value="1234567", x=60, y=700, width=200, height=20)
    page.drawString(60, 150, "Physician's signature:")
    page.showPage()
    page.save()
    pdf = pikepdf.open(io.BytesIO(out.getvalue()))
    target = pdf.pages[0]
    for name, rect, flags in fields:
        widget = pdf.make_indirect(pikepdf.Dictionary(
            Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Widget, FT=pikepdf.Name.Sig,
            T=pikepdf.String(name), Rect=list(rect), F=flags, P=target.obj))
        if "/Annots" not in target.obj:
            target.obj.Annots = pdf.make_indirect(pikepdf.Array())
        target.obj.Annots.append(widget)
        pdf.Root.AcroForm.Fields.append(widget)
    return saved(pdf)


def acroform_visible_field(work: Path) -> bytes:
    return _form_with_sig_fields([("PhysicianSignature", VISIBLE_FIELD, 4)])


def acroform_hidden_field(work: Path) -> bytes:
    # /F 2: Hidden. A designer's spare field, never to be shown.
    return _form_with_sig_fields([("Spare", VISIBLE_FIELD, 2)])


def acroform_zero_size_field(work: Path) -> bytes:
    # An invisible signature field (Rect of zero size), as some tools add for approval.
    return _form_with_sig_fields([("Invisible", (0.0, 0.0, 0.0, 0.0), 4)])


def acroform_all_fields(work: Path) -> bytes:
    """Hidden and zero-size fields listed before the one meant for the physician."""
    return _form_with_sig_fields([("Spare", (60.0, 400.0, 300.0, 480.0), 2),
                                  ("Invisible", (0.0, 0.0, 0.0, 0.0), 4),
                                  ("PhysicianSignature", VISIBLE_FIELD, 4)])


def permissions_only(work: Path, *, aes256: bool = True) -> bytes:
    """Opens without a password; the owner password forbids copying, changing, annotating."""
    pdf = pikepdf.open(io.BytesIO(_reportlab(work)))
    allow = pikepdf.Permissions(extract=False, modify_annotation=False, modify_assembly=False,
                                modify_form=False, modify_other=False)
    encryption = (pikepdf.Encryption(owner="owner-secret", user="", R=6, allow=allow) if aes256
                  else pikepdf.Encryption(owner="owner-secret", user="", R=3, allow=allow, aes=False,
                                     metadata=False))
    return saved(pdf, encryption=encryption)


def permissions_only_rc4(work: Path) -> bytes:
    return permissions_only(work, aes256=False)


def password_protected(work: Path) -> bytes:
    """Needs a password to open: refused, with what to do."""
    pdf = pikepdf.open(io.BytesIO(_reportlab(work)))
    return saved(pdf, encryption=pikepdf.Encryption(owner="owner-secret", user="patient-dob", R=6))


# --- the catalogue ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Generator:
    name: str
    make: Callable[[Path], bytes]
    # Where the stamp must go: "corner" (bottom right of the last page as shown) or
    # "field" (the document's own visible signature field, VISIBLE_FIELD).
    stamp: str = "corner"
    # A message the technician must be shown after the upload, if any.
    told: str | None = None


GENERATORS = [
    Generator("fpdf2", fpdf2_report),
    Generator("reportlab", reportlab_report),
    Generator("reportlab-landscape", reportlab_landscape),
    Generator("reportlab-rotate90", reportlab_rotated),
    Generator("img2pdf-png", img2pdf_png),
    Generator("img2pdf-jpeg", img2pdf_jpeg),
    Generator("img2pdf-jpeg-exif-rotated", img2pdf_jpeg_exif_rotated),
    Generator("img2pdf-two-page-mixed-orientation", img2pdf_mixed_scan),
    Generator("tiff2pdf-ccitt-g4-fax", tiff2pdf_fax),
    Generator("ghostscript-pdfwrite", ghostscript_pdfwrite),
    Generator("ghostscript-pdfa2", ghostscript_pdfa),
    Generator("libreoffice-writer", libreoffice_writer),
    Generator("chromium-print", chromium_print),
    Generator("acroform-visible-sig-field", acroform_visible_field, stamp="field"),
    Generator("acroform-hidden-sig-field", acroform_hidden_field),
    Generator("acroform-zero-size-sig-field", acroform_zero_size_field),
    Generator("acroform-hidden-zero-visible-fields", acroform_all_fields, stamp="field"),
    Generator("encrypted-permissions-aes256", permissions_only, told="restrictions"),
    Generator("encrypted-permissions-rc4", permissions_only_rc4, told="restrictions"),
]
GENERATORS += [Generator(g.name, lambda work, g=g: geometry_page(g)) for g in GEOMETRIES]
GENERATORS += [
    Generator("pikepdf-nested-page-tree-rotate90", nested_tree_rotated),
    Generator("pikepdf-small-page-a7", small_page),
    Generator("pikepdf-user-unit-10", user_unit_page),
    Generator("pikepdf-rotate-minus90", lambda work: odd_page(rotate=-90)),
    Generator("pikepdf-rotate450", lambda work: odd_page(rotate=450)),
    Generator("pikepdf-reversed-mediabox", lambda work: odd_page(media=(595, 842, 0, 0))),
    Generator("pikepdf-cropbox-beyond-mediabox",
              lambda work: odd_page(crop=(-50, -50, 700, 900), rotate=90)),
]
# Not a corpus case (it never reaches signing): refused at upload.
OTHERS = [Generator("encrypted-user-password", password_protected)]
BY_NAME = {g.name: g for g in GENERATORS + OTHERS}
