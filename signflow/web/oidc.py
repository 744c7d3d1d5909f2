"""Log in with an OpenID Provider (Pro Santé Connect...): the login page's button starts
the authorization request, the provider sends the browser back to the callback. The
protocol is the client's (web/oidc_client.py), the account decision core's
(core/accounts/federation.py); this keeps the pending login in the signed session,
single use, and starts the session as a password login would."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from signflow.core.accounts import factors, federation
from signflow.core.errors import AuthenticationFailed
from signflow.core.i18n import N_
from signflow.web import auth
from signflow.web.context import current
from signflow.web.guards import safe_next
from signflow.web.oidc_client import IdentityProvider, Started, registered

bp = Blueprint("oidc", __name__)
PENDING = "oidc_pending"
# A login left at the provider's page longer than this starts again.
PENDING_SECONDS = 600


def _provider(name: str) -> IdentityProvider:
    provider = registered(current_app.extensions).get(name)
    if provider is None:
        abort(404)
    return provider


def _callback_url(name: str) -> str:
    # The base URL, not the Host header: the provider only knows the registered address.
    return current().settings.base_url.rstrip("/") + url_for("oidc.callback", name=name)


# A link, not a form: the page's CSP (form-action 'self') would stop a form's redirect to
# the provider, and starting a login is harmless; the callback is what `state` guards.
@bp.get("/login/oidc/<name>")
def start(name: str) -> Response:
    provider = _provider(name)
    # A step-up before signing: the signed-in person authenticates again at the provider
    # and comes back to the page they were on, still signed in.
    step_up = request.args.get("step_up") == "1" and current_user.is_authenticated
    started = provider.begin(_callback_url(name), fresh=step_up)
    session[PENDING] = {"provider": name, "state": started.state, "nonce": started.nonce,
                        "code_verifier": started.code_verifier, "redirect_uri": started.redirect_uri,
                        "at": current().now.timestamp(), "step_up": step_up,
                        "next": safe_next(request.args.get("next")) or url_for("auth.home")}
    return redirect(started.url)


def _pending(name: str) -> dict[str, Any]:
    # Popped whatever follows: a state is good for one callback (a reload or a replayed
    # link finds nothing), and the provider's code is single use as well.
    pending = session.pop(PENDING, None)
    if (not isinstance(pending, dict) or pending.get("provider") != name
            or current().now.timestamp() - float(pending.get("at", 0)) > PENDING_SECONDS):
        raise AuthenticationFailed(N_("This login is not under way any more (the link was already "
                                      "used, or it is too old): start again from the login page."))
    return pending


def _text(value: object) -> str:
    return " ".join(str(value).split())[:100] if isinstance(value, str) else ""


def _assertion(provider: IdentityProvider, claims: dict[str, Any]) -> federation.Assertion:
    config = provider.config
    subject = claims.get(config.subject_claim)
    if not isinstance(subject, str | int) or not str(subject).strip():
        raise AuthenticationFailed(N_("%(label)s did not send your professional id, so signflow "
                                      "cannot tell who you are."), params={"label": config.label})
    acr = claims.get("acr")
    acr = str(acr) if acr is not None else None
    return federation.Assertion(
        provider=config.name, subject=str(subject).strip(),
        professional_id=federation.professional_id_of(str(subject), config.professional_id_prefix),
        acr=acr, label=config.label, both_factors=acr is not None and acr in config.two_factor_acr)


@bp.get("/login/oidc/<name>/callback")
def callback(name: str) -> Response:
    rc = current()
    provider = _provider(name)
    pending = _pending(name)
    started = Started(url="", state=pending["state"], nonce=pending["nonce"],
                      code_verifier=pending["code_verifier"], redirect_uri=pending["redirect_uri"])
    verified = provider.finish(started, request.args)
    claims, config = verified.claims, provider.config
    if pending.get("step_up"):
        if not current_user.is_authenticated:
            raise AuthenticationFailed(N_("Your session ended while you were at the provider: log in again."))
        federation.confirm_step_up(rc.session, _assertion(provider, claims), actor=rc.actor, now=rc.now)
        auth.mark_factor()
        return redirect(safe_next(str(pending["next"])) or url_for("auth.home"))
    person = federation.Person(given_name=_text(claims.get(config.given_name_claim)),
                               family_name=_text(claims.get(config.family_name_claim)),
                               email=_text(claims.get(config.email_claim)) or None)
    outcome = federation.sign_in(rc.session, _assertion(provider, claims), now=rc.now, ip=rc.ip,
                                 enrol_as=config.self_enrol_role, person=person)
    account, target = outcome.user, str(pending["next"])
    # A fresh session at login: nothing from before survives (fixation).
    session.clear()
    if outcome.awaiting_approval:
        flash(_("Your signflow account is created and awaits an administrator's approval: you "
                "can log in once it is approved."), "info")
        return redirect(url_for("auth.login"))
    logout_hint = {"provider": name, "id_token": verified.id_token}
    if not outcome.both_factors and factors.has_second_factor(rc.session, account):
        session["mfa_pending"] = account.get_id()
        session["mfa_started"] = rc.now.timestamp()
        session["mfa_next"] = target
        session[auth.OIDC_LOGOUT] = logout_hint
        return redirect(url_for("auth.second_factor"))
    auth.start_session(account, fresh_factor=outcome.both_factors)
    session[auth.OIDC_LOGOUT] = logout_hint
    if outcome.both_factors:
        session[auth.PROVIDER_FACTORS] = True
    return auth.remember_device(redirect(safe_next(target) or url_for("auth.home")), account)
