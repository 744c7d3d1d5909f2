"""Blueprints, one per audience, and the request-scoped plumbing they share."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from flask import Flask, session
from flask.typing import RouteCallable
from flask_login import LoginManager, current_user, logout_user

from signflow.core.accounts.users import load_session_user
from signflow.core.requests.access import local_time
from signflow.models import User
from signflow.web.context import close_session, current, in_one_transaction
from signflow.web.context import session as db_session


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
        physician,
        pki_routes,
        push,
        stats,
        technician,
        webhooks,
    )

    login = LoginManager(app)
    login.login_view = "auth.login"
    login.login_message = "Please log in."
    login.session_protection = "strong"

    def _load(session_id: str) -> User | None:
        return load_session_user(db_session(), session_id)

    login.user_loader(_load)

    app.before_request(_enforce_session_limits)
    app.before_request(auth.require_own_password)
    app.before_request(auth.require_second_factor)
    app.teardown_appcontext(close_session)
    for module in (auth, technician, physician, destination, documents, auditor, admin, api,
                   pki_routes, board, push, demo, contacts, stats, identity, webhooks):
        app.register_blueprint(module.bp)
    # The one transaction policy: every view commits (or rolls back) in one place.
    for endpoint, view in app.view_functions.items():
        if endpoint != "static":
            app.view_functions[endpoint] = cast(RouteCallable, in_one_transaction(view))
    errors.register(app)
    headers.register(app)
    app.add_template_filter(_localtime, "localtime")


def _localtime(when: datetime | None) -> str:
    return local_time(when, current().settings.timezone) if when else ""
