"""The tasks the child runs on one PDF: normalise (check and rewrite), render one
page to PNG, count pages. Parsers are imported inside the tasks, after the limits."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

from signflow.core.pdf.sandbox_child import metadata
from signflow.core.pdf.sandbox_child.active_content import ActiveContent
from signflow.core.pdf.sandbox_child.budget import check_sizes
from signflow.core.pdf.sandbox_child.forms import merge_signature_widgets, signature_box_notices
from signflow.core.pdf.sandbox_child.inspection import has_signature
from signflow.core.pdf.sandbox_child.objects import is_dictlike
from signflow.core.pdf.sandbox_child.pages import direct_boxes, geometry
from signflow.core.pdf.sandbox_child.wire import (
    MAX_RENDER_PIXELS,
    MAX_RENDER_SIDE,
    N_,
    UNREADABLE,
    Refuse,
    parser_error,
)

LOCKED_FILE = N_(
    "the PDF is protected by a password. Ask the sender for a copy without a password, "
    "or open it with its password and save (or print to PDF) a copy without protection, "
    "then upload that copy"
)


def check_readers(data: bytes, page_count: int) -> None:
    """The bytes we hand on must read the same in the three engines that will see them."""
    import pikepdf
    import pypdfium2
    from pyhanko.pdf_utils.reader import PdfFileReader

    with pikepdf.open(io.BytesIO(data), attempt_recovery=False) as again:
        if len(again.pages) != page_count:
            raise Refuse(UNREADABLE)
    reader = PdfFileReader(io.BytesIO(data), strict=True)
    if int(reader.root["/Pages"]["/Count"]) != page_count or "/ID" not in reader.trailer:
        raise Refuse(UNREADABLE)
    reader.find_page_for_modification(page_count - 1)  # type: ignore[no-untyped-call]
    document = pypdfium2.PdfDocument(data)
    try:
        if len(document) != page_count:
            raise Refuse(UNREADABLE)
    finally:
        document.close()


PROBE_WIDTH_PX = 48


UNVIEWABLE = N_(
    "page %(page)s of the PDF cannot be displayed, so the physician could not read it "
    "before signing; print the document to PDF again (or scan it again) and upload that copy"
)


def probe_pages(data: bytes, page_count: int) -> None:
    """Every page renders (small) in PDFium, the engine of the previews: a document
    whose pages cannot be shown is never offered for signature."""
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    try:
        for index in range(page_count):
            try:
                page = document[index]
                width_pt, height_pt = page.get_size()
                if width_pt <= 0 or height_pt <= 0:
                    raise Refuse(UNVIEWABLE, params={"page": index + 1})
                page.render(scale=max(PROBE_WIDTH_PX / width_pt, 1e-3)).close()
                page.close()
            except pypdfium2.PdfiumError as exc:
                raise Refuse(UNVIEWABLE, params={"page": index + 1}, detail=parser_error(exc)) from None
    finally:
        document.close()


def _normalise(params: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    import pikepdf

    max_pages = int(params["max_pages"])
    refuse_active = params["active_content"] == "refuse"
    allow_signed = bool(params["allow_signed"])
    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError:
        raise Refuse(LOCKED_FILE) from None
    except (pikepdf.PdfError, ValueError, RuntimeError) as exc:
        raise Refuse(UNREADABLE, detail=parser_error(exc)) from None
    with pdf:
        # Opened without a password: only permission flags (no copying, no
        # printing...) protect it, which any reader may ignore; the rewrite is
        # saved unencrypted, so the signed file opens everywhere.
        restricted = pdf.is_encrypted or "/Encrypt" in pdf.trailer
        try:
            root = pdf.Root
            page_count = len(pdf.pages)
        except (pikepdf.PdfError, AttributeError, ValueError, RuntimeError) as exc:
            raise Refuse(UNREADABLE, detail=parser_error(exc)) from None
        # qpdf hands its warnings over once: keep them all for the checks and the log.
        warnings = [parser_error(w) for w in pdf.get_warnings()]
        if not is_dictlike(root):
            raise Refuse(UNREADABLE, detail="; ".join(warnings[:5]) or "the catalogue is not a dictionary")
        if page_count == 0:
            # Pages lost to damage are not the same as a document without any.
            if warnings:
                raise Refuse(UNREADABLE, detail="; ".join(warnings[:5]))
            raise Refuse(N_("the PDF has no pages: export or print the document to PDF again, "
                         "with its pages, and upload that copy"))
        if page_count > max_pages:
            raise Refuse(N_("the PDF has more than %(max_pages)s pages (it has %(page_count)s): "
                            "split it into parts of at most %(max_pages)s pages and send each "
                            "one"), params={'max_pages': max_pages, 'page_count': page_count})
        signed = has_signature(pdf)
        if signed and not allow_signed:
            raise Refuse(N_("the PDF already carries a signature, and this site accepts only "
                         "unsigned documents: ask the sender for the version before signing"))
        if signed and restricted:
            raise Refuse(N_("the PDF is encrypted and already carries a signature: removing the "
                         "encryption would void that signature; ask the sender for a copy "
                         "without protection"))
        # A signed file cannot be cleaned without voiding its signatures.
        active = ActiveContent(pdf, strip=not signed)
        active.walk()
        if active.found and (refuse_active or signed):
            raise Refuse(active.refusal(signed))
        check_sizes(active.streams)
        removed = active.removed() if not signed else []
        if restricted:
            removed.append("copy and print restrictions (the file opened without a password)")
        warnings += [parser_error(w) for w in pdf.get_warnings()]
        if warnings:
            removed.append("damaged file structure (repaired)")
        if signed:
            # Counter-signing appends to the exact bytes received.
            if not data.startswith(b"%PDF-") or removed or metadata.settle_xmp(pdf)[0]:
                raise Refuse(N_("the PDF already carries a signature and needs repairs"))
            out, notices = data, list[dict[str, object]]()
        else:
            out, notices = _rewrite(pdf, removed)
    check_readers(out, page_count)
    probe_pages(out, page_count)
    meta = {"page_count": page_count, "removed": removed, "notices": notices,
            "passthrough": signed, "warnings": warnings[:5]}
    return meta, out


def _rewrite(pdf: Any, removed: list[str]) -> tuple[bytes, list[dict[str, object]]]:
    """The cleaned document saved in full; `removed` gains what the XMP needed, the
    notices say what became of a PDF/A claim."""
    import pikepdf

    fixes, packet = metadata.settle_xmp(pdf)
    claim = metadata.pdfa_claim(packet)
    notices: list[dict[str, object]] = []
    changed = bool(removed or fixes)
    removed.extend(fixes)
    if claim is not None and packet is not None:
        if changed:
            metadata.drop_pdfa_claim(pdf, packet)
        notices.append(metadata.pdfa_notice(claim, kept=not changed))
    merge_signature_widgets(pdf)
    notices.extend(signature_box_notices(pdf))
    direct_boxes(pdf)
    buffer = io.BytesIO()
    pdf.save(
        buffer,
        linearize=False,
        # PDF/A-1 allows no object streams (nor cross-reference streams).
        object_stream_mode=pikepdf.ObjectStreamMode.disable
        if claim is not None and claim.startswith("PDF/A-1") and not changed
        else pikepdf.ObjectStreamMode.generate,
        compress_streams=True,
        deterministic_id=True,
        encryption=False,
        fix_metadata_version=False,
    )
    return buffer.getvalue(), notices


def _render(params: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    import pypdfium2

    page_index = int(params["page_index"])
    width_px = int(params["width_px"])
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError:
        raise Refuse(UNREADABLE) from None
    try:
        page_count = len(document)
        if not 0 <= page_index < page_count:
            raise Refuse(N_("no such page"), kind="not-found")
        document.init_forms()
        page = document[page_index]
        # PDFium reports the size as displayed, /Rotate already applied.
        width_pt, height_pt = page.get_size()
        if width_pt <= 0 or height_pt <= 0:
            raise Refuse(UNREADABLE)
        scale = width_px / width_pt
        # Clamp the bitmap, not the request: a 60000 pt square or a 1 x 50000
        # strip still renders into a few megabytes.
        area = width_pt * scale * height_pt * scale
        if area > MAX_RENDER_PIXELS:
            scale *= math.sqrt(MAX_RENDER_PIXELS / area)
        longest = max(width_pt, height_pt) * scale
        if longest > MAX_RENDER_SIDE:
            scale *= MAX_RENDER_SIDE / longest
        scale = max(scale, 1e-3)
        bitmap = page.render(scale=scale, may_draw_forms=True, draw_annots=True)
        image = bitmap.to_pil()
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=6)
        meta = {"page_count": page_count, "width": image.width, "height": image.height}
        return meta, out.getvalue()
    finally:
        document.close()


def _count(params: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError:
        raise Refuse(UNREADABLE) from None
    try:
        return {"page_count": len(document)}, b""
    finally:
        document.close()


Task = Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]
TASKS: dict[str, Task] = {
    "normalise": _normalise, "render": _render, "count": _count, "geometry": geometry,
}


