"""JSON API under /api/v1: integration accounts' bearer tokens only (no cookies, hence
no CSRF); each endpoint needs one scope (web.bearer) and counts against the token's
rate limit. Errors are RFC 9457 problem documents (web.errors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request, url_for
from flask_babel import gettext as _

from signflow.core.errors import InvalidInput, UnsupportedMediaType
from signflow.core.i18n import N_
from signflow.core.integration import fhir as fhir
from signflow.core.integration import queries as queries
from signflow.core.integration import submit as submitting
from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.core.stats import report as stats
from signflow.models import ApiScope, SignatureRequest
from signflow.web.bearer import bearer_required, caller
from signflow.web.context import current
from signflow.web.documents import attachment
from signflow.web.openapi import OPENAPI, SUBMIT_FIELDS
from signflow.web.stats import current_report

bp = Blueprint("api", __name__, url_prefix="/api/v1")
F = TypeVar("F", bound=Callable[..., Any])


def api_call(scope: ApiScope) -> Callable[[F], F]:
    return bearer_required(scope, rate_limited=True)


def _summary(req: SignatureRequest) -> dict[str, Any]:
    rc = current()
    return {
        "id": req.id, "title": req.title, "state": req.state, "urgency": req.urgency,
        "group": req.group.name, "destination": req.destination.name,
        "external_reference": submitting.reference_of(rc.session, req.id),
        "document_sha256": req.document_sha256, "signed_sha256": req.signed_sha256,
        "signed_by": req.signed_by.display_name if req.signed_by else None,
        "signed_at": req.signed_at.isoformat() if req.signed_at else None,
        "acknowledged_at": req.acknowledged_at.isoformat() if req.acknowledged_at else None,
        "created_at": req.created_at.isoformat(),
    }


@bp.get("/requests")
@api_call(ApiScope.READ)
def list_requests() -> Response:
    rc = current()
    args = request.args
    page = queries.list_page(
        rc.session, user=rc.user, now=rc.now, cursor=args.get("cursor") or None,
        limit=queries.page_size(args.get("limit")),
        filters=queries.parse_filters(args.get("state"), args.get("external_reference"),
                                      args.get("created_after")))
    return jsonify({"items": [_summary(r) for r in page.items], "next_cursor": page.next_cursor})


@bp.post("/requests")
@api_call(ApiScope.SUBMIT)
def submit() -> tuple[Response, int]:
    """A submitting system sends a PDF to its on-call group (multipart/form-data)."""
    rc = current()
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(_("Send the request as multipart/form-data, the PDF in the "
                                     "field 'document'."))
    upload = request.files.get("document")
    if upload is None:
        raise InvalidInput(N_("Send the PDF as the multipart field 'document'."))
    settings = rc.settings
    rules = submitting.UploadRules(
        max_bytes=settings.max_upload_bytes, max_pages=settings.max_pages,
        active_content=settings.active_content, allow_signed=settings.allow_countersign,
        sandbox=rc.services.sandbox)
    sent = submitting.Submission(
        data=upload.read(settings.max_upload_bytes + 1), filename=upload.filename or "",
        fields={k: v for k, v in request.form.items() if k in SUBMIT_FIELDS})
    result = submitting.submit(
        rc.session, rc.deps, actor=rc.actor, now=rc.now, token_id=caller().token_id,
        key=submitting.idempotency_key(request.headers.get("Idempotency-Key")),
        submission=sent, rules=rules)
    resp = jsonify(_summary(result.request))
    resp.headers["Location"] = url_for("api.get_request", request_id=result.request.id)
    if result.replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp, 201


@bp.get("/requests/<int:request_id>")
@api_call(ApiScope.READ)
def get_request(request_id: int) -> Response:
    rc = current()
    req = access.get_request(rc.session, user=rc.user, request_id=request_id, now=rc.now)
    return jsonify(_summary(req))


@bp.get("/requests/<int:request_id>/timeline")
@api_call(ApiScope.READ)
def timeline(request_id: int) -> Response:
    rc = current()
    steps = queries.timeline(rc.session, user=rc.user, request_id=request_id, now=rc.now)
    return jsonify({"id": request_id,
                    "events": [{"at": s.at.isoformat(), "event": s.event} for s in steps]})


@bp.get("/requests/<int:request_id>/verification")
@api_call(ApiScope.READ)
def verification(request_id: int) -> Response:
    rc = current()
    report = request_signing.verify_document(rc.session, rc.deps, user=rc.user,
                                             request_id=request_id, now=rc.now)
    return jsonify(report.as_json())


@bp.get("/requests/<int:request_id>/document")
@api_call(ApiScope.DOWNLOAD)
def document(request_id: int) -> Response:
    rc = current()
    doc = access.document_for(rc.session, rc.deps, actor=rc.actor, request_id=request_id, now=rc.now,
                              download=True)
    resp = attachment(doc.data, doc.filename)
    resp.headers["Digest"] = f"sha-256={doc.sha256}"
    return resp


@bp.get("/requests/<int:request_id>/fhir")
@api_call(ApiScope.READ)
def fhir_bundle(request_id: int) -> Response:
    """The signed document as a FHIR R4 Bundle (DocumentReference + Provenance)."""
    rc = current()
    bundle = fhir.bundle_for(rc.session, rc.deps, user=rc.user, request_id=request_id, now=rc.now,
                             base_url=rc.settings.base_url)
    return Response(bundle, mimetype="application/fhir+json")


@bp.post("/requests/<int:request_id>/acknowledge")
@api_call(ApiScope.ACKNOWLEDGE)
def acknowledge(request_id: int) -> Response:
    rc = current()
    req = workflow.acknowledge_receipt(rc.session, rc.deps, actor=rc.actor, request_id=request_id,
                                       now=rc.now)
    return jsonify(_summary(req))


@bp.get("/stats")
@bearer_required(ApiScope.STATS)
def statistics() -> Response:
    """The manager's dashboard figures (same query string: from, to, group)."""
    return jsonify(stats.as_json(current_report()))


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(OPENAPI)
