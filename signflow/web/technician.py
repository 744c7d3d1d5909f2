"""Technicians: upload a PDF, route it, follow it."""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import users as accounts
from signflow.core.i18n import N_, STATE_LABELS, label
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.requests import access
from signflow.core.requests import ladder as ladder
from signflow.core.requests import paging as paging
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import Role
from signflow.web.context import current
from signflow.web.forms import ConfirmForm, StampForm, UploadForm
from signflow.web.guards import roles
from signflow.web.pages import add_request_list, confirmed_step, my_request, my_requests, posted

bp = Blueprint("technician", __name__, url_prefix="/requests")
add_request_list(bp, Role.TECHNICIAN, "technician/index.html", endpoint="index")


def _upload_form() -> UploadForm:
    rc = current()
    form = UploadForm()
    groups, destinations = accounts.directory(rc.session)
    form.group.choices = [(g.id, g.name) for g in groups]
    form.then_group.choices = [(0, _("— nobody else —"))] + [(g.id, g.name) for g in groups]
    form.destination.choices = [(d.id, d.name) for d in destinations]
    return form


@bp.get("/status.json")
@roles(Role.TECHNICIAN)
def status() -> Response:
    # `text`: the badge as the page's language writes it (app.js shows it as it is).
    return jsonify({str(r.id): {"state": r.state, "level": r.escalation_level,
                                "text": _badge(r.state, r.escalation_level)} for r in my_requests()})


def _badge(state: str, level: int) -> str:
    text = str(_(label(STATE_LABELS, state)))
    if state == "pending" and level:
        text += " " + _("· escalated %(escalation_level)s", escalation_level=level)
    return text


@bp.get("/<int:request_id>/ladder.json")
@roles(Role.TECHNICIAN)
def ladder_status(request_id: int) -> Response:
    """The rung, who is paged and the time left, polled by the request page (app.js)."""
    rc = current()
    return jsonify(ladder.status(rc.session, rc.deps, user=rc.user, request_id=request_id,
                                 now=rc.now).as_json())


@bp.route("/new", methods=["GET", "POST"])
@roles(Role.TECHNICIAN)
def new() -> Response | str:
    rc = current()
    form = _upload_form()
    if form.validate_on_submit():
        settings = rc.services.settings
        upload = form.document.data
        raw = upload.read(settings.max_upload_bytes + 1)
        normalised = pdfcheck.normalise_upload(
            raw, max_bytes=settings.max_upload_bytes, max_pages=settings.max_pages,
            active_content=settings.active_content, allow_signed=settings.allow_countersign,
            limits=rc.services.sandbox,
        )
        req = workflow.create_request(
            rc.session, rc.deps, actor=rc.actor, now=rc.now, upload=normalised,
            filename=pdfcheck.sanitize_filename(upload.filename or "document.pdf"),
            title=form.title.data or "", group_id=form.group.data, destination_id=form.destination.data,
            urgency=form.urgency.data, note=form.note.data or "",
            stamp_position=form.stamp_position.data or None,
            then_group_ids=[form.then_group.data] if form.then_group.data else [],)
        if workflow.nobody_was_on_call(rc.session, req.id):
            flash(_("Nobody is on call for this group right now: the request went straight to the "
                    "head of department and the administrators were alerted."), "warning")
        else:
            flash(_("Sent for signature: the physicians on call are being notified."), "success")
        return redirect(url_for("technician.detail", request_id=req.id))
    return render_template("technician/new.html", form=form), 400 if form.errors else 200  # type: ignore[return-value]


@bp.get("/<int:request_id>")
@roles(Role.TECHNICIAN)
def detail(request_id: int) -> str:
    rc = current()
    req = my_request(request_id)
    groups = {g.id: g.name for g in accounts.directory(rc.session)[0]}
    return render_template("technician/detail.html", req=req, cancel_form=ConfirmForm(),
                           stamp_form=StampForm(), removed=access.removed_content(req),
                           notices=access.upload_notices(req),
                           route=[groups.get(g, "?") for g in access.route_of(req)],
                           signatures=access.signatures_of(rc.session, req.id),
                           ladder=ladder.status(rc.session, rc.deps, user=rc.user, request_id=req.id,
                                                now=rc.now),
                           deliveries=paging.deliveries_of(rc.session, req.id),
                           nobody_on_call=workflow.nobody_was_on_call(rc.session, req.id))


@bp.post("/<int:request_id>/stamp")
@roles(Role.TECHNICIAN)
def stamp(request_id: int) -> Response:
    return posted(
        StampForm(),
        lambda rc, form: request_signing.set_stamp_position(
            rc.session, rc.deps, actor=rc.actor, request_id=request_id, page=form.page.data or 0,
            fx=form.fx.data or 0.0, fy=form.fy.data or 0.0, now=rc.now),
        N_("The signature stamp will go where you tapped."), "technician.detail",
        refusal=N_("Tap inside a page of the document."), request_id=request_id)


@bp.post("/<int:request_id>/cancel")
@roles(Role.TECHNICIAN)
def cancel(request_id: int) -> Response:
    return confirmed_step(workflow.cancel_request, request_id, N_("Request cancelled."),
                          "technician.detail")
