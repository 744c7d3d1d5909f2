"""The document's own empty signature fields: which may take the visible stamp, in
which order, and moving one to where the technician tapped.

Rules (README, "What the upload check keeps, removes and says"):
- A field takes the visible stamp only when it is *usable* (sandbox_child.forms:
  the one rule, also behind what the technician is told at upload): its widget
  lies on a page, is neither Hidden nor NoView, and is at least 40 x 20 pt.
  Hidden and zero-size fields are left as they are: never signed, never given
  the stamp.
- Usable fields are taken in reading order (page, then top to bottom, then left
  to right): each signature of the route fills the next one.
- A tap on the preview moves the field the first signature would fill (the
  first usable one) to the tapped place; later signatures fill the following
  fields where the document put them.

The bytes are the normalised upload (already rewritten in the sandbox); pyHanko
reads them here as it does to sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.form_tools import get_single_field_annot
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields

from signflow.core.pdf.geometry import field_takes_stamp

MAX_PAGE_TREE_DEPTH = 64


@dataclass(frozen=True)
class DocumentField:
    name: str
    page_index: int | None  # 0-based; None when the widget is on no page
    rect: tuple[float, float, float, float]
    usable: bool


def _page_refs(writer: Any) -> list[Any]:
    """The pages in order, as indirect objects (the tree was checked in the sandbox)."""
    refs: list[Any] = []

    def walk(node_ref: Any, depth: int) -> None:
        if depth > MAX_PAGE_TREE_DEPTH or not isinstance(node_ref, generic.IndirectObject):
            return
        node = node_ref.get_object()  # type: ignore[no-untyped-call]
        if not isinstance(node, generic.DictionaryObject):
            return
        if "/Kids" in node:
            for kid in node["/Kids"]:
                walk(kid, depth + 1)
        else:
            refs.append(node_ref)

    walk(writer.root.raw_get("/Pages"), 0)
    return refs


def _widget(field_ref: Any) -> Any:
    """The field's one widget annotation, as an indirect object."""
    field = field_ref.get_object()
    get_single_field_annot(field)  # raises on a field with several widgets
    return field["/Kids"].raw_get(0) if "/Kids" in field else field_ref


def _rect(widget: Any) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in widget["/Rect"])
    except (KeyError, TypeError, ValueError):
        return 0.0, 0.0, 0.0, 0.0
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _page_of(widget_ref: Any, pages: list[Any]) -> int | None:
    references = [page.reference for page in pages]
    try:
        page = widget_ref.get_object().raw_get("/P")
    except KeyError:
        page = None
    if isinstance(page, generic.IndirectObject) and page.reference in references:
        return references.index(page.reference)
    for index, ref in enumerate(pages):  # /P is optional: look for the widget itself
        if _listed(ref.get_object(), widget_ref):
            return index
    return None


def _annots(page: Any) -> Any:
    try:
        raw = page.raw_get("/Annots")
    except KeyError:
        return generic.ArrayObject()
    if isinstance(raw, generic.IndirectObject):
        return raw.get_object()  # type: ignore[no-untyped-call]
    return raw


def _listed(page: Any, widget_ref: Any) -> bool:
    return any(isinstance(a, generic.IndirectObject) and a.reference == widget_ref.reference
               for a in _annots(page))


def empty_fields(writer: Any) -> list[DocumentField]:
    """The document's empty signature fields, usable ones first in reading order."""
    pages = _page_refs(writer)
    found: list[DocumentField] = []
    try:
        listed = list(fields.enumerate_sig_fields(writer, filled_status=False))
    except PdfError:
        return []
    for name, _value, field_ref in listed:
        try:
            widget_ref = _widget(field_ref)
        except PdfError:
            continue
        widget = widget_ref.get_object()
        rect = _rect(widget)
        page_index = _page_of(widget_ref, pages)
        usable = field_takes_stamp(widget.get("/F", 0), rect, page_index is not None)
        found.append(DocumentField(name=name, page_index=page_index, rect=rect, usable=usable))
    ordered = sorted((f for f in found if f.usable),
                     key=lambda f: (f.page_index or 0, -f.rect[3], f.rect[0]))
    return ordered + [f for f in found if not f.usable]


def move_field(writer: Any, name: str, page_index: int,
               box: tuple[float, float, float, float]) -> None:
    """Give the empty field `name` the rectangle `box` on page `page_index` (0-based),
    in the incremental update the signature is about to be made in."""
    ((_, _, field_ref),) = list(fields.enumerate_sig_fields(writer, with_name=name))
    widget_ref = _widget(field_ref)
    widget = widget_ref.get_object()
    pages = _page_refs(writer)
    old = _page_of(widget_ref, pages)
    widget["/Rect"] = generic.ArrayObject(generic.FloatObject(v) for v in box)  # type: ignore[no-untyped-call]
    writer.mark_update(widget_ref)
    if old == page_index:
        return
    if old is not None:
        page = pages[old].get_object()
        page["/Annots"] = generic.ArrayObject(
            a for a in _annots(page)
            if not (isinstance(a, generic.IndirectObject) and a.reference == widget_ref.reference))
        writer.mark_update(pages[old])
    widget["/P"] = pages[page_index]
    writer.register_annotation(pages[page_index], widget_ref)
