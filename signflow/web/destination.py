"""Destination services (the transplant service): receive, verify, acknowledge."""

from __future__ import annotations

from flask import Blueprint, render_template
from werkzeug.wrappers import Response

from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import Role
from signflow.web.context import current
from signflow.web.forms import ConfirmForm
from signflow.web.guards import roles
from signflow.web.pages import confirmed, my_request, my_requests

bp = Blueprint("destination", __name__, url_prefix="/received")


@bp.get("/")
@roles(Role.RECIPIENT)
def inbox() -> str:
    return render_template("destination/inbox.html", requests=my_requests())


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
    return confirmed(
        lambda rc: workflow.acknowledge_receipt(rc.session, rc.deps, actor=rc.actor,
                                                request_id=request_id, now=rc.now),
        "Receipt acknowledged: the technician sees it.", "destination.detail", request_id=request_id)
