"""Destination services (the transplant service): receive, verify, acknowledge."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import Role
from signflow.web.context import current
from signflow.web.forms import ConfirmForm
from signflow.web.guards import roles

bp = Blueprint("destination", __name__, url_prefix="/received")


@bp.get("/")
@roles(Role.RECIPIENT)
def inbox() -> str:
    rc = current()
    requests = access.list_requests(rc.session, user=rc.user, now=rc.now)
    return render_template("destination/inbox.html", requests=requests)


@bp.get("/<int:request_id>")
@roles(Role.RECIPIENT)
def detail(request_id: int) -> str:
    rc = current()
    req = access.get_request(rc.session, user=rc.user, request_id=request_id, now=rc.now)
    report = request_signing.verify_document(rc.session, rc.deps, user=rc.user,
                                             request_id=request_id, now=rc.now)
    return render_template("destination/detail.html", req=req, report=report, form=ConfirmForm(),
                           tz=rc.deps.timezone)


@bp.post("/<int:request_id>/acknowledge")
@roles(Role.RECIPIENT)
def acknowledge(request_id: int) -> Response:
    rc = current()
    form = ConfirmForm()
    if form.validate_on_submit():
        workflow.acknowledge_receipt(rc.session, rc.deps, actor=rc.actor, request_id=request_id, now=rc.now)
        flash("Receipt acknowledged: the technician sees it.", "success")
    return redirect(url_for("destination.detail", request_id=request_id))
