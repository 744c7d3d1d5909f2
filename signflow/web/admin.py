"""Administrators: users and certificates. No path here reads a document or signs."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import contacts, four_eyes, push_devices
from signflow.core.accounts import mfa as mfa
from signflow.core.accounts import signing_pin as credentials
from signflow.core.accounts import users as accounts
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.requests import cover as cover
from signflow.core.requests import policy as escalation
from signflow.core.requests import rota as rota
from signflow.core.requests import rota_import as rota_import
from signflow.models import Role
from signflow.web.context import current
from signflow.web.forms import (
    AdminAbsenceForm,
    ConfirmForm,
    DestinationForm,
    GroupForm,
    PolicyForm,
    RevokeForm,
    RotaImportForm,
    ShiftForm,
    UserEditForm,
    UserForm,
    fold_of,
    form_error,
    submitted,
)
from signflow.web.guards import roles
from signflow.web.pages import confirmed, posted

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _with_destinations(form: UserEditForm) -> None:
    """A user's destination is chosen from the services (or none: 0)."""
    _groups, destinations = accounts.directory(current().session)
    form.destination.choices = [(0, "—")] + [(d.id, d.name) for d in destinations]


def _done(change: object | None, done: str) -> None:
    if change is None:
        flash(_(done), "success")
    else:
        flash(_("Proposed: it takes effect when a second administrator approves it "
                "(Pending changes)."), "info")


@bp.route("/users", methods=["GET", "POST"])
@roles(Role.ADMIN)
def users() -> Response | str:
    rc = current()
    form = UserForm()
    _with_destinations(form)
    if form.validate_on_submit():
        _user, change = four_eyes.create_user(
            rc.session, actor=rc.actor, now=rc.now,
            username=form.username.data or "", display_name=form.display_name.data or "",
            role=form.role.data or "", password=form.password.data or "",
            email=form.email.data, phone=form.phone.data, professional_id=form.professional_id.data,
            destination_id=form.destination.data or None,
        )
        _done(change, N_("User created."))
        return redirect(url_for("admin.users"))
    if form.errors:
        raise form_error(form)
    return render_template("admin/users.html", form=form, users=accounts.list_users(rc.session),
                           awaiting=four_eyes.pending_user_ids(rc.session),
                           toggle=ConfirmForm(), revoke=RevokeForm())


@bp.post("/users/<int:user_id>/active")
@roles(Role.ADMIN)
def toggle(user_id: int) -> Response:
    rc = current()
    form = ConfirmForm()
    if form.validate_on_submit():
        target = accounts.get_user(rc.session, user_id)
        change = four_eyes.set_active(rc.session, actor=rc.actor, user_id=user_id,
                                      active=not target.active, now=rc.now)
        _done(change, N_("User updated."))
    return redirect(url_for("admin.users"))


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@roles(Role.ADMIN)
def edit_user(user_id: int) -> Response | str:
    rc = current()
    target = accounts.get_user(rc.session, user_id)
    form = UserEditForm(obj=target)
    _with_destinations(form)
    if not form.is_submitted():
        form.destination.data = target.destination_id or 0
    if form.validate_on_submit():
        change = four_eyes.update_user(
            rc.session, actor=rc.actor, now=rc.now, user_id=user_id,
            display_name=form.display_name.data or "", professional_id=form.professional_id.data,
            email=form.email.data, phone=form.phone.data, destination_id=form.destination.data or None,
        )
        _done(change, N_("User updated."))
        return redirect(url_for("admin.users"))
    if form.errors:
        raise form_error(form)
    return render_template("admin/user.html", form=form, target=target,
                           four_eyes=four_eyes.needs_four_eyes(target.role),
                           devices=push_devices.list_devices(rc.session, target.id),
                           channels=contacts.ordered(rc.session, target.id))


@bp.get("/changes")
@roles(Role.ADMIN)
def changes() -> str:
    rc = current()
    return render_template("admin/changes.html", pending=four_eyes.pending_changes(rc.session),
                           decided=four_eyes.recent_decisions(rc.session), me=rc.user.id,
                           confirm=ConfirmForm())


def _one_button(operation: Callable[..., object], done: str, back_to: str, **target: int) -> Response:
    """A one-button administration on one object (approve or reject a change, remove a
    shift, reset a second factor): `operation(session, actor=, now=, **target)`, the
    same arguments for each."""
    return confirmed(lambda rc: operation(rc.session, actor=rc.actor, now=rc.now, **target),
                     done, back_to)


@bp.post("/changes/<int:change_id>/approve")
@roles(Role.ADMIN)
def approve(change_id: int) -> Response:
    return _one_button(four_eyes.approve, N_("Approved: the change is in effect and the person is told."),
                       "admin.changes", change_id=change_id)


@bp.post("/changes/<int:change_id>/reject")
@roles(Role.ADMIN)
def reject(change_id: int) -> Response:
    return _one_button(four_eyes.reject, N_("Rejected: nothing changed."), "admin.changes",
                       change_id=change_id)


@bp.post("/users/<int:user_id>/revoke")
@roles(Role.ADMIN)
def revoke(user_id: int) -> Response:
    return posted(
        RevokeForm(),
        lambda rc, form: credentials.revoke_credential(rc.session, actor=rc.actor, user_id=user_id,
                                                       reason=form.reason.data or "superseded",
                                                       now=rc.now),
        N_("Certificate revoked; the physician must set a new signing PIN to enrol again."),
        "admin.users", refusal=N_("Tick the confirmation box to revoke a certificate."))


def _rota_forms() -> tuple[GroupForm, DestinationForm, ShiftForm]:
    rc = current()
    groups, _destinations = accounts.directory(rc.session)
    physicians = [u for u in accounts.list_users(rc.session) if u.role == Role.PHYSICIAN and u.active]
    group_form, shift_form = GroupForm(prefix="group"), ShiftForm(prefix="shift")
    group_form.head.choices = [(0, "—")] + [(p.id, p.display_name) for p in physicians]
    shift_form.group.choices = [(g.id, g.name) for g in groups]
    shift_form.physician.choices = [(p.id, p.display_name) for p in physicians]
    return group_form, DestinationForm(prefix="dest"), shift_form


def _policy_and_import_forms() -> tuple[PolicyForm, RotaImportForm]:
    groups, _destinations = accounts.directory(current().session)
    policy_form, import_form = PolicyForm(prefix="policy"), RotaImportForm(prefix="import")
    policy_form.group.choices = [(g.id, g.name) for g in groups]
    import_form.group.choices = [(0, "—")] + [(g.id, g.name) for g in groups]
    return policy_form, import_form


def _absence_form() -> AdminAbsenceForm:
    form = AdminAbsenceForm(prefix="absence")
    choices = [(u.id, u.display_name) for u in cover.cover_choices(current().session)]
    form.physician.choices, form.cover.choices = choices, choices
    return form


def _rota_page(report: rota_import.ImportReport | None = None) -> str:
    rc = current()
    group_form, destination_form, shift_form = _rota_forms()
    policy_form, import_form = _policy_and_import_forms()
    groups, destinations = accounts.directory(rc.session)
    return render_template("admin/rota.html", groups=groups, destinations=destinations,
                           shifts=rota.current_and_upcoming(rc.session, now=rc.now),
                           group_form=group_form, destination_form=destination_form,
                           shift_form=shift_form, remove=ConfirmForm(), policy_form=policy_form,
                           policies=escalation.policies(rc.session, rc.deps), import_form=import_form,
                           report=report, group_names={g.id: g.name for g in groups},
                           absences=cover.current_and_coming(rc.session, now=rc.now),
                           absence_form=_absence_form())


@bp.get("/rota")
@roles(Role.ADMIN)
def rota_page() -> str:
    return _rota_page()


@bp.post("/rota/policy")
@roles(Role.ADMIN)
def set_policy() -> Response:
    rc = current()
    form = submitted(_policy_and_import_forms()[0])
    escalation.set_policy(rc.session, rc.deps, actor=rc.actor, group_id=form.group.data,
                          urgency=form.urgency.data or "", rung_minutes=form.minutes(),
                          repeat_after_minutes=form.repeat_after.data, now=rc.now)
    flash(_("Escalation policy saved: new requests follow it, waiting ones from their next rung."),
          "success")
    return redirect(url_for("admin.rota_page"))


@bp.post("/rota/import")
@roles(Role.ADMIN)
def import_rota() -> Response | tuple[str, int]:
    rc = current()
    form = submitted(_policy_and_import_forms()[1])
    upload = form.file.data
    report = rota_import.import_rota(
        rc.session, actor=rc.actor, data=upload.read(rota_import.MAX_BYTES + 1),
        filename=upload.filename or "", timezone=rc.services.settings.timezone, fold=fold_of(form.fold),
        group_id=form.group.data or None, level=form.level.data, now=rc.now)
    if not report.ok:
        return _rota_page(report), 400
    flash(_("Rota imported: %(added)d shifts added, %(skipped)d already over and skipped.",
            added=report.added, skipped=report.skipped), "success")
    return redirect(url_for("admin.rota_page"))


@bp.post("/rota/absences")
@roles(Role.ADMIN)
def record_absence() -> Response:
    """A physician's absence and cover recorded for them (audited; they are told)."""
    rc = current()
    form = submitted(_absence_form())
    if form.starts_at.data is None or form.ends_at.data is None:
        raise InvalidInput(_("An absence needs a start and an end."))
    cover.mark_absence(rc.session, actor=rc.actor, absent_user_id=form.physician.data,
                       cover_user_id=form.cover.data, starts_local=form.starts_at.data,
                       ends_local=form.ends_at.data, timezone=rc.services.settings.timezone,
                       fold=fold_of(form.fold), now=rc.now)
    flash(_("Absence recorded: the colleague covers their shifts, and the physician is told."),
          "success")
    return redirect(url_for("admin.rota_page"))


@bp.post("/rota/groups")
@roles(Role.ADMIN)
def add_group() -> Response:
    return posted(_rota_forms()[0],
                  lambda rc, form: rota.create_group(rc.session, head_user_id=form.head.data or None,
                                                     actor=rc.actor, name=form.name.data or "", now=rc.now),
                  N_("Group created."), "admin.rota_page")


@bp.post("/rota/destinations")
@roles(Role.ADMIN)
def add_destination() -> Response:
    return posted(_rota_forms()[1],
                  lambda rc, form: rota.create_destination(rc.session, email=form.email.data,
                                                           actor=rc.actor, name=form.name.data or "",
                                                           now=rc.now),
                  N_("Destination created."), "admin.rota_page")


@bp.post("/rota/shifts")
@roles(Role.ADMIN)
def add_shift() -> Response:
    rc = current()
    form = submitted(_rota_forms()[2])
    if form.starts_at.data is None or form.ends_at.data is None:
        raise InvalidInput(_("A shift needs a start and an end."))
    rota.add_shift_local(rc.session, actor=rc.actor, group_id=form.group.data,
                         user_id=form.physician.data, level=form.level.data,
                         starts_local=form.starts_at.data, ends_local=form.ends_at.data,
                         timezone=rc.services.settings.timezone, fold=fold_of(form.fold), now=rc.now)
    flash(_("Shift added."), "success")
    return redirect(url_for("admin.rota_page"))


@bp.post("/rota/shifts/<int:shift_id>/remove")
@roles(Role.ADMIN)
def remove_shift(shift_id: int) -> Response:
    return _one_button(rota.remove_shift, N_("Shift removed."), "admin.rota_page", shift_id=shift_id)


@bp.post("/users/<int:user_id>/reset-mfa")
@roles(Role.ADMIN)
def reset_mfa(user_id: int) -> Response:
    return _one_button(mfa.reset,
                       N_("Second factor reset: the user enrols a new authenticator at next login."),
                       "admin.users", user_id=user_id)
