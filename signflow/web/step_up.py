"""Step-up on the sign page: when the last second factor is older than
SIGNFLOW_STEP_UP_MINUTES, the sign form comes back (same page, same document hash,
scrolled to the sign panel) asking for a TOTP code or a passkey with the PIN; nothing
the physician was looking at is lost (core.accounts.step_up decides who is asked)."""

from __future__ import annotations

from flask import current_app, render_template, session
from flask_babel import gettext as _

from signflow.config import OidcProvider
from signflow.core.accounts import factors, step_up
from signflow.core.errors import AuthenticationFailed
from signflow.core.requests import signing as request_signing
from signflow.web.auth import OIDC_LOGOUT, PROVIDER_FACTORS, last_factor_at, mark_factor
from signflow.web.context import current
from signflow.web.forms import ConfirmForm, DeclineForm, DelegateForm, SignForm
from signflow.web.identity import relying_party
from signflow.web.oidc_client import registered


def needed() -> bool:
    rc = current()
    return step_up.needed(rc.session, rc.user, last_factor_at=last_factor_at(), now=rc.now,
                          minutes=rc.settings.step_up_minutes, mfa_roles=rc.settings.mfa_roles)


def _session_provider() -> OidcProvider | None:
    """The identity provider this session logged in through, when its login counted as
    both factors: it can confirm the person again (web/oidc.py, step_up=1)."""
    hint = session.get(OIDC_LOGOUT)
    if not session.get(PROVIDER_FACTORS) or not isinstance(hint, dict):
        return None
    provider = registered(current_app.extensions).get(str(hint.get("provider")))
    return provider.config if provider is not None else None


def review_page(request_id: int, *, posted: SignForm | None = None, problem: str | None = None,
                status: int = 200) -> tuple[str, int]:
    """The physician's page about one request, with the step-up fields on the sign form
    when they are needed. `posted`: the sign form just refused for step-up, whose
    document hash (what the physician was shown) is kept."""
    rc = current()
    view = request_signing.review(rc.session, rc.deps, actor=rc.actor, request_id=request_id,
                                  now=rc.now)
    form = decline = delegate = None
    if view.signing is not None:
        shown = posted.document_sha256.data if posted is not None else None
        # A document that changed since it was shown keeps the old hash: signing is then
        # refused as for any other stale form, never made on bytes not seen.
        if shown is not None and shown != view.signing.document_sha256:
            form = SignForm(formdata=None, activation=posted.activation.data if posted else "",
                            document_sha256=shown)
        else:
            form = SignForm(formdata=None, activation=view.signing.activation_token,
                            document_sha256=view.signing.document_sha256)
        decline = DeclineForm()
        delegate = DelegateForm()
        delegate.to.choices = [(c.id, c.display_name) for c in view.colleagues]
    methods = factors.enrolled(rc.session, rc.user) if needed() else []
    provider = _session_provider() if needed() else None
    if provider is not None:
        methods.append(factors.PROVIDER)
    html = render_template(
        "physician/review.html", req=view.request, form=form, decline=decline, delegate=delegate,
        take=ConfirmForm(), state_message=view.message, signatures=view.signatures,
        step_up=methods, step_up_problem=problem, step_up_minutes=rc.settings.step_up_minutes,
        step_up_provider=provider)
    return html, status


def guard(form: SignForm, request_id: int) -> tuple[str, int] | None:
    """None when the signature may go ahead (fresh factor, or just confirmed on this form);
    otherwise the sign page again, asking for one."""
    rc = current()
    if not form.validate_on_submit() or not needed():
        return None
    code, answer = form.step_up_code.data, form.step_up_passkey.data
    if not code and not answer:
        step_up.record_required(rc.session, actor=rc.actor, request_id=request_id, now=rc.now)
        return review_page(request_id, posted=form, status=401, problem=_(
            "Confirm it is you before signing: your last code or passkey is more than "
            "%(minutes)d minutes old.", minutes=rc.settings.step_up_minutes))
    try:
        step_up.confirm(rc.session, rc.services.keys.master_key, relying_party(), actor=rc.actor,
                        code=code, passkey_response=answer, now=rc.now,
                        throttle_key=rc.deps.login_key, device=session.get("mfa_device"))
    except AuthenticationFailed as exc:
        # The failure (counter, audit entry) is kept: this response commits.
        return review_page(request_id, posted=form, status=401, problem=_(exc.message))
    mark_factor()
    return None
