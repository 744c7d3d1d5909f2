"""Login, logout, and the landing page of each role."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from signflow.core.accounts import directory_login, factors, mfa, recovery
from signflow.core.accounts import users as accounts
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, InvalidInput
from signflow.core.i18n import N_
from signflow.models import Role, User
from signflow.web.context import current
from signflow.web.forms import CodeForm, ConfirmForm, LoginForm, PasswordForm, RecoveryCodeForm
from signflow.web.guards import login_required, safe_next
from signflow.web.i18n import remember_language
from signflow.web.oidc_client import registered

bp = Blueprint("auth", __name__)
MFA_WINDOW_SECONDS = 300
# OWASP "device cookies": a browser that completed a full login for an account
# carries `name:nonce:hmac`; the throttle then counts it apart from strangers.
DEVICE_COOKIE = "signflow_device"
DEVICE_COOKIE_DAYS = 365

HOME = {
    Role.TECHNICIAN: "technician.index",
    Role.PHYSICIAN: "physician.inbox",
    Role.RECIPIENT: "destination.inbox",
    Role.AUDITOR: "auditor.index",
    Role.ADMIN: "admin.users",
    Role.MANAGER: "stats.index",
}


@bp.get("/")
def home() -> Response:
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    return redirect(url_for(HOME[Role(current_user.role)]))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    rc = current()
    form = LoginForm()
    directory = rc.services.directory
    local = rc.settings.local_login
    if (local or directory is not None) and form.validate_on_submit():
        username = form.username.data or ""
        device = _known_device(username)
        if directory is not None and (form.source.data != "local" or not local):
            account = directory_login.authenticate(
                rc.session, directory, group_roles=rc.services.directory_roles, username=username,
                password=form.password.data or "", now=rc.now, ip=rc.ip,
                throttle_key=rc.deps.login_key, device=device,
            )
        elif local:
            account = accounts.authenticate(
                rc.session, username=username, password=form.password.data or "",
                now=rc.now, ip=rc.ip, throttle_key=rc.deps.login_key, device=device,
            )
        else:
            raise AuthenticationFailed(N_("Log in with your hospital account."))
        # A fresh session at login: nothing from before survives (fixation).
        session.clear()
        target = safe_next(request.args.get("next")) or url_for("auth.home")
        if factors.has_second_factor(rc.session, account):
            session["mfa_pending"] = account.get_id()
            session["mfa_started"] = rc.now.timestamp()
            session["mfa_next"] = target
            if device:
                session["mfa_device"] = device
            return redirect(url_for("auth.second_factor"))
        start_session(account, fresh_factor=False)
        return remember_device(redirect(target), account)
    return render_template("auth/login.html", form=form, passkey_login=True,
                           directory=directory is not None, local=local,
                           providers=[p.config for p in registered(current_app.extensions).values()])


def _device_signature(username: str, nonce: str) -> str:
    key = hmac.new(current().deps.login_key, b"device-cookie", hashlib.sha256).digest()
    return hmac.new(key, f"{username}:{nonce}".encode(), hashlib.sha256).hexdigest()


def _known_device(typed_username: str) -> str | None:
    """The device id of a valid device cookie issued for `typed_username`, if any."""
    raw = request.cookies.get(DEVICE_COOKIE, "")
    parts = raw.split(":")
    if len(parts) != 3:
        return None
    username, nonce, signature = parts
    if username != typed_username.strip().lower() or not nonce:
        return None
    if not hmac.compare_digest(signature, _device_signature(username, nonce)):
        return None
    return nonce


def remember_device(resp: Response, account: User) -> Response:
    """After a full login: this browser is now a known device for `account`."""
    nonce = secrets.token_urlsafe(18)
    resp.set_cookie(
        DEVICE_COOKIE, f"{account.username}:{nonce}:{_device_signature(account.username, nonce)}",
        max_age=DEVICE_COOKIE_DAYS * 86400, path="/login", httponly=True, samesite="Lax",
        secure=current().settings.production,
    )
    if account.language:
        # The account's language also becomes this browser's, for its login page.
        remember_language(resp, account.language, secure=current().settings.production)
    return resp


def start_session(account: User, *, fresh_factor: bool) -> None:
    """Log `account` in; `fresh_factor`: a second factor (TOTP, passkey) was just used."""
    rc = current()
    login_user(account)
    session.permanent = True
    session["login_at"] = rc.now.timestamp()
    if fresh_factor:
        mark_factor()


# A session opened through an OpenID Provider: its name and the id_token, the hint
# its end_session_endpoint asks for at logout.
OIDC_LOGOUT = "oidc_logout"
# Set when that provider's login counted as both factors (its acr).
PROVIDER_FACTORS = "provider_factors"
# The time of the last second factor (TOTP or passkey) lives in the login state, which
# the secret key signs: step-up before signing reads it (core.accounts.step_up).
FACTOR_AT = "factor_at"
# When a recovery code stood in for the second factor in this login: enrolling a new
# passkey right after is allowed (the lost phone), as after a fresh factor.
RECOVERED_AT = "recovered_at"


def mark_factor() -> None:
    session[FACTOR_AT] = current().now.timestamp()


def last_factor_at() -> datetime | None:
    raw = session.get(FACTOR_AT)
    return datetime.fromtimestamp(float(raw), UTC) if raw is not None else None


def pending_account() -> User | None:
    """The account whose password was accepted a moment ago and whose second factor is
    awaited; None (and the half-finished login dropped) when there is none or it is stale."""
    rc = current()
    pending = session.get("mfa_pending")
    started = float(session.get("mfa_started", 0))
    account = accounts.load_session_user(rc.session, pending) if pending else None
    if account is None or rc.now.timestamp() - started > MFA_WINDOW_SECONDS:
        # Only the half-finished login is dropped: a cross-site GET must not log anyone out.
        for key in ("mfa_pending", "mfa_started", "mfa_next", "mfa_device"):
            session.pop(key, None)
        return None
    return account


def finish_second_factor(account: User, *, fresh_factor: bool) -> Response:
    """The second factor was right: the real session starts, back where the user was going."""
    target = session.get("mfa_next") or url_for("auth.home")
    hint = session.get(OIDC_LOGOUT)
    session.clear()
    start_session(account, fresh_factor=fresh_factor)
    if hint is not None:
        session[OIDC_LOGOUT] = hint
    return remember_device(redirect(safe_next(target) or url_for("auth.home")), account)


@bp.route("/login/code", methods=["GET", "POST"])
def second_factor() -> Response | str:
    rc = current()
    if current_user.is_authenticated:
        return redirect(url_for("auth.home"))
    account = pending_account()
    if account is None:
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if form.validate_on_submit():
        mfa.verify(rc.session, rc.services.keys.master_key, actor=Actor.of(account, rc.ip),
                   code=form.code.data or "", now=rc.now, throttle_key=rc.deps.login_key,
                   device=session.get("mfa_device"))
        return finish_second_factor(account, fresh_factor=True)
    return render_template("auth/code.html", form=form, recovery=RecoveryCodeForm(),
                           methods=factors.enrolled(rc.session, account),
                           has_recovery=recovery.has_codes(rc.session, account.id))


@bp.route("/account/two-factor", methods=["GET", "POST"])
@login_required
def setup_mfa() -> Response | str:
    rc = current()
    account = rc.user
    if account.totp_secret_enc is not None:
        flash(_("Two-factor authentication is on."), "info")
        return redirect(url_for("auth.home"))
    master_key = rc.services.keys.master_key
    form = CodeForm()
    if form.validate_on_submit() and "mfa_setup" in session:
        sealed = base64.b64decode(session["mfa_setup"])
        mfa.enable(rc.session, master_key, actor=Actor.of(account, rc.ip), sealed_secret=sealed,
                   code=form.code.data or "", now=rc.now)
        session.pop("mfa_setup", None)
        # The code just typed proves the new authenticator is at hand: a fresh factor.
        mark_factor()
        flash(_("Two-factor authentication is on."), "success")
        return redirect(url_for("auth.home"))
    # The seed travels in the (signed) session only sealed by the master key.
    secret = mfa.new_secret()
    session["mfa_setup"] = base64.b64encode(mfa.seal_secret(master_key, account, secret)).decode()
    return render_template("auth/setup_mfa.html", form=form, secret=secret,
                           uri=mfa.provisioning_uri(secret, account))


# What a user who must enrol a second factor may still reach: either kind of enrolment.
ENROLMENT_ENDPOINTS = frozenset({
    "auth.setup_mfa", "auth.change_password", "auth.logout", "static", "identity.passkeys_page",
    "identity.passkey_options", "identity.passkey_register",
})


def require_second_factor() -> Response | None:
    """Roles that must use a second factor cannot do anything before enrolling one."""
    rc = current()
    if not current_user.is_authenticated or current_user.totp_secret_enc is not None:
        return None
    if not mfa.required_for(current_user, rc.services.settings.mfa_roles):
        return None
    if session.get(PROVIDER_FACTORS):
        # The OpenID Provider's login stood for both factors (acr eidas1...).
        return None
    if request.endpoint in ENROLMENT_ENDPOINTS:
        return None
    if factors.has_second_factor(rc.session, current_user._get_current_object()):
        return None
    return redirect(url_for("auth.setup_mfa"))


def require_own_password() -> Response | None:
    """A password someone else chose works once: nothing but choosing one's own (or
    logging out) until then."""
    if not current_user.is_authenticated or not current_user.must_change_password:
        return None
    if request.endpoint in ("auth.change_password", "auth.logout", "static"):
        return None
    return redirect(url_for("auth.change_password"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password() -> Response | str:
    rc = current()
    form = PasswordForm()
    forced = bool(rc.user.must_change_password)
    if form.validate_on_submit():
        if form.password.data != form.confirm.data:
            raise InvalidInput(N_("The two new passwords differ."))
        account = accounts.change_password(rc.session, actor=rc.actor,
                                           current_password=form.current.data or "",
                                           new_password=form.password.data or "", now=rc.now)
        # Every other session ended with the change; this one goes on.
        started = session.get("login_at")
        login_user(account)
        session["login_at"] = started
        flash(_("Your password is changed."), "success")
        return redirect(url_for("auth.home"))
    return render_template("auth/password.html", form=form, forced=forced)


@bp.post("/logout")
@login_required
def logout() -> Response | str:
    rc = current()
    form = ConfirmForm()
    if form.validate_on_submit():
        accounts.logout(rc.session, actor=rc.actor, now=rc.now)
        provider_logout = _provider_logout_url(session.get(OIDC_LOGOUT))
        logout_user()
        session.clear()
        if provider_logout:
            # Logged out here, then at the provider, which sends the browser back to /login.
            # A page, not a redirect: this form's CSP (form-action 'self') would stop one.
            return render_template("auth/provider_logout.html", url=provider_logout)
    return redirect(url_for("auth.login"))


def _provider_logout_url(hint: object) -> str | None:
    """The provider's end_session_endpoint (id_token_hint, back to our login page), when
    the session came from one that has it."""
    if not isinstance(hint, dict):
        return None
    provider = registered(current_app.extensions).get(str(hint.get("provider")))
    if provider is None:
        return None
    back = current().settings.base_url.rstrip("/") + url_for("auth.login")
    return provider.logout_url(str(hint.get("id_token")), back)
