"""The one place where domain errors become HTTP statuses, and where their messages
(core's English message ids with parameters) are translated for the reader: the
page's language, or for the API the one its Accept-Language asks for (web/i18n.py)."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from signflow.core import errors as e
from signflow.core.i18n import Msg
from signflow.core.integration.submit import KeyReused
from signflow.web.i18n import translate_msg

log = logging.getLogger("signflow.web")

STATUS: dict[type[e.SignflowError], int] = {
    e.DocumentTooLarge: 413,
    e.UnsupportedMediaType: 415,
    KeyReused: 422,
    e.InvalidDocument: 422,
    e.InvalidInput: 400,
    e.AuthenticationFailed: 401,
    e.Throttled: 429,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.WrongPin: 403,
    e.CredentialBlocked: 423,
    e.ServiceUnavailable: 503,
    e.SignatureNotDelivered: 502,
    e.ConfigurationError: 500,
}


def status_for(exc: e.SignflowError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def wants_json() -> bool:
    return request.path.startswith(("/api/", "/tsa")) or request.accept_mimetypes.best == "application/json"


# Stable problem types (RFC 9457): one per error code, whatever the wording of the detail.
PROBLEM_TYPE = "urn:signflow:problem:"
_HTTP_CODES = {400: "bad-request", 401: "authentication-failed", 403: "forbidden",
               404: "not-found", 405: "method-not-allowed", 406: "not-acceptable",
               409: "conflict", 413: "document-too-large", 415: "unsupported-media-type",
               429: "throttled", 500: "internal-error"}


def problem(status: int, title: str, detail: str, code: str | None = None,
            **extensions: object) -> Response:
    code = code or _HTTP_CODES.get(status, f"http-{status}")
    body = {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail,
            **extensions}
    resp = jsonify(body)
    resp.status_code = status
    resp.mimetype = "application/problem+json"
    return resp


def render_error(status: int, title: str, detail: str, code: str | None = None,
                 **extensions: object) -> Response:
    if wants_json():
        return problem(status, title, detail, code, **extensions)
    html = render_template("error.html", status=status, title=title, detail=detail)
    return Response(html, status=status, mimetype="text/html")


def _domain_error(exc: e.SignflowError) -> Response:
    # Committed or rolled back already, by the one transaction policy (web.context).
    status = status_for(exc)
    log.info("refused %s %s: %s (%s)", request.method, request.path, exc.code, status)
    resp = render_error(status, str(_TITLES.get(status, _l("Request refused"))), translated(exc), exc.code,
                        **_limits(status))
    if isinstance(exc, e.Throttled):
        resp.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, e.AuthenticationFailed) and request.path.startswith(("/api/", "/tsa")):
        resp.headers["WWW-Authenticate"] = 'Bearer realm="signflow"'
    if exc.code == "insufficient-scope":
        resp.headers["WWW-Authenticate"] = 'Bearer realm="signflow", error="insufficient_scope"'

    return resp


def _limits(status: int) -> dict[str, object]:
    """A too-large upload's problem says the limit, for a system to split its file."""
    if status != 413:
        return {}
    settings = current_app.extensions["signflow"].settings
    return {"max_bytes": settings.max_upload_bytes}


def translated(exc: e.SignflowError) -> str:
    """The error's message in the reader's language (its English text when untranslated)."""
    return translate_msg(Msg(exc.msgid, exc.params)) if exc.msgid else exc.message


_TITLES = {
    400: _l("Please check the form"), 401: _l("Login failed"), 403: _l("Not allowed"),
    404: _l("Not found"), 405: _l("Not allowed"), 409: _l("Already handled"),
    413: _l("File too large"), 415: _l("Unsupported media type"),
    422: _l("Document refused"), 423: _l("Signing credential blocked"),
    429: _l("Too many attempts"), 502: _l("Signature not delivered"), 503: _l("Service unavailable"),
}
# Werkzeug's own descriptions are English: these replace the common ones.
_DETAILS = {
    400: _l("The browser (or proxy) sent a request that this server could not understand."),
    404: _l("The requested URL was not found on the server. If you entered the URL manually "
            "please check your spelling and try again."),
    405: _l("The method is not allowed for the requested URL."),
    416: _l("The server cannot provide the requested range."),
}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = exc.description or ""
    if status in _DETAILS and detail == type(exc).description:
        detail = str(_DETAILS[status])
    if status == 413:
        settings = current_app.extensions["signflow"].settings
        detail = _("The file is larger than %(mb)s MB, the limit of this site: "
                   "ask for a lighter copy (scanned at 300 dpi or less) or split it into parts "
                   "of at most %(mb)s MB and send each one.", mb=settings.max_upload_mb)
    resp = render_error(status, str(_TITLES.get(status, exc.name)), detail, None, **_limits(status))
    # What the exception says about the response (405's Allow, 416's Content-Range...).
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            resp.headers[name] = value
    return resp


def _csrf_error(exc: CSRFError) -> Response:
    return render_error(400, _("Form expired"),
                        _("The form expired or was tampered with. Reload the page and try again."), "csrf")


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return render_error(500, _("Something went wrong"),
                        _("The error was logged. Nothing was changed; please try again."))


def register(app: Flask) -> None:
    app.register_error_handler(e.SignflowError, _domain_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
