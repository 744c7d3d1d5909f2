"""A person's own contact channels: add, verify with the code sent through the
channel, reorder (Web Push devices among them), remove (`/account/contacts`)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import contacts
from signflow.models import Role
from signflow.web.context import current
from signflow.web.forms import ConfirmForm, ContactCodeForm, ContactForm
from signflow.web.guards import roles
from signflow.web.pages import confirmed, posted

bp = Blueprint("contacts", __name__, url_prefix="/account/contacts")
PEOPLE = (Role.PHYSICIAN, Role.TECHNICIAN, Role.RECIPIENT, Role.ADMIN, Role.AUDITOR, Role.MANAGER)
BACK = "contacts.index"


@bp.get("/")
@roles(*PEOPLE)
def index() -> str:
    rc = current()
    return render_template("account/contacts.html", channels=contacts.ordered(rc.session, rc.user.id),
                           form=ContactForm(), code_form=ContactCodeForm(), confirm=ConfirmForm())


@bp.post("/")
@roles(*PEOPLE)
def add() -> Response:
    return posted(ContactForm(), lambda rc, form: contacts.add_channel(
        rc.session, rc.services.keys.master_key, actor=rc.actor, kind=form.kind.data or "",
        address=form.address.data or "", now=rc.now),
        _("Added. Enter the code we just sent through it to start using it."), BACK)


@bp.post("/<int:channel_id>/verify")
@roles(*PEOPLE)
def verify(channel_id: int) -> Response:
    return posted(ContactCodeForm(), lambda rc, form: contacts.verify(
        rc.session, rc.services.keys.master_key, actor=rc.actor, channel_id=channel_id,
        code=form.code.data or "", now=rc.now), _("Verified: pages can reach you there now."), BACK)


@bp.post("/<int:channel_id>/code")
@roles(*PEOPLE)
def resend(channel_id: int) -> Response:
    return confirmed(lambda rc: contacts.send_code(
        rc.session, rc.services.keys.master_key, actor=rc.actor, channel_id=channel_id, now=rc.now),
        _("A new code is on its way."), BACK)


@bp.post("/<int:channel_id>/<any(earlier, later):direction>")
@roles(*PEOPLE)
def move(channel_id: int, direction: str) -> Response:
    return confirmed(lambda rc: contacts.move(
        rc.session, actor=rc.actor, channel_id=channel_id, earlier=direction == "earlier", now=rc.now),
        _("Order saved: pages try your channels in this order."), BACK)


@bp.post("/<int:channel_id>/remove")
@roles(*PEOPLE)
def remove(channel_id: int) -> Response:
    return confirmed(lambda rc: contacts.remove(rc.session, actor=rc.actor, channel_id=channel_id,
                                                now=rc.now), _("Removed."), BACK)
