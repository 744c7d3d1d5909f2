"""The geometry task: one page's visible area, rotation and unit, as a reader
resolves them (inherited from the page tree, indirect objects followed)."""

from __future__ import annotations

import io
import math
from typing import Any

from signflow.core.pdf.sandbox_child.objects import is_dictlike
from signflow.core.pdf.sandbox_child.wire import N_, UNREADABLE, Refuse

# Readers fall back to US Letter when a page has no usable MediaBox.
DEFAULT_MEDIA = (0.0, 0.0, 612.0, 792.0)
# A hostile page tree may be deep or cyclic; real ones are a few levels.
MAX_TREE_DEPTH = 64


def inherited(page: Any, key: str) -> Any:
    """`key` of the page or of its nearest ancestor that has it (ISO 32000-1, 7.7.3.4)."""
    node, seen = page, set()
    for _ in range(MAX_TREE_DEPTH):
        if not is_dictlike(node):
            return None
        if key in node:
            return node[key]
        if node.is_indirect:
            if node.objgen in seen:
                return None
            seen.add(node.objgen)
        node = node.get("/Parent")
    return None


def as_box(value: Any) -> tuple[float, float, float, float] | None:
    """A rectangle, normalised, or None when it is not four finite numbers."""
    import pikepdf

    if not isinstance(value, pikepdf.Array) or len(value) != 4:
        return None
    try:
        a, b, c, d = (float(item) for item in value)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (a, b, c, d)):
        return None
    return min(a, c), min(b, d), max(a, c), max(b, d)


def visible_area(page: Any) -> tuple[float, float, float, float]:
    """CropBox clipped to MediaBox (a CropBox outside the media shows nothing of it)."""
    media = as_box(inherited(page, "/MediaBox"))
    if media is None or media[2] <= media[0] or media[3] <= media[1]:
        media = DEFAULT_MEDIA
    crop = as_box(inherited(page, "/CropBox")) or media
    x1, y1 = max(crop[0], media[0]), max(crop[1], media[1])
    x2, y2 = min(crop[2], media[2]), min(crop[3], media[3])
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else media


def rotation(page: Any) -> int:
    value = inherited(page, "/Rotate")
    # Not a multiple of 90 is an error readers ignore; so do we.
    if isinstance(value, int) and value % 90 == 0:
        return value % 360
    return 0


def user_unit(page: Any) -> float:
    value = page.get("/UserUnit")  # not inheritable
    try:
        unit = float(value) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0
    return unit if math.isfinite(unit) and 0 < unit <= 75_000 else 1.0


BOX_KEYS = ("/MediaBox", "/CropBox", "/BleedBox", "/TrimBox", "/ArtBox")


def direct_boxes(pdf: Any) -> None:
    """Page boxes written on each page as plain arrays.

    qpdf, when it lists the pages, copies attributes inherited from the page tree
    onto every page as one *shared indirect* object; written out like that, a
    change to one page's box would move all of them, and readers that expect an
    array meet a reference (fpdf2 writes its MediaBox that way too). A box of
    four numbers is the same box written directly."""
    import pikepdf

    for page in pdf.pages:
        for key in BOX_KEYS:
            value = page.obj.get(key)
            if isinstance(value, pikepdf.Array) and value.is_indirect and len(value) == 4:
                items = list(value)
                if all(isinstance(item, int | float) or _is_real(item) for item in items):
                    page.obj[key] = pikepdf.Array(items)


def _is_real(value: Any) -> bool:
    from decimal import Decimal

    return isinstance(value, Decimal)


def geometry(params: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    import pikepdf

    page_index = int(params["page_index"])
    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError:
        raise Refuse(N_("the PDF is encrypted")) from None
    except (pikepdf.PdfError, ValueError, RuntimeError):
        raise Refuse(UNREADABLE) from None
    with pdf:
        page_count = len(pdf.pages)
        if not 0 <= page_index < page_count:
            raise Refuse(N_("no such page"), kind="not-found")
        page = pdf.pages[page_index].obj
        meta = {
            "page_count": page_count,
            "visible": list(visible_area(page)),
            "rotate": rotation(page),
            "user_unit": user_unit(page),
        }
    return meta, b""
