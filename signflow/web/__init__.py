"""Blueprints, one per audience, and the request-scoped plumbing they share."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask, current_app, g, request, session
from flask_login import LoginManager, current_user, logout_user
from sqlalchemy.orm import Session

from signflow.core.accounts.users import load_session_user
from signflow.core.requests.access import local_time
from signflow.core.requests.deps import Deps
from signflow.models import User
from signflow.services import Services


def services() -> Services:
    svc: Services = current_app.extensions["signflow"]
    return svc


def db() -> Session:
    """One session, hence one transaction, per request."""
    if "db" not in g:
        g.db = services().sessions()
    sess: Session = g.db
    return sess


def commit() -> None:
    db().commit()


def deps() -> Deps:
    return services().deps


def now() -> datetime:
    if "now" not in g:
        g.now = services().clock()
    when: datetime = g.now
    return when


def client_ip() -> str | None:
    return request.remote_addr


def user() -> User:
    """The logged-in user (views behind a guard only)."""
    return current_user._get_current_object()  # type: ignore[no-any-return]


def _close_session(_exc: BaseException | None) -> None:
    sess = g.pop("db", None)
    if sess is not None:
        sess.rollback()
        sess.close()


def _enforce_session_limits() -> None:
    if not current_user.is_authenticated:
        return
    started = session.get("login_at")
    limit = timedelta(hours=services().settings.session_max_hours)
    if started is None or now().timestamp() - float(started) > limit.total_seconds():
        logout_user()
        session.clear()


def register(app: Flask) -> None:
    from signflow.web import (
        admin,
        api,
        auditor,
        auth,
        destination,
        documents,
        errors,
        headers,
        physician,
        pki_routes,
        technician,
    )

    login = LoginManager(app)
    login.login_view = "auth.login"
    login.login_message = "Please log in."
    login.session_protection = "strong"

    @login.user_loader
    def _load(session_id: str) -> User | None:
        return load_session_user(db(), session_id)

    app.before_request(_enforce_session_limits)
    app.before_request(auth.require_second_factor)
    app.teardown_appcontext(_close_session)
    for module in (auth, technician, physician, destination, documents, auditor, admin, api,
                   pki_routes):
        app.register_blueprint(module.bp)
    errors.register(app)
    headers.register(app)
    app.add_template_filter(_localtime, "localtime")


def _localtime(when: datetime | None) -> str:
    return local_time(when, services().settings.timezone) if when else ""
