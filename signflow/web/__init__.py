"""Blueprints, one per audience, and the request-scoped plumbing they share."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import cast

from flask import Flask, session
from flask.typing import RouteCallable
from flask_babel import format_decimal, gettext
from flask_login import LoginManager, current_user, logout_user

from signflow.core.accounts.users import load_session_user
from signflow.core.i18n import (
    N_,
    ROLE_LABELS,
    STATE_LABELS,
    URGENCY_LABELS,
    Msg,
    Translator,
    from_stored,
    label,
)
from signflow.models import User
from signflow.web.context import close_session, current, in_one_transaction
from signflow.web.context import session as db_session
from signflow.web.i18n import page_language, translate_msg


def _enforce_session_limits() -> None:
    if not current_user.is_authenticated:
        return
    rc = current()
    started = session.get("login_at")
    limit = timedelta(hours=rc.settings.session_max_hours)
    if started is None or rc.now.timestamp() - float(started) > limit.total_seconds():
        logout_user()
        session.clear()


def register(app: Flask) -> None:
    from signflow.web import (
        admin,
        api,
        auditor,
        auth,
        board,
        contacts,
        demo,
        destination,
        documents,
        errors,
        headers,
        identity,
        language,
        oidc,
        physician,
        pki_routes,
        push,
        stats,
        technician,
        webhooks,
    )

    login = LoginManager(app)
    login.login_view = "auth.login"
    login.login_message = N_("Please log in.")
    login.localize_callback = gettext
    login.session_protection = "strong"

    def _load(session_id: str) -> User | None:
        return load_session_user(db_session(), session_id)

    login.user_loader(_load)

    app.before_request(_enforce_session_limits)
    app.before_request(auth.require_own_password)
    app.before_request(auth.require_second_factor)
    app.teardown_appcontext(close_session)
    for module in (auth, technician, physician, destination, documents, auditor, admin, api,
                   pki_routes, board, push, demo, contacts, stats, identity, webhooks,
                   language, oidc):
        app.register_blueprint(module.bp)
    # The one transaction policy: every view commits (or rolls back) in one place.
    for endpoint, view in app.view_functions.items():
        if endpoint != "static":
            app.view_functions[endpoint] = cast(RouteCallable, in_one_transaction(view))
    errors.register(app)
    headers.register(app)
    app.add_template_filter(_localtime, "localtime")
    # The words for enum values: `{{ req.state | state_label }}`.
    app.add_template_filter(_label_filter(STATE_LABELS), "state_label")
    app.add_template_filter(_label_filter(URGENCY_LABELS), "urgency_label")
    app.add_template_filter(_label_filter(ROLE_LABELS), "role_label")
    # A message id from core (a validation problem...), translated: `{{ p | translated }}`.
    app.add_template_filter(_translated, "translated")
    # A message core stored in a column (a request's failure reason), translated.
    app.add_template_filter(_stored_message, "stored_message")
    # Numbers as the page's language writes them ("12 345" in French).
    app.add_template_filter(format_decimal, "number")


def _localtime(when: datetime | None) -> str:
    """A moment in the hospital's time zone, written as the page's language writes it."""
    return Translator(page_language(), current().settings.timezone).when(when) if when else ""


def _stored_message(text: str | None) -> str:
    message = from_stored(text)
    return translate_msg(message) if message else ""


def _translated(value: object) -> str:
    """A message id from core in the page's language; "label (3)" keeps its count."""
    if isinstance(value, Msg):
        return translate_msg(value)
    text = str(value)
    counted = re.fullmatch(r"(.+) \((\d+)\)", text, re.S)
    if counted and str(gettext(counted.group(1))) != counted.group(1):
        return f"{gettext(counted.group(1))} ({counted.group(2)})"
    return str(gettext(text))


def _label_filter(labels: Mapping[str, str]) -> Callable[[object], str]:
    def translate(value: object) -> str:
        return str(gettext(label(labels, value)))

    return translate
