"""On-call physicians: inbox, read, sign with their PIN, or decline."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from signflow.core.accounts import signing_pin as credentials
from signflow.core.errors import InvalidInput
from signflow.core.pki import credentials as creds
from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import RequestState, Role
from signflow.web import client_ip, commit, db, deps, now, user
from signflow.web.forms import ConfirmForm, DeclineForm, DelegateForm, PinForm, SignForm
from signflow.web.guards import roles

bp = Blueprint("physician", __name__, url_prefix="/inbox")


@bp.get("/")
@roles(Role.PHYSICIAN)
def inbox() -> str:
    requests = access.list_requests(db(), user=user(), now=now())
    pending = [r for r in requests if r.state == RequestState.PENDING]
    handled = [r for r in requests if r.state != RequestState.PENDING]
    credential = creds.active_credential(db(), user().id)
    return render_template("physician/inbox.html", pending=pending, handled=handled,
                           credential=credential)


@bp.get("/<int:request_id>")
@roles(Role.PHYSICIAN)
def review(request_id: int) -> str:
    view = request_signing.review(db(), deps(), user=user(), request_id=request_id, now=now(),
                           ip=client_ip())
    commit()  # the document.viewed audit entry
    form = decline = delegate = None
    if view.signing is not None:
        form = SignForm(activation=view.signing.activation_token,
                        document_sha256=view.signing.document_sha256)
        decline = DeclineForm()
        delegate = DelegateForm()
        delegate.to.choices = [(c.id, c.display_name) for c in view.colleagues]
    return render_template("physician/review.html", req=view.request, form=form, decline=decline,
                           delegate=delegate, take=ConfirmForm(), state_message=view.message,
                           signatures=view.signatures)


@bp.post("/<int:request_id>/sign")
@roles(Role.PHYSICIAN)
def sign(request_id: int) -> Response | tuple[str, int]:
    form = SignForm()
    if not form.validate_on_submit():
        raise InvalidInput("Enter your signing PIN.")
    req = request_signing.sign_request(
        db(), deps(), user=user(), request_id=request_id, pin=form.pin.data or "",
        activation_token=form.activation.data or "", shown_sha256=form.document_sha256.data or "",
        now=now(), ip=client_ip(),
    )
    commit()
    flash(f"Signed and delivered to {req.destination.name}.", "success")
    return redirect(url_for("physician.review", request_id=request_id))


@bp.post("/<int:request_id>/decline")
@roles(Role.PHYSICIAN)
def decline(request_id: int) -> Response:
    form = DeclineForm()
    if not form.validate_on_submit():
        raise InvalidInput("Say why you decline, for the technician.")
    workflow.decline_request(db(), deps(), user=user(), request_id=request_id,
                             reason=form.reason.data or "", now=now(), ip=client_ip())
    commit()
    flash("Declined: the technician is notified.", "success")
    return redirect(url_for("physician.inbox"))


@bp.route("/signing-pin", methods=["GET", "POST"])
@roles(Role.PHYSICIAN)
def signing_pin() -> Response | str:
    form = PinForm()
    credential = creds.active_credential(db(), user().id)
    if form.validate_on_submit():
        if form.pin.data != form.confirm.data:
            raise InvalidInput("The two new PINs differ.")
        credentials.set_signing_pin(db(), deps().keys, user(), current_pin=form.current_pin.data or None,
                            new_pin=form.pin.data or "", now=now(), ip=client_ip())
        commit()
        flash("Your signing PIN is set.", "success")
        return redirect(url_for("physician.inbox"))
    return render_template("physician/pin.html", form=form, credential=credential)


@bp.post("/<int:request_id>/take")
@roles(Role.PHYSICIAN)
def take(request_id: int) -> Response:
    if not ConfirmForm().validate_on_submit():
        raise InvalidInput("The form expired. Reload the page.")
    workflow.take_request(db(), deps(), user=user(), request_id=request_id, now=now(), ip=client_ip())
    commit()
    flash("Colleagues and the technician see that you are on it.", "success")
    return redirect(url_for("physician.review", request_id=request_id))


@bp.post("/<int:request_id>/delegate")
@roles(Role.PHYSICIAN)
def delegate(request_id: int) -> Response:
    form = DelegateForm()
    if not form.validate_on_submit():
        raise InvalidInput("Choose a colleague.")
    target = workflow.delegate_request(db(), deps(), user=user(), request_id=request_id,
                                       to_user_id=form.to.data, now=now(), ip=client_ip())
    commit()
    flash(f"Delegated to {target.assignee.display_name if target.assignee else 'a colleague'}.",
          "success")
    return redirect(url_for("physician.inbox"))
