"""The demo's message page: what its mail catcher and SMS gateway received. It
exists only on an instance `signflow demo` made (404 everywhere else), for admins."""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from signflow.core.ops import demo_outbox
from signflow.models import Role
from signflow.web.context import current
from signflow.web.guards import roles

bp = Blueprint("demo", __name__, url_prefix="/demo")


@bp.before_request
def _only_in_demo_mode() -> None:
    rc = current()
    if not demo_outbox.is_demo_instance(rc.session, rc.settings.instance_path):
        abort(404)


@bp.get("/messages")
@roles(Role.ADMIN)
def messages() -> str:
    rc = current()
    return render_template("demo/messages.html",
                           messages=demo_outbox.outbox_of(rc.settings.instance_path).read())
