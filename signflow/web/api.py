"""JSON API under /api/v1: integration accounts' bearer tokens only (no cookies, hence
no CSRF); each endpoint needs one scope (web.bearer)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow as workflow
from signflow.models import ApiScope, SignatureRequest, Urgency
from signflow.web.bearer import bearer_required
from signflow.web.context import current
from signflow.web.documents import attachment

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _summary(req: SignatureRequest) -> dict[str, Any]:
    return {
        "id": req.id, "title": req.title, "state": req.state, "urgency": req.urgency,
        "group": req.group.name, "destination": req.destination.name,
        "document_sha256": req.document_sha256, "signed_sha256": req.signed_sha256,
        "signed_by": req.signed_by.display_name if req.signed_by else None,
        "signed_at": req.signed_at.isoformat() if req.signed_at else None,
        "acknowledged_at": req.acknowledged_at.isoformat() if req.acknowledged_at else None,
        "created_at": req.created_at.isoformat(),
    }


@bp.get("/requests")
@bearer_required(ApiScope.READ)
def list_requests() -> Response:
    rc = current()
    items = access.list_requests(rc.session, user=rc.user, now=rc.now)
    return jsonify({"items": [_summary(r) for r in items]})


def _form_id(name: str) -> int:
    raw = request.form.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInput(N_("'%(name)s' must be an id (a positive integer)."), params={'name': name})
    return int(raw)


@bp.post("/requests")
@bearer_required(ApiScope.SUBMIT)
def submit() -> tuple[Response, int]:
    """A submitting system sends a PDF to its on-call group (multipart/form-data)."""
    rc = current()
    upload = request.files.get("document")
    if upload is None:
        raise InvalidInput(N_("Send the PDF as the multipart field 'document'."))
    settings = rc.settings
    normalised = pdfcheck.normalise_upload(
        upload.read(settings.max_upload_bytes + 1), max_bytes=settings.max_upload_bytes,
        max_pages=settings.max_pages, active_content=settings.active_content,
        allow_signed=settings.allow_countersign, limits=rc.services.sandbox,
    )
    req = workflow.create_request(
        rc.session, rc.deps, actor=rc.actor, now=rc.now, upload=normalised,
        filename=pdfcheck.sanitize_filename(upload.filename or "document.pdf"),
        title=request.form.get("title", ""), group_id=_form_id("group"),
        destination_id=_form_id("destination"),
        urgency=request.form.get("urgency", ""), note=request.form.get("note", ""),
    )
    return jsonify(_summary(req)), 201


@bp.get("/requests/<int:request_id>")
@bearer_required(ApiScope.READ)
def get_request(request_id: int) -> Response:
    rc = current()
    req = access.get_request(rc.session, user=rc.user, request_id=request_id, now=rc.now)
    return jsonify(_summary(req))


@bp.get("/requests/<int:request_id>/verification")
@bearer_required(ApiScope.READ)
def verification(request_id: int) -> Response:
    rc = current()
    report = request_signing.verify_document(rc.session, rc.deps, user=rc.user,
                                             request_id=request_id, now=rc.now)
    return jsonify(report.as_json())


@bp.get("/requests/<int:request_id>/document")
@bearer_required(ApiScope.DOWNLOAD)
def document(request_id: int) -> Response:
    rc = current()
    doc = access.document_for(rc.session, rc.deps, actor=rc.actor, request_id=request_id, now=rc.now,
                              download=True)
    resp = attachment(doc.data, doc.filename)
    resp.headers["Digest"] = f"sha-256={doc.sha256}"
    return resp


@bp.post("/requests/<int:request_id>/acknowledge")
@bearer_required(ApiScope.ACKNOWLEDGE)
def acknowledge(request_id: int) -> Response:
    rc = current()
    req = workflow.acknowledge_receipt(rc.session, rc.deps, actor=rc.actor, request_id=request_id,
                                       now=rc.now)
    return jsonify(_summary(req))


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(OPENAPI)


_ERR = {"description": "Problem (RFC 9457)",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_ID = [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
_REQ = {"description": "A request", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Request"}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "signflow API", "version": "1.0.0",
             "description": "Signed documents for destination services, and documents sent "
                            "for signature by submitting systems. Tokens belong to integration "
                            "accounts (`signflow api-token create NAME --scope ...`); each "
                            "operation needs the scope it names (403 otherwise)."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/requests": {
            "get": {"summary": "Requests visible to the token's account (scope read)",
                    "responses": {"200": {"description": "List", "content": {
                        "application/json": {"schema": {"type": "object", "properties": {
                            "items": {"type": "array", "items": {
                                "$ref": "#/components/schemas/Request"}}}}}}},
                        "401": _ERR, "403": _ERR}},
            "post": {"summary": "Send a PDF for signature to the account's on-call group "
                                "(scope submit)",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {
                         "schema": {"type": "object",
                                    "required": ["document", "group", "destination", "urgency"],
                                    "properties": {
                                        "document": {"type": "string", "format": "binary"},
                                        "group": {"type": "integer"},
                                        "destination": {"type": "integer"},
                                        "urgency": {"type": "string",
                                                    "enum": [u.value for u in Urgency]},
                                        "title": {"type": "string"},
                                        "note": {"type": "string"}}}}}},
                     "responses": {"201": _REQ, "400": _ERR, "401": _ERR, "403": _ERR,
                                   "413": _ERR, "422": _ERR}},
        },
        "/requests/{request_id}": {"get": {
            "summary": "One request", "parameters": _ID,
            "responses": {"200": _REQ, "401": _ERR, "403": _ERR, "404": _ERR}}},
        "/requests/{request_id}/verification": {"get": {
            "summary": "Signature validation report of the delivered file", "parameters": _ID,
            "responses": {"200": {"description": "Report", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Verification"}}}},
                          "401": _ERR, "403": _ERR, "404": _ERR}}},
        "/requests/{request_id}/document": {"get": {
            "summary": "Download the (signed) PDF", "parameters": _ID,
            "responses": {"200": {"description": "PDF", "content": {"application/pdf": {
                "schema": {"type": "string", "format": "binary"}}}},
                "401": _ERR, "403": _ERR, "404": _ERR}}},
        "/requests/{request_id}/acknowledge": {"post": {
            "summary": "Acknowledge receipt of a delivered document", "parameters": _ID,
            "responses": {"200": _REQ, "401": _ERR, "403": _ERR, "404": _ERR, "409": _ERR}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"}}},
            "Request": {"type": "object", "properties": {
                "id": {"type": "integer"}, "title": {"type": "string"},
                "state": {"type": "string", "enum": ["pending", "signed", "delivered", "received",
                                                     "declined", "cancelled", "expired", "failed"]},
                "urgency": {"type": "string"}, "group": {"type": "string"},
                "destination": {"type": "string"}, "document_sha256": {"type": "string"},
                "signed_sha256": {"type": ["string", "null"]},
                "signed_by": {"type": ["string", "null"]},
                "signed_at": {"type": ["string", "null"], "format": "date-time"},
                "acknowledged_at": {"type": ["string", "null"], "format": "date-time"},
                "created_at": {"type": "string", "format": "date-time"}}},
            "Verification": {"type": "object", "properties": {
                "ok": {"type": "boolean", "description": "every hospital signature valid, the "
                       "last covering the whole file; earlier outside signatures intact"},
                "problems": {"type": "array", "items": {"type": "string"}},
                "notes": {"type": "array", "items": {"type": "string"}, "description":
                          "e.g. an earlier signature not issued by the hospital"},
                "signatures": {"type": "array", "items": {"type": "object", "properties": {
                    "signer": {"type": "string"}, "issuer": {"type": "string"},
                    "outside": {"type": "boolean", "description": "certificate not issued "
                                "under the hospital root"},
                    "intact": {"type": "boolean"}, "trusted": {"type": "boolean"},
                    "ok": {"type": "boolean"}, "is_timestamp": {"type": "boolean"},
                    "problems": {"type": "array", "items": {"type": "string"}}}}}}},
        },
    },
}
