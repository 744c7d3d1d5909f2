"""A person's own contact channels: add, verify with the code sent through the
channel, reorder, remove (`/account/contacts`)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import contacts
from signflow.models import Role
from signflow.web.context import current
from signflow.web.forms import FORM_EXPIRED, ConfirmForm, ContactCodeForm, ContactForm, submitted
from signflow.web.guards import roles

bp = Blueprint("contacts", __name__, url_prefix="/account/contacts")
PEOPLE = (Role.PHYSICIAN, Role.TECHNICIAN, Role.RECIPIENT, Role.ADMIN, Role.AUDITOR, Role.MANAGER)


@bp.get("/")
@roles(*PEOPLE)
def index() -> str:
    rc = current()
    return render_template("account/contacts.html", channels=contacts.channels_of(rc.session, rc.user.id),
                           form=ContactForm(), code_form=ContactCodeForm(), confirm=ConfirmForm())


@bp.post("/")
@roles(*PEOPLE)
def add() -> Response:
    rc = current()
    form = submitted(ContactForm())
    contacts.add_channel(rc.session, rc.services.keys.master_key, actor=rc.actor,
                         kind=form.kind.data or "", address=form.address.data or "", now=rc.now)
    flash(_("Added. Enter the code we just sent through it to start using it."), "success")
    return redirect(url_for("contacts.index"))


@bp.post("/<int:channel_id>/verify")
@roles(*PEOPLE)
def verify(channel_id: int) -> Response:
    rc = current()
    form = submitted(ContactCodeForm())
    contacts.verify(rc.session, rc.services.keys.master_key, actor=rc.actor, channel_id=channel_id,
                    code=form.code.data or "", now=rc.now)
    flash(_("Verified: pages can reach you there now."), "success")
    return redirect(url_for("contacts.index"))


@bp.post("/<int:channel_id>/code")
@roles(*PEOPLE)
def resend(channel_id: int) -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    contacts.send_code(rc.session, rc.services.keys.master_key, actor=rc.actor,
                       channel_id=channel_id, now=rc.now)
    flash(_("A new code is on its way."), "success")
    return redirect(url_for("contacts.index"))


@bp.post("/<int:channel_id>/earlier")
@roles(*PEOPLE)
def earlier(channel_id: int) -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    contacts.move(rc.session, actor=rc.actor, channel_id=channel_id, earlier=True, now=rc.now)
    return redirect(url_for("contacts.index"))


@bp.post("/<int:channel_id>/later")
@roles(*PEOPLE)
def later(channel_id: int) -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    contacts.move(rc.session, actor=rc.actor, channel_id=channel_id, earlier=False, now=rc.now)
    return redirect(url_for("contacts.index"))


@bp.post("/<int:channel_id>/remove")
@roles(*PEOPLE)
def remove(channel_id: int) -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    contacts.remove(rc.session, actor=rc.actor, channel_id=channel_id, now=rc.now)
    flash(_("Removed."), "success")
    return redirect(url_for("contacts.index"))
