"""On-call physicians: inbox, read, sign with their PIN, or decline."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import enrolment, push_devices
from signflow.core.accounts import signing_pin as credentials
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.pki import credentials as creds
from signflow.core.requests import cover as cover
from signflow.core.requests import followup as followups
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import RequestState, Role
from signflow.web import step_up as step_up_page
from signflow.web.context import current
from signflow.web.forms import (
    AbsenceForm,
    ConfirmForm,
    DeclineForm,
    DelegateForm,
    PinForm,
    SignForm,
    UnblockForm,
    fold_of,
    form_error,
)
from signflow.web.guards import roles
from signflow.web.pages import confirmed, confirmed_step, my_requests, posted

bp = Blueprint("physician", __name__, url_prefix="/inbox")


@bp.get("/")
@roles(Role.PHYSICIAN)
def inbox() -> str:
    rc = current()
    requests = my_requests()
    pending, handed_over = followups.handed_over_first(
        rc.session, [r for r in requests if r.state == RequestState.PENDING])
    handled = [r for r in requests if r.state != RequestState.PENDING]
    credential = creds.active_credential(rc.session, rc.user.id)
    # Until a device receives pages, the inbox offers the one tap that turns push on.
    push_key = rc.services.push.application_server_key if rc.services.push else None
    return render_template("physician/inbox.html", pending=pending, handled=handled,
                           credential=credential, handed_over=handed_over, push_key=push_key,
                           push_devices=push_devices.list_devices(rc.session, rc.user.id))


@bp.route("/absence", methods=["GET", "POST"])
@roles(Role.PHYSICIAN)
def absence() -> Response | str:
    """The physician marks an absence and names the colleague who covers their shifts."""
    rc = current()
    form = AbsenceForm()
    form.cover.choices = [(u.id, u.display_name) for u in cover.cover_choices(rc.session, user=rc.user)]
    if form.validate_on_submit() and form.starts_at.data and form.ends_at.data:
        cover.mark_absence(rc.session, actor=rc.actor, cover_user_id=form.cover.data,
                           starts_local=form.starts_at.data, ends_local=form.ends_at.data,
                           timezone=rc.settings.timezone, fold=fold_of(form.fold), now=rc.now)
        flash(_("Absence saved: your colleague is on call for your shifts meanwhile."), "success")
        return redirect(url_for("physician.absence"))
    if form.errors:
        raise form_error(form)
    return render_template("physician/absence.html", form=form,
                           absences=cover.absences_for(rc.session, user=rc.user, now=rc.now))


@bp.get("/<int:request_id>")
@roles(Role.PHYSICIAN)
def review(request_id: int) -> tuple[str, int]:
    return step_up_page.review_page(request_id)


@bp.post("/<int:request_id>/sign")
@roles(Role.PHYSICIAN)
def sign(request_id: int) -> Response | tuple[str, int]:
    form = SignForm()
    # A stale second factor: the same page again, asking for a fresh one (web.step_up).
    again = step_up_page.guard(form, request_id)
    if again is not None:
        return again
    return posted(
        form,
        lambda rc, form: request_signing.sign_request(
            rc.session, rc.deps, actor=rc.actor, request_id=request_id, pin=form.pin.data or "",
            activation_token=form.activation.data or "",
            shown_sha256=form.document_sha256.data or "", now=rc.now),
        lambda req: _("Signed and delivered to %(destination)s.", destination=req.destination.name),
        "physician.review",
        refusal=N_("Enter your signing PIN."), request_id=request_id)


@bp.post("/<int:request_id>/decline")
@roles(Role.PHYSICIAN)
def decline(request_id: int) -> Response:
    return posted(
        DeclineForm(),
        lambda rc, form: workflow.decline_request(rc.session, rc.deps, reason=form.reason.data or "",
                                                  actor=rc.actor, request_id=request_id, now=rc.now),
        N_("Declined: the technician is notified."), "physician.inbox",
        refusal=N_("Say why you decline, for the technician."))


@bp.route("/signing-pin", methods=["GET", "POST"])
@roles(Role.PHYSICIAN)
def signing_pin() -> Response | str:
    rc = current()
    form = PinForm()
    credential = creds.active_credential(rc.session, rc.user.id)
    if form.validate_on_submit():
        if form.pin.data != form.confirm.data:
            raise InvalidInput(N_("The two new PINs differ."))
        enrolling = credential is None or credential.revoked_at is not None
        # Shown once, on this page only (never in the session cookie or a flash).
        puk = creds.new_puk() if enrolling else None
        credentials.set_signing_pin(rc.session, rc.deps.keys, actor=rc.actor,
                                    current_pin=form.current_pin.data or None,
                                    new_pin=form.pin.data or "", now=rc.now, puk=puk,
                                    enrolment_code=form.enrolment_code.data or None)
        if puk is not None:
            return render_template("physician/puk.html", puk=puk)
        flash(_("Your signing PIN is set."), "success")
        return redirect(url_for("physician.inbox"))
    return render_template("physician/pin.html", form=form, credential=credential,
                           send_code=ConfirmForm())


@bp.post("/signing-pin/code")
@roles(Role.PHYSICIAN)
def send_enrolment_code() -> Response:
    # The code goes to the physician's own address only: never on a page.
    return confirmed(
        lambda rc: enrolment.send_code(rc.session, rc.deps.keys.master_key, actor=rc.actor,
                                       now=rc.now),
        N_("An enrolment code is on its way to your e-mail or phone: it lasts 15 minutes."),
        "physician.signing_pin")


@bp.route("/signing-pin/unblock", methods=["GET", "POST"])
@roles(Role.PHYSICIAN)
def unblock_pin() -> Response | str:
    rc = current()
    form = UnblockForm()
    if not form.validate_on_submit():
        credential = creds.active_credential(rc.session, rc.user.id)
        return render_template("physician/unblock.html", form=form, credential=credential)
    if form.pin.data != form.confirm.data:
        raise InvalidInput(N_("The two new PINs differ."))
    credentials.unblock_signing_pin(rc.session, rc.deps.keys, actor=rc.actor,
                                    puk=form.puk.data or "", new_pin=form.pin.data or "",
                                    now=rc.now)
    flash(_("Your signing key is unblocked and your new PIN is set."), "success")
    return redirect(url_for("physician.inbox"))


@bp.post("/<int:request_id>/take")
@roles(Role.PHYSICIAN)
def take(request_id: int) -> Response:
    return confirmed_step(workflow.take_request, request_id,
                          N_("Colleagues and the technician see that you are on it."), "physician.review")


@bp.post("/<int:request_id>/delegate")
@roles(Role.PHYSICIAN)
def delegate(request_id: int) -> Response:
    return posted(
        DelegateForm(),
        lambda rc, form: workflow.delegate_request(rc.session, rc.deps, to_user_id=form.to.data,
                                                   actor=rc.actor, request_id=request_id, now=rc.now),
        lambda target: f"Delegated to {target.assignee.display_name if target.assignee else 'a colleague'}.",
        "physician.inbox", refusal=N_("Choose a colleague."))
