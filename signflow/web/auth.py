"""Login, logout, and the landing page of each role."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from signflow.core import accounts
from signflow.models import Role
from signflow.web import client_ip, commit, db, now, user
from signflow.web.forms import ConfirmForm, LoginForm
from signflow.web.guards import safe_next

bp = Blueprint("auth", __name__)

HOME = {
    Role.TECHNICIAN: "technician.index",
    Role.PHYSICIAN: "physician.inbox",
    Role.RECIPIENT: "destination.inbox",
    Role.AUDITOR: "auditor.index",
    Role.ADMIN: "admin.users",
}


@bp.get("/")
def home() -> Response:
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    return redirect(url_for(HOME[Role(current_user.role)]))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    form = LoginForm()
    if form.validate_on_submit():
        account = accounts.authenticate(
            db(), username=form.username.data or "", password=form.password.data or "",
            now=now(), ip=client_ip(),
        )
        commit()
        # A fresh session at login: nothing from before survives (fixation).
        session.clear()
        login_user(account)
        session.permanent = True
        session["login_at"] = now().timestamp()
        return redirect(safe_next(request.args.get("next")) or url_for("auth.home"))
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        accounts.logout(db(), user=user(), now=now(), ip=client_ip())
        commit()
        logout_user()
        session.clear()
    return redirect(url_for("auth.login"))
