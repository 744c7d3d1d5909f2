"""Page previews and downloads, for whoever may read the request's document."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, request

from signflow.core.errors import NotFound
from signflow.core.i18n import N_
from signflow.core.requests import access
from signflow.models import Role
from signflow.web.context import current
from signflow.web.guards import roles

bp = Blueprint("documents", __name__, url_prefix="/documents")

READERS = (Role.TECHNICIAN, Role.PHYSICIAN, Role.RECIPIENT)
WIDTHS = (480, 800, 1200)


@bp.get("/<int:request_id>/pages/<int:page>.png")
@roles(*READERS)
def page(request_id: int, page: int) -> Response:
    rc = current()
    width = request.args.get("w", type=int) or 800
    if width not in WIDTHS:
        width = 800
    doc = access.document_for(rc.session, rc.deps, actor=rc.actor, request_id=request_id, now=rc.now)
    if page < 1:
        raise NotFound(N_("No such page."))
    png = rc.services.previews.get_or_render(lambda: doc.data, doc.sha256, page - 1, width)
    resp = Response(png, mimetype="image/png")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def attachment(data: bytes, filename: str, mimetype: str = "application/pdf") -> Response:
    """RFC 6266 Content-Disposition with an ASCII fallback and a UTF-8 name."""
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "").replace("?", "_")
    resp = Response(data, mimetype=mimetype)
    resp.headers["Content-Disposition"] = (
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    )
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.get("/<int:request_id>/download")
@roles(*READERS)
def download(request_id: int) -> Response:
    rc = current()
    doc = access.document_for(rc.session, rc.deps, actor=rc.actor, request_id=request_id, now=rc.now,
                              download=True)
    return attachment(doc.data, doc.filename)
