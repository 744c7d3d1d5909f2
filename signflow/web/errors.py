"""The one place where domain errors become HTTP statuses."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from signflow.core import errors as e
from signflow.core.integration.submit import KeyReused

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
    resp = render_error(status, _TITLES.get(status, "Request refused"), exc.message, exc.code,
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


_TITLES = {
    400: "Please check the form", 401: "Login failed", 403: "Not allowed", 404: "Not found",
    405: "Not allowed", 409: "Already handled", 413: "File too large",
    415: "Unsupported media type", 422: "Document refused",
    423: "Signing credential blocked", 429: "Too many attempts", 502: "Signature not delivered",
    503: "Service unavailable",
}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = exc.description or ""
    if status == 413:
        settings = current_app.extensions["signflow"].settings
        detail = (f"The file is larger than {settings.max_upload_mb} MB, the limit of this site: "
                  "ask for a lighter copy (scanned at 300 dpi or less) or split it into parts "
                  f"of at most {settings.max_upload_mb} MB and send each one.")
    resp = render_error(status, _TITLES.get(status, exc.name), detail, None, **_limits(status))
    # What the exception says about the response (405's Allow, 416's Content-Range...).
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            resp.headers[name] = value
    return resp


def _csrf_error(exc: CSRFError) -> Response:
    return render_error(400, "Form expired",
                        "The form expired or was tampered with. Reload the page and try again.", "csrf")


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return render_error(500, "Something went wrong",
                        "The error was logged. Nothing was changed; please try again.")


def register(app: Flask) -> None:
    app.register_error_handler(e.SignflowError, _domain_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
