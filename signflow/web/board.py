"""The "who is on call now and tonight" board, for the staff who page and are paged."""

from __future__ import annotations

from flask import Blueprint, render_template

from signflow.core.requests import cover as cover
from signflow.models import Role
from signflow.web.context import current
from signflow.web.guards import roles

bp = Blueprint("board", __name__, url_prefix="/oncall")


@bp.get("/")
@roles(Role.TECHNICIAN, Role.PHYSICIAN, Role.ADMIN)
def board() -> str:
    rc = current()
    return render_template("board.html",
                           board=cover.board(rc.session, timezone=rc.settings.timezone,
                                             night_starts=rc.deps.night_starts, now=rc.now))
