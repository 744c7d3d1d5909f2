"""The document's own empty signature fields, as the upload check reports them to
the technician. The rule which of them may take the visible stamp is shared
with signing (signflow.core.pades.doc_fields imports it from here).

Standard library at import time: pikepdf is imported inside the function."""

from __future__ import annotations

from typing import Any

from signflow.core.pdf.sandbox_child.wire import N_, notice

# Annotation flags (ISO 32000-1, 12.5.3): a field with either is never shown.
HIDDEN, NO_VIEW = 1 << 1, 1 << 5
# A stamp smaller than this (points) could not be read.
MIN_FIELD_SIZE = (40.0, 20.0)


def usable(flags: object, rect: tuple[float, float, float, float], on_page: bool) -> bool:
    """May this empty field take the visible stamp?"""
    hidden = isinstance(flags, int) and bool(flags & (HIDDEN | NO_VIEW))
    width, height = abs(rect[2] - rect[0]), abs(rect[3] - rect[1])
    big_enough = (max(width, height) >= MIN_FIELD_SIZE[0]
                  and min(width, height) >= MIN_FIELD_SIZE[1])
    return on_page and not hidden and big_enough


def _rect(widget: Any) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in widget["/Rect"])
    except (KeyError, TypeError, ValueError):
        return 0.0, 0.0, 0.0, 0.0
    return x1, y1, x2, y2


def signature_box_notices(pdf: Any) -> list[dict[str, object]]:
    """What the technician should know about the document's empty signature fields."""
    import pikepdf

    from signflow.core.pdf.sandbox_child.objects import is_dictlike, kids, name_of, unique_dicts

    acroform = pdf.Root.get("/AcroForm")
    if not is_dictlike(acroform) or not isinstance(acroform.get("/Fields"), pikepdf.Array):
        return []
    page_of = {}
    for index, page in enumerate(pdf.pages):
        for annot in page.obj.get("/Annots", pikepdf.Array()):
            if is_dictlike(annot) and annot.is_indirect:
                page_of[annot.objgen] = index + 1
    shown, hidden = [], 0
    for node in unique_dicts(list(acroform["/Fields"]), kids, limit=100_000):
        if name_of(node.get("/FT")) != "/Sig" or "/V" in node:
            continue
        widgets = kids(node) or [node]
        if len(widgets) != 1 or not is_dictlike(widgets[0]):
            continue
        widget = widgets[0]
        page = page_of.get(widget.objgen) if widget.is_indirect else None
        if usable(widget.get("/F", 0), _rect(widget), page is not None):
            shown.append(page)
        else:
            hidden += 1
    notices = []
    if len(shown) == 1:
        notices.append(notice(N_("The document has its own signature box (page %(page)s): the "
                                 "signature goes there. Tap a page to move that box where you tap."),
                              page=shown[0]))
    elif shown:
        pages = ", ".join(str(p) for p in sorted(set(p for p in shown if p is not None)))
        notices.append(notice(N_("The document has %(count)s empty signature boxes (page %(pages)s): "
                                 "each signature of the route fills the next one in reading order (the "
                                 "first one moves where you tap, if you tap a page); a box no signature "
                                 "reaches stays empty."), count=len(shown), pages=pages))
    if hidden == 1:
        notices.append(notice(N_("The document also has a hidden or zero-size signature field: "
                                 "left empty, never given the stamp.")))
    elif hidden:
        notices.append(notice(N_("The document also has %(count)s hidden or zero-size signature "
                                 "fields: left empty, never given the stamp."), count=hidden))
    return notices


def merge_signature_widgets(pdf: Any) -> None:
    """An empty signature field with one child widget becomes one field-and-widget
    dictionary, as pyHanko writes its own: poppler (pdfsig) 22 reports a signature in
    a child widget as "not signed" although it is valid."""
    import pikepdf

    from signflow.core.pdf.sandbox_child.objects import is_dictlike, kids, name_of, unique_dicts

    acroform = pdf.Root.get("/AcroForm")
    if not is_dictlike(acroform) or not isinstance(acroform.get("/Fields"), pikepdf.Array):
        return
    merged = {}
    for field in list(unique_dicts(list(acroform["/Fields"]), kids, limit=100_000)):
        children = kids(field)
        if (name_of(field.get("/FT")) != "/Sig" or "/V" in field or not field.is_indirect
                or len(children) != 1):
            continue
        widget = children[0]
        if not is_dictlike(widget) or not widget.is_indirect or "/T" in widget:
            continue
        for key in list(widget.keys()):
            if key != "/Parent":
                field[key] = widget[key]
        del field["/Kids"]
        merged[widget.objgen] = field
    if not merged:
        return
    for page in pdf.pages:
        annots = page.obj.get("/Annots")
        if isinstance(annots, pikepdf.Array):
            page.obj["/Annots"] = pikepdf.Array(
                merged.get(a.objgen, a) if is_dictlike(a) and a.is_indirect else a for a in annots)
