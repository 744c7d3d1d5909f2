"""Web Push on the user's phones: the service worker, turning push on with one tap,
confirming the code the first push showed, and the list of devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import push_devices
from signflow.core.errors import InvalidInput
from signflow.web.context import current
from signflow.web.forms import ConfirmForm, PushCodeForm
from signflow.web.guards import login_required
from signflow.web.i18n import page_language

bp = Blueprint("push", __name__)
STATIC = Path(__file__).resolve().parent.parent / "static"
MAX_SUBSCRIPTION_BYTES = 4096


@bp.get("/sw.js")
def service_worker() -> Response:
    # Served from the root so that its scope is the whole site (notification links
    # open any page); never cached (web/headers.py: no-store), so an update is seen at once.
    response = send_file(STATIC / "sw.js", mimetype="text/javascript", max_age=0)
    response.headers["Service-Worker-Allowed"] = "/"
    return response


@bp.get("/account/push")
@login_required
def devices() -> str:
    rc = current()
    sender = rc.services.push
    devices = push_devices.list_devices(rc.session, rc.user.id)
    # One code form: the newest device still waiting (the one just turned on).
    waiting = [d for d in devices if d.verified_at is None and d.gone_at is None][-1:]
    return render_template(
        "push/devices.html", devices=devices, waiting=waiting,
        application_server_key=sender.application_server_key if sender else None,
        code_form=PushCodeForm(), remove_form=ConfirmForm())


def _subscription_fields(body: Any) -> tuple[str, str, str]:
    if not isinstance(body, dict) or not isinstance(body.get("keys"), dict):
        raise InvalidInput(_("The browser sent no push subscription."))
    endpoint, keys = body.get("endpoint"), body["keys"]
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not (isinstance(endpoint, str) and isinstance(p256dh, str) and isinstance(auth, str)
            and endpoint and p256dh and auth):
        raise InvalidInput(_("The browser sent no push subscription."))
    return endpoint, p256dh, auth


@bp.post("/account/push/subscribe")
@login_required
def subscribe() -> tuple[Response, int]:
    """JSON from PushSubscription.toJSON(); CSRF token in the X-CSRFToken header."""
    rc = current()
    if (request.content_length or 0) > MAX_SUBSCRIPTION_BYTES:
        raise InvalidInput(_("The push subscription is too large."))
    endpoint, p256dh, auth = _subscription_fields(request.get_json(silent=True))
    row = push_devices.subscribe(
        rc.session, push_devices.require_sender(rc.services.push), rc.services.keys.master_key,
        actor=rc.actor, now=rc.now, endpoint=endpoint, p256dh=p256dh, auth=auth,
        user_agent=request.headers.get("User-Agent", "")[:400], language=page_language())
    return jsonify({"id": row.id, "next": url_for("push.devices", confirm=row.id)}), 201


@bp.post("/account/push/<int:subscription_id>/verify")
@login_required
def verify(subscription_id: int) -> Response:
    rc = current()
    form = PushCodeForm()
    if not form.validate_on_submit():
        raise InvalidInput(_("Type the code the notification showed."))
    push_devices.verify(rc.session, rc.services.keys.master_key, actor=rc.actor, now=rc.now,
                        subscription_id=subscription_id, code=form.code.data or "")
    flash(_("This device now receives your pages."), "success")
    return redirect(url_for("push.devices"))


@bp.post("/account/push/<int:subscription_id>/remove")
@login_required
def remove(subscription_id: int) -> Response:
    rc = current()
    if not ConfirmForm().validate_on_submit():
        raise InvalidInput(_("The form expired: reload the page."))
    push_devices.remove(rc.session, actor=rc.actor, now=rc.now, subscription_id=subscription_id)
    flash(_("Device removed."), "success")
    return redirect(url_for("push.devices"))
