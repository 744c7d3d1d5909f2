"""Destination services (the transplant service): receive, verify, acknowledge."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import Role
from signflow.web import client_ip, commit, db, deps, now, user
from signflow.web.forms import ConfirmForm
from signflow.web.guards import roles

bp = Blueprint("destination", __name__, url_prefix="/received")


@bp.get("/")
@roles(Role.RECIPIENT)
def inbox() -> str:
    requests = access.list_requests(db(), user=user(), now=now())
    return render_template("destination/inbox.html", requests=requests)


@bp.get("/<int:request_id>")
@roles(Role.RECIPIENT)
def detail(request_id: int) -> str:
    req = access.get_request(db(), user=user(), request_id=request_id, now=now())
    report = request_signing.verify_document(db(), deps(), user=user(), request_id=request_id, now=now())
    return render_template("destination/detail.html", req=req, report=report, form=ConfirmForm(),
                           tz=deps().timezone)


@bp.post("/<int:request_id>/acknowledge")
@roles(Role.RECIPIENT)
def acknowledge(request_id: int) -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        workflow.acknowledge_receipt(db(), deps(), user=user(), request_id=request_id, now=now(),
                                     ip=client_ip())
        commit()
        flash("Receipt acknowledged: the technician sees it.", "success")
    return redirect(url_for("destination.detail", request_id=request_id))
