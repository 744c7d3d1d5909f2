"""A page as a reader shows it, and where a signature stamp goes on it.

The sandbox reads a page's boxes, rotation and unit (inherited from the page
tree, indirect objects resolved: `page_geometry`); the arithmetic here is pure.
Two coordinate systems meet: PDF user space (what a field's /Rect is written
in, y up, origin wherever the MediaBox puts it) and the *display*: the visible
area (CropBox clipped to MediaBox) after /Rotate, origin at its top-left corner,
y down, in user units. The preview and the technician's tap live in the
display; the stamp must be laid out upright there, then mapped to user space.
"""

from __future__ import annotations

from dataclasses import dataclass

from signflow.core.errors import InvalidDocument, InvalidInput, SignflowError
from signflow.core.i18n import N_
from signflow.core.pdf.sandbox import DEFAULT_LIMITS, SandboxLimits, SandboxRefusal, run_checked
from signflow.core.pdf.sandbox_child.forms import usable as field_takes_stamp

Box = tuple[float, float, float, float]
# Which of a document's own empty signature fields may take the visible stamp: the
# rule the upload check reports with, here for signing (signflow.core.pades.doc_fields).
__all__ = ["PageGeometry", "field_takes_stamp", "page_geometry", "stamp_box"]
POINTS_PER_MM = 72 / 25.4
# Below this the stamp's 10 pt text shrinks under ~4 pt: nobody could read it.
MIN_STAMP_SCALE = 0.4


@dataclass(frozen=True)
class PageGeometry:
    visible: Box  # user space, normalised (x1 < x2, y1 < y2)
    rotate: int  # 0, 90, 180 or 270: clockwise, as a reader turns the page
    user_unit: float = 1.0  # points per user-space unit

    @property
    def display_size(self) -> tuple[float, float]:
        """Width and height of the visible area as shown, in user units."""
        x1, y1, x2, y2 = self.visible
        width, height = x2 - x1, y2 - y1
        return (height, width) if self.rotate in (90, 270) else (width, height)

    def to_user(self, u: float, v: float) -> tuple[float, float]:
        """A display point (from the shown page's top-left corner, y down) in user space."""
        x1, y1, x2, y2 = self.visible
        if self.rotate == 90:  # the page's left edge is shown on top
            return x1 + v, y1 + u
        if self.rotate == 180:
            return x2 - u, y1 + v
        if self.rotate == 270:  # the page's right edge is shown on top
            return x2 - v, y2 - u
        return x1 + u, y2 - v

    def display_rect_to_user(self, u1: float, v1: float, u2: float, v2: float) -> Box:
        ax, ay = self.to_user(u1, v1)
        bx, by = self.to_user(u2, v2)
        return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)

    def shown_size_of(self, box: Box) -> tuple[float, float]:
        """Width and height, in points, that a user-space box has on the shown page."""
        width, height = abs(box[2] - box[0]), abs(box[3] - box[1])
        if self.rotate in (90, 270):
            width, height = height, width
        return width * self.user_unit, height * self.user_unit

    def contains(self, box: Box, tolerance: float = 0.5) -> bool:
        x1, y1, x2, y2 = self.visible
        return (box[0] >= x1 - tolerance and box[1] >= y1 - tolerance
                and box[2] <= x2 + tolerance and box[3] <= y2 + tolerance)


def stamp_box(geometry: PageGeometry, size_pt: tuple[float, float], *, margin_pt: float,
              at: tuple[float, float] | None = None, page: int = 1) -> Box:
    """Where a stamp of `size_pt` (as read, in points) goes, in user space: centred
    on the display fractions `at` (clamped inside the page), else the bottom right
    corner of the page as shown. Scaled down on small pages; a page too small for
    a readable stamp is refused with what to do."""
    unit = geometry.user_unit
    shown_w, shown_h = geometry.display_size
    width, height = size_pt[0] / unit, size_pt[1] / unit
    margin = min(margin_pt / unit, 0.05 * min(shown_w, shown_h))
    scale = min(1.0, (shown_w - 2 * margin) / width, (shown_h - 2 * margin) / height)
    if scale < MIN_STAMP_SCALE:
        mm_w, mm_h = (side * unit / POINTS_PER_MM for side in (shown_w, shown_h))
        raise InvalidDocument(
            N_("Page %(page)s is too small for a readable signature stamp (%(mm_w)s x "
               "%(mm_h)s mm). Place the stamp on a larger page, or scan the document onto "
               "A5 paper or larger."),
                   params={'page': page, 'mm_w': format(mm_w, '.0f'), 'mm_h': format(mm_h, '.0f')}
        )
    width, height = width * scale, height * scale
    if at is None:
        u1, v1 = shown_w - margin - width, shown_h - margin - height
    else:
        u1 = min(max(at[0] * shown_w - width / 2, 0.0), shown_w - width)
        v1 = min(max(at[1] * shown_h - height / 2, 0.0), shown_h - height)
    return geometry.display_rect_to_user(u1, v1, u1 + width, v1 + height)


def page_geometry(data: bytes, page: int, limits: SandboxLimits = DEFAULT_LIMITS) -> PageGeometry:
    """Geometry of the 1-based `page`, read in the sandbox (hostile bytes never
    meet a parser in this process)."""
    def refused(refusal: SandboxRefusal) -> SignflowError:
        if refusal.kind == "not-found":
            return InvalidInput(N_("Page %(page)s does not exist in the document."), params={'page': page})
        return InvalidDocument(refusal.msgid, params=refusal.params)

    result = run_checked("geometry", {"page_index": page - 1}, data, limits, refused=refused,
                         failure=N_("the PDF could not be processed safely"),
                         busy=N_("the server is busy checking other documents; try again"))
    meta = result.meta
    try:
        visible = tuple(float(v) for v in meta["visible"])
        rotate, unit = int(meta["rotate"]), float(meta["user_unit"])
    except (KeyError, TypeError, ValueError):
        raise InvalidDocument(N_("the PDF could not be processed safely")) from None
    if len(visible) != 4 or rotate not in (0, 90, 180, 270) or not 0 < unit <= 75_000:
        raise InvalidDocument(N_("the PDF could not be processed safely"))
    x1, y1, x2, y2 = visible
    if not (x2 > x1 and y2 > y1):
        raise InvalidDocument(N_('Page %(page)s has no visible area.'), params={'page': page})
    return PageGeometry(visible=(x1, y1, x2, y2), rotate=rotate, user_unit=unit)
