"""Passkeys and recovery codes: the owner's pages, the passwordless login, the passkey
as second factor at login, and a recovery code in place of a lost second factor.

The browser side is static/passkeys.js (no inline script): it asks for options (JSON),
calls navigator.credentials.create()/get(), and posts the answer back as JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, flash, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from signflow.core.accounts import passkeys, recovery, step_up
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, InvalidInput
from signflow.core.i18n import N_
from signflow.models import PasskeyPurpose
from signflow.web.auth import (
    RECOVERED_AT,
    finish_second_factor,
    last_factor_at,
    pending_account,
    remember_device,
    start_session,
)
from signflow.web.context import current
from signflow.web.forms import FORM_EXPIRED, ConfirmForm, PasskeyForm, RecoveryCodeForm, submitted
from signflow.web.guards import login_required, safe_next

bp = Blueprint("identity", __name__)


def relying_party() -> passkeys.RelyingParty:
    return passkeys.RelyingParty.from_base_url(current().settings.base_url)


def _json_body() -> dict[str, object]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput(N_("The browser's passkey answer is malformed."))
    return body


def _answer(body: dict[str, object]) -> str:
    credential = body.get("credential")
    if not isinstance(credential, str) or len(credential) > 16000:
        raise InvalidInput(N_("The browser's passkey answer is malformed."))
    return credential


def _options(raw_json: str) -> Response:
    return Response(raw_json, mimetype="application/json")


@bp.get("/account/passkeys")
@login_required
def passkeys_page() -> str:
    rc = current()
    return render_template("account/passkeys.html", form=PasskeyForm(), revoke=ConfirmForm(),
                           passkeys=passkeys.all_passkeys(rc.session, rc.user.id))


def _require_enrolment_allowed() -> None:
    rc = current()
    recovered = session.get(RECOVERED_AT)
    step_up.require_enrolment_allowed(
        rc.session, rc.user, last_factor_at=last_factor_at(),
        recovered_at=datetime.fromtimestamp(float(recovered), UTC) if recovered is not None else None,
        now=rc.now, minutes=rc.settings.step_up_minutes)


@bp.post("/account/passkeys/options")
@login_required
def passkey_options() -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    _require_enrolment_allowed()
    return _options(passkeys.registration_options(rc.session, relying_party(), actor=rc.actor,
                                                  now=rc.now))


@bp.post("/account/passkeys")
@login_required
def passkey_register() -> Response:
    rc = current()
    _require_enrolment_allowed()
    body = _json_body()
    name = body.get("name")
    row = passkeys.register(rc.session, relying_party(), actor=rc.actor, response_json=_answer(body),
                            name=name if isinstance(name, str) else "", now=rc.now)
    flash(_("Passkey “%(name)s” added.", name=row.name), "success")
    return jsonify(redirect=url_for("identity.passkeys_page"))


@bp.post("/account/passkeys/<int:passkey_id>/revoke")
@login_required
def passkey_revoke(passkey_id: int) -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    row = passkeys.revoke(rc.session, actor=rc.actor, passkey_id=passkey_id, now=rc.now)
    flash(_("Passkey “%(name)s” removed: it no longer works.", name=row.name), "success")
    return redirect(url_for("identity.passkeys_page"))


@bp.post("/account/step-up/options")
@login_required
def step_up_options() -> Response:
    """Options for a passkey on the sign page; its answer goes with the sign form."""
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    return _options(passkeys.authentication_options(
        rc.session, relying_party(), purpose=PasskeyPurpose.STEP_UP, user_id=rc.user.id,
        now=rc.now))


@bp.route("/account/recovery-codes", methods=["GET", "POST"])
@login_required
def recovery_codes() -> str:
    rc = current()
    form = ConfirmForm()
    if form.validate_on_submit():
        codes = recovery.generate(rc.session, rc.services.keys.master_key, actor=rc.actor,
                                  now=rc.now)
        # Shown once, on this page only (never in the session cookie or a flash).
        return render_template("account/recovery_codes.html", codes=codes, form=form,
                               remaining=len(codes))
    return render_template("account/recovery_codes.html", codes=None, form=form,
                           remaining=recovery.remaining(rc.session, rc.user.id),
                           has_codes=recovery.has_codes(rc.session, rc.user.id))


@bp.post("/login/passkey/options")
def login_options() -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    return _options(passkeys.authentication_options(rc.session, relying_party(),
                                                    purpose=PasskeyPurpose.LOGIN, user_id=None,
                                                    now=rc.now))


@bp.post("/login/passkey")
def login_passkey() -> Response:
    """Passwordless: a passkey with user verification is both factors (possession and
    the phone's PIN or biometrics), for the roles that may use it."""
    rc = current()
    account = passkeys.authenticate(rc.session, relying_party(), purpose=PasskeyPurpose.LOGIN,
                                    user_id=None, response_json=_answer(_json_body()), now=rc.now,
                                    ip=rc.ip)
    passkeys.record_login(rc.session, actor=Actor.of(account, rc.ip), factors=["passkey"],
                          now=rc.now, throttle_key=rc.deps.login_key)
    target = safe_next(request.args.get("next")) or url_for("auth.home")
    session.clear()
    start_session(account, fresh_factor=True)
    return remember_device(jsonify(redirect=target), account)


@bp.post("/login/code/passkey/options")
def second_factor_options() -> Response:
    rc = current()
    submitted(ConfirmForm(), FORM_EXPIRED)
    account = pending_account()
    if account is None:
        raise AuthenticationFailed(N_("Your login took too long: start again."))
    return _options(passkeys.authentication_options(
        rc.session, relying_party(), purpose=PasskeyPurpose.SECOND_FACTOR, user_id=account.id,
        now=rc.now))


@bp.post("/login/code/passkey")
def second_factor_passkey() -> Response:
    rc = current()
    account = pending_account()
    if account is None:
        raise AuthenticationFailed(N_("Your login took too long: start again."))
    passkeys.authenticate(rc.session, relying_party(), purpose=PasskeyPurpose.SECOND_FACTOR,
                          user_id=account.id, response_json=_answer(_json_body()), now=rc.now,
                          ip=rc.ip)
    passkeys.record_login(rc.session, actor=Actor.of(account, rc.ip),
                          factors=["password", "passkey"], now=rc.now,
                          throttle_key=rc.deps.login_key, device=session.get("mfa_device"))
    return _as_json(finish_second_factor(account, fresh_factor=True))


def _as_json(resp: Response) -> Response:
    """A redirect turned into the JSON the script follows (cookies kept)."""
    out = jsonify(redirect=resp.headers["Location"])
    for value in resp.headers.getlist("Set-Cookie"):
        out.headers.add("Set-Cookie", value)
    return out


@bp.post("/login/recovery")
def second_factor_recovery() -> Response:
    """A recovery code in place of the second factor (lost phone): it logs in, but is no
    fresh factor for signing; the user is sent to set up a new one."""
    rc = current()
    if current_user.is_authenticated:
        return redirect(url_for("auth.home"))
    account = pending_account()
    if account is None:
        return redirect(url_for("auth.login"))
    form = submitted(RecoveryCodeForm())
    left = recovery.use(rc.session, rc.services.keys.master_key, actor=Actor.of(account, rc.ip),
                        code=form.code.data or "", now=rc.now, throttle_key=rc.deps.login_key,
                        device=session.get("mfa_device"))
    resp = finish_second_factor(account, fresh_factor=False)
    session[RECOVERED_AT] = rc.now.timestamp()
    flash(_("Recovery code accepted: %(left)d left. Set up a new passkey or authenticator "
            "now, and make new codes if you are running out.", left=left), "info")
    return resp

