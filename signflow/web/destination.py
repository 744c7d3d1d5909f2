"""Destination services (the transplant service): receive, verify, acknowledge."""

from __future__ import annotations

from flask import Blueprint, render_template
from werkzeug.wrappers import Response

from signflow.core.i18n import N_
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import Role
from signflow.web.context import current
from signflow.web.forms import ConfirmForm
from signflow.web.guards import roles
from signflow.web.pages import add_request_list, confirmed_step, my_request

bp = Blueprint("destination", __name__, url_prefix="/received")
add_request_list(bp, Role.RECIPIENT, "destination/inbox.html", endpoint="inbox")


@bp.get("/<int:request_id>")
@roles(Role.RECIPIENT)
def detail(request_id: int) -> str:
    rc = current()
    req = my_request(request_id)
    report = request_signing.verify_document(rc.session, rc.deps, user=rc.user,
                                             request_id=request_id, now=rc.now)
    return render_template("destination/detail.html", req=req, report=report, form=ConfirmForm(),
                           tz=rc.deps.timezone)


@bp.post("/<int:request_id>/acknowledge")
@roles(Role.RECIPIENT)
def acknowledge(request_id: int) -> Response:
    return confirmed_step(workflow.acknowledge_receipt, request_id,
                          N_("Receipt acknowledged: the technician sees it."), "destination.detail")
