"""Public PKI material and the RFC 3161 time-stamping service."""

from __future__ import annotations

from datetime import timedelta

from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, request

from signflow.core.accounts import ratelimit
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.pades import timestamps
from signflow.core.pki import crl as revocation
from signflow.models import ApiScope
from signflow.web.bearer import bearer_required, caller
from signflow.web.context import current

bp = Blueprint("pki", __name__)

MAX_TSA_REQUEST = 16 * 1024


def _der(data: bytes, mimetype: str) -> Response:
    resp = Response(data, mimetype=mimetype)
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@bp.get("/pki/root.crt")
def root_cert() -> Response:
    rc = current()
    return _der(rc.services.keys.root_cert.public_bytes(Encoding.DER), "application/pkix-cert")


@bp.get("/pki/issuing.crt")
def issuing_cert() -> Response:
    rc = current()
    return _der(rc.services.keys.issuing_cert.public_bytes(Encoding.DER), "application/pkix-cert")


@bp.get("/pki/<any(root, issuing):issuer>.crl")
def crl(issuer: str) -> Response:
    rc = current()
    data = revocation.crl(rc.session, rc.services.keys, issuer=issuer, now=rc.now)
    return _der(data, "application/pkix-crl")


@bp.post("/tsa")
@bearer_required(ApiScope.TIMESTAMP)
def tsa() -> Response:
    """RFC 3161 over HTTP for integration tokens with the `timestamp` scope, at most
    SIGNFLOW_TSA_RATE_PER_MINUTE requests a minute per token (signflow's own
    signatures are stamped in-process, not through here)."""
    rc = current()
    ratelimit.hit(rc.session, f"tsa:{caller().token_id}", limit=rc.settings.tsa_rate_per_minute,
                  window=timedelta(minutes=1), now=rc.now,
                  message="Too many time-stamp requests for this token: wait and try again.")
    if request.mimetype != "application/timestamp-query":
        raise InvalidInput(N_("Send an RFC 3161 request as application/timestamp-query."))
    body = request.get_data(cache=False)
    if len(body) > MAX_TSA_REQUEST:
        raise InvalidInput(N_("Time-stamp request too large."))
    reply = timestamps.tsa_respond(rc.services.keys, body, now=rc.now)
    return Response(reply, mimetype="application/timestamp-reply")
