"""create_app(): the composition root. Nothing is built at import time."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from signflow import logs
from signflow.config import (
    Settings,
    load_settings,
    require_public_base_url,
    require_secret_key,
    require_vapid_key,
)
from signflow.services import Services, build_services, require_notification_channel
from signflow.web import oidc_client
from signflow.web.i18n import init_i18n
from signflow.web.ids import IdConverter

PACKAGE_DIR = Path(__file__).resolve().parent


def _template_folder() -> str:
    # Source checkout: templates/ at the repository root; wheel: signflow/templates.
    for candidate in (PACKAGE_DIR.parent / "templates", PACKAGE_DIR / "templates"):
        if (candidate / "base.html").is_file():
            return str(candidate)
    raise RuntimeError("signflow templates are missing from this installation")


def create_app(
    settings: Settings | None = None, *, services: Services | None = None, **overrides: Any
) -> Flask:
    settings = settings or load_settings(**overrides)
    secret_key = require_secret_key(settings)
    require_notification_channel(settings)
    require_public_base_url(settings)
    require_vapid_key(settings)
    services = services or build_services(settings)

    app = Flask(
        "signflow",
        template_folder=_template_folder(),
        static_folder=str(PACKAGE_DIR / "static"),
        instance_path=str(settings.instance_path),
    )
    # Before any blueprint: every `<int:...>` route takes ids a table can hold only.
    app.url_map.converters["int"] = IdConverter
    production = settings.production
    app.config.update(
        SECRET_KEY=secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 64 * 1024,  # room for the other fields
        SESSION_COOKIE_NAME="__Host-signflow" if production else "signflow_session",
        SESSION_COOKIE_SECURE=production,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        REMEMBER_COOKIE_DURATION=timedelta(seconds=0),
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_idle_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,
        WTF_CSRF_TIME_LIMIT=None,  # the session's own timeouts bound it
        WTF_CSRF_SSL_STRICT=production,
        TESTING=settings.env == "testing",
        SIGNFLOW=settings,
    )
    app.extensions["signflow"] = services
    # The OpenID Providers' clients, built once (discovery is fetched at first use).
    app.extensions[oidc_client.EXTENSION] = oidc_client.build(settings.oidc_providers)
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)

    init_i18n(app, settings)
    csrf = CSRFProtect(app)
    from signflow.web import api, pki_routes, register

    register(app)
    if not app.testing:
        logs.configure()
    # Bearer-token API and the TSA take no cookies, so there is nothing to forge.
    csrf.exempt(api.bp)
    csrf.exempt(pki_routes.bp)
    _quiet_pyhanko()
    return app


def _quiet_pyhanko() -> None:
    # pyHanko logs validation failures with tracebacks at WARNING/ERROR: the
    # result is reported through our own report, not through the log.
    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
