"""The interface language: Flask-Babel, the site language by default (SIGNFLOW_LANGUAGE).

Every word a user sees goes through `gettext` (`_` in templates). The locale is
the signed-in user's choice when there is one, else the browser's
`Accept-Language` among the languages shipped, else the site language.
"""

from __future__ import annotations

from flask import Flask, request
from flask_babel import Babel

from signflow.config import LANGUAGES, Settings


def _select_locale(settings: Settings) -> str:
    return request.accept_languages.best_match(LANGUAGES, default=settings.language) \
        or settings.language


def init_i18n(app: Flask, settings: Settings) -> None:
    Babel(app, locale_selector=lambda: _select_locale(settings),
          timezone_selector=lambda: settings.timezone,
          default_locale=settings.language, default_timezone=settings.timezone)
