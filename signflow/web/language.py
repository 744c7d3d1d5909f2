"""The interface language a person chooses (`/account/language`): kept on the user
and in a cookie, so that it still applies on the login page after logout."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import force_locale
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from signflow.core.accounts import users as accounts
from signflow.web.context import current
from signflow.web.forms import LanguageForm, submitted
from signflow.web.guards import login_required
from signflow.web.i18n import COOKIE, remember_language

bp = Blueprint("language", __name__, url_prefix="/account/language")


@bp.get("/")
@login_required
def page() -> str:
    rc = current()
    form = LanguageForm(language=rc.user.language or "")
    return render_template("account/language.html", form=form, site_language=rc.settings.language)


@bp.post("/")
@login_required
def choose() -> Response:
    rc = current()
    form = submitted(LanguageForm())
    chosen = form.language.data or None
    user = accounts.choose_language(rc.session, actor=rc.actor, language=chosen, now=rc.now)
    shown = user.language or rc.settings.language
    # The confirmation already reads in the language just chosen.
    with force_locale(shown):
        flash(_("Language saved."), "success")
    response = redirect(url_for("language.page"))
    if chosen:
        return remember_language(response, chosen, secure=rc.settings.production)
    response.delete_cookie(COOKIE, path="/")
    return response
