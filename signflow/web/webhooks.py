"""Administrators: webhook and FHIR subscriptions, their delivery log, a test event and
the replay of one delivery. The secret is shown once, on the page that made it."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import users as accounts
from signflow.core.integration import webhooks as webhooks
from signflow.core.notify import webpush as webpush
from signflow.models import Role, User
from signflow.web.context import current
from signflow.web.forms import ConfirmForm, SubscriptionForm, submitted
from signflow.web.guards import roles
from signflow.web.pages import confirmed

bp = Blueprint("webhooks", __name__, url_prefix="/admin/webhooks")


def _form() -> SubscriptionForm:
    rc = current()
    form = SubscriptionForm()
    _groups, destinations = accounts.directory(rc.session)
    senders = rc.session.query(User).filter(User.role.in_([Role.TECHNICIAN, Role.INTEGRATION]),
                                            User.active.is_(True)).order_by(User.username)
    form.scope.choices = ([(f"d:{d.id}", _("Destination: %(name)s", name=d.name)) for d in destinations]
                          + [(f"t:{u.id}", _("Sent by: %(name)s", name=u.display_name)) for u in senders])
    return form


def _page(form: SubscriptionForm, secret: str | None = None, status: int = 200) -> tuple[str, int]:
    rc = current()
    return render_template("admin/webhooks.html", form=form, secret=secret, confirm=ConfirmForm(),
                           subscriptions=webhooks.subscriptions(rc.session)), status


@bp.get("/")
@roles(Role.ADMIN)
def index() -> tuple[str, int]:
    return _page(_form())


@bp.post("/")
@roles(Role.ADMIN)
def create() -> tuple[str, int]:
    rc = current()
    form = submitted(_form())
    kind, _sep, raw = (form.scope.data or "").partition(":")
    settings = rc.settings
    made = webhooks.subscribe(
        rc.session, actor=rc.actor, now=rc.now, kind=form.kind.data or "", url=form.url.data or "",
        destination_id=int(raw) if kind == "d" else None,
        technician_id=int(raw) if kind == "t" else None, event_types=form.events.data or [],
        master_key=rc.services.keys.master_key, production=settings.production,
        allow_private=settings.allow_private_endpoints, resolve=webpush.resolve_host)
    return _page(_form(), secret=made.secret)


@bp.get("/<int:subscription_id>")
@roles(Role.ADMIN)
def detail(subscription_id: int) -> str:
    rc = current()
    sub = webhooks.subscription(rc.session, subscription_id)
    rows = webhooks.deliveries(rc.session, subscription_id)
    return render_template("admin/webhook.html", sub=sub, deliveries=rows, confirm=ConfirmForm(),
                           attempts=webhooks.attempts(rc.session, [r.id for r in rows]))


@bp.post("/<int:subscription_id>/test")
@roles(Role.ADMIN)
def test(subscription_id: int) -> Response:
    return confirmed(lambda rc: webhooks.send_test(rc.session, actor=rc.actor, now=rc.now,
                                                   subscription_id=subscription_id),
                     _("Test event queued: the worker sends it within moments."),
                     "webhooks.detail", subscription_id=subscription_id)


@bp.post("/<int:subscription_id>/off")
@roles(Role.ADMIN)
def switch_off(subscription_id: int) -> Response:
    return confirmed(lambda rc: webhooks.unsubscribe(rc.session, actor=rc.actor, now=rc.now,
                                                     subscription_id=subscription_id),
                     _("Subscription switched off: nothing more is sent to it."),
                     "webhooks.detail", subscription_id=subscription_id)


@bp.post("/<int:subscription_id>/deliveries/<int:delivery_id>/replay")
@roles(Role.ADMIN)
def replay(subscription_id: int, delivery_id: int) -> Response:
    return confirmed(lambda rc: webhooks.replay(rc.session, actor=rc.actor, now=rc.now,
                                                subscription_id=subscription_id,
                                                delivery_id=delivery_id),
                     _("Delivery queued again (same webhook-id)."),
                     "webhooks.detail", subscription_id=subscription_id)
