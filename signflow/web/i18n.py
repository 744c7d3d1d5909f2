"""The interface language: Flask-Babel, the site language by default (SIGNFLOW_LANGUAGE).

Every word a user sees goes through `gettext` (`_` in templates). The locale is,
in order: the signed-in user's choice (`users.language`); the `signflow_language`
cookie that the choice also sets, so that it survives logout and applies on the
login page of that browser; for a visitor not signed in and the API, the
browser's `Accept-Language` among the languages shipped; else the site language.
An unknown code or a malformed header falls back to the site language.
"""

from __future__ import annotations

from flask import Flask, g, request
from flask_babel import Babel, gettext
from flask_login import current_user
from werkzeug.wrappers import Response

from signflow.config import LANGUAGES, Settings
from signflow.core.i18n import TRANSLATIONS_DIR, Msg

COOKIE = "signflow_language"
COOKIE_DAYS = 400  # the longest a browser keeps a cookie (RFC 6265bis)


def _user_language() -> str | None:
    account = g.get("api_user")
    try:
        if account is None and current_user.is_authenticated:
            account = current_user
        chosen = getattr(account, "language", None)
    except Exception:  # noqa: BLE001 - an error page must render even with a broken session
        return None
    return chosen if chosen in LANGUAGES else None


def select_locale(settings: Settings) -> str:
    chosen = _user_language()
    if chosen:
        return chosen
    cookie = request.cookies.get(COOKIE)
    if cookie in LANGUAGES:
        return str(cookie)
    signed_in = g.get("api_user") is None and _is_signed_in()
    if not signed_in:
        best = _browser_language()
        if best:
            return best
    return settings.language


def _browser_language() -> str | None:
    """The first language of Accept-Language (by quality) that signflow ships, its
    region ignored ("fr-FR" is French); None when there is none or the header is junk."""
    try:
        offered = [value for value, quality in request.accept_languages if quality > 0]
    except (ValueError, TypeError):
        return None
    for value in offered:
        base = value.strip().replace("_", "-").split("-")[0].lower()
        if base in LANGUAGES:
            return base
    return None


def _is_signed_in() -> bool:
    try:
        return bool(current_user.is_authenticated)
    except Exception:  # noqa: BLE001 - see _user_language
        return False


def remember_language(response: Response, language: str, *, secure: bool) -> Response:
    """The cookie that keeps a user's choice for this browser after logout."""
    response.set_cookie(COOKIE, language, max_age=COOKIE_DAYS * 86400, secure=secure,
                        httponly=True, samesite="Lax", path="/")
    return response


def init_i18n(app: Flask, settings: Settings) -> None:
    Babel(app, locale_selector=lambda: select_locale(settings),
          timezone_selector=lambda: settings.timezone,
          default_locale=settings.language, default_timezone=settings.timezone,
          default_translation_directories=str(TRANSLATIONS_DIR))

    @app.context_processor
    def _language() -> dict[str, object]:
        from flask_babel import get_locale

        locale = get_locale()
        return {"page_language": locale.language if locale else settings.language}


def page_language() -> str:
    """The language of the current request (what the reader reads)."""
    from flask_babel import get_locale

    locale = get_locale()
    return locale.language if locale else "en"


def _param(value: object) -> object:
    """A parameter in the page's language (core.i18n._param_in, on the request side)."""
    if isinstance(value, Msg):
        return translate_msg(value)
    if isinstance(value, list | tuple):
        return "; ".join(translate_msg(item) if isinstance(item, Msg) else str(gettext(str(item)))
                         for item in value)
    return value


def translate_msg(message: Msg) -> str:
    """A core message id with its parameters, in the page's language; a parameter that
    is a message itself (core.i18n.Msg) reads in the same language."""
    text = str(gettext(message.msgid))
    if not message.params:
        return text
    values = {k: _param(v) for k, v in message.params.items()}
    try:
        return str(text % values)
    except (KeyError, ValueError, TypeError):
        return str(message)
