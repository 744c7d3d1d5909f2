"""Security headers on every response."""

from __future__ import annotations

from flask import Flask, Response, request

from signflow.web.context import current

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def _secure(response: Response) -> Response:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Frame-Options"] = "DENY"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if current().settings.production:
        h["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    # Everything but static assets and public PKI material is personal or medical.
    if not (request.endpoint or "").startswith(("static", "pki.")):
        h["Cache-Control"] = "no-store"
        h["Pragma"] = "no-cache"
    return response


def register(app: Flask) -> None:
    app.after_request(_secure)
