"""Tiny builders of real PDF files for tests (pikepdf, fpdf2; no fixtures on disk)."""

from __future__ import annotations

import io

import pikepdf
from fpdf import FPDF

A4 = (595, 842)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _page(pdf: pikepdf.Pdf, text: str) -> pikepdf.Dictionary:
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.Type1,
            BaseFont=pikepdf.Name.Helvetica,
            Encoding=pikepdf.Name.WinAnsiEncoding,
        )
    )
    # Latin-1 is what WinAnsi shows for the common accented letters.
    body = f"BT /F1 14 Tf 72 760 Td ({_escape(text)}) Tj ET".encode("latin-1", "replace")
    return pikepdf.Dictionary(
        Type=pikepdf.Name.Page,
        MediaBox=[0, 0, *A4],
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
        Contents=pdf.make_stream(body),
    )


def make_pdf(pages: int = 1, text: str = "signflow test document") -> bytes:
    """A plain, valid PDF with `pages` A4 pages, each showing `text` and its page number."""
    pdf = pikepdf.new()
    for number in range(1, pages + 1):
        pdf.pages.append(pikepdf.Page(_page(pdf, f"{text} - page {number}")))
    out = io.BytesIO()
    # Uncompressed: tests can find (and flip) the page text in the raw bytes.
    pdf.save(out, compress_streams=False)
    return out.getvalue()


def make_pdf_with_empty_sig_field(
    field_name: str = "Signature1",
    box: tuple[float, float, float, float] = (300, 60, 560, 140),
    pages: int = 1,
    text: str = "signflow form with a signature field",
) -> bytes:
    """A PDF whose last page carries an empty signature field (AcroForm /FT /Sig)."""
    pdf = pikepdf.Pdf.open(io.BytesIO(make_pdf(pages=pages, text=text)))
    page = pdf.pages[-1]
    widget = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Annot,
            Subtype=pikepdf.Name.Widget,
            FT=pikepdf.Name.Sig,
            T=pikepdf.String(field_name),
            Rect=list(box),
            F=4,
            P=page.obj,
        )
    )
    page.obj.Annots = pdf.make_indirect(pikepdf.Array([widget]))
    pdf.Root.AcroForm = pdf.make_indirect(
        pikepdf.Dictionary(Fields=pikepdf.Array([widget]), SigFlags=0)
    )
    out = io.BytesIO()
    # Uncompressed: tests can find (and flip) the page text in the raw bytes.
    pdf.save(out, compress_streams=False)
    return out.getvalue()


def fpdf2_form() -> bytes:
    """A one-page lab form as fpdf2 writes it (MediaBox inherited from the page tree)."""
    doc = FPDF()
    doc.add_page()
    doc.set_font("helvetica", size=14)
    doc.cell(text="Laboratory report - cross-match")
    doc.ln(12)
    doc.set_font("helvetica", size=11)
    for line in ("Patient: 1234567", "Donor: 7654321", "Result: negative"):
        doc.cell(text=line)
        doc.ln(8)
    return bytes(doc.output())


def pdf_with_sig_fields(specs: list[dict[str, object]], pages: int = 2,
                        text: str = "Transplant consent form") -> bytes:
    """A PDF (pikepdf) whose AcroForm holds empty signature fields, each spec giving
    `name`, `page` (0-based), `rect`, optional annotation `flags` (default 4, Print)
    and `kid` (the widget a child of the field instead of merged with it)."""
    pdf = pikepdf.Pdf.open(io.BytesIO(make_pdf(pages=pages, text=text)))
    fields = []
    for spec in specs:
        page = pdf.pages[int(spec["page"])]  # type: ignore[call-overload]
        widget = pikepdf.Dictionary(Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Widget,
                                    Rect=list(spec["rect"]),  # type: ignore[call-overload]
                                    F=spec.get("flags", 4), P=page.obj)
        if spec.get("kid"):
            field = pdf.make_indirect(pikepdf.Dictionary(FT=pikepdf.Name.Sig,
                                                         T=pikepdf.String(str(spec["name"]))))
            widget.Parent = field
            widget_ref = pdf.make_indirect(widget)
            field.Kids = pikepdf.Array([widget_ref])
        else:
            widget.FT, widget.T = pikepdf.Name.Sig, pikepdf.String(str(spec["name"]))
            field = widget_ref = pdf.make_indirect(widget)
        page.obj.Annots = pikepdf.Array([*page.obj.get("/Annots", pikepdf.Array()), widget_ref])
        fields.append(field)
    pdf.Root.AcroForm = pdf.make_indirect(pikepdf.Dictionary(Fields=pikepdf.Array(fields)))
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()
