"""Administrators: users and certificates. No path here reads a document or signs."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from signflow.core import accounts, credentials
from signflow.core.errors import InvalidInput
from signflow.models import Role
from signflow.web import client_ip, commit, db, now, user
from signflow.web.forms import ConfirmForm, RevokeForm, UserForm
from signflow.web.guards import roles

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _user_form() -> UserForm:
    form = UserForm()
    _groups, destinations = accounts.directory(db())
    form.destination.choices = [(0, "—")] + [(d.id, d.name) for d in destinations]
    return form


@bp.route("/users", methods=["GET", "POST"])
@roles(Role.ADMIN)
def users() -> Response | str:
    form = _user_form()
    if form.validate_on_submit():
        accounts.create_user(
            db(), actor=accounts.actor_of(user(), client_ip()), now=now(),
            username=form.username.data or "", display_name=form.display_name.data or "",
            role=form.role.data or "", password=form.password.data or "",
            email=form.email.data, professional_id=form.professional_id.data,
            destination_id=form.destination.data or None,
        )
        commit()
        flash("User created.", "success")
        return redirect(url_for("admin.users"))
    if form.errors:
        raise InvalidInput("Check the form: " + "; ".join(
            f"{getattr(form, k).label.text}: {v[0]}" for k, v in form.errors.items()))
    return render_template("admin/users.html", form=form, users=accounts.list_users(db()),
                           toggle=ConfirmForm(), revoke=RevokeForm())


@bp.post("/users/<int:user_id>/active")
@roles(Role.ADMIN)
def toggle(user_id: int) -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        target = accounts.get_user(db(), user_id)
        accounts.set_user_active(db(), actor=accounts.actor_of(user(), client_ip()),
                                 user_id=user_id, active=not target.active, now=now())
        commit()
        flash("User updated.", "success")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/revoke")
@roles(Role.ADMIN)
def revoke(user_id: int) -> Response:
    form = RevokeForm()
    if not form.validate_on_submit():
        raise InvalidInput("Tick the confirmation box to revoke a certificate.")
    credentials.revoke_credential(db(), actor=accounts.actor_of(user(), client_ip()),
                                  user_id=user_id, reason=form.reason.data or "superseded", now=now())
    commit()
    flash("Certificate revoked; the physician must set a new signing PIN to enrol again.", "success")
    return redirect(url_for("admin.users"))
